"""What a graph may make onnxruntime allocate, checked from the file before any session is opened.

A model's metadata bounds the state and results a stream holds (``contract.MAX_*``, ``graph.MAX_STREAM_BYTES``),
but the graph can ask for more by itself: a dead ``ConstantOfShape`` whose shape is a constant 16384x16384
is a 933-byte file that costs a gigabyte when the session is opened and at every step. So, before
onnxruntime sees a file, ``check_model_graph`` reads its graph (``onnx_wire``, no onnx import) and refuses
(ContractError, every problem listed):

- a graph onnxruntime could not order: a node input nothing defines, a cycle, an output nothing makes, a
  name made twice;
- a node that feeds no output of its graph (run or folded all the same, and bounded by nothing);
- a stored tensor (initializer, Constant, attribute) of more than ``contract.MAX_TENSOR_ELEMENTS``
  elements, a Reshape to such a shape;
- tensors made from constant shapes (ConstantOfShape, Expand, Tile, Range, Pad, OneHot, Resize,
  Upsample, RandomNormal/RandomUniform) of more than ``contract.MAX_GENERATED_ELEMENTS`` elements in all,
  and such a shape computed from constants by ops this check does not evaluate (``shape_constants``).

Shapes that depend on the data fed at run time are bounded by the stepper's input checks, not here.
Subgraphs (If, Loop, Scan) and the model's local functions are checked the same way, and ORT-format files
(``ort_wire``) as ONNX ones.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from edgernn.runtime.contract import MAX_GENERATED_ELEMENTS, MAX_TENSOR_ELEMENTS
from edgernn.runtime.errors import ContractError
from edgernn.runtime.onnx_wire import parse_model
from edgernn.runtime.ort_wire import parse_ort_model
from edgernn.runtime.shape_bounds import Shape, least_shapes
from edgernn.runtime.shape_constants import elements, fold, tensor_value
from edgernn.runtime.untrusted import describe_exception

_ORT_FORMAT_ID = b"ORTM"  # an ORT-format file (flatbuffers), not ONNX protobuf
_SHOWN = 8  # problems listed in one message
_UNKNOWN = object()  # a constant whose value this check does not work out
_DYNAMIC = object()  # a value that depends on the data fed at run time
_RANDOM = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}


def check_model_graph(model_bytes: bytes, source: object = "the model") -> None:
    """Refuse (ContractError naming ``source``) a graph that is malformed, has dead nodes or allocates past
    the contract's bounds from constant shapes; ONNX protobuf and ORT-format files alike."""
    ort_format = model_bytes[4:8] == _ORT_FORMAT_ID
    try:
        model = parse_ort_model(model_bytes) if ort_format else parse_model(model_bytes)
    except Exception as exc:  # noqa: BLE001 - DecodeError, or anything hostile bytes make a parser raise
        kind = "an ORT-format file" if ort_format else "an ONNX protobuf"
        raise ContractError(
            f"{source} is not an ONNX model onnxruntime can load (its bytes are not {kind}: "
            f"{describe_exception(exc)})"
        ) from None
    checker = _Checker(model.functions)
    try:
        checker.body(_Body.of_graph(model.graph), None, "")
    except RecursionError:  # subgraphs nested past Python's stack (protobuf stops ONNX files sooner)
        raise ContractError(f"{source}: its subgraphs are nested too deeply to check") from None
    checker.finish()
    if checker.problems:
        shown = checker.problems[:_SHOWN]
        more = [f"... and {len(checker.problems) - _SHOWN} more"] if len(checker.problems) > _SHOWN else []
        raise ContractError(
            f"{source}: the graph is not one edgernn runs:\n  - " + "\n  - ".join([*shown, *more])
        )


class _Body:
    """A graph or a function body: nodes, what it takes (inputs, initializers) and what it gives."""

    def __init__(self, nodes: Sequence, inputs: list[str], outputs: list[str], initializers=(), sparse=()):
        self.nodes, self.inputs, self.outputs = list(nodes), inputs, outputs
        self.initializers, self.sparse = list(initializers), list(sparse)

    @classmethod
    def of_graph(cls, graph: Any) -> _Body:
        return cls(
            graph.node,
            [v.name for v in graph.input],
            [v.name for v in graph.output],
            graph.initializer,
            graph.sparse_initializer,
        )

    def defined_here(self) -> set[str]:
        names = {*self.inputs, *(t.name for t in self.initializers), *(s.values.name for s in self.sparse)}
        return names | {o for n in self.nodes for o in n.output if o}


class _Scope:
    """Names a body can read: its own, then its enclosing graph's. A value is a small numpy array (a known
    constant), _UNKNOWN (a constant), or _DYNAMIC; ``dims`` holds the shapes that are known."""

    def __init__(self, outer: _Scope | None):
        self.outer = outer
        self.values: dict[str, Any] = {}
        self.dims: dict[str, tuple[int, ...]] = {}
        self.bounds: dict[str, Shape] = {}

    def define(self, name: str, value: Any, dims: tuple[int, ...] | None = None) -> None:
        self.values[name] = value
        if dims is not None:
            self.dims[name] = dims

    def defines(self, name: str) -> bool:
        return name in self.values or (self.outer is not None and self.outer.defines(name))

    def value(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        return self.outer.value(name) if self.outer is not None else _DYNAMIC

    def least(self, name: str) -> Shape | None:
        """The least shape ``shape_bounds`` worked out for ``name`` (a constant's is exact), or None."""
        if name in self.values:
            return (self.dims[name], True) if name in self.dims else self.bounds.get(name)
        return self.outer.least(name) if self.outer is not None else None

    def shape(self, name: str) -> tuple[int, ...] | None:
        if name in self.values:
            return self.dims.get(name)
        return self.outer.shape(name) if self.outer is not None else None


def _label(node: Any) -> str:
    name = node.name or (node.output[0] if node.output else "")
    return f"node {name!r:.80} ({node.op_type:.40})"


def _subgraphs(node: Any) -> list[Any]:
    return [g for a in node.attribute for g in ([a.g] if a.HasField("g") else []) + list(a.graphs)]


def _free_names(body: _Body) -> set[str]:
    """Names a body reads from its enclosing graph."""
    used = {name for node in body.nodes for name in node.input if name} | set(body.outputs)
    for node in body.nodes:
        for graph in _subgraphs(node):
            used |= _free_names(_Body.of_graph(graph))
    return used - body.defined_here()


def _node_reads(node: Any) -> set[str]:
    reads = {name for name in node.input if name}
    for graph in _subgraphs(node):
        reads |= _free_names(_Body.of_graph(graph))
    return reads


class _Checker:
    def __init__(self, functions: Iterable[Any]):
        self.problems: list[str] = []
        self.generated = 0
        self.functions = {(f.domain, f.name): f for f in functions}
        self.checked_functions: set[tuple[str, str]] = set()

    def finish(self) -> None:
        if self.generated > MAX_GENERATED_ELEMENTS:
            self.problems.append(
                f"its nodes make {self.generated:,} elements from constant shapes in all, more than the "
                f"{MAX_GENERATED_ELEMENTS:,} edgernn allows (contract.MAX_GENERATED_ELEMENTS)"
            )

    def body(self, body: _Body, outer: _Scope | None, where: str) -> None:
        scope = _Scope(outer)
        for name in body.inputs:
            scope.define(name, _DYNAMIC)
        for tensor in body.initializers:
            dims = self.stored(tensor, f"{where}initializer {tensor.name!r:.80}")
            if tensor.name not in body.inputs:  # an initializer named like an input is only its default
                scope.define(tensor.name, _constant(tensor_value(tensor)), dims)
        for sparse in body.sparse:
            scope.define(sparse.values.name, _UNKNOWN, self.sparse(sparse, f"{where}sparse initializer"))
        order = self.order(body, scope, where)
        for node in order:
            self.node(node, scope, where)
        made = body.defined_here()  # a cycle's nodes make their outputs too: that problem is listed once
        for name in body.outputs:
            if name not in made and not scope.defines(name):
                self.problems.append(
                    f"{where}output {name!r:.80}: expected a value the graph makes, found none"
                )
        self.dead(body, order, where)

    def order(self, body: _Body, scope: _Scope, where: str) -> list[Any]:
        """The nodes in an order that runs (ONNX files list them so; onnxruntime sorts them itself)."""
        producer: dict[str, int] = {}
        for index, node in enumerate(body.nodes):
            for name in (o for o in node.output if o):
                if name in producer or name in body.inputs:
                    self.problems.append(f"{where}{_label(node)}: {name!r:.80} is made twice")
                producer.setdefault(name, index)
        known = body.defined_here()
        waits: list[set[int]] = []
        for node in body.nodes:
            reads = _node_reads(node)
            for name in sorted(reads - known):
                if not scope.defines(name):
                    self.problems.append(f"{where}{_label(node)}: input {name!r:.80} is defined nowhere")
            waits.append({producer[name] for name in reads if name in producer})
        return self.sorted_nodes(body.nodes, waits, where)

    def sorted_nodes(self, nodes: list[Any], waits: list[set[int]], where: str) -> list[Any]:
        feeds: dict[int, list[int]] = {}
        for index, needs in enumerate(waits):
            for need in needs:
                feeds.setdefault(need, []).append(index)
        ready = [i for i, needs in enumerate(waits) if not needs]
        heapq.heapify(ready)
        order = []
        while ready:
            index = heapq.heappop(ready)
            order.append(index)
            for follower in feeds.get(index, ()):
                waits[follower].discard(index)
                if not waits[follower]:
                    heapq.heappush(ready, follower)
        if len(order) < len(nodes):
            stuck = sorted(set(range(len(nodes))) - set(order))
            names = ", ".join(_label(nodes[i]) for i in stuck[:3])
            self.problems.append(f"{where}a cycle: {len(stuck)} node(s) wait on each other ({names})")
        return [nodes[i] for i in order]

    def dead(self, body: _Body, order: list[Any], where: str) -> None:
        live = set(body.outputs)
        for node in reversed(order):
            if any(o in live for o in node.output if o):
                live |= _node_reads(node)
            else:
                self.problems.append(
                    f"{where}{_label(node)}: feeds no output; expected every node to (a dead node is still "
                    "run or folded, and what it allocates is bounded by nothing)"
                )

    def node(self, node: Any, scope: _Scope, where: str) -> None:
        label = f"{where}{_label(node)}"
        for attribute in node.attribute:
            for tensor in ([attribute.t] if attribute.HasField("t") else []) + list(attribute.tensors):
                self.stored(tensor, label)
            for sparse in ([attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []) + list(
                attribute.sparse_tensors
            ):
                self.sparse(sparse, label)
        for graph in _subgraphs(node):
            self.body(_Body.of_graph(graph), scope, f"{label} subgraph: ")
        self.call(node)
        self.generator(node, scope, label)
        _define_outputs(node, scope)
        self.least_sizes(node, scope, label)

    def least_sizes(self, node: Any, scope: _Scope, label: str) -> None:
        """Bound what the node makes from the shapes it is given (broadcasting, MatMul...)."""
        names = [name for name in node.input if name]
        values = [scope.value(name) for name in names]
        shapes = least_shapes(
            node,
            [scope.least(name) for name in names],
            [v if isinstance(v, np.ndarray) else None for v in values],
        )
        for name, shape in zip(node.output, shapes, strict=False):
            if not name or shape is None:
                continue
            count = elements(shape[0])
            if count <= MAX_TENSOR_ELEMENTS:
                scope.bounds[name] = shape  # past the bound, it is reported here, not again downstream
            elif node.op_type not in _SIZERS:  # those are reported by ``generator``
                self.problems.append(
                    f"{label}: makes a tensor of at least {count:,} elements (shape {list(shape[0])!s:.60}), "
                    f"more than the {MAX_TENSOR_ELEMENTS:,} edgernn allows in one (contract.MAX_TENSOR_ELEMENTS)"
                )

    def call(self, node: Any) -> None:
        key = (node.domain, node.op_type)
        if key in self.functions and key not in self.checked_functions:
            self.checked_functions.add(key)
            function = self.functions[key]
            body = _Body(function.node, list(function.input), list(function.output))
            self.body(body, None, f"function {function.name!r:.80}: ")

    def stored(self, tensor: Any, label: str) -> tuple[int, ...] | None:
        dims = tuple(int(d) for d in tensor.dims)
        if any(d < 0 for d in dims):
            self.problems.append(f"{label}: expected a tensor of sizes >= 0, found dims {list(dims)!s:.80}")
            return None
        self.bound_tensor(elements(dims), label, "holds")
        return dims

    def sparse(self, sparse: Any, label: str) -> tuple[int, ...] | None:
        dims = tuple(int(d) for d in sparse.dims)
        if any(d < 0 for d in dims):
            self.problems.append(f"{label}: expected a sparse tensor of sizes >= 0, found {list(dims)!s:.80}")
            return None
        self.bound_tensor(elements(dims), label, "holds (once made dense)")
        return dims

    def bound_tensor(self, count: int, label: str, verb: str) -> None:
        if count > MAX_TENSOR_ELEMENTS:
            self.problems.append(
                f"{label}: {verb} {count:,} elements, more than the {MAX_TENSOR_ELEMENTS:,} edgernn allows "
                "in one tensor (contract.MAX_TENSOR_ELEMENTS)"
            )

    def generator(self, node: Any, scope: _Scope, label: str) -> None:
        sizer = _SIZERS.get(node.op_type)
        if sizer is None or node.domain not in ("", "ai.onnx"):
            return
        count = sizer(node, scope)
        if count is _DYNAMIC:
            return
        if count is _UNKNOWN:
            self.problems.append(
                f"{label}: its size is computed from constants by ops edgernn does not evaluate, so what it "
                "allocates cannot be bounded; expected a constant shape or one made from the inputs"
            )
        elif node.op_type == "Reshape":
            self.bound_tensor(count, label, "reshapes to")
        elif count > MAX_GENERATED_ELEMENTS:
            self.problems.append(
                f"{label}: makes {count:,} elements from constant sizes, more than the "
                f"{MAX_GENERATED_ELEMENTS:,} edgernn allows (contract.MAX_GENERATED_ELEMENTS)"
            )
        else:
            self.generated += count


def _constant(value: np.ndarray | None) -> Any:
    return _UNKNOWN if value is None else value


def _define_outputs(node: Any, scope: _Scope) -> None:
    """What this check knows of each output: a value, a constant of unknown value, or data-dependent."""
    outputs = [o for o in node.output if o]
    value, dims = _output_value(node, scope)
    for index, name in enumerate(outputs):
        if index == 0:
            scope.define(name, value, dims if dims is not None else _value_dims(value))
        else:
            scope.define(name, _UNKNOWN if value is not _DYNAMIC else _DYNAMIC)


def _value_dims(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, np.ndarray) else None


def _output_value(node: Any, scope: _Scope) -> tuple[Any, tuple[int, ...] | None]:
    if node.op_type == "Constant":
        return _constant_node(node)
    if node.op_type == "Shape" and node.input and scope.shape(node.input[0]) is not None:
        dims = np.array(scope.shape(node.input[0]), np.int64)
        start, end = _attr_int(node, "start", 0), _attr_int(node, "end", len(dims))
        return dims[start:end], None
    inputs = [name for name in node.input if name]
    if not inputs or _subgraphs(node) or node.op_type in _RANDOM:
        return _DYNAMIC, None
    values = [scope.value(name) for name in inputs]
    if any(v is _DYNAMIC for v in values):
        return _DYNAMIC, None
    if any(v is _UNKNOWN for v in values):
        return _UNKNOWN, None
    return _constant(fold(node, values)), None


def _constant_node(node: Any) -> tuple[Any, tuple[int, ...] | None]:
    for attribute in node.attribute:
        if attribute.name == "value":
            return _constant(tensor_value(attribute.t)), tuple(int(d) for d in attribute.t.dims)
        if attribute.name == "value_int":
            return np.array(attribute.i, np.int64), ()
        if attribute.name == "value_ints":
            return np.array(list(attribute.ints), np.int64), (len(attribute.ints),)
        if attribute.name == "value_float":
            return np.array(attribute.f, np.float32), ()
        if attribute.name == "value_floats":
            return np.array(list(attribute.floats), np.float32), (len(attribute.floats),)
    return _UNKNOWN, None


def _attr_int(node: Any, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _attr_ints(node: Any, name: str) -> list[int] | None:
    return next(([int(v) for v in a.ints] for a in node.attribute if a.name == name), None)


# --- what a node allocates, from the sizes it is given ------------------------------------------------


def _inputs(node: Any, scope: _Scope, *positions: int) -> list[np.ndarray] | object:
    """The values of the inputs at ``positions``: _DYNAMIC if one depends on the data, _UNKNOWN if one is a
    constant this check does not evaluate (a missing optional input is an empty array)."""
    values = []
    for position in positions:
        name = node.input[position] if position < len(node.input) else ""
        value = scope.value(name) if name else np.zeros(0, np.int64)
        if value is _DYNAMIC or value is _UNKNOWN:
            return value
        values.append(np.asarray(value).reshape(-1))
    return values


def _sizes(values: Iterable) -> list[int]:
    return [max(int(v), 0) for v in values]


def _known_elements(scope: _Scope, name: str) -> int:
    """Elements of a tensor whose shape is known; 1 (the least an axis holds here) otherwise."""
    dims = scope.shape(name)
    return 1 if dims is None else elements(dims)


def _constant_of_shape(node: Any, scope: _Scope) -> Any:
    values = _inputs(node, scope, 0)
    return values if not isinstance(values, list) else elements(_sizes(values[0]))


def _expand(node: Any, scope: _Scope) -> Any:
    values = _inputs(node, scope, 1)
    if not isinstance(values, list):
        return values
    shape = _sizes(values[0])
    dims = scope.shape(node.input[0]) or ()
    for axis, size in enumerate(reversed(dims)):
        if axis < len(shape):
            shape[-1 - axis] = max(shape[-1 - axis], size)
    return elements(shape) * _known_elements_beyond(dims, len(shape))


def _known_elements_beyond(dims: Sequence[int], rank: int) -> int:
    return elements(dims[: max(len(dims) - rank, 0)])


def _tile(node: Any, scope: _Scope) -> Any:
    values = _inputs(node, scope, 1)
    if not isinstance(values, list):
        return values
    return elements(_sizes(values[0])) * _known_elements(scope, node.input[0])


def _range(node: Any, scope: _Scope) -> Any:
    values = _inputs(node, scope, 0, 1, 2)
    if not isinstance(values, list):
        return values
    start, limit, delta = (float(v[0]) if v.size else 0.0 for v in values)
    if delta == 0 or not all(np.isfinite((start, limit, delta))):
        return 0  # onnxruntime refuses it at run time
    return max(int(np.ceil((limit - start) / delta)), 0)


def _reshape(node: Any, scope: _Scope) -> Any:
    values = _inputs(node, scope, 1)
    if not isinstance(values, list):
        return _DYNAMIC  # a reshape allocates nothing: only a constant target is held to the bound
    return elements(v for v in _sizes(values[0]) if v > 0)


def _pad(node: Any, scope: _Scope) -> Any:
    pads = _attr_ints(node, "pads")
    if pads is None:
        values = _inputs(node, scope, 1)
        if not isinstance(values, list):
            return values
        pads = [int(v) for v in values[0]]
    rank = len(pads) // 2
    dims = scope.shape(node.input[0]) if node.input else None
    base = list(dims) if dims is not None and len(dims) == rank else [1] * rank
    return elements(max(d + pads[i] + pads[i + rank], 0) for i, d in enumerate(base))


def _one_hot(node: Any, scope: _Scope) -> Any:
    values = _inputs(node, scope, 1)
    if not isinstance(values, list):
        return values
    depth = max(int(values[0][0]), 0) if values[0].size else 0
    return depth * _known_elements(scope, node.input[0])


def _resize(node: Any, scope: _Scope, scales_at: int = 2, sizes_at: int = 3) -> Any:
    sizes = _inputs(node, scope, sizes_at)
    if isinstance(sizes, list) and sizes[0].size:
        return elements(_sizes(sizes[0]))
    scales = _inputs(node, scope, scales_at)
    if not isinstance(scales, list):
        return scales
    dims = scope.shape(node.input[0])
    factors = [max(float(s), 1.0) for s in scales[0]]
    base = dims if dims is not None and len(dims) == len(factors) else [1] * len(factors)
    return elements(int(d * f) for d, f in zip(base, factors, strict=True))


def _random(node: Any, scope: _Scope) -> Any:
    shape = _attr_ints(node, "shape")
    return _DYNAMIC if shape is None else elements(_sizes(shape))


_SIZERS: dict[str, Callable[[Any, _Scope], Any]] = {
    "ConstantOfShape": _constant_of_shape,
    "Expand": _expand,
    "Tile": _tile,
    "Range": _range,
    "Reshape": _reshape,
    "Pad": _pad,
    "OneHot": _one_hot,
    "Resize": _resize,
    "Upsample": lambda node, scope: _resize(node, scope, scales_at=1, sizes_at=99),
    "RandomNormal": _random,
    "RandomUniform": _random,
}
