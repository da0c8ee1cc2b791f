"""NAME_test.c of the ``integer`` precision: the integer reference's outputs, replayed exactly.

The inputs are the float self-test's (``selftest.golden_inputs``: an English passage for tokens, the
deterministic signal per feature for features), features quantized to int16 as ``NAME_quantize_input``
does and stored as integers, so the program itself uses no float. The C feeds its own state back for every
step and must equal ``integer_ref.q_step`` bit for bit: y every ``stride``-th step and the final state. It
then checks the error paths (a token out of range, the other step function) leave the state untouched.
It prints ``max_abs_error=<n> steps=<n>`` (n: the largest integer difference, 0 when bit-identical) and PASS or
FAIL, the protocol of ``selftest.parse_output``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgernn.export.c.ctext import c_ints
from edgernn.export.c.selftest import golden_inputs
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.integer_program import IntegerProgram, q_run
from edgernn.runtime.integer_ref import IntegerModel, q_step, quantize_input

STEPS = 1000
MAX_GOLDEN_VALUES = 24_000


@dataclass
class IntegerGolden:
    inputs: np.ndarray  # (T,) tokens or (T, F) int16
    ys: np.ndarray  # (T, O) int16
    state: np.ndarray  # (values,) int16 at the end
    stride: int


def _record(form, info: ModelInfo, steps: int, q, states: list[np.ndarray]) -> IntegerGolden:
    """Run ``q`` (``q_step`` of an ``IntegerModel``, ``q_run`` of an ``IntegerProgram``: ``form``) from
    ``states`` (batch 1, state fed back) over the self-test's inputs."""
    if form.input_kind != "tokens":
        steps = min(steps, max(50, 2 * MAX_GOLDEN_VALUES // form.input_size))
    inputs = quantize_input(form, golden_inputs(info, steps))
    ys = []
    for t in range(steps):
        y, states = q(form, inputs[t : t + 1], states)
        ys.append(y[0])
    state = np.concatenate([s.reshape(-1) for s in states])
    stride = max(1, math.ceil(steps * form.output_size / MAX_GOLDEN_VALUES))
    return IntegerGolden(inputs, np.stack(ys), state, stride)


def record_integer_golden(model: IntegerModel, info: ModelInfo, steps: int = STEPS) -> IntegerGolden:
    """Run the integer reference (batch 1, state fed back) over the self-test's inputs."""
    states = [np.zeros((1, model.num_layers, model.hidden_size), np.int64) for _ in model.state_names]
    return _record(model, info, steps, q_step, states)


def record_program_golden(program: IntegerProgram, info: ModelInfo, steps: int = STEPS) -> IntegerGolden:
    """Run the integer program (batch 1, state fed back) over the self-test's inputs."""
    states = [np.zeros((1, program.buffers[index].size), np.int64) for index, _ in program.states]
    return _record(program, info, steps, q_run, states)


def integer_test_source(name: str, model: IntegerModel | IntegerProgram, golden: IntegerGolden) -> str:
    n, N = name, name.upper()
    tokens = model.input_kind == "tokens"
    steps, outputs = golden.ys.shape
    checked = golden.ys[:: golden.stride]
    step_call = (
        f"{n}_step_token(&st, inputs[t], y)"
        if tokens
        else f"{n}_step(&st, inputs + (long)t * {N}_INPUT_SIZE, y)"
    )
    lines = [
        f"/* {n}_test.c: replays {steps} steps of the integer reference (state fed back) and requires y every",
        f" * {golden.stride} step(s) and the final state to be the same integers; then the error paths.",
        " * Prints max_abs_error=<n> steps=<n>, then PASS or FAIL; returns 0 on PASS. No floating point.",
        f" * Build: cc -std=c99 -Wall -Wextra -Werror -pedantic -O2 -DEDGERNN_NO_FLOAT {n}.c {n}_test.c */",
        "#include <stdint.h>",
        "#include <stdio.h>",
        "#include <string.h>",
        f'#include "{n}.h"',
        "",
        f"static const {'int32_t' if tokens else 'int16_t'} inputs[{golden.inputs.size}] = {{\n{c_ints(golden.inputs)}\n}};",
        f"static const int16_t want_y[{checked.size}] = {{\n{c_ints(checked)}\n}};",
        f"static const int16_t want_state[{golden.state.size}] = {{\n{c_ints(golden.state)}\n}};",
        "",
        "int main(void)",
        "{",
        f"    {n}_state st, before;",
        f"    int16_t y[{outputs}];",
        "    int worst = 0, bad = 0, t, j;",
        f"    {n}_reset(&st);",
        f"    for (t = 0; t < {steps}; t++) {{",
        f"        if ({step_call} != {N}_OK) {{",
        '            printf("step %d was refused\\n", t);',
        "            bad = 1;",
        "            break;",
        "        }",
        f"        if (t % {golden.stride} == 0)",
        f"            for (j = 0; j < {outputs}; j++) {{",
        f"                int d = y[j] - want_y[(t / {golden.stride}) * {outputs} + j];",
        "                d = d < 0 ? -d : d;",
        "                if (d > worst) worst = d;",
        "            }",
        "    }",
        f"    for (j = 0; j < {golden.state.size}; j++) {{",
        "        int d = st.s[j] - want_state[j];",
        "        d = d < 0 ? -d : d;",
        "        if (d > worst) worst = d;",
        "    }",
        "    if (worst != 0) bad = 1;",
        "    memcpy(&before, &st, sizeof st);",
    ]
    if tokens:
        lines += [
            f"    if ({n}_step_token(&st, -1, y) != {N}_ERR_TOKEN || {n}_step_token(&st, {N}_VOCAB_SIZE, y) != {N}_ERR_TOKEN) {{",
            '        printf("a token out of range did not return the token error\\n");',
            "        bad = 1;",
            "    }",
            f"    if ({n}_step(&st, (const int16_t *)0, y) != {N}_ERR_KIND) {{",
            f'        printf("{n}_step on a token model did not return the kind error\\n");',
            "        bad = 1;",
            "    }",
        ]
    else:
        lines += [
            f"    if ({n}_step_token(&st, 0, y) != {N}_ERR_KIND) {{",
            f'        printf("{n}_step_token on a features model did not return the kind error\\n");',
            "        bad = 1;",
            "    }",
        ]
    lines += [
        "    if (memcmp(&before, &st, sizeof st) != 0) {",
        '        printf("a refused step changed the state\\n");',
        "        bad = 1;",
        "    }",
        '    printf("max_abs_error=%d steps=%d\\n", worst, t);',
        '    printf("%s\\n", bad ? "FAIL" : "PASS");',
        "    return bad ? 1 : 0;",
        "}",
    ]
    return "\n".join(lines) + "\n"
