"""How a keyword model's clip accuracy on a speaker it never heard moves with the level the speaker is
heard at: each held-out speaker's clips scaled by a gain (int16, rounded, clipped at full scale, as a
louder or quieter microphone would record them), through each fold's exported model (the stepper), from
the folds ``benchmarks/keyword_loso.py`` left in its OUT folders (``OUT/SPEAKER/model.onnx``).

``--ensemble``: instead, each fold's models of all the OUT folders together, their posteriors after
each clip's last hop averaged (as recorded): whether the mistakes are one training's draw or shared by
every model of the fold.

``--durations`` also prints each speaker's median clip length per word (the recordings are trimmed of
silence at both ends): how fast each speaker talks; and how loud each recorded (the median RMS). ``--confusions N``: each fold's N most frequent
mistakes as recorded (word heard as word, clips of 50).

    .venv/bin/python benchmarks/keyword_level.py --data ../shared/datasets/fsdd build/loso/warp5 \\
        --gains=-24,-18,-12,-6,0,6
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgernn.runtime import Stepper
from edgernn.runtime.audio import PCM_SCALE, Clips, read_clips, rms
from edgernn.runtime.keyword import KeywordModel, classify_clips, clip_logits, clip_mistakes, softmax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from keyword_thresholds import fold_arguments, folds_of  # noqa: E402


def louder(clips: Clips, gain_db: float) -> Clips:
    """``clips`` scaled by ``gain_db``: int16, rounded, clipped at full scale."""
    scale = 10.0 ** (gain_db / 20.0)
    audio = [np.clip(np.round(a * scale), -32768, 32767).astype(np.int16) for a in clips.audio]
    return replace(clips, audio=audio)


def heard_at(model: Path, clips: Clips, gains: list[float]) -> dict[float, list[str]]:
    """The word the model hears in each clip, at each gain (0 dB: as recorded, always among them)."""
    stepper = Stepper(model)
    classes = KeywordModel.of(stepper.info).classes
    return {
        g: [classes[i] for i in classify_clips(stepper, louder(clips, g))]
        for g in dict.fromkeys([*gains, 0.0])
    }


def accuracy(said: list[str], heard: list[str]) -> float:
    return 100.0 * float(np.mean([a == b for a, b in zip(said, heard, strict=True)]))


def confusions(said: list[str], heard: list[str], count: int) -> str:
    """The ``count`` most frequent mistakes: ``2 as 0 34/50``."""
    _, mistakes = clip_mistakes(said, heard)
    return ", ".join(f"{m['word']} as {m['heard']} {m['clips']}/{m['of']}" for m in mistakes[:count])


def durations(clips: Clips) -> str:
    speakers, words = sorted(set(clips.speakers)), sorted(set(clips.labels))
    lines = ["| word | " + " | ".join(speakers) + " |", "|---|" + "--:|" * len(speakers)]
    for word in words:
        cells = []
        for speaker in speakers:
            n = [len(a) for a, w, s in zip(clips.audio, clips.labels, clips.speakers, strict=True)
                 if w == word and s == speaker]  # fmt: skip
            cells.append(f"{np.median(n) / clips.rate:.2f} s")
        lines.append(f"| {word} | " + " | ".join(cells) + " |")
    levels = []
    for speaker in speakers:
        heard = [rms(a / PCM_SCALE) for a, s in zip(clips.audio, clips.speakers, strict=True) if s == speaker]
        levels.append(f"{20 * np.log10(np.median(heard)):.1f} dBFS")
    lines.append("| level (median RMS) | " + " | ".join(levels) + " |")
    return "\n".join(lines)


def averaged(parser, runs: list[Path], clips: Clips, confusions_shown: int) -> None:
    """Each fold's models of every run, alone and with their posteriors averaged (folds in every run)."""
    folds = [{fold.name: fold for fold in folds_of(parser, run)} for run in runs]
    speakers = sorted(set.intersection(*(set(f) for f in folds)))
    print(
        f"| held-out speaker | {' | '.join(str(r) for r in runs)} | averaged |\n|---|"
        + "--:|" * (len(runs) + 1)
    )
    rows, mistakes = [], []
    for speaker in speakers:
        held_out = clips.subset([i for i, s in enumerate(clips.speakers) if s == speaker])
        row, posteriors = [], []
        for run in folds:
            stepper = Stepper(run[speaker] / "model.onnx")
            classes = KeywordModel.of(stepper.info).classes
            posteriors.append(softmax(clip_logits(stepper, held_out)))
            row.append(accuracy(held_out.labels, [classes[i] for i in posteriors[-1].argmax(axis=1)]))
        heard = [classes[i] for i in np.mean(posteriors, axis=0).argmax(axis=1)]
        rows.append([*row, accuracy(held_out.labels, heard)])
        mistakes.append(f"{speaker}: {confusions(held_out.labels, heard, confusions_shown)}")
        print(f"| {speaker} | " + " | ".join(f"{v:.1f}%" for v in rows[-1]) + " |", flush=True)
    print("| **mean** | " + " | ".join(f"{v:.1f}%" for v in np.mean(rows, axis=0)) + " |\n")
    if confusions_shown:
        print("\n".join(mistakes))


def main(argv: list[str] | None = None) -> int:
    parser = fold_arguments(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gains", type=lambda text: [float(v) for v in text.split(",")], default=[-24, -18, -12, -6, 0, 6]
    )
    parser.add_argument("--durations", action="store_true", help="each speaker's median clip length per word")
    parser.add_argument("--confusions", type=int, default=0, help="each fold's N most frequent mistakes")
    parser.add_argument("--ensemble", action="store_true", help="each fold's models' posteriors averaged")
    args = parser.parse_args(argv)
    clips = read_clips(args.data)
    if args.durations:
        print(durations(clips) + "\n")
    if args.ensemble:
        averaged(parser, args.runs, clips, args.confusions)
        return 0
    gains = args.gains
    head = " | ".join(f"{g:+g} dB" for g in gains)
    for run in args.runs:
        print(f"{run}: held-out clip accuracy at each gain\n")
        print(f"| held-out speaker | {head} |\n|---|" + "--:|" * len(gains))
        rows, mistakes = [], []
        for fold in folds_of(parser, run):
            held_out = clips.subset([i for i, s in enumerate(clips.speakers) if s == fold.name])
            heard = heard_at(fold / "model.onnx", held_out, gains)
            rows.append([accuracy(held_out.labels, heard[g]) for g in gains])
            mistakes.append(f"{fold.name}: {confusions(held_out.labels, heard[0.0], args.confusions)}")
            print(f"| {fold.name} | " + " | ".join(f"{v:.1f}%" for v in rows[-1]) + " |", flush=True)
        mean = np.mean(rows, axis=0)
        print("| **mean** | " + " | ".join(f"{v:.1f}%" for v in mean) + " |\n")
        if args.confusions:
            print("\n".join(mistakes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
