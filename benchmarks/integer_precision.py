"""Which C precision: float32, int8 and integer side by side (the tables of docs/c.md, "Which precision", and
of the README).

Cost: one step of the reference GRU 2x128 and LSTM 2x128 (32 features, PyTorch's initial weights: the counts
depend on the shapes) and of each bundled task's model on cortex-m0plus, cortex-m4 and rv32imc, measured by
the device bench (``export.c.devices.bench.bench_precision``: exact instructions between two markers, flash
linked, RAM). Soft-float rows count fewer steps (--soft-float-steps).

Quality: the task metric of each precision on the bundled tasks, each model trained here briefly
(``edgernn train ... --steps N``): the int8 and integer deploys' own gates measure it, float32 against
the quantized C, on the validation split of the file given with ``--data``.

    .venv/bin/python benchmarks/integer_precision.py --work build/integer-table --out integer_table.md

Trained models are kept in --work and reused; the deployments and builds are made again at every run
(``--json`` keeps the results; ``--tables-from FILE.json`` prints the tables again without measuring).
``--tasks keyword`` measures the named tasks' rows alone (names: the labels' first words; ``reference``
the reference GRU and LSTM).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from edgernn.benchmark import reference_models
from edgernn.export.c.devices import get_device
from edgernn.export.c.devices.bench import bench_precision
from edgernn.export.deploy import deploy
from edgernn.runtime.errors import EdgeRNNError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data"
EDGERNN = [sys.executable, "-m", "edgernn"]
DEVICES = ("cortex-m0plus", "cortex-m4", "rv32imc")
PRECISIONS = ("float32", "int8", "integer")
README_MODEL = "GRU 2x128, 32 features"
TASKS = {  # name: (training file, train options, the file the gates measure on)
    "charlm (tinyshakespeare, GRU 1x64)": (
        DATA / "tinyshakespeare.txt", ["--hidden-size", "64"], DATA / "tinyshakespeare.txt",
    ),
    "classify (Japanese vowels, GRU 1x64)": (
        DATA / "japanese_vowels_train.ts", [], DATA / "japanese_vowels_test.ts",
    ),
    "anomaly (InternalBleeding16, GRU 1x32)": (
        DATA / "ucr_internalbleeding16_train.csv", ["--task", "anomaly", "--hidden-size", "32"],
        DATA / "ucr_internalbleeding16_test.csv",
    ),
    "forecast (InternalBleeding16, LSTM 1x32)": (
        DATA / "ucr_internalbleeding16_train.csv",
        ["--task", "forecast", "--cell", "lstm", "--hidden-size", "32"],
        DATA / "ucr_internalbleeding16_test.csv",
    ),
    "keyword (spoken digits, GRU 1x32)": (
        DATA / "fsdd", ["--hidden-size", "32"], DATA / "fsdd" / "george.npz",
    ),
}  # fmt: skip


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def trained_tasks(
    work: Path, train_steps: int, names: set[str] | None = None
) -> list[tuple[str, Path, Path]]:
    """(label, ONNX file, the file its gates measure on) of every bundled task (those ``names`` names, the
    labels' first words, if given), trained when not in ``work``."""
    made = []
    for label, (train_file, options, judged) in TASKS.items():
        if names is not None and label.split()[0] not in names:
            continue
        run = work / label.split()[0]
        model = run.with_suffix(".onnx")
        if not model.is_file():
            subprocess.run([*EDGERNN, "train", str(train_file), "-o", str(run), "--steps", str(train_steps),
                            "--overwrite", "--threads", "1", *options], check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip
            subprocess.run(
                [*EDGERNN, "export", str(run), "-o", str(model)], check=True, stdout=subprocess.DEVNULL
            )
        made.append((label, model, judged))
    return made


def _deploy_calibrated(path: Path, data: Path, builds: Path) -> None:
    """A task model's int8 and integer C calibrated and judged on its own data (as the quality table's),
    where the device bench takes them (without data it would calibrate on the self-test's inputs)."""
    for precision in ("int8", "integer"):
        with contextlib.suppress(EdgeRNNError):  # refused by name: the bench meets it too and reports it
            deploy(path, "c", builds / f"c-{precision}", precision=precision, data=data, force=True)


def measure_costs(
    models: list[tuple[str, Path, Path | None]],
    work: Path,
    steps: int,
    soft_steps: int,
    devices: tuple[str, ...],
) -> list[dict]:
    """One result per model, device and precision (a refusal or failure is a result too). ``models``:
    (label, ONNX file, the data its quantized C is calibrated on, None for the reference models)."""
    results = []
    for label, path, data in models:
        builds = work / "builds" / path.stem
        shutil.rmtree(builds, ignore_errors=True)  # the C of this run's generator, never an old one
        if data is not None:
            _deploy_calibrated(path, data, builds)
        for name in devices:
            device = get_device(name)
            for precision in PRECISIONS:
                soft = device.fpu.startswith("none") and precision != "integer"
                row = {"model": label, "device": name, "precision": precision}
                start = time.perf_counter()
                try:
                    r = bench_precision(
                        path, device, precision, clock_mhz=device.clock_mhz, steps=soft_steps if soft else steps,
                        work=builds, self_test=precision == "integer",
                    )  # fmt: skip
                except EdgeRNNError as exc:  # refused by name or failed
                    row["refused"] = _one_line(exc)
                    print(
                        f"{label} {name} {precision}: not measured: {row['refused'][:200]}", file=sys.stderr
                    )
                    results.append(row)
                    continue
                print(f"{label} {name} {precision}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
                row.update(instructions=r.instructions_median, macs=r.macs, cycles=r.cycles,
                           flash_bytes=r.flash_bytes, ram_bytes=r.ram_bytes)  # fmt: skip
                results.append(row)
    return results


def measure_quality(tasks: list[tuple[str, Path, Path]], work: Path) -> list[dict]:
    """Per task, the metric of float32 and of each quantized C, and the integer gate's verdict."""
    rows = []
    for label, model, judged in tasks:
        row = {"task": label}
        for precision in ("int8", "integer"):
            out = work / "builds" / f"{model.stem}-{precision}"
            shutil.rmtree(out, ignore_errors=True)
            try:
                report = deploy(model, "c", out, precision=precision, data=judged, force=True)
            except EdgeRNNError as exc:
                row[precision] = {"refused": _one_line(exc)}
                continue
            quality = report.details["quality"]
            row[precision] = {"metric": quality["metric"], "failures": quality.get("failures", []),
                              "forced": quality["forced"]}  # fmt: skip
        rows.append(row)
        print(f"{label}: done", file=sys.stderr)
    return rows


def _refused_text(reason: str) -> str:
    text = reason.split(": ", 1)[-1]
    return "refused: " + (text if len(text) <= 90 else text[:90].rsplit(" ", 1)[0] + " ...")


def cost_table(results: list[dict]) -> str:
    lines = [
        "| model | device | precision | instructions/step | instructions/MAC | est. MACs/cycle | flash (B) | RAM (B) |",
        "|---|---|---|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        head = f"| {r['model']} | {r['device']} | {r['precision']} |"
        if "refused" in r:
            lines.append(f"{head} {_refused_text(r['refused'])} | | | | |")
            continue
        per_mac = f"{r['instructions'] / r['macs']:.2f}" if r["macs"] else "-"
        per_cycle = f"{r['macs'] / r['cycles']:.3f}" if r["macs"] else "-"
        lines.append(
            f"{head} {r['instructions']:,.0f} | {per_mac} | {per_cycle} | {r['flash_bytes']:,} | {r['ram_bytes']:,} |"
        )
    return "\n".join(lines)


def _metric_value(entry: dict, key: str) -> str:
    return "-" if "refused" in entry else f"{entry['metric'][key]:.4f}"


def quality_table(rows: list[dict]) -> str:
    lines = [
        "| task | metric | float32 | int8 C | integer C | integer gate |",
        "|---|---|--:|--:|--:|---|",
    ]
    for row in rows:
        int8, integer = row["int8"], row["integer"]
        known = integer if "metric" in integer else int8
        metric = known.get("metric")
        name = f"{metric['name']} ({metric['unit']})" if metric else "-"
        float32 = f"{metric['float32']:.4f}" if metric else "-"
        if "refused" in integer:
            verdict = _refused_text(integer["refused"])
        else:
            verdict = "failed: " + "; ".join(integer["failures"]) if integer["forced"] else "passed"
            verdict += f" (tolerance {integer['metric']['tolerance']:+.4f})"
        lines.append(
            f"| {row['task']} | {name} | {float32} | {_metric_value(int8, 'quantized')} | "
            f"{_metric_value(integer, 'quantized')} | {verdict} |"
        )
    return "\n".join(lines)


def readme_table(results: list[dict], quality: list[dict]) -> str:
    """The README's summary: the reference GRU 2x128 per precision (flash and RAM on the Cortex-M0+,
    instructions per step on each device) and the worst integer metric change against its gate."""
    lines = [
        f"| precision ({README_MODEL}) | flash | RAM | "
        + " | ".join(f"{d} instructions/step" for d in DEVICES)
        + " |",
        "|---|--:|--:|" + "--:|" * len(DEVICES),
    ]
    for precision in PRECISIONS:
        found = {
            r["device"]: r for r in results if r["model"] == README_MODEL and r["precision"] == precision
        }
        if not all(d in found and "refused" not in found[d] for d in DEVICES):
            continue
        m0 = found[DEVICES[0]]
        counts = " | ".join(f"{found[d]['instructions']:,.0f}" for d in DEVICES)
        lines.append(f"| {precision} | {m0['flash_bytes']:,} B | {m0['ram_bytes']:,} B | {counts} |")
    lines += ["", "| task | metric | float32 | int8 C | integer C |", "|---|---|--:|--:|--:|"]
    for row in quality:
        known = row["integer"] if "metric" in row["integer"] else row["int8"]
        if "metric" not in known:
            continue
        metric = known["metric"]
        integer = _metric_value(row["integer"], "quantized")
        if "refused" in row["integer"]:
            integer = "refused"
        lines.append(
            f"| {row['task']} | {metric['name']} | {metric['float32']:.4f} | "
            f"{_metric_value(row['int8'], 'quantized')} | {integer} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work", type=Path, required=True, help="Trained models (reused when present) and builds."
    )
    parser.add_argument(
        "--steps", type=int, default=20, help="Steps counted per row (hardware float, integer)."
    )
    parser.add_argument("--soft-float-steps", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--only", choices=("cost", "quality"), help="One of the measurements.")
    parser.add_argument("--devices", default=",".join(DEVICES), help="Devices of the cost table.")
    parser.add_argument("--out", type=Path, help="Write the Markdown tables here too.")
    parser.add_argument("--json", type=Path, help="Write every result as JSON here.")
    parser.add_argument("--tables-from", type=Path, help="Measure nothing: the tables of a --json file.")
    parser.add_argument(
        "--tasks", help="Only these rows, e.g. keyword or reference,charlm (the labels' first words)."
    )
    args = parser.parse_args(argv)
    if args.tables_from:
        measured = json.loads(args.tables_from.read_text())
    else:
        torch.set_num_threads(1)
        args.work.mkdir(parents=True, exist_ok=True)
        names = set(args.tasks.split(",")) if args.tasks else None
        tasks = trained_tasks(args.work, args.train_steps, names)
        measured = {"costs": [], "quality": []}
        if args.only != "quality":
            models = []
            if names is None or "reference" in names:
                models = [(label, path, None) for label, path, _ in reference_models(args.work)]
            models += tasks
            devices = tuple(args.devices.split(","))
            measured["costs"] = measure_costs(models, args.work, args.steps, args.soft_float_steps, devices)
        if args.only != "cost":
            measured["quality"] = measure_quality(tasks, args.work)
        if args.json:
            args.json.write_text(json.dumps(measured, indent=1) + "\n")
    tables = []
    if measured["costs"]:
        tables.append(cost_table(measured["costs"]))
    if measured["quality"]:
        tables.append(quality_table(measured["quality"]))
    if measured["costs"] and measured["quality"]:
        tables.append(readme_table(measured["costs"], measured["quality"]))
    text = "\n\n".join(tables) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
