"""How to train: ``TrainConfig``, each task's defaults, and the names of a run directory's files."""

from __future__ import annotations

from dataclasses import dataclass, fields

from edgernn.checkpoint import CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE
from edgernn.models import ModelConfig
from edgernn.runtime.errors import InputError

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
    all_data: bool = False  # classify: the validation cases train too, the last weights are kept (a refit)
    # validate, keep and save an exponential moving average of the trained weights, with this decay per
    # step (0: the trained weights); a resumed run continues the average from its resume file
    average_decay: float = 0.0
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
        if isinstance(self.average_decay, bool) or not 0.0 <= self.average_decay < 1.0:
            problems.append(f"average_decay must be in [0, 1), got {self.average_decay!r}")
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
    "keyword": {
        "model": {"hidden_size": 96},
        "train": {"batch_size": 32, "eval_every": 100, "every_step_weight": 0.2, "learning_rate": 6e-3},
    },
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
