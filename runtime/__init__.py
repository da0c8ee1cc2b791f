"""edgernn.runtime: step exported recurrent models with onnxruntime and numpy (no torch, no onnx).

    from edgernn.runtime import Stepper
    stepper = Stepper("model.onnx")
    y = stepper.step(x)

Importing this package only defines things: no session is created and nothing is read until you ask.
Names are imported on first use, so that ``edgernn.runtime.native`` (the generated C through ctypes)
loads without onnxruntime.
"""

import importlib
import sys
import types

_NAMES = {
    "LatencyStats": "edgernn.runtime.bench",
    "bench_side_by_side": "edgernn.runtime.bench",
    "bench_stepper": "edgernn.runtime.bench",
    "SCHEMA_VERSION": "edgernn.runtime.contract",
    "ModelInfo": "edgernn.runtime.contract",
    "parse_info": "edgernn.runtime.contract",
    "describe": "edgernn.runtime.describe",
    "ContractError": "edgernn.runtime.errors",
    "EdgeRNNError": "edgernn.runtime.errors",
    "InputError": "edgernn.runtime.errors",
    "ParityError": "edgernn.runtime.errors",
    "decode": "edgernn.runtime.generate",
    "encode": "edgernn.runtime.generate",
    "generate": "edgernn.runtime.generate",
    "StreamPool": "edgernn.runtime.pool",
    "DataInput": "edgernn.runtime.stepper",
    "Stepper": "edgernn.runtime.stepper",
    "Stream": "edgernn.runtime.stepper",
}

__all__ = sorted(_NAMES)


class _Package(types.ModuleType):
    """``describe`` and ``generate`` are functions named like the modules that hold them: the import
    system sets a submodule as an attribute of its package once it is imported, which would hide the
    function; that assignment is skipped, so the names stay the functions (as with eager imports)."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _NAMES.get(name) == f"{__name__}.{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES])
