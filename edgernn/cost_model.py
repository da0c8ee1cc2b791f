"""What a model of a given shape costs on a device, predicted without building it.

The predictions come from ``cost_model.json`` (package data beside the device profiles), which
``benchmarks/fit_cost_model.py`` fits to measurements of ``edgernn bench --device`` and to the C
generator's own accounting (docs/plan.md). Each quantity is a linear function of counts read off the
shape, so every coefficient has a meaning:

- instructions and cycles per step: per MAC, per MAC of a product's input the device's compiler does not
  vectorise or unroll (its "tail": ``tail_macs``, by the rule fitted per device and precision, see
  ``TAIL_RULES``) and per row of a product that leaves a tail, per output row of a product (int8 scales
  each in float), per activation (one sigmoid or tanh of one element), per hidden unit (the element-wise
  updates), per layer, per input and output element, per token input (the embedding lookup), plus a
  constant;
- flash: the generator's weights and constants (bytes per weight, per gate row, per embedding element and
  row, per cell) plus the code the device's compiler makes of it (per cell, per layer of each cell, and
  the embedding lookup);
- RAM: the state (exact: 4 bytes a value, 2 in ``integer``) plus the step's scratch (the generator's
  arena, per aligned buffer) plus the stack frames a step adds on the device.

No torch, no onnx: ``edgernn plan`` runs on any machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from edgernn.runtime.errors import InputError

GATES = {"rnn_tanh": 1, "gru": 3, "lstm": 4}
ACTIVATIONS_PER_UNIT = {"rnn_tanh": 1, "gru": 3, "lstm": 5}  # tanh; 2 sigmoid + tanh; 3 sigmoid + 2 tanh
CELL_NAMES = tuple(GATES)
PRECISIONS = ("float32", "int8", "integer")
STATE_BYTES = {"float32": 4, "int8": 4, "integer": 2}  # per state value (integer: int16)
ALIGN_FLOATS = 8  # the generator's arena aligns every scratch buffer to 8 floats

# How the device's compiler handles a product's inner loop over its n inputs, as the MACs it leaves to scalar
# code per row: "rem8" vectorises or unrolls by 8 and finishes the n % 8 left one by one (an explicit
# remainder loop); "whole8" vectorises only a loop whose n is a multiple of 8 (gcc's cost model at -O2
# adds no scalar epilogue: any other n stays scalar, all of it); "none": the cost of a MAC does not depend
# on n. The fit picks one per device and precision (benchmarks/fit_cost_model.py).
TAIL_RULES = ("none", *(f"{kind}{width}" for kind in ("rem", "whole") for width in (2, 4, 8, 16)))

# The features of each fitted quantity, in the order of its coefficients in cost_model.json.
SPEED_FEATURES = (
    "macs", "tail_macs", "tail_rows", "rows", "activations", "units", "layers", "io", "tokens", "constant",
)  # fmt: skip
CONSTANTS_FEATURES = ("weights", "gate_rows", "embedding", "vocab", "layers", "rnn_tanh", "gru", "lstm")
CODE_FEATURES = ("rnn_tanh", "gru", "lstm", "layers_rnn_tanh", "layers_gru", "layers_lstm", "tokens")
# The int8 DSP loop's code (Cortex-M4/M7/M33: export/c/arm_dsp.py), written out per product: its SMLADs,
# the scalar multiply-accumulates of the inputs past its last word pair, and the rows each pass stores.
DSP_CODE_FEATURES = ("dsp_smlads", "dsp_scalar", "dsp_stores")
SCRATCH_FEATURES = (
    "gates_a",
    "hidden_a",
    "deep_gates_a",
    "deep_hidden_a",
    "deeper_gates_a",
    "deeper_hidden_a",
    "input_a",
    "output_a",
    "widest",
    "tokens",
    "tokens_deep_hidden_a",
    "constant",
)
STACK_FEATURES = ("rnn_tanh", "gru", "lstm", "widest_input")


@dataclass(frozen=True)
class Shape:
    """A model's shape as ``edgernn train`` builds it (``ModelConfig``'s names). ``input_size``: features
    per step, or the vocabulary for token inputs (then ``embedding_size`` is the embedding's width)."""

    cell: str
    num_layers: int
    hidden_size: int
    input_size: int
    output_size: int
    input_kind: str = "features"
    embedding_size: int = 32

    def __post_init__(self) -> None:
        if self.cell not in GATES:
            raise InputError(f"cell {self.cell!r}: expected one of {', '.join(CELL_NAMES)}")
        if self.input_kind not in ("features", "tokens"):
            raise InputError(f"input kind {self.input_kind!r}: expected features or tokens")
        for name in ("num_layers", "hidden_size", "input_size", "output_size", "embedding_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} {value!r}: expected a positive integer")

    @property
    def tokens(self) -> bool:
        return self.input_kind == "tokens"

    @property
    def first_width(self) -> int:
        """The width of the first layer's input: the features, or the embedding."""
        return self.embedding_size if self.tokens else self.input_size

    @property
    def state_floats(self) -> int:
        """The state's values (h, and c for an LSTM, of every layer)."""
        return self.num_layers * self.hidden_size * (2 if self.cell == "lstm" else 1)

    def products(self) -> list[tuple[int, int]]:
        """(rows, inputs) of each matrix product of a step: each layer's input and recurrent matrices (every
        gate's rows together), then the head."""
        rows, hidden = GATES[self.cell] * self.hidden_size, self.hidden_size
        out = [(rows, self.first_width), (rows, hidden)]
        out += [(rows, hidden)] * (2 * (self.num_layers - 1))
        return [*out, (self.output_size, hidden)]

    def label(self) -> str:
        embedding = f", embedding {self.embedding_size}" if self.tokens else ""
        return f"{self.cell.upper()} {self.num_layers}x{self.hidden_size}{embedding}"

    def to_dict(self) -> dict:
        return {
            "cell": self.cell,
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "input_kind": self.input_kind,
            "input_size": self.input_size,
            "embedding_size": self.embedding_size if self.tokens else None,
            "output_size": self.output_size,
        }


def _aligned(floats: int) -> int:
    return -(-floats // ALIGN_FLOATS) * ALIGN_FLOATS


def tail(rule: str, inputs: int) -> int:
    """The MACs per row a product over ``inputs`` leaves to scalar code under ``rule`` (``TAIL_RULES``)."""
    if rule == "none":
        return 0
    kind = rule.rstrip("0123456789")
    width = int(rule[len(kind) :] or 0)
    if kind == "rem" and width > 0:
        return inputs % width
    if kind == "whole" and width > 0:
        return inputs if inputs % width else 0
    raise ValueError(f"tail rule {rule!r}: expected one of {', '.join(TAIL_RULES)}")


def dsp_code(inputs: int, rows: int) -> tuple[int, int, int]:
    """What export/c/arm_dsp.py's ``dsp_products`` writes out for a product of ``rows`` x ``inputs``:
    (SMLAD statements, scalar multiply-accumulate statements, output stores). Its passes: eight rows at a
    time (four where a row has fewer than 16 inputs) in a loop, then a pair, then an odd last row; each
    pass's inputs unrolled ``step`` at a time, then four at a time, then one by one."""
    group = 8 if inputs >= 16 else 4
    whole = rows // group * group
    passes = [(group // 2, group)] if whole else []
    if (rows - whole) // 2:
        passes.append((1, 2))
    if rows % 2:
        passes.append((1, 1))
    smlads = scalar = stores = 0
    for pairs, stored in passes:
        step = 32 if inputs >= 128 else 16 if inputs >= 16 else 8 if inputs >= 8 else 4
        if pairs > 2:
            step = 16 if inputs >= 96 else inputs // 4 * 4 if inputs <= 32 else 8
        main = inputs // step * step
        words = (step // 2 if main else 0) + (inputs - main) // 4 * 2
        smlads += 2 * pairs * words
        scalar += pairs * (inputs % 4)
        stores += stored
    return smlads, scalar, stores


def counts(shape: Shape, tail_rule: str = "none") -> dict[str, float]:
    """Every feature the cost model reads, counted off ``shape`` (``tail_macs`` under ``tail_rule``).

    macs: the step's multiply-accumulates (every layer's input and recurrent matrices and the head; the
    embedding lookup costs none); activations: sigmoid and tanh elements; units: hidden units over all
    layers; io: input plus output elements; weights: matrix elements (= macs); gate_rows: the rows of every
    gate matrix and of the head (one bias each and, in int8, a scale; in integer, a multiplier and a
    shift); embedding: the table's elements; vocab: its rows; tail_macs: the MACs the rule leaves to
    scalar code; tail_rows: the rows of the products that leave some (each row's scalar loop starts
    and ends); rows: the output rows of every product (each one scaled and biased once). The ``*_a``
    counts are buffer sizes in floats rounded up as the generator's arena places them (``deep_*``: per
    layer past the first, ``deeper_*``: past the second, where the arena keeps more buffers alive;
    tokens_deep_hidden_a: the deeper layers' hidden buffers of a token model); widest: the most rows of
    any product (the integer step's two scratch vectors); widest_input: the widest input of any product
    (the int8 step quantizes each product's input into a buffer on the stack)."""
    g, hidden, layers = GATES[shape.cell], shape.hidden_size, shape.num_layers
    width = shape.first_width
    macs = g * hidden * (width + hidden) + (layers - 1) * g * hidden * 2 * hidden + shape.output_size * hidden
    cell = {name: float(shape.cell == name) for name in CELL_NAMES}
    dsp = [
        sum(part) for part in zip(*(dsp_code(inputs, rows) for rows, inputs in shape.products()), strict=True)
    ]
    return {
        "macs": float(macs),
        "tail_macs": float(sum(rows * tail(tail_rule, inputs) for rows, inputs in shape.products())),
        "tail_rows": float(sum(rows for rows, inputs in shape.products() if tail(tail_rule, inputs))),
        "rows": float(sum(rows for rows, _ in shape.products())),
        "activations": float(layers * hidden * ACTIVATIONS_PER_UNIT[shape.cell]),
        "units": float(layers * hidden),
        "layers": float(layers),
        "io": float(width + shape.output_size),
        "constant": 1.0,
        "weights": float(macs),
        "gate_rows": float(layers * g * hidden + shape.output_size),
        "embedding": float(shape.input_size * shape.embedding_size if shape.tokens else 0),
        "vocab": float(shape.input_size if shape.tokens else 0),
        "gates_a": float(_aligned(g * hidden)),
        "hidden_a": float(_aligned(hidden)),
        "deep_gates_a": float((layers - 1) * _aligned(g * hidden)),
        "deep_hidden_a": float((layers - 1) * _aligned(hidden)),
        "deeper_gates_a": float(max(0, layers - 2) * _aligned(g * hidden)),
        "deeper_hidden_a": float(max(0, layers - 2) * _aligned(hidden)),
        "input_a": float(_aligned(width)),
        "output_a": float(_aligned(shape.output_size)),
        "widest": float(max(g * hidden, shape.output_size)),
        "widest_input": float(max(width, hidden)),
        "tokens": float(shape.tokens),
        "tokens_deep_hidden_a": float(shape.tokens) * (layers - 1) * _aligned(hidden),
        **{name: float(value) for name, value in zip(DSP_CODE_FEATURES, dsp, strict=True)},
        **cell,
        **{f"layers_{name}": value * layers for name, value in cell.items()},
    }


def linear(coefficients: dict[str, float], features: dict[str, float]) -> float:
    return sum(value * features[name] for name, value in coefficients.items())


@dataclass(frozen=True)
class Prediction:
    """One shape at one precision on one device: per step instructions and estimated cycles; flash (code
    and constants as linked); RAM (state, scratch and the stack frames of a step, all together)."""

    device: str
    precision: str
    shape: Shape
    macs: int
    instructions: float
    cycles: float
    flash_bytes: float
    ram_bytes: float
    state_bytes: int
    scratch_bytes: float

    def us_per_step(self, clock_mhz: float) -> float:
        return self.cycles / clock_mhz

    def to_dict(self, clock_mhz: float) -> dict:
        return {
            "device": self.device,
            "precision": self.precision,
            **self.shape.to_dict(),
            "macs": self.macs,
            "instructions": round(self.instructions),
            "cycles": round(self.cycles),
            "us_per_step": round(self.us_per_step(clock_mhz), 2),
            "flash_bytes": round(self.flash_bytes),
            "ram_bytes": round(self.ram_bytes),
            "state_bytes": self.state_bytes,
            "scratch_bytes": round(self.scratch_bytes),
        }


class CostModel:
    """The fitted coefficients (``cost_model.json``): ``predict`` for a device, a precision and a shape."""

    def __init__(self, document: dict) -> None:
        self.document = document
        self.devices: dict[str, dict] = document["devices"]
        self.generator: dict[str, dict] = document["generator"]

    def device_names(self) -> tuple[str, ...]:
        return tuple(self.devices)

    def check_device(self, device: str) -> dict:
        if device not in self.devices:
            fitted = ", ".join(self.devices) or "none"
            raise InputError(f"device {device!r}: the cost model is fitted for {fitted}")
        return self.devices[device]

    def precisions(self, device: str) -> tuple[str, ...]:
        """The precisions fitted for ``device``."""
        return tuple(p for p in PRECISIONS if p in self.check_device(device))

    def max_errors(self, device: str, precisions: tuple[str, ...] = PRECISIONS) -> dict[str, float]:
        """The largest relative error of each prediction over the device's measured shapes (the fit's)."""
        errors = self.check_device(device).get("end_to_end_max_relative_error", {})
        names = ("instructions", "cycles", "flash_bytes", "ram_bytes")
        return {n: max((errors[p][n] for p in precisions if p in errors), default=0.0) for n in names}

    def predict(self, device: str, precision: str, shape: Shape) -> Prediction:
        if precision not in PRECISIONS:
            raise InputError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        fitted = self.check_device(device).get(precision)
        if fitted is None:
            raise InputError(f"precision {precision!r}: the cost model has no fit for it on {device}")
        generator = self.generator[precision]
        features = counts(shape, fitted.get("tail", "none"))
        constants = linear(generator["constants"], features)
        scratch = 4 * linear(generator["scratch"][shape.cell], features)
        state = STATE_BYTES[precision] * shape.state_floats
        return Prediction(
            device=device,
            precision=precision,
            shape=shape,
            macs=int(features["macs"]),
            instructions=linear(fitted["instructions"], features),
            cycles=linear(fitted["cycles"], features),
            flash_bytes=constants + linear(fitted["code"], features),
            ram_bytes=state + scratch + linear(fitted["stack"], features),
            state_bytes=state,
            scratch_bytes=scratch,
        )


def export_shape(shape: Shape, path: Path, seed: int = 0) -> Path:
    """A model of ``shape`` with PyTorch's initialisation (``seed``), exported as one step (what the cost
    model is fitted on and checked against; needs the train extra)."""
    import torch

    from edgernn.export import export_model
    from edgernn.models import ModelConfig, RecurrentModel

    torch.manual_seed(seed)
    config = ModelConfig(
        cell=shape.cell,
        input_kind=shape.input_kind,
        input_size=shape.input_size,
        hidden_size=shape.hidden_size,
        num_layers=shape.num_layers,
        output_size=shape.output_size,
        output_kind="logits" if shape.tokens else "values",
        embedding_size=shape.embedding_size,
    )
    export_model(RecurrentModel(config).eval(), path, chunk_steps=None)
    return path


# Debian's aarch64 gcc links with ld's workaround for the Cortex-A53's erratum 843419 on: where an ADRP
# falls in the last 8 bytes of a 4 KB page the linker adds a page of stubs. Which builds get it depends on
# where every function falls, not on the model's shape: the cost model predicts flash without it.
ERRATUM_FLAG = {"aarch64": "-mno-fix-cortex-a53-843419"}


def erratum_bytes(device, out: Path, deployed: Path) -> int:
    """The bytes ld's erratum workaround added to ``bench --device``'s program that steps the model once
    (``out/with.elf``, built from ``out/step_once.c`` and ``deployed/model.c``): 0 on a device without
    one. Measured by linking the program again without the workaround."""
    flag = ERRATUM_FLAG.get(device.name)
    if flag is None:
        return 0
    import subprocess

    from edgernn.export.c.devices.bench import section_sizes
    from edgernn.export.c.devices.build import compile_flags

    plain = out / "with-no-erratum-fix.elf"
    command = [device.compiler, *compile_flags(device), f"-I{deployed}", str(out / "step_once.c")]
    command += [str(deployed / "model.c"), *device.cflags, "-lm", flag, "-o", str(plain)]
    subprocess.run(command, check=True, capture_output=True)
    linked = sum(section_sizes(device, out / "with.elf")[:2])
    return linked - sum(section_sizes(device, plain)[:2])


def cost_model_text() -> str:
    return resources.files("edgernn.export.c.devices").joinpath("cost_model.json").read_text()


@lru_cache(maxsize=1)
def load_cost_model() -> CostModel:
    """The cost model shipped with edgernn."""
    return CostModel(json.loads(cost_model_text()))
