"""Model selection on a small data set: the spread of test accuracy over seeds, before and after.

The data set: 4 speakers of UEA Japanese Vowels, 10 training utterances each (40 cases, 12 coefficients per
frame), tested on every test utterance of the same 4 speakers. Each recipe trains the same model once per
seed and measures the kept model's test accuracy:

- ``10% validation``: what edgernn did before: 4 validation cases (``min_validation_cases=0``);
- ``a quarter, at most 20 (default)``: the validation share grows on a small data set, here to 10 cases.

Both keep the model with the lowest validation loss, and both split stratified (every class in its share).

Prints the markdown table of docs/training.md.

Run:  python benchmarks/model_selection.py [--seeds 8] [--steps 400] [--out runs/selection]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from edgernn.models import ModelConfig
from edgernn.tasks import read_ts
from edgernn.train import TrainConfig, train_task

DATA = Path(__file__).parents[1] / "examples" / "data"
SPEAKERS, PER_SPEAKER = ("1", "2", "3", "4"), 10
RECIPES = {"10% validation": {"min_validation_cases": 0}, "a quarter, at most 20 (default)": {}}
MODEL = ModelConfig(hidden_size=64, num_layers=2, dropout=0.2)


def write_ts(path: Path, cases: list[tuple[np.ndarray, str]], name: str) -> Path:
    """``cases`` (frames of shape (T, 12), label) as a .ts file named ``name``."""
    lines = [f"@problemName {name}", "@timeStamps false", "@univariate false", "@data"]
    for frames, label in cases:  # one dimension per coefficient, values over time
        dims = [",".join(f"{v:.6g}" for v in frames[:, d]) for d in range(frames.shape[1])]
        lines.append(":".join([*dims, label]))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_small_set(path: Path) -> Path:
    """The first ``PER_SPEAKER`` training utterances of each of ``SPEAKERS``, as a .ts file."""
    sequences, labels = read_ts(DATA / "japanese_vowels_train.ts")
    cases = []
    for speaker in SPEAKERS:
        mine = [s for s, label in zip(sequences, labels, strict=True) if label == speaker][:PER_SPEAKER]
        cases += [(frames, speaker) for frames in mine]
    return write_ts(path, cases, "JapaneseVowels4x10")


def write_test_set(path: Path, speakers: tuple[str, ...] = SPEAKERS) -> Path:
    """Every test utterance of ``speakers``, as a .ts file (what the small set's models are tested on)."""
    lines = (DATA / "japanese_vowels_test.ts").read_text().splitlines()
    start = lines.index("@data") + 1
    header = [
        f"@classLabel true {' '.join(speakers)}" if line.startswith("@classLabel") else line
        for line in lines[:start]
    ]
    kept = [line for line in lines[start:] if line.rsplit(":", 1)[-1].strip() in speakers]
    path.write_text("\n".join(header + kept) + "\n")
    return path


def right_answers(model, classes: list[str], cases: list[tuple[np.ndarray, str]]) -> int:
    """How many of ``cases`` (frames, label) the model classifies right after their last frame."""
    model.eval()
    with torch.no_grad():
        return sum(classes[int(model(torch.from_numpy(x)[None])[0][0, -1].argmax())] == y for x, y in cases)


def test_accuracy(model, classes: list[str], speakers: tuple[str, ...] | None = SPEAKERS) -> float:
    """Accuracy after the last frame over every test utterance of ``speakers`` (None: all of them)."""
    sequences, labels = read_ts(DATA / "japanese_vowels_test.ts")
    cases = [
        (s, label)
        for s, label in zip(sequences, labels, strict=True)
        if speakers is None or label in speakers
    ]
    return right_answers(model, classes, cases) / len(cases)


def main(seeds: int, steps: int, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = write_small_set(out / "vowels_4x10.ts")
    rows = []
    for name, overrides in RECIPES.items():
        accuracies, validation = [], None
        for seed in range(seeds):
            config = TrainConfig(
                budget_minutes=None, max_steps=steps, batch_size=16, eval_every=25, learning_rate=5e-3,
                weight_decay=0.05, every_step_weight=0.2, input_noise=0.2, seed=seed, **overrides,
            )  # fmt: skip
            result = train_task(
                "classify",
                data,
                out / f"run-{len(rows)}-{seed}",
                MODEL,
                config,
                progress=False,
                overwrite=True,
            )
            validation = result.metrics["validation_size"]
            accuracies.append(test_accuracy(result.model, result.task.metadata["classes"]))
            print(f"{name}, seed {seed}: test accuracy {accuracies[-1]:.2%}", file=sys.stderr, flush=True)
        a = np.array(accuracies)
        rows.append(
            f"| {name} | {validation} | {' '.join(f'{x:.1%}' for x in a)} | {a.mean():.1%} | "
            f"{a.min():.1%}-{a.max():.1%} | {a.std():.1%} |"
        )
    print(
        f"| validation split | validation cases | test accuracy, seeds 0-{seeds - 1} | mean | min-max | std |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path("runs/selection"))
    args = parser.parse_args()
    main(args.seeds, args.steps, args.out)
