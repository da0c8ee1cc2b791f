"""Keyword models on the Cortex-M4 (mps2-an386 under QEMU): flash, RAM, instructions and estimated cycles
per hop of the front end and of the rest of the step, float32 and int8, against the issue's goals (the
whole int8 model within 64 KB of RAM and 256 KB of flash, a 10 ms hop in under 10% of its time at
80 MHz: 80,000 estimated cycles). Two sizes: the bundled recipe's GRU 1x96 and a GRU 1x32, both 32 mel
bands at 8 kHz, trained for a few steps on the bundled clips (the counts depend on the shapes, not on
training). Each model is measured twice in one run: as the C target writes it (the spectrum as a real
FFT, the mel bands as a sparse product) and with both as the dense matrix products they are in the
graph, side by side.

Prints the Markdown tables of docs/keyword.md's "On the device" (the device's counts; what `edgernn deploy
--target c` reports) and the goals met or not (--json FILE: every result).

    .venv/bin/python benchmarks/keyword_device.py --steps 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from pathlib import Path

import torch

from edgernn.export import export_run
from edgernn.export.c import fft, sparse
from edgernn.export.c.devices import get_device
from edgernn.export.c.devices.bench import bench_precision
from edgernn.models import ModelConfig
from edgernn.train import TrainConfig, train_task

ROOT = Path(__file__).resolve().parents[1]
GOAL_RAM, GOAL_FLASH, GOAL_CYCLES = 64 * 1024, 256 * 1024, 80_000


def keyword_model(directory: Path, hidden: int) -> Path:
    torch.set_num_threads(1)
    config = TrainConfig(budget_minutes=None, max_steps=2, batch_size=8, eval_every=2, warmup_steps=0)
    run = directory / f"run-{hidden}"
    train_task(
        None, ROOT / "examples/data/fsdd", run, ModelConfig(hidden_size=hidden), config,
        data_options={"augment": False}, progress=False,
    )  # fmt: skip
    path = directory / f"keyword-gru-1x{hidden}.onnx"
    export_run(run, path)
    return path


@contextlib.contextmanager
def dense_front_end():
    """The C target writing the DFT and the mel bands as dense products (as the graph has them)."""
    recognise, is_sparse = fft.recognise, sparse.is_sparse
    fft.recognise, sparse.is_sparse = (lambda matrix: None), (lambda matrix: False)
    try:
        yield
    finally:
        fft.recognise, sparse.is_sparse = recognise, is_sparse


def measure(model: Path, precision: str, steps: int, work: Path) -> dict:
    from edgernn.export.c.generate import generate_sources

    sources = generate_sources(model, precision=precision)  # what `edgernn deploy --target c` reports
    r = bench_precision(
        model, get_device("cortex-m4"), precision, clock_mhz=80.0, steps=steps, work=work, self_test=True
    )
    fe, rest = r.front_end, r.rest
    return {
        "precision": precision,
        "deploy_constants_bytes": sources.flash_bytes,
        "deploy_state_bytes": 4 * sources.state_floats,
        "deploy_scratch_bytes": sources.scratch_bytes,
        "flash_bytes": r.flash_bytes,
        "ram_bytes": r.ram_bytes + r.stack_bytes,  # the state, static data and the step's stack
        "instructions": r.instructions_median,
        "cycles": round(r.cycles),
        "front_end_instructions": fe.instructions_median,
        "front_end_cycles": round(fe.cycles),
        "rest_instructions": rest.instructions_median,
        "rest_cycles": round(rest.cycles),
        "share_of_hop": r.cycles / (80.0 * 10_000),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="hops traced per measurement")
    parser.add_argument("--json", type=Path, help="write every result here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgernn-keyword-device-") as scratch:
        root = Path(scratch)
        for hidden in (96, 32):
            model = keyword_model(root, hidden)
            for variant in ("FFT + sparse mel", "dense (as in the graph)"):
                for precision in ("float32", "int8"):
                    work = root / f"{hidden}-{variant[:5]}"
                    work.mkdir(exist_ok=True)
                    with dense_front_end() if variant.startswith("dense") else contextlib.nullcontext():
                        row = measure(model, precision, args.steps, work)
                    rows.append({"model": f"GRU 1x{hidden}, 32 mels", "front_end": variant, **row})
                    print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print()
    print(
        "| model | front end in C | precision | flash B | RAM B (state + static + stack) | instructions/hop "
        "(front end + rest) | est. cycles/hop (front end + rest) | share of a 10 ms hop at 80 MHz |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['front_end']} | {r['precision']} | {r['flash_bytes']:,} | {r['ram_bytes']:,} | "
            f"{r['instructions']:,.0f} ({r['front_end_instructions']:,.0f} + {r['rest_instructions']:,.0f}) | "
            f"{r['cycles']:,} ({r['front_end_cycles']:,} + {r['rest_cycles']:,}) | {r['share_of_hop']:.1%} |"
        )
    print()
    print(
        "| model | front end in C | precision | weights and constants (flash) | RAM: state per stream + scratch |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        ram = r["deploy_state_bytes"] + r["deploy_scratch_bytes"]
        print(
            f"| {r['model']} | {r['front_end']} | {r['precision']} | {r['deploy_constants_bytes']:,} bytes | "
            f"{ram:,} bytes ({r['deploy_state_bytes']:,} + {r['deploy_scratch_bytes']:,}) |"
        )
    print()
    for r in rows:
        if r["precision"] == "int8" and not r["front_end"].startswith("dense"):
            met = r["ram_bytes"] <= GOAL_RAM and r["flash_bytes"] <= GOAL_FLASH and r["cycles"] <= GOAL_CYCLES
            print(
                f"{r['model']} int8: RAM {r['ram_bytes']:,} B (goal <= {GOAL_RAM:,}), flash {r['flash_bytes']:,} B "
                f"(<= {GOAL_FLASH:,}), {r['cycles']:,} cycles a hop (<= {GOAL_CYCLES:,}): "
                f"{'met' if met else 'NOT met'}"
            )


if __name__ == "__main__":
    main()
