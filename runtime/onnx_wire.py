"""The part of the ONNX protobuf schema the runtime reads itself, without importing onnx.

Message types built from field numbers of onnx.proto (ModelProto, GraphProto, NodeProto, AttributeProto,
TensorProto, SparseTensorProto, ValueInfoProto, FunctionProto) in a private descriptor pool, parsed by
protobuf's own parser (onnxruntime depends on protobuf). Fields not declared here are skipped by the parser;
the wire format of each declared field is the one onnx writes, so a file onnx reads parses the same here.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"int64": _F.TYPE_INT64, "int32": _F.TYPE_INT32, "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES,
            "float": _F.TYPE_FLOAT, "double": _F.TYPE_DOUBLE, "uint64": _F.TYPE_UINT64}  # fmt: skip

# message -> (field name, number, type (a scalar name or a message name), repeated)
_SCHEMA: dict[str, tuple[tuple[str, int, str, bool], ...]] = {
    "ModelProto": (
        ("ir_version", 1, "int64", False),
        ("graph", 7, "GraphProto", False),
        ("functions", 25, "FunctionProto", True),
    ),
    "GraphProto": (
        ("node", 1, "NodeProto", True),
        ("name", 2, "string", False),
        ("initializer", 5, "TensorProto", True),
        ("sparse_initializer", 15, "SparseTensorProto", True),
        ("input", 11, "ValueInfoProto", True),
        ("output", 12, "ValueInfoProto", True),
    ),
    "NodeProto": (
        ("input", 1, "string", True),
        ("output", 2, "string", True),
        ("name", 3, "string", False),
        ("op_type", 4, "string", False),
        ("attribute", 5, "AttributeProto", True),
        ("domain", 7, "string", False),
    ),
    "AttributeProto": (
        ("name", 1, "string", False),
        ("f", 2, "float", False),
        ("i", 3, "int64", False),
        ("t", 5, "TensorProto", False),
        ("g", 6, "GraphProto", False),
        ("floats", 7, "float", True),
        ("ints", 8, "int64", True),
        ("tensors", 10, "TensorProto", True),
        ("graphs", 11, "GraphProto", True),
        ("type", 20, "int32", False),
        ("sparse_tensor", 22, "SparseTensorProto", False),
        ("sparse_tensors", 23, "SparseTensorProto", True),
    ),
    "TensorProto": (
        ("dims", 1, "int64", True),
        ("data_type", 2, "int32", False),
        ("float_data", 4, "float", True),
        ("int32_data", 5, "int32", True),
        ("int64_data", 7, "int64", True),
        ("name", 8, "string", False),
        ("raw_data", 9, "bytes", False),
        ("double_data", 10, "double", True),
        ("uint64_data", 11, "uint64", True),
        ("data_location", 14, "int32", False),
    ),
    "SparseTensorProto": (
        ("values", 1, "TensorProto", False),
        ("indices", 2, "TensorProto", False),
        ("dims", 3, "int64", True),
    ),
    "ValueInfoProto": (("name", 1, "string", False),),
    "FunctionProto": (
        ("name", 1, "string", False),
        ("input", 4, "string", True),
        ("output", 5, "string", True),
        ("node", 7, "NodeProto", True),
        ("domain", 10, "string", False),
    ),
}


@cache
def _model_type() -> type:
    proto = descriptor_pb2.FileDescriptorProto(name="edgernn_onnx_wire.proto", package="edgernn_wire")
    proto.syntax = "proto2"
    for message_name, fields in _SCHEMA.items():
        message = proto.message_type.add(name=message_name)
        for name, number, kind, repeated in fields:
            field = message.field.add(name=name, number=number)
            field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if kind in _SCALARS:
                field.type = _SCALARS[kind]
            else:
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".edgernn_wire.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("edgernn_wire.ModelProto"))


def parse_model(model_bytes: bytes) -> Any:
    """The ModelProto subset of ``model_bytes`` (raises protobuf's DecodeError on bytes that are not one)."""
    message = _model_type()()
    message.ParseFromString(model_bytes)
    return message
