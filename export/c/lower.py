"""Lower an edgernn step graph (ONNX, batch 1) to a flat list of buffer operations for the C emitter.

Every tensor gets its static shape for a batch of 1. A node whose inputs are all known at generation time
(weights, shapes, ``Constant`` nodes, a ``DequantizeLinear`` or ``Cast`` of a stored weight) is computed
here, in numpy, and becomes a constant. What is left runs at every step and is lowered to a handful of
operations: a GEMV (``MatMul``/``Gemm`` by a constant matrix, with its bias and the sum of two products
fused in), element-wise arithmetic with broadcasting, strided copies (``Slice``, ``Split``, ``Concat``,
``Transpose``, ``Gather`` by constant indices: views where the selected elements are already contiguous),
the embedding row (``Gather`` by the token), ``LayerNormalization``, ``Softmax``/``LogSoftmax``.
Anything else is refused by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgernn.runtime import contract
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ContractError

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


Operation = Gemv | Elementwise | Copy | GatherRow | LayerNorm | Softmax


@dataclass
class Program:
    """The lowered step: operations in order, the tensors the step reads and writes."""

    info: ModelInfo
    ops: list[Operation]
    x: Tensor
    states: list[tuple[Tensor, Tensor]]  # (state input, state output) per metadata state
    y: Tensor
    state_floats: int


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


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
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


def _slice_ranges(shape, starts, ends, axes, steps) -> list[range]:
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
        ranges = _slice_ranges(x.shape, starts, ends, axes, steps)
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


def _evaluate(op: str, inputs: list, attrs: dict, outputs: int, index: int | None) -> list[np.ndarray]:
    """np_eval, with numpy's complaints about a malformed node as a ContractError."""
    try:
        with np.errstate(all="ignore"):
            return np_eval(op, inputs, attrs, outputs)
    except ContractError:
        raise
    except (ValueError, IndexError, TypeError, KeyError, AttributeError) as exc:
        where = f"node {index} " if index is not None else ""
        raise ContractError(f"{where}({op}) cannot be computed for a batch of 1: {exc}") from None


# --- lowering -----------------------------------------------------------------------------------------


def _contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def _is_contiguous(shape: Sequence[int], strides: Sequence[int]) -> bool:
    expected = _contiguous_strides(shape)
    return all(n == 1 or s == e for n, s, e in zip(shape, strides, expected, strict=True))


class _Lowering:
    def __init__(self, proto: onnx.ModelProto, info: ModelInfo):
        self.info = info
        self.graph = proto.graph
        self.consts: dict[str, np.ndarray] = {}
        self.initializer_names: set[str] = set()
        self.values: dict[str, Tensor] = {}
        self.ops: list[Operation] = []
        self.producer: dict[int, Operation] = {}  # id(storage) -> the op that wrote it (gemv fusion)
        self.uses: dict[str, int] = {}
        self.aliases: dict[int, list[str]] = {}  # id(storage) -> the tensor names over it, in order
        self.outputs = {o.name for o in self.graph.output}
        for node in self.graph.node:
            for name in node.input:
                self.uses[name] = self.uses.get(name, 0) + 1
        for name in self.outputs:
            self.uses[name] = self.uses.get(name, 0) + 1

    # -- inputs

    def bind_inputs(self) -> tuple[Tensor, list[Tensor], int]:
        for init in self.graph.initializer:
            self.consts[init.name] = numpy_helper.to_array(init)
            self.initializer_names.add(init.name)
        info = self.info
        if info.input.kind == "tokens":
            x = Tensor(contract.INPUT_NAME, (1,), "t", Storage("token", 1))
        else:
            x = Tensor(contract.INPUT_NAME, (1, info.input.size), "f", Storage("x", info.input.size))
        self.values[x.name] = x
        states, base = [], 0
        for spec in info.states:
            size = int(np.prod(spec.shape))
            t = Tensor(spec.input, (1, *spec.shape), "f", Storage("state", size, base=base))
            self.values[spec.input] = t
            states.append(t)
            base += size
        return x, states, base

    # -- helpers

    def new(self, name: str, shape: Sequence[int], dtype: str = "f") -> Tensor:
        shape = tuple(int(d) for d in shape)
        storage = Storage("arena", max(1, int(np.prod(shape, dtype=np.int64))))
        self.aliases[id(storage)] = [name]
        return Tensor(name, shape, dtype, storage)

    def const_tensor(self, name: str, array: np.ndarray) -> Tensor:
        array = np.asarray(array)
        if array.dtype == np.bool_:
            array = array.astype(np.float32)
            dtype = "b"
        else:
            dtype = "f"
            if array.dtype.kind not in "fiub":
                raise ContractError(
                    f"constant {name!r} has dtype {array.dtype}, which the C target cannot use"
                )
            array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ContractError(f"constant {name!r} holds non-finite values, which the C target cannot store")
        flat = np.ascontiguousarray(array).reshape(-1)
        return Tensor(name, tuple(array.shape), dtype, Storage("const", max(1, flat.size), array=flat))

    def tensor_of(self, name: str) -> Tensor:
        if name in self.values:
            return self.values[name]
        return self.const_tensor(name, self.consts[name])

    def view(self, source: Tensor, name: str, shape: Sequence[int], offset: int = 0) -> Tensor:
        self.aliases.setdefault(id(source.storage), []).append(name)
        return Tensor(
            name, tuple(int(d) for d in shape), source.dtype, source.storage, source.offset + offset
        )

    def strided(self, source: Tensor, name: str, shape: Sequence[int], offset: int, strides: Sequence[int]):
        """The elements of ``source`` at ``offset + i . strides``: a view where they are contiguous, else a
        copy into a new buffer."""
        shape = tuple(int(d) for d in shape)
        if _is_contiguous(shape, strides):
            return self.view(source, name, shape, offset)
        if source.dtype == "t":
            raise ContractError(f"{name!r}: the token id can only be reshaped or looked up (Gather)")
        out = self.new(name, shape, source.dtype)
        self.emit(
            Copy(
                out.storage,
                0,
                _contiguous_strides(shape),
                source.storage,
                source.offset + offset,
                tuple(strides),
                shape,
                dst_tensor=out,
            )  # fmt: skip
        )
        return out

    def emit(self, op: Operation) -> None:
        self.ops.append(op)
        out = op.dst_tensor if isinstance(op, Copy) else op.out
        if out is not None:
            self.producer[id(out.storage)] = op

    # -- nodes

    def lower(self) -> None:
        for index, node in enumerate(self.graph.node):
            self.node(index, node)

    def node(self, index: int, node: onnx.NodeProto) -> None:
        op = node.op_type
        if node.domain not in ("", "ai.onnx") or op not in SUPPORTED_OPS:
            label = op if node.domain in ("", "ai.onnx") else f"{node.domain}.{op}"
            why = ""
            if op in ("DynamicQuantizeLinear", "MatMulInteger", "MatMulNBits", "QuantizeLinear"):
                why = (
                    " (this file computes in int8/int4 at every step; deploy the float32 file, or an int8 "
                    "'weights' file, and pass --precision int8 for int8 weights in C)"
                )
            raise ContractError(
                f"op {label!r} (node {index}{', ' + repr(node.name) if node.name else ''}) is not supported "
                f"by the C target{why}; supported: {', '.join(SUPPORTED_OPS)}"
            )
        attrs = _attrs(node)
        names = list(node.input)
        present = [n for n in names if n]
        if all(n in self.consts for n in present) and op not in ("Shape", "Size"):
            inputs = [self.consts[n] if n else None for n in names]
            results = _evaluate(op, inputs, attrs, len(node.output), index)
            for name, value in zip(node.output, results, strict=False):
                if name:
                    self.consts[name] = np.asarray(value)
            return
        if op in ("Shape", "Size"):  # of a run-time tensor: its static shape
            shape = self.values[names[0]].shape if names[0] in self.values else self.consts[names[0]].shape
            self.consts[node.output[0]] = np_eval(op, [np.zeros(shape)], attrs, 1)[0]
            return
        try:
            self.runtime_node(index, node, op, names, attrs)
        except ContractError as exc:
            raise ContractError(f"node {index} ({op}{' ' + node.name if node.name else ''}): {exc}") from None

    def _shapes(self, op: str, names: list[str], attrs: dict, outputs: int) -> list[tuple[int, ...]]:
        """Output shapes, by running the op's numpy semantics on zeros of the input shapes."""
        dummies = []
        for n in names:
            if not n:
                dummies.append(None)
            elif n in self.consts:
                dummies.append(self.consts[n])
            else:
                t = self.values[n]
                dtype = {"f": np.float32, "b": np.bool_, "t": np.int64}[t.dtype]
                dummies.append(np.zeros(t.shape, dtype))
        return [tuple(r.shape) for r in _evaluate(op, dummies, attrs, outputs, None)]

    def runtime_node(self, index: int, node: onnx.NodeProto, op: str, names: list[str], attrs: dict) -> None:
        out_names = list(node.output)
        shapes = self._shapes(op, names, attrs, len(out_names))
        first = self.values.get(names[0]) if names and names[0] else None
        if op in VIEWS:
            source = self.tensor_of(names[0])
            if (
                op == "Cast"
                and helper.tensor_dtype_to_np_dtype(attrs["to"]).kind != "f"
                and source.dtype == "f"
            ):
                raise ContractError("a Cast from float to a non-float type is not supported")
            if op == "Expand" and source.size != int(np.prod(shapes[0])):
                strides = _broadcast_strides(source.shape, shapes[0])
                self.values[out_names[0]] = self.strided(source, out_names[0], shapes[0], 0, strides)
            else:
                self.values[out_names[0]] = self.view(source, out_names[0], shapes[0])
            return
        if op in ("Slice", "Gather", "Split", "Transpose") and first is not None:
            self.select(op, names, attrs, out_names, shapes)
            return
        if op == "Gather":  # constant table, runtime indices: the embedding lookup
            self.gather_token(names, out_names[0], shapes[0])
            return
        if op == "Concat":
            self.concat(names, attrs, out_names[0], shapes[0])
            return
        if op in ("MatMul", "Gemm"):
            self.gemv(op, names, attrs, out_names[0], shapes[0])
            return
        if op == "LayerNormalization":
            self.layer_norm(names, attrs, out_names, shapes)
            return
        if op in ("Softmax", "LogSoftmax"):
            x = self.tensor_of(names[0])
            axis = attrs.get("axis", -1)
            if axis not in (-1, len(x.shape) - 1):
                raise ContractError(f"{op} over axis {axis} (only the last axis is supported)")
            out = self.new(out_names[0], shapes[0])
            self.emit(Softmax(out, x, x.shape[-1], op == "LogSoftmax"))
            self.values[out_names[0]] = out
            return
        self.elementwise(op, names, attrs, out_names[0], shapes[0])

    def select(self, op: str, names: list[str], attrs: dict, out_names: list[str], shapes) -> None:
        source = self.values[names[0]]
        shape, strides = source.shape, _contiguous_strides(source.shape)
        if op == "Transpose":
            perm = attrs.get("perm") or list(reversed(range(len(shape))))
            self.values[out_names[0]] = self.strided(
                source, out_names[0], shapes[0], 0, [strides[p] for p in perm]
            )
            return
        if op == "Split":
            axis = attrs.get("axis", 0)
            axis = axis + len(shape) if axis < 0 else axis
            start = 0
            for name, out_shape in zip(out_names, shapes, strict=True):
                self.values[name] = self.strided(source, name, out_shape, start * strides[axis], strides)
                start += out_shape[axis]
            return
        if op == "Slice":
            inputs = [self.consts[n] if n else None for n in names[1:]]
            if any(n and n not in self.consts for n in names[1:]):
                raise ContractError("Slice with starts/ends computed at run time")
            starts, ends = inputs[0], inputs[1]
            axes = inputs[2] if len(inputs) > 2 else None
            steps = inputs[3] if len(inputs) > 3 else None
            ranges = _slice_ranges(shape, starts, ends, axes, steps)
            offset = sum(r.start * s for r, s in zip(ranges, strides, strict=True) if len(r))
            new_strides = [r.step * s for r, s in zip(ranges, strides, strict=True)]
            self.values[out_names[0]] = self.strided(source, out_names[0], shapes[0], offset, new_strides)
            return
        # Gather with constant indices on a runtime tensor
        if names[1] not in self.consts:
            raise ContractError("Gather from a tensor computed at run time by indices computed at run time")
        indices = self.consts[names[1]].astype(np.int64)
        axis = attrs.get("axis", 0)
        axis = axis + len(shape) if axis < 0 else axis
        flat = indices.reshape(-1)
        flat = np.where(flat < 0, flat + shape[axis], flat)
        rest = [*strides[:axis], *strides[axis + 1 :]]
        if indices.ndim == 0:
            self.values[out_names[0]] = self.strided(
                source, out_names[0], shapes[0], int(flat[0]) * strides[axis], rest
            )
            return
        if indices.ndim == 1 and (flat.size == 1 or np.all(np.diff(flat) == flat[1] - flat[0])):
            step = int(flat[1] - flat[0]) if flat.size > 1 else 1
            new_strides = [*strides[:axis], step * strides[axis], *strides[axis + 1 :]]
            self.values[out_names[0]] = self.strided(
                source, out_names[0], shapes[0], int(flat[0]) * strides[axis], new_strides
            )
            return
        if source.dtype == "t":
            raise ContractError("Gather from the token id by several indices")
        out = self.new(out_names[0], shapes[0], source.dtype)  # any other indices: one copy per index
        outer = int(np.prod(shape[:axis], dtype=np.int64))
        inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
        for i, index in enumerate(flat):
            self.emit(
                Copy(
                    out.storage,
                    i * inner,
                    (flat.size * inner, 1),
                    source.storage,
                    source.offset + int(index) * inner,
                    (shape[axis] * inner, 1),
                    (outer, inner),
                    dst_tensor=out,
                )  # fmt: skip
            )
        self.values[out_names[0]] = out

    def gather_token(self, names: list[str], out_name: str, shape) -> None:
        if names[0] not in self.consts or self.values[names[1]].dtype != "t":
            raise ContractError(
                "Gather by indices computed at run time (only the embedding lookup by the token)"
            )
        table = self.consts[names[0]].astype(np.float32)
        if table.ndim != 2:
            raise ContractError(f"Gather by the token from a table of shape {table.shape} (expected 2-D)")
        out = self.new(out_name, shape)
        source = names[0] if names[0] in self.initializer_names else None
        self.emit(GatherRow(out, self.values[names[1]], table, source))
        self.values[out_name] = out

    def concat(self, names: list[str], attrs: dict, out_name: str, shape) -> None:
        parts = [self.tensor_of(n) for n in names]
        if any(p.dtype == "t" for p in parts):
            raise ContractError("Concat of the token id")
        axis = attrs["axis"] + len(shape) if attrs["axis"] < 0 else attrs["axis"]
        out = self.new(out_name, shape, parts[0].dtype)
        strides = _contiguous_strides(shape)
        start = 0
        for part in parts:
            self.emit(
                Copy(
                    out.storage,
                    start * strides[axis],
                    strides,
                    part.storage,
                    part.offset,
                    _contiguous_strides(part.shape),
                    part.shape,
                    dst_tensor=out,
                )  # fmt: skip
            )
            start += part.shape[axis]
        self.values[out_name] = out

    def gemv(self, op: str, names: list[str], attrs: dict, out_name: str, shape) -> None:
        a_name, b_name = names[0], names[1]
        if b_name not in self.consts or a_name not in self.values:
            raise ContractError(f"{op} of two tensors computed at run time (only by a constant matrix)")
        a, b = self.values[a_name], self.consts[b_name].astype(np.float32)
        if a.dtype != "f":
            raise ContractError(f"{op} of a non-float tensor")
        source_kind = "matmul"
        bias = None
        if op == "Gemm":
            if attrs.get("transA", 0) and a.size != a.shape[-1] and a.size != a.shape[0]:
                raise ContractError("Gemm with transA on a matrix")
            if attrs.get("transB", 0):
                b = b.T
                source_kind = "gemm_t"
            alpha = float(attrs.get("alpha", 1.0))
            if alpha != 1.0:
                b = (b * np.float32(alpha)).astype(np.float32)
                source_kind += "_scaled"
            if len(names) > 2 and names[2]:
                if names[2] not in self.consts:
                    raise ContractError("Gemm with a bias computed at run time")
                c = self.consts[names[2]].astype(np.float32) * np.float32(attrs.get("beta", 1.0))
                bias = np.broadcast_to(c, shape).reshape(-1).astype(np.float32)
        if b.ndim != 2:
            raise ContractError(f"{op} by a constant of shape {b.shape} (expected a matrix)")
        if a.size != b.shape[0]:
            raise ContractError(f"{op} of {a.shape} by {b.shape}: only one row at a time (batch 1)")
        out = self.new(out_name, shape)
        source = (b_name, source_kind) if b_name in self.initializer_names else None
        self.emit(Gemv(out, a, np.ascontiguousarray(b), bias, source=source, x_name=a_name))
        self.values[out_name] = out

    def layer_norm(self, names: list[str], attrs: dict, out_names: list[str], shapes) -> None:
        x = self.tensor_of(names[0])
        axis = attrs.get("axis", -1)
        axis = axis + len(x.shape) if axis < 0 else axis
        size = int(np.prod(x.shape[axis:]))
        params = []
        for n in names[1:3]:
            if n and n not in self.consts:
                raise ContractError("LayerNormalization with scale or bias computed at run time")
            params.append(
                None
                if not n
                else np.broadcast_to(self.consts[n], x.shape[axis:]).reshape(-1).astype(np.float32)
            )
        while len(params) < 2:
            params.append(None)
        if any(n for n in out_names[1:]):
            raise ContractError("LayerNormalization's mean and inverse std outputs")
        out = self.new(out_names[0], shapes[0])
        self.emit(LayerNorm(out, x, params[0], params[1], float(attrs.get("epsilon", 1e-5)), size))
        self.values[out_names[0]] = out

    def elementwise(self, op: str, names: list[str], attrs: dict, out_name: str, shape) -> None:
        if op == "Clip":
            attrs = dict(attrs)
            for i, key in ((1, "min"), (2, "max")):
                if len(names) > i and names[i]:
                    if names[i] not in self.consts:
                        raise ContractError("Clip with bounds computed at run time")
                    attrs[key] = float(self.consts[names[i]])
            names = names[:1]
        inputs = [self.tensor_of(n) for n in names if n]
        if any(t.dtype == "t" for t in inputs):
            raise ContractError(f"{op} of the token id (only Gather by it is supported)")
        if op == "Add" and self.fuse_add(inputs, out_name, shape):
            return
        dtype = "b" if op in COMPARISONS else ("f" if op != "Where" else inputs[1].dtype)
        out = self.new(out_name, shape, dtype)
        self.emit(Elementwise(out, op, inputs, attrs))
        self.values[out_name] = out

    def fuse_add(self, inputs: list[Tensor], out_name: str, shape) -> bool:
        """Add(gemv, constant) -> the gemv's bias; Add(gemv, gemv) -> the later gemv adds to the earlier."""
        a, b = inputs
        gemv_a, gemv_b = self._single_use_gemv(a), self._single_use_gemv(b)
        if gemv_a is None and gemv_b is not None:
            a, b, gemv_a, gemv_b = b, a, gemv_b, gemv_a
        if gemv_a is None or tuple(shape) != a.shape:
            return False
        if b.storage.kind == "const" and gemv_b is None:
            if gemv_a.bias is not None or gemv_a.accumulate:
                if gemv_a.accumulate:
                    return False
                bias = gemv_a.bias + np.broadcast_to(b.storage.array.reshape(b.shape), shape).reshape(-1)
                gemv_a.bias = bias.astype(np.float32)
            else:
                gemv_a.bias = (
                    np.broadcast_to(b.storage.array.reshape(b.shape), shape).reshape(-1).astype(np.float32)
                )
            self.values[out_name] = self.view(a, out_name, shape)
            return True
        if gemv_b is not None and b.shape == a.shape and not gemv_b.accumulate:
            # the later gemv adds into the earlier one's output, where it stands: nothing else reads
            # that output before this Add (single use), and its own input is ready by then
            earlier, later = sorted((gemv_a, gemv_b), key=self.ops.index)
            if later.bias is not None:
                if earlier.bias is not None:
                    return False
                earlier.bias, later.bias = later.bias, None
            later.out = earlier.out
            later.accumulate = True
            self.values[out_name] = self.view(earlier.out, out_name, shape)
            return True
        return False

    def _single_use_gemv(self, t: Tensor) -> Gemv | None:
        """The gemv that wrote ``t`` when this Add is the only reader of everything aliasing its output."""
        op = self.producer.get(id(t.storage))
        if not isinstance(op, Gemv) or op.out.storage is not t.storage or t.offset != op.out.offset:
            return None
        aliases = self.aliases.get(id(t.storage), [])
        if t.size != op.out.size or not aliases or aliases[-1] != t.name:
            return None
        if any(self.uses.get(n, 0) > 1 or n in self.outputs for n in aliases):
            return None
        return op


def _broadcast_strides(shape: Sequence[int], out_shape: Sequence[int]) -> tuple[int, ...]:
    """Strides that read a contiguous ``shape`` tensor broadcast to ``out_shape`` (0 on broadcast axes)."""
    shape = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    strides = _contiguous_strides(shape)
    return tuple(0 if n == 1 and m != 1 else s for n, m, s in zip(shape, out_shape, strides, strict=True))


def broadcast_strides(shape: Sequence[int], out_shape: Sequence[int]) -> tuple[int, ...]:
    return _broadcast_strides(shape, out_shape)


def lower(proto: onnx.ModelProto, info: ModelInfo) -> Program:
    """The step graph of ``proto`` as a Program; ContractError naming what the C target cannot do."""
    low = _Lowering(proto, info)
    x, state_inputs, state_floats = low.bind_inputs()
    low.lower()
    outputs = []
    for name in [contract.OUTPUT_NAME, *(s.output for s in info.states)]:
        if name in low.values:
            t = low.values[name]
        elif name in low.consts:
            t = low.const_tensor(name, low.consts[name])
        else:
            raise ContractError(f"the graph does not compute its output {name!r}")
        if t.dtype != "f":
            raise ContractError(f"output {name!r} is not a float tensor")
        outputs.append(t)
    y, next_states = outputs[0], outputs[1:]
    if y.size != info.output.size:
        raise ContractError(f"output y has {y.size} values per step, the metadata says {info.output.size}")
    for spec, t in zip(info.states, next_states, strict=True):
        if t.size != int(np.prod(spec.shape)):
            raise ContractError(f"state output {spec.output!r} has {t.size} values, expected {spec.shape}")
    return Program(info, low.ops, x, list(zip(state_inputs, next_states, strict=True)), y, state_floats)
