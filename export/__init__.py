"""torch -> ONNX export with explicit state, verified against PyTorch (needs the ``train`` extra).

Names are imported on first use, so that the torch-free parts (``edgernn.export.quality``'s evaluation,
``edgernn eval``) load without torch.
"""

import importlib

_NAMES = {
    "UnsupportedModuleError": "edgernn.export.byo",
    "export_module": "edgernn.export.byo",
    "ExportReport": "edgernn.export.exporter",
    "export_model": "edgernn.export.exporter",
    "export_run": "edgernn.export.exporter",
    "build_info": "edgernn.export.graph",
    "build_step_model": "edgernn.export.graph",
    "EvaluationData": "edgernn.export.quality",
    "QualityReport": "edgernn.export.quality",
    "check_quality": "edgernn.export.quality",
    "evaluation_data": "edgernn.export.quality",
    "evaluation_data_from_model": "edgernn.export.quality",
    "QuantizeConfig": "edgernn.export.quantize",
    "quantize_step_model": "edgernn.export.quantize",
    "ParityReport": "edgernn.export.verify",
    "verify_export": "edgernn.export.verify",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES])
