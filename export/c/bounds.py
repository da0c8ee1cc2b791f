"""What a model file may make the C generator allocate and write, decided before anything is allocated.

Every tensor the generator computes (a folded constant, or the zeros it runs an op on to learn a run-time
tensor's shape) is bounded by ``element_bound``: the larger of what the file stores (its initializers and
``Constant`` tensors, which it already holds) and a multiple of the sizes its metadata declares, with a
floor for small models. ``output_elements`` predicts an op's output size from its inputs' shapes and values
for every op whose output can outgrow its inputs (``ConstantOfShape``, ``Range``, ``Expand``, broadcasting,
products, ``Gather``, ``Concat``), so that a 900-byte file asking for a 16 GB constant is refused by name
instead of attempted. The state and a step's scratch are bounded at deploy (``MAX_STATE_BYTES``,
``MAX_SCRATCH_BYTES``; options raise them).
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ContractError, InputError

MIN_ELEMENT_BOUND = 1 << 20  # any model may compute tensors of a million values (4 MiB of float32)
DECLARED_FACTOR = 64  # a tensor may hold this many times the sizes the metadata declares
FOLDED_TOTAL_FACTOR = 8  # all folded constants together: this many times the bound of one
MAX_STATE_BYTES = 1 << 20  # the state struct a caller holds per stream (the self-test keeps two on the stack)
MAX_SCRATCH_BYTES = 1 << 20  # the scratch a step keeps on the stack
BROADCASTING = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
    "Equal", "And", "Or", "PRelu", "Where", "LayerNormalization",
}  # fmt: skip


def element_bound(proto: onnx.ModelProto, info: ModelInfo) -> int:
    """The most values one tensor of this model may hold while the C is generated."""
    stored = sum(_elements(t.dims) for t in proto.graph.initializer)
    for node in proto.graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                stored += _elements(attribute.t.dims)
    states = sum(math.prod(s.shape) for s in info.states)
    declared = info.input.size + info.output.size + states + info.hidden_size * info.num_layers
    return max(MIN_ELEMENT_BOUND, stored, DECLARED_FACTOR * declared)


def _elements(dims) -> int:
    return math.prod(max(int(d), 0) for d in dims)


def output_elements(op: str, inputs: list, attrs: dict) -> int:
    """How many values ``op`` on ``inputs`` (numpy arrays, None where absent) makes, without making them:
    exact for the ops that can outgrow their inputs, the largest input for the others."""
    present = [np.asarray(v) for v in inputs if v is not None]
    largest = max((v.size for v in present), default=1)
    if op == "ConstantOfShape":
        return _elements(_ints(inputs[0]))
    if op == "Range":
        return _range_length(*(np.asarray(v).reshape(-1)[0].item() for v in inputs[:3]))
    if op == "Expand":
        return _broadcast([inputs[0].shape, tuple(_ints(inputs[1]))])
    if op in ("MatMul", "Gemm"):
        return _product(op, inputs[0].shape, inputs[1].shape, attrs, present)
    if op == "Gather":
        data, indices = inputs[0], np.asarray(inputs[1])
        axis = int(attrs.get("axis", 0))
        if data.ndim == 0 or not -data.ndim <= axis < data.ndim:
            return largest
        rows = data.shape[axis]
        return indices.size * (data.size // rows if rows else 0)
    if op == "Concat":
        return sum(v.size for v in present)
    if op in BROADCASTING:
        return max(largest, _broadcast([v.shape for v in present]))
    return largest


def _ints(value) -> list[int]:
    array = np.asarray(value).reshape(-1)
    if array.dtype.kind not in "iu":
        raise ContractError(f"expected a shape of integers, got {array.dtype} values")
    return [int(v) for v in array]


def _range_length(start, limit, delta) -> int:
    values = [float(v) for v in (start, limit, delta)]
    if not all(math.isfinite(v) for v in values) or values[2] == 0:
        raise ContractError(f"Range({start}, {limit}, {delta}): expected finite bounds and a nonzero step")
    return max(math.ceil((values[1] - values[0]) / values[2]), 0)


def _broadcast(shapes: list[tuple[int, ...]]) -> int:
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(rank):
        sizes = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        grown = sizes - {1}
        if len(grown) > 1:
            raise ContractError(f"shapes {[list(s) for s in shapes]} do not broadcast")
        out.append(grown.pop() if grown else 1)
    return math.prod(out)


def _product(op: str, a: tuple[int, ...], b: tuple[int, ...], attrs: dict, present: list) -> int:
    if op == "Gemm" and len(a) == 2 and len(b) == 2:
        rows = a[1] if attrs.get("transA", 0) else a[0]
        cols = b[0] if attrs.get("transB", 0) else b[1]
        return max(rows * cols, *(v.size for v in present[2:]), 0)
    if len(a) < 1 or len(b) < 1:
        return max(v.size for v in present)
    rows = a[-2] if len(a) >= 2 else 1
    cols = b[-1] if len(b) >= 2 else 1
    return _broadcast([a[:-2], b[:-2]]) * rows * cols


def check_elements(count: int, bound: int, what: str) -> None:
    if count > bound:
        raise ContractError(
            f"{what} would hold {count:,} values; this model's stored weights and declared sizes bound a "
            f"tensor to {bound:,}"
        )


def size_option(value: int | None, default: int, option: str) -> int:
    """A bound in bytes given as an option: ``default`` for None, else a positive integer (InputError)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{option}: expected a positive number of bytes, got {value!r}")
    return value


def check_size(what: str, size_bytes: int, bound_bytes: int, option: str) -> None:
    """ContractError for ``what`` taking more than ``bound_bytes``."""
    if size_bytes > bound_bytes:
        raise ContractError(
            f"{what} takes {size_bytes:,} bytes, over the bound of {bound_bytes:,}; raise it with {option} "
            "if the target has the room"
        )
