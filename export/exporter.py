"""Export a RecurrentModel (or a run directory) to a verified single-step ONNX file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgernn.checkpoint import load_checkpoint
from edgernn.export.graph import build_info, build_step_model
from edgernn.export.verify import ParityReport, verify_export
from edgernn.models import RecurrentModel
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import InputError
from edgernn.runtime.files import atomic_write_bytes


@dataclass
class ExportReport:
    """What was written and how closely it matches PyTorch."""

    path: Path
    size_bytes: int
    info: ModelInfo
    parity: ParityReport | None


def export_model(
    model: RecurrentModel,
    path: str | os.PathLike,
    *,
    vocabulary: list[str] | None = None,
    verify: bool = True,
    extra_metadata: dict | None = None,
) -> ExportReport:
    """Write ``model`` as a single-step ONNX graph with explicit state, verified against PyTorch first.

    The file is written atomically and only after every check passed: a failed check raises
    ParityError and leaves ``path`` as it was.
    """
    if vocabulary is not None and len(vocabulary) != model.config.input_size:
        raise InputError(
            f"vocabulary has {len(vocabulary)} entries, the model's input_size is {model.config.input_size}"
        )
    model = model.eval()
    info = build_info(model, vocabulary, extra_metadata)
    proto = build_step_model(model, info)
    parity = verify_export(model, proto, info) if verify else None
    data = proto.SerializeToString()
    written = atomic_write_bytes(path, data)
    return ExportReport(path=written, size_bytes=len(data), info=info, parity=parity)


def export_run(run_dir: str | os.PathLike, path: str | os.PathLike, *, verify: bool = True) -> ExportReport:
    """Export the model of a run directory written by ``edgernn train``."""
    checkpoint = load_checkpoint(run_dir)
    extra = {"task": checkpoint.task} if checkpoint.task else {}
    extra.update(checkpoint.train_config.get("metadata") or {})  # classes, columns, targets, anomaly
    return export_model(
        checkpoint.model, path, vocabulary=checkpoint.vocabulary, verify=verify, extra_metadata=extra
    )
