"""The lowered step: flat buffers (``Storage``), tensors over them, and the handful of buffer operations
the C emitter writes (a GEMV, element-wise arithmetic, strided copies, the embedding row, LayerNorm,
Softmax). ``export.c.lower`` makes a ``Program`` of them from the ONNX step graph."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgernn.runtime.contract import ModelInfo

# --- tensors ------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Storage:
    """A flat buffer: ``x`` (the features), ``token``, ``state`` (the state struct, at ``base``),
    ``const`` (a static array, ``array``) or ``arena`` (scratch on the stack, placed by the emitter)."""

    kind: str
    size: int
    array: np.ndarray | None = None
    base: int = 0


@dataclass(eq=False)
class Tensor:
    """A contiguous row-major tensor at ``offset`` elements into ``storage``. dtype: ``f`` float,
    ``b`` boolean (stored as float 0/1), ``t`` the token id."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    storage: Storage
    offset: int = 0

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


# --- operations ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class Gemv:
    """``out (N) = [bias or out] + x (K) @ weight (K, N)``; ``source``: the initializer the weight came
    from and how (``"matmul"`` as stored, ``"gemm_t"`` stored transposed), for the int8 reference."""

    out: Tensor
    x: Tensor
    weight: np.ndarray
    bias: np.ndarray | None = None
    accumulate: bool = False
    source: tuple[str, str] | None = None
    x_name: str | None = None  # the graph tensor x is (the int8 reference quantizes it as the C does)


@dataclass(eq=False)
class Elementwise:
    """``out = op(inputs)`` with numpy broadcasting; inputs are tensors (constants are const storages)."""

    out: Tensor
    op: str
    inputs: list[Tensor]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class Copy:
    """``out[dst_offset + sum(i_d * dst_strides[d])] = src[src_offset + sum(i_d * src_strides[d])]`` for
    every index of ``shape``; storages, not tensors (a part of a Concat writes into its output)."""

    dst: Storage
    dst_offset: int
    dst_strides: tuple[int, ...]
    src: Storage
    src_offset: int
    src_strides: tuple[int, ...]
    shape: tuple[int, ...]
    dst_tensor: Tensor | None = None


@dataclass(eq=False)
class GatherRow:
    """``out (E) = table[token]``; ``source``: the initializer name, for the int8 reference."""

    out: Tensor
    token: Tensor
    table: np.ndarray
    source: str | None = None


@dataclass(eq=False)
class LayerNorm:
    out: Tensor
    x: Tensor
    scale: np.ndarray | None
    bias: np.ndarray | None
    epsilon: float
    size: int  # normalised over the last ``size`` elements of each row


@dataclass(eq=False)
class Softmax:
    out: Tensor
    x: Tensor
    size: int
    log: bool


@dataclass(eq=False)
class IndexedCopy:
    """``out (outer, N, inner) = x (outer, rows, inner)[:, indices, :]``: a Gather by constant indices that
    no stride describes, written as a table of the indices and one loop (code the same size for any N)."""

    out: Tensor
    x: Tensor
    indices: np.ndarray  # (N,) int32, each in [0, rows)
    outer: int
    rows: int
    inner: int


@dataclass(eq=False)
class RealFFT:
    """``out (2 * bins) = x (frame) @ weight`` where ``weight`` is a windowed real DFT (``export.c.fft``
    recognised it from its values): computed as a real FFT, float32 in every precision; with ``power``,
    ``out[:bins]`` = each bin's re^2 + im^2."""

    out: Tensor
    x: Tensor
    layout: Any  # export.c.fft.DFTLayout
    weight: np.ndarray  # the dense matrix it stands for
    x_name: str | None = None
    power: bool = False  # out[:bins] = re^2 + im^2 instead (a following x * x and [M; M] product fused)


@dataclass(eq=False)
class SparseGemv:
    """``out (N) = [bias] + x (K) @ weight (K, N)`` for a weight that is mostly zeros (``export.c.sparse``):
    float32 in every precision, the nonzeros alone stored and multiplied."""

    out: Tensor
    x: Tensor
    weight: np.ndarray
    bias: np.ndarray | None = None


@dataclass(eq=False)
class Mark:
    """A point in the step that a benchmark build may mark with a call (``export.c.devices.bench``):
    ``label`` ``front_end_begin`` or ``front_end_end``. Reads and writes nothing."""

    label: str


Operation = (
    Gemv | Elementwise | Copy | GatherRow | LayerNorm | Softmax | IndexedCopy | RealFFT | SparseGemv | Mark
)


@dataclass
class Program:
    """The lowered step: operations in order, the tensors the step reads and writes."""

    info: ModelInfo
    ops: list[Operation]
    x: Tensor
    states: list[tuple[Tensor, Tensor]]  # (state input, state output) per metadata state
    y: Tensor
    state_floats: int
    token_rows: int | None = None  # rows of the embedding tables the token indexes (the fewest); None: none


# --- strides ------------------------------------------------------------------------------------------


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def is_contiguous(shape: Sequence[int], strides: Sequence[int]) -> bool:
    expected = contiguous_strides(shape)
    return all(n == 1 or s == e for n, s, e in zip(shape, strides, expected, strict=True))


def broadcast_strides(shape: Sequence[int], out_shape: Sequence[int]) -> tuple[int, ...]:
    """Strides that read a contiguous ``shape`` tensor broadcast to ``out_shape`` (0 on broadcast axes)."""
    shape = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    strides = contiguous_strides(shape)
    return tuple(0 if n == 1 and m != 1 else s for n, m, s in zip(shape, out_shape, strides, strict=True))
