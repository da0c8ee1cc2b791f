"""Task helpers on top of a stream: anomaly scores per sample, class decisions per frame. numpy only.

They read what the exporter recorded in the metadata (``classes``, ``columns``, ``targets``, ``anomaly``),
validated here because the file may come from anywhere.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ContractError


def metadata_strings(info: ModelInfo, key: str, size: int) -> list[str]:
    """The metadata's ``key`` (``classes``, ``columns``, ``targets``): a list of ``size`` strings, or
    ContractError."""
    value = info.extra.get(key)
    if not isinstance(value, list) or len(value) != size or not all(isinstance(v, str) for v in value):
        raise ContractError(f"metadata {key!r}: expected a list of {size} strings, got {value!r:.80}")
    return value


def class_names(info: ModelInfo) -> list[str]:
    """The label of each output logit, from the metadata's ``classes``."""
    return metadata_strings(info, "classes", info.output.size)


def _model_info(stream: Any) -> ModelInfo:
    info = stream.info
    if info is None:
        raise ContractError("task helpers need an edgernn model (one with edgernn metadata)")
    return info


class StreamingClassifier:
    """Feed frames one at a time; after each, the current best class and its probability.

    ``stream`` is a Stepper or Stream of batch size 1 over a classification model (``classes`` in metadata).
    """

    def __init__(self, stream: Any):
        self.stream = stream
        self.classes = class_names(_model_info(stream))

    def reset(self) -> None:
        self.stream.reset()

    def step(self, frame: Any) -> tuple[str, np.ndarray]:
        """frame: ``(features,)`` raw values. Returns (label, class probabilities ``(classes,)`` float64)."""
        logits = np.asarray(self.stream.step(frame), dtype=np.float64)
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        return self.classes[int(np.argmax(probabilities))], probabilities

    def classify(self, frames: Any) -> tuple[str, np.ndarray]:
        """A whole sequence from the initial state; the decision after the last frame."""
        self.reset()
        result = None
        for frame in np.asarray(frames):
            result = self.step(frame)
        if result is None:
            raise ValueError("classify needs at least one frame")
        return result


class AnomalyScorer:
    """A streaming anomaly score per sample: how far the sample is from the model's prediction of it.

    score_t = max over target columns of ``|x_t - prediction_{t-1}| / residual_std``, where residual_std
    is the prediction error's spread on clean validation data (stored in the metadata at training).
    The first sample after a reset has no prediction and scores 0.
    """

    def __init__(self, stream: Any):
        info = _model_info(stream)
        anomaly = info.extra.get("anomaly")
        std = anomaly.get("residual_std") if isinstance(anomaly, dict) else None
        if not (
            isinstance(std, list)
            and len(std) == info.output.size
            and all(isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in std)
        ):
            raise ContractError(
                f"metadata 'anomaly.residual_std': expected {info.output.size} positive numbers, got {std!r:.80}"
            )
        columns = metadata_strings(info, "columns", info.input.size)
        targets = metadata_strings(info, "targets", info.output.size)
        missing = [t for t in targets if t not in columns]
        if missing:
            raise ContractError(f"metadata 'targets' {missing} are not among the input 'columns' {columns}")
        self.stream = stream
        self.residual_std = np.asarray(std, dtype=np.float64)
        self.target_index = np.array([columns.index(t) for t in targets])
        self.prediction: np.ndarray | None = None

    def reset(self) -> None:
        self.stream.reset()
        self.prediction = None

    def step(self, sample: Any) -> float:
        """sample: ``(features,)`` raw values. Scores it against the last prediction, then predicts the next."""
        values = np.asarray(sample, dtype=np.float64).reshape(-1)
        prediction = self.stream.step(sample)  # validates the sample; state unchanged on bad input
        observed = values[self.target_index]
        score = (
            0.0
            if self.prediction is None
            else float(np.max(np.abs(observed - self.prediction) / self.residual_std))
        )
        self.prediction = np.asarray(prediction, dtype=np.float64)
        return score

    def score(self, samples: Any) -> np.ndarray:
        """Scores ``(T,)`` for a series ``(T, features)``, from the initial state."""
        self.reset()
        return np.array([self.step(sample) for sample in np.asarray(samples)])
