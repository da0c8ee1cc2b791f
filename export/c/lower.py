"""Lower an edgernn step graph (ONNX, batch 1) to a flat list of buffer operations for the C emitter.

Every tensor gets its static shape for a batch of 1. A node whose inputs are all known at generation time
(weights, shapes, ``Constant`` nodes, a ``DequantizeLinear`` or ``Cast`` of a stored weight) is computed
here, in numpy, and becomes a constant. What is left runs at every step and is lowered to a handful of
operations: a GEMV (``MatMul``/``Gemm`` by a constant matrix, with its bias and the sum of two products
fused in), element-wise arithmetic with broadcasting, strided copies (``Slice``, ``Split``, ``Concat``,
``Transpose``, ``Gather`` by constant indices: views where the selected elements are already contiguous),
the embedding row (``Gather`` by the token), ``LayerNormalization``, ``Softmax``/``LogSoftmax``.
A product by a matrix whose values are a windowed real DFT becomes a real FFT (``export.c.fft``), one by
a matrix that is mostly zeros a sparse product (``export.c.sparse``); both float32 in every precision. A
keyword model's front end is bracketed by two marks a benchmark build can count between.
Anything else is refused by name.
Constant folding is its own pass (``export.c.fold``), the fusion of a product with its bias and with a
second product another (``export.c.fuse``); the operations are in ``export.c.ir``, the numpy semantics in
``export.c.reference``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from edgernn.export.c import fft, sparse
from edgernn.export.c.bounds import element_bound
from edgernn.export.c.fold import ConstantFolder
from edgernn.export.c.fuse import fuse_add
from edgernn.export.c.ir import (
    Copy,
    Elementwise,
    GatherRow,
    Gemv,
    IndexedCopy,
    LayerNorm,
    Mark,
    Operation,
    Program,
    RealFFT,
    Softmax,
    SparseGemv,
    Storage,
    Tensor,
    broadcast_strides,
    contiguous_strides,
    is_contiguous,
)
from edgernn.export.c.reference import (
    COMPARISONS,
    SUPPORTED_OPS,
    VIEWS,
    evaluate,
    node_attributes,
    slice_ranges,
)
from edgernn.runtime import contract
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ContractError

FRONT_END_PREFIX = "frontend"  # the names of a keyword model's front-end nodes start with it (export.keyword)


class Lowering:
    """One pass over the nodes in order: each is folded (``ConstantFolder``) or lowered to operations."""

    def __init__(self, proto: onnx.ModelProto, info: ModelInfo):
        self.info = info
        self.graph = proto.graph
        self.bound = element_bound(proto, info)  # values one tensor may hold while generating
        self.folder = ConstantFolder(self.graph, self.bound)
        self.consts = self.folder.consts  # every value known at generation time
        self.initializer_names = self.folder.initializer_names
        self.values: dict[str, Tensor] = {}
        self.ops: list[Operation] = []
        self.producer: dict[int, Operation] = {}  # id(storage) -> the op that wrote it (gemv fusion)
        self.uses: dict[str, int] = {}
        self.aliases: dict[int, list[str]] = {}  # id(storage) -> the tensor names over it, in order
        self.outputs = {o.name for o in self.graph.output}
        self.token_rows: int | None = None  # the bound of the token: the embedding tables' rows
        self.front_end: set[int] = set()  # id() of the operations of the front end's nodes
        for node in self.graph.node:
            for name in node.input:
                self.uses[name] = self.uses.get(name, 0) + 1
        for name in self.outputs:
            self.uses[name] = self.uses.get(name, 0) + 1

    # -- inputs

    def bind_inputs(self) -> tuple[Tensor, list[Tensor], int]:
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
        if is_contiguous(shape, strides):
            return self.view(source, name, shape, offset)
        if source.dtype == "t":
            raise ContractError(f"{name!r}: the token id can only be reshaped or looked up (Gather)")
        out = self.new(name, shape, source.dtype)
        self.emit(
            Copy(
                out.storage,
                0,
                contiguous_strides(shape),
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
            before = {id(op) for op in self.ops}
            self.node(index, node)
            if node.name.startswith(FRONT_END_PREFIX):
                self.front_end.update(id(op) for op in self.ops if id(op) not in before)
        if self.front_end:  # marked for a benchmark build: the front end's operations and the rest apart
            places = [i for i, op in enumerate(self.ops) if id(op) in self.front_end]
            first, last = places[0], places[-1]
            self.ops.insert(last + 1, Mark("front_end_end"))
            self.ops.insert(first, Mark("front_end_begin"))

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
        attrs = node_attributes(node)
        if self.folder.fold(index, node, attrs, lambda name: self.values[name].shape):
            return
        names = list(node.input)
        where = f"node {index} ({op}{' ' + node.name if node.name else ''})"
        try:
            self.runtime_node(index, node, op, names, attrs)
        except ContractError as exc:
            raise ContractError(f"{where}: {exc}") from None
        except (ValueError, IndexError, KeyError, TypeError) as exc:  # a malformed node numpy tripped on
            raise ContractError(f"{where} cannot be lowered: {type(exc).__name__}: {exc}") from None

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
        return [tuple(r.shape) for r in evaluate(op, dummies, attrs, outputs, None, self.bound)]

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
                strides = broadcast_strides(source.shape, shapes[0])
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
        shape, strides = source.shape, contiguous_strides(source.shape)
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
            ranges = slice_ranges(shape, starts, ends, axes, steps)
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
        out = self.new(out_names[0], shapes[0], source.dtype)  # any other indices: a table and a loop
        outer = int(np.prod(shape[:axis], dtype=np.int64))
        inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
        self.emit(IndexedCopy(out, source, flat.astype(np.int32), outer, shape[axis], inner))
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
        rows = table.shape[0]
        self.token_rows = rows if self.token_rows is None else min(self.token_rows, rows)
        self.emit(GatherRow(out, self.values[names[1]], table, source))
        self.values[out_name] = out

    def concat(self, names: list[str], attrs: dict, out_name: str, shape) -> None:
        parts = [self.tensor_of(n) for n in names]
        if any(p.dtype == "t" for p in parts):
            raise ContractError("Concat of the token id")
        axis = attrs["axis"] + len(shape) if attrs["axis"] < 0 else attrs["axis"]
        out = self.new(out_name, shape, parts[0].dtype)
        strides = contiguous_strides(shape)
        start = 0
        for part in parts:
            self.emit(
                Copy(
                    out.storage,
                    start * strides[axis],
                    strides,
                    part.storage,
                    part.offset,
                    contiguous_strides(part.shape),
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
        power = self.power_spectrum(a, b)
        if power is not None:  # |X|^2 by the FFT, then the bands' product over the bins once
            a, b = power
        out = self.new(out_name, shape)
        layout = fft.recognise(b) if bias is None and source_kind in ("matmul", "gemm_t") else None
        if layout is not None and a.size == layout.frame:  # a windowed real DFT: an FFT
            self.emit(RealFFT(out, a, layout, np.ascontiguousarray(b), a_name))
            self.values[out_name] = out
            return
        if sparse.is_sparse(b):  # mostly zeros (a mel filterbank): the nonzeros alone
            self.emit(SparseGemv(out, a, np.ascontiguousarray(b), bias))
            self.values[out_name] = out
            return
        source = (b_name, source_kind) if b_name in self.initializer_names else None
        self.emit(Gemv(out, a, np.ascontiguousarray(b), bias, source=source, x_name=a_name))
        self.values[out_name] = out

    def power_spectrum(self, a: Tensor, b: np.ndarray) -> tuple[Tensor, np.ndarray] | None:
        """A sparse product by ``[M; M]`` of ``s * s``, ``s`` a real FFT's spectrum read by nothing else: the
        FFT then writes re^2 + im^2 per bin and the product is by ``M`` alone over those (the ``Mul`` is
        dropped). (The view of the power and ``M``), or None where the pattern is not there."""
        square = self.producer.get(id(a.storage))
        if not (isinstance(square, Elementwise) and square.op == "Mul" and square.out is a):
            return None
        s, t = square.inputs
        spectrum = self.producer.get(id(s.storage))
        if s is not t or not isinstance(spectrum, RealFFT) or spectrum.power or spectrum.out is not s:
            return None
        bins = spectrum.layout.bins
        half = b[:bins]
        if b.shape[0] != 2 * bins or not np.array_equal(half, b[bins:]) or not sparse.is_sparse(half):
            return None
        if self.uses.get(a.name) != 1 or self.uses.get(s.name) != 2 or {a.name, s.name} & self.outputs:
            return None
        self.ops.remove(square)
        spectrum.power = True
        return self.view(s, f"{s.name}_power", (1, bins)), np.ascontiguousarray(half)

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
        if op == "Add" and fuse_add(self, inputs, out_name, shape):
            return
        dtype = "b" if op in COMPARISONS else ("f" if op != "Where" else inputs[1].dtype)
        out = self.new(out_name, shape, dtype)
        self.emit(Elementwise(out, op, inputs, attrs))
        self.values[out_name] = out


def lower(proto: onnx.ModelProto, info: ModelInfo) -> Program:
    """The step graph of ``proto`` as a Program; ContractError naming what the C target cannot do."""
    low = Lowering(proto, info)
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
    states = list(zip(state_inputs, next_states, strict=True))
    return Program(info, low.ops, x, states, y, state_floats, low.token_rows)
