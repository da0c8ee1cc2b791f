"""``edgernn plan``: the largest models that fit a device's flash, RAM and step time, predicted by the
fitted cost model (edgernn/cost_model.py, docs/plan.md) before anything is trained or built.

For each cell, precision (float32, int8, integer) and layer count the widest hidden size (a multiple of 8)
whose predicted flash, RAM and time per step are within the budgets; with the predicted numbers and the
headroom left.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from edgernn.cost_model import (
    CELL_NAMES,
    ERRATUM_FLAG,
    CostModel,
    Prediction,
    Shape,
    load_cost_model,
)
from edgernn.runtime.errors import InputError

HIDDEN_STEP = 8
MAX_HIDDEN = 1024
MAX_LAYERS = 3
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(|b|k|kb|kib|m|mb|mib)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2}


def parse_size(text: str, what: str) -> int:
    """Bytes from ``256K``, ``1M``, ``65536`` (K and M are 1024 and 1024^2, as on a datasheet)."""
    match = _SIZE.match(str(text))
    if not match:
        raise InputError(f"{what} {text!r}: expected bytes such as 65536, 64K or 1M")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value < 1:
        raise InputError(f"{what} {text!r}: expected at least 1 byte")
    return int(value)


def positive(value: float | None, what: str) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise InputError(f"{what} {value!r}: expected a positive number")
    return value


@dataclass(frozen=True)
class Budget:
    """What a model may use on the device: bytes of flash and RAM, µs per step at ``clock_mhz``. None: no
    limit on that resource."""

    device: str
    clock_mhz: float
    flash_bytes: int | None = None
    ram_bytes: int | None = None
    step_us: float | None = None

    @classmethod
    def make(
        cls,
        device: str,
        *,
        clock_mhz: float | None = None,
        flash: str | int | None = None,
        ram: str | int | None = None,
        rate_hz: float | None = None,
        budget_us: float | None = None,
        cost_model: CostModel | None = None,
    ) -> Budget:
        """A checked budget (InputError naming what is wrong): a device the cost model knows, at least one
        limit, a step rate or a time per step (not both)."""
        from edgernn.export.c.devices import get_device

        profile = get_device(device)
        (cost_model or load_cost_model()).check_device(device)
        positive(clock_mhz, "clock (MHz)")
        positive(rate_hz, "step rate (Hz)")
        positive(budget_us, "time per step (µs)")
        if rate_hz is not None and budget_us is not None:
            raise InputError("a step rate and a time per step: expected one of them")
        if flash is None and ram is None and rate_hz is None and budget_us is None:
            raise InputError("no budget: expected at least one of flash, RAM, a step rate or a time per step")
        return cls(
            device=device,
            clock_mhz=float(clock_mhz or profile.clock_mhz),
            flash_bytes=None if flash is None else parse_size(flash, "flash"),
            ram_bytes=None if ram is None else parse_size(ram, "RAM"),
            step_us=budget_us if budget_us is not None else (1e6 / rate_hz if rate_hz else None),
        )

    def fits(self, prediction: Prediction) -> bool:
        return all(headroom >= 0 for headroom in self.headroom(prediction).values())

    def headroom(self, prediction: Prediction) -> dict[str, float]:
        """The fraction of each limited resource left (negative: over budget)."""
        used = {
            "flash": (prediction.flash_bytes, self.flash_bytes),
            "ram": (prediction.ram_bytes, self.ram_bytes),
            "time": (prediction.us_per_step(self.clock_mhz), self.step_us),
        }
        return {name: 1.0 - value / limit for name, (value, limit) in used.items() if limit is not None}

    def to_dict(self) -> dict:
        return {
            "device": self.device,
            "clock_mhz": self.clock_mhz,
            "flash_bytes": self.flash_bytes,
            "ram_bytes": self.ram_bytes,
            "step_us": self.step_us,
        }


@dataclass(frozen=True)
class Io:
    """The model's ends: features per step or a vocabulary (with the embedding's width), and outputs."""

    input_kind: str
    input_size: int
    output_size: int
    embedding_size: int = 32

    def shape(self, cell: str, num_layers: int, hidden_size: int) -> Shape:
        return Shape(
            cell,
            num_layers,
            hidden_size,
            self.input_size,
            self.output_size,
            self.input_kind,
            self.embedding_size,
        )


@dataclass
class Plan:
    budget: Budget
    io: Io
    rows: list[tuple[Prediction, dict[str, float]]] = field(default_factory=list)
    none_fit: list[tuple[str, str, int]] = field(default_factory=list)
    fit_errors: dict[str, float] = field(default_factory=dict)  # the fit's largest relative error

    def to_dict(self) -> dict:
        return {
            "budget": self.budget.to_dict(),
            "fits": [
                {**p.to_dict(self.budget.clock_mhz), "headroom": {k: round(v, 4) for k, v in h.items()}}
                for p, h in self.rows
            ],
            "none_fit": [{"cell": c, "precision": p, "num_layers": n} for c, p, n in self.none_fit],
            "cost_model_max_relative_error": self.fit_errors,
            "cost_model": "edgernn/cost_model.py, fitted by benchmarks/fit_cost_model.py (docs/plan.md)",
        }


def largest(
    budget: Budget, io: Io, cell: str, precision: str, num_layers: int, model: CostModel
) -> Prediction | None:
    """The widest hidden size (a multiple of 8, at most MAX_HIDDEN) that fits; None if 8 does not.
    Every cost grows with the width, so the first that does not fit ends the search."""
    best = None
    for hidden in range(HIDDEN_STEP, MAX_HIDDEN + 1, HIDDEN_STEP):
        prediction = model.predict(budget.device, precision, io.shape(cell, num_layers, hidden))
        if not budget.fits(prediction):
            break
        best = prediction
    return best


def make_plan(
    budget: Budget,
    io: Io,
    *,
    cells: tuple[str, ...] = CELL_NAMES,
    precisions: tuple[str, ...] | None = None,
    max_layers: int = MAX_LAYERS,
    cost_model: CostModel | None = None,
) -> Plan:
    """Per cell, precision (default: every one fitted for the device) and layer count (1..max_layers), the
    largest model that fits ``budget``."""
    model = cost_model or load_cost_model()
    precisions = precisions or model.precisions(budget.device)
    plan = Plan(budget, io, fit_errors=model.max_errors(budget.device, precisions))
    for cell in cells:
        for precision in precisions:
            for layers in range(1, max_layers + 1):
                found = largest(budget, io, cell, precision, layers, model)
                if found is None:
                    plan.none_fit.append((cell, precision, layers))
                else:
                    plan.rows.append((found, budget.headroom(found)))
    return plan


def io_from_data(data: str, task: str | None = None, embedding_size: int = 32) -> Io:
    """The model's ends as ``edgernn train`` would read them from ``data`` (its task inferred if None)."""
    from edgernn.tasks import infer_task, load_task

    if task is None:
        task, _ = infer_task(data)
    fields = load_task(task, data).model_fields
    return Io(fields["input_kind"], int(fields["input_size"]), int(fields["output_size"]), embedding_size)


def _limit(value: float | None, unit: str) -> str:
    return "no limit" if value is None else f"{value:,.0f} {unit}"


_NAMES = {"instructions": "instructions", "cycles": "cycles", "flash_bytes": "flash", "ram_bytes": "RAM"}


def _soft_float(device: str) -> bool:
    from edgernn.export.c.devices import get_device

    return get_device(device).fpu.startswith("none")


def to_text(plan: Plan) -> str:
    b, io = plan.budget, plan.io
    ends = (
        f"{io.input_size} features"
        if io.input_kind == "features"
        else f"{io.input_size} tokens (embedding {io.embedding_size})"
    )
    out = [
        f"{b.device} at {b.clock_mhz:g} MHz: flash {_limit(b.flash_bytes, 'B')}, RAM {_limit(b.ram_bytes, 'B')}, "
        f"step {_limit(b.step_us, 'us')}; {ends} in, {io.output_size} out",
        f"  {'cell':<8} {'precision':<9} {'layers x hidden':>15} {'MACs':>9} {'flash B':>9} {'RAM B':>8} "
        f"{'instr/step':>11} {'cycles':>11} {'us/step':>9}  headroom",
    ]
    for p, headroom in plan.rows:
        left = ", ".join(f"{name} {100 * value:.0f}%" for name, value in headroom.items())
        out.append(
            f"  {p.shape.cell:<8} {p.precision:<9} {f'{p.shape.num_layers}x{p.shape.hidden_size}':>15} {p.macs:>9,} "
            f"{p.flash_bytes:>9,.0f} {p.ram_bytes:>8,.0f} {p.instructions:>11,.0f} {p.cycles:>11,.0f} "
            f"{p.us_per_step(b.clock_mhz):>9,.1f}  {left}"
        )
    for cell, precision, layers in plan.none_fit:
        out.append(
            f"  {cell:<8} {precision:<9} {layers} layer(s): none fits (not even a hidden size of {HIDDEN_STEP})"
        )
    worst = plan.fit_errors
    if worst and max(worst.values()) > 0.10:
        out.append(
            f"  on {b.device} the cost model's largest error over its measured shapes is "
            + ", ".join(f"{_NAMES[name]} {100 * value:.0f}%" for name, value in worst.items() if value > 0.10)
            + ": leave that much headroom"
        )
    if b.device in ERRATUM_FLAG:
        out.append(
            f"  flash on {b.device}: the linker's workaround for the Cortex-A53's erratum 843419 may add a 4 KB "
            "page of stubs to a program (where its code falls, not the model's shape): not in the prediction"
        )
    if "integer" in {p.precision for p, _ in plan.rows} and _soft_float(b.device):
        out.append(
            f"  {b.device} has no FPU: integer steps with no floating point at all (deploy --target c "
            "--precision integer --data DATA); float32 and int8 pay for software floating point"
        )
    out.append(
        "  predicted by the cost model fitted to bench --device (docs/plan.md); RAM: state, scratch and the "
        "step's stack; flash: code and constants as linked; cycles: an estimate at zero wait states"
    )
    return "\n".join(out) + "\n"
