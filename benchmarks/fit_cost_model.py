"""Fit the cost model ``edgernn plan`` and ``edgernn search`` predict with (edgernn/cost_model.py).

Two sources, both measured here:

1. The C generator's own accounting, on the host: for a grid of shapes (cell x layers x hidden x features
   or vocabulary x outputs), the bytes of weights and constants it emits and the scratch its arena places,
   at each precision. Fitted per precision (constants) and per precision and cell (scratch).
2. ``bench --device`` (edgernn.export.c.devices.bench.bench_precision) on each device, for a smaller grid:
   exact instructions per step, estimated cycles, linked flash, RAM and the painted stack. Fitted per device
   and precision: instructions and cycles over MACs, activations, hidden units, layers, input and output
   elements; the code the compiler adds (linked flash less the generator's constants) per cell and layer;
   the stack frames a step adds (RAM less the state and the generator's scratch) per cell.

Every fit is least squares on relative error, with no negative coefficient (a negative cost is dropped and
the rest refitted). The measurements and each fit's residuals are kept in the JSON, so ``--refit`` refits
without measuring and ``--table`` prints docs/plan.md's error table.

    .venv/bin/python benchmarks/fit_cost_model.py --devices cortex-m4,cortex-m0plus
    .venv/bin/python benchmarks/fit_cost_model.py --table
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgernn.cost_model import (
    CELL_NAMES,
    CODE_FEATURES,
    CONSTANTS_FEATURES,
    PRECISIONS,
    SCRATCH_FEATURES,
    SPEED_FEATURES,
    STACK_FEATURES,
    CostModel,
    Shape,
    counts,
    export_shape,
    linear,
)
from edgernn.runtime.errors import ContractError
from edgernn.runtime.files import atomic_write_text

OUT = Path(__file__).resolve().parents[1] / "export" / "c" / "devices" / "cost_model.json"

# The host grid: cheap (no device), so wide.
HOST_GRID = [
    Shape(cell, layers, hidden, inputs, outputs, kind, 12)
    for cell, layers, hidden, kind, inputs, outputs in itertools.product(
        CELL_NAMES, (1, 3), (8, 21, 48), ("features", "tokens"), (5, 16), (3, 10)
    )
]
# The device grid: every cell at 1 and 2 layers of two widths, token inputs, a wide input and output.
DEVICE_GRID = [
    *(Shape(cell, layers, hidden, 8, 4) for cell in CELL_NAMES for layers in (1, 2) for hidden in (16, 40)),
    Shape("gru", 1, 24, 30, 6, "tokens", 12),
    Shape("lstm", 2, 24, 30, 6, "tokens", 12),
    Shape("rnn_tanh", 1, 64, 24, 10),
]
BENCH_STEPS = 4


def generator_accounting(model: Path, precision: str) -> dict:
    from edgernn.export.c.generate import generate_sources

    sources = generate_sources(model, precision=precision)
    return {
        "constants_bytes": sources.flash_bytes,
        "scratch_bytes": sources.scratch_bytes,
        "generator_ram_bytes": sources.ram_bytes,
        "state_floats": sources.state_floats,
    }


def measure_host(work: Path) -> list[dict]:
    rows = []
    for index, shape in enumerate(HOST_GRID):
        model = export_shape(shape, work / "host.onnx")
        for precision in PRECISIONS:
            rows.append(
                {"shape": shape.to_dict(), "precision": precision, **generator_accounting(model, precision)}
            )
        print(f"  generator {index + 1}/{len(HOST_GRID)} {shape.label()}", file=sys.stderr, flush=True)
    return rows


def measure_device(device: str, work: Path, failed: list[dict]) -> list[dict]:
    from edgernn.export.c.devices import get_device
    from edgernn.export.c.devices.bench import bench_precision, graph_macs

    profile = get_device(device)
    profile.require_tools()
    rows = []
    for index, shape in enumerate(DEVICE_GRID):
        folder = work / f"{device}-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        model = export_shape(shape, folder / "model.onnx")
        macs = graph_macs(model)
        if macs != counts(shape)["macs"]:
            raise SystemExit(
                f"{shape.label()}: the graph has {macs} MACs, the cost model counts {counts(shape)['macs']}"
            )
        for precision in PRECISIONS:
            started = time.monotonic()
            try:
                bench = bench_precision(
                    model, profile, precision, clock_mhz=profile.clock_mhz, steps=BENCH_STEPS, work=folder,
                    self_test=False,
                )  # fmt: skip
            except (RuntimeError, ContractError) as exc:  # the measurement failed: left out, and said
                failed.append({"shape": shape.to_dict(), "precision": precision, "error": str(exc)[:300]})
                print(f"  {device} {shape.label()} {precision}: FAILED {str(exc)[:200]}", file=sys.stderr)
                continue
            rows.append({
                "shape": shape.to_dict(),
                "precision": precision,
                "instructions": bench.instructions_median,
                "cycles": bench.cycles,
                "flash_bytes": bench.flash_bytes,
                "ram_bytes": bench.ram_bytes + bench.stack_bytes,
                **generator_accounting(model, precision),
            })  # fmt: skip
            print(
                f"  {device} {index + 1}/{len(DEVICE_GRID)} {shape.label()} {precision}: "
                f"{bench.instructions_median:,.0f} instructions, {time.monotonic() - started:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    return rows


def shape_of(row: dict) -> Shape:
    fields = dict(row["shape"])
    fields["embedding_size"] = fields["embedding_size"] or 32
    return Shape(**fields)


def fit(rows: list[dict], names: tuple[str, ...], target) -> dict:
    """Coefficients over ``names`` minimising the relative error of ``target(row)``, none negative (the
    most negative is dropped and the rest refitted), and the fit's relative residuals."""
    features = np.array([[counts(shape_of(r))[n] for n in names] for r in rows])
    y = np.array([float(target(r)) for r in rows])
    weight = 1.0 / np.maximum(np.abs(y), 1.0)
    kept = [i for i in range(len(names)) if features[:, i].any()]
    while True:
        solution = np.linalg.lstsq(features[:, kept] * weight[:, None], y * weight, rcond=None)[0]
        if solution.min() >= 0 or len(kept) == 1:
            break
        kept.pop(int(np.argmin(solution)))
    coefficients = {names[i]: round(float(v), 6) for i, v in zip(kept, solution, strict=True)}
    predicted = np.array([linear(coefficients, counts(shape_of(r))) for r in rows])
    relative = (predicted - y) / np.maximum(np.abs(y), 1.0)
    return {"coefficients": coefficients, "max_relative_error": round(float(np.abs(relative).max()), 4),
            "median_relative_error": round(float(np.median(np.abs(relative))), 4), "points": len(rows)}  # fmt: skip


def fit_generator(rows: list[dict]) -> dict:
    fitted = {}
    for precision in PRECISIONS:
        mine = [r for r in rows if r["precision"] == precision]
        constants = fit(mine, CONSTANTS_FEATURES, lambda r: r["constants_bytes"])
        scratch = {
            cell: fit(
                [r for r in mine if r["shape"]["cell"] == cell],
                SCRATCH_FEATURES,
                lambda r: r["scratch_bytes"] / 4,
            )
            for cell in CELL_NAMES
        }
        fitted[precision] = {
            "constants": constants["coefficients"],
            "scratch": {cell: s["coefficients"] for cell, s in scratch.items()},
            "residuals": {
                "constants": _residual(constants),
                **{f"scratch_{c}": _residual(s) for c, s in scratch.items()},
            },
        }
    return fitted


def _residual(result: dict) -> dict:
    return {k: result[k] for k in ("max_relative_error", "median_relative_error", "points")}


def fit_device(rows: list[dict], generator: dict) -> dict:
    """Per precision: instructions, cycles, code and stack, each over its features (module docstring)."""
    fitted = {}
    for precision in PRECISIONS:
        mine = [r for r in rows if r["precision"] == precision]
        parts = {
            "instructions": fit(mine, SPEED_FEATURES, lambda r: r["instructions"]),
            "cycles": fit(mine, SPEED_FEATURES, lambda r: r["cycles"]),
            "code": fit(mine, CODE_FEATURES, lambda r: r["flash_bytes"] - r["constants_bytes"]),
            "stack": fit(mine, STACK_FEATURES, lambda r: r["ram_bytes"] - r["generator_ram_bytes"]),
        }
        fitted[precision] = {name: part["coefficients"] for name, part in parts.items()}
        fitted[precision]["residuals"] = {name: _residual(part) for name, part in parts.items()}
    return fitted


def end_to_end_errors(model: CostModel, device: str, rows: list[dict]) -> dict:
    """The whole prediction (generator fits included) against every measurement: max relative error."""
    errors: dict = {}
    for precision in PRECISIONS:
        worst = {"instructions": 0.0, "cycles": 0.0, "flash_bytes": 0.0, "ram_bytes": 0.0}
        for row in (r for r in rows if r["precision"] == precision):
            predicted = model.predict(device, precision, shape_of(row))
            for key in worst:
                value = getattr(predicted, key)
                worst[key] = max(worst[key], abs(value - row[key]) / row[key])
        errors[precision] = {k: round(v, 4) for k, v in worst.items()}
    return errors


def build_document(host_rows: list[dict], device_rows: dict[str, list[dict]]) -> dict:
    generator = fit_generator(host_rows)
    document = {
        "schema": 1,
        "method": "benchmarks/fit_cost_model.py: least squares on relative error, coefficients >= 0 (docs/plan.md)",
        "bench_steps": BENCH_STEPS,
        "generator": generator,
        "devices": {device: fit_device(rows, generator) for device, rows in device_rows.items()},
        "measurements": {"generator": host_rows, **device_rows},
    }
    model = CostModel(document)
    for device, rows in device_rows.items():
        document["devices"][device]["end_to_end_max_relative_error"] = end_to_end_errors(model, device, rows)
    return document


def table(document: dict) -> str:
    """docs/plan.md's table: the largest relative error of each prediction over every measured shape."""
    lines = [
        "| device | precision | shapes | instructions | cycles | flash | RAM |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for device, fitted in document["devices"].items():
        for precision in PRECISIONS:
            errors = fitted["end_to_end_max_relative_error"][precision]
            points = fitted[precision]["residuals"]["instructions"]["points"]
            cells = " | ".join(
                f"{100 * errors[k]:.1f}%" for k in ("instructions", "cycles", "flash_bytes", "ram_bytes")
            )
            lines.append(f"| {device} | {precision} | {points} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--devices", default="cortex-m4,cortex-m0plus", help="comma-separated devices to measure"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--refit", action="store_true", help="refit the stored measurements, measure nothing")
    parser.add_argument("--table", action="store_true", help="print the error table of the stored fit")
    args = parser.parse_args()
    stored = json.loads(args.out.read_text()) if args.out.exists() else None
    if args.table:
        print(table(stored))
        return
    measured = dict(stored["measurements"]) if stored else {}
    with tempfile.TemporaryDirectory(prefix="edgernn-cost-") as scratch:
        work = Path(scratch)
        if not args.refit:
            import torch

            torch.set_num_threads(1)
            # Always measured again: the generator's constants move with the C it writes (a device's code is
            # fitted as its linked flash less them, so the two must come from the same generator).
            measured["generator"] = measure_host(work)
            for device in [d for d in args.devices.split(",") if d]:
                failed = measured.setdefault("failed", {}).setdefault(device, [])
                failed.clear()
                measured[device] = measure_device(device, work, failed)
                _write(args.out, measured)
        _write(args.out, measured)
    print(table(json.loads(args.out.read_text())))


def _write(path: Path, measured: dict) -> None:
    host = measured["generator"]
    devices = {k: v for k, v in measured.items() if k not in ("generator", "failed")}
    document = build_document(host, devices)
    document["measurements"]["failed"] = measured.get("failed", {})
    atomic_write_text(path, json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main()
