"""The searched model against the hand-set recipe on JapaneseVowels' small set (4 speakers x 10
utterances, benchmarks/model_selection.py), per seed: test accuracy over every test utterance of those
speakers.

The recipe: GRU 2x64, dropout 0.2, 400 steps (docs/results.md). The search: ``edgernn search`` on the
same 40 sequences (3-fold cross-validation), ``--trials`` trials of 400 steps each, within a device budget
(default a Cortex-M4 with 256K of flash, 64K of RAM, 100 steps per second), the chosen model retrained
with the same seed.

    .venv/bin/python benchmarks/search_vs_recipe.py --seeds 0,1,2 --trials 20 --out /tmp/search-vs-recipe
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_selection import MODEL, SPEAKERS, test_accuracy, write_small_set  # noqa: E402  (a sibling script)

from edgernn.cost_model import load_cost_model  # noqa: E402
from edgernn.search import Search, SearchSettings, SearchSpace, parse_budget  # noqa: E402
from edgernn.search_result import run_search  # noqa: E402
from edgernn.train import TrainConfig, train_task  # noqa: E402

STEPS = 400


def recipe(data: Path, out: Path, seed: int) -> float:
    config = TrainConfig(budget_minutes=None, max_steps=STEPS, batch_size=16, eval_every=25, seed=seed)
    result = train_task("classify", data, out, MODEL, config, progress=False, overwrite=True)
    return test_accuracy(result.model, result.task.metadata["classes"])


def searched(data: Path, out: Path, seed: int, trials: int, device: str, budget: str) -> tuple[float, str]:
    from edgernn.checkpoint import load_checkpoint

    cost_model = load_cost_model()
    settings = SearchSettings(trials=trials, trial_steps=STEPS, measure=False, seed=seed, task="classify",
                              space=SearchSpace())  # fmt: skip
    job = Search(str(data), out, device, parse_budget(budget, device, cost_model), settings, cost_model,
                 say=lambda line: print(f"  {line}", file=sys.stderr, flush=True))  # fmt: skip
    summary = run_search(job, None, f"seed{seed}", resume=False, progress=False)
    checkpoint = load_checkpoint(out / "best")
    chosen = summary["chosen"]
    label = f"{chosen['cell']} {chosen['num_layers']}x{chosen['hidden_size']} {chosen['precision']}"
    return test_accuracy(checkpoint.model, checkpoint.train_config["metadata"]["classes"]), label


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--device", default="cortex-m4")
    parser.add_argument("--budget", default="flash=256K,ram=64K,rate=100")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = write_small_set(args.out / "vowels_4x10.ts")
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        hand = recipe(data, args.out / f"recipe-{seed}", seed)
        found, label = searched(
            data, args.out / f"search-{seed}", seed, args.trials, args.device, args.budget
        )
        rows.append((seed, hand, found, label))
        print(
            f"seed {seed}: recipe {100 * hand:.2f}%, search {100 * found:.2f}% ({label})",
            file=sys.stderr,
            flush=True,
        )
    print(f"JapaneseVowels {len(SPEAKERS)} speakers x 10, {args.trials} trials, {args.device} {args.budget}")
    print("| seed | hand-set GRU 2x64 | searched | searched model |")
    print("|---:|---:|---:|---|")
    for seed, hand, found, label in rows:
        print(f"| {seed} | {100 * hand:.2f}% | {100 * found:.2f}% | {label} |")
    for name, values in (("hand-set", [r[1] for r in rows]), ("searched", [r[2] for r in rows])):
        print(
            f"{name}: mean {100 * statistics.mean(values):.2f}%, spread {100 * (max(values) - min(values)):.2f} points"
        )


if __name__ == "__main__":
    main()
