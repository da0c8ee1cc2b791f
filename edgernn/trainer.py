"""The training loop: steps, validation, the best model kept, resume state, and the run's metrics."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import nn

from edgernn.batches import IGNORE, SequenceBatches, SeriesBatches, pad_sequences, series_steps_needed
from edgernn.checkpoint import METRICS_FILE, save_checkpoint, write_json
from edgernn.distributed import Distributed
from edgernn.interrupt import InterruptRequest, TrainingInterrupted
from edgernn.models import RecurrentModel, count_parameters
from edgernn.progress import Progress
from edgernn.runtime.errors import InputError
from edgernn.runtime.files import atomic_write_bytes
from edgernn.runtime.untrusted import guarded
from edgernn.series_eval import anomaly_calibration, evaluate_series
from edgernn.tasks import TaskData, minimum_series_rows
from edgernn.train_config import CURVES_FILE, FEW_STEPS, RESUME_FILE, FewStepsWarning, TrainConfig
from edgernn.train_summary import percent


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
            check_series_length(data, config, setup["data"], dist.world)
            self.batches = SeriesBatches(
                *data.train, config.batch_size, config.seq_len, config.seed, dist.rank, dist.world
            )
        else:
            self.batches = SequenceBatches(data.train, config.batch_size, config.seed, dist.rank, dist.world)
        self.step, self.elapsed, self.best, self.bad_evals = 0, 0.0, math.inf, 0
        self.saved_step: int | None = None  # the step of the last resume checkpoint written
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
        self.average_decay = config.average_decay
        self.average: dict[str, torch.Tensor] | None = None  # the averaged weights (None: not averaging)
        if self.average_decay:
            self._start_average()

    # -- the loop --

    def fit(self) -> dict:
        """Train until the budget is spent or early stopping; Ctrl-C saves a checkpoint and raises
        TrainingInterrupted (``edgernn.interrupt``)."""
        self.progress.open(self.step)
        request = InterruptRequest(self._say_interrupt_requested, enabled=not self.dist.active)
        try:
            with request:
                grad_norm, stopped_early = self._loop(request)
        except KeyboardInterrupt as exc:  # a second Ctrl-C, or one the loop could not wait for
            self.progress.close()
            if isinstance(exc, TrainingInterrupted):
                raise
            raise self._interrupted(saved=False) from None
        if self.running or not self.history["step"]:
            self._evaluate_and_keep(grad_norm)
        self.progress.close()
        if not stopped_early:
            self._warn_if_few_steps(self._first_step, self._start_elapsed, projected=False)
        self.save_state()
        return self._finish(stopped_early)

    def _loop(self, request: InterruptRequest) -> tuple[float, bool]:
        config = self.config
        started, grad_norm, stopped_early = time.monotonic() - self.elapsed, float("nan"), False
        first_step, start_elapsed = self.step, self.elapsed
        self._first_step, self._start_elapsed = first_step, start_elapsed
        while not self._budget_spent(started):
            loss, grad_norm, items = self.train_step()
            self.step += 1
            self._update_average()
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
            if request.requested:
                if self.saved_step != self.step:
                    self.save_state()
                raise self._interrupted(saved=True)
            if stopped_early:
                break
        return grad_norm, stopped_early

    def _say_interrupt_requested(self) -> None:
        self.progress.write(
            "interrupt: saving a checkpoint after the step in progress (Ctrl-C again to stop at once)"
        )

    def _interrupted(self, *, saved: bool) -> TrainingInterrupted:
        return TrainingInterrupted(
            self.run_dir,
            self.step,
            self.config.max_steps,
            self.saved_step,
            saved=saved and self.saved_step == self.step,
        )

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
        in full and every step by ``every_step_weight``, so the class can be read early (each step judged
        by its own label where the case says what every step is: ``edgernn.batches.StepLabels``)."""
        if not self.data.is_series:
            lengths, labels, steps = targets
            last = y[torch.arange(len(labels)), lengths - 1]  # (B, C)
            every = nn.functional.cross_entropy(
                y.reshape(-1, y.shape[-1]), steps.reshape(-1), ignore_index=IGNORE, reduction=reduction
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
            inputs, (lengths, labels, _) = pad_sequences(self.data.validation)
            y, _ = self.model(inputs)
            last = y[torch.arange(len(labels)), lengths - 1]
            loss = nn.functional.cross_entropy(last, labels).item()
            return loss, float((last.argmax(dim=1) == labels).float().mean())
        return evaluate_series(
            self.model, self.data, *self.data.validation, self.config.eval_batch_size, self.config.seq_len
        )

    # -- averaged weights --

    def _start_average(self) -> None:
        self.average = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    @torch.no_grad()
    def _update_average(self) -> None:
        """``average += (1 - d) * (weights - average)`` after each step, ``d = min(decay, (1 + step) /
        (10 + step))`` so that the first steps' weights weigh less; buffers that are not floats copied."""
        if self.average is None:
            return
        weight = 1.0 - min(self.average_decay, (1.0 + self.step) / (10.0 + self.step))
        for name, value in self.model.state_dict().items():
            kept = self.average[name]
            if kept.is_floating_point():
                kept.lerp_(value.detach(), weight)
            else:
                kept.copy_(value)

    @contextmanager
    def _averaged_weights(self):
        """The model holds the averaged weights inside, the trained ones again after (no averaging: as is)."""
        if self.average is None:
            yield
            return
        trained = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.average)
        try:
            yield
        finally:
            self.model.load_state_dict(trained)

    def _evaluate_and_keep(self, grad_norm: float) -> bool:
        """Validate the model (its averaged weights, ``TrainConfig.average_decay``), keep it if it is the best
        yet."""
        with self._averaged_weights():
            return self._evaluate_and_keep_model(grad_norm)

    def _evaluate_and_keep_model(self, grad_norm: float) -> bool:
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
            metric = f"  val accuracy {percent(val_metric)}" if val_metric is not None else ""
            self.progress.write(
                f"step {self.step}: train {history['train_loss'][-1]:.4f}  val {val_loss:.4f}{metric}"
            )
            if self.writer:
                self.writer.add_scalar("val/loss", val_loss, self.step)
        if val_loss < self.best or self.config.all_data:  # all data: nothing held out, the last is kept
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
            **({"init_from": self.setup["init_from"]} if "init_from" in self.setup else {}),
        }

    def _finish(self, stopped_early: bool) -> dict:
        self.model.load_state_dict(self.best_weights)  # hand back the model that was saved
        if self.data.task == "anomaly":
            self.data.metadata["anomaly"] = anomaly_calibration(self.model, *self.data.validation)
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
                if k in ("columns", "targets", "classes", "label_column", "anomaly")
            },
            **self.data.notes,
            "split_unit": {"charlm": "characters", "classify": "sequences", "keyword": "sequences"}.get(
                self.data.task, "rows"
            ),
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
        if self.average is not None:
            metrics["weight_average_decay"] = self.average_decay
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
        if self.average is not None:
            tensors.update({f"average.{k}": v for k, v in self.average.items()})
        if not self.dist.is_main:
            return
        state = {
            "setup": self.setup, "train_config": asdict(self.config), "model_config": json.loads(self.model.config.to_json()),
            "param_groups": optimizer["param_groups"], "step": self.step, "elapsed": self.elapsed, "best": self.best if math.isfinite(self.best) else None,  # JSON has no infinity
            "bad_evals": self.bad_evals, "history": self.history, "running": self.running,
            "epoch": self.batches.epoch, "chunk": self.batches.chunk, "carried": len(self.carried or ()), "world": self.dist.world,
        }  # fmt: skip
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        atomic_write_bytes(self.run_dir / RESUME_FILE, save(tensors, metadata={"state": json.dumps(state)}))
        self.saved_step = self.step

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
        if self.average is not None:  # a run saved without averaging starts its average here
            averaged = {k[8:]: v for k, v in tensors.items() if k.startswith("average.")}
            shapes = {k: v.shape for k, v in self.model.state_dict().items()}
            if averaged and {k: v.shape for k, v in averaged.items()} != shapes:
                raise InputError("its averaged weights do not match the model's")
            self.average = {k: v.clone() for k, v in averaged.items()} if averaged else None
            if self.average is None:
                self._start_average()
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
            math.inf if state["best"] is None else state["best"],  # None: no validation yet
            state["bad_evals"],
        )
        self.history, self.running = state["history"], state["running"]
        self.saved_step = self.step
        self.batches.epoch, self.batches.chunk = state["epoch"], state["chunk"]
        rank = self.dist.rank
        torch.set_rng_state(tensors[f"rank{rank}.rng"])
        self.carried = tuple(tensors[f"rank{rank}.carried.{i}"] for i in range(state["carried"])) or None


def check_series_length(data: TaskData, config: TrainConfig, source: str, world: int) -> None:
    """Refuse a training split too short for the batches, saying how long a file would do."""
    needed = series_steps_needed(config.batch_size, config.seq_len, world)
    have = len(data.train[0])
    if have >= needed:
        return
    unit = "characters" if data.task == "charlm" else "rows"
    fraction = config.validation_fraction
    raise InputError(
        f"{source}: the training split has {have:,} {unit}; batch_size {config.batch_size} x {world} "
        f"process(es) of seq_len {config.seq_len} needs at least {needed:,}: a file of at least "
        f"{minimum_series_rows(fraction, needed + 1):,} {unit} at validation fraction {fraction:g}, or a "
        "smaller --batch-size or --seq-len"
    )


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
