"""The spotter's operating points on leave-one-speaker-out folds: at each threshold, the words detected,
the wrong words and the false alarms an hour on each held-out speaker's stream, from the folds' exported
models that ``benchmarks/keyword_loso.py`` left in its OUT folders (``OUT/SPEAKER/model.onnx``).

Each fold's stream is the one ``keyword_loso.py`` (``edgernn eval``) scores: the speaker's clips with
0.8-2.0 s of silence or noise between them (``edgernn.runtime.keyword.build_stream``, seed 0). It is
stepped once through the stepper; the spotter then reads the same logits at every threshold. The last
column: of all the folds' false alarms, those up to 1 s after a word's end (``LATE_MS``): a decision on
the word just heard, made after its 500 ms window.
``--rule-before`` also scores the spotter's rule before a word had to lead for ``stable_ms`` (a word fired
on the hop it reached the threshold, and another word re-armed the spotter after the refractory period).

    .venv/bin/python benchmarks/keyword_thresholds.py --data ../shared/datasets/fsdd \\
        build/keyword_loso_3000 build/loso/steplabels --thresholds 0.5,0.6,0.7,0.8,0.9 --rule-before
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edgernn.runtime import Stepper
from edgernn.runtime.audio import hops_of, read_clips
from edgernn.runtime.keyword import (
    DEFAULT_REFRACTORY_MS,
    DEFAULT_SMOOTH_MS,
    DEFAULT_STABLE_MS,
    KeywordModel,
    Spotter,
    build_stream,
    score_stream,
)


def fold_logits(model: Path, clips) -> tuple[object, list[np.ndarray], KeywordModel]:
    """The held-out stream and the model's logits at each of its hops."""
    stepper = Stepper(model)
    keyword = KeywordModel.of(stepper.info)
    test = build_stream(clips, 0)
    stream = stepper.new_stream()
    logits = [stream.step(hop[None])[0].copy() for hop in hops_of(test.samples, keyword.front_end.hop)]
    return test, logits, keyword


def operating_points(test, logits, keyword, thresholds, **spotter_options) -> list[dict]:
    rows = []
    for threshold in thresholds:
        spotter = Spotter(keyword, threshold=threshold, **spotter_options)
        detections = [d for d in map(spotter.push, logits) if d is not None]
        rows.append({"threshold": threshold, **score_stream(test, detections)})
    return rows


def table(results: dict[str, dict[str, list[dict]]], thresholds) -> str:
    lines = [
        "| models | threshold | words detected (mean) | lowest speaker | wrong words (mean) | false alarms / hour (mean) | highest speaker | late decisions (all folds) |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, folds in results.items():
        for i, threshold in enumerate(thresholds):
            rows = [points[i] for points in folds.values()]
            detected = [r["detected_pct"] for r in rows]
            alarms = [r["false_alarms_per_hour"] for r in rows]
            lines.append(
                f"| {name} | {threshold:g} | {np.mean(detected):.1f}% | {min(detected):.1f}% | "
                f"{np.mean([r['wrong_word'] for r in rows]):.0f} | {np.mean(alarms):.1f} | {max(alarms):.1f} | "
                f"{sum(r['late_alarms'] for r in rows)} of {sum(r['false_alarms'] for r in rows)} |"
            )
    return "\n".join(lines)


def fold_arguments(description: str) -> argparse.ArgumentParser:
    """A parser taking ``--data`` (the FSDD recordings) and keyword_loso.py OUT folders."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, required=True, help="the FSDD recordings folder (.wav files)")
    parser.add_argument("runs", type=Path, nargs="+", help="keyword_loso.py OUT folders")
    return parser


def folds_of(parser: argparse.ArgumentParser, run: Path) -> list[Path]:
    """The fold folders (SPEAKER, holding model.onnx) of one keyword_loso.py OUT folder."""
    folds = sorted(p.parent for p in run.glob("*/model.onnx"))
    if not folds:
        parser.error(f"{run}: expected keyword_loso.py folds (SPEAKER/model.onnx), found none")
    return folds


def main(argv: list[str] | None = None) -> int:
    parser = fold_arguments(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--thresholds",
        type=lambda text: [float(v) for v in text.split(",")],
        default=[0.5, 0.6, 0.7, 0.8, 0.9],
    )
    parser.add_argument("--smooth-ms", type=float, default=DEFAULT_SMOOTH_MS)
    parser.add_argument("--refractory-ms", type=float, default=DEFAULT_REFRACTORY_MS)
    parser.add_argument("--stable-ms", type=float, default=DEFAULT_STABLE_MS)
    parser.add_argument("--rule-before", action="store_true", help="also the spotter's rule before stable_ms")
    args = parser.parse_args(argv)
    rules = {"": {"stable_ms": args.stable_ms, "other_word_rearms": False}}
    if args.rule_before:
        rules = {", rule before": {"stable_ms": 0.0, "other_word_rearms": True}, **rules}
    timing = {"smooth_ms": args.smooth_ms, "refractory_ms": args.refractory_ms}
    clips = read_clips(args.data)
    results: dict[str, dict[str, list[dict]]] = {}
    for run in args.runs:
        for fold in folds_of(parser, run):
            held_out = clips.subset([i for i, s in enumerate(clips.speakers) if s == fold.name])
            test, logits, keyword = fold_logits(fold / "model.onnx", held_out)
            for tag, rule in rules.items():
                points = operating_points(test, logits, keyword, args.thresholds, **timing, **rule)
                results.setdefault(f"{run}{tag}", {})[fold.name] = points
    print(table(results, args.thresholds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
