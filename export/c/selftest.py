"""NAME_test.c: golden vectors recorded from the onnxruntime Stepper, replayed by the generated C.

The inputs are made the same way on both sides: a token model reads a fixed English passage (its
characters mapped to the vocabulary, anything else to a fixed pseudo-random id); a features model reads
a deterministic signal per feature (a triangle wave plus hashed noise, integers only, scaled by the
feature's mean and std when the metadata has them) that the C computes itself, so only the outputs are
stored. The C feeds its own state back for STEPS steps and compares y (every ``stride``-th step, so the
golden data stays small) and the final state, then checks its error paths: a bad token or a NaN input
returns the error code with the state untouched, the wrong step function returns the kind error.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from edgernn.export.c.ctext import c_floats, c_ints
from edgernn.export.c.generate import CSources
from edgernn.runtime import Stepper
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ContractError
from edgernn.runtime.tolerance import output_scale

STEPS = 1000
MAX_GOLDEN_FLOATS = 24_000  # y values stored (plus the final state): about 300 kB of C text
ATOL = 1e-4
RTOL = 1e-4
# int8: the C quantizes each product's input vector at every step; its reference graph does the same, but a
# value within a rounding of a half step of the grid can round the other way in the two (their float sums
# differ in the last bits), which moves the outputs by about one quantization step from then on. The self-test
# of an int8 target therefore allows this fraction of the golden outputs' largest magnitude on top of ATOL:
# it still catches a wrong layout, scale or op (errors of the order of the outputs); the quality gates
# measure the int8 C against float32.
INT8_ATOL_FRACTION = 0.02
# Some models carry such a flip along for hundreds of steps and several flips add up (a tanh RNN fed its own
# state for 1000 steps). How far is measured on the reference itself: it runs again with the state nudged by
# one float32 rounding (a relative 2^-23, random sign) after every step, which flips roundings the way the
# C's last bits do, and the tolerance grows to INT8_SENSITIVITY_MARGIN times the largest deviation of those
# runs. It never grows past INT8_MAX_FRACTION of the largest |y|: a model that sensitive is refused, as an
# error of the order of the outputs would be.
INT8_SENSITIVITY_RUNS = 3
INT8_SENSITIVITY_MARGIN = 2.0
INT8_MAX_FRACTION = 0.2


def tolerance_for(sources: CSources, golden: Golden) -> float:
    """The self-test's absolute tolerance on the model's scale (ATOL; for int8 plus INT8_ATOL_FRACTION of
    the largest |y|, or the reference's own sensitivity to one rounding, ``golden.sensitivity``, times
    INT8_SENSITIVITY_MARGIN where that is larger, up to INT8_MAX_FRACTION of the largest |y|). The C allows
    it times each output's training std for y (``edgernn.runtime.tolerance``)."""
    if sources.precision != "int8":
        return ATOL
    scale = output_scale(sources.info)
    largest = float(np.abs(golden.ys / scale).max(initial=0.0))
    sensitivity = float(np.max(golden.sensitivity / scale, initial=0.0))
    allowed = max(
        INT8_ATOL_FRACTION * largest, min(INT8_SENSITIVITY_MARGIN * sensitivity, INT8_MAX_FRACTION * largest)
    )
    return ATOL + allowed


PASSAGE = (
    "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. First Citizen: You "
    "are all resolved rather to die than to famish? All: Resolved. resolved. First Citizen: First, you "
    "know Caius Marcius is chief enemy to the people. We know't, we know't. Let us kill him, and we'll "
    "have corn at our own price. Is't a verdict? No more talking on't; let it be done: away, away!\n"
)


def token_sequence(info: ModelInfo, steps: int = STEPS) -> np.ndarray:
    vocab = info.input.size
    index = {s: i for i, s in enumerate(info.input.vocabulary or ())}
    out = np.empty(steps, np.int64)
    for t in range(steps):
        ch = PASSAGE[t % len(PASSAGE)]
        out[t] = index[ch] if ch in index else _hash(t, 7) % vocab
    return out


def _hash(t: int, f: int) -> int:
    h = (t * 2654435761 + f * 40503 + 12345) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 2246822519) & 0xFFFFFFFF
    h ^= h >> 16
    return h


def signal_levels(features: int, steps: int = STEPS) -> np.ndarray:
    """The integer signal, ``(steps, features)`` in [-160, 160]."""
    v = np.empty((steps, features), np.int64)
    for f in range(features):
        period = 29 + 7 * f
        for t in range(steps):
            u = (t + 5 * f) % period
            v[t, f] = (256 * u) // period - 128 + (_hash(t, f) % 65) - 32
    return v


AUDIO_LEVEL = 0.25  # raw audio samples (a keyword model's x): the signal's scale, a quarter of full scale


def feature_scales(info: ModelInfo) -> tuple[np.ndarray, np.ndarray]:
    """The self-test signal's mean and scale per input: the training statistics where the model has them;
    raw audio (a front end in the step) at AUDIO_LEVEL, within the PCM range [-1, 1) (at scale 1 the
    signal overshot it, and drove a trained model's running normalisation far from anything it was
    trained on, where its GRU amplified float32 rounding into self-test failures on a correct C)."""
    size = info.input.size
    audio = info.extra.get("front_end") is not None and info.input.std is None
    mean = np.array(info.input.mean or [0.0] * size, np.float32)
    std = np.array(info.input.std or [AUDIO_LEVEL if audio else 1.0] * size, np.float32)
    return mean, std


def feature_signal(info: ModelInfo, steps: int = STEPS) -> np.ndarray:
    """``(steps, F)`` float32: mean + std * (level / 128), as the C computes it (separate roundings)."""
    mean, std = feature_scales(info)
    s = signal_levels(info.input.size, steps).astype(np.float32) / np.float32(128.0)
    return (mean + (std * s).astype(np.float32)).astype(np.float32)


def golden_inputs(info: ModelInfo, steps: int = STEPS) -> np.ndarray:
    return token_sequence(info, steps) if info.input.kind == "tokens" else feature_signal(info, steps)


@dataclass
class Golden:
    ys: np.ndarray  # (steps, O)
    state: np.ndarray  # (STATE_FLOATS,) at the end
    stride: int
    sensitivity: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (O,), int8 only


def _run(stepper: Stepper, xs: np.ndarray, nudge: np.random.Generator | None = None) -> np.ndarray:
    ys = []
    for x in xs:
        ys.append(stepper.step(x))
        if nudge is not None:
            state = stepper.state
            for value in state.values():
                value *= 1 + nudge.choice(np.array([-1, 1], value.dtype), value.shape) * value.dtype.type(
                    2**-23
                )
            stepper.state = state
    return np.stack(ys)


def record_golden(sources: CSources, steps: int = STEPS) -> Golden:
    """Run the reference graph in the onnxruntime Stepper, state fed back, and keep what the C checks (for
    int8 also how far the reference moves when its state is nudged by one rounding: see INT8_SENSITIVITY_RUNS)."""
    stepper = Stepper(sources.reference_model, chunk_model=False)
    xs = golden_inputs(sources.info, steps)
    ys = _run(stepper, xs)
    state = np.concatenate([stepper.state[s.input].reshape(-1) for s in sources.info.states])
    if not np.isfinite(ys).all() or not np.isfinite(state).all():
        raise ContractError("the reference stepper produces non-finite values on the self-test inputs")
    stride = max(1, math.ceil(steps * ys.shape[1] / MAX_GOLDEN_FLOATS))
    golden = Golden(ys.astype(np.float32), state.astype(np.float32), stride)
    if sources.precision == "int8":
        deviations = []
        for seed in range(INT8_SENSITIVITY_RUNS):
            stepper.reset()
            nudged = _run(stepper, xs, np.random.default_rng(seed))
            deviations.append(np.abs(np.nan_to_num(nudged - ys, nan=np.inf)).max(axis=0))
        golden.sensitivity = np.max(deviations, axis=0).astype(np.float32)
    return golden


def test_source(sources: CSources, golden: Golden, atol: float = ATOL, rtol: float = RTOL) -> str:
    info, n, N = sources.info, sources.name, sources.name.upper()
    tokens = info.input.kind == "tokens"
    steps = golden.ys.shape[0]
    checked = golden.ys[:: golden.stride]
    lines = [
        f"/* {n}_test.c: replays {steps} steps recorded from the onnxruntime stepper (state fed back) and",
        f" * checks y every {golden.stride} step(s) and the final state against them, within {atol:g} * scale + {rtol:g} * |want|",
        " * (scale: each output's training std for y, 1 for the state); errors are reported divided by the scale;",
        " * then the error paths. Prints max_abs_error=<g> steps=<n>, then PASS or FAIL; returns 0 on PASS.",
        " * Build: cc -std=c99 -Wall -Wextra -Werror -pedantic -O2 " + f"{n}.c {n}_test.c -lm */",
        "#include <math.h>",
        "#include <stdint.h>",
        "#include <stdio.h>",
        "#include <string.h>",
        "",
        f'#include "{n}.h"',
        "",
        f"#define STEPS {steps}",
        f"#define STRIDE {golden.stride}",
        f"#define CHECKED {len(checked)}",
        "",
        f"static const float golden_y[CHECKED * {N}_OUTPUT_SIZE] = {{\n{c_floats(checked)}\n}};",
        f"static const float golden_state[{N}_STATE_FLOATS] = {{\n{c_floats(golden.state)}\n}};",
        f"static const float y_scale[{N}_OUTPUT_SIZE] = {{\n{c_floats(output_scale(info))}\n}};",
    ]
    if tokens:
        ctype = "int16_t" if info.input.size <= 32767 else "int32_t"
        lines.append(f"static const {ctype} tokens[STEPS] = {{\n{c_ints(golden_inputs(info, steps))}\n}};")
    else:
        mean, std = feature_scales(info)
        lines.append(f"static const float feature_mean[{N}_INPUT_SIZE] = {{\n{c_floats(mean)}\n}};")
        lines.append(f"static const float feature_std[{N}_INPUT_SIZE] = {{\n{c_floats(std)}\n}};")
        lines += [
            "",
            "static uint32_t mix(uint32_t t, uint32_t f)",
            "{",
            "    uint32_t h = t * 2654435761u + f * 40503u + 12345u;",
            "    h ^= h >> 13;",
            "    h *= 2246822519u;",
            "    h ^= h >> 16;",
            "    return h;",
            "}",
            "",
            "static void make_input(int t, float *x)",
            "{",
            f"    for (int f = 0; f < {N}_INPUT_SIZE; f++) {{",
            "        const int period = 29 + 7 * f;",
            "        const int u = (t + 5 * f) % period;",
            "        const int level = (256 * u) / period - 128 + (int)(mix((uint32_t)t, (uint32_t)f) % 65u) - 32;",
            "        const float s = (float)level / 128.0f;",
            "        const float p = feature_std[f] * s;",
            "        x[f] = feature_mean[f] + p;",
            "    }",
            "}",
        ]
    lines += [
        "",
        "static double worst = 0.0;",
        "static int bad = 0;",
        "",
        "static void compare(const float *got, const float *want, const float *scale, int count, const char *what, int step)",
        "{",
        "    for (int i = 0; i < count; i++) {",
        "        const double unit = scale ? (double)scale[i] : 1.0;",
        "        const double error = fabs((double)got[i] - (double)want[i]) / unit;",
        f"        if (!(error * unit <= {atol!r} * unit + {rtol!r} * fabs((double)want[i]))) {{",
        "            if (!bad)",
        '                printf("mismatch: %s[%d] at step %d: got %.9g, want %.9g\\n", what, i, step, (double)got[i], (double)want[i]);',
        "            bad = 1;",
        "        }",
        "        if (!(error <= worst))",
        "            worst = error; /* NaN too */",
        "    }",
        "}",
        "",
        "int main(void)",
        "{",
        f"    static {n}_state st, before; /* static: a state of any size, not on the stack */",
        f"    float y[{N}_OUTPUT_SIZE];",
        "    int steps = 0;",
    ]
    if not tokens:
        lines.append(f"    float x[{N}_INPUT_SIZE];")
    lines += [
        "    setvbuf(stdout, NULL, _IOLBF, BUFSIZ); /* each line reaches a pipe before any crash */",
        f"    {n}_reset(&st);",
        "    for (int t = 0; t < STEPS; t++) {",
    ]
    if tokens:
        lines.append(f"        const int rc = {n}_step_token(&st, tokens[t], y);")
    else:
        lines += ["        make_input(t, x);", f"        const int rc = {n}_step(&st, x, y);"]
    lines += [
        f"        if (rc != {N}_OK) {{",
        '            printf("step %d returned %d\\n", t, rc);',
        "            bad = 1;",
        "            break;",
        "        }",
        "        steps++;",
        "        if (t % STRIDE == 0)",
        f'            compare(y, golden_y + (t / STRIDE) * {N}_OUTPUT_SIZE, y_scale, {N}_OUTPUT_SIZE, "y", t);',
        "    }",
        "    if (steps == STEPS)",
        f'        compare(st.s, golden_state, NULL, {N}_STATE_FLOATS, "state", STEPS);',
        "    memcpy(&before, &st, sizeof st);",
    ]
    if tokens:
        lines += [
            f"    if ({n}_step_token(&st, -1, y) != {N}_ERR_TOKEN || {n}_step_token(&st, {N}_VOCAB_SIZE, y) != {N}_ERR_TOKEN) {{",
            '        printf("a token out of range did not return the token error\\n");',
            "        bad = 1;",
            "    }",
            "    {",
            "        float x[1] = {0.0f};",
            f"        if ({n}_step(&st, x, y) != {N}_ERR_KIND) {{",
            f'            printf("{n}_step on a token model did not return the kind error\\n");',
            "            bad = 1;",
            "        }",
            "    }",
        ]
    else:
        lines += [
            "    make_input(0, x);",
            f"    x[{N}_INPUT_SIZE - 1] = NAN;",
            f"    if ({n}_step(&st, x, y) != {N}_ERR_NONFINITE) {{",
            '        printf("a NaN input did not return the non-finite error\\n");',
            "        bad = 1;",
            "    }",
            "    x[0] = HUGE_VALF;",
            f"    if ({n}_step(&st, x, y) != {N}_ERR_NONFINITE) {{",
            '        printf("an infinite input did not return the non-finite error\\n");',
            "        bad = 1;",
            "    }",
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
        '    printf("max_abs_error=%g steps=%d\\n", worst, steps);',
        '    printf("%s\\n", bad ? "FAIL" : "PASS");',
        "    return bad ? 1 : 0;",
        "}",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SelfTestResult:
    passed: bool
    max_abs_error: float
    steps: int
    output: str


def parse_output(output: str) -> SelfTestResult:
    """Read what NAME_test printed (the protocol in the module docstring)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    found = re.search(r"max_abs_error=(\S+) steps=(\d+)", output)
    error = float(found.group(1)) if found else math.inf
    steps = int(found.group(2)) if found else 0
    passed = bool(lines) and lines[-1] == "PASS" and found is not None
    return SelfTestResult(passed, error, steps, output)
