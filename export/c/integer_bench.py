"""What the device bench (``export.c.devices.bench``) needs to know of an integer deployment: whether a
deployed folder holds one, the harness's recorded inputs as the integers its step takes, its state's bytes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgernn.export.c.selftest import golden_inputs
from edgernn.runtime import integer_ops as ops
from edgernn.runtime.errors import ContractError


def is_integer(deployed: Path, name: str = "model") -> bool:
    return f"#define {name.upper()}_PRECISION_INTEGER 1" in (deployed / f"{name}.h").read_text()


def input_scales(deployed: Path, name: str = "model") -> np.ndarray:
    """The ``NAME_input_scale`` the deployed NAME.c declares (features models)."""
    found = re.search(
        rf"const float {name}_input_scale\[\w+\] = \{{([^}}]*)\}};", (deployed / f"{name}.c").read_text()
    )
    if found is None:
        raise ContractError(f"{name}.c declares no {name}_input_scale")
    return np.array([float(v.strip().rstrip("f")) for v in found.group(1).split(",")], np.float64)


def inputs_source(deployed: Path, name: str, info, steps: int) -> tuple[str, str]:
    """The harness's recorded inputs (C) and its step call: the self-test's inputs, features quantized to
    int16 as ``NAME_quantize_input`` does (so the harness converts nothing between its markers)."""
    values = golden_inputs(info, steps)
    if info.input.kind == "tokens":
        body = ",".join(str(int(v)) for v in values)
        return f"static const int32_t tokens[STEPS] = {{{body}}};", f"{name}_step_token(&state, tokens[t], y)"
    scaled = values.astype(np.float64) / input_scales(deployed, name)
    quantized = ops.q_sat16(np.trunc(scaled + np.copysign(0.5, scaled)).clip(-1e9, 1e9)).astype(np.int64)
    rows = ",\n".join("{" + ",".join(str(int(v)) for v in row) + "}" for row in quantized)
    return (
        f"static const int16_t inputs[STEPS][{name.upper()}_INPUT_SIZE] = {{\n{rows}\n}};",
        f"{name}_step(&state, inputs[t], y)",
    )


def state_bytes(deployed: Path, name: str = "model") -> int:
    """The int16 state of one stream, from NAME.h."""
    found = re.search(rf"#define {name.upper()}_STATE_VALUES\s+(\d+)", (deployed / f"{name}.h").read_text())
    if found is None:
        raise ContractError(f"{name}.h: no {name.upper()}_STATE_VALUES")
    return 2 * int(found.group(1))
