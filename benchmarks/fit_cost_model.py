"""Fit the cost model ``edgernn plan`` and ``edgernn search`` predict with (edgernn/cost_model.py).

Two sources, both measured here:

1. The C generator's own accounting, on the host: for a grid of shapes (cell x layers x hidden x features
   or vocabulary x outputs), the bytes of weights and constants it emits and the scratch its arena places,
   at each precision. Fitted per precision (constants) and per precision and cell (scratch).
2. ``bench --device`` (edgernn.export.c.devices.bench.bench_precision) on each device, for a smaller grid:
   exact instructions per step, estimated cycles, linked flash, RAM and the painted stack. Fitted per device
   and precision: instructions and cycles over MACs, the MACs the compiler leaves to scalar code (each
   rule of ``TAIL_RULES`` fitted, the one with the smallest largest error kept), activations, hidden
   units, layers, input and output elements, token inputs; the code the compiler adds (linked flash less
   the generator's constants) per cell and layer, and where the int8 C compiles its DSP loop
   (Cortex-M4/M7/M33) per SMLAD, scalar multiply-accumulate and store that loop writes out
   (``cost_model.dsp_code``); the stack frames a step adds (RAM less the state and the generator's
   scratch) per cell.

Every fit is least squares on relative error with no negative coefficient (Lawson and Hanson's
non-negative least squares); the code and the stack relative to the whole flash and RAM they are part
of. On aarch64 the flash is measured without the 4 KB the linker's Cortex-A53 erratum workaround adds to
some programs (``cost_model.erratum_bytes``). The measurements and each fit's residuals are kept in the
JSON, so ``--refit`` refits without measuring and ``--table`` prints docs/plan.md's error table.

The device grid is deployed once and measured on the devices ``--jobs`` at a time, while the generator
is measured on the host.

    .venv/bin/python benchmarks/fit_cost_model.py --devices all     # every device (half an hour)
    .venv/bin/python benchmarks/fit_cost_model.py --devices cortex-m4,cortex-m0plus
    .venv/bin/python benchmarks/fit_cost_model.py --refit
    .venv/bin/python benchmarks/fit_cost_model.py --table
"""

from __future__ import annotations

import argparse
import hashlib
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
    DSP_CODE_FEATURES,
    PRECISIONS,
    SCRATCH_FEATURES,
    SPEED_FEATURES,
    STACK_FEATURES,
    TAIL_RULES,
    CostModel,
    Shape,
    counts,
    erratum_bytes,
    export_shape,
    linear,
)
from edgernn.runtime.errors import EdgeRNNError
from edgernn.runtime.files import atomic_write_text

OUT = Path(__file__).resolve().parents[1] / "export" / "c" / "devices" / "cost_model.json"

# The host grid: cheap (no device), so wide.
HOST_GRID = [
    Shape(cell, layers, hidden, inputs, outputs, kind, 12)
    for cell, layers, hidden, kind, inputs, outputs in itertools.product(
        CELL_NAMES, (1, 2, 3), (8, 21, 48), ("features", "tokens"), (5, 16), (3, 10)
    )
]
# The device grid: every cell at 1 and 2 layers of two widths, token inputs, a wide input and output, and
# inputs that are no multiple of 4 or 8 (the compilers' vector and unroll widths: a product's tail).
DEVICE_GRID = [
    *(Shape(cell, layers, hidden, 8, 4) for cell in CELL_NAMES for layers in (1, 2) for hidden in (16, 40)),
    Shape("gru", 1, 24, 30, 6, "tokens", 12),
    Shape("lstm", 2, 24, 30, 6, "tokens", 12),
    Shape("rnn_tanh", 1, 64, 24, 10),
    Shape("gru", 1, 32, 13, 3),
    Shape("lstm", 1, 24, 5, 2),
    Shape("rnn_tanh", 2, 32, 50, 7, "tokens", 20),
]
BENCH_STEPS = 4


def generator_accounting(model: Path, precision: str) -> dict:
    """What the generator says it emits: constants (flash less code), scratch, RAM (state + scratch)."""
    if precision == "integer":  # calibrated on the self-test's inputs, as deploy without --data does
        from edgernn.export.c.integer import integer_sources
        from edgernn.export.c.integer_writer import integer_model_for

        integer, info, report, _ = integer_model_for(model)
        sources = integer_sources(integer, info, "model", report.summary())
        state_values = sources.state_values
    else:
        from edgernn.export.c.generate import generate_sources

        sources = generate_sources(model, precision=precision)
        state_values = sources.state_floats
    return {
        "constants_bytes": sources.flash_bytes,
        "scratch_bytes": sources.scratch_bytes,
        "generator_ram_bytes": sources.ram_bytes,
        "state_floats": state_values,
    }


def measure_host(work: Path, precisions: tuple[str, ...] = PRECISIONS) -> list[dict]:
    rows = []
    for index, shape in enumerate(HOST_GRID):
        model = export_shape(shape, work / "host.onnx")
        for precision in precisions:
            rows.append(
                {"shape": shape.to_dict(), "precision": precision, **generator_accounting(model, precision)}
            )
        print(f"  generator {index + 1}/{len(HOST_GRID)} {shape.label()}", file=sys.stderr, flush=True)
    return rows


def deploy_grid(work: Path, precisions: tuple[str, ...] = PRECISIONS) -> list[dict]:
    """Each shape of DEVICE_GRID exported, deployed for C at every precision (verified on the host, as
    ``bench --device`` deploys) and its generator accounting taken, once for every device: one entry per
    shape, its precisions that deployed and the refusals of those that did not."""
    from edgernn.export.c.devices.bench import graph_macs
    from edgernn.export.deploy import deploy

    grid = []
    for index, shape in enumerate(DEVICE_GRID):
        folder = work / f"shape-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        model = export_shape(shape, folder / "model.onnx")
        macs = graph_macs(model)
        if macs != counts(shape)["macs"]:
            raise SystemExit(
                f"{shape.label()}: the graph has {macs} MACs, the cost model counts {counts(shape)['macs']}"
            )
        entry = {"shape": shape, "folder": folder, "model": model, "accounting": {}, "refused": {}}
        for precision in precisions:
            try:
                deploy(model, "c", folder / f"c-{precision}", precision=precision)
                source = (folder / f"c-{precision}" / "model.c").read_bytes()
                entry["accounting"][precision] = {
                    **generator_accounting(model, precision),
                    "source_sha256": hashlib.sha256(source).hexdigest(),
                }
            except EdgeRNNError as exc:  # refused or failed: every device leaves it out, and says so
                entry["refused"][precision] = str(exc)[:300]
        print(f"  deployed {index + 1}/{len(DEVICE_GRID)} {shape.label()}", file=sys.stderr, flush=True)
        grid.append(entry)
    return grid


def measure_device(
    device: str, grid: list[dict], failed: list[dict], precisions: tuple[str, ...]
) -> list[dict]:
    """``bench --device`` of every deployed shape and precision of ``grid`` on ``device``."""
    from edgernn.export.c.devices import get_device
    from edgernn.export.c.devices.bench import bench_precision

    profile = get_device(device)
    profile.require_tools()
    rows = []
    for index, entry in enumerate(grid):
        shape = entry["shape"]
        for precision in precisions:
            if precision in entry["refused"]:
                failed.append(
                    {"shape": shape.to_dict(), "precision": precision, "error": entry["refused"][precision]}
                )
                continue
            started = time.monotonic()
            try:
                bench = bench_precision(
                    entry["model"], profile, precision, clock_mhz=profile.clock_mhz, steps=BENCH_STEPS,
                    work=entry["folder"], self_test=False,
                )  # fmt: skip
            except (RuntimeError, EdgeRNNError) as exc:  # the measurement failed: left out, and said
                failed.append({"shape": shape.to_dict(), "precision": precision, "error": str(exc)[:300]})
                print(f"  {device} {shape.label()} {precision}: FAILED {str(exc)[:200]}", file=sys.stderr)
                continue
            erratum = erratum_bytes(
                profile, entry["folder"] / f"{device}-{precision}", entry["folder"] / f"c-{precision}"
            )
            rows.append({
                "shape": shape.to_dict(),
                "precision": precision,
                "instructions": bench.instructions_median,
                "cycles": bench.cycles,
                "flash_bytes": bench.flash_bytes - erratum,
                "erratum_bytes": erratum,
                "ram_bytes": bench.ram_bytes + bench.stack_bytes,
                **entry["accounting"][precision],
            })  # fmt: skip
            print(
                f"  {device} {index + 1}/{len(DEVICE_GRID)} {shape.label()} {precision}: "
                f"{bench.instructions_median:,.0f} instructions, {time.monotonic() - started:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    return rows


def measure(
    devices: list[str],
    work: Path,
    measured: dict,
    jobs: int,
    precisions: tuple[str, ...] = PRECISIONS,
    host: tuple[str, ...] = PRECISIONS,
) -> None:
    """The device grid deployed once, then benched on ``devices`` (``jobs`` at a time: the work is the
    compilers' and emulators', in their own processes) while the host grid is measured here. Only
    ``precisions`` are measured again on the devices and ``host`` on the host; the stored rows of the
    others are kept (valid while the C those precisions generate is the same)."""
    from concurrent.futures import ThreadPoolExecutor

    from edgernn.export.c.devices import get_device

    for device in devices:
        get_device(device).require_tools()
    grid = deploy_grid(work, precisions)
    failed = measured.setdefault("failed", {})
    fresh = {device: [] for device in devices}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {
            device: pool.submit(measure_device, device, grid, fresh[device], precisions) for device in devices
        }
        # Always measured again: the generator's constants move with the C it writes (a device's code is
        # fitted as its linked flash less them, so the two must come from the same generator).
        if host:
            measured["generator"] = _kept(measured.get("generator"), host) + measure_host(work, host)
        for device, future in futures.items():
            measured[device] = _kept(measured.get(device), precisions) + future.result()
            failed[device] = _kept(failed.get(device), precisions) + fresh[device]


def _kept(rows: list[dict] | None, precisions: tuple[str, ...]) -> list[dict]:
    return [row for row in rows or () if row["precision"] not in precisions]


def shape_of(row: dict) -> Shape:
    fields = dict(row["shape"])
    fields["embedding_size"] = fields["embedding_size"] or 32
    return Shape(**fields)


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x >= 0 minimising |a x - b| (Lawson and Hanson's active set method), the columns scaled to one."""
    norms = np.linalg.norm(a, axis=0)
    norms[norms == 0] = 1.0
    a = a / norms
    n = a.shape[1]
    free, x = np.zeros(n, bool), np.zeros(n)
    tolerance = 1e-10 * max(1.0, float(np.abs(a).max()))
    for _ in range(3 * n):
        gradient = a.T @ (b - a @ x)
        if free.all() or gradient[~free].max() <= tolerance:
            break
        free[int(np.argmax(np.where(free, -np.inf, gradient)))] = True
        while True:
            z = np.zeros(n)
            z[free] = np.linalg.lstsq(a[:, free], b, rcond=None)[0]
            if z[free].min() > 0:
                break
            blocking = free & (z <= 0)
            step = np.min(x[blocking] / (x[blocking] - z[blocking]))
            x = x + step * (z - x)
            free &= x > tolerance
        x = z
    return x / norms


def fit(
    rows: list[dict],
    names: tuple[str, ...],
    target,
    tail_rule: str = "none",
    scale=None,
    signed: bool = False,
) -> dict:
    """Coefficients over ``names`` minimising the relative error of ``target(row)`` (relative to
    ``scale(row)`` where given: a part of a whole, such as the code in the flash), none negative, and the
    fit's relative residuals. ``signed``: coefficients may be negative (the code the compiler adds, less
    what the linker drops of the generator's constants: the metadata and helpers a step never calls)."""
    features = np.array([[counts(shape_of(r), tail_rule)[n] for n in names] for r in rows])
    y = np.array([float(target(r)) for r in rows])
    base = np.array([float(scale(r)) for r in rows]) if scale else np.abs(y)
    weight = 1.0 / np.maximum(base, 1.0)
    a, b = features * weight[:, None], y * weight
    used = [i for i in range(len(names)) if features[:, i].any()]
    solution = np.zeros(len(names))
    if signed:
        solution[used] = np.linalg.lstsq(a[:, used], b, rcond=None)[0]
    else:
        solution = nnls(a, b)
    coefficients = {names[i]: round(float(v), 6) for i, v in enumerate(solution) if v != 0}
    predicted = np.array([linear(coefficients, counts(shape_of(r), tail_rule)) for r in rows])
    relative = (predicted - y) * weight
    return {"coefficients": coefficients, "max_relative_error": round(float(np.abs(relative).max()), 4),
            "median_relative_error": round(float(np.median(np.abs(relative))), 4), "points": len(rows)}  # fmt: skip


def fit_generator(rows: list[dict]) -> dict:
    fitted = {}
    for precision in PRECISIONS:
        mine = [r for r in rows if r["precision"] == precision]
        if not mine:
            continue
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


TAIL_MARGIN = 0.005  # a tail rule is kept only where it lowers the largest error by more than this


def fit_speed(rows: list[dict]) -> tuple[str, dict]:
    """Instructions over SPEED_FEATURES under each tail rule: (the rule, its fit). "none" unless another
    lowers the largest relative error by more than TAIL_MARGIN; ties go to the first rule."""
    fits = {rule: fit(rows, SPEED_FEATURES, lambda r: r["instructions"], rule) for rule in TAIL_RULES}
    best = min(TAIL_RULES, key=lambda rule: fits[rule]["max_relative_error"])
    if fits["none"]["max_relative_error"] - fits[best]["max_relative_error"] <= TAIL_MARGIN:
        best = "none"
    return best, fits[best]


def dsp_loop(device: str) -> bool:
    """Whether the int8 C compiles its DSP loop on ``device`` (SMLAD; Helium, where present, goes first)."""
    from edgernn.export.c.devices import get_device

    simd = get_device(device).simd
    return "DSP" in simd and "Helium" not in simd


def fit_device(device: str, rows: list[dict], generator: dict) -> dict:
    """Per precision: instructions, cycles, code and stack, each over its features (module docstring)."""
    fitted = {}
    for precision in PRECISIONS:
        mine = [r for r in rows if r["precision"] == precision]
        if not mine:
            continue
        rule, instructions = fit_speed(mine)
        parts = {
            "instructions": instructions,
            "cycles": fit(mine, SPEED_FEATURES, lambda r: r["cycles"], rule),
            "code": fit(
                mine,
                CODE_FEATURES + (DSP_CODE_FEATURES if precision == "int8" and dsp_loop(device) else ()),
                lambda r: r["flash_bytes"] - r["constants_bytes"],
                scale=lambda r: r["flash_bytes"],
                signed=True,
            ),
            "stack": fit(
                mine,
                STACK_FEATURES,
                lambda r: r["ram_bytes"] - r["generator_ram_bytes"],
                scale=lambda r: r["ram_bytes"],
            ),
        }
        fitted[precision] = {"tail": rule, **{name: part["coefficients"] for name, part in parts.items()}}
        fitted[precision]["residuals"] = {name: _residual(part) for name, part in parts.items()}
    return fitted


def end_to_end_errors(model: CostModel, device: str, rows: list[dict]) -> dict:
    """The whole prediction (generator fits included) against every measurement: max relative error."""
    errors: dict = {}
    for precision in [p for p in PRECISIONS if p in model.devices[device]]:
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
        "schema": 2,
        "method": "benchmarks/fit_cost_model.py: least squares on relative error, coefficients >= 0 (docs/plan.md)",
        "bench_steps": BENCH_STEPS,
        "generator": generator,
        "devices": {device: fit_device(device, rows, generator) for device, rows in device_rows.items()},
        "measurements": {"generator": host_rows, **device_rows},
    }
    model = CostModel(document)
    for device, rows in device_rows.items():
        document["devices"][device]["end_to_end_max_relative_error"] = end_to_end_errors(model, device, rows)
    return document


def table(document: dict) -> str:
    """docs/plan.md's table: the largest relative error of each prediction over every measured shape."""
    lines = [
        "| device | precision | shapes | tail | instructions | cycles | flash | RAM |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for device, fitted in document["devices"].items():
        for precision in [p for p in PRECISIONS if p in fitted]:
            errors = fitted["end_to_end_max_relative_error"][precision]
            points = fitted[precision]["residuals"]["instructions"]["points"]
            cells = " | ".join(
                f"{100 * errors[k]:.1f}%" for k in ("instructions", "cycles", "flash_bytes", "ram_bytes")
            )
            tail = fitted[precision].get("tail", "none")
            lines.append(f"| {device} | {precision} | {points} | {tail} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--devices", default="cortex-m4,cortex-m0plus", help="comma-separated devices to measure, or all"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="devices measured at once (each runs its compilers and emulator)"
    )
    parser.add_argument(
        "--precisions",
        default=",".join(PRECISIONS),
        help="precisions to measure again (the stored measurements of the others are kept)",
    )
    parser.add_argument(
        "--host-precisions",
        help="precisions whose generator accounting is measured again (default: those of --precisions)",
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
    if not args.refit:
        import torch

        from edgernn.export.c.devices import DEVICE_NAMES

        torch.set_num_threads(1)
        devices = list(DEVICE_NAMES) if args.devices == "all" else [d for d in args.devices.split(",") if d]
        with tempfile.TemporaryDirectory(prefix="edgernn-cost-") as scratch:
            precisions = tuple(p for p in args.precisions.split(",") if p)
            host = tuple(p for p in (args.host_precisions or args.precisions).split(",") if p)
            unknown = [p for p in precisions + host if p not in PRECISIONS]
            if unknown:
                raise SystemExit(f"{','.join(unknown)}: expected precisions among {', '.join(PRECISIONS)}")
            measure(devices, Path(scratch), measured, args.jobs, precisions, host)
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
