"""Bit rot and separated pairs: a checksum of the graph recorded in the metadata and checked at load.

The exporter records ``graph_sha256``, the SHA-256 of the serialized ``graph`` field of the ModelProto
(every op, every weight; not the metadata, which holds the checksum). At load the stepper hashes the same
bytes of the file and refuses a mismatch (ContractError): a flipped byte in the weights is caught before
any step. The graph field is found with protobuf's own parser (onnxruntime depends on protobuf), through
a one-field message type: no onnx import, no hand-written wire-format code.

A chunk graph also records ``step_graph_sha256``, the checksum of the step graph it was exported with,
so that a ``model.chunk.onnx`` beside another export's ``model.onnx`` is recognised without running it.
"""

from __future__ import annotations

import hashlib
from functools import cache

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ContractError
from edgernn.runtime.untrusted import guarded

_GRAPH_FIELD = 7  # ModelProto.graph in onnx.proto
_ORT_FORMAT_ID = b"ORTM"  # the flatbuffers file identifier of onnxruntime's ORT format


@cache
def _model_graph_type() -> type:
    """A message type holding only ModelProto's ``graph`` field, as bytes (the wire format is the same)."""
    proto = descriptor_pb2.FileDescriptorProto(name="edgernn_model_graph.proto", package="edgernn")
    message = proto.message_type.add(name="ModelGraph")
    message.field.add(
        name="graph",
        number=_GRAPH_FIELD,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("edgernn.ModelGraph"))


def graph_sha256(model_bytes: bytes, source: object = "the model") -> str:
    """Hex SHA-256 of the serialized graph inside ``model_bytes`` (an ONNX file's contents)."""
    with guarded(source, "its graph", error=ContractError):
        message = _model_graph_type()()
        message.ParseFromString(model_bytes)
        return hashlib.sha256(message.graph).hexdigest()


def check_graph(model_bytes: bytes, info: ModelInfo, source: object = "the model") -> None:
    """Refuse (ContractError) a file whose graph does not hash to the checksum its metadata records."""
    if info.graph_sha256 is None:
        return  # written before checksums (schema version 1), or by a writer that records none
    if model_bytes[4:8] == _ORT_FORMAT_ID:
        return  # an ORT-format conversion (flatbuffers): its graph is not the ONNX bytes the checksum covers
    found = graph_sha256(model_bytes, source)
    if found != info.graph_sha256:
        raise ContractError(
            f"{source}: the graph (weights and ops) does not match the checksum in its metadata "
            f"(expected sha256 {info.graph_sha256[:16]}..., found {found[:16]}...): the file is corrupt or "
            "was edited after export; export it again (verify_checksum=False skips this check)"
        )
