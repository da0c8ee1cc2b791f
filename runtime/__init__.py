"""edgernn.runtime: step exported recurrent models with onnxruntime and numpy (no torch, no onnx).

    from edgernn.runtime import Stepper
    stepper = Stepper("model.onnx")
    y = stepper.step(x)

Importing this package only defines things: no session is created and nothing is read until you ask.
Names are imported on first use, so that ``edgernn.runtime.native`` (the generated C through ctypes)
loads without onnxruntime.
"""

import importlib

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


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES])
