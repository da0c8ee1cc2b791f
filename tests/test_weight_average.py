"""Averaged weights (``TrainConfig.average_decay``): off unless asked for; when on, the
kept model is the exponential moving average of the trained weights, and a killed run resumes to the same
bits from its safetensors resume file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import edgernn.train as train_module
from edgernn.models import ModelConfig
from edgernn.runtime.errors import InputError
from edgernn.train import TrainConfig, resume_training, train_task
from edgernn.train_config import TASK_DEFAULTS

BLEEDING_TRAIN = Path(__file__).parents[1] / "examples" / "data" / "ucr_internalbleeding16_train.csv"
MODEL = ModelConfig(hidden_size=16, dropout=0.0)


def steps(n: int, **overrides) -> TrainConfig:
    settings = dict(
        budget_minutes=None, max_steps=n, batch_size=8, seq_len=32, eval_every=n, eval_batch_size=4,
        warmup_steps=5, checkpoint_every=10,
    )  # fmt: skip
    return TrainConfig(**{**settings, **overrides})


def resume_keys(run: Path) -> list[str]:
    with safe_open(str(run / "resume.safetensors"), "pt") as f:
        return list(f.keys())


def test_no_run_averages_unless_asked(tmp_path):
    assert TrainConfig().average_decay == 0.0
    for task in TASK_DEFAULTS.values():
        assert "average_decay" not in task["train"]
    result = train_task("anomaly", BLEEDING_TRAIN, tmp_path, MODEL, steps(10), progress=False)
    assert "weight_average_decay" not in result.metrics
    assert not [k for k in resume_keys(tmp_path) if k.startswith("average.")]


def test_the_kept_model_is_the_moving_average_of_the_trained_weights(tmp_path, monkeypatch):
    decay, seen = 0.8, []
    original = train_module.Trainer.train_step

    def recorded(self):
        if not seen:
            seen.append({k: v.double() for k, v in self.model.state_dict().items()})
        out = original(self)
        seen.append({k: v.double() for k, v in self.model.state_dict().items()})
        return out

    monkeypatch.setattr(train_module.Trainer, "train_step", recorded)
    config = steps(30, average_decay=decay)
    result = train_task("anomaly", BLEEDING_TRAIN, tmp_path / "a", MODEL, config, progress=False)
    average = dict(seen[0])
    for step, weights in enumerate(seen[1:], start=1):
        weight = 1.0 - min(decay, (1.0 + step) / (10.0 + step))
        average = {k: v + weight * (weights[k] - v) for k, v in average.items()}
    kept, last = result.model.state_dict(), seen[-1]
    assert result.metrics["weight_average_decay"] == decay
    for name, value in kept.items():
        assert torch.allclose(value.double(), average[name], atol=1e-6), name
    assert any(not torch.allclose(kept[k].double(), last[k], atol=1e-4) for k in kept)  # not the last weights


def test_a_killed_averaging_run_resumes_to_the_same_bits(tmp_path, monkeypatch):
    config = steps(40, eval_every=10, average_decay=0.9)
    straight = train_task("anomaly", BLEEDING_TRAIN, tmp_path / "a", MODEL, config, progress=False)
    calls, original = {"n": 0}, train_module.Trainer.train_step

    def killed_at_25(self):
        calls["n"] += 1
        if calls["n"] > 25:
            raise KeyboardInterrupt  # the process dies mid-run, after the checkpoint of step 20
        return original(self)

    monkeypatch.setattr(train_module.Trainer, "train_step", killed_at_25)
    with pytest.raises(KeyboardInterrupt):
        train_task("anomaly", BLEEDING_TRAIN, tmp_path / "b", MODEL, config, progress=False)
    assert [k for k in resume_keys(tmp_path / "b") if k.startswith("average.")]
    monkeypatch.setattr(train_module.Trainer, "train_step", original)
    resumed = resume_training(tmp_path / "b", progress=False)
    assert resumed.metrics["history"]["val_loss"] == straight.metrics["history"]["val_loss"]
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("decay", [-0.1, 1.0, True, float("nan")])
def test_a_decay_outside_0_to_1_is_refused(decay):
    with pytest.raises(InputError, match="average_decay must be in"):
        TrainConfig(average_decay=decay)
