"""Leave one speaker out on the Free Spoken Digit Dataset: train a keyword model on four speakers, test it
on the fifth, each in turn, and print the table docs/results.md shows.

Each fold trains with ``edgernn train``'s library call (the keyword task's defaults: augmentation on, a
no-word class, a stratified 10% of the four speakers' clips to pick the kept weights), exports the
verified step graph (front end included), and evaluates the exported file through the stepper on the
held-out speaker's 500 clips: clip accuracy after each clip's last hop, and the spotter on a continuous
stream of those clips with silence and noise between them (``edgernn.runtime.keyword``).

    .venv/bin/python benchmarks/keyword_loso.py --data ../shared/datasets/fsdd --minutes 5
    .venv/bin/python benchmarks/keyword_loso.py --data DIR --speakers lucas --minutes 2 --hidden-size 64

Writes ``OUT/results.json`` and ``OUT/table.md`` (OUT: build/keyword_loso by default).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edgernn.runtime import Stepper
from edgernn.runtime.audio import read_clips, write_bundle
from edgernn.runtime.keyword import evaluate_keyword


def run_fold(clips, speaker: str, out: Path, args) -> dict:
    """Train on every speaker but ``speaker``, export, evaluate on ``speaker``."""
    from edgernn.export.exporter import export_run
    from edgernn.models import count_parameters
    from edgernn.train import configs_for, train_task

    held_in = [i for i, s in enumerate(clips.speakers) if s != speaker]
    held_out = [i for i, s in enumerate(clips.speakers) if s == speaker]
    fold = out / speaker
    (fold / "data").mkdir(parents=True, exist_ok=True)
    write_bundle(fold / "data" / "train.npz", clips.subset(held_in))
    model_config, train_config = configs_for(
        "keyword",
        {"hidden_size": args.hidden_size, "num_layers": args.num_layers},
        {"budget_minutes": args.minutes, "seed": args.seed, "threads": 1},
    )
    started = time.perf_counter()
    result = train_task(
        "keyword", fold / "data", fold / "run", model_config, train_config, progress=False, overwrite=True
    )
    minutes = (time.perf_counter() - started) / 60
    report = export_run(fold / "run", fold / "model.onnx")
    scores = evaluate_keyword(Stepper(report.path), clips.subset(held_out))
    return {
        "speaker": speaker,
        "clips": scores["clips"],
        "clip_accuracy": scores["clip_accuracy"],
        "stream": scores["stream"],
        "parameters": count_parameters(result.model),
        "onnx_bytes": report.size_bytes,
        "train_minutes": minutes,
        "steps": result.metrics["steps"],
        "validation_accuracy": result.metrics.get("best_val_accuracy"),
    }


def table(rows: list[dict], args) -> str:
    lines = [
        f"Model: GRU {args.num_layers} x {args.hidden_size}, {rows[0]['parameters']:,} parameters "
        f"(front end: no weights), {rows[0]['onnx_bytes'] / 1024:.0f} KiB float32 ONNX; "
        f"{args.minutes:g} minutes of training per fold, 1 thread.",
        "",
        "| held-out speaker | clip accuracy | words detected (stream) | false alarms / hour | training steps |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["stream"]
        lines.append(
            f"| {r['speaker']} | {100 * r['clip_accuracy']:.1f}% | {s['detected']}/{s['words']} "
            f"({s['detected_pct']:.1f}%) | {s['false_alarms_per_hour']:.1f} | {r['steps']} |"
        )
    accuracies = [100 * r["clip_accuracy"] for r in rows]
    lines.append(f"| **mean** | **{np.mean(accuracies):.1f}%** (lowest {min(accuracies):.1f}%) | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the FSDD recordings folder (.wav files)")
    parser.add_argument("--speakers", default=None, help="comma-separated held-out speakers (default: all)")
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per fold")
    parser.add_argument("--hidden-size", type=int, default=96)
    parser.add_argument("--num-layers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("build/keyword_loso"))
    args = parser.parse_args(argv)
    clips = read_clips(args.data)
    speakers = args.speakers.split(",") if args.speakers else sorted(set(clips.speakers))
    rows = []
    for speaker in speakers:
        rows.append(run_fold(clips, speaker, args.out, args))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    text = table(rows, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
