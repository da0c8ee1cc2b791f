"""Held out or refitted: the final training of a chosen configuration on a small data set.

JapaneseVowels' 4 speakers x 10 utterances (benchmarks/model_selection.py), the hand-set recipe (GRU
2x64, dropout 0.2, 400 steps, docs/results.md) trained once per seed several ways, and tested on every
test utterance of those speakers:

- ``held out``: ``edgernn train``'s own split (10 of the 40 validate), the best validation loss kept;
- ``refit``: ``--all-data``: all 40 train, the last weights kept (what ``edgernn search`` does with the
  configuration its cross-validation chose);
- ``refit, input noise 0.2``: the same with ``--input-noise 0.2``;
- ``refit, 600 steps``: as many passes over the data as a 3-fold trial of 400 steps made (what
  ``edgernn search`` does);
- ``refit, the learning rate decayed to 0``: the last weights from the end of a schedule that stops.

``--set full``: the 270 training utterances, tested on all 370 test utterances.

Prints the markdown table of docs/training.md.

    .venv/bin/python benchmarks/refit_small_data.py --seeds 6 --out /tmp/refit
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_selection import DATA, MODEL, SPEAKERS, test_accuracy, write_small_set  # noqa: E402  (a sibling script)

from edgernn.train import TrainConfig, train_task  # noqa: E402

STEPS = 400
WAYS = {
    "held out (`edgernn train`'s split validates, the best kept)": {},
    "refit (`--all-data`: every case trains, the last kept)": {"all_data": True},
    "refit, input noise 0.2": {"all_data": True, "input_noise": 0.2},
    "refit, 600 steps (a 3-fold trial's passes over the data)": {"all_data": True, "max_steps": 600},
    "refit, the learning rate decayed to 0": {"all_data": True, "min_lr_fraction": 0.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--ways",
        default="0,1,2",
        help="Which rows (0: held out, 1: refit, 2: refit with noise, 3: refit 600 steps, 4: refit to lr 0)",
    )
    parser.add_argument("--set", default="small", choices=("small", "full"),
                        help="small: 4 speakers x 10; full: all 270 training utterances, all 370 test")  # fmt: skip
    args = parser.parse_args()
    wanted = {int(w) for w in args.ways.split(",")}
    args.out.mkdir(parents=True, exist_ok=True)
    if args.set == "small":
        data, speakers = write_small_set(args.out / "vowels_4x10.ts"), SPEAKERS
    else:
        data, speakers = DATA / "japanese_vowels_train.ts", None
    rows = []
    for index, (name, overrides) in enumerate(WAYS.items()):
        if index not in wanted:
            continue
        accuracies = []
        for seed in range(args.seeds):
            settings = {"max_steps": STEPS, **overrides}
            config = TrainConfig(budget_minutes=None, batch_size=16, eval_every=25, seed=seed, **settings)
            result = train_task("classify", data, args.out / f"{args.set}-{index}-{seed}", MODEL, config,
                                progress=False, overwrite=True)  # fmt: skip
            accuracies.append(100 * test_accuracy(result.model, result.task.metadata["classes"], speakers))
            print(f"{name}, seed {seed}: {accuracies[-1]:.2f}%", file=sys.stderr, flush=True)
        rows.append(
            f"| {name} | {' '.join(f'{a:.1f}' for a in accuracies)} | {statistics.mean(accuracies):.2f}% | "
            f"{min(accuracies):.1f}-{max(accuracies):.1f} | {max(accuracies) - min(accuracies):.2f} |"
        )
    print(
        f"| final training | test accuracy %, seeds 0-{args.seeds - 1} | mean | min-max | spread (points) |"
    )
    print("|---|---|---:|---|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
