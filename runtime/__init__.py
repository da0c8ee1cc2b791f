"""edgernn.runtime: step exported recurrent models with onnxruntime and numpy (no torch, no onnx).

    from edgernn.runtime import Stepper
    stepper = Stepper("model.onnx")
    y = stepper.step(x)

Importing this package only defines things: no session is created and nothing is read until you ask.
"""

from edgernn.runtime.bench import LatencyStats, bench_side_by_side, bench_stepper
from edgernn.runtime.contract import SCHEMA_VERSION, ModelInfo, parse_info
from edgernn.runtime.describe import describe
from edgernn.runtime.errors import ContractError, EdgeRNNError, InputError, ParityError
from edgernn.runtime.generate import decode, encode, generate
from edgernn.runtime.pool import StreamPool
from edgernn.runtime.stepper import DataInput, Stepper, Stream

__all__ = [
    "SCHEMA_VERSION",
    "ContractError",
    "DataInput",
    "EdgeRNNError",
    "InputError",
    "LatencyStats",
    "ModelInfo",
    "ParityError",
    "Stepper",
    "Stream",
    "StreamPool",
    "bench_side_by_side",
    "bench_stepper",
    "decode",
    "describe",
    "encode",
    "generate",
    "parse_info",
]
