"""What a series model is judged by: the loss over a held-out series streamed with its state carried,
and an anomaly model's calibration (the spread of its one-step error, the suggested score threshold)."""

from __future__ import annotations

import torch
from torch import nn

from edgernn.models import RecurrentModel
from edgernn.tasks import TaskData


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


THRESHOLD_QUANTILE = 0.999  # the suggested anomaly threshold: this quantile of the validation scores


@torch.no_grad()
def anomaly_calibration(model: RecurrentModel, inputs: torch.Tensor, targets: torch.Tensor) -> dict:
    """The anomaly metadata from one clean validation series: ``residual_std`` per target (the spread of
    the one-step error, in the user's units) and a ``suggested_threshold`` for the score (``AnomalyScorer``:
    the maximum over the targets of ``|error| / residual_std``): its ``THRESHOLD_QUANTILE`` quantile over
    the validation steps, so that about 1 normal step in 1,000 scores above it."""
    std = residual_std(model, inputs, targets)
    model.eval()
    predictions, _ = model(inputs[None])  # (1, N, targets)
    errors = (targets - predictions[0]).double().abs()  # (N, targets)
    scores = (errors / torch.tensor(std, dtype=torch.float64)).max(dim=1).values  # (N,)
    threshold = float(torch.quantile(scores, THRESHOLD_QUANTILE))
    return {
        "residual_std": std,
        "suggested_threshold": float(f"{threshold:.4g}"),
        "threshold_quantile": THRESHOLD_QUANTILE,
    }
