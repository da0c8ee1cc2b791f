"""The values of a graph's small constants (shape tensors), worked out without running the graph.

``graph_bounds`` asks what shape a ConstantOfShape, Expand, Tile or Range will be given; the answer is
often computed from constants (``Concat(Constant, Constant)``). ``fold`` evaluates the ops such shape
arithmetic uses, on tensors of at most ``SMALL`` elements, with numpy. Any other op, or a larger result,
is "constant, value unknown" (None), and the caller decides what that means.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

SMALL = 64  # shape tensors hold one value per axis; larger constants are weights, never folded here

# TensorProto.data_type -> numpy dtype (little-endian, as ONNX stores raw_data)
DTYPES = {1: "<f4", 2: "u1", 3: "i1", 4: "<u2", 5: "<i2", 6: "<i4", 7: "<i8", 9: "?", 10: "<f2",
          11: "<f8", 12: "<u4", 13: "<u8"}  # fmt: skip
_INT32_FIELD = {2, 3, 4, 5, 6, 9}  # types whose typed values are stored in int32_data
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


def elements(dims: Sequence[int]) -> int:
    return math.prod(int(d) for d in dims)


def tensor_value(tensor: Any) -> np.ndarray | None:
    """The value of a TensorProto (the wire subset) of at most SMALL elements, else None."""
    dims = tuple(int(d) for d in tensor.dims)
    if any(d < 0 for d in dims) or elements(dims) > SMALL or tensor.data_location == _EXTERNAL:
        return None
    dtype = DTYPES.get(tensor.data_type)
    if dtype is None:
        return None
    count = elements(dims)
    if tensor.raw_data:
        if len(tensor.raw_data) != count * np.dtype(dtype).itemsize:
            return None
        return np.frombuffer(tensor.raw_data, dtype).reshape(dims).copy()
    values = _typed_values(tensor)
    if values is None or len(values) != count:
        return None
    return np.array(values).astype(dtype).reshape(dims)


def _typed_values(tensor: Any) -> Sequence | None:
    kind = tensor.data_type
    if kind == 10:
        return None  # float16 bits in int32_data: never a shape
    if kind in _INT32_FIELD:
        return tensor.int32_data
    return {1: tensor.float_data, 7: tensor.int64_data, 11: tensor.double_data}.get(
        kind, tensor.uint64_data if kind in (12, 13) else None
    )


def _attrs(node: Any) -> dict[str, Any]:
    return {a.name: a for a in node.attribute}


def _int_attr(node: Any, name: str, default: int) -> int:
    attr = _attrs(node).get(name)
    return default if attr is None else int(attr.i)


def _ints_attr(node: Any, name: str) -> list[int] | None:
    attr = _attrs(node).get(name)
    return None if attr is None else [int(v) for v in attr.ints]


def _axes(node: Any, values: list[np.ndarray], position: int) -> list[int] | None:
    if len(values) > position:
        return [int(v) for v in values[position].reshape(-1)]
    return _ints_attr(node, "axes")


def _unsqueeze(node: Any, v: list[np.ndarray]) -> np.ndarray:
    out = v[0]
    rank = v[0].ndim + len(_axes(node, v, 1) or ())
    for axis in sorted(a % rank for a in _axes(node, v, 1) or ()):
        out = np.expand_dims(out, axis)
    return out


def _squeeze(node: Any, v: list[np.ndarray]) -> np.ndarray:
    axes = _axes(node, v, 1)
    return np.squeeze(v[0]) if axes is None else np.squeeze(v[0], axis=tuple(axes))


def _slice(node: Any, v: list[np.ndarray]) -> np.ndarray:
    starts, ends = v[1].reshape(-1), v[2].reshape(-1)
    axes = v[3].reshape(-1) if len(v) > 3 else range(len(starts))
    steps = v[4].reshape(-1) if len(v) > 4 else [1] * len(starts)
    index = [slice(None)] * v[0].ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[int(axis)] = slice(int(start), int(end), int(step))
    return v[0][tuple(index)]


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        return a / b
    return (np.abs(a) // np.abs(b)) * np.sign(a) * np.sign(b)  # ONNX truncates towards zero


def _cast(node: Any, v: list[np.ndarray]) -> np.ndarray:
    return v[0].astype(DTYPES[_int_attr(node, "to", 0)])


def _constant_of_shape(node: Any, v: list[np.ndarray]) -> np.ndarray | None:
    shape = [int(d) for d in v[0].reshape(-1)]
    if elements(shape) > SMALL:
        return None
    value = _attrs(node).get("value")
    fill = tensor_value(value.t) if value is not None else np.zeros(1, np.float32)
    return np.full(shape, fill.reshape(-1)[0], fill.dtype)


def _range(node: Any, v: list[np.ndarray]) -> np.ndarray | None:
    start, limit, delta = (x.reshape(-1)[0] for x in v)
    if delta == 0 or max(math.ceil((limit - start) / delta), 0) > SMALL:
        return None
    return np.arange(start, limit, delta, dtype=v[0].dtype)


_FOLDERS: dict[str, Callable[[Any, list[np.ndarray]], np.ndarray | None]] = {
    "Identity": lambda n, v: v[0],
    "Cast": _cast,
    "Concat": lambda n, v: np.concatenate(v, axis=_int_attr(n, "axis", 0)),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Reshape": lambda n, v: v[0].reshape([d if d != 0 else v[0].shape[i] for i, d in enumerate(v[1])]),
    "Flatten": lambda n, v: v[0].reshape(-1) if v[0].ndim <= 1 else v[0].reshape(v[0].shape[0], -1),
    "Add": lambda n, v: v[0] + v[1],
    "Sub": lambda n, v: v[0] - v[1],
    "Mul": lambda n, v: v[0] * v[1],
    "Div": lambda n, v: _int_div(v[0], v[1]),
    "Max": lambda n, v: np.maximum.reduce(v),
    "Min": lambda n, v: np.minimum.reduce(v),
    "Abs": lambda n, v: np.abs(v[0]),
    "Neg": lambda n, v: -v[0],
    "Equal": lambda n, v: v[0] == v[1],
    "Less": lambda n, v: v[0] < v[1],
    "Greater": lambda n, v: v[0] > v[1],
    "Not": lambda n, v: ~v[0],
    "Where": lambda n, v: np.where(v[0], v[1], v[2]),
    "Gather": lambda n, v: np.take(v[0], v[1], axis=_int_attr(n, "axis", 0)),
    "Slice": _slice,
    "ReduceProd": lambda n, v: np.prod(v[0], keepdims=bool(_int_attr(n, "keepdims", 1))),
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
}


def fold(node: Any, values: list[np.ndarray]) -> np.ndarray | None:
    """The output of ``node`` on these input values, if it is a shape op edgernn evaluates and the result
    is small; else None."""
    folder = _FOLDERS.get(node.op_type)
    if folder is None or node.domain not in ("", "ai.onnx"):
        return None
    try:
        with np.errstate(all="ignore"):
            result = folder(node, values)
    except (ValueError, TypeError, IndexError, KeyError, ArithmeticError):
        return None  # onnxruntime will refuse the graph itself; here the value is unknown
    if result is None:
        return None
    result = np.asarray(result)
    return result if result.size <= SMALL else None
