"""torch -> ONNX export with explicit state, verified against PyTorch (needs the ``train`` extra)."""

from edgernn.export.exporter import ExportReport, export_model, export_run
from edgernn.export.graph import build_info, build_step_model
from edgernn.export.verify import ParityReport, verify_export

__all__ = [
    "ExportReport",
    "ParityReport",
    "build_info",
    "build_step_model",
    "export_model",
    "export_run",
    "verify_export",
]
