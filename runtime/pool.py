"""Many independent streams stepped together in one batched call: serving many users from one model.

    pool = stepper.new_pool(capacity=256)
    a, b = pool.join(), pool.join()
    ys = pool.step({a: x_a, b: x_b})  # {a: y_a, b: y_b}: one onnxruntime call for both
    pool.reset(a)                     # a starts over; b is untouched
    pool.leave(b)                     # b's row is free for the next join

Each stream has its own state and starts from the initial state; it can be reset, read (``state``),
restored or removed on its own, and streams join and leave between any two steps. A step moves only the
streams it names; the others keep their state. Every input is checked before the call, and on any error
no state moves, and a step whose results or next state come out NaN or infinite raises and moves nothing.
A pool may be shared between threads: its calls are serialised by one lock.

Why it is fast: the states of all streams live in one array per state tensor, rows kept packed (a leaving
stream's row is filled with the last one), so the usual step, every stream at once, reads and writes the
rows in place; only a step of some of the streams gathers and scatters rows.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from edgernn.runtime.errors import InputError
from edgernn.runtime.session import ORT_ERRORS, QUIET_LOG_LEVEL

if TYPE_CHECKING:
    from edgernn.runtime.graph import Graph
    from edgernn.runtime.stream import Results


class StreamPool:
    """Up to ``capacity`` streams of one model, each of batch size 1, stepped in one batched call.

    Made by ``Stepper.new_pool``. Stream ids are ints, never reused, so a stale id cannot reach a newer
    stream. State per stream: name -> array ``(1, num_layers, hidden_size)`` for edgernn models.
    """

    def __init__(self, graph: Graph, capacity: int):
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise InputError(f"capacity: expected a positive integer, got {capacity!r}")
        graph.check_allocation(capacity, "capacity")
        self._graph, self.capacity = graph, capacity
        self._axes = [_batch_axis(slot) for slot in graph.states]
        self._state = [np.zeros(slot.shape_for(capacity), slot.dtype) for slot in graph.states]
        self._rows: dict[int, int] = {}  # stream id -> row; rows 0..len-1 are in use
        self._ids: list[int] = []  # row -> stream id
        self._next_id = 0
        self._run = getattr(graph.session, "_sess", graph.session).run  # skips per-call Python checks
        self._lock = threading.Lock()  # join, leave and step from several threads never interleave
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = QUIET_LOG_LEVEL

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._rows

    @property
    def streams(self) -> list[int]:
        """The ids of the streams in the pool."""
        with self._lock:
            return list(self._ids)

    def join(self) -> int:
        """Add a stream at the initial state; returns its id. Raises InputError when the pool is full."""
        with self._lock:
            return self._join()

    def _join(self) -> int:
        if len(self._ids) == self.capacity:
            raise InputError(f"the pool is full: {self.capacity} streams (make it with a larger capacity)")
        stream_id, row = self._next_id, len(self._ids)
        self._next_id += 1
        self._rows[stream_id] = row
        self._ids.append(stream_id)
        self._fill_initial(row)
        return stream_id

    def leave(self, stream_id: int) -> None:
        """Remove a stream; its state is gone. The last row moves into its place (rows stay packed)."""
        with self._lock:
            self._leave(stream_id)

    def _leave(self, stream_id: int) -> None:
        row, last = self._row(stream_id), len(self._ids) - 1
        if row != last:
            moved = self._ids[last]
            for array, axis in zip(self._state, self._axes, strict=True):
                _rows(array, axis, row)[...] = _rows(array, axis, last)
            self._ids[row], self._rows[moved] = moved, row
        self._ids.pop()
        del self._rows[stream_id]

    def reset(self, stream_id: int) -> None:
        """Put one stream back to the initial state; the others are untouched."""
        with self._lock:
            self._fill_initial(self._row(stream_id))

    def state(self, stream_id: int) -> dict[str, np.ndarray]:
        """A copy of one stream's state, name -> array with a batch axis of 1 (never a view of the pool)."""
        with self._lock:
            row = self._row(stream_id)
            return {
                slot.input: _rows(array, axis, slice(row, row + 1)).copy()
                for slot, array, axis in zip(self._graph.states, self._state, self._axes, strict=True)
            }

    def restore(self, stream_id: int, snapshot: Mapping[str, Any]) -> None:
        """Set one stream's state from ``snapshot`` (as ``state`` gives it, or a Stream's of batch size 1);
        validated (names, shapes, dtypes, finite) before anything is copied."""
        checked = self._graph.check_state(snapshot, 1)
        with self._lock:
            row = self._row(stream_id)
            for slot, array, axis in zip(self._graph.states, self._state, self._axes, strict=True):
                _rows(array, axis, slice(row, row + 1))[...] = checked[slot.input]

    def step(self, xs: Mapping[int, Any]) -> dict[int, Results]:
        """One step of each stream named in ``xs`` (stream id -> its x: a token id, or ``(input_size,)``
        features; ``(1,)``/``(1, input_size)`` too), in one batched call. Streams not named keep their state.

        Returns stream id -> y ``(output_size,)`` float32 (a tuple for foreign models with several
        outputs). Raises InputError naming the stream for an unknown id or a bad x; then no state moves.
        """
        if not isinstance(xs, Mapping):
            raise InputError(f"xs: expected a dict of stream id -> x, got {type(xs).__name__}")
        self._lock.acquire()  # try/finally rather than "with": half the cost on the hot path
        try:
            return self._step(xs)
        finally:
            self._lock.release()

    def _step(self, xs: Mapping[int, Any]) -> dict[int, Results]:
        if not set(map(type, xs)) <= {int}:
            bad = [i for i in xs if not _is_id(i)]
            if bad:
                raise InputError(f"xs: expected int stream ids, got {bad[:5]!r:.200}")
        unknown = [i for i in xs if i not in self._rows]
        if unknown:
            raise InputError(
                f"xs: unknown stream id(s) {unknown[:5]}; the pool has {len(self._ids)} stream(s)"
            )
        if not xs:
            return {}
        ids, index = self._order(xs)
        batch = self._batch([xs[i] for i in ids], ids)
        results, states = self._call(batch, index)
        if not all(np.isfinite(a).all() for a in (*results, *states) if a.dtype.kind == "f"):
            raise InputError(
                f"the step of {len(ids)} stream(s) came out NaN or infinite (is a state restored from a "
                "snapshot out of range?); no stream's state moved"
            )
        for array, axis, value in zip(self._state, self._axes, states, strict=True):
            array[_at(axis, index)] = value
        if len(results) == 1:
            return dict(zip(ids, results[0], strict=True))
        return {stream_id: tuple(r[k] for r in results) for k, stream_id in enumerate(ids)}

    def _order(self, xs: Mapping[int, Any]) -> tuple[list[int], slice | np.ndarray]:
        """The stepped ids in row order, and their rows: a slice when they are rows 0..n-1 (every stream)."""
        ids = list(xs)
        if ids == self._ids:  # every stream, in the pool's order (e.g. a dict built from pool.streams)
            return ids, slice(0, len(ids))
        ids.sort(key=self._rows.__getitem__)
        rows = np.fromiter((self._rows[i] for i in ids), dtype=np.intp, count=len(ids))
        packed = rows[-1] == len(rows) - 1  # sorted and distinct, so exactly 0..n-1
        return ids, slice(0, len(ids)) if packed else rows

    def _row(self, stream_id: Any) -> int:
        try:
            if _is_id(stream_id):
                return self._rows[stream_id]
        except (KeyError, TypeError):
            pass
        raise InputError(f"unknown stream id {stream_id!r}; the pool has {len(self._ids)} stream(s)")

    def _fill_initial(self, row: int) -> None:
        for slot, array, axis in zip(self._graph.states, self._state, self._axes, strict=True):
            _rows(array, axis, row)[...] = slot.initial

    def _batch(self, values: list[Any], ids: list[int]) -> np.ndarray:
        """Every stream's x as one checked batch ``(n, ...)``; the short path stacks, then checks once."""
        data = self._graph.data
        if _stacks_faithfully(values):
            try:
                return data.validate(np.array(values), len(values))[0]  # np.array: 5x np.stack here
            except (TypeError, ValueError, InputError):
                pass  # ragged, or some x is bad: check them one by one to say which stream is at fault
        rows = []
        for stream_id, value in zip(ids, values, strict=True):
            try:
                rows.append(data.validate(value, 1)[0])
            except InputError as exc:
                raise InputError(f"stream {stream_id}: {exc}") from None
        return np.concatenate(rows)

    def _call(
        self, batch: np.ndarray, index: slice | np.ndarray
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        graph = self._graph
        feed = dict(graph.constants)
        feed[graph.data.name] = batch
        for slot, array, axis in zip(graph.states, self._state, self._axes, strict=True):
            feed[slot.input] = np.ascontiguousarray(_rows(array, axis, index))
        try:
            outputs = self._run(graph.output_names, feed, self._run_options)
        except ORT_ERRORS as exc:
            raise InputError(f"onnxruntime could not step {len(batch)} stream(s): {exc}") from None
        count = graph.result_count
        return outputs[:count], outputs[count:]


_SCALAR_TYPES = frozenset({int, float, np.int64, np.int32, np.float32, np.float64})


def _stacks_faithfully(values: list[Any]) -> bool:
    """Whether ``np.array(values)`` keeps what each value is, so that checking the stack is checking each
    value as a single stream would (stacking would turn a bool among ints into an int, an int among floats
    into a float). Plain numbers and numeric arrays do; anything else is checked value by value."""
    types = set(map(type, values))
    if types <= _SCALAR_TYPES:
        return bool not in types
    if types != {np.ndarray}:
        return False
    return {v.dtype.kind for v in values} <= set("fiu") and len({v.dtype for v in values}) == 1


def _is_id(stream_id: Any) -> bool:
    """Stream ids are ints; True and 1.0 would find stream 1 in a dict, so they are refused."""
    return type(stream_id) is int or isinstance(stream_id, np.integer)


def _batch_axis(slot: Any) -> int:
    if slot.shape.count(None) != 1:
        raise InputError(f"state {slot.input!r} has no single batch axis {slot.shape}; a pool needs one")
    return slot.shape.index(None)


def _at(axis: int, index: int | slice | np.ndarray) -> tuple:
    """The subscript that puts ``index`` on ``axis``: ``array[_at(1, 3)]`` is ``array[:, 3]``."""
    return (slice(None),) * axis + (index,)


def _rows(array: np.ndarray, axis: int, index: int | slice | np.ndarray) -> np.ndarray:
    """``array[_at(axis, index)]``: a view for an int or a slice, a copy for an index array."""
    return array[_at(axis, index)]
