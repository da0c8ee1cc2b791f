"""Train any task and write a run directory.

A run directory holds config.json (task, model and training settings), model.safetensors (the weights with
the best validation loss), vocab.json for text, metrics.json, loss_curves.png, and resume.safetensors (the
whole training state — weights, optimizer, schedule, RNG, data position, carried state — in one file,
written atomically, so a kill loses at most one checkpoint interval).

Series tasks train with stateful truncated BPTT: the series is cut into ``batch_size`` contiguous streams,
read in consecutive chunks of ``seq_len`` steps, the state carried (detached) from chunk to chunk, as the
stepper will carry it. Validation streams the whole validation split the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from edgernn.batches import SequenceBatches, SeriesBatches, pad_sequences
from edgernn.checkpoint import VOCAB_FILE
from edgernn.distributed import Distributed
from edgernn.interrupt import TrainingInterrupted
from edgernn.memory import check_training_memory
from edgernn.models import ModelConfig, RecurrentModel
from edgernn.progress import Progress
from edgernn.runtime.errors import InputError
from edgernn.runtime.untrusted import guarded, parse_json
from edgernn.series_eval import evaluate_series, residual_std
from edgernn.starting_point import starting_point
from edgernn.tasks import TaskData, infer_task, load_task
from edgernn.train_config import (
    CURVES_FILE,
    DEFAULT_THREADS,
    FEW_STEPS,
    RESUME_FILE,
    RUN_FILES,
    TASK_DEFAULTS,
    FewStepsWarning,
    TrainConfig,
    configs_for,
)
from edgernn.trainer import Trainer, plot_curves

__all__ = [
    "CURVES_FILE", "DEFAULT_THREADS", "FEW_STEPS", "RESUME_FILE", "RUN_FILES", "TASK_DEFAULTS",
    "FewStepsWarning", "Progress", "TrainingInterrupted", "SequenceBatches", "SeriesBatches", "TrainConfig", "TrainResult", "Trainer",
    "check_run_dir", "configs_for", "evaluate_series", "pad_sequences", "plot_curves", "residual_std",
    "resume_training", "train_charlm", "train_task",
]  # fmt: skip


@dataclass
class TrainResult:
    run_dir: Path
    model: RecurrentModel
    task: TaskData
    metrics: dict


# --- entry points ----------------------------------------------------------------------------------------


def train_task(
    task: str | None,
    data_path: str | os.PathLike,
    run_dir: str | os.PathLike,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    data_options: dict | None = None,
    progress: bool | str = True,
    tensorboard: str | os.PathLike | None = None,
    overwrite: bool = False,
    init_from: str | os.PathLike | None = None,
) -> TrainResult:
    """Train ``task`` on ``data_path``; sizes and normalisation in ``model_config`` are set from the data.

    ``task`` None infers it from the data (``infer_task``). A ``run_dir`` that already holds a run is
    refused unless ``overwrite``, and then its run files are replaced only once the data has loaded.
    ``progress``: True (a bar on a terminal, plain periodic lines otherwise), ``"lines"``, or False.
    ``init_from``: a run directory whose trained weights training starts from (its model and
    normalisation kept, ``edgernn.starting_point``); ``model_config`` may then only repeat its model.
    """
    train_config = train_config or TrainConfig()
    options = dict(data_options or {})
    notes = []
    if task is None:
        naming = {k: options.get(k) for k in ("columns", "targets", "label_column")}
        task, reason = infer_task(data_path, **naming)
        notes.append(f"task: {task} ({reason}; --task chooses another)")
    run_dir = Path(run_dir)
    check_run_dir(run_dir, overwrite)
    data = load_task(
        task,
        data_path,
        seed=train_config.seed,
        validation_fraction=train_config.validation_fraction,
        min_validation_cases=train_config.min_validation_cases,
        **options,
    )
    if train_config.all_data:
        data = every_case_trains(data)
    setup = {"task": task, "data": str(data_path), "data_options": options}
    start = None
    if init_from is not None:
        start = starting_point(init_from, task, data, model_config)
        model_config = start.config
        setup["init_from"] = start.provenance
    else:
        base = model_config or ModelConfig(cell="gru", hidden_size=128)
        model_config = replace(base, **data.model_fields)
    check_memory(model_config, train_config, data)  # before anything is allocated or replaced
    if overwrite:
        for name in (*RUN_FILES, VOCAB_FILE, CURVES_FILE):
            (run_dir / name).unlink(missing_ok=True)
    return _run(
        data,
        model_config,
        train_config,
        run_dir,
        setup,
        progress=progress,
        tensorboard=tensorboard,
        resume=None,
        notes=notes,
        initial=start.weights if start is not None else None,
    )


# what load_task takes from a run's setup, and of what type (a resume state is untrusted)
DATA_OPTIONS = {
    "columns": list, "targets": list, "label_column": str, "missing": str, "augment": bool, "mels": int,
    "running_ms": (int, float), "wav_repeat": int,
}  # fmt: skip


def checked_data_options(options: object) -> dict:
    """A run's saved ``data_options``, each a known name with a value of its type; InputError otherwise."""
    if not isinstance(options, dict):
        raise InputError(f"data_options: expected a mapping, got {type(options).__name__}")
    for name, value in options.items():
        kind = DATA_OPTIONS.get(name)
        if kind is None:
            raise InputError(
                f"data_options: unknown option {name!r:.40}; expected some of {', '.join(DATA_OPTIONS)}"
            )
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise InputError(
                f"data_options.{name}: expected {getattr(kind, '__name__', 'a number')}, got {value!r:.40}"
            )
    return options


def check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse to train into a directory holding a run, unless told to overwrite it."""
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found and not overwrite:
        raise InputError(
            f"{run_dir} already holds a run ({', '.join(found)}); continue it with --resume {run_dir}, "
            "replace it with --overwrite, or give another -o"
        )


def train_charlm(
    text_path: str | os.PathLike,
    run_dir: str | os.PathLike,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    progress: bool | str = True,
    overwrite: bool = False,
) -> TrainResult:
    """Train a next-character model on a UTF-8 text file (``train_task("charlm", ...)``)."""
    base = model_config or ModelConfig(cell="gru", hidden_size=256, embedding_size=64)
    return train_task(
        "charlm", text_path, run_dir, base, train_config, progress=progress, overwrite=overwrite
    )


def resume_training(
    run_dir: str | os.PathLike,
    *,
    more_steps: int | None = None,
    more_minutes: float | None = None,
    max_steps: int | None = None,
    budget_minutes: float | None = None,
    threads: int | None = None,
    progress: bool | str = True,
    tensorboard: str | os.PathLike | None = None,
) -> TrainResult:
    """Continue a run exactly where its last checkpoint left it (``threads``: torch threads for this
    session, else the run's own).

    With no budget given, the run finishes the budget it was started with (a killed run ends as if it
    never stopped). ``more_steps`` / ``more_minutes`` train that much beyond what is done (what
    ``edgernn train --resume R --steps N`` / ``--minutes M`` mean); ``max_steps`` / ``budget_minutes``
    are totals and must exceed what is done. Budgets given replace the run's own (a step budget alone
    drops its time budget, and the reverse). A run with nothing left to do is refused.
    """
    run_dir = Path(run_dir)
    resume_path = run_dir / RESUME_FILE
    if not resume_path.exists():
        raise InputError(f"{run_dir}: no {RESUME_FILE}; expected a run directory written by 'edgernn train'")
    tensors, state = _read_resume(resume_path)
    with guarded(resume_path, "the resume state"):
        setup = {**state["setup"], "data_options": checked_data_options(state["setup"]["data_options"])}
        train_config = TrainConfig.from_dict(state["train_config"])
        model_config = ModelConfig.from_dict(state["model_config"])
        done_steps, done_minutes = int(state["step"]), float(state["elapsed"]) / 60
    train_config = _resumed_config(
        train_config,
        done_steps,
        done_minutes,
        more_steps=more_steps,
        more_minutes=more_minutes,
        max_steps=max_steps,
        budget_minutes=budget_minutes,
        run_dir=run_dir,
    )
    if threads is not None:
        train_config = replace(train_config, threads=threads)
    data = load_task(
        setup["task"],
        setup["data"],
        seed=train_config.seed,
        validation_fraction=train_config.validation_fraction,
        min_validation_cases=train_config.min_validation_cases,
        **setup["data_options"],
    )
    if train_config.all_data:
        data = every_case_trains(data)
    check_memory(model_config, train_config, data)
    return _run(
        data,
        model_config,
        train_config,
        run_dir,
        setup,
        progress=progress,
        tensorboard=tensorboard,
        resume=(tensors, state),
    )


def check_memory(model_config: ModelConfig, train_config: TrainConfig, data: TaskData) -> None:
    """Refuse a run that would not fit in the machine's memory, in one line (``edgernn.memory``)."""
    seq_len = train_config.seq_len
    if not data.is_series:  # padded to the longest sequence of a batch
        seq_len = max(len(inputs) for inputs, _ in data.train)
    check_training_memory(model_config, train_config.batch_size, seq_len)


def _resumed_config(
    config: TrainConfig, done_steps: int, done_minutes: float, *, run_dir: Path, **budgets
) -> TrainConfig:
    """The run's config with the budgets of a resume: more_* added to what is done, totals checked."""
    more_steps, more_minutes = budgets["more_steps"], budgets["more_minutes"]
    max_steps, budget_minutes = budgets["max_steps"], budgets["budget_minutes"]
    if (more_steps is not None and max_steps is not None) or (
        more_minutes is not None and budget_minutes is not None
    ):
        raise InputError("give more_steps or max_steps (more_minutes or budget_minutes), not both")
    for name, value in (("more_steps", more_steps), ("more_minutes", more_minutes)):
        if value is not None and not value > 0:
            raise InputError(f"{name} must be positive, got {value}")
    if more_steps is not None:
        max_steps = done_steps + more_steps
    if more_minutes is not None:
        budget_minutes = done_minutes + more_minutes
    if max_steps is not None and max_steps <= done_steps:
        raise InputError(
            f"{run_dir} has done {done_steps} steps; max_steps {max_steps} is a total and leaves nothing "
            f"to do: give more than {done_steps}, or more_steps=N (--steps N on the command line) for N more"
        )
    if budget_minutes is not None and budget_minutes <= done_minutes:
        raise InputError(
            f"{run_dir} has trained {done_minutes:.2f} minutes; budget_minutes {budget_minutes:g} is a total "
            f"and leaves nothing to do: give more, or more_minutes=M (--minutes M) for M more"
        )
    if max_steps is not None or budget_minutes is not None:
        config = replace(config, max_steps=max_steps, budget_minutes=budget_minutes)
    steps_left = config.max_steps is None or config.max_steps > done_steps
    time_left = config.budget_minutes is None or config.budget_minutes > done_minutes
    if not (steps_left and time_left):
        budget = f"{config.max_steps} steps" if not steps_left else f"{config.budget_minutes:g} minutes"
        raise InputError(
            f"{run_dir} has finished its budget ({done_steps} steps, {done_minutes:.2f} minutes of {budget}); "
            "give --steps N or --minutes M to train that much more"
        )
    return config


def _read_resume(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    with guarded(path, "the resume checkpoint"):
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            state = parse_json(f.metadata()["state"], path, "the resume state")
    if not isinstance(state, dict):
        raise InputError(f"{path}: the resume state: expected an object, got {type(state).__name__}")
    return tensors, state


def every_case_trains(data: TaskData) -> TaskData:
    """``all_data``: the validation cases join the training cases (a refit on every case, once a search or
    cross-validation has chosen the settings). Nothing is held out: validation reports the training
    cases, and the model kept is the last one."""
    if data.task != "classify":
        raise InputError(f"all_data trains a classifier on every case; the task is {data.task}")
    cases = list(data.train) + list(data.validation)
    note = "every case trains (all_data): validation numbers are on training cases, the last weights are kept"
    return replace(data, train=cases, validation=cases, notes={**data.notes, "all_data": note})


def _run(
    data, model_config, train_config, run_dir, setup, *, progress, tensorboard, resume, notes=(), initial=None
) -> TrainResult:
    dist = Distributed.from_environment()
    threads_before = torch.get_num_threads()
    try:
        if train_config.threads:
            torch.set_num_threads(train_config.threads)
        torch.manual_seed(train_config.seed)
        model = RecurrentModel(model_config)
        if initial is not None:
            model.load_state_dict(initial)
        trainer = Trainer(
            model, data, train_config, run_dir, setup, dist=dist, progress=progress, tensorboard=tensorboard
        )
        if resume is not None:
            trainer.load_state(*resume)
        for note in notes:
            trainer.progress.write(note)
        metrics = trainer.fit()
        return TrainResult(run_dir, trainer.model, data, metrics)
    finally:
        torch.set_num_threads(threads_before)  # the caller's process keeps its own setting
        dist.close()
