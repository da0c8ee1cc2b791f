"""Clip accuracy of the leave-one-speaker-out keyword models in every C precision, on the speakers they
never heard: float32 (the exported file, through the stepper), int8 (the fold's ``model-int8.onnx``) and
integer (the integer program ``deploy --precision integer --data`` writes as C, calibrated on the fold's
own training clips, run by its numpy reference: the C computes the same bits, tests/test_integer_keyword.py
holds it to them on the host, the Cortex-M0+ and rv32imc).

Reads the folds ``benchmarks/keyword_loso.py`` left in its OUT folders (``OUT/SPEAKER/model.onnx``,
``model-int8.onnx`` and ``data/train.npz``):

    .venv/bin/python benchmarks/keyword_integer_loso.py --data ../shared/datasets/fsdd build/loso/warp5
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from keyword_thresholds import fold_arguments, folds_of  # benchmarks/, beside this script

from edgernn.export.c.integer_writer import integer_model_for
from edgernn.export.integer_calibration import integer_stepper
from edgernn.runtime import Stepper
from edgernn.runtime.audio import read_clips
from edgernn.runtime.keyword import KeywordModel, classify_clips


def fold_row(fold: Path, clips) -> dict:
    held_out = clips.subset([i for i, s in enumerate(clips.speakers) if s == fold.name])
    stepper = Stepper(fold / "model.onnx")
    classes = list(KeywordModel.of(stepper.info).classes)
    truth = np.array([classes.index(label) for label in held_out.labels])
    started = time.perf_counter()
    program, info, _, _ = integer_model_for(fold / "model.onnx", data=fold / "data" / "train.npz")
    row = {"speaker": fold.name, "clips": len(held_out), "calibration_s": time.perf_counter() - started}
    for name, model in (
        ("float32", stepper),
        ("int8", Stepper(fold / "model-int8.onnx")),
        ("integer", integer_stepper(program, info)),
    ):
        row[name] = float(np.mean(classify_clips(model, held_out) == truth))
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| held-out speaker | clips | float32 | int8 | integer | integer - float32 (points) |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['speaker']} | {r['clips']} | {100 * r['float32']:.1f}% | {100 * r['int8']:.1f}% | "
            f"{100 * r['integer']:.1f}% | {100 * (r['integer'] - r['float32']):+.1f} |"
        )
    mean = {k: np.mean([r[k] for r in rows]) for k in ("float32", "int8", "integer")}
    lines.append(
        f"| **mean** | {sum(r['clips'] for r in rows)} | {100 * mean['float32']:.1f}% | "
        f"{100 * mean['int8']:.1f}% | {100 * mean['integer']:.1f}% | "
        f"{100 * (mean['integer'] - mean['float32']):+.1f} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = fold_arguments(__doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    clips = read_clips(args.data)
    rows = []
    for run in args.runs:
        for fold in folds_of(parser, run):
            rows.append(fold_row(fold, clips))
            print(rows[-1], file=sys.stderr, flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
