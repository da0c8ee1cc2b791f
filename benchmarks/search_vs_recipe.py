"""The searched model against the hand-set recipe on JapaneseVowels, per seed: test accuracy over the
test utterances, on the small set (4 speakers x 10 utterances, benchmarks/model_selection.py: every
test utterance of those speakers) and on the full set (270 training utterances, 370 test).

The recipe: GRU 2x64, dropout 0.2, 400 steps (docs/results.md), trained with ``edgernn train``'s
split. The search: ``edgernn search`` on the same training file (3-fold cross-validation: both sets
have up to 400 sequences), ``--trials`` trials of 400 steps each within a device budget (default a
Cortex-M4 with 256K of flash, 64K of RAM, 100 steps per second), the three best trials and the recipe's trial
cross-validated again on three fresh splits, where another configuration replaces the recipe's only
by more than one standard error of their paired fold-by-fold differences, and the chosen
configuration retrained on every training sequence with the same seed (600 steps: as many passes
over the data as each fold's 400 made). Neither sees the test file. The searched model's test
accuracy is given twice: its float32 weights' (PyTorch) and the deployed model's at the precision the
search chose (the deployment's C, built as a shared library and stepped through ``NativeStepper``; the
``integer`` precision through its bit-exact reference, calibrated on the training data as the
deployment was). The goals are judged on the deployed model's.

    .venv/bin/python benchmarks/search_vs_recipe.py --sets small,full --seeds 0,1,2 --trials 20 \\
        --out /tmp/search-vs-recipe
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_selection import DATA, MODEL, SPEAKERS, test_accuracy, write_small_set, write_test_set  # noqa: E402  (a sibling)

from edgernn.cost_model import load_cost_model  # noqa: E402
from edgernn.search import Search, SearchSettings, SearchSpace, parse_budget  # noqa: E402
from edgernn.search_result import run_search  # noqa: E402
from edgernn.train import TrainConfig, train_task  # noqa: E402

STEPS = 400
SETS = {"small": f"{len(SPEAKERS)} speakers x 10", "full": "all 270"}


def recipe(data: Path, out: Path, seed: int, speakers, resume: bool) -> float:
    from edgernn.checkpoint import load_checkpoint

    if resume and (out / "metrics.json").is_file():  # trained before the search was stopped
        checkpoint = load_checkpoint(out)
        return test_accuracy(checkpoint.model, checkpoint.train_config["metadata"]["classes"], speakers)
    config = TrainConfig(budget_minutes=None, max_steps=STEPS, batch_size=16, eval_every=25, seed=seed)
    result = train_task("classify", data, out, MODEL, config, progress=False, overwrite=True)
    return test_accuracy(result.model, result.task.metadata["classes"], speakers)


def deployed_accuracy(out: Path, device: str, precision: str, data: Path, test: Path) -> float:
    """The test accuracy of the search's deployment (``out``/deploy-DEVICE) at its ``precision``."""
    import tempfile

    from edgernn.export import quality
    from edgernn.export.c.build import build_shared_library
    from edgernn.runtime.native import NativeStepper

    model = out / "best" / "model.onnx"
    evaluation = quality.evaluation_data_from_model(model, test, validation_fraction=None)
    if precision == "integer":  # integer-only C: its reference, calibrated as the deployment was
        from edgernn.export.c.integer_writer import integer_model_for
        from edgernn.runtime.integer_ref import IntegerStepper

        integer, info, _, _ = integer_model_for(model, data)
        return quality.evaluate(IntegerStepper(integer, info), evaluation) / 100
    deployed = out / f"deploy-{device}"
    if json.loads((deployed / "deploy.json").read_text())["details"]["precision"] != precision:
        raise SystemExit(f"{deployed}: not the {precision} deployment the search reported")
    with tempfile.TemporaryDirectory() as tmp:
        stepper = NativeStepper(
            build_shared_library(deployed, "model", Path(tmp) / "libmodel.so"), name="model"
        )
        try:
            return quality.evaluate(stepper, evaluation) / 100
        finally:
            stepper.close()


def searched(data: Path, out: Path, seed: int, args, speakers, test: Path) -> tuple[float, float, str, float]:
    from edgernn.checkpoint import load_checkpoint

    cost_model = load_cost_model()
    settings = SearchSettings(trials=args.trials, trial_steps=STEPS, measure=False, seed=seed, task="classify",
                              space=SearchSpace())  # fmt: skip
    job = Search(str(data), out, args.device, parse_budget(args.budget, args.device, cost_model), settings,
                 cost_model, say=lambda line: print(f"  {line}", file=sys.stderr, flush=True))  # fmt: skip
    started = time.monotonic()
    resume = args.resume and (out / "search.db").is_file()  # a search not started yet starts
    summary = run_search(job, None, f"seed{seed}", resume=resume, progress=False)
    minutes = (time.monotonic() - started) / 60
    checkpoint = load_checkpoint(out / "best")
    chosen = summary["chosen"]
    label = f"{chosen['cell']} {chosen['num_layers']}x{chosen['hidden_size']} {chosen['precision']}"
    rows = summary["table"].splitlines()[1:]
    trained = sum(1 for r in rows if r.split()[1] in ("complete", "pruned") and "does not fit" not in r)
    label += f"; {trained} trials trained"
    if chosen.get("input_noise"):
        label += f", noise {chosen['input_noise']:g}"
    label += margin_note(summary)
    accuracy = test_accuracy(checkpoint.model, checkpoint.train_config["metadata"]["classes"], speakers)
    deployed = deployed_accuracy(out, args.device, chosen["precision"], data, test)
    return accuracy, deployed, label, minutes


def margin_note(summary: dict) -> str:
    """How the choice was made on the fresh splits: the recipe's trial kept (no other cleared the margin
    over it), or the chosen one's mean gain over it fold by fold and that gain's standard error."""
    chosen, margins = summary["chosen"], summary.get("margins", {})
    if chosen.get("recipe"):
        return "; the recipe's trial kept" + (", no other cleared the margin" if margins else "")
    verdict = margins.get(str(chosen["trial"]))
    if verdict is None:
        return ""
    return f"; {100 * verdict['gain']:+.2f} points a fold over the recipe's trial (s.e. {100 * verdict['standard_error']:.2f})"


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
            test = write_test_set(args.out / "vowels_4_test.ts")
        else:
            data, speakers, test = DATA / "japanese_vowels_train.ts", None, DATA / "japanese_vowels_test.ts"
        rows = []
        for seed in seeds:
            hand = recipe(data, args.out / f"{name}-recipe-{seed}", seed, speakers, args.resume)
            found, deployed, label, minutes = searched(data, args.out / f"{name}-search-{seed}", seed, args,
                                                       speakers, test)  # fmt: skip
            rows.append((seed, hand, deployed, found, label, minutes))
            print(f"{name} seed {seed}: recipe {100 * hand:.2f}%, search {100 * deployed:.2f}% deployed, "
                  f"{100 * found:.2f}% float32 ({label}), search {minutes:.1f} min", file=sys.stderr, flush=True)  # fmt: skip
        print(f"\nJapaneseVowels {SETS[name]}, {args.trials} trials, {args.device} {args.budget}")
        print(
            "| seed | hand-set GRU 2x64 | searched, deployed | searched, float32 | searched model | search minutes |"
        )
        print("|---:|---:|---:|---:|---|---:|")
        for seed, hand, deployed, found, label, minutes in rows:
            print(
                f"| {seed} | {100 * hand:.2f}% | {100 * deployed:.2f}% | {100 * found:.2f}% | {label} | {minutes:.1f} |"
            )
        for who, column in (("hand-set", 1), ("searched, deployed", 2), ("searched, float32", 3)):
            values = [r[column] for r in rows]
            print(f"{who}: mean {100 * statistics.mean(values):.2f}%, "
                  f"spread {100 * (max(values) - min(values)):.2f} points")  # fmt: skip
        hands, deployed = [r[1] for r in rows], [r[2] for r in rows]
        print(
            "deployed >= hand-set on every seed:", all(d >= h for d, h in zip(deployed, hands, strict=True))
        )
        spread, half = max(deployed) - min(deployed), (max(hands) - min(hands)) / 2
        print(f"deployed spread <= half the hand-set's: {spread <= half + 1e-9}", flush=True)


if __name__ == "__main__":
    main()
