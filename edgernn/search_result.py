"""What a search leaves in its run directory: every trial in a table (trials.csv) and a plot
(trials.png: the metric against cycles and against flash), the chosen configuration retrained with
``edgernn train`` (best/), exported (best/model.onnx), deployed for the device and verified
(deploy-DEVICE/), measured there, and the ``edgernn train`` command that reproduces it (search.json)."""

from __future__ import annotations

import csv
import io
import json
import math
import shlex
import statistics
from pathlib import Path
from typing import Any

from edgernn.runtime.errors import ParityError
from edgernn.runtime.files import atomic_write_bytes, atomic_write_text
from edgernn.search import SEQUENCE_TASKS, Draw, Search, draw_from_params, shape_of

CANDIDATES = 3  # the best trials retrained in turn while a deploy check refuses the retrained model
CONFIRMED = 3  # the best trials cross-validated again (with the recipe's) before one is chosen
CONFIRM_SPLITS = 3  # on this many other splits, each fold with the split's own training seed
MARGIN_STANDARD_ERRORS = 1.0  # a challenger replaces the recipe by more than this many standard errors
COLUMNS = (
    "trial", "state", "cell", "num_layers", "hidden_size", "embedding_size", "precision", "learning_rate",
    "seq_len", "dropout", "input_noise", "value", "val_loss", "cycles", "flash_bytes", "ram_bytes", "costs",
    "fits", "note",
)  # fmt: skip


def trial_rows(study) -> list[dict[str, Any]]:
    """One row per trial: its draw, its value, and its costs (measured where measured, else predicted)."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        measured = trial.user_attrs.get("measured")
        cost = measured or trial.user_attrs.get("predicted") or {}
        fits = trial.user_attrs.get("fits_measured", trial.user_attrs.get("fits"))
        rows.append({
            "trial": trial.number,
            "state": trial.state.name.lower(),
            **{k: trial.params.get(k) for k in COLUMNS[2:11]},
            "value": trial.values[0] if trial.values else _last(trial.intermediate_values),
            "val_loss": trial.user_attrs.get("val_loss"),
            "cycles": cost.get("cycles"),
            "flash_bytes": cost.get("flash_bytes"),
            "ram_bytes": cost.get("ram_bytes"),
            "costs": "measured" if measured else ("predicted" if cost else ""),
            "fits": fits,
            "note": trial.user_attrs.get("pruned") or trial.user_attrs.get("measure_error") or "",
        })  # fmt: skip
    return rows


def _last(curve: dict[int, float]) -> float | None:
    """A trial pruned on its learning curve: the last value it reported."""
    return curve[max(curve)] if curve else None


def write_csv(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def table(rows: list[dict[str, Any]], metric: str) -> str:
    lines = [
        f"{'trial':>5} {'state':<8} {'model':<16} {'prec':<7} {'lr':>8} {metric:>10} {'cycles':>11} "
        f"{'flash B':>9} {'RAM B':>7}  note"
    ]
    for r in rows:
        model = f"{r['cell'] or '?'} {r['num_layers'] or '?'}x{r['hidden_size'] or '?'}"
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        lr = "" if r["learning_rate"] is None else f"{r['learning_rate']:.2g}"
        number = lambda v: "" if v is None else f"{v:,.0f}"  # noqa: E731
        lines.append(
            f"{r['trial']:>5} {r['state']:<8} {model:<16} {r['precision'] or '':<7} {lr:>8} {value:>10} "
            f"{number(r['cycles']):>11} {number(r['flash_bytes']):>9} {number(r['ram_bytes']):>7}  {r['note']}"
        )
    return "\n".join(lines)


def plot(
    rows: list[dict[str, Any]], metric: str, chosen: int | None, front: list[int], limits: dict
) -> bytes:
    """PNG: the metric against cycles per step and against flash, one point per trial with costs (a
    pruned trial at its last reported value), the budget's limits as dotted lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, key, label in (
        (axes[0], "cycles", "cycles per step"),
        (axes[1], "flash_bytes", "flash (bytes)"),
    ):
        for state, colour in (("complete", "tab:blue"), ("pruned", "tab:gray")):
            points = [
                r for r in rows if r["state"] == state and r["value"] is not None and r[key] is not None
            ]
            axis.scatter([r[key] for r in points], [r["value"] for r in points], c=colour, label=state, s=22)
        on_front = sorted((r for r in rows if r["trial"] in front), key=lambda r: r[key])
        if len(on_front) > 1:
            axis.plot(
                [r[key] for r in on_front],
                [r["value"] for r in on_front],
                "--",
                c="tab:orange",
                label="Pareto front",
            )
        best = [r for r in rows if r["trial"] == chosen]
        if best:
            axis.scatter([best[0][key]], [best[0]["value"]], marker="*", s=160, c="tab:red", label="chosen")
        if limits.get(key):
            axis.axvline(limits[key], ls=":", c="tab:red", label="budget")
        axis.set_xlabel(label)
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def _limits(search: Search) -> dict:
    budget = search.budget
    cycles = budget.step_us * budget.clock_mhz if budget.step_us is not None else None
    return {"cycles": cycles, "flash_bytes": budget.flash_bytes}


def choose(study, search: Search):
    """The trained trials that fit (measured where measured) and deploy, best first: by the metric, or
    on a multi-objective search those of the Pareto front first; equal metrics (cross-validated accuracy
    moves in steps of one sequence) by the lower validation loss. Returns (ranked trials, front numbers)."""
    import optuna

    fitting = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.user_attrs.get("fits_measured", t.user_attrs.get("fits", True))
        and t.user_attrs.get("deployable", True)
    ]
    front = [t.number for t in study.best_trials] if search.settings.objectives == 2 else []
    sign = -1 if search.direction == "maximize" else 1

    def key(t):
        return (t.number not in front, sign * t.values[0], t.user_attrs.get("val_loss", 0.0), t.number)

    return sorted(fitting, key=key), front


def confirm(search: Search, study, ranked: list) -> list:
    """A refit search (cross-validated classification, one objective): the ``CONFIRMED`` best trials,
    and the recipe's trial wherever it ranked, cross-validated again on ``CONFIRM_SPLITS`` other splits
    (each with its own training seed: ``--seed`` + 1, + 2, ...), the same splits for every candidate.
    The best of many noisy estimates is likely a lucky one, and the estimate that put a trial among the
    best flatters it: only the fresh estimates rank, and a challenger replaces the recipe only where it
    clears the margin (``beats_recipe``: fold by fold on those splits). Returned: the challengers that
    clear it, by their fresh mean (the lower validation loss on a tie), then the recipe's trial, then the
    other candidates so ranked, then the rest as ranked; without the recipe's trial, the candidates by
    their fresh mean. What is measured is kept in the study (``confirmed``), so a resumed or second
    worker's finish reuses it."""
    if not search.refit or search.settings.objectives != 1 or len(ranked) < 2:
        return ranked
    candidates = ranked[:CONFIRMED] + [t for t in ranked[CONFIRMED:] if is_recipe(t)]
    confirmed = _cross_validate_again(search, study, candidates)

    def again(trial) -> tuple[float, float, int]:
        fresh = confirmed[str(trial.number)]
        return -statistics.mean(fresh["values"]), statistics.mean(fresh["losses"]), trial.number

    top = sorted(candidates, key=again)
    numbers = {t.number for t in candidates}
    rest = [t for t in ranked if t.number not in numbers]
    recipe = next((t for t in candidates if is_recipe(t)), None)
    if recipe is None:
        return top + rest
    incumbent = confirmed[str(recipe.number)]
    folds = len(incumbent["values"]) // len(incumbent["seeds"])
    verdicts = {}
    for trial in top:
        if trial is not recipe:
            verdicts[trial.number] = beats_recipe(
                confirmed[str(trial.number)]["values"], incumbent["values"], folds
            )
            search.say(describe_margin(trial.number, verdicts[trial.number]))
    study.set_user_attr("margins", {str(k): v for k, v in verdicts.items()})
    winners = [t for t in top if verdicts.get(t.number, {}).get("clears")]
    others = [t for t in top if t is not recipe and t not in winners]
    return winners + [recipe] + others + rest


def _cross_validate_again(search: Search, study, candidates: list) -> dict:
    """Each candidate cross-validated on the ``CONFIRM_SPLITS`` fresh splits (reusing what the study
    holds): {trial number: {"seeds", "values", "losses"}}, fold values in split-then-fold order."""
    seeds = [search.settings.seed + 1 + split for split in range(CONFIRM_SPLITS)]
    confirmed = dict(study.user_attrs.get("confirmed", {}))
    for trial in candidates:
        if confirmed.get(str(trial.number), {}).get("seeds") == seeds:
            continue
        values, losses = [], []
        for split, seed in enumerate(seeds):
            folder = search.run_dir / "trials" / f"{trial.number:04d}" / f"confirm{split + 1}"
            more = search.cross_validate(draw_of(trial, search), folder, seed)
            values += more[0]
            losses += more[1]
        confirmed[str(trial.number)] = {"seeds": seeds, "values": values, "losses": losses}
        study.set_user_attr("confirmed", confirmed)
        search.say(f"trial {trial.number} cross-validated again on {len(seeds)} other splits: accuracy "
                   f"{statistics.mean(values):.4f}")  # fmt: skip
    return confirmed


def beats_recipe(challenger: list[float], recipe: list[float], folds: int) -> dict:
    """Whether a challenger's fold accuracies beat the recipe's on the same folds (the same splits and
    training seeds: paired, ``folds`` a split) by the margin: the mean of the paired differences must
    be above zero and exceed ``MARGIN_STANDARD_ERRORS`` of its standard errors (the one-standard-error
    rule). The folds of repeated cross-validation share their training sequences, so the spread of their
    differences understates the mean's uncertainty: the standard error is Nadeau and Bengio's corrected
    one, the differences' standard deviation times sqrt(1 / n + held / trained) for n differences and a
    fold holding out 1 / ``folds`` of the data (Machine Learning 52, 2003). A tie keeps the recipe, and
    so does a gain of a few sequences the folds disagree on; a gain every fold agrees on clears it.
    Returns the mean difference, its standard error, the folds and ``clears``."""
    if len(challenger) != len(recipe) or len(recipe) < 2 or folds < 2:
        raise ValueError(f"paired fold values: expected two lists of the same length (2 or more) from "
                         f"2 or more folds, given {len(challenger)} and {len(recipe)}, {folds} folds")  # fmt: skip
    differences = [c - r for c, r in zip(challenger, recipe, strict=True)]
    gain = statistics.mean(differences)
    error = statistics.stdev(differences) * math.sqrt(1 / len(differences) + 1 / (folds - 1))
    clears = gain > 0 and gain > MARGIN_STANDARD_ERRORS * error + 1e-12
    return {"gain": gain, "standard_error": error, "folds": len(differences), "clears": clears}


def describe_margin(number: int, verdict: dict) -> str:
    outcome = "clears the margin" if verdict["clears"] else "does not clear the margin: the recipe stays"
    return (f"trial {number} against the recipe's trial, fold by fold on the same {verdict['folds']} folds: "
            f"{100 * verdict['gain']:+.2f} points a fold, standard error {100 * verdict['standard_error']:.2f}: "
            f"{outcome}")  # fmt: skip


def is_recipe(trial) -> bool:
    """The study's first, enqueued trial: the hand-set recipe (or its nearest fitting configuration)."""
    return "fixed_params" in trial.system_attrs


def draw_of(trial, search: Search) -> Draw:
    """The trial's configuration as the Draw it was made from."""
    return draw_from_params(trial.params)


def train_command(search: Search, chosen: Draw, out: Path) -> str:
    """The ``edgernn train`` line that trains exactly what the search retrained."""
    _, config = search.retrain_config(chosen)
    model = chosen.model
    parts = [
        "edgernn", "train", search.data_path, "-o", str(out), "--task", search.settings.task,
        "--cell", model["cell"], "--num-layers", str(model["num_layers"]), "--hidden-size", str(model["hidden_size"]),
    ]  # fmt: skip
    if model.get("embedding_size"):
        parts += ["--embedding-size", str(model["embedding_size"])]
    parts += ["--dropout", repr(model["dropout"]), "--lr", repr(config.learning_rate)]
    if search.settings.task not in SEQUENCE_TASKS:
        parts += ["--seq-len", str(config.seq_len)]
    if config.input_noise:
        parts += ["--input-noise", repr(config.input_noise)]
    if config.all_data:
        parts.append("--all-data")
    parts += [
        "--steps", str(config.max_steps), "--eval-every", str(config.eval_every),
        "--warmup-steps", str(config.warmup_steps), "--checkpoint-every", str(config.checkpoint_every),
        "--seed", str(config.seed),
    ]  # fmt: skip
    return shlex.join(parts)


def retrain_and_deploy(search: Search, chosen: Draw, progress: bool) -> dict:
    """Retrain ``chosen`` with ``edgernn train`` (best/): on every sequence where the trials were
    cross-validated, else on its own split; export it (verified), deploy it for the device's C at its
    precision (verified on this machine) and measure it there."""
    from edgernn.export import export_run
    from edgernn.export.deploy import deploy
    from edgernn.train import train_task

    model_config, train_config = search.retrain_config(chosen)
    best = search.run_dir / "best"
    result = train_task(search.settings.task, search.data_path, best, model_config, train_config,
                        progress="lines" if progress else False, overwrite=True)  # fmt: skip
    model = best / "model.onnx"
    export_run(best, model)
    deployed = deploy(model, "c", search.run_dir / f"deploy-{search.device}", precision=chosen.precision,
                      data=search.deploy_data(chosen.precision))  # fmt: skip
    done = {
        "run_dir": str(best),
        "model": str(model),
        "deployed": str(deployed.out_dir),
        "deploy_checks": deployed.checks,
        "best_val_loss": result.metrics["best_val_loss"],
        "best_val_accuracy": result.metrics["best_val_accuracy"],
        "predicted": search.cost_model.predict(
            search.device, chosen.precision, shape_of(chosen, search.io)
        ).to_dict(search.budget.clock_mhz),
        "command": train_command(search, chosen, best),
    }
    if search.settings.measure:
        from edgernn.export.c.devices.bench import bench_device

        bench = bench_device(model, search.device, precisions=(chosen.precision,), clock_mhz=search.budget.clock_mhz,
                             steps=20)  # fmt: skip
        done["measured"] = bench[0].results[0].to_dict()
        done["self_test_on_device"] = "passed"
    return done


def finish(search: Search, study, progress: bool) -> dict:
    """Write trials.csv, trials.png and search.json; retrain, export, deploy and measure the chosen."""
    metric = "accuracy" if search.direction == "maximize" else "val loss"
    rows = trial_rows(study)
    ranked, front = choose(study, search)
    ranked = confirm(search, study, ranked)
    atomic_write_bytes(search.run_dir / "trials.csv", write_csv(rows))
    atomic_write_bytes(
        search.run_dir / "trials.png",
        plot(rows, metric, ranked[0].number if ranked else None, front, _limits(search)),
    )
    summary: dict[str, Any] = {
        "study": study.study_name,
        "metric": metric,
        "direction": search.direction,
        "folds": search.folds,
        "search": study.user_attrs.get("search"),
        "trials": len(rows),
        "pareto_front": front,
        "confirmed": study.user_attrs.get("confirmed", {}),
        "margins": study.user_attrs.get("margins", {}),
        "table": table(rows, metric),
    }
    summary["refused"] = []
    for candidate in ranked[:CANDIDATES]:
        chosen = draw_of(candidate, search)
        try:
            summary["result"] = retrain_and_deploy(search, chosen, progress)
        except ParityError as exc:  # the retrained model failed a deploy check (its C's self-test, the
            # int8 gates): the next best
            summary["refused"].append({"trial": candidate.number, "error": " ".join(str(exc).split())[:300]})
            continue
        summary["chosen"] = {"trial": candidate.number, "value": candidate.values[0], **chosen.model,
                             **chosen.train, "precision": chosen.precision}  # fmt: skip
        again = summary["confirmed"].get(str(candidate.number))
        if again:
            summary["chosen"]["confirmed_value"] = statistics.mean(again["values"])
        summary["chosen"]["recipe"] = is_recipe(candidate)
        break
    atomic_write_text(search.run_dir / "search.json", json.dumps(summary, indent=2) + "\n")
    return summary


def to_text(summary: dict) -> str:
    out = [summary["table"], ""]
    if summary["pareto_front"]:
        out.append(
            f"Pareto front ({summary['metric']} against cycles): trials {', '.join(map(str, summary['pareto_front']))}"
        )
    for refused in summary.get("refused", []):
        out.append(f"trial {refused['trial']} retrained was refused at deploy: {refused['error']}")
    chosen = summary.get("chosen")
    if chosen is None:
        out.append("no trial finished within the budget and deployed: nothing chosen")
        return "\n".join(out) + "\n"
    result = summary["result"]
    if chosen.get("recipe") and summary.get("margins"):
        out.append("the recipe's trial kept: no other cleared the margin over it on the fresh splits")
    again = f", {chosen['confirmed_value']:.4f} on other splits" if "confirmed_value" in chosen else ""
    out.append(f"chosen: trial {chosen['trial']} ({summary['metric']} {chosen['value']:.4f}{again}): {chosen['cell']} "
               f"{chosen['num_layers']}x{chosen['hidden_size']} {chosen['precision']}")  # fmt: skip
    out.append(
        f"retrained: {result['run_dir']} (val loss {result['best_val_loss']:.4f}); exported: {result['model']}"
    )
    out.append(f"deployed and verified: {result['deployed']}")
    if "measured" in result:
        m = result["measured"]
        out.append(
            f"on {m['device']} (self-test passed): {m['instructions']['median']:,.0f} instructions, "
            f"{m['cycles']['estimate']:,} cycles (est.), {m['us_per_step']:,} us/step at {m['clock_mhz']:g} MHz, "
            f"{m['flash_bytes']:,} B flash, {m['ram_bytes'] + m['stack_bytes']:,} B RAM with the stack"
        )
    out.append(f"reproduce: {result['command']}")
    return "\n".join(out) + "\n"


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C: the study keeps every finished trial; the message names the best so far and --resume."""


def run_search(search: Search, storage: str | None, study_name: str, resume: bool, progress: bool) -> dict:
    """Load the data, open the study, run trials, then ``finish``. Ctrl-C raises SearchInterrupted."""
    from edgernn.search import check_settings
    from edgernn.search_study import open_study, run_trials

    check_settings(search.settings)
    search.load()
    search.run_dir.mkdir(parents=True, exist_ok=True)
    recipe = search.recipe()
    study = open_study(search.run_dir, storage, study_name, search.direction, search.settings,
                       search.fingerprint(), resume, recipe)  # fmt: skip
    try:
        run_trials(search, study)
    except KeyboardInterrupt:
        rows = trial_rows(study)
        atomic_write_bytes(search.run_dir / "trials.csv", write_csv(rows))
        ranked, _ = choose(study, search)
        so_far = (
            f"the best so far: trial {ranked[0].number}, {describe(ranked[0])}"
            if ranked
            else "no trial finished yet"
        )
        raise SearchInterrupted(
            f"search interrupted after {len(rows)} trials; {so_far}; the study is kept in "
            f"{storage or search.run_dir / 'search.db'}: continue with the same command and --resume"
        ) from None
    return finish(search, study, progress)


def describe(trial) -> str:
    p = trial.params
    return f"{p['cell']} {p['num_layers']}x{p['hidden_size']} {p['precision']}, value {trial.values[0]:.4f}"
