"""One step's cost on every emulated device: the reference GRU 2x128 and LSTM 2x128 (32 features) and
the demo's character GRU (1x128 over the 65 characters of tinyshakespeare, embedding 32; PyTorch's
initial weights: the instruction counts depend on the shapes, not on training), float32 and int8.

Prints the Markdown table of docs/devices.md (and, with --json FILE, every result). Instructions are
exact; cycles are an estimate (docs/devices.md says how and what it leaves out). Devices without an
FPU take 20-60x the instructions of the others (soft float, in int8 too: its activations are float), so
their rows count fewer steps (--soft-float-steps); the step counts are in the table.

    .venv/bin/python benchmarks/device_speed.py --out docs/device_table.md --json device_speed.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from edgernn.benchmark import reference_models
from edgernn.export import export_model
from edgernn.export.c.devices import DEVICE_NAMES, get_device
from edgernn.export.c.devices.bench import bench_precision
from edgernn.models import ModelConfig, RecurrentModel

ROOT = Path(__file__).resolve().parents[1]


def char_gru(directory: Path) -> tuple[str, Path]:
    text = (ROOT / "examples/data/tinyshakespeare.txt").read_text()
    vocabulary = sorted(set(text))
    torch.manual_seed(0)
    config = ModelConfig(cell="gru", input_size=len(vocabulary), output_size=len(vocabulary))
    path = directory / "char-gru-1x128.onnx"
    export_model(RecurrentModel(config).eval(), path, vocabulary=vocabulary, chunk_steps=None)
    return f"char GRU 1x{config.hidden_size}, {len(vocabulary)} tokens", path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default=",".join(DEVICE_NAMES))
    parser.add_argument("--precisions", default="float32,int8")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--soft-float-steps", type=int, default=5)
    parser.add_argument("--models", default="gru,lstm,char")
    parser.add_argument("--work", type=Path, help="Keep the models and builds here (reused when present).")
    parser.add_argument("--out", type=Path, help="Write the Markdown table here too.")
    parser.add_argument("--json", type=Path, help="Write every result as JSON here.")
    parser.add_argument(
        "--readme-from",
        type=Path,
        help="Measure nothing: print the README's device table from a --json file of an earlier run.",
    )
    args = parser.parse_args(argv)
    if args.readme_from:
        print(readme_table(json.loads(args.readme_from.read_text())))
        return 0
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.work or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        wanted = args.models.split(",")
        models = []
        if "gru" in wanted or "lstm" in wanted:
            for label, path, _ in reference_models(root):
                if path.stem.split("-")[0] in wanted:
                    models.append((label, path))
        if "char" in wanted:
            models.append(char_gru(root))
        rows, docs = [], []
        for label, path in models:
            for name in args.devices.split(","):
                device = get_device(name)
                for precision in args.precisions.split(","):
                    soft = device.fpu.startswith("none")  # int8 too: its activations are float
                    steps = args.soft_float_steps if soft else args.steps
                    start = time.perf_counter()
                    try:
                        result = bench_precision(
                            path, device, precision, clock_mhz=device.clock_mhz, steps=steps,
                            work=root / path.stem, self_test=False,
                        )  # fmt: skip
                    except Exception as exc:  # one failed row is reported, the table goes on
                        rows.append(
                            f"| {label} | {name} | {precision} | {steps} | failed: {' '.join(str(exc).split())[:120]} |"
                        )
                        print(f"{label} {name} {precision}: FAILED {exc}", file=sys.stderr, flush=True)
                        continue
                    doc = {"model": label, "board": result.board, "steps": steps, **result.to_dict()}
                    docs.append(doc)
                    rows.append(_row(label, result))
                    print(
                        f"{label} {name} {precision}: {time.perf_counter() - start:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
        table = "\n".join([HEADER, RULE, *rows]) + "\n"
        print(table)
        if args.out:
            args.out.write_text(table)
        if args.json:
            args.json.write_text(json.dumps(docs, indent=2) + "\n")
    return 0


HEADER = (
    "| model | device | precision | steps | instructions/step (median) | max | est. cycles/step | MACs/cycle "
    "| µs/step at clock | flash (B) | RAM (B) | stack (B) |"
)
RULE = "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"


def readme_table(docs: list[dict]) -> str:
    """The README's table: the reference GRU 2x128 on every device, float32 and int8 side by side."""
    gru = [d for d in docs if d["model"].startswith("GRU 2x128")]
    lines = [
        "| device | clock | float32: instructions / est. cycles / µs per step | int8: instructions / est. cycles / µs "
        "per step | int8 MACs/cycle |",
        "|---|--:|--:|--:|--:|",
    ]
    for device in dict.fromkeys(d["device"] for d in gru):
        cells = {d["precision"]: d for d in gru if d["device"] == device}
        f, i = cells.get("float32"), cells.get("int8")

        def cell(d):
            if d is None:
                return "-"
            return (
                f"{d['instructions']['median']:,.0f} / {d['cycles']['estimate']:,} / {d['us_per_step']:,.0f}"
            )

        clock = (f or i)["clock_mhz"]
        lines.append(
            f"| {device} | {clock:g} MHz | {cell(f)} | {cell(i)} | {i['macs_per_cycle']:.2f} |"
            if i
            else f"| {device} | {clock:g} MHz | {cell(f)} | - | - |"
        )
    return "\n".join(lines) + "\n"


def _row(label: str, r) -> str:
    return (
        f"| {label} | {r.device} | {r.precision} | {r.steps} | {r.instructions_median:,.0f} | {r.instructions_max:,} "
        f"| {r.cycles:,.0f} | {r.macs_per_cycle:.3f} | {r.us_per_step:,.0f} at {r.clock_mhz:g} MHz "
        f"| {r.flash_bytes:,} | {r.ram_bytes:,} | {r.stack_bytes:,} |"
    )


if __name__ == "__main__":
    sys.exit(main())
