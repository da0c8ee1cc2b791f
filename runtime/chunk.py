"""Chunk graphs: T steps per onnxruntime call, which ``Stream.run`` uses for long sequences.

The exporter writes ``model.chunk.onnx`` next to ``model.onnx`` (``chunk_path``): the same model over
``steps_per_call`` steps (one ONNX GRU/LSTM/RNN node per layer), x ``(batch, T, ...)`` in,
y ``(batch, T, output_size)`` out, the states as in the step graph. A ``Stepper`` opened from a path
finds it there (or is given one: ``chunk_model=``) and uses it only when all of this holds, checked on
first use:

- its metadata is the step model's apart from ``steps_per_call`` (> 1), and the model is not quantized;
- its inputs and outputs follow the contract with a time axis of that length;
- on a probe sequence it gives what the same steps through the step graph give. A chunk file left over
  from another export under the same name therefore cannot change any result.

A found file that fails a check is ignored with a warning; a file given explicitly raises ContractError.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgernn.runtime import contract
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ContractError, EdgeRNNError
from edgernn.runtime.integrity import check_graph
from edgernn.runtime.session import model_bytes, read_info
from edgernn.runtime.tolerance import step_scale, within

CHUNK_SUFFIX = ".chunk.onnx"
ORT_CHUNK_SUFFIX = ".chunk.ort"  # an ORT format model's chunk graph (edgernn deploy --target ort)
PROBE_ATOL = PROBE_RTOL = 1e-4  # the closed-loop parity tolerances: both graphs match PyTorch to this


def chunk_path(model_path: str | os.PathLike) -> Path:
    """Where the chunk graph of the step model at ``model_path`` lives: ``model.onnx`` -> ``model.chunk.onnx``
    (``model.ort`` -> ``model.chunk.ort`` for ORT format files)."""
    path = Path(model_path)
    suffix = ORT_CHUNK_SUFFIX if path.suffix.lower() == ".ort" else CHUNK_SUFFIX
    return path.with_name(path.stem + suffix)


class ChunkGraph:
    """A loaded, checked chunk graph: ``run`` feeds whole chunks of T steps, state carried."""

    def __init__(self, session: ort.InferenceSession, info: ModelInfo):
        self.session, self.info, self.steps = session, info, info.steps_per_call
        self.output_names = [contract.OUTPUT_NAME, *(s.output for s in info.states)]
        self._run = getattr(session, "_sess", session).run  # the pybind call skips per-call Python checks

    def run(self, xs: np.ndarray, state: Sequence[np.ndarray]) -> np.ndarray:
        """xs: ``(B, K*T, ...)``, already validated. Returns ys ``(B, K*T, O)`` and writes the state after the
        last step into ``state`` (one buffer per state tensor). onnxruntime's errors pass through.
        """
        ys = []
        for begin in range(0, xs.shape[1], self.steps):
            feed = {contract.INPUT_NAME: np.ascontiguousarray(xs[:, begin : begin + self.steps])}
            feed.update({spec.input: value for spec, value in zip(self.info.states, state, strict=True)})
            y, *after = self._run(self.output_names, feed, None)
            for buffer, value in zip(state, after, strict=True):
                np.copyto(buffer, value)
            ys.append(y)
        return np.concatenate(ys, axis=1)


def load_chunk(
    open_session: Callable[[str | bytes | os.PathLike], ort.InferenceSession],
    source: str | bytes | os.PathLike,
    step_info: ModelInfo,
    step: Callable[[np.ndarray], list[np.ndarray]],
) -> ChunkGraph:
    """Open and check the chunk graph at ``source`` against the step model; raises ContractError.

    ``step(xs)``: the same probe through the step graph, ``(1, T, ...)`` -> ``[ys (1, T, O), *final states]``.
    """
    if step_info.quantization is not None:
        raise ContractError("the step model is quantized; a chunk graph is only used with float32 models")
    label = f"chunk graph {source!s:.80}"
    session = open_session(source)
    info = read_info(session, label)
    if info is None:
        raise ContractError(f"{label}: no edgernn metadata")
    if info.steps_per_call < 2 or _unpaired(info) != _unpaired(step_info):
        raise ContractError(f"{label}: its metadata does not describe this step model")
    paired = None not in (info.step_graph_sha256, step_info.graph_sha256)
    if paired and info.step_graph_sha256 != step_info.graph_sha256:
        raise ContractError(
            f"{label}: it was not exported from the same weights as this step model (its step_graph_sha256 "
            f"{info.step_graph_sha256[:16]}... is not this model's {step_info.graph_sha256[:16]}...); "
            "export again to write the pair together"
        )
    check_graph(model_bytes(source), info, label)
    _check_io(session, info)
    chunk = ChunkGraph(session, info)
    _probe(chunk, step)
    return chunk


def _unpaired(info: ModelInfo) -> ModelInfo:
    """The metadata without what differs between a step model and its chunk graph by design."""
    return replace(contract.unsealed(info), steps_per_call=1)


def warn_missing_chunk(info: ModelInfo | None, model: str | bytes | os.PathLike) -> None:
    """Warn when a step model that was exported with a chunk graph is opened from a path without it."""
    if info is None or not info.chunk_steps or not isinstance(model, (str, os.PathLike)):
        return
    warnings.warn(
        f"{chunk_path(model)} is missing: {Path(model).name} was exported with a chunk graph of "
        f"{info.chunk_steps} steps beside it, and without it Stepper.run steps one at a time (several "
        "times slower); ship both files together (chunk_model=False silences this)",
        stacklevel=3,
    )


def _check_io(session: ort.InferenceSession, info: ModelInfo) -> None:
    steps = info.steps_per_call
    x_shape = ["batch", steps] if info.input.kind == "tokens" else ["batch", steps, info.input.size]
    expected_in = {contract.INPUT_NAME: x_shape, **{s.input: ["batch", *s.shape] for s in info.states}}
    expected_out = {
        contract.OUTPUT_NAME: ["batch", steps, info.output.size],
        **{s.output: ["batch", *s.shape] for s in info.states},
    }
    found_in = {a.name: _dims(a.shape) for a in session.get_inputs()}
    found_out = {a.name: _dims(a.shape) for a in session.get_outputs()}
    if found_in != expected_in or found_out != expected_out:
        raise ContractError(
            f"chunk graph: expected inputs {expected_in} and outputs {expected_out}, "
            f"found {found_in} and {found_out}"
        )


def _dims(shape: Sequence) -> list:
    return ["batch" if not isinstance(d, int) else d for d in shape]


def _probe(chunk: ChunkGraph, step: Callable[[np.ndarray], list[np.ndarray]]) -> None:
    info = chunk.info
    xs = probe_input(info, chunk.steps)
    state = [np.full((1, *s.shape), s.initial, np.float32) for s in info.states]
    got = [chunk.run(xs, state), *state]
    want = step(xs)
    for name, a, b in zip([contract.OUTPUT_NAME, *(s.output for s in info.states)], got, want, strict=True):
        scale = step_scale(info, b) if name == contract.OUTPUT_NAME else 1.0  # y on the model's scale
        if a.shape != b.shape or not within(a, b, PROBE_ATOL, PROBE_RTOL, scale).all():
            raise ContractError(
                f"chunk graph: {name} differs from stepping the step model on a probe sequence; "
                "it was not exported from the same weights"
            )


def probe_input(info: ModelInfo, steps: int) -> np.ndarray:
    """A fixed, realistic sequence ``(1, steps, ...)``: token ids, or features on the model's own scale."""
    rng = np.random.default_rng(12345)
    if info.input.kind == "tokens":
        return rng.integers(0, info.input.size, size=(1, steps), dtype=np.int64)
    xs = rng.standard_normal((1, steps, info.input.size)).astype(np.float32)
    if info.input.mean is not None:
        xs = xs * np.float32(info.input.std) + np.float32(info.input.mean)
    return xs.astype(np.float32)


def find_chunk(
    explicit: str | bytes | os.PathLike | bool | None, model: str | bytes | os.PathLike
) -> str | bytes | os.PathLike | None:
    """The chunk graph to try: the explicit one, else the file next to a model path; None for none."""
    if explicit is False:
        return None
    if explicit is not None and explicit is not True:
        return explicit
    if isinstance(model, (str, os.PathLike)) and chunk_path(model).is_file():
        return chunk_path(model)
    return None


def try_load_chunk(
    source: str | bytes | os.PathLike,
    explicit: bool,
    load: Callable[[str | bytes | os.PathLike], ChunkGraph],
) -> ChunkGraph | None:
    """``load(source)``; a failure raises for an explicit chunk graph and warns (and gives None) for a found one."""
    try:
        return load(source)
    except EdgeRNNError as exc:
        if explicit:
            raise
        warnings.warn(f"ignoring {source}: {exc}", stacklevel=4)
        return None
