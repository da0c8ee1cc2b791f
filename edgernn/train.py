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

import hashlib
import io
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import nn
from tqdm import tqdm

from edgernn.checkpoint import (
    CONFIG_FILE,
    METRICS_FILE,
    VOCAB_FILE,
    WEIGHTS_FILE,
    save_checkpoint,
    write_json,
)
from edgernn.distributed import Distributed
from edgernn.models import ModelConfig, RecurrentModel, count_parameters
from edgernn.runtime.errors import InputError
from edgernn.runtime.files import atomic_write_bytes
from edgernn.runtime.untrusted import guarded, parse_json
from edgernn.tasks import TaskData, infer_task, load_task

RESUME_FILE = "resume.safetensors"
CURVES_FILE = "loss_curves.png"
RUN_FILES = (CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE, RESUME_FILE)
# One thread for the CLI and the Python API alike (measured in docs/training.md): with other work on the
# machine one thread degrades gracefully, where torch's default (a spinning worker per core) made every
# step 5x to 26x slower; what one thread can lose on an idle machine is bounded by the core count.
DEFAULT_THREADS = 1
FEW_STEPS = 100  # a time budget that yields fewer steps than this trains a model barely past its warmup


class FewStepsWarning(UserWarning):
    """A time budget gave (or will give) too few steps to train the model."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train; saved in config.json under ``train``. At least one budget must be set."""

    budget_minutes: float | None = 2.0
    max_steps: int | None = None
    batch_size: int = 32
    seq_len: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    min_lr_fraction: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 200
    patience: int | None = None
    checkpoint_every: int = 200
    reset_state_per_chunk: bool = False
    every_step_weight: float = 0.5  # classify: weight of the loss at every earlier step (early decisions)
    input_noise: float = (
        0.0  # feature inputs: Gaussian noise added in training, in units of each feature's std
    )
    validation_fraction: float = 0.1
    min_validation_cases: int = 20  # classify: a small data set validates on more than its 10% (see tasks)
    eval_batch_size: int = 32
    seed: int = 0
    threads: int | None = DEFAULT_THREADS  # torch intra-op threads; None: torch's default (every core)

    def __post_init__(self) -> None:
        problems = []
        if self.budget_minutes is None and self.max_steps is None:
            problems.append("give a budget: budget_minutes or max_steps")
        if self.budget_minutes is not None and not self.budget_minutes > 0:
            problems.append(f"budget_minutes must be positive, got {self.budget_minutes}")
        for name in (
            "max_steps",
            "batch_size",
            "seq_len",
            "eval_every",
            "eval_batch_size",
            "checkpoint_every",
            "patience",
        ):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.min_validation_cases, int) or self.min_validation_cases < 0:
            problems.append(
                f"min_validation_cases must be an integer >= 0, got {self.min_validation_cases!r}"
            )
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            problems.append(f"threads must be a positive integer or None, got {self.threads!r}")
        if not 0.0 < self.validation_fraction < 0.5:
            problems.append(f"validation_fraction must be in (0, 0.5), got {self.validation_fraction}")
        if not self.learning_rate > 0 or not self.grad_clip > 0:
            problems.append("learning_rate and grad_clip must be positive")
        if not 0.0 <= self.min_lr_fraction <= 1.0 or self.warmup_steps < 0:
            problems.append("min_lr_fraction must be in [0, 1] and warmup_steps >= 0")
        if problems:
            raise InputError("invalid training config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, doc: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})


_SERIES_DEFAULTS = {"batch_size": 8, "seq_len": 32, "eval_every": 100, "eval_batch_size": 4}
TASK_DEFAULTS: dict[str, dict[str, dict]] = {
    "charlm": {
        "model": {"hidden_size": 256, "embedding_size": 64},
        "train": {"batch_size": 32, "seq_len": 128},
    },
    "classify": {"model": {"hidden_size": 64}, "train": {"batch_size": 16, "eval_every": 100}},
    "forecast": {"model": {"hidden_size": 64}, "train": _SERIES_DEFAULTS},
    "anomaly": {"model": {"hidden_size": 32}, "train": _SERIES_DEFAULTS},
    "steplabels": {"model": {"hidden_size": 64}, "train": _SERIES_DEFAULTS},
}


def configs_for(task: str, model_settings: dict, train_settings: dict) -> tuple[ModelConfig, TrainConfig]:
    """The task's defaults, overridden by every setting that is not None."""
    defaults = TASK_DEFAULTS[task]
    model = {**defaults["model"], **{k: v for k, v in model_settings.items() if v is not None}}
    train = {**defaults["train"], **{k: v for k, v in train_settings.items() if v is not None}}
    if train.get("budget_minutes") is None and train.get("max_steps") is None:
        train["budget_minutes"] = 2.0
    train.setdefault("budget_minutes", None)
    return ModelConfig(**model), TrainConfig(**train)


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
) -> TrainResult:
    """Train ``task`` on ``data_path``; sizes and normalisation in ``model_config`` are set from the data.

    ``task`` None infers it from the data (``infer_task``). A ``run_dir`` that already holds a run is
    refused unless ``overwrite``, and then its run files are replaced only once the data has loaded.
    ``progress``: True (a bar on a terminal, plain periodic lines otherwise), ``"lines"``, or False.
    """
    train_config = train_config or TrainConfig()
    options = dict(data_options or {})
    notes = []
    if task is None:
        task, reason = infer_task(data_path, **options)
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
    base = model_config or ModelConfig(cell="gru", hidden_size=128)
    model_config = replace(base, **data.model_fields)
    setup = {"task": task, "data": str(data_path), "data_options": options}
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
    )


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
        setup = state["setup"]
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


def _run(
    data, model_config, train_config, run_dir, setup, *, progress, tensorboard, resume, notes=()
) -> TrainResult:
    dist = Distributed.from_environment()
    threads_before = torch.get_num_threads()
    try:
        if train_config.threads:
            torch.set_num_threads(train_config.threads)
        torch.manual_seed(train_config.seed)
        model = RecurrentModel(model_config)
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


# --- batches -----------------------------------------------------------------------------------------------


class SeriesBatches:
    """Consecutive ``(B, T)`` chunks of ``B`` contiguous streams over one long series, epoch after epoch.

    Each epoch starts at a different offset (from the seed), so chunk boundaries move between epochs.
    With data-parallel training, rank ``r`` of ``w`` reads streams ``r*B .. (r+1)*B`` of ``w*B``.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        seq_len: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
    ):
        self.inputs, self.targets = inputs, targets
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.rank, self.world = rank, world
        self.stream_len = (len(inputs) - seq_len) // (batch_size * world)
        if self.stream_len < 2 * seq_len:
            raise InputError(
                f"the training series has {len(inputs)} steps; batch_size {batch_size} x {world} process(es) "
                f"of seq_len {seq_len} needs at least {2 * seq_len * batch_size * world + seq_len}"
            )
        self.chunks_per_epoch = self.stream_len // seq_len
        self.epoch, self.chunk = 0, 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Inputs ``(B, T, ...)``, targets ``(B, T, ...)``, and whether this chunk starts a new stream."""
        if self.chunk == self.chunks_per_epoch:
            self.epoch, self.chunk = self.epoch + 1, 0
        offset = int(
            torch.randint(
                0, self.seq_len, (1,), generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
            )
        )
        first = self.rank * self.batch_size
        starts = (
            offset + (first + torch.arange(self.batch_size)) * self.stream_len + self.chunk * self.seq_len
        )
        index = starts[:, None] + torch.arange(self.seq_len)  # (B, T)
        fresh = self.chunk == 0
        self.chunk += 1
        return self.inputs[index], self.targets[index], fresh


class SequenceBatches:
    """Shuffled batches of variable-length sequences, zero-padded: ``(B, T_max, F)``, lengths, labels."""

    def __init__(self, cases: list, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.cases, self.batch_size, self.seed = cases, batch_size, seed
        self.rank, self.world = rank, world
        self.per_rank = max(1, len(cases) // world)
        self.chunks_per_epoch = max(1, math.ceil(self.per_rank / batch_size))
        self.epoch, self.chunk = 0, 0

    def next(self):
        if self.chunk == self.chunks_per_epoch:
            self.epoch, self.chunk = self.epoch + 1, 0
        order = torch.randperm(
            len(self.cases), generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        )
        mine = order[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]
        picked = mine[self.chunk * self.batch_size : (self.chunk + 1) * self.batch_size]
        self.chunk += 1
        inputs, targets = pad_sequences([self.cases[int(i)] for i in picked])
        return inputs, targets, True


def pad_sequences(cases: list) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Zero-padded inputs ``(B, T_max, F)`` and (lengths ``(B,)``, labels ``(B,)``)."""
    lengths = torch.tensor([len(x) for x, _ in cases])
    inputs = nn.utils.rnn.pad_sequence([x for x, _ in cases], batch_first=True)
    labels = torch.tensor([label for _, label in cases])
    return inputs, (lengths, labels)


# --- the trainer -----------------------------------------------------------------------------------------


class Progress:
    """Training progress on stderr: a tqdm bar on a terminal, plain lines elsewhere (a log, CI: one every
    5% of the budget or minute), nothing when off. Evaluations and warnings print in both visible modes."""

    LINE_FRACTION, LINE_SECONDS = 0.05, 60.0

    def __init__(self, mode: bool | str, total_steps: int | None):
        if mode is True:
            mode = "bar" if sys.stderr.isatty() else "lines"
        if mode not in (False, "bar", "lines"):
            raise InputError(f"progress must be True, False, 'bar' or 'lines', got {mode!r}")
        self.mode, self.total = mode, total_steps
        self.bar: tqdm | None = None
        self.next_fraction, self.last_line = 0.0, 0.0

    def open(self, step: int) -> None:
        if self.mode == "bar":
            self.bar = tqdm(total=self.total, initial=step, desc="train", unit="step", file=sys.stderr)
        self.last_line = time.monotonic()

    def update(self, step: int, fraction: float, loss: float, best: float, rate: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                loss=f"{loss:.3f}", best_val=f"{best:.3f}", mean_timesteps_per_s=f"{rate:,.0f}"
            )
        elif self.mode == "lines":
            now = time.monotonic()
            if fraction >= self.next_fraction or now - self.last_line >= self.LINE_SECONDS:
                total = f"/{self.total}" if self.total else ""
                best_text = f"{best:.4f}" if math.isfinite(best) else "none yet"
                self.write(
                    f"train: step {step}{total} ({fraction:.0%}), loss {loss:.4f}, best val {best_text}, "
                    f"{rate:,.0f} timesteps/s (mean since the start)"
                )
                self.next_fraction = (math.floor(fraction / self.LINE_FRACTION) + 1) * self.LINE_FRACTION
                self.last_line = now

    def write(self, line: str) -> None:
        if self.mode == "bar":
            tqdm.write(line, file=sys.stderr)
        elif self.mode == "lines":
            print(line, file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        self.write(f"warning: {message}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Trainer:
    def __init__(
        self,
        model: RecurrentModel,
        data: TaskData,
        config: TrainConfig,
        run_dir: Path,
        setup: dict,
        *,
        dist: Distributed,
        progress: bool | str,
        tensorboard,
    ):
        self.model, self.data, self.config, self.run_dir, self.setup, self.dist = (
            model,
            data,
            config,
            run_dir,
            setup,
            dist,
        )
        self.network = dist.wrap(model)
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        if data.is_series:
            self.batches = SeriesBatches(
                *data.train, config.batch_size, config.seq_len, config.seed, dist.rank, dist.world
            )
        else:
            self.batches = SequenceBatches(data.train, config.batch_size, config.seed, dist.rank, dist.world)
        self.step, self.elapsed, self.best, self.bad_evals = 0, 0.0, math.inf, 0
        self.carried: tuple[torch.Tensor, ...] | None = None
        self.history: dict[str, list] = {
            "step": [],
            "train_loss": [],
            "val_loss": [],
            "grad_norm": [],
            "lr": [],
            "val_metric": [],
        }
        self.running: list[float] = []
        self.warnings: list[str] = []
        self.progress = Progress(progress if dist.is_main else False, config.max_steps)
        self.writer = _summary_writer(tensorboard) if tensorboard and dist.is_main else None

    # -- the loop --

    def fit(self) -> dict:
        config = self.config
        self.progress.open(self.step)
        started, grad_norm, stopped_early = time.monotonic() - self.elapsed, float("nan"), False
        first_step, start_elapsed = self.step, self.elapsed
        while not self._budget_spent(started):
            loss, grad_norm, items = self.train_step()
            self.step += 1
            self.running.append(loss)
            self.elapsed = time.monotonic() - started
            self.progress.update(
                self.step,
                self._progress_fraction(),
                loss,
                self.best,
                items * self.step / max(self.elapsed, 1e-9),
            )
            if self.step == first_step + 5:
                self._warn_if_few_steps(first_step, start_elapsed, projected=True)
            if self.writer:
                self.writer.add_scalar("train/loss", loss, self.step)
                self.writer.add_scalar("train/grad_norm", grad_norm, self.step)
                self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.step)
            if self.step % config.eval_every == 0:
                stopped_early = self._evaluate_and_keep(grad_norm)
            if self.step % config.checkpoint_every == 0:
                self.save_state()
            if stopped_early:
                break
        if self.running or not self.history["step"]:
            self._evaluate_and_keep(grad_norm)
        self.progress.close()
        if not stopped_early:
            self._warn_if_few_steps(first_step, start_elapsed, projected=False)
        self.save_state()
        return self._finish(stopped_early)

    def _warn_if_few_steps(self, first_step: int, start_elapsed: float, *, projected: bool) -> None:
        """A time budget that yields a handful of steps trains nothing useful: say so early, and at the end."""
        config = self.config
        if config.budget_minutes is None or not self.dist.is_main:
            return
        per_step = (self.elapsed - start_elapsed) / max(1, self.step - first_step)
        steps = self.step
        if projected:
            steps += int((config.budget_minutes * 60 - self.elapsed) / max(per_step, 1e-9))
        if (config.max_steps is not None and steps >= config.max_steps) or steps >= FEW_STEPS:
            return
        verb = "will give about" if projected else "gave"
        message = (
            f"the {config.budget_minutes:g}-minute budget {verb} {steps} steps ({per_step:.2f} s each), "
            f"fewer than {FEW_STEPS}: the model is barely trained; give more --minutes, a --steps budget, "
            "or a smaller model (--hidden-size)"
        )
        self.warnings.append(message)
        if self.progress.mode:
            self.progress.warn(message)
        else:  # progress=False from Python: a warning the caller sees (and can filter)
            warnings.warn(message, FewStepsWarning, stacklevel=2)

    def _budget_spent(self, started: float) -> bool:
        if self.config.max_steps is not None and self.step >= self.config.max_steps:
            return True
        return (
            self.config.budget_minutes is not None
            and time.monotonic() - started >= self.config.budget_minutes * 60
        )

    def _progress_fraction(self) -> float:
        fractions = []
        if self.config.max_steps:
            fractions.append(self.step / self.config.max_steps)
        if self.config.budget_minutes:
            fractions.append(self.elapsed / (self.config.budget_minutes * 60))
        return min(1.0, max(fractions))

    def _learning_rate(self) -> float:
        """Linear warmup, then cosine decay to ``min_lr_fraction`` over the budget."""
        config = self.config
        if self.step < config.warmup_steps:
            return config.learning_rate * (self.step + 1) / config.warmup_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * self._progress_fraction()))
        return config.learning_rate * (config.min_lr_fraction + (1.0 - config.min_lr_fraction) * cosine)

    def train_step(self) -> tuple[float, float, int]:
        self.network.train()
        inputs, targets, fresh = self.batches.next()
        if fresh or self.config.reset_state_per_chunk or not self.data.is_series:
            self.carried = None
        if self.config.input_noise and self.model.input_std is not None:
            inputs = inputs + self.config.input_noise * self.model.input_std * torch.randn_like(inputs)
        y, state = self.network(inputs, self.carried)
        if self.data.is_series:
            self.carried = tuple(s.detach() for s in state)
        loss = self.loss(y, targets)
        for group in self.optimizer.param_groups:
            group["lr"] = self._learning_rate()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip))
        self.optimizer.step()
        return loss.item(), grad_norm, int(inputs.shape[0] * inputs.shape[1])

    def loss(self, y: torch.Tensor, targets, reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy over every step, or MSE in normalised units; for sequences, the last step counts
        in full and every earlier step half, so the class can be read early."""
        if not self.data.is_series:
            lengths, labels = targets
            last = y[torch.arange(len(labels)), lengths - 1]  # (B, C)
            mask = torch.arange(y.shape[1])[None, :] < lengths[:, None]  # (B, T)
            every = nn.functional.cross_entropy(
                y[mask], labels[:, None].expand_as(mask)[mask], reduction=reduction
            )
            return (
                nn.functional.cross_entropy(last, labels, reduction=reduction)
                + self.config.every_step_weight * every
            )
        if self.data.loss == "mse":
            scale, shift = self.model.output_std, self.model.output_mean
            return nn.functional.mse_loss((y - shift) / scale, (targets - shift) / scale, reduction=reduction)
        weights = self.data.class_weights
        return nn.functional.cross_entropy(
            y.reshape(-1, y.shape[-1]), targets.reshape(-1), weight=weights, reduction=reduction
        )

    # -- validation --

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float | None]:
        """Validation loss, and accuracy for classifiers (None otherwise)."""
        self.model.eval()
        if not self.data.is_series:
            inputs, (lengths, labels) = pad_sequences(self.data.validation)
            y, _ = self.model(inputs)
            last = y[torch.arange(len(labels)), lengths - 1]
            loss = nn.functional.cross_entropy(last, labels).item()
            return loss, float((last.argmax(dim=1) == labels).float().mean())
        return evaluate_series(
            self.model, self.data, *self.data.validation, self.config.eval_batch_size, self.config.seq_len
        )

    def _evaluate_and_keep(self, grad_norm: float) -> bool:
        val_loss, val_metric = self.evaluate()
        history = self.history
        history["step"].append(self.step)
        history["train_loss"].append(sum(self.running) / len(self.running) if self.running else float("nan"))
        history["val_loss"].append(val_loss)
        history["val_metric"].append(val_metric)
        history["grad_norm"].append(grad_norm)
        history["lr"].append(self.optimizer.param_groups[0]["lr"])
        self.running = []
        if self.dist.is_main:
            metric = f"  val accuracy {val_metric:.4f}" if val_metric is not None else ""
            self.progress.write(
                f"step {self.step}: train {history['train_loss'][-1]:.4f}  val {val_loss:.4f}{metric}"
            )
            if self.writer:
                self.writer.add_scalar("val/loss", val_loss, self.step)
        if val_loss < self.best:
            self.best, self.bad_evals = val_loss, 0
            self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self._save_best()
        else:
            self.bad_evals += 1
        return self.config.patience is not None and self.bad_evals >= self.config.patience

    def _save_best(self) -> None:
        if self.dist.is_main:
            save_checkpoint(
                self.run_dir,
                self.model,
                task=self.data.task,
                vocabulary=self.data.vocabulary,
                train_config=self._saved_config(),
            )

    def _saved_config(self) -> dict:
        return {
            **asdict(self.config),
            "data": self.setup["data"],
            "data_options": self.setup["data_options"],
            "metadata": self.data.metadata,
        }

    def _finish(self, stopped_early: bool) -> dict:
        self.model.load_state_dict(self.best_weights)  # hand back the model that was saved
        if self.data.task == "anomaly":
            self.data.metadata["anomaly"] = {"residual_std": residual_std(self.model, *self.data.validation)}
            self._save_best()
        history = self.history
        best_index = history["val_loss"].index(min(history["val_loss"]))
        train_size, validation_size = self.data.split_sizes
        metrics = {
            "task": self.data.task,
            "data": self.setup["data"],
            **{
                k: v
                for k, v in self.data.metadata.items()
                if k in ("columns", "targets", "classes", "label_column")
            },
            "split_unit": {"charlm": "characters", "classify": "sequences"}.get(self.data.task, "rows"),
            "train_size": train_size,
            "validation_size": validation_size,
            "loss": self.data.loss_description,
            "threads": torch.get_num_threads(),
            "warnings": self.warnings,
            "steps": self.step,
            "minutes": self.elapsed / 60,
            "processes": self.dist.world,
            "stopped_early": stopped_early,
            "parameters": count_parameters(self.model),
            "best_step": history["step"][best_index],
            "best_val_loss": history["val_loss"][best_index],
            "best_val_accuracy": history["val_metric"][best_index],
            "final_val_loss": history["val_loss"][-1],
            "rank_parameter_digests": self._parameter_digests(),
            "history": history,
        }
        if self.dist.is_main:
            write_json(self.run_dir / METRICS_FILE, metrics)
            atomic_write_bytes(self.run_dir / CURVES_FILE, plot_curves(history, self.data.task))
            if self.writer:
                self.writer.close()
        self.dist.barrier()
        return metrics

    def _parameter_digests(self) -> list[str]:
        """SHA-256 of the parameters on every rank: equal digests prove the ranks stayed in sync."""
        data = b"".join(p.detach().cpu().numpy().tobytes() for p in self.model.parameters())
        digest = torch.frombuffer(bytearray(hashlib.sha256(data).digest()), dtype=torch.uint8)
        return [bytes(d.tolist()).hex() for d in self.dist.gather(digest)]

    # -- resume --

    def save_state(self) -> None:
        """Everything needed to continue exactly, in one atomically written file (rank 0 writes)."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optimizer = self.optimizer.state_dict()
        for index, slots in optimizer["state"].items():
            for name, value in slots.items():
                tensors[f"optim.{index}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
        per_rank = {"rng": torch.get_rng_state()}
        for i, s in enumerate(self.carried or ()):
            per_rank[f"carried.{i}"] = s
        for name, value in per_rank.items():
            for rank, gathered in enumerate(self.dist.gather(value)):
                tensors[f"rank{rank}.{name}"] = gathered
        if hasattr(self, "best_weights"):
            tensors.update({f"best.{k}": v for k, v in self.best_weights.items()})
        if not self.dist.is_main:
            return
        state = {
            "setup": self.setup, "train_config": asdict(self.config), "model_config": json.loads(self.model.config.to_json()),
            "param_groups": optimizer["param_groups"], "step": self.step, "elapsed": self.elapsed, "best": self.best,
            "bad_evals": self.bad_evals, "history": self.history, "running": self.running,
            "epoch": self.batches.epoch, "chunk": self.batches.chunk, "carried": len(self.carried or ()), "world": self.dist.world,
        }  # fmt: skip
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        atomic_write_bytes(self.run_dir / RESUME_FILE, save(tensors, metadata={"state": json.dumps(state)}))

    def load_state(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        """Continue from a resume checkpoint; anything missing or malformed in it is an InputError."""
        with guarded(self.run_dir / RESUME_FILE, "the resume state"):
            self._load_state(tensors, state)

    def _load_state(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        if state["world"] != self.dist.world:
            raise InputError(
                f"the run was trained with {state['world']} process(es); resume it with the same number, not {self.dist.world}"
            )
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if any(k.startswith("best.") for k in tensors):
            self.best_weights = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        slots: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                slots.setdefault(int(index), {})[name] = value
        groups = [{**g, "betas": tuple(g["betas"])} for g in state["param_groups"]]
        self.optimizer.load_state_dict({"state": slots, "param_groups": groups})
        self.step, self.elapsed, self.best, self.bad_evals = (
            state["step"],
            state["elapsed"],
            state["best"],
            state["bad_evals"],
        )
        self.history, self.running = state["history"], state["running"]
        self.batches.epoch, self.batches.chunk = state["epoch"], state["chunk"]
        rank = self.dist.rank
        torch.set_rng_state(tensors[f"rank{rank}.rng"])
        self.carried = tuple(tensors[f"rank{rank}.carried.{i}"] for i in range(state["carried"])) or None


@torch.no_grad()
def evaluate_series(
    model: RecurrentModel, data: TaskData, inputs, targets, streams: int, seq_len: int
) -> tuple[float, float | None]:
    """Mean loss over a series cut into ``streams`` contiguous streams, state carried chunk to chunk.

    Cross-entropy in nats per step, or MSE in normalised units; the second value is per-step accuracy
    for classifiers, None otherwise.
    """
    model.eval()
    streams = max(1, min(streams, len(inputs) // (2 * seq_len) or 1))
    length = len(inputs) // streams
    inputs = inputs[: length * streams].reshape(streams, length, *inputs.shape[1:])
    targets = targets[: length * streams].reshape(streams, length, *targets.shape[1:])
    state, total, correct, count = None, 0.0, 0, 0
    for start in range(0, length, seq_len):
        x, t = inputs[:, start : start + seq_len], targets[:, start : start + seq_len]
        y, state = model(x, state)
        if data.loss == "mse":
            scale, shift = model.output_std, model.output_mean
            total += (
                nn.functional.mse_loss((y - shift) / scale, (t - shift) / scale, reduction="sum").item()
                / y.shape[-1]
            )
        else:
            total += nn.functional.cross_entropy(
                y.reshape(-1, y.shape[-1]), t.reshape(-1), reduction="sum"
            ).item()
            correct += int((y.argmax(dim=-1) == t).sum())
        count += t.shape[0] * t.shape[1]
    accuracy = correct / count if data.loss != "mse" and data.task != "charlm" else None
    return total / count, accuracy


@torch.no_grad()
def residual_std(model: RecurrentModel, inputs: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Spread of the one-step prediction error per target, in the user's units, over one clean series."""
    model.eval()
    predictions, _ = model(inputs[None])  # (1, N, targets)
    errors = (targets - predictions[0]).double()
    return [max(float(s), 1e-12) for s in errors.std(dim=0)]


def plot_curves(history: dict, task: str) -> bytes:
    """PNG of training and validation loss against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(history["step"], history["train_loss"], label="train", marker=".")
    ax.plot(history["step"], history["val_loss"], label="validation", marker=".")
    ax.set_xlabel("step")
    units = {"charlm": "nats per character", "classify": "nats per sequence", "steplabels": "nats per step"}
    ax.set_ylabel(f"loss ({units[task]})" if task in units else "MSE of the normalised targets")
    ax.set_title(f"edgernn {task}")
    ax.grid(alpha=0.3)
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _summary_writer(log_dir: str | os.PathLike) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ModuleNotFoundError:
        raise InputError("--tensorboard needs the tensorboard package: pip install tensorboard") from None

    return SummaryWriter(log_dir=str(log_dir))
