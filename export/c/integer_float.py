"""The lowered float step (``export.c.ir.Program``) run in numpy over a batch, to calibrate the integer
program: the largest magnitude every buffer holds over real data (``program_peaks``), with the run checked
against the float32 stepper first (a lowering that computed something else would calibrate the wrong
values)."""

from __future__ import annotations

import numpy as np

from edgernn.export.c.ir import (
    Copy,
    Elementwise,
    GatherRow,
    Gemv,
    IndexedCopy,
    LayerNorm,
    Mark,
    Program,
    RealFFT,
    Softmax,
    SparseGemv,
    Storage,
    Tensor,
)
from edgernn.export.c.reference import np_eval
from edgernn.runtime import Stepper
from edgernn.runtime.errors import ContractError

CHECK_STEPS = 16


def copy_indices(shape, offset: int, strides) -> np.ndarray:
    """The flat indices ``offset + i . strides`` of every index ``i`` of ``shape``, in row-major order."""
    if not shape:
        return np.array([offset], np.int64)
    grids = np.indices(tuple(shape)).reshape(len(shape), -1)
    return offset + (np.asarray(strides, np.int64)[:, None] * grids).sum(axis=0)


class FloatRun:
    """The Program's buffers for a batch of streams, in float64; ``peaks``: id(storage) -> max |value|."""

    def __init__(self, program: Program, batch: int):
        self.program, self.batch = program, batch
        self.arrays: dict[int, np.ndarray] = {}
        self.peaks: dict[int, float] = {}
        self.feature_peaks = np.zeros(program.x.size)
        self.states = [np.zeros((batch, t_in.size)) for t_in, _ in program.states]

    def _array(self, storage: Storage) -> np.ndarray:
        key = id(storage)
        if key not in self.arrays:
            if storage.kind == "const":
                self.arrays[key] = np.asarray(storage.array, np.float64).reshape(1, -1)
            else:
                self.arrays[key] = np.zeros((self.batch, storage.size))
        return self.arrays[key]

    def read(self, t: Tensor, rank: int | None = None) -> np.ndarray:
        array = self._array(t.storage)
        shape = t.shape if rank is None else (1,) * (rank - len(t.shape)) + tuple(t.shape)
        return array[:, t.offset : t.offset + t.size].reshape(array.shape[0], *shape)

    def _seen(self, storage: Storage, values: np.ndarray) -> None:
        peak = float(np.abs(values).max(initial=0.0))
        self.peaks[id(storage)] = max(self.peaks.get(id(storage), 0.0), peak)

    def write(self, t: Tensor, values: np.ndarray) -> None:
        array = self._array(t.storage)
        values = np.broadcast_to(values, (self.batch, *t.shape)).reshape(self.batch, t.size)
        array[:, t.offset : t.offset + t.size] = values
        self._seen(t.storage, values)

    def step(self, x: np.ndarray) -> np.ndarray:
        """x: (B,) tokens or (B, F) features -> y (B, O); the states carried."""
        program = self.program
        for key in [k for k, a in self.arrays.items() if a.shape[0] == self.batch]:
            del self.arrays[key]  # every step starts from fresh scratch, as the C's
        x = np.asarray(x, np.float64).reshape(self.batch, -1)
        self.arrays[id(program.x.storage)] = x
        if program.x.dtype != "t":
            self.feature_peaks = np.maximum(self.feature_peaks, np.abs(x).max(axis=0))
            self._seen(program.x.storage, x)
        for (t_in, _), value in zip(program.states, self.states, strict=True):
            self.arrays[id(t_in.storage)] = value
            self._seen(t_in.storage, value)
        for op in program.ops:
            self._op(op)
        y = self.read(program.y).reshape(self.batch, -1).copy()
        self.states = [self.read(t_out).reshape(self.batch, -1).copy() for _, t_out in program.states]
        return y

    def _op(self, op) -> None:
        batch = self.batch
        if isinstance(op, (Gemv, SparseGemv)):
            value = self.read(op.x).reshape(batch, -1) @ op.weight.astype(np.float64)
            if op.bias is not None:
                value = value + op.bias
            if getattr(op, "accumulate", False):
                value = value + self.read(op.out).reshape(batch, -1)
            self.write(op.out, value.reshape(batch, *op.out.shape))
        elif isinstance(op, RealFFT):  # the dense matrix it stands for; with power, bins' re^2 + im^2 first
            value = self.read(op.x).reshape(batch, -1) @ op.weight.astype(np.float64)
            if op.power:
                bins = op.layout.bins
                value[:, :bins] = value[:, :bins] ** 2 + value[:, bins:] ** 2
            self.write(op.out, value.reshape(batch, *op.out.shape))
        elif isinstance(op, Elementwise):
            rank = len(op.out.shape)
            args = [self.read(t, rank) for t in op.inputs]
            if op.op in ("Where", "And", "Or", "Not"):
                args = [a != 0 if t.dtype == "b" else a for a, t in zip(args, op.inputs, strict=True)]
            (value,) = np_eval(op.op, args, dict(op.attrs), 1)
            self.write(op.out, np.asarray(value, np.float64))
        elif isinstance(op, Copy):
            src = self._array(op.src)[:, copy_indices(op.shape, op.src_offset, op.src_strides)]
            dst = self._array(op.dst)
            dst[:, copy_indices(op.shape, op.dst_offset, op.dst_strides)] = src
            self._seen(op.dst, src)
        elif isinstance(op, IndexedCopy):
            value = self.read(op.x).reshape(batch, op.outer, op.rows, op.inner)[:, :, op.indices, :]
            self.write(op.out, value.reshape(batch, *op.out.shape))
        elif isinstance(op, GatherRow):
            token = self.read(op.token).reshape(batch).astype(np.int64)
            self.write(op.out, op.table.astype(np.float64)[token].reshape(batch, *op.out.shape))
        elif isinstance(op, LayerNorm):
            x = self.read(op.x).reshape(batch, -1, op.size)
            scale = np.ones(op.size) if op.scale is None else op.scale
            (value,) = np_eval("LayerNormalization", [x, scale, op.bias], {"epsilon": op.epsilon}, 1)
            self.write(op.out, value.reshape(batch, *op.out.shape))
        elif isinstance(op, Softmax):
            x = self.read(op.x).reshape(batch, -1, op.size)
            (value,) = np_eval("LogSoftmax" if op.log else "Softmax", [x], {"axis": -1}, 1)
            self.write(op.out, value.reshape(batch, *op.out.shape))
        elif not isinstance(op, Mark):
            raise ContractError(f"--precision integer: {type(op).__name__} has no float reference here")


def program_peaks(program: Program, proto_bytes: bytes, series: np.ndarray) -> FloatRun:
    """Run ``program`` over ``series`` (B, T[, F]) from the zero state, after checking its first steps
    against the float32 stepper; the run (its ``peaks`` and ``feature_peaks``)."""
    series = np.asarray(series)
    run = FloatRun(program, series.shape[0])
    stream = Stepper(proto_bytes, chunk_model=False).new_stream(series.shape[0])
    worst = 0.0
    for t in range(series.shape[1]):
        y = run.step(series[:, t])
        if t < CHECK_STEPS:
            want = stream.step(series[:, t]).reshape(y.shape)
            worst = max(worst, float(np.abs(y - want).max() / max(1.0, float(np.abs(want).max()))))
    if not worst < 1e-3:
        raise ContractError(
            f"--precision integer: the lowered step differs from the float32 stepper by {worst:.3g}; "
            "deploy it as float32 or int8"
        )
    return run
