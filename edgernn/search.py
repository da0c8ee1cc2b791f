"""``edgernn search``: the best model that fits a device, found with Optuna (docs/plan.md).

Each trial draws a cell, layers, hidden size, embedding, learning rate, sequence length, dropout and
precision. A configuration the cost model (edgernn/cost_model.py) says cannot fit the budget is pruned
before it trains; the others train on a short step budget through the trainer of ``edgernn train``, report
their validation curve to Optuna's MedianPruner (unpromising trials stop early), and are exported and
measured on the device (flash, RAM, instructions, cycles) where its toolchain is installed. On a small
sequence data set every trial is judged by k-fold cross-validation over all of its sequences.

The study lives in an Optuna storage: by default a SQLite file in the run directory, so a search stopped
by Ctrl-C continues with ``--resume``; with a database URL (PostgreSQL) any number of machines run trials
of one study. ``edgernn.search_result`` writes the table, the plot and the chosen model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgernn.cost_model import CELL_NAMES, CostModel
from edgernn.plan import Budget, Io, largest, parse_size
from edgernn.runtime.errors import InputError
from edgernn.search_interrupt import INTERRUPT

SEQUENCE_TASKS = ("classify", "keyword")
SMALL_DATA_SEQUENCES = 400  # a sequence data set up to this size is judged by cross-validation
DEFAULT_FOLDS = 3
EMBEDDING_SIZES = (16, 32, 64)
SEQ_LENS = (16, 32, 64, 128)
BUDGET_KEYS = ("flash", "ram", "rate", "us", "clock")


def parse_budget(text: str, device: str, cost_model: CostModel | None = None) -> Budget:
    """``flash=256K,ram=64K,rate=100`` (also ``us=`` a time per step, ``clock=`` MHz) as a checked Budget."""
    values: dict[str, str] = {}
    for part in str(text).split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in BUDGET_KEYS or not value.strip():
            raise InputError(
                f"--budget {text!r}: expected key=value pairs separated by commas, keys {', '.join(BUDGET_KEYS)} "
                "(e.g. flash=256K,ram=64K,rate=100)"
            )
        if key in values:
            raise InputError(f"--budget {text!r}: {key} given twice")
        values[key] = value.strip()
    numbers = {}
    for key in ("rate", "us", "clock"):
        if key in values:
            try:
                numbers[key] = float(values[key])
            except ValueError:
                raise InputError(f"--budget {key}={values[key]!r}: expected a number") from None
    if "flash" in values:
        parse_size(values["flash"], "--budget flash")
    return Budget.make(
        device,
        clock_mhz=numbers.get("clock"),
        flash=values.get("flash"),
        ram=values.get("ram"),
        rate_hz=numbers.get("rate"),
        budget_us=numbers.get("us"),
        cost_model=cost_model,
    )


@dataclass(frozen=True)
class SearchSpace:
    """What a trial may draw. ``max_hidden``: the widest hidden size any cell fits at one layer."""

    cells: tuple[str, ...] = CELL_NAMES
    precisions: tuple[str, ...] = ("float32", "int8")  # integer on request
    max_layers: int = 2
    max_hidden: int = 256
    learning_rates: tuple[float, float] = (1e-3, 2e-2)
    max_dropout: float = 0.3
    max_input_noise: float = 0.6  # feature inputs: training noise in units of each feature's std

    def to_dict(self) -> dict:
        return {
            "cells": list(self.cells),
            "precisions": list(self.precisions),
            "max_layers": self.max_layers,
            "max_hidden": self.max_hidden,
            "learning_rates": list(self.learning_rates),
            "max_dropout": self.max_dropout,
            "max_input_noise": self.max_input_noise,
        }


def space_for(budget: Budget, io: Io, space: SearchSpace, cost_model: CostModel) -> SearchSpace:
    """``space`` with max_hidden the widest that fits at one layer (InputError when nothing fits)."""
    widest = [
        found.shape.hidden_size
        for cell in space.cells
        for precision in space.precisions
        if (found := largest(budget, io, cell, precision, 1, cost_model)) is not None
    ]
    if not widest:
        raise InputError(
            f"no model fits {budget.device}'s budget (flash {budget.flash_bytes}, RAM {budget.ram_bytes}, "
            f"step {budget.step_us} us): not even one layer of 8 (edgernn plan shows the numbers)"
        )
    return replace(space, max_hidden=min(space.max_hidden, max(widest)))


@dataclass
class SearchSettings:
    """How a search runs. ``trials``: trained trials in the study (all workers together); ``minutes``: this
    worker's time; ``trial_steps``: each trial's training steps; ``folds``: None picks (cross-validation
    on small sequence data sets, the run's split otherwise); ``objectives``: 1, or 2 for the metric
    against cycles per step (the Pareto front); ``measure``: export and measure every trial on the device
    (None: where its toolchain is installed)."""

    trials: int | None = 20
    minutes: float | None = None
    trial_steps: int = 300
    folds: int | None = None
    objectives: int = 1
    measure: bool | None = None
    seed: int = 0
    task: str | None = None
    space: SearchSpace = field(default_factory=SearchSpace)


def check_settings(settings: SearchSettings) -> None:
    if settings.trials is None and settings.minutes is None:
        raise InputError("no search budget: expected a number of trials or minutes")
    if settings.trials is not None and settings.trials < 1:
        raise InputError(f"trials {settings.trials}: expected at least 1")
    if settings.minutes is not None and not (math.isfinite(settings.minutes) and settings.minutes > 0):
        raise InputError(f"minutes {settings.minutes}: expected a positive number")
    if settings.folds is not None and settings.folds < 1:
        raise InputError(f"folds {settings.folds}: expected at least 1 (1: the run's own split)")
    if settings.objectives not in (1, 2):
        raise InputError(f"objectives {settings.objectives}: expected 1 or 2")


def folds_for(task: str, data, folds: int | None) -> int:
    if folds is not None:
        return folds if task == "classify" else 1
    if task == "classify" and len(data.train) + len(data.validation) <= SMALL_DATA_SEQUENCES:
        return DEFAULT_FOLDS
    return 1


def fold_data(data, folds: int, fold: int, seed: int):
    """The ``fold``-th of ``folds`` splits of all the sequences (train and validation together),
    stratified by label; 1 fold: the data as loaded."""
    if folds == 1:
        return data
    import numpy as np

    everything = list(data.train) + list(data.validation)
    labels = [int(label) for _, label in everything]
    rng = np.random.default_rng(seed)
    order = []
    for label in sorted(set(labels)):  # each class dealt round the folds in turn
        members = [i for i, value in enumerate(labels) if value == label]
        order += [members[i] for i in rng.permutation(len(members))]
    held = {index for position, index in enumerate(order) if position % folds == fold}
    train = [everything[i] for i in range(len(everything)) if i not in held]
    validation = [everything[i] for i in sorted(held)]
    return replace(data, train=train, validation=validation)


@dataclass(frozen=True)
class Draw:
    """One trial's configuration: the ``edgernn train`` settings and the deployment's precision."""

    model: dict[str, Any]
    train: dict[str, Any]
    precision: str


def draw(trial, space: SearchSpace, io: Io, task: str) -> Draw:
    cell = trial.suggest_categorical("cell", list(space.cells))
    layers = trial.suggest_int("num_layers", 1, space.max_layers)
    hidden = trial.suggest_int("hidden_size", 8, space.max_hidden, step=8)
    model = {
        "cell": cell,
        "num_layers": layers,
        "hidden_size": hidden,
        "embedding_size": None,
        "dropout": 0.0,
    }
    if io.input_kind == "tokens":
        model["embedding_size"] = trial.suggest_categorical("embedding_size", list(EMBEDDING_SIZES))
    if layers > 1:  # dropout acts between layers: a 1-layer model draws none
        model["dropout"] = round(trial.suggest_float("dropout", 0.0, space.max_dropout), 3)
    train = {"learning_rate": trial.suggest_float("learning_rate", *space.learning_rates, log=True)}
    if task not in SEQUENCE_TASKS:
        train["seq_len"] = trial.suggest_categorical("seq_len", list(SEQ_LENS))
    if io.input_kind == "features" and space.max_input_noise > 0:
        train["input_noise"] = trial.suggest_float("input_noise", 0.0, space.max_input_noise, step=0.05)
    precision = trial.suggest_categorical("precision", list(space.precisions))
    return Draw(model, train, precision)


# A classifier's recipe trains with this much input noise (in each feature's standard deviations):
# measured on JapaneseVowels' training file alone, refitted as the search refits (docs/plan.md).
RECIPE_INPUT_NOISE = 0.4


def recipe_params(space: SearchSpace, io: Io, task: str) -> dict[str, Any]:
    """The hand-set recipe (docs/results.md: a GRU 2x64, dropout 0.2, learning rate 3e-3, float32) as
    the parameters of a draw, within ``space``: the first trial of a new search. A classifier of feature
    inputs starts with ``RECIPE_INPUT_NOISE`` (benchmarks/noise_prior.py), other tasks with none."""
    layers = min(2, space.max_layers)
    params: dict[str, Any] = {
        "cell": "gru" if "gru" in space.cells else space.cells[0],
        "num_layers": layers,
        "hidden_size": max(8, min(64, space.max_hidden // 8 * 8)),
        "learning_rate": min(max(3e-3, space.learning_rates[0]), space.learning_rates[1]),
        "precision": "float32" if "float32" in space.precisions else space.precisions[0],
    }
    if io.input_kind == "tokens":
        params["embedding_size"] = 32
    if layers > 1:
        params["dropout"] = min(0.2, space.max_dropout)
    if task not in SEQUENCE_TASKS:
        params["seq_len"] = 32
    if io.input_kind == "features" and space.max_input_noise > 0:
        params["input_noise"] = min(RECIPE_INPUT_NOISE, space.max_input_noise) if task == "classify" else 0.0
    return params


def draw_from_params(params: dict[str, Any]) -> Draw:
    """The Draw that a trial's (or the recipe's) parameters make."""
    model = {k: params.get(k) for k in ("cell", "num_layers", "hidden_size", "embedding_size")}
    model["dropout"] = round(params.get("dropout", 0.0), 3)
    train = {"learning_rate": params["learning_rate"]}
    for name in ("seq_len", "input_noise"):
        if name in params:
            train[name] = params[name]
    return Draw(model, train, params["precision"])


def nearest_fitting(params: dict[str, Any], space: SearchSpace, fits) -> dict[str, Any] | None:
    """``params`` (the recipe's) when ``fits`` says they fit the budget, else the nearest that do: the
    same cell and shape at the space's other precisions (e.g. int8) before narrower (steps of
    8), then with one layer fewer (no dropout at one layer); None when none fits."""
    precisions = [params["precision"]] + [p for p in space.precisions if p != params["precision"]]
    for layers in range(params["num_layers"], 0, -1):
        for hidden in range(params["hidden_size"], 7, -8):
            for precision in precisions:
                candidate = {**params, "precision": precision, "num_layers": layers, "hidden_size": hidden}
                if layers == 1:
                    candidate.pop("dropout", None)
                if fits(candidate):
                    return candidate
    return None


def describe_params(params: dict[str, Any]) -> str:
    noise = f", input noise {params['input_noise']:g}" if params.get("input_noise") else ""
    return f"{params['cell']} {params['num_layers']}x{params['hidden_size']} {params['precision']}{noise}"


def shape_of(chosen: Draw, io: Io):
    embedding = chosen.model["embedding_size"] or io.embedding_size
    return replace(io, embedding_size=embedding).shape(
        chosen.model["cell"], chosen.model["num_layers"], chosen.model["hidden_size"]
    )


def _trainer_class():
    """edgernn's Trainer, reporting each validation to a callback (which may stop the trial)."""
    from edgernn.trainer import Trainer

    class ReportingTrainer(Trainer):
        def __init__(self, *args, report, **kwargs):
            super().__init__(*args, **kwargs)
            self.report = report

        def _evaluate_and_keep(self, grad_norm: float) -> bool:
            stop = super()._evaluate_and_keep(grad_norm)
            INTERRUPT.check()
            self.report(self.step, self.history["val_loss"][-1], self.history["val_metric"][-1])
            return stop

    return ReportingTrainer


def train_fold(data, source: str, model_config, train_config, run_dir: Path, report) -> dict:
    """Train one fold as ``edgernn train`` would (its Trainer, one thread), reporting every validation."""
    import torch

    from edgernn.distributed import Distributed
    from edgernn.models import RecurrentModel

    run_dir.mkdir(parents=True, exist_ok=True)
    dist = Distributed.from_environment()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(train_config.threads or 1)
        torch.manual_seed(train_config.seed)
        setup = {"task": data.task, "data": str(source), "data_options": {}}
        trainer = _trainer_class()(RecurrentModel(model_config), data, train_config, run_dir, setup,
                                   dist=dist, progress=False, tensorboard=None, report=report)  # fmt: skip
        return trainer.fit()
    finally:
        torch.set_num_threads(threads)
        dist.close()


def metric_of(metrics: dict, last: bool = False) -> tuple[float, float]:
    """The task's validation metric (accuracy for classifiers, higher is better; loss otherwise) and
    the validation loss: of the kept model, or with ``last`` of the last weights (what a refit on all
    the data keeps)."""
    history = metrics["history"]
    if last:
        accuracy, loss = history["val_metric"][-1], history["val_loss"][-1]
    else:
        accuracy, loss = metrics.get("best_val_accuracy"), metrics["best_val_loss"]
    return (float(accuracy) if accuracy is not None else float(loss)), float(loss)


@dataclass
class Search:
    """One worker's view of a search: the data loaded once, the budget, the space, the study."""

    data_path: str
    run_dir: Path
    device: str
    budget: Budget
    settings: SearchSettings
    cost_model: CostModel
    data: Any = None
    io: Io | None = None
    folds: int = 1
    say: Any = print

    def load(self) -> None:
        from edgernn.tasks import infer_task, load_task

        task = self.settings.task or infer_task(self.data_path)[0]
        self.settings.task = task
        self.data = load_task(task, self.data_path, seed=self.settings.seed)
        fields = self.data.model_fields
        self.io = Io(fields["input_kind"], int(fields["input_size"]), int(fields["output_size"]))
        self.settings.space = space_for(self.budget, self.io, self.settings.space, self.cost_model)
        self.folds = folds_for(task, self.data, self.settings.folds)
        if self.settings.measure is None:
            from edgernn.export.c.devices import get_device

            self.settings.measure = not get_device(self.device).missing_tools()

    @property
    def refit(self) -> bool:
        """Cross-validated classification: the chosen configuration is retrained on every sequence
        (``edgernn train --all-data``), keeping its last weights; so trials are judged on theirs."""
        return self.folds > 1 and self.settings.task == "classify"

    @property
    def direction(self) -> str:
        return "maximize" if self.settings.task in SEQUENCE_TASKS else "minimize"

    def fingerprint(self) -> dict:
        """What makes two runs one search (a worker or a resume must agree on all of it)."""
        return {
            "data": str(Path(self.data_path).resolve()),
            "task": self.settings.task,
            "device": self.device,
            "budget": self.budget.to_dict(),
            "trial_steps": self.settings.trial_steps,
            "folds": self.folds,
            "objectives": self.settings.objectives,
            "space": self.settings.space.to_dict(),
        }

    def configs(self, chosen: Draw, steps: int | None = None):
        from edgernn.train_config import configs_for

        steps = steps or self.settings.trial_steps
        train = {
            **chosen.train,
            "max_steps": steps,
            "eval_every": max(1, steps // 6),
            "checkpoint_every": steps,
            "warmup_steps": min(50, steps // 5),
            "seed": self.settings.seed,
        }
        model_config, train_config = configs_for(self.settings.task, chosen.model, train)
        return replace(model_config, **self.data.model_fields), train_config

    def retrain_config(self, chosen: Draw):
        """The chosen configuration's final training: the trials' own, on every sequence where they
        were cross-validated (nothing held out, the last weights kept), for as many passes over its data
        as each fold's training made: ``folds / (folds - 1)`` times the trial's steps."""
        if not self.refit:
            return self.configs(chosen)
        steps = math.ceil(self.settings.trial_steps * self.folds / (self.folds - 1))
        model_config, train_config = self.configs(chosen, steps)
        return model_config, replace(train_config, all_data=True)

    def predict(self, chosen: Draw):
        """The cost model's prediction for ``chosen`` on the device, and the budget's headroom left."""
        predicted = self.cost_model.predict(self.device, chosen.precision, shape_of(chosen, self.io))
        return predicted, self.budget.headroom(predicted)

    def fits(self, params: dict[str, Any]) -> bool:
        """Whether the configuration of a draw's ``params`` fits the budget, by the cost model."""
        return all(v >= 0 for v in self.predict(draw_from_params(params))[1].values())

    def recipe(self) -> dict[str, Any] | None:
        """The first trial of a new study: the hand-set recipe where it fits the budget, else its nearest
        configuration that does (said through ``say``), or None (said) when nothing near it fits."""
        recipe = recipe_params(self.settings.space, self.io, self.settings.task)
        start = nearest_fitting(recipe, self.settings.space, self.fits)
        if start == recipe:
            return recipe
        over = ", ".join(k for k, v in self.predict(draw_from_params(recipe))[1].items() if v < 0)
        if start is None:
            self.say(f"the hand-set recipe ({describe_params(recipe)}) does not fit the budget ({over}), nor "
                     "does any narrower or shallower configuration of it: the search starts from its draws")  # fmt: skip
        else:
            self.say(f"the hand-set recipe ({describe_params(recipe)}) does not fit the budget ({over}): "
                     f"the first trial is its nearest configuration that does, {describe_params(start)}")  # fmt: skip
        return start

    def deploy_data(self, precision: str) -> str | None:
        """The data a deployment at ``precision`` is given: the search's own for ``integer``, which
        calibrates on it (as ``edgernn deploy --precision integer --data``)."""
        return self.data_path if precision == "integer" else None

    def objective(self, trial):
        import optuna

        chosen = draw(trial, self.settings.space, self.io, self.settings.task)
        predicted, headroom = self.predict(chosen)
        trial.set_user_attr("predicted", predicted.to_dict(self.budget.clock_mhz))
        trial.set_user_attr("fits", all(v >= 0 for v in headroom.values()))
        if not trial.user_attrs["fits"]:
            over = ", ".join(k for k, v in headroom.items() if v < 0)
            trial.set_user_attr("pruned", f"does not fit ({over}), by the cost model")
            raise optuna.TrialPruned(trial.user_attrs["pruned"])
        folder = self.run_dir / "trials" / f"{trial.number:04d}"
        report = self._reporter(trial) if self.settings.objectives == 1 else _ignore
        values, losses = self.cross_validate(chosen, folder, self.settings.seed, report)
        value = sum(values) / len(values)
        trial.set_user_attr("fold_values", values)
        trial.set_user_attr("val_loss", sum(losses) / len(losses))  # ties on the metric: the lower loss
        cycles = self._measure(trial, folder, chosen.precision, predicted.cycles)
        return value if self.settings.objectives == 1 else (value, cycles)

    def cross_validate(self, chosen: Draw, folder: Path, seed: int, report=None) -> tuple[list, list]:
        """``chosen`` trained on each fold of the split ``seed`` makes (with that training seed), in
        ``folder``/fold*: each fold's metric and validation loss. ``report`` hears fold 0's curve."""
        model_config, train_config = self.configs(chosen)
        train_config = replace(train_config, seed=seed)
        values, losses = [], []
        for fold in range(self.folds):
            data = fold_data(self.data, self.folds, fold, seed)
            metrics = train_fold(data, self.data_path, model_config, train_config, folder / f"fold{fold}",
                                 report if fold == 0 and report is not None else _ignore)  # fmt: skip
            value, loss = metric_of(metrics, last=self.refit)
            values.append(value)
            losses.append(loss)
            INTERRUPT.check()
        return values, losses

    def _reporter(self, trial):
        import optuna

        def report(step: int, loss: float, accuracy: float | None) -> None:
            trial.report(accuracy if accuracy is not None else loss, step)
            if trial.should_prune():
                trial.set_user_attr("pruned", f"below the median learning curve at step {step}")
                raise optuna.TrialPruned(trial.user_attrs["pruned"])

        return report

    def _measure(self, trial, folder: Path, precision: str, predicted_cycles: float) -> float:
        """Export fold 0's model and deploy it for C at ``precision`` (verified on this machine: the
        int8 quality gates may refuse it, and then the trial is never chosen), then measure it on the
        device. Returns the measured cycles, or the predicted ones where not measured."""
        from edgernn.export import export_run
        from edgernn.export.deploy import deploy
        from edgernn.runtime.errors import EdgeRNNError

        model, work = folder / "model.onnx", folder / "device"
        try:
            export_run(folder / "fold0", model)
            deploy(model, "c", work / f"c-{precision}", precision=precision, data=self.deploy_data(precision))
        except EdgeRNNError as exc:
            trial.set_user_attr("deployable", False)
            trial.set_user_attr("pruned", "not deployable: " + " ".join(str(exc).split())[:240])
            return predicted_cycles
        trial.set_user_attr("deployable", True)
        if not self.settings.measure:
            return predicted_cycles
        return self._bench(trial, model, work, precision, predicted_cycles)

    def _bench(self, trial, model: Path, work: Path, precision: str, predicted_cycles: float) -> float:
        from edgernn.export.c.devices import get_device
        from edgernn.export.c.devices.bench import bench_precision
        from edgernn.runtime.errors import EdgeRNNError

        try:
            bench = bench_precision(
                model, get_device(self.device), precision, clock_mhz=self.budget.clock_mhz, steps=4,
                work=work, self_test=False,
            )  # fmt: skip
        except (EdgeRNNError, RuntimeError) as exc:
            trial.set_user_attr("measure_error", " ".join(str(exc).split())[:300])
            return predicted_cycles
        measured = {
            "instructions": bench.instructions_median,
            "cycles": round(bench.cycles),
            "flash_bytes": bench.flash_bytes,
            "ram_bytes": bench.ram_bytes + bench.stack_bytes,
        }
        trial.set_user_attr("measured", measured)
        limits = {"flash_bytes": self.budget.flash_bytes, "ram_bytes": self.budget.ram_bytes}
        fits = all(v is None or measured[k] <= v for k, v in limits.items())
        if self.budget.step_us is not None:
            fits = fits and bench.cycles / self.budget.clock_mhz <= self.budget.step_us
        trial.set_user_attr("fits_measured", fits)
        return float(bench.cycles)


def _ignore(step: int, loss: float, accuracy: float | None) -> None:
    return None
