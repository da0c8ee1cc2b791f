"""Triton python backend model: many edgernn streams, one StreamPool, keyed by correlation ID.

Written as ``REPO/NAME/1/model.py`` by ``edgernn deploy --target triton --backend python``; it runs inside
tritonserver's python backend stub, which must see ``edgernn`` and ``onnxruntime`` (see docs/triton.md).
The model file is the config's ``model_file`` parameter, in the same version folder.

Triton's sequence batcher (oldest strategy) sends each request with its controls: ``START`` (the
sequence starts: a new stream at the initial state, or an existing one reset), ``END`` (the stream leaves
after this step), ``READY`` (0: the slot holds no request; nothing steps) and ``CORRID`` (the sequence's
correlation ID). Every request of one ``execute`` call is stepped in one pool call. A bad request (x not
finite, a token out of range, an unknown sequence) gets a Triton error with status INVALID_ARGUMENT (as in
the c flavour) and no other sequence is touched.
The python backend does not implement implicit state, so the state lives here, in the pool: sequences
idle for longer than ``max_sequence_idle_microseconds`` (after which Triton has forgotten them too) are
freed. Open sequences are lost when the server stops.
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from edgernn.runtime import Stepper
from edgernn.runtime.errors import EdgeRNNError


class _Request:
    """One request's controls and input, read once; then its output tensors or its error."""

    __slots__ = ("corrid", "start", "end", "ready", "x", "requested", "stream", "tensors", "error")

    def __init__(self, request, x_name: str, x_shape: tuple[int, ...]):
        # One pass over the inputs: pb_utils.get_input_tensor_by_name lists them all at every call.
        tensors = {tensor.name(): tensor for tensor in request.inputs()}
        self.corrid, self.start, self.end, self.ready = (
            int(tensors[name].as_numpy().reshape(-1)[0]) for name in ("CORRID", "START", "END", "READY")
        )
        x = tensors[x_name].as_numpy()
        self.error = (
            None if x.shape[0] == 1 else f"{x_name}: expected a batch of 1 per request, got {x.shape}"
        )
        self.x = x.reshape(x_shape) if self.error is None else None
        self.requested: list[str] = request.requested_output_names()
        self.stream: int | None = None
        self.tensors: list | None = None


def _rounds(batch: list[_Request]) -> list[list[_Request]]:
    """The batch in rounds holding at most one request per sequence, each sequence's order kept."""
    rounds: list[list[_Request]] = []
    seen: dict[int, int] = {}
    for r in batch:
        k = seen[r.corrid] = seen.get(r.corrid, -1) + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(r)
    return rounds


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config["parameters"].items()}
        folder = Path(args["model_repository"]) / args["model_version"]
        self.stepper = Stepper(folder / params["model_file"], chunk_model=False)
        batching = config["sequence_batching"]
        self.idle_s = int(batching["max_sequence_idle_microseconds"]) / 1e6
        # Sequences Triton has already timed out but this instance has not yet seen go idle still hold a
        # row until the next sweep: room for twice the sequences Triton lets in at once (the oldest
        # strategy's candidates; the direct strategy's one per batch slot).
        candidates = batching.get("oldest", {}).get("max_candidate_sequences", config["max_batch_size"])
        self.pool = self.stepper.new_pool(2 * int(candidates))
        self.streams: dict[int, int] = {}  # correlation id -> pool stream id
        self.last_seen: dict[int, float] = {}  # correlation id -> time of its last request
        self.next_sweep = 0.0
        self.active: set[int] = set()  # the correlation ids of the batch in hand
        data = self.stepper.data_input
        self.x_name, self.x_shape = data.name, tuple(data.shape[1:])
        self.y_name = self.stepper.session.get_outputs()[0].name
        self.state_outputs = {s.output: s.input for s in self.stepper.info.states}
        self.y_size = int(self.stepper.info.output.size)
        # What is loaded now (edgernn, onnxruntime, numpy, the session) lives as long as the stub: moved
        # out of the collector's generations, the full collections the per-request objects trigger no
        # longer walk it (they stalled every sequence for tens of ms under load).
        gc.freeze()

    def execute(self, requests: list) -> list:
        now = time.monotonic()
        batch = [_Request(r, self.x_name, self.x_shape) for r in requests]
        self.active = {r.corrid for r in batch}
        self._sweep(now)
        for round_ in _rounds(batch):  # one round unless a sequence has two requests in this batch
            self._step(round_, now)
        return [self._response(r) for r in batch]

    def _step(self, batch: list[_Request], now: float) -> None:
        ready = [r for r in batch if r.error is None and r.ready]
        for r in ready:
            r.stream = self._open(r)
            if r.stream is not None:
                self.last_seen[r.corrid] = now
        stepping = [r for r in ready if r.error is None]
        if stepping:
            try:
                ys = self.pool.step({r.stream: r.x for r in stepping})
            except EdgeRNNError:
                ys = self._step_one_by_one(stepping)
            for r in stepping:
                if r.error is None:
                    r.tensors = self._outputs(r, ys[r.stream])
        for r in ready:  # Triton has ended the sequence even when its last request failed
            if r.end and r.corrid in self.streams:
                self._close(r.corrid)

    def _step_one_by_one(self, batch: list[_Request]) -> dict:
        """The slow path after a batch failed: step each alone, so only the bad requests fail."""
        ys = {}
        for r in batch:
            try:
                self.stepper.data_input.validate(r.x, 1)  # says what is wrong with this x
                ys.update(self.pool.step({r.stream: r.x}))
            except EdgeRNNError as exc:
                r.error = f"sequence {r.corrid}: {exc}"
        return ys

    def _open(self, r: _Request) -> int | None:
        stream = self.streams.get(r.corrid)
        if r.start:
            if stream is None:
                if len(self.pool) == self.pool.capacity:
                    self._sweep(time.monotonic(), force=True)
                try:
                    stream = self.streams[r.corrid] = self.pool.join()
                except EdgeRNNError as exc:
                    r.error = f"sequence {r.corrid}: {exc}"
                    return None
            else:
                self.pool.reset(stream)
        elif stream is None:
            r.error = (
                f"sequence {r.corrid}: unknown to this model instance (never started, ended, or freed "
                f"after {self.idle_s:g} s idle); start it with the START flag"
            )
        return stream

    def _close(self, corrid: int) -> None:
        self.pool.leave(self.streams.pop(corrid))
        self.last_seen.pop(corrid, None)

    def _outputs(self, r: _Request, y: np.ndarray) -> list:
        tensors = [pb_utils.Tensor(self.y_name, y[np.newaxis])]
        wanted = [name for name in self.state_outputs if name in r.requested]
        if wanted:
            state = self.pool.state(r.stream)
            tensors += [pb_utils.Tensor(name, state[self.state_outputs[name]]) for name in wanted]
        return tensors

    def _response(self, r: _Request):
        if r.error is not None:
            # INVALID_ARG, as the c flavour answers: every error here is the request's (not the server's)
            error = pb_utils.TritonError(r.error, pb_utils.TritonError.INVALID_ARG)
            return pb_utils.InferenceResponse(error=error)
        if r.tensors is None:  # READY was 0: the slot holds no request and nothing stepped
            zeros = np.zeros((1, self.y_size), np.float32)
            return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.y_name, zeros)])
        return pb_utils.InferenceResponse(output_tensors=r.tensors)

    def _sweep(self, now: float, force: bool = False) -> None:
        """Free sequences idle for longer than the timeout (Triton has forgotten them), at most ten
        times per timeout unless ``force``; sequences in the current batch are alive by definition."""
        if not force and now < self.next_sweep:
            return
        self.next_sweep = now + self.idle_s / 10
        idle = [c for c, seen in self.last_seen.items() if now - seen > self.idle_s and c not in self.active]
        for corrid in idle:
            if corrid in self.streams:
                self._close(corrid)
            self.last_seen.pop(corrid, None)
        if idle:
            pb_utils.Logger.log_info(f"freed {len(idle)} sequence(s) idle for more than {self.idle_s:g} s")
