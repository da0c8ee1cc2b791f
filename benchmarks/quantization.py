"""Print the README's quantization table: file size, per-step latency and validation loss of float32, int8,
fp16 and int4 exports of GRU, LSTM and vanilla-RNN char models at hidden 64, 128, 256 and 512.

Each model is a char LM trained briefly on tinyshakespeare (400 steps of 32 x 64 characters, cached in
runs/quant-bench/; for GRU 256, runs/shakespeare from `make demo` when present), exported once in float32
(verified against PyTorch) and once per precision (checked against float32 on the validation split, with
``force`` so that a model the metric gate refuses is still measured, marked "refused"). Latency: the
stepper, batch 1, 1 thread, state fed back, every precision of a model measured side by side in
interleaved rounds (``bench_side_by_side``).

Run: python benchmarks/quantization.py [--train-steps 400] [--options] [--json FILE]   (or `make quant-results`)
``int8`` is the default ``--int8-method auto`` (the table says which method it chose). ``--options`` adds the
variants QUANTIZATION_NOTES.md compares: int8 weights and dynamic side by side, per-channel int8, static
int8, int4 blocks of 32.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgernn.checkpoint import load_checkpoint
from edgernn.export import QuantizeConfig, evaluation_data, export_model
from edgernn.models import ModelConfig
from edgernn.runtime import Stepper, bench_side_by_side
from edgernn.train import TrainConfig, train_task

TEXT = Path("examples/data/tinyshakespeare.txt")
CACHE = Path("runs/quant-bench")
OUT = Path("out/quant-bench")
PRECISIONS = {"int8": QuantizeConfig("int8", force=True), "fp16": QuantizeConfig("fp16", force=True),
              "int4": QuantizeConfig("int4", force=True)}  # fmt: skip
OPTIONS = {
    "int8 weights": QuantizeConfig("int8", int8_method="weights", force=True),
    "int8 dynamic": QuantizeConfig("int8", int8_method="dynamic", force=True),
    "int8 per-channel": QuantizeConfig("int8", per_channel=True, force=True),
    "int8 static": QuantizeConfig("int8", int8_method="static", force=True),
    "int4 block 32": QuantizeConfig("int4", int4_block_size=32, force=True),
}


def trained_run(cell: str, hidden: int, steps: int) -> Path:
    """A char LM run directory for this cell and size, trained now if not cached."""
    shakespeare = Path("runs/shakespeare")
    if (cell, hidden) == ("gru", 256) and (shakespeare / "model.safetensors").exists():
        config = load_checkpoint(shakespeare).model.config
        if (config.cell, config.hidden_size, config.num_layers) == ("gru", 256, 1):
            return shakespeare
    run_dir = CACHE / f"{cell}-{hidden}"
    if not (run_dir / "model.safetensors").exists():
        print(f"training {run_dir} for {steps} steps", file=sys.stderr)
        model = ModelConfig(cell=cell, hidden_size=hidden, embedding_size=64)
        budget = TrainConfig(budget_minutes=None, max_steps=steps, seq_len=64, eval_every=steps)
        train_task("charlm", TEXT, run_dir, model, budget, progress=False)
    return run_dir


def export_all(run_dir: Path, name: str, variants: dict[str, QuantizeConfig]) -> dict[str, dict]:
    """Every precision of one run: path, size, and (quantized) the checks from its metadata."""
    checkpoint = load_checkpoint(run_dir)
    data = evaluation_data(checkpoint)
    fp32 = export_model(checkpoint.model, OUT / f"{name}-fp32.onnx", vocabulary=checkpoint.vocabulary)
    results = {"fp32": {"path": fp32.path, "size": fp32.size_bytes}}
    for label, config in variants.items():
        path = OUT / f"{name}-{label.replace(' ', '-')}.onnx"
        report = export_model(
            checkpoint.model, path, vocabulary=checkpoint.vocabulary, verify=False, quantize=config, data=data
        )
        results[label] = {
            "path": report.path,
            "size": report.size_bytes,
            "method": report.quantization["method"],
            "checks": report.quantization["checks"],
        }
    results["fp32"]["loss"] = results["int8"]["checks"]["metric"]["float32"]
    return results


def measure_side_by_side(results: dict[str, dict], rounds: int, steps: int) -> None:
    """p50 latency of every variant, measured in interleaved rounds; adds ``p50_us`` to each."""
    steppers = [Stepper(r["path"]) for r in results.values()]
    stats = bench_side_by_side(steppers, steps=steps, warmup=steps // 10, rounds=rounds)
    for r, s in zip(results.values(), stats, strict=True):
        r["p50_us"] = s.p50_us


def row(cell: str, hidden: int, results: dict[str, dict], labels: list[str]) -> str:
    fp32 = results["fp32"]
    sizes = [f"{fp32['size'] / 1024:.0f}"]
    sizes += [f"{results[k]['size'] / 1024:.0f} ({fp32['size'] / results[k]['size']:.2f}x)" for k in labels]
    times = [f"{fp32['p50_us']:.1f}"]
    times += [f"{results[k]['p50_us']:.1f} ({results[k]['p50_us'] / fp32['p50_us']:.2f}x)" for k in labels]
    deltas = []
    for k in labels:
        metric = results[k]["checks"]["metric"]
        refused = " refused" if results[k]["checks"]["forced"] else ""
        deltas.append(f"{metric['quantized'] - metric['float32']:+.4f}{refused}")
    name = {"gru": "GRU", "lstm": "LSTM", "rnn_tanh": "RNN tanh", "rnn_relu": "RNN relu"}[cell]
    cells = [f"{name} {hidden}", results["int8"]["method"], f"{fp32['loss']:.4f}", *sizes, *times, *deltas]
    return "| " + " | ".join(cells) + " |"


def goals(table: dict[tuple[str, int], dict]) -> list[str]:
    """The issue's goals, each met or not, with the numbers."""
    lines = []
    for (cell, hidden), results in table.items():
        size = results["fp32"]["size"] / results["int8"]["size"]
        speed = results["int8"]["p50_us"] / results["fp32"]["p50_us"]
        limit = 1.1 if hidden <= 128 else (0.3 if hidden == 512 else None)
        lines.append(
            f"{cell} {hidden}: int8 ({results['int8']['method']}) {size:.2f}x smaller (goal >= 3.5x: {'met' if size >= 3.5 else 'NOT met'}); "
            f"latency {speed:.2f}x fp32"
            + (f" (goal <= {limit}x: {'met' if speed <= limit else 'NOT met'})" if limit else " (no goal)")
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=400, help="training steps of each uncached model")
    parser.add_argument(
        "--rounds", type=int, default=25, help="interleaved rounds the timed steps are split into"
    )
    parser.add_argument("--steps", type=int, default=5000, help="timed steps per variant")
    parser.add_argument("--cells", default="gru,lstm,rnn_tanh")
    parser.add_argument("--hidden", default="64,128,256,512")
    parser.add_argument("--options", action="store_true", help="also measure the variants the notes compare")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    args = parser.parse_args()
    variants = {**PRECISIONS, **(OPTIONS if args.options else {})}
    labels = list(variants)
    table = {}
    for cell in args.cells.split(","):
        for hidden in (int(h) for h in args.hidden.split(",")):
            results = export_all(trained_run(cell, hidden, args.train_steps), f"{cell}-{hidden}", variants)
            measure_side_by_side(results, args.rounds, args.steps)
            table[(cell, hidden)] = results
            print(f"done {cell} {hidden}", file=sys.stderr)
    header = [
        "model",
        "int8 method",
        "val loss fp32",
        "fp32 KiB",
        *(f"{k} KiB" for k in labels),
        "fp32 p50 us",
    ]
    header += [f"{k} p50 us" for k in labels] + [f"{k} loss change" for k in labels]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for (cell, hidden), results in table.items():
        print(row(cell, hidden, results, labels))
    print()
    print("\n".join(goals(table)))
    if args.json:
        doc = {
            f"{c}-{h}": {k: {**v, "path": str(v["path"])} for k, v in r.items()}
            for (c, h), r in table.items()
        }
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
