"""What a model of a given shape costs on a device, predicted without building it.

The predictions come from ``cost_model.json`` (package data beside the device profiles), which
``benchmarks/fit_cost_model.py`` fits to measurements of ``edgernn bench --device`` and to the C
generator's own accounting (docs/plan.md). Each quantity is a linear function of counts read off the
shape, so every coefficient has a meaning:

- instructions and cycles per step: per MAC, per activation (one sigmoid or tanh of one element), per
  hidden unit (the element-wise updates), per layer, per input and output element, plus a constant;
- flash: the generator's weights and constants (bytes per weight, per gate row, per embedding element and
  row, per cell) plus the code the device's compiler makes of it (per cell, per layer of each cell, and
  the embedding lookup);
- RAM: the state (exact) plus the step's scratch (the generator's arena, per aligned buffer) plus the stack
  frames a step adds on the device.

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
PRECISIONS = ("float32", "int8")
ALIGN_FLOATS = 8  # the generator's arena aligns every scratch buffer to 8 floats

# The features of each fitted quantity, in the order of its coefficients in cost_model.json.
SPEED_FEATURES = ("macs", "activations", "units", "layers", "io", "constant")
CONSTANTS_FEATURES = ("weights", "gate_rows", "embedding", "vocab", "layers", "rnn_tanh", "gru", "lstm")
CODE_FEATURES = ("rnn_tanh", "gru", "lstm", "layers_rnn_tanh", "layers_gru", "layers_lstm", "tokens")
SCRATCH_FEATURES = (
    "gates_a",
    "hidden_a",
    "deep_gates_a",
    "deep_hidden_a",
    "input_a",
    "output_a",
    "tokens",
    "constant",
)
STACK_FEATURES = ("rnn_tanh", "gru", "lstm")


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
        return self.num_layers * self.hidden_size * (2 if self.cell == "lstm" else 1)

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


def counts(shape: Shape) -> dict[str, float]:
    """Every feature the cost model reads, counted off ``shape``.

    macs: the step's multiply-accumulates (every layer's input and recurrent matrices and the head; the
    embedding lookup costs none); activations: sigmoid and tanh elements; units: hidden units over all
    layers; io: input plus output elements; weights: matrix elements (= macs); gate_rows: the rows of every
    gate matrix and of the head (one bias and, in int8, one scale each); embedding: the table's elements;
    vocab: its rows. The ``*_a`` counts are buffer sizes in floats rounded up as the generator's arena
    places them."""
    g, hidden, layers = GATES[shape.cell], shape.hidden_size, shape.num_layers
    width = shape.first_width
    macs = g * hidden * (width + hidden) + (layers - 1) * g * hidden * 2 * hidden + shape.output_size * hidden
    cell = {name: float(shape.cell == name) for name in CELL_NAMES}
    return {
        "macs": float(macs),
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
        "input_a": float(_aligned(width)),
        "output_a": float(_aligned(shape.output_size)),
        "tokens": float(shape.tokens),
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

    def max_errors(self, device: str, precisions: tuple[str, ...] = PRECISIONS) -> dict[str, float]:
        """The largest relative error of each prediction over the device's measured shapes (the fit's)."""
        errors = self.check_device(device).get("end_to_end_max_relative_error", {})
        names = ("instructions", "cycles", "flash_bytes", "ram_bytes")
        return {n: max((errors[p][n] for p in precisions if p in errors), default=0.0) for n in names}

    def predict(self, device: str, precision: str, shape: Shape) -> Prediction:
        if precision not in PRECISIONS:
            raise InputError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        fitted = self.check_device(device)[precision]
        generator = self.generator[precision]
        features = counts(shape)
        constants = linear(generator["constants"], features)
        scratch = 4 * linear(generator["scratch"][shape.cell], features)
        state = 4 * shape.state_floats
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


def cost_model_text() -> str:
    return resources.files("edgernn.export.c.devices").joinpath("cost_model.json").read_text()


@lru_cache(maxsize=1)
def load_cost_model() -> CostModel:
    """The cost model shipped with edgernn."""
    return CostModel(json.loads(cost_model_text()))
