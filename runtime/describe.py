"""What an ONNX file holds, read with onnxruntime alone (behind ``edgernn inspect``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgernn.runtime.errors import ContractError
from edgernn.runtime.inputs import onnx_dtype
from edgernn.runtime.session import open_session, read_info
from edgernn.runtime.stepper import Stepper
from edgernn.runtime.untrusted import guarded

_UNSET_VERSION = 2**63 - 1  # what onnxruntime reports when model_version was never set


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON-ready summary of the model at ``path``.

    Keys: ``path``, ``size_bytes``, ``inputs``/``outputs`` (each ``{"name", "dtype", "shape"}``, symbolic
    axes by name, e.g. ``"batch"``, and ``"?"`` where unnamed), ``edgernn`` (the validated metadata
    document as a dict, or None for a model edgernn did not write), ``opset`` (from the edgernn metadata,
    else None),
    ``producer_name``, ``graph_name``, ``domain``, ``description``, ``version`` and ``metadata_keys``.
    Raises InputError for a missing file, ContractError for a file that is not a model or has bad metadata.
    """
    session = open_session(path)
    with guarded(path, "its metadata", error=ContractError):
        return _summary(path, session)


def _summary(path: str | os.PathLike, session: Any) -> dict[str, Any]:
    meta = session.get_modelmeta()
    info = read_info(session, path)
    if info is not None:
        Stepper(path, chunk_model=False)  # every check the stepper makes at load: refused files raise here
    return {
        "path": str(path),
        "size_bytes": Path(path).stat().st_size,
        "inputs": [_describe_arg(arg) for arg in session.get_inputs()],
        "outputs": [_describe_arg(arg) for arg in session.get_outputs()],
        "edgernn": None if info is None else json.loads(info.to_json()),
        "opset": None if info is None else info.opset,
        "producer_name": meta.producer_name or None,
        "graph_name": meta.graph_name or None,
        "domain": meta.domain or None,
        "description": meta.description or None,
        "version": None if meta.version == _UNSET_VERSION else meta.version,
        "metadata_keys": sorted(meta.custom_metadata_map),
    }


def _describe_arg(arg: Any) -> dict[str, Any]:
    dtype = onnx_dtype(arg.type)
    return {
        "name": arg.name,
        "dtype": arg.type if dtype is None else str(dtype),
        "shape": [d if isinstance(d, (int, str)) else "?" for d in arg.shape],
    }
