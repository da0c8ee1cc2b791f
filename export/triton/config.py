"""The model configuration (config.pbtxt) of an edgernn model with Triton's sequence batcher.

The configuration is built as nested dicts and lists mirroring Triton's ``ModelConfig`` protobuf
(``model_config.proto``), then printed in protobuf text format. Enum values are :class:`Enum` so they
print unquoted. The writer needs no Triton package; the tests and ``write`` parse the text with Triton's
own protobuf (``tritonclient.grpc.model_config_pb2``) when it is installed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from edgernn.runtime import contract
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import InputError

DATA_TYPES = {"float32": "TYPE_FP32", "int64": "TYPE_INT64"}
C_BACKEND = "edgernn"  # the C flavour's backend name: its library is libtriton_edgernn.so
CONTROLS = (  # (input name, control kind) as Triton's sequence batcher documents them
    ("START", "CONTROL_SEQUENCE_START"),
    ("END", "CONTROL_SEQUENCE_END"),
    ("READY", "CONTROL_SEQUENCE_READY"),
    ("CORRID", "CONTROL_SEQUENCE_CORRID"),
)


class Enum(str):
    """A protobuf enum value: printed without quotes."""


@dataclass(frozen=True)
class Settings:
    """What the user chose, defaults applied (see ``write``)."""

    backend: str
    name: str
    max_batch_size: int
    max_candidate_sequences: int
    idle_timeout_us: int
    instances: int
    model_file: str
    max_queue_delay_us: int


def build(info: ModelInfo, settings: Settings) -> dict[str, Any]:
    """The ModelConfig of ``info``'s model for ``settings.backend`` ("onnxruntime", "python" or "c")."""
    batching: dict[str, Any] = {
        "max_sequence_idle_microseconds": settings.idle_timeout_us,
        "oldest": {
            "max_candidate_sequences": settings.max_candidate_sequences,
            "max_queue_delay_microseconds": settings.max_queue_delay_us,
        },
    }
    served_states = () if settings.backend == "c" else info.states  # the C backend answers y alone
    config: dict[str, Any] = {
        "name": settings.name,
        "backend": C_BACKEND if settings.backend == "c" else settings.backend,
        "max_batch_size": settings.max_batch_size,
        "input": [_data_input(info, settings.backend)],
        "output": [_output(contract.OUTPUT_NAME, (info.output.size,))]
        + [_output(s.output, s.shape) for s in served_states],
        "sequence_batching": batching,
        "instance_group": [{"count": settings.instances, "kind": Enum("KIND_CPU")}],
    }
    if settings.backend == "onnxruntime":
        # Implicit state: Triton feeds each state output back as its input, and starts a sequence
        # from the initial state. The ONNX step graph takes no control inputs, and the onnxruntime
        # backend requires every control input to be a graph input, so none are declared.
        batching["state"] = [_state(s) for s in info.states]
        config["default_model_filename"] = settings.model_file
        # One thread per session, as the stepper runs tiny models (the backend's default takes every core).
        config["parameters"] = [
            {"key": key, "value": {"string_value": "1"}}
            for key in ("intra_op_thread_count", "inter_op_thread_count")
        ]
    else:
        batching["control_input"] = [_control(name, kind) for name, kind in CONTROLS]
        if settings.backend == "python":
            config["parameters"] = [{"key": "model_file", "value": {"string_value": settings.model_file}}]
    return config


def _data_input(info: ModelInfo, backend: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": contract.INPUT_NAME, "data_type": Enum(DATA_TYPES[info.input.dtype])}
    if info.input.kind == "tokens":
        spec["dims"] = [1]  # one token id per request; the graph's x is (batch,)
        if backend == "onnxruntime":
            spec["reshape"] = {"shape": []}
    else:
        spec["dims"] = [info.input.size]
    return spec


def _output(name: str, dims: tuple[int, ...]) -> dict[str, Any]:
    return {"name": name, "data_type": Enum("TYPE_FP32"), "dims": list(dims)}


def _state(state: contract.StateSpec) -> dict[str, Any]:
    initial: dict[str, Any] = {
        "name": f"{state.input}_initial",
        "data_type": Enum(DATA_TYPES[state.dtype]),
        "dims": list(state.shape),
    }
    if state.initial == 0.0:
        initial["zero_data"] = True
    else:
        initial["data_file"] = initial_file(state)
    return {
        "input_name": state.input,
        "output_name": state.output,
        "data_type": Enum(DATA_TYPES[state.dtype]),
        "dims": list(state.shape),
        "initial_state": [initial],
    }


def initial_file(state: contract.StateSpec) -> str:
    """The file (in ``REPO/NAME/initial_state/``) holding a state's non-zero initial fill."""
    return f"{state.input}.bin"


def _control(name: str, kind: str) -> dict[str, Any]:
    if kind == "CONTROL_SEQUENCE_CORRID":
        control = {"kind": Enum(kind), "data_type": Enum("TYPE_UINT64")}
    else:
        control = {"kind": Enum(kind), "int32_false_true": [0, 1]}
    return {"name": name, "control": [control]}


def check_state_pairing(info: ModelInfo) -> None:
    """Triton pairs implicit state inputs with outputs by their sorted order (triton-inference-server
    server issue 8586), not by the names in the config: refuse a model whose pairs do not sort alike."""
    by_input = [s.output for s in sorted(info.states, key=lambda s: s.input)]
    by_output = sorted(s.output for s in info.states)
    if by_input != by_output:
        pairs = ", ".join(f"{s.input} -> {s.output}" for s in info.states)
        raise InputError(
            f"state pairs {pairs}: Triton pairs implicit state inputs and outputs by sorted name, and "
            f"these sort differently (inputs sorted give outputs {by_input}, outputs sorted are "
            f"{by_output}); use --backend python, which keeps the state itself"
        )


# --- protobuf text format -------------------------------------------------------------------------


def to_text(message: dict[str, Any], indent: int = 0) -> str:
    """``message`` in protobuf text format: scalars ``key: value``, messages ``key { ... }``, repeated
    scalars ``key: [a, b]``, repeated messages ``key [ { ... }, { ... } ]``."""
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key} {{\n{to_text(value, indent + 1)}{pad}}}\n")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            items = ",\n".join(f"{pad}  {{\n{to_text(v, indent + 2)}{pad}  }}" for v in value)
            lines.append(f"{pad}{key} [\n{items}\n{pad}]\n")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in value)}]\n")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}\n")
    return "".join(lines)


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a quoted string with escapes protobuf's text format reads
    if isinstance(value, float):
        assert math.isfinite(value)
        return repr(value)
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"no text format for {value!r}")


def parse(text: str):
    """``text`` parsed into Triton's ``ModelConfig`` (needs tritonclient: ``pip install 'edgernn[serve]'``).

    Raises InputError with protobuf's message when Triton's parser refuses it.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise InputError(f"config.pbtxt: Triton's ModelConfig refuses it: {exc}") from None
