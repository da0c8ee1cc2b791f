"""torch -> ONNX export with explicit state, verified against PyTorch (needs the ``train`` extra)."""

from edgernn.export.byo import UnsupportedModuleError, export_module
from edgernn.export.exporter import ExportReport, export_model, export_run
from edgernn.export.graph import build_info, build_step_model
from edgernn.export.quality import EvaluationData, QualityReport, check_quality, evaluation_data
from edgernn.export.quantize import QuantizeConfig, quantize_step_model
from edgernn.export.verify import ParityReport, verify_export

__all__ = [
    "EvaluationData",
    "ExportReport",
    "ParityReport",
    "QualityReport",
    "QuantizeConfig",
    "UnsupportedModuleError",
    "build_info",
    "build_step_model",
    "check_quality",
    "evaluation_data",
    "export_model",
    "export_module",
    "export_run",
    "quantize_step_model",
    "verify_export",
]
