"""The least shape each node's output can have, worked out from the shapes ``graph_bounds`` knows.

Two 256 KiB constants of shapes (65536, 1) and (1, 65536) multiply into a 16 GiB tensor, and onnxruntime
folds it when the session opens; added to a state first, the same happens at every step. No constant
shape says so: the size comes from broadcasting. ``least_shapes`` gives, for each output, a shape the
real one is at least as large as in every axis (right-aligned, as ONNX broadcasts), or None where it
cannot tell; an axis it knows nothing of counts as 1, so a bound it reports is always reached.

A shape is ``(dims, exact)``: ``exact`` when every axis and the rank are known (a constant's shape), which
the ops that move axes around (MatMul's batch axes aside, Transpose, Concat, Reshape) need.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Shape = tuple[tuple[int, ...], bool]

BROADCAST = {
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Mean", "Sum", "Where", "Equal", "Less",
    "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "BitShift", "PRelu", "BitwiseAnd",
    "BitwiseOr", "BitwiseXor",
}  # fmt: skip
SAME_SHAPE = {
    "Relu", "Tanh", "Sigmoid", "Exp", "Log", "Abs", "Neg", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round",
    "Sign", "Not", "Erf", "Cast", "CastLike", "Identity", "Softmax", "LogSoftmax", "Clip", "LeakyRelu",
    "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Dropout", "IsNaN", "IsInf",
    "QuantizeLinear", "DequantizeLinear", "Sin", "Cos", "Tan", "Mish", "Gelu", "LayerNormalization",
    "BatchNormalization", "InstanceNormalization", "Shrink", "ThresholdedRelu", "BitwiseNot",
}  # fmt: skip


def least_shapes(node: Any, inputs: Sequence[Shape | None], values: Sequence[Any]) -> list[Shape | None]:
    """One least shape (or None) per output of ``node``; ``inputs``: the least shapes of its inputs,
    ``values``: their values where known (small numpy arrays), else None."""
    op = node.op_type if node.domain in ("", "ai.onnx") else ""
    first: Shape | None = None
    if op in BROADCAST:
        first = _broadcast(inputs)
    elif op in SAME_SHAPE and inputs and inputs[0] is not None:
        first = inputs[0]
    elif op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        other = 3 if op == "QLinearMatMul" else 1  # QLinearMatMul: a, its scale and zero point, then b
        first = _matmul(inputs[0], inputs[other]) if len(inputs) > other else None
    elif op == "Gemm" and len(inputs) >= 2:
        first = _gemm(node, inputs[0], inputs[1])
    elif op == "Concat":
        first = _concat(node, inputs)
    elif op == "Transpose" and inputs and inputs[0] is not None and inputs[0][1]:
        first = _transpose(node, inputs[0][0])
    elif op in ("ConstantOfShape", "Expand", "Tile", "Range", "Reshape"):
        first = _from_values(op, inputs, values)
    return [first] + [None] * (len(node.output) - 1)


def _axis(a: int, b: int) -> int:
    return 0 if 0 in (a, b) else max(a, b)  # an axis of 0 broadcasts only against 1 (or fails)


def _broadcast(inputs: Sequence[Shape | None]) -> Shape | None:
    known = [s for s in inputs if s is not None]
    if not known:
        return None
    rank = max(len(dims) for dims, _ in known)
    out = [1] * rank
    for dims, _ in known:
        for i, d in enumerate(dims, rank - len(dims)):
            out[i] = _axis(out[i], d)
    return tuple(out), len(known) == len(inputs) and all(exact for _, exact in known)


def _matmul(a: Shape | None, b: Shape | None) -> Shape | None:
    if a is None or b is None or len(a[0]) < 2 or len(b[0]) < 2:
        return None
    batch = _broadcast([(a[0][:-2], a[1]), (b[0][:-2], b[1])])
    assert batch is not None
    return (*batch[0], a[0][-2], b[0][-1]), a[1] and b[1]


def _gemm(node: Any, a: Shape | None, b: Shape | None) -> Shape | None:
    if a is None or b is None or len(a[0]) != 2 or len(b[0]) != 2 or not (a[1] and b[1]):
        return None
    flags = {attr.name: int(attr.i) for attr in node.attribute if attr.name in ("transA", "transB")}
    rows = a[0][1] if flags.get("transA") else a[0][0]
    columns = b[0][0] if flags.get("transB") else b[0][1]
    return (rows, columns), True


def _concat(node: Any, inputs: Sequence[Shape | None]) -> Shape | None:
    if not inputs or any(s is None or not s[1] for s in inputs):
        return None
    shapes = [s[0] for s in inputs if s is not None]
    rank = len(shapes[0])
    axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 0)
    if rank == 0 or any(len(s) != rank for s in shapes) or not -rank <= axis < rank:
        return None
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return tuple(out), True


def _transpose(node: Any, dims: tuple[int, ...]) -> Shape | None:
    perm = next(([int(p) for p in a.ints] for a in node.attribute if a.name == "perm"), None)
    perm = list(reversed(range(len(dims)))) if perm is None else perm
    if sorted(perm) != list(range(len(dims))):
        return None
    return tuple(dims[p] for p in perm), True


def _sizes(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iu":
        return None
    return tuple(max(int(v), 0) for v in value.reshape(-1))


def _from_values(op: str, inputs: Sequence[Shape | None], values: Sequence[Any]) -> Shape | None:
    sizes = _sizes(values[1]) if op in ("Expand", "Tile", "Reshape") and len(values) > 1 else None
    if op == "ConstantOfShape" and values:
        sizes = _sizes(values[0])
        return None if sizes is None else (sizes, True)
    if sizes is None:
        return None
    source = inputs[0] if inputs else None
    if op == "Expand":
        return _broadcast([source, (sizes, True)]) if source is not None else (sizes, False)
    if op == "Tile" and source is not None and source[1] and len(source[0]) == len(sizes):
        return tuple(d * r for d, r in zip(source[0], sizes, strict=True)), True
    if op == "Reshape" and all(s > 0 for s in sizes):
        return sizes, True
    return None
