"""The numpy semantics of every op the C target supports, as ONNX defines them: the constant folder computes
with them, and the lowering runs them on zeros for output shapes."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgernn.export.c.bounds import check_elements, output_elements
from edgernn.runtime.errors import ContractError

# --- op tables ----------------------------------------------------------------------------------------

UNARY = {
    "Abs", "Neg", "Sqrt", "Exp", "Log", "Reciprocal", "Sigmoid", "Tanh", "Relu", "LeakyRelu", "Elu",
    "Selu", "Softplus", "Softsign", "HardSigmoid", "HardSwish", "Erf", "Not", "Sin", "Cos", "Floor",
    "Ceil", "Celu", "ThresholdedRelu",
}  # fmt: skip
BINARY = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
    "Equal", "And", "Or", "PRelu",
}  # fmt: skip
COMPARISONS = {"Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Equal", "And", "Or", "Not"}
VIEWS = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout", "Cast", "Expand"}
SHAPE_OPS = {"Shape", "Size", "Constant", "ConstantOfShape", "Range", "DequantizeLinear"}
OTHER = {
    "MatMul", "Gemm", "Where", "Clip", "Concat", "Split", "Slice", "Gather", "Transpose",
    "LayerNormalization", "Softmax", "LogSoftmax",
}  # fmt: skip
SUPPORTED_OPS = tuple(sorted(UNARY | BINARY | VIEWS | SHAPE_OPS | OTHER))


def node_attributes(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        elif isinstance(value, bytes):
            value = value.decode()
        out[a.name] = value
    return out


# --- numpy semantics of every supported op (constant folding and shapes) --------------------------------


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _erf(a):
    return np.vectorize(math.erf, otypes=[np.float64])(a).astype(a.dtype)


_NP_UNARY: dict[str, Callable[..., np.ndarray]] = {
    "Abs": lambda a, **k: np.abs(a),
    "Neg": lambda a, **k: -a,
    "Sqrt": lambda a, **k: np.sqrt(a),
    "Exp": lambda a, **k: np.exp(a),
    "Log": lambda a, **k: np.log(a),
    "Reciprocal": lambda a, **k: 1.0 / a,
    "Sigmoid": lambda a, **k: _sigmoid(a),
    "Tanh": lambda a, **k: np.tanh(a),
    "Relu": lambda a, **k: np.maximum(a, 0),
    "LeakyRelu": lambda a, alpha=0.01, **k: np.where(a >= 0, a, a * alpha),
    "Elu": lambda a, alpha=1.0, **k: np.where(a >= 0, a, alpha * (np.exp(a) - 1)),
    "Celu": lambda a, alpha=1.0, **k: np.maximum(0, a) + np.minimum(0, alpha * (np.exp(a / alpha) - 1)),
    "Selu": lambda a, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875, **k: np.where(
        a > 0, gamma * a, gamma * alpha * (np.exp(a) - 1)
    ),
    "ThresholdedRelu": lambda a, alpha=1.0, **k: np.where(a > alpha, a, 0),
    "Softplus": lambda a, **k: np.log1p(np.exp(a)),
    "Softsign": lambda a, **k: a / (1 + np.abs(a)),
    "HardSigmoid": lambda a, alpha=0.2, beta=0.5, **k: np.clip(alpha * a + beta, 0, 1),
    "HardSwish": lambda a, **k: a * np.clip(a / 6 + 0.5, 0, 1),
    "Erf": lambda a, **k: _erf(a),
    "Not": lambda a, **k: np.logical_not(a),
    "Sin": lambda a, **k: np.sin(a),
    "Cos": lambda a, **k: np.cos(a),
    "Floor": lambda a, **k: np.floor(a),
    "Ceil": lambda a, **k: np.ceil(a),
}
_NP_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": lambda a, b: np.floor_divide(a, b) if a.dtype.kind in "iu" else np.divide(a, b),
    "Pow": np.power,
    "Max": np.maximum,
    "Min": np.minimum,
    "Less": np.less,
    "Greater": np.greater,
    "LessOrEqual": np.less_equal,
    "GreaterOrEqual": np.greater_equal,
    "Equal": np.equal,
    "And": np.logical_and,
    "Or": np.logical_or,
    "PRelu": lambda a, b: np.where(a < 0, a * b, a),
}


def _axes(node_inputs: list, attrs: dict, index: int, rank: int) -> list[int] | None:
    """Axes given as an input (newer opsets) or as an attribute; normalised to non-negative."""
    axes = None
    if len(node_inputs) > index and node_inputs[index] is not None:
        axes = [int(a) for a in np.asarray(node_inputs[index]).reshape(-1)]
    elif "axes" in attrs:
        axes = [int(a) for a in attrs["axes"]]
    if axes is None:
        return None
    return [a + rank if a < 0 else a for a in axes]


def slice_ranges(shape, starts, ends, axes, steps) -> list[range]:
    ranges = [range(n) for n in shape]
    rank = len(shape)
    axes = list(range(len(starts))) if axes is None else [int(a) + rank if a < 0 else int(a) for a in axes]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        ranges[axis] = range(shape[axis])[slice(int(start), int(end), step)]
    return ranges


def np_eval(op: str, inputs: list, attrs: dict, outputs: int) -> list[np.ndarray]:
    """The op on numpy arrays, as ONNX defines it (for the ops in SUPPORTED_OPS); None inputs are absent."""
    if op in _NP_UNARY:
        return [np.asarray(_NP_UNARY[op](inputs[0], **attrs)).astype(inputs[0].dtype)]
    if op in _NP_BINARY:
        a, b = inputs
        result = np.asarray(_NP_BINARY[op](a, b))
        return [result if result.dtype == np.bool_ else result.astype(np.result_type(a, b))]
    x = inputs[0] if inputs else None
    if op == "Constant":
        if "value" in attrs:
            return [np.asarray(attrs["value"])]
        for key, dtype in (("value_float", np.float32), ("value_int", np.int64)):
            if key in attrs:
                return [np.array(attrs[key], dtype)]
        for key, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
            if key in attrs:
                return [np.array(attrs[key], dtype)]
        raise ContractError(f"Constant with attributes {sorted(attrs)} is not supported")
    if op == "Shape":
        shape = np.array(x.shape, np.int64)
        start, end = attrs.get("start", 0), attrs.get("end")
        return [shape[start:end]]
    if op == "Size":
        return [np.array(x.size, np.int64)]
    if op == "ConstantOfShape":
        value = attrs.get("value", np.zeros(1, np.float32))
        return [np.full(tuple(int(d) for d in x), np.asarray(value).reshape(-1)[0], np.asarray(value).dtype)]
    if op == "Range":
        start, limit, delta = (np.asarray(v).reshape(()) for v in inputs)
        return [np.arange(start, limit, delta).astype(start.dtype)]
    if op == "DequantizeLinear":
        scale = inputs[1].astype(np.float32)
        zero = inputs[2] if len(inputs) > 2 and inputs[2] is not None else np.zeros_like(x, shape=())
        axis = attrs.get("axis", 1)
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * x.ndim
            shape[axis] = scale.size
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return [((x.astype(np.int32) - zero.astype(np.int32)).astype(np.float32) * scale).astype(np.float32)]
    if op in ("Identity", "Dropout"):
        return [x] if outputs == 1 else [x, np.ones(x.shape, np.bool_)]
    if op == "Cast":
        to = helper.tensor_dtype_to_np_dtype(attrs["to"])
        return [x.astype(to)]
    if op == "Reshape":
        shape = [int(d) for d in inputs[1]]
        if not attrs.get("allowzero", 0):
            shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
        return [x.reshape(shape)]
    if op == "Flatten":
        axis = attrs.get("axis", 1)
        axis = axis + x.ndim if axis < 0 else axis
        return [x.reshape(int(np.prod(x.shape[:axis])), -1)]
    if op == "Squeeze":
        axes = _axes(inputs, attrs, 1, x.ndim)
        return [np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(axes))]
    if op == "Unsqueeze":
        axes = sorted(_axes(inputs, attrs, 1, x.ndim + len(_axes(inputs, attrs, 1, 0) or [])) or [])
        result = x
        for a in axes:
            result = np.expand_dims(result, a)
        return [result]
    if op == "Expand":
        shape = tuple(int(d) for d in inputs[1])
        return [x * np.ones(shape, x.dtype)]
    if op == "Concat":
        return [np.concatenate(inputs, axis=attrs["axis"])]
    if op == "Split":
        axis = attrs.get("axis", 0)
        sizes = inputs[1] if len(inputs) > 1 and inputs[1] is not None else attrs.get("split")
        if sizes is None:
            sizes = [x.shape[axis] // outputs] * outputs
        cuts = np.cumsum([int(s) for s in sizes])[:-1]
        return list(np.split(x, cuts, axis=axis))
    if op == "Slice":
        starts, ends = inputs[1], inputs[2]
        axes = inputs[3] if len(inputs) > 3 else None
        steps = inputs[4] if len(inputs) > 4 else None
        ranges = slice_ranges(x.shape, starts, ends, axes, steps)
        return [x[tuple(slice(r.start, r.stop if r.stop >= 0 else None, r.step) for r in ranges)]]
    if op == "Gather":
        return [np.take(x, inputs[1].astype(np.int64), axis=attrs.get("axis", 0))]
    if op == "Transpose":
        perm = attrs.get("perm")
        return [np.transpose(x, perm)]
    if op == "Where":
        return [np.where(inputs[0], inputs[1], inputs[2])]
    if op == "Clip":
        low = inputs[1] if len(inputs) > 1 and inputs[1] is not None else attrs.get("min")
        high = inputs[2] if len(inputs) > 2 and inputs[2] is not None else attrs.get("max")
        result = x
        if low is not None:
            result = np.maximum(result, np.asarray(low, x.dtype))
        if high is not None:
            result = np.minimum(result, np.asarray(high, x.dtype))
        return [result.astype(x.dtype)]
    if op == "MatMul":
        return [np.matmul(inputs[0], inputs[1])]
    if op == "Gemm":
        a, b = inputs[0], inputs[1]
        a = a.T if attrs.get("transA", 0) else a
        b = b.T if attrs.get("transB", 0) else b
        y = attrs.get("alpha", 1.0) * (a @ b)
        if len(inputs) > 2 and inputs[2] is not None:
            y = y + attrs.get("beta", 1.0) * inputs[2]
        return [y.astype(a.dtype)]
    if op == "LayerNormalization":
        axis = attrs.get("axis", -1)
        if not -x.ndim <= axis < x.ndim:
            raise ContractError(
                f"axis {axis} of a tensor of rank {x.ndim} (expected {-x.ndim} to {x.ndim - 1})"
            )
        axis = axis + x.ndim if axis < 0 else axis
        dims = tuple(range(axis, x.ndim))
        mean = x.mean(axis=dims, keepdims=True)
        var = np.square(x - mean).mean(axis=dims, keepdims=True)
        y = (x - mean) / np.sqrt(var + attrs.get("epsilon", 1e-5)) * inputs[1]
        if len(inputs) > 2 and inputs[2] is not None:
            y = y + inputs[2]
        return [y.astype(x.dtype)]
    if op in ("Softmax", "LogSoftmax"):
        axis = attrs.get("axis", -1)
        shifted = x - x.max(axis=axis, keepdims=True)
        log_z = np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        return [(shifted - log_z if op == "LogSoftmax" else np.exp(shifted - log_z)).astype(x.dtype)]
    raise ContractError(f"op {op!r} has no reference implementation")  # SUPPORTED_OPS and this agree


def evaluate(
    op: str, inputs: list, attrs: dict, outputs: int, index: int | None, bound: int | None = None
) -> list[np.ndarray]:
    """np_eval, with numpy's complaints about a malformed node as a ContractError; with ``bound``, an op
    whose output would hold more values is refused before it is computed (``bounds.output_elements``)."""
    where = f"node {index} " if index is not None else ""
    try:
        if bound is not None:
            check_elements(output_elements(op, inputs, attrs), bound, f"{where}({op})")
        with np.errstate(all="ignore"):
            return np_eval(op, inputs, attrs, outputs)
    except ContractError:
        raise
    except (ValueError, IndexError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise ContractError(f"{where}({op}) cannot be computed for a batch of 1: {exc}") from None
