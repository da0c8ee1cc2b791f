"""Checks of a step graph and its metadata before any C is generated, so that a malformed or hostile file is
one ContractError naming what is wrong rather than a traceback, and the generated code trusts only what
the graph itself says.

- the graph's structure: every value a node reads is an input, an initializer or the output of an earlier
  node (a dangling name, a cycle or nodes out of order are refused), no value is computed twice, every
  graph output is computed; the declared shapes of the inputs and outputs agree with the metadata;
- the string tables the C carries (vocabulary, classes, columns, targets): valid Unicode without NUL (a C
  string ends at NUL), one name per value of the tensor they describe;
- after lowering, the vocabulary against the embedding table: the token's bound in C is the table's rows.
"""

from __future__ import annotations

import onnx

from edgernn.export.c.ir import Program
from edgernn.runtime import contract
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ContractError

STRING_TABLES = ("vocabulary", "classes", "columns", "targets")


def check_graph(proto: onnx.ModelProto, info: ModelInfo) -> None:
    """ContractError for a graph the lowering cannot walk in order, or whose declared inputs and outputs
    disagree with its metadata."""
    graph = proto.graph
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    computed_by = {}
    for index, node in enumerate(graph.node):
        for name in node.output:
            if name and (name in known or name in computed_by):
                raise ContractError(f"{_node(index, node)} computes {name!r}, which the graph already has")
            if name:
                computed_by[name] = index
        known.update(n for n in node.output if n)
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name and name not in available:
                raise ContractError(_unavailable(index, node, name, computed_by.get(name)))
        available.update(n for n in node.output if n)
    for output in graph.output:
        if output.name not in available:
            raise ContractError(f"the graph does not compute its output {output.name!r} (no node writes it)")
    _check_declared_shapes(graph, info)


def _node(index: int, node: onnx.NodeProto) -> str:
    return f"node {index} ({node.op_type}{' ' + repr(node.name) if node.name else ''})"


def _unavailable(index: int, node: onnx.NodeProto, name: str, producer: int | None) -> str:
    if producer is None:
        return f"{_node(index, node)} reads {name!r}, which no input, initializer or node provides"
    if producer == index:
        return f"{_node(index, node)} reads {name!r}, its own output (a cycle)"
    return (
        f"{_node(index, node)} reads {name!r} before node {producer} computes it (a cycle, or nodes out of "
        "topological order)"
    )


def _check_declared_shapes(graph: onnx.GraphProto, info: ModelInfo) -> None:
    """Every static dimension the graph declares for x, y and the states (after the batch axis) is the
    metadata's; undeclared or symbolic ones are left to the lowering, which uses the metadata's."""
    x_shape = () if info.input.kind == "tokens" else (info.input.size,)
    expected = {contract.INPUT_NAME: x_shape, contract.OUTPUT_NAME: (info.output.size,)}
    for s in info.states:
        expected[s.input] = expected[s.output] = tuple(s.shape)
    for value in [*graph.input, *graph.output]:
        if value.name not in expected or not value.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        want = expected[value.name]
        given = ["batch", *(d.dim_value if d.HasField("dim_value") else None for d in dims[1:])]
        if len(dims) != len(want) + 1 or any(
            g is not None and g != w for g, w in zip(given[1:], want, strict=True)
        ):
            shown = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
            raise ContractError(
                f"{value.name!r} is declared with shape {shown} in the graph, the metadata says "
                f"{['batch', *want]}"
            )


def check_strings(info: ModelInfo) -> None:
    """ContractError for a string table the C cannot carry as it is, or whose length is not the size of
    what it names (a caller indexing it by output or feature would read past it)."""
    sizes = {
        "vocabulary": info.input.size,
        "classes": info.output.size,
        "targets": info.output.size,
        "columns": info.input.size if info.input.kind == "features" else None,
    }
    for key, items in string_tables(info):
        for i, text in enumerate(items):
            if "\0" in text:
                raise ContractError(
                    f"metadata {key!r}: entry {i} holds a NUL character, which ends a C string"
                )
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ContractError(
                    f"metadata {key!r}: entry {i} is not valid Unicode ({exc.reason} at character {exc.start}); "
                    "expected UTF-8 text"
                ) from None
        if sizes[key] is not None and len(items) != sizes[key]:
            what = "outputs" if key in ("classes", "targets") else "input features"
            raise ContractError(
                f"metadata {key!r} names {len(items)}, the graph has {sizes[key]} {what}: one name per value"
            )


def string_tables(info: ModelInfo) -> list[tuple[str, list[str]]]:
    """The string tables NAME.c carries: (name, entries), in a fixed order."""
    tables = []
    if info.input.vocabulary is not None:
        tables.append(("vocabulary", list(info.input.vocabulary)))
    for key in STRING_TABLES[1:]:
        value = info.extra.get(key)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            tables.append((key, list(value)))
    return tables


def check_vocabulary(program: Program) -> None:
    """ContractError when the metadata's vocabulary is not the embedding table's row count: the C bounds the
    token by the table, and a vocabulary that says otherwise would name tokens the model cannot take."""
    info = program.info
    if info.input.kind != "tokens" or program.token_rows is None:
        return
    if program.token_rows != info.input.size:
        raise ContractError(
            f"the metadata says a vocabulary of {info.input.size:,} tokens, the graph's embedding table has "
            f"{program.token_rows:,} rows; expected the same count"
        )
