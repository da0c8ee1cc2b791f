"""The fast path: one pre-bound onnxruntime call per stream (IOBinding over numpy buffers)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import onnxruntime as ort

from edgernn.runtime.errors import InputError
from edgernn.runtime.graph import Graph
from edgernn.runtime.inputs import DataInput
from edgernn.runtime.session import ORT_ERRORS, QUIET_LOG_LEVEL


def _ort_value(array: np.ndarray) -> ort.OrtValue:
    return ort.OrtValue.ortvalue_from_numpy(array)  # on CPU it wraps the array's memory: no copy


class Binding:
    """One stream's step, bound once: why a step costs little more than the graph itself.

    x, y and the state live in numpy buffers bound to the session with IOBinding, so a step copies x in,
    runs, and copies y out: no feed dict, no output allocation, no name lookup. The state has two buffer
    sets (ping-pong): a step reads one and writes the other, then they swap; a step that fails swaps
    nothing, so the state is exactly as it was. Buffers are allocated here, never in the hot path.
    """

    def __init__(self, graph: Graph, batch_size: int):
        graph.check_allocation(batch_size)
        self.graph, self.batch_size = graph, batch_size
        self.x = _data_buffer(graph.data, batch_size)  # None: the data input has axes of unknown size
        self.x_unbatched_shape = self.x.shape[1:] if self.x is not None and batch_size == 1 else None
        self._x_shape = None if self.x is None else self.x.shape  # for messages
        shapes = graph.result_shapes(batch_size)
        self.fixed_results = shapes is not None
        sets = [_output_set(graph, batch_size, shapes) for _ in "ab"]
        self.result_sets = [s[0] for s in sets]  # a step from state_sets[k] writes set 1 - k
        self.state_sets = [s[1] for s in sets]
        self._probes = [s[2] for s in sets]
        self.current = 0  # the state lives in state_sets[current]
        self._finite_probe = _FiniteProbe(self.x) if self.x is not None and self.x.dtype.kind == "f" else None
        self._bindings = [self._bind(k) for k in (0, 1)]
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = QUIET_LOG_LEVEL  # failures raise; ort's own lines stay quiet
        session = graph.session
        # The pybind session's own call skips the Python wrapper's per-call checks; keep the public call
        # as the fallback should a future onnxruntime rename its internals.
        inner = getattr(session, "_sess", None)
        if inner is not None and all(hasattr(b, "_iobinding") for b in self._bindings):
            self._calls = [
                partial(inner.run_with_iobinding, b._iobinding, self._run_options) for b in self._bindings
            ]
        else:
            self._calls = [partial(session.run_with_iobinding, b, self._run_options) for b in self._bindings]

    @property
    def state(self) -> list[np.ndarray]:
        """The current state buffers, one per state slot (the live arrays: copy before handing out)."""
        return self.state_sets[self.current]

    def _bind(self, parity: int) -> ort.IOBinding:
        graph = self.graph
        binding = graph.session.io_binding()
        for name, value in graph.constants.items():
            binding.bind_ortvalue_input(name, _ort_value(value))
        if self.x is not None:
            binding.bind_ortvalue_input(graph.data.name, _ort_value(self.x))
        results = self.result_sets[1 - parity]
        for index, name in enumerate(graph.result_names):
            if results is None:
                binding.bind_output(name, "cpu")
            else:
                binding.bind_ortvalue_output(name, _ort_value(results[index]))
        for slot, read, write in zip(
            graph.states, self.state_sets[parity], self.state_sets[1 - parity], strict=True
        ):
            binding.bind_ortvalue_input(slot.input, _ort_value(read))
            binding.bind_ortvalue_output(slot.output, _ort_value(write))
        return binding

    def write_x(self, x: Any) -> bool:
        """Check one step's x and copy it into the bound buffer; returns whether x came unbatched.

        The common cases (an array of the right dtype and shape, a Python int token) take a short path;
        anything else, and anything that fails the short path's checks, goes through ``DataInput.validate``
        for the full conversion rules and the error message.
        """
        buffer = self.x
        if buffer is None:
            array, unbatched = self.graph.data.validate(x, self.batch_size)
            self._bindings[self.current].bind_cpu_input(self.graph.data.name, array)
            self._x_shape = array.shape
            return unbatched
        if type(x) is np.ndarray and x.dtype == buffer.dtype:
            if x.shape == buffer.shape:
                buffer[...] = x
                if self._acceptable():
                    return False
            elif x.shape == self.x_unbatched_shape:
                buffer[0] = x
                if self._acceptable():
                    return True
        elif type(x) is int and self.x_unbatched_shape == () and self._token_ok(x):
            buffer[0] = x
            return True
        array, unbatched = self.graph.data.validate(x, self.batch_size)
        buffer[...] = array
        return unbatched

    def _token_ok(self, token: int) -> bool:
        vocab_size = self.graph.data.vocab_size
        return vocab_size is not None and 0 <= token < vocab_size

    def _acceptable(self) -> bool:
        """Whether the buffer, already in the right dtype, holds values the full checks would accept."""
        if self._finite_probe is not None:
            return self._finite_probe.all_finite()
        vocab_size = self.graph.data.vocab_size
        if vocab_size is None:
            return True  # any value of an integer or boolean dtype is a valid value for a foreign model
        flat = self.x.reshape(-1)
        if flat.size == 1:  # one token: a Python comparison beats two numpy reductions
            return 0 <= int(flat[0]) < vocab_size
        return bool(flat.min() >= 0 and flat.max() < vocab_size)

    def run(self) -> list[np.ndarray]:
        """One step from the current state; returns the results (live buffers for edgernn models).

        Raises InputError, the state unmoved, when onnxruntime fails or a result or the next state comes
        out NaN or infinite (e.g. from a huge restored state): no stream is ever left holding NaN.
        """
        current = self.current
        try:
            self._calls[current]()
        except (*ORT_ERRORS, RuntimeError) as exc:  # run_with_iobinding reports failures as RuntimeError
            raise InputError(
                f"onnxruntime could not run a step with x of shape {self._x_shape}: {_first_line(exc)}"
            ) from None
        written = 1 - current
        if self.fixed_results:
            results = self.result_sets[written]
        else:
            outputs = self._bindings[current].get_outputs()[: self.graph.result_count]
            results = [np.array(v.numpy()) for v in outputs]
        probe = self._probes[written]
        if not (
            probe.all_finite() if probe is not None else _all_finite([*results, *self.state_sets[written]])
        ):
            raise InputError(
                "the step's result or next state came out NaN or infinite (is the state restored from a "
                "snapshot out of range?); the state is as it was before the step"
            )
        self.current = written
        return results

    def load_state(self, arrays: Sequence[np.ndarray]) -> None:
        """Copy validated arrays (one per state slot, right shapes and dtypes) into the current state."""
        for buffer, array in zip(self.state, arrays, strict=True):
            np.copyto(buffer, array)


def _output_set(
    graph: Graph, batch_size: int, result_shapes: list[tuple[int, ...]] | None
) -> tuple[list[np.ndarray] | None, list[np.ndarray], _FiniteProbe | None]:
    """The results and the state one step writes. When all are float32 (edgernn models) they are views
    into one flat buffer, so a single probe tells whether the whole step came out finite."""
    state_shapes = [slot.shape_for(batch_size) for slot in graph.states]
    if result_shapes is None or any(slot.dtype != np.float32 for slot in graph.states):
        results = None if result_shapes is None else [np.zeros(s, np.float32) for s in result_shapes]
        return (
            results,
            [np.zeros(s, slot.dtype) for s, slot in zip(state_shapes, graph.states, strict=True)],
            None,
        )
    shapes = [*result_shapes, *state_shapes]
    sizes = [int(np.prod(s)) for s in shapes]
    flat = np.zeros(sum(sizes), np.float32)
    ends = np.cumsum(sizes)
    views = [
        flat[end - size : end].reshape(shape) for shape, size, end in zip(shapes, sizes, ends, strict=True)
    ]
    return views[: len(result_shapes)], views[len(result_shapes) :], _FiniteProbe(flat)


def _all_finite(arrays: Sequence[np.ndarray]) -> bool:
    return all(a.dtype.kind != "f" or np.isfinite(a).all() for a in arrays)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _data_buffer(data: DataInput, batch_size: int) -> np.ndarray | None:
    if any(d is None for d in data.shape[1:]):
        return None
    return np.zeros((batch_size, *data.shape[1:]), data.dtype)


class _FiniteProbe:
    """Tells whether a float buffer is all finite with one dot product: 0 * x is 0 for every finite x and
    NaN for NaN and +-inf, and a NaN makes the sum NaN (one BLAS call, about half of ``isfinite().all()``).
    ``np.vdot``, unlike ``dot``, does not turn the 0 * inf into a RuntimeWarning.
    """

    def __init__(self, buffer: np.ndarray):
        self.flat = buffer.reshape(-1)  # a view: always sees the buffer's current values
        self.zeros = np.zeros_like(self.flat)

    def all_finite(self) -> bool:
        return np.vdot(self.flat, self.zeros) == 0


def steps_from_initial(graph: Graph, xs: np.ndarray) -> list[np.ndarray]:
    """xs ``(1, T, ...)`` one step at a time from the initial state: ``[ys (1, T, O), *final states]``."""
    binding = Binding(graph, 1)
    for slot, buffer in zip(graph.states, binding.state, strict=True):
        buffer.fill(slot.initial)
    ys = []
    for t in range(xs.shape[1]):
        binding.write_x(xs[:, t])
        ys.append(binding.run()[0].copy())
    return [np.stack(ys, axis=1), *(a.copy() for a in binding.state)]
