"""Opening an onnxruntime session tuned for tiny recurrent models, and reading its edgernn metadata."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from edgernn.runtime import contract
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ContractError, InputError
from edgernn.runtime.graph_bounds import check_model_graph
from edgernn.runtime.inputs import check_positive_int
from edgernn.runtime.untrusted import guarded, read_bytes

# onnxruntime raises its own exception classes (not RuntimeError); which exist depends on the version.
_ORT_ERROR_NAMES = (
    "EPFail", "EngineError", "Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "ModelLoaded",
    "NoModel", "NoSuchFile", "NotFound", "NotImplemented", "RuntimeException",
)  # fmt: skip
ORT_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(_ort_state, name) for name in _ORT_ERROR_NAMES if hasattr(_ort_state, name)
)

ModelSource = str | os.PathLike | bytes

# onnxruntime logs a failed run on stderr before raising; the stepper turns every failure into one error
# that says what was given, so its sessions and runs log fatal errors only.
QUIET_LOG_LEVEL = 4


def open_session(
    model: ModelSource,
    *,
    providers: Sequence[str] | None = None,
    threads: int = 1,
    session_options: ort.SessionOptions | None = None,
) -> ort.InferenceSession:
    """An onnxruntime session tuned for tiny models.

    Raises InputError for a missing file or bad argument, ContractError for a file onnxruntime cannot load
    or whose graph ``graph_bounds`` refuses (dead nodes, allocations past the contract's bounds).
    """
    check_positive_int("threads", threads)
    source, label = _model_source(model)
    check_model_graph(model_bytes(model), label)  # before onnxruntime folds or allocates anything
    options = session_options or _default_session_options(threads)
    try:
        return ort.InferenceSession(
            source, sess_options=options, providers=list(providers or ["CPUExecutionProvider"])
        )
    except ORT_ERRORS as exc:
        raise ContractError(f"{label} is not an ONNX model onnxruntime can load: {exc}") from None


def _model_source(model: ModelSource) -> tuple[str | bytes, str]:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model), "the model bytes"
    if not isinstance(model, (str, os.PathLike)):
        raise InputError(f"model: expected a file path or bytes, got {type(model).__name__}")
    path = Path(model)
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise InputError(f"model file {str(path)!r} {problem}; expected an .onnx file")
    return str(path), repr(str(path))


def model_label(model: ModelSource) -> str:
    """How messages name a model: its path, or "the model bytes"."""
    return "the model bytes" if isinstance(model, (bytes, bytearray)) else str(model)


MAX_MODEL_BYTES = 2 << 30  # protobuf's own limit on one message


def model_bytes(model: ModelSource) -> bytes:
    """The bytes of a model given as a path or as bytes (to check its checksum)."""
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    return read_bytes(model, "the model file", max_bytes=MAX_MODEL_BYTES, error=ContractError)


def _default_session_options(threads: int) -> ort.SessionOptions:
    # Tiny recurrent steps are dominated by per-call overhead: more threads only add synchronisation.
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = QUIET_LOG_LEVEL
    return options


def folds_weights(info: ModelInfo | None) -> bool:
    """True for a model whose weights are stored int8 behind DequantizeLinear (``int8_method="weights"``).

    Such a model is opened with ``session.disable_quant_qdq=1``: onnxruntime then folds each constant
    DequantizeLinear into a float32 weight once, at load, instead of dequantizing at every step (which
    its QDQ handling otherwise keeps, to fuse quantized kernels that a weight-only model does not use).
    """
    return info is not None and (info.quantization or {}).get("method") == "weights"


def folding_options(threads: int) -> ort.SessionOptions:
    options = _default_session_options(threads)
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    return options


def read_metadata(session: ort.InferenceSession, source: object = "the model") -> dict[str, str]:
    """The model's metadata map (key -> value), read through the guarded path: onnxruntime decodes the
    values as UTF-8 and raises UnicodeDecodeError on a file that holds anything else."""
    with guarded(source, "its metadata", error=ContractError):
        return dict(session.get_modelmeta().custom_metadata_map)


def read_info(session: ort.InferenceSession, source: object = "the model") -> ModelInfo | None:
    """The model's parsed edgernn metadata, or None if edgernn did not write it."""
    text = read_metadata(session, source).get(contract.METADATA_KEY)
    if text is None:
        return None
    with guarded(source, "its edgernn metadata", error=ContractError):
        return contract.parse_info(text)
