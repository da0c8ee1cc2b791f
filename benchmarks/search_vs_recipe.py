"""The searched model against the hand-set recipe on JapaneseVowels, per seed: test accuracy over the
test utterances, on the small set (4 speakers x 10 utterances, benchmarks/model_selection.py: every
test utterance of those speakers) and on the full set (270 training utterances, 370 test).

The recipe: GRU 2x64, dropout 0.2, 400 steps (docs/results.md), trained with ``edgernn train``'s
split. The search: ``edgernn search`` on the same training file (3-fold cross-validation: both sets
have up to 400 sequences), ``--trials`` trials of 400 steps each within a device budget (default a
Cortex-M4 with 256K of flash, 64K of RAM, 100 steps per second), the chosen configuration retrained on
every training sequence with the same seed. Neither sees the test file. Test accuracy is the float32
weights' (the model the deployment quantizes where the search chose int8).

    .venv/bin/python benchmarks/search_vs_recipe.py --sets small,full --seeds 0,1,2 --trials 20 \\
        --out /tmp/search-vs-recipe
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_selection import DATA, MODEL, SPEAKERS, write_small_set  # noqa: E402  (a sibling script)

from edgernn.cost_model import load_cost_model  # noqa: E402
from edgernn.search import Search, SearchSettings, SearchSpace, parse_budget  # noqa: E402
from edgernn.search_result import run_search  # noqa: E402
from edgernn.tasks import read_ts  # noqa: E402
from edgernn.train import TrainConfig, train_task  # noqa: E402

STEPS = 400
SETS = {"small": f"{len(SPEAKERS)} speakers x 10", "full": "all 270"}


def test_accuracy(model, classes: list[str], speakers: tuple[str, ...] | None) -> float:
    """Accuracy after the last frame over the test utterances (of ``speakers``, None: all)."""
    sequences, labels = read_ts(DATA / "japanese_vowels_test.ts")
    cases = [(torch.from_numpy(s), label) for s, label in zip(sequences, labels, strict=True)
             if speakers is None or label in speakers]  # fmt: skip
    model.eval()
    with torch.no_grad():
        correct = sum(classes[int(model(x[None])[0][0, -1].argmax())] == label for x, label in cases)
    return correct / len(cases)


def recipe(data: Path, out: Path, seed: int, speakers, resume: bool) -> float:
    from edgernn.checkpoint import load_checkpoint

    if resume and (out / "metrics.json").is_file():  # trained before the search was stopped
        checkpoint = load_checkpoint(out)
        return test_accuracy(checkpoint.model, checkpoint.train_config["metadata"]["classes"], speakers)
    config = TrainConfig(budget_minutes=None, max_steps=STEPS, batch_size=16, eval_every=25, seed=seed)
    result = train_task("classify", data, out, MODEL, config, progress=False, overwrite=True)
    return test_accuracy(result.model, result.task.metadata["classes"], speakers)


def searched(data: Path, out: Path, seed: int, args, speakers) -> tuple[float, str, float]:
    from edgernn.checkpoint import load_checkpoint

    cost_model = load_cost_model()
    settings = SearchSettings(trials=args.trials, trial_steps=STEPS, measure=False, seed=seed, task="classify",
                              space=SearchSpace())  # fmt: skip
    job = Search(str(data), out, args.device, parse_budget(args.budget, args.device, cost_model), settings,
                 cost_model, say=lambda line: print(f"  {line}", file=sys.stderr, flush=True))  # fmt: skip
    started = time.monotonic()
    summary = run_search(job, None, f"seed{seed}", resume=args.resume, progress=False)
    minutes = (time.monotonic() - started) / 60
    checkpoint = load_checkpoint(out / "best")
    chosen = summary["chosen"]
    label = f"{chosen['cell']} {chosen['num_layers']}x{chosen['hidden_size']} {chosen['precision']}"
    rows = summary["table"].splitlines()[1:]
    trained = sum(1 for r in rows if r.split()[1] in ("complete", "pruned") and "does not fit" not in r)
    label += f"; {trained} trials trained"
    if chosen.get("input_noise"):
        label += f", noise {chosen['input_noise']:g}"
    if chosen["trial"] == 0:
        label += " (the recipe's trial)"
    accuracy = test_accuracy(checkpoint.model, checkpoint.train_config["metadata"]["classes"], speakers)
    return accuracy, label, minutes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sets", default="small", help="small, full, or small,full")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--device", default="cortex-m4")
    parser.add_argument("--budget", default="flash=256K,ram=64K,rate=100")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resume", action="store_true",
                        help="Continue the searches stopped in --out (Ctrl-C), up to --trials trials")  # fmt: skip
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in args.sets.split(","):
        if name not in SETS:
            parser.error(f"--sets {name!r}: expected small or full")
        if name == "small":
            data, speakers = write_small_set(args.out / "vowels_4x10.ts"), SPEAKERS
        else:
            data, speakers = DATA / "japanese_vowels_train.ts", None
        rows = []
        for seed in seeds:
            hand = recipe(data, args.out / f"{name}-recipe-{seed}", seed, speakers, args.resume)
            found, label, minutes = searched(data, args.out / f"{name}-search-{seed}", seed, args, speakers)
            rows.append((seed, hand, found, label, minutes))
            print(f"{name} seed {seed}: recipe {100 * hand:.2f}%, search {100 * found:.2f}% ({label}), "
                  f"search {minutes:.1f} min", file=sys.stderr, flush=True)  # fmt: skip
        print(f"\nJapaneseVowels {SETS[name]}, {args.trials} trials, {args.device} {args.budget}")
        print("| seed | hand-set GRU 2x64 | searched | searched model | search minutes |")
        print("|---:|---:|---:|---|---:|")
        for seed, hand, found, label, minutes in rows:
            print(f"| {seed} | {100 * hand:.2f}% | {100 * found:.2f}% | {label} | {minutes:.1f} |")
        for who, values in (("hand-set", [r[1] for r in rows]), ("searched", [r[2] for r in rows])):
            print(f"{who}: mean {100 * statistics.mean(values):.2f}%, "
                  f"spread {100 * (max(values) - min(values)):.2f} points")  # fmt: skip
        print("searched >= hand-set on every seed:", all(r[2] >= r[1] for r in rows), flush=True)


if __name__ == "__main__":
    main()
