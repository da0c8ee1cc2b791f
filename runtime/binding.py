"""The fast path: one pre-bound onnxruntime call per stream (IOBinding over numpy buffers)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
    runs, and copies y out: no feed dict, no output allocation, no name lookup, no conversion of an x that
    already has the input's dtype and shape. There are two buffer sets (ping-pong): a step from the state
    in set k reads x from set 1 - k and writes its results and next state there, then the sets swap; a
    step that fails swaps nothing, so the state is exactly as it was. Buffers are allocated here, never in
    the hot path.

    For edgernn models every buffer of a set that is float32 (x for feature models, the results, the
    state) is a view into one flat array, so one dot product after the run tells whether the step's input,
    results and next state are all finite; a non-finite x is then refused with its own message, as if it
    had been checked first (it never reaches the state either way).
    """

    def __init__(self, graph: Graph, batch_size: int):
        graph.check_allocation(batch_size)
        self.graph, self.batch_size = graph, batch_size
        x_shape = _x_shape(graph.data, batch_size)  # None: the data input has axes of unknown size
        self.x_unbatched_shape = x_shape[1:] if x_shape is not None and batch_size == 1 else None
        self._x_shape = x_shape  # for messages
        shapes = graph.result_shapes(batch_size)
        self.fixed_results = shapes is not None
        sets = [_BufferSet(graph, batch_size, x_shape, shapes) for _ in "ab"]
        self._x_in_probe = sets[0].x_in_probe
        if not self._x_in_probe and x_shape is not None:  # one x buffer serves both sets
            sets[1].x = sets[0].x
        self.x_sets = [s.x for s in sets]  # a step from state_sets[k] reads x_sets[1 - k]
        self.result_sets = [s.results for s in sets]  # ... and writes result_sets[1 - k], state_sets[1 - k]
        self.state_sets = [s.state for s in sets]
        self._probes = [s.probe for s in sets]
        self.current = 0  # the state lives in state_sets[current]
        x = self.x_sets[0]
        self._x_probe = (
            _FiniteProbe(x) if x is not None and x.dtype.kind == "f" and not self._x_in_probe else None
        )
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
        self.fast_step = self._fast_step() or self.step

    @property
    def state(self) -> list[np.ndarray]:
        """The current state buffers, one per state slot (the live arrays: copy before handing out)."""
        return self.state_sets[self.current]

    def _bind(self, parity: int) -> ort.IOBinding:
        graph = self.graph
        binding = graph.session.io_binding()
        for name, value in graph.constants.items():
            binding.bind_ortvalue_input(name, _ort_value(value))
        x = self.x_sets[1 - parity]
        if x is not None:
            binding.bind_ortvalue_input(graph.data.name, _ort_value(x))
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

    def step(self, x: Any) -> tuple[list[np.ndarray], bool]:
        """One step of ``x`` from the current state: (the results, whether x came unbatched). The results
        are live buffers for edgernn models (copy before handing out).

        Raises InputError, the state unmoved, for an x the rules refuse, when onnxruntime fails, or when a
        result or the next state comes out NaN or infinite (e.g. from a huge restored state): no stream is
        ever left holding NaN.
        """
        current = self.current
        written = 1 - current
        unbatched = self._write_x(x, written)
        try:
            self._calls[current]()
        except (*ORT_ERRORS, RuntimeError) as exc:  # run_with_iobinding reports failures as RuntimeError
            raise InputError(
                f"onnxruntime could not run a step with x of shape {self._x_shape}: {_first_line(exc)}"
            ) from None
        if self.fixed_results:
            results = self.result_sets[written]
        else:
            outputs = self._bindings[current].get_outputs()[: self.graph.result_count]
            results = [np.array(v.numpy()) for v in outputs]
        probe = self._probes[written]
        if not (
            probe.all_finite() if probe is not None else _all_finite([*results, *self.state_sets[written]])
        ):
            if self._x_in_probe:
                self.graph.data.validate(x, self.batch_size)  # a non-finite x: refused with its own message
            raise InputError(
                "the step's result or next state came out NaN or infinite (is the state restored from a "
                "snapshot out of range?); the state is as it was before the step"
            )
        self.current = written
        return results, unbatched

    def _fast_step(self) -> Callable[[Any], tuple[list[np.ndarray], bool]] | None:
        """``step`` for the common case of an edgernn model, with what it reads bound once: an x of the
        input's dtype and shape (or a token id in range) is copied in, the graph runs, one dot product
        checks the step. Anything else, and any step that fails, goes to ``step``, which (run again from
        the same, unmoved state) applies every rule and raises the error; None where ``step`` is all."""
        if not (self.fixed_results and self._probes[0] is not None and self.x_sets[0] is not None):
            return None
        x_sets, calls, result_sets = self.x_sets, self._calls, self.result_sets
        flats, zeros = [p.flat for p in self._probes], self._probes[0].zeros
        dtype, shape, unbatched_shape = x_sets[0].dtype, x_sets[0].shape, self.x_unbatched_shape
        x_checked = self._x_in_probe  # else: integer tokens, checked against the vocabulary here
        vocab_size = self.graph.data.vocab_size or 0
        step, vdot, ndarray, failures = self.step, np.vdot, np.ndarray, (*ORT_ERRORS, RuntimeError)

        def fast_step(x: Any) -> tuple[list[np.ndarray], bool]:
            if type(x) is ndarray and x_checked and x.dtype == dtype:
                if x.shape == shape:
                    unbatched = False
                elif x.shape == unbatched_shape:
                    unbatched = True
                else:
                    return step(x)
            elif type(x) is int and unbatched_shape == () and 0 <= x < vocab_size:
                unbatched = True
            else:
                return step(x)
            current = self.current
            written = 1 - current
            x_sets[written][...] = x
            try:
                calls[current]()
            except failures:
                return step(x)
            if float(vdot(flats[written], zeros)) != 0.0:  # NaN or inf somewhere: step says where
                return step(x)
            self.current = written
            return result_sets[written], unbatched

        return fast_step

    def _write_x(self, x: Any, parity: int) -> bool:
        """Check one step's x and copy it into the buffer of set ``parity``; returns whether x came unbatched.

        The common cases (an array of the right dtype and shape, a Python int token) take a short path;
        anything else, and anything that fails the short path's checks, goes through ``DataInput.validate``
        for the full conversion rules and the error message. A float x in the probed buffer is checked for
        NaN and inf with the step's results (``step``), not here.
        """
        buffer = self.x_sets[parity]
        if buffer is None:
            array, unbatched = self.graph.data.validate(x, self.batch_size)
            self._bindings[1 - parity].bind_cpu_input(self.graph.data.name, array)
            self._x_shape = array.shape
            return unbatched
        if type(x) is np.ndarray and x.dtype == buffer.dtype:
            if x.shape == buffer.shape:
                buffer[...] = x
                if self._x_in_probe or self._acceptable(buffer):
                    return False
            elif x.shape == self.x_unbatched_shape:
                buffer[0] = x
                if self._x_in_probe or self._acceptable(buffer):
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

    def _acceptable(self, buffer: np.ndarray) -> bool:
        """Whether the buffer, already in the right dtype, holds values the full checks would accept."""
        if self._x_probe is not None:
            return self._x_probe.all_finite()
        vocab_size = self.graph.data.vocab_size
        if vocab_size is None:
            return True  # any value of an integer or boolean dtype is a valid value for a foreign model
        flat = buffer.reshape(-1)
        if flat.size == 1:  # one token: a Python comparison beats two numpy reductions
            return 0 <= int(flat[0]) < vocab_size
        return bool(flat.min() >= 0 and flat.max() < vocab_size)

    def load_state(self, arrays: Sequence[np.ndarray]) -> None:
        """Copy validated arrays (one per state slot, right shapes and dtypes) into the current state."""
        for buffer, array in zip(self.state, arrays, strict=True):
            np.copyto(buffer, array)


class _BufferSet:
    """The x a step reads and the results and state it writes. When the results and state are all
    float32 (edgernn models) they, and a float32 x, are views into one flat buffer, so a single probe
    tells whether the whole step was finite."""

    def __init__(
        self,
        graph: Graph,
        batch_size: int,
        x_shape: tuple[int, ...] | None,
        result_shapes: list[tuple[int, ...]] | None,
    ):
        state_shapes = [slot.shape_for(batch_size) for slot in graph.states]
        self.x = None if x_shape is None else np.zeros(x_shape, graph.data.dtype)
        self.x_in_probe = False
        self.probe: _FiniteProbe | None = None
        if result_shapes is None or any(slot.dtype != np.float32 for slot in graph.states):
            self.results = None if result_shapes is None else [np.zeros(s, np.float32) for s in result_shapes]
            self.state = [np.zeros(s, slot.dtype) for s, slot in zip(state_shapes, graph.states, strict=True)]
            return
        self.x_in_probe = self.x is not None and self.x.dtype == np.float32
        shapes = [*([x_shape] if self.x_in_probe else []), *result_shapes, *state_shapes]
        sizes = [math.prod(s) for s in shapes]
        flat = np.zeros(sum(sizes), np.float32)
        views, start = [], 0
        for shape, size in zip(shapes, sizes, strict=True):
            views.append(flat[start : start + size].reshape(shape))
            start += size
        if self.x_in_probe:
            self.x = views.pop(0)
        self.results, self.state = views[: len(result_shapes)], views[len(result_shapes) :]
        self.probe = _FiniteProbe(flat)


def _all_finite(arrays: Sequence[np.ndarray]) -> bool:
    return all(a.dtype.kind != "f" or np.isfinite(a).all() for a in arrays)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _x_shape(data: DataInput, batch_size: int) -> tuple[int, ...] | None:
    if any(d is None for d in data.shape[1:]):
        return None
    return (batch_size, *data.shape[1:])


class _FiniteProbe:
    """Tells whether a float buffer is all finite with one dot product: 0 * x is 0 for every finite x and
    NaN for NaN and +-inf, and a NaN makes the sum NaN (one BLAS call, about half of ``isfinite().all()``).
    ``np.vdot``, unlike ``dot``, does not turn the 0 * inf into a RuntimeWarning.
    """

    def __init__(self, buffer: np.ndarray):
        self.flat = buffer.reshape(-1)  # a view: always sees the buffer's current values
        self.zeros = np.zeros_like(self.flat)

    def all_finite(self) -> bool:
        # float() first: comparing the numpy scalar itself costs twice the dot product (numpy 1.26)
        return float(np.vdot(self.flat, self.zeros)) == 0.0


def steps_from_initial(graph: Graph, xs: np.ndarray) -> list[np.ndarray]:
    """xs ``(1, T, ...)`` one step at a time from the initial state: ``[ys (1, T, O), *final states]``."""
    binding = Binding(graph, 1)
    for slot, buffer in zip(graph.states, binding.state, strict=True):
        buffer.fill(slot.initial)
    ys = []
    for t in range(xs.shape[1]):
        ys.append(binding.step(xs[:, t])[0][0].copy())
    return [np.stack(ys, axis=1), *(a.copy() for a in binding.state)]
