"""Streams: one independent sequence (or batch of them) over a shared model, with its own state."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgernn.runtime.binding import Binding
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import InputError
from edgernn.runtime.graph import Graph
from edgernn.runtime.inputs import check_positive_int
from edgernn.runtime.session import ORT_ERRORS

Results = np.ndarray | tuple[np.ndarray, ...]


def _format(results: Sequence[np.ndarray], unbatched: bool) -> Results:
    if unbatched:
        results = [r[0] for r in results]
    return results[0] if len(results) == 1 else tuple(results)


class Stream:
    """One independent stream (of ``batch_size`` sequences) over a shared model, with its own state.

    Made by ``Stepper.new_stream``. State: name -> float32 array, ``(batch, num_layers, hidden_size)`` for
    edgernn models. Safe to share between threads: each call runs whole, one at a time.
    """

    def __init__(self, graph: Graph, batch_size: int):
        check_positive_int("batch_size", batch_size)
        self._graph = graph
        self.batch_size = batch_size
        self._binding = Binding(graph, batch_size)
        self._step = self._binding.fast_step
        self._one_result = self._binding.fixed_results and graph.result_count == 1
        # One lock per stream: calls from several threads are serialised, never interleaved (an
        # interleaved step would read one state set while another step writes it).
        self._lock = threading.Lock()
        self._acquire, self._release = self._lock.acquire, self._lock.release
        self.reset()

    @property
    def info(self) -> ModelInfo | None:
        return self._graph.info

    def step(self, x: Any) -> Results:
        """Feed one step and advance the state.

        x: token ids ``(B,)`` int or features ``(B, F)`` float (converted to float32); with batch size 1
        also an unbatched int / ``(F,)``. Returns y ``(B, output_size)`` float32, ``(output_size,)`` for an
        unbatched x (for foreign models with several outputs, a tuple in graph order). y is a new array.
        """
        self._acquire()  # acquire/release in try/finally: half the cost of "with lock" (about 0.1 us)
        try:
            results, unbatched = self._step(x)
            if self._one_result:  # the common case, kept short
                return results[0][0].copy() if unbatched else results[0].copy()
            return _format([r.copy() for r in results], unbatched)
        finally:
            self._release()

    def run(self, xs: Any) -> Results:
        """Feed a sequence, carrying state: the same as calling ``step`` on each element in turn.

        xs: ``(B, T)`` tokens or ``(B, T, F)`` features; with batch size 1 also ``(T,)`` / ``(T, F)``.
        Returns ys ``(B, T, output_size)`` or ``(T, output_size)``. The state only moves if every step ran.
        """
        xs, unbatched = self._graph.data.validate(xs, self.batch_size, sequence=True)
        with self._lock:
            before = [a.copy() for a in self._binding.state]
            try:
                outputs = self._run_chunks(xs) if xs.shape[1] > 1 else self._run_steps(xs)
            except InputError:
                self._binding.load_state(before)
                raise
        return _format(outputs, unbatched)

    def _run_chunks(self, xs: np.ndarray) -> list[np.ndarray]:
        """Whole chunks through the chunk graph (if the model has one), the remaining steps one by one."""
        chunk = self._graph.chunk()
        whole = 0 if chunk is None else xs.shape[1] // chunk.steps * chunk.steps
        if whole == 0:
            return self._run_steps(xs)
        try:
            ys = chunk.run(xs[:, :whole], self._binding.state)
        except ORT_ERRORS as exc:
            raise InputError(
                f"onnxruntime could not run a chunk with xs of shape {xs.shape}: {exc}"
            ) from None
        if not all(np.isfinite(a).all() for a in (ys, *self._binding.state)):
            raise InputError(
                "the sequence's results or state came out NaN or infinite (is the state restored from a "
                "snapshot out of range?); the state is as it was before the call"
            )
        if whole == xs.shape[1]:
            return [ys]
        return [np.concatenate([ys, self._run_steps(xs[:, whole:])[0]], axis=1)]

    def _run_steps(self, xs: np.ndarray) -> list[np.ndarray]:
        binding = self._binding
        steps = xs.shape[1]
        collected: list[list[np.ndarray]] = []
        for t in range(steps):
            collected.append([r.copy() for r in binding.step(xs[:, t])[0]])
        return [np.stack(outputs, axis=1) for outputs in zip(*collected, strict=True)]

    def reset(self) -> None:
        """Set every state tensor to its initial value (zeros unless the metadata says otherwise)."""
        with self._lock:
            for slot, buffer in zip(self._graph.states, self._binding.state, strict=True):
                buffer.fill(slot.initial)

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the current state, name -> array. Assigning a dict validates it and copies it in."""
        with self._lock:
            state = self._binding.state
            return {slot.input: a.copy() for slot, a in zip(self._graph.states, state, strict=True)}

    @state.setter
    def state(self, value: Mapping[str, Any]) -> None:
        checked = self._graph.check_state(value, self.batch_size)
        with self._lock:
            self._binding.load_state([checked[slot.input] for slot in self._graph.states])

    def snapshot(self) -> dict[str, np.ndarray]:
        """A copy of the state to ``restore`` later (into this stream or another of the same batch size)."""
        return self.state

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Go back to a ``snapshot``; it is validated (names, shapes, dtypes, finite) and copied."""
        self.state = snapshot
