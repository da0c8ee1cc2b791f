"""Train a character-level language model on a text file and write a run directory.

The run directory holds config.json (model + training settings), model.safetensors (best validation
loss), vocab.json and metrics.json. Validation loss is measured the way the stepper will use the model:
the whole validation split in contiguous streams, state carried from chunk to chunk.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from edgernn.checkpoint import METRICS_FILE, save_checkpoint, write_json
from edgernn.data import (
    build_vocabulary,
    encode,
    read_text,
    sample_windows,
    split_train_validation,
    stream_chunks,
)
from edgernn.models import ModelConfig, RecurrentModel, count_parameters
from edgernn.runtime.errors import InputError


@dataclass(frozen=True)
class TrainConfig:
    """How to train; saved in config.json under ``train``. One of the budgets may be None."""

    budget_minutes: float | None = 2.0
    max_steps: int | None = None
    batch_size: int = 32
    seq_len: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_every: int = 200
    validation_fraction: float = 0.1
    eval_batch_size: int = 32
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.budget_minutes is None and self.max_steps is None:
            problems.append("give a budget: budget_minutes or max_steps")
        if self.budget_minutes is not None and not self.budget_minutes > 0:
            problems.append(f"budget_minutes must be positive, got {self.budget_minutes}")
        for name in ("max_steps", "batch_size", "seq_len", "eval_every", "eval_batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 < self.validation_fraction < 0.5:
            problems.append(f"validation_fraction must be in (0, 0.5), got {self.validation_fraction}")
        if not self.learning_rate > 0 or not self.grad_clip > 0:
            problems.append("learning_rate and grad_clip must be positive")
        if problems:
            raise InputError("invalid training config: " + "; ".join(problems))


@dataclass
class TrainResult:
    run_dir: Path
    model: RecurrentModel
    vocabulary: list[str]
    metrics: dict


def train_charlm(
    text_path: str | os.PathLike,
    run_dir: str | os.PathLike,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    progress: bool = True,
) -> TrainResult:
    """Train a next-character model on ``text_path``; the best model by validation loss is kept.

    ``model_config``'s vocabulary and output sizes are set from the text; its other fields are used as given.
    """
    train_config = train_config or TrainConfig()
    text = read_text(text_path)
    vocabulary = build_vocabulary(text)
    ids = torch.from_numpy(encode(text, vocabulary))
    train_ids, val_ids = (
        torch.from_numpy(a) for a in split_train_validation(ids.numpy(), train_config.validation_fraction)
    )
    model_config = replace(
        model_config or ModelConfig(cell="gru", hidden_size=256, embedding_size=64),
        input_kind="tokens",
        output_kind="logits",
        input_size=len(vocabulary),
        output_size=len(vocabulary),
    )
    if train_config.threads:
        torch.set_num_threads(train_config.threads)
    torch.manual_seed(train_config.seed)
    model = RecurrentModel(model_config)
    trainer = _Trainer(model, train_config, train_ids, val_ids)
    metrics = trainer.fit(Path(run_dir), vocabulary, progress=progress)
    metrics.update(
        task="charlm",
        data=str(text_path),
        characters=len(text),
        vocabulary_size=len(vocabulary),
        parameters=count_parameters(model),
    )
    write_json(Path(run_dir) / METRICS_FILE, metrics)
    return TrainResult(Path(run_dir), trainer.model, vocabulary, metrics)


class _Trainer:
    def __init__(
        self, model: RecurrentModel, config: TrainConfig, train_ids: torch.Tensor, val_ids: torch.Tensor
    ):
        if len(train_ids) <= config.seq_len + 1:
            raise InputError(
                f"training text has {len(train_ids)} characters; seq_len {config.seq_len} needs more"
            )
        self.model, self.config = model, config
        self.train_ids, self.val_ids = train_ids, val_ids
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.loss_fn = nn.CrossEntropyLoss()
        self.generator = torch.Generator().manual_seed(config.seed)

    def fit(self, run_dir: Path, vocabulary: list[str], *, progress: bool) -> dict:
        config = self.config
        deadline = time.monotonic() + config.budget_minutes * 60 if config.budget_minutes else math.inf
        history: dict[str, list] = {"step": [], "train_loss": [], "val_loss": [], "grad_norm": []}
        best = math.inf
        started, step, running, grad_norm = time.monotonic(), 0, [], float("nan")
        bar = tqdm(total=config.max_steps, desc="train", unit="step", file=sys.stderr, disable=not progress)
        while step < (config.max_steps or math.inf) and time.monotonic() < deadline:
            loss, grad_norm = self.train_step()
            step += 1
            running.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", best_val=f"{best:.3f}")
            if step % config.eval_every == 0:
                best = self._record(history, step, running, grad_norm, best, run_dir, vocabulary)
                running = []
        if running or not history["step"]:
            best = self._record(history, step, running, grad_norm, best, run_dir, vocabulary)
        bar.close()
        self.model.load_state_dict(self.best_weights)  # hand back the model that was saved
        elapsed = time.monotonic() - started
        return {
            "steps": step,
            "minutes": elapsed / 60,
            "characters_per_s": step * config.batch_size * config.seq_len / elapsed,
            "best_val_loss": best,
            "final_val_loss": history["val_loss"][-1],
            "history": history,
        }

    def _record(self, history, step, running, grad_norm, best, run_dir, vocabulary) -> float:
        val_loss = self.evaluate()
        history["step"].append(step)
        history["train_loss"].append(sum(running) / len(running) if running else float("nan"))
        history["val_loss"].append(val_loss)
        history["grad_norm"].append(grad_norm)
        tqdm.write(
            f"step {step}: train {history['train_loss'][-1]:.4f}  val {val_loss:.4f} nats/char",
            file=sys.stderr,
        )
        if val_loss < best:
            self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            save_checkpoint(
                run_dir, self.model, task="charlm", vocabulary=vocabulary, train_config=asdict(self.config)
            )
            return val_loss
        return best

    def train_step(self) -> tuple[float, float]:
        self.model.train()
        inputs, targets = sample_windows(
            self.train_ids, self.config.batch_size, self.config.seq_len, self.generator
        )
        logits, _ = self.model(inputs)  # (B, T, V)
        loss = self.loss_fn(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return loss.item(), float(grad_norm)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean cross-entropy (nats/char) over the whole validation split, state carried across chunks."""
        self.model.eval()
        state, total, count = None, 0.0, 0
        for inputs, targets in stream_chunks(self.val_ids, self.config.eval_batch_size, self.config.seq_len):
            logits, state = self.model(inputs, state)
            total += nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
            ).item()
            count += targets.numel()
        return total / count
