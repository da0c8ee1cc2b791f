"""The integer program of a bring-your-own model: its buffers, its operations, and their reference in numpy,
the definition of what the generated C computes, bit for bit.

``edgernn.export.c.integer_program`` makes an ``IntegerProgram`` from the lowered float step (every
buffer's scale calibrated on real data); ``q_run`` runs one step of a batch; ``ProgramStepper`` wraps it
in the Stream API of ``Stepper`` (float in and out, quantized and dequantized at the edges) so that the
quality gates judge it as they judge any stepper.

Every buffer holds int16 values at one scale (``Buffer.scale``: the value of one unit; the features may
have one scale each, folded into the products that read them); booleans are 0 and 1. The operations:

- ``QGemv``: int8 weights with one scale per row (folded with the input's scale into an int32 multiplier
  and shift per row), int32 bias and accumulators (``integer_ops.q_product``), saturated to int16;
  ``accumulate`` adds to what the buffer holds (two products fused into one output).
- ``QMap``: element-wise with broadcasting. Every input that changes scale is requantized
  (``integer_layers.q_narrow``: an int32 multiplier and a shift, 32-bit arithmetic) before the arithmetic
  (a product of two inputs by ``integer_ops.q_requantize`` after the multiplication); sigmoid and tanh
  take Q3.12 and give Q0.15 by the tables of ``integer_ops``; a comparison with a constant compares with
  an integer threshold.
- ``QCopy``: strided copies (Slice, Split, Concat, Transpose, Expand), requantized where scales differ;
  ``QIndexedCopy``: a gather by constant indices; ``QGather``: the embedding row (int16 table).
- ``QLayerNorm``, ``QSoftmax``: ``integer_layers``.
- ``QLogMel``: a keyword model's log-mel front end (``integer_front_end``): its FFT, power and mel sums
  wider than int16 inside, the log-mel out at the output's scale.

This module never imports torch or onnx.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgernn.runtime import integer_layers as layers
from edgernn.runtime import integer_ops as ops
from edgernn.runtime.integer_front_end import QLogMel, q_log_mel
from edgernn.runtime.integer_ref import QuantizedStream, quantize_values

IDENTITY = (1 << 30, 30)  # (multiplier, shift) of a ratio of 1: q_narrow leaves every int16 as it is


@dataclass
class Buffer:
    """``kind``: ``x`` (the features), ``token``, ``state`` (at ``base`` in the state), ``arena`` (scratch
    of a step) or ``const`` (``values``, int16)."""

    kind: str
    size: int
    scale: float
    values: np.ndarray | None = None
    base: int = 0
    name: str = ""


@dataclass
class View:
    """``shape`` (contiguous, row-major) at ``offset`` values into buffer ``buffer``."""

    buffer: int
    offset: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class QGemv:
    out: View
    x: View
    weight: np.ndarray  # (N, K) int8
    bias: np.ndarray  # (N,) int32
    multiplier: np.ndarray  # (N,)
    shift: np.ndarray  # (N,)
    accumulate: bool = False


@dataclass
class QMap:
    """``out = op(inputs)``; ``rescale``: per input a (multiplier, shift) or None (read as it is);
    ``params``: ``threshold`` (a comparison with a constant), ``low``/``high`` (clip)."""

    op: str
    out: View
    inputs: list[View]
    rescale: list[tuple[int, int] | None]
    params: dict[str, int] = field(default_factory=dict)


@dataclass
class QCopy:
    dst: int
    dst_offset: int
    dst_strides: tuple[int, ...]
    src: int
    src_offset: int
    src_strides: tuple[int, ...]
    shape: tuple[int, ...]
    rescale: tuple[int, int] | None = None


@dataclass
class QIndexedCopy:
    out: View
    x: View
    indices: np.ndarray
    outer: int
    rows: int
    inner: int


@dataclass
class QGather:
    out: View
    table: np.ndarray  # (V, E) int16


@dataclass
class QLayerNorm:
    out: View
    x: View
    size: int
    gamma: np.ndarray  # (size,) int16
    beta: np.ndarray  # (size,) int32
    eps: int
    multiplier: int
    shift: int


@dataclass
class QSoftmax:
    out: View
    x: View
    size: int
    multiplier: int
    shift: int


QOperation = QGemv | QMap | QCopy | QIndexedCopy | QGather | QLayerNorm | QSoftmax | QLogMel

COMPARE = {
    "less": np.less,
    "greater": np.greater,
    "less_equal": np.less_equal,
    "greater_equal": np.greater_equal,
    "equal": np.equal,
}
TWO_INPUTS = {"add", "sub", "mul", "max", "min", "and", "or"}


@dataclass
class IntegerProgram:
    """The step: ``ops`` over ``buffers``; ``x``: the input buffer; ``states``: per metadata state its
    buffer and the view of its next value (copied back, requantized, at the end of a step); ``y``."""

    buffers: list[Buffer]
    ops: list[QOperation]
    x: int
    states: list[tuple[int, View]]
    y: View
    input_kind: str
    input_size: int
    state_names: tuple[str, ...]
    state_shapes: tuple[tuple[int, ...], ...]
    input_scale: np.ndarray | None = None  # (F,) features
    state_rescale: list[tuple[int, int] | None] = field(default_factory=list)  # next value -> the state
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def output_scale(self) -> float:
        return self.buffers[self.y.buffer].scale

    @property
    def output_size(self) -> int:
        return self.y.size

    @property
    def state_values(self) -> int:
        return sum(self.buffers[b].size for b, _ in self.states)


# --- the reference step ----------------------------------------------------------------------------


class _Memory:
    """Every buffer as a (B, size) int64 array (constants (1, size))."""

    def __init__(self, program: IntegerProgram, batch: int):
        self.arrays = []
        for buffer in program.buffers:
            if buffer.kind == "const":
                self.arrays.append(np.asarray(buffer.values, np.int64).reshape(1, -1))
            else:
                self.arrays.append(np.zeros((batch, buffer.size), np.int64))

    def read(self, view: View, rank: int | None = None) -> np.ndarray:
        array = self.arrays[view.buffer]
        part = array[:, view.offset : view.offset + view.size]
        shape = view.shape if rank is None else (1,) * (rank - len(view.shape)) + tuple(view.shape)
        return part.reshape(array.shape[0], *shape)

    def write(self, view: View, values: np.ndarray) -> None:
        array = self.arrays[view.buffer]
        values = np.broadcast_to(values, (array.shape[0], *view.shape)) if np.ndim(values) else values
        array[:, view.offset : view.offset + view.size] = np.reshape(values, (array.shape[0], view.size))


def _scaled(value: np.ndarray, rescale: tuple[int, int] | None) -> np.ndarray:
    return value if rescale is None else layers.q_narrow(value, *rescale)


def q_map(op: QMap, args: list[np.ndarray]) -> np.ndarray:
    """The values of one element-wise operation, its inputs read (broadcast to one rank)."""
    a = _scaled(args[0], op.rescale[0])
    if op.op in TWO_INPUTS:
        b = _scaled(args[1], op.rescale[1])
        if op.op == "mul":
            return ops.q_sat16(ops.q_requantize(args[0] * args[1], *op.rescale[0]))
        if op.op in ("and", "or"):
            both = np.logical_and if op.op == "and" else np.logical_or
            return both(args[0] != 0, args[1] != 0).astype(np.int64)
        result = {"add": np.add, "sub": np.subtract, "max": np.maximum, "min": np.minimum}[op.op](a, b)
        return ops.q_sat16(result)
    if op.op in COMPARE:
        if "threshold" in op.params:
            return COMPARE[op.op](args[0], op.params["threshold"]).astype(np.int64)
        return COMPARE[op.op](a, _scaled(args[1], op.rescale[1])).astype(np.int64)
    if op.op == "where":
        b = _scaled(args[2], op.rescale[2])
        return ops.q_sat16(np.where(args[0] != 0, _scaled(args[1], op.rescale[1]), b))
    if op.op == "relu":
        return np.maximum(args[0], 0)
    if op.op == "neg":
        return ops.q_sat16(-args[0])
    if op.op == "abs":
        return ops.q_sat16(np.abs(args[0]))
    if op.op == "not":
        return (args[0] == 0).astype(np.int64)
    if op.op == "clip":
        return np.clip(args[0], op.params["low"], op.params["high"])
    if op.op == "leaky_relu":
        return np.where(args[0] >= 0, args[0], ops.q_sat16(a))
    if op.op == "sigmoid":
        return ops.q_sigmoid(ops.q_sat16(a))
    if op.op == "tanh":
        return ops.q_tanh(ops.q_sat16(a))
    return ops.q_sat16(a)  # rescale


def _copy(memory: _Memory, op: QCopy) -> None:
    grids = np.indices(op.shape).reshape(len(op.shape), -1) if op.shape else np.zeros((0, 1), np.int64)
    src_index = op.src_offset + (np.asarray(op.src_strides, np.int64)[:, None] * grids).sum(axis=0)
    dst_index = op.dst_offset + (np.asarray(op.dst_strides, np.int64)[:, None] * grids).sum(axis=0)
    values = memory.arrays[op.src][:, src_index]
    if op.rescale is not None:
        values = ops.q_sat16(layers.q_narrow(values, *op.rescale))
    target = memory.arrays[op.dst]
    target[:, dst_index] = np.broadcast_to(values, (target.shape[0], values.shape[1]))


def q_run(
    program: IntegerProgram, x: np.ndarray, states: list[np.ndarray]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """One step of a batch: x (B,) token ids or (B, F) int16 features; states: per state (B, size) int16
    -> y (B, O) int16 and the next states (int64 arrays holding the C's values)."""
    x = np.asarray(x, np.int64)
    batch = x.shape[0]
    memory = _Memory(program, batch)
    memory.arrays[program.x] = x.reshape(batch, -1)
    for (index, _), value in zip(program.states, states, strict=True):
        memory.arrays[index] = np.array(value, np.int64).reshape(batch, -1)
    token = memory.arrays[program.x][:, 0] if program.input_kind == "tokens" else None
    for op in program.ops:
        if isinstance(op, QGemv):
            value = ops.q_product(
                memory.read(op.x).reshape(batch, -1), op.weight, op.bias, op.multiplier, op.shift
            )
            if op.accumulate:
                value = value + memory.read(op.out).reshape(batch, -1)
            memory.write(op.out, ops.q_sat16(value).reshape(batch, *op.out.shape))
        elif isinstance(op, QMap):
            rank = len(op.out.shape)
            memory.write(op.out, q_map(op, [memory.read(v, rank) for v in op.inputs]))
        elif isinstance(op, QCopy):
            _copy(memory, op)
        elif isinstance(op, QIndexedCopy):
            value = memory.read(op.x).reshape(batch, op.outer, op.rows, op.inner)[:, :, op.indices, :]
            memory.write(op.out, value.reshape(batch, *op.out.shape))
        elif isinstance(op, QGather):
            memory.write(op.out, op.table[token].reshape(batch, *op.out.shape))
        elif isinstance(op, QLogMel):
            memory.write(
                op.out, q_log_mel(op, memory.read(op.x).reshape(batch, -1)).reshape(batch, *op.out.shape)
            )
        elif isinstance(op, QLayerNorm):
            value = memory.read(op.x).reshape(batch, -1, op.size)
            value = layers.q_layer_norm(value, op.gamma, op.beta, op.eps, op.multiplier, op.shift)
            memory.write(op.out, value.reshape(batch, *op.out.shape))
        else:
            value = layers.q_softmax(memory.read(op.x).reshape(batch, -1, op.size), op.multiplier, op.shift)
            memory.write(op.out, value.reshape(batch, *op.out.shape))
    y = memory.read(program.y).reshape(batch, -1).copy()
    next_states = []
    for (_, view), rescale in zip(program.states, program.state_rescale, strict=True):
        value = memory.read(view).reshape(batch, -1)
        next_states.append(value.copy() if rescale is None else ops.q_sat16(layers.q_narrow(value, *rescale)))
    return y, next_states


# --- the Stream API --------------------------------------------------------------------------------


class ProgramStream(QuantizedStream):
    """A batch of streams through ``q_run`` with the Stream API (float32 in and out)."""

    _q = staticmethod(q_run)

    @property
    def _form(self) -> IntegerProgram:
        return self._stepper.program

    def reset(self) -> None:
        program = self._stepper.program
        self.q_state = [
            np.zeros((self.batch_size, program.buffers[b].size), np.int64) for b, _ in program.states
        ]

    @property
    def state(self) -> dict[str, np.ndarray]:
        program = self._stepper.program
        out = {}
        for name, shape, (index, _), q in zip(
            program.state_names, program.state_shapes, program.states, self.q_state, strict=True
        ):
            out[name] = (q * program.buffers[index].scale).astype(np.float32).reshape(-1, *shape)
        return out

    @state.setter
    def state(self, value: Mapping[str, Any]) -> None:
        program = self._stepper.program
        self._check_state(value)
        self.q_state = [
            quantize_values(
                np.asarray(value[name]).reshape(self.batch_size, -1), program.buffers[index].scale
            )
            for name, (index, _) in zip(program.state_names, program.states, strict=True)
        ]


class ProgramStepper:
    """The integer program with the Stepper's Stream API: ``new_stream(batch_size)``."""

    def __init__(self, program: IntegerProgram, info: Any = None):
        self.program, self.info = program, info

    def new_stream(self, batch_size: int = 1) -> ProgramStream:
        return ProgramStream(self, batch_size)
