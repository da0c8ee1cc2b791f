"""The graph of an ORT-format file (onnxruntime's flatbuffers), in the shape ``onnx_wire`` gives an ONNX one.

``graph_bounds`` checks both kinds of file the stepper opens. The flatbuffers classes onnxruntime ships
(``onnxruntime/tools/ort_format_model/ort_flatbuffers_py``) read the file; they are loaded as their own
package, without importing ``onnxruntime.tools`` (whose ``__init__`` imports torch when it is installed)
and without adding that folder to ``sys.path``. Each object below answers the attribute names of the
ONNX protobuf messages that ``graph_bounds`` and ``shape_constants`` read.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

_PACKAGE = "ort_flatbuffers_py"
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL, as onnx_wire's tensors say it


def _session_type() -> Any:
    if _PACKAGE not in sys.modules:
        onnxruntime = importlib.util.find_spec("onnxruntime")
        assert onnxruntime is not None and onnxruntime.submodule_search_locations
        folder = Path(onnxruntime.submodule_search_locations[0]) / "tools" / "ort_format_model" / _PACKAGE
        spec = importlib.util.spec_from_file_location(
            _PACKAGE, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[_PACKAGE] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{_PACKAGE}.fbs.InferenceSession").InferenceSession


def parse_ort_model(data: bytes) -> Any:
    """The model of an ORT-format file: ``.graph`` (nodes, inputs, outputs, initializers) and no functions."""
    session = _session_type().GetRootAs(data, 0)
    model = session.Model()
    graph = model.Graph() if model is not None else None
    return _Record(graph=_graph(graph), functions=[])


class _Record:
    """Named fields; ``HasField`` as protobuf messages answer it."""

    def __init__(self, **fields: Any):
        self.__dict__.update(fields)

    def HasField(self, name: str) -> bool:  # noqa: N802 - protobuf's spelling
        return getattr(self, name, None) is not None


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _items(table: Any, name: str) -> list[Any]:
    count = getattr(table, f"{name}Length")()
    return [getattr(table, name)(j) for j in range(count)]


def _graph(graph: Any) -> _Record:
    if graph is None:
        return _Record(node=[], input=[], output=[], initializer=[], sparse_initializer=[])
    return _Record(
        node=[_node(n) for n in _items(graph, "Nodes") if n is not None],
        input=[_Record(name=_text(name)) for name in _items(graph, "Inputs")],
        output=[_Record(name=_text(name)) for name in _items(graph, "Outputs")],
        initializer=[_tensor(t) for t in _items(graph, "Initializers")],
        sparse_initializer=[_sparse(s) for s in _items(graph, "SparseInitializers")],
    )


def _node(node: Any) -> _Record:
    return _Record(
        name=_text(node.Name()),
        op_type=_text(node.OpType()),
        domain=_text(node.Domain()),
        input=[_text(n) for n in _items(node, "Inputs")],
        output=[_text(n) for n in _items(node, "Outputs")],
        attribute=[_attribute(a) for a in _items(node, "Attributes")],
    )


def _attribute(attribute: Any) -> _Record:
    tensor, graph, sparse = attribute.T(), attribute.G(), None
    return _Record(
        name=_text(attribute.Name()),
        f=attribute.F(),
        i=attribute.I(),
        ints=[int(v) for v in _items(attribute, "Ints")],
        floats=[float(v) for v in _items(attribute, "Floats")],
        t=None if tensor is None else _tensor(tensor),
        g=None if graph is None else _graph(graph),
        tensors=[_tensor(t) for t in _items(attribute, "Tensors")],
        graphs=[_graph(g) for g in _items(attribute, "Graphs")],
        sparse_tensor=sparse,
        sparse_tensors=[],
    )


class _Tensor(_Record):
    """A tensor whose bytes are read only when asked for (``shape_constants`` asks for small ones)."""

    @property
    def raw_data(self) -> bytes:
        raw = self.table.RawDataAsNumpy()
        return b"" if isinstance(raw, int) else raw.tobytes()


def _tensor(tensor: Any) -> _Tensor:
    external = getattr(tensor, "ExternalDataOffset", lambda: -1)() >= 0
    return _Tensor(
        table=tensor,
        name=_text(tensor.Name()),
        dims=[int(d) for d in _items(tensor, "Dims")],
        data_type=tensor.DataType(),
        data_location=_EXTERNAL if external else 0,
        float_data=[],
        int32_data=[],
        int64_data=[],
        double_data=[],
        uint64_data=[],
    )


def _sparse(sparse: Any) -> _Record:
    values = sparse.Values()
    return _Record(
        values=_tensor(values) if values is not None else _Record(name="", dims=[]),
        dims=[int(d) for d in _items(sparse, "Dims")],
    )
