"""Which C precision: float32, int8 and integer side by side (the tables of docs/c.md, "Which precision").

Cost: one step of the reference GRU 2x128 and LSTM 2x128 (32 features, PyTorch's initial weights: the counts
depend on the shapes) on cortex-m0plus, cortex-m4 and rv32imc, measured by the device bench
(``export.c.devices.bench.bench_precision``: exact instructions between two markers, flash linked, RAM).
Soft-float rows count fewer steps (--soft-float-steps).

Quality: the task metric of each precision on three bundled tasks, each model trained here briefly
(``edgernn train ... --steps N``): the int8 and integer deploys' own gates measure it, float32 against
the quantized C, on the validation split of the file given with ``--data``.

    .venv/bin/python benchmarks/integer_precision.py --work build/integer-table --out integer_table.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

from edgernn.benchmark import reference_models
from edgernn.export.c.devices import get_device
from edgernn.export.c.devices.bench import bench_precision
from edgernn.export.deploy import deploy

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data"
EDGERNN = [sys.executable, "-m", "edgernn"]
DEVICES = ("cortex-m0plus", "cortex-m4", "rv32imc")
PRECISIONS = ("float32", "int8", "integer")
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
}  # fmt: skip


def cost_rows(work: Path, steps: int, soft_steps: int, devices: tuple[str, ...] = DEVICES) -> list[str]:
    rows = [
        "| model | device | precision | instructions/step | instructions/MAC | est. MACs/cycle | flash (B) | RAM (B) |",
        "|---|---|---|--:|--:|--:|--:|--:|",
    ]
    for label, path, _ in reference_models(work):
        for name in devices:
            device = get_device(name)
            for precision in PRECISIONS:
                soft = device.fpu.startswith("none") and precision != "integer"
                start = time.perf_counter()
                try:
                    r = bench_precision(
                        path, device, precision, clock_mhz=device.clock_mhz, steps=soft_steps if soft else steps,
                        work=work / path.stem, self_test=precision == "integer",
                    )  # fmt: skip
                except Exception as exc:  # one failed row is reported, the table goes on
                    rows.append(
                        f"| {label} | {name} | {precision} | failed: {' '.join(str(exc).split())[:100]} |"
                    )
                    print(f"{label} {name} {precision}: FAILED {exc}", file=sys.stderr)
                    continue
                print(f"{label} {name} {precision}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
                rows.append(
                    f"| {label} | {name} | {precision} | {r.instructions_median:,.0f} | "
                    f"{r.instructions_median / r.macs:.2f} | {r.macs / r.cycles:.3f} | {r.flash_bytes:,} | "
                    f"{r.ram_bytes:,} |"
                )
    return rows


def quality_rows(work: Path, train_steps: int) -> list[str]:
    rows = [
        "| task | metric | float32 | int8 C | integer C | integer gate |",
        "|---|---|--:|--:|--:|---|",
    ]
    for label, (train_file, options, judged) in TASKS.items():
        run = work / label.split()[0]
        model = run.with_suffix(".onnx")
        if not model.is_file():
            subprocess.run([*EDGERNN, "train", str(train_file), "-o", str(run), "--steps", str(train_steps),
                            "--overwrite", *options], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
            subprocess.run(
                [*EDGERNN, "export", str(run), "-o", str(model)], check=True, stdout=subprocess.DEVNULL
            )
        metrics = {}
        for precision in ("int8", "integer"):
            out = work / f"{run.name}-{precision}"
            report = deploy(model, "c", out, precision=precision, data=judged, force=True)
            metrics[precision] = report.details["quality"]
        m8, mi = metrics["int8"]["metric"], metrics["integer"]["metric"]
        verdict = (
            "failed: " + "; ".join(metrics["integer"]["failures"])
            if metrics["integer"]["forced"]
            else "passed"
        )
        rows.append(
            f"| {label} | {mi['name']} ({mi['unit']}) | {mi['float32']:.4f} | {m8['quantized']:.4f} | "
            f"{mi['quantized']:.4f} | {verdict} (tolerance {mi['tolerance']:+.4f}) |"
        )
        print(f"{label}: done", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work", type=Path, required=True, help="Models, runs and builds (reused when present)."
    )
    parser.add_argument(
        "--steps", type=int, default=20, help="Steps counted per row (hardware float, integer)."
    )
    parser.add_argument("--soft-float-steps", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--only", choices=("cost", "quality"), help="One of the two tables.")
    parser.add_argument("--devices", default=",".join(DEVICES), help="Devices of the cost table.")
    parser.add_argument("--out", type=Path, help="Write the Markdown tables here too.")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    tables = []
    if args.only != "quality":
        tables.append(
            "\n".join(cost_rows(args.work, args.steps, args.soft_float_steps, tuple(args.devices.split(","))))
        )
    if args.only != "cost":
        tables.append("\n".join(quality_rows(args.work, args.train_steps)))
    text = "\n\n".join(tables) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
