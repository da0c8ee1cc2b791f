"""Input noise as the search's starting point, measured on JapaneseVowels' training file alone.

``edgernn search`` starts a classifier's study from the hand-set recipe (GRU 2x64, dropout 0.2, learning
rate 3e-3) with some input noise (``train --input-noise``). Which level is measured here without the test
file, so that the test utterances judging the search (benchmarks/search_vs_recipe.py) never chose it:

- ``small``: the small set's shape (4 speakers x 10 utterances) drawn three times from the training file
  (speakers 1-4, 5-8 and 6-9, the first 10 of each speaker's 30 utterances), each model tested on those
  speakers' other 20 training utterances (80);
- ``full``: 3-fold cross-validation over all 270 training utterances (the folds drawn per seed), each
  model tested on its held-out 90.

Every model is the recipe refitted as the search refits its choice: every case of its training part
trains (``all_data``), 600 steps, the last weights kept. Each row counts the right answers over every
model (3 draws or folds x ``--seeds`` seeds) and compares them with no noise on the same draws and seeds.

Prints the markdown table of docs/plan.md.

    .venv/bin/python benchmarks/noise_prior.py --noise 0,0.2,0.3,0.4,0.5,0.6,0.8 --seeds 0,1,2 --jobs 2 \\
        --out /tmp/noise-prior
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from keyword_loso import fold_pool  # noqa: E402  (siblings)
from model_selection import DATA, MODEL, right_answers, write_ts  # noqa: E402

REFIT_STEPS = 600  # as many passes over the data as a 3-fold trial of 400 steps (edgernn search's refit)
SUBSETS = (("1", "2", "3", "4"), ("5", "6", "7", "8"), ("6", "7", "8", "9"))
PER_SPEAKER = 10


def parts(name: str, draw: int, seed: int, cases: list) -> tuple[list, list]:
    """The training and test cases of one draw (small) or fold (full)."""
    if name == "small":
        train, test = [], []
        for speaker in SUBSETS[draw]:
            mine = [c for c in cases if c[1] == speaker]
            train += mine[:PER_SPEAKER]
            test += mine[PER_SPEAKER:]
        return train, test
    order = np.random.default_rng(1000 + seed).permutation(len(cases))
    held = set(order[draw::3].tolist())
    return ([c for i, c in enumerate(cases) if i not in held], [c for i, c in enumerate(cases) if i in held])


def one_model(job: tuple[str, int, int, float, Path]) -> tuple[str, int, int, float, int, int]:
    """Train the recipe with ``noise`` on one draw or fold; its right answers on the held-out part."""
    import torch

    from edgernn.tasks import read_ts
    from edgernn.train import TrainConfig, train_task

    name, draw, seed, noise, out = job
    torch.set_num_threads(1)
    sequences, labels = read_ts(DATA / "japanese_vowels_train.ts")
    train, test = parts(name, draw, seed, list(zip(sequences, labels, strict=True)))
    where = out / f"{name}{draw}-seed{seed}-noise{noise:g}"
    where.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(budget_minutes=None, max_steps=REFIT_STEPS, batch_size=16, eval_every=25, seed=seed,
                         all_data=True, input_noise=noise)  # fmt: skip
    result = train_task("classify", write_ts(where / "train.ts", train, "JapaneseVowelsPart"), where / "run",
                        MODEL, config, progress=False, overwrite=True)  # fmt: skip
    right = right_answers(result.model, result.task.metadata["classes"], test)
    return name, draw, seed, noise, int(right), len(test)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--noise", default="0,0.2,0.3,0.4,0.5,0.6", help="Input noise levels (0 first)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sets", default="small,full")
    parser.add_argument("--jobs", type=int, default=2, help="Models trained at once (one thread each)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    levels = [float(n) for n in args.noise.split(",")]
    if levels[0] != 0.0:
        parser.error(f"--noise must start with 0 (the rows are compared with it), given {args.noise!r}")
    seeds, sets = [int(s) for s in args.seeds.split(",")], args.sets.split(",")
    if not set(sets) <= {"small", "full"}:
        parser.error(f"--sets: expected small, full or small,full, given {args.sets!r}")
    jobs = [(name, draw, seed, noise, args.out) for name in sets for draw in range(3) for seed in seeds
            for noise in levels]  # fmt: skip
    right: dict[tuple, dict] = defaultdict(dict)
    totals: dict[tuple, int] = defaultdict(int)
    with fold_pool(args.jobs) as pool:
        for name, draw, seed, noise, correct, cases in pool.map(one_model, jobs):
            right[(name, noise)][(draw, seed)] = correct
            totals[(name, noise)] += cases
            print(
                f"{name} {draw} seed {seed} noise {noise:g}: {correct}/{cases}", file=sys.stderr, flush=True
            )
    header = ["input noise"]
    for name in sets:
        header += [f"{name}: right", f"{name}: against no noise (better, worse models)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---:|" * len(header))
    for noise in levels:
        cells = [f"{noise:g}"]
        for name in sets:
            mine, none = right[(name, noise)], right[(name, 0.0)]
            total = totals[(name, noise)]
            cells.append(f"{sum(mine.values())}/{total} ({100 * sum(mine.values()) / total:.2f}%)")
            if noise == 0.0:
                cells.append("")
                continue
            changes = [mine[k] - none[k] for k in mine]
            cells.append(f"{sum(changes):+d} ({sum(c > 0 for c in changes)}, {sum(c < 0 for c in changes)})")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
