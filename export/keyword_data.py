"""Real data for checking a quantized keyword model (torch-free): clips as raw hops, split as training
splits them, judged by clip accuracy after each clip's last hop."""

from __future__ import annotations

import os

import numpy as np

from edgernn.export.quality import EvaluationData
from edgernn.runtime.audio import FrontEnd, hops_of, read_clips
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import InputError


def keyword_evaluation_data(
    info_or_fe: ModelInfo | FrontEnd,
    classes: list[str],
    path: str | os.PathLike,
    *,
    validation_fraction: float | None = 0.1,
    seed: int = 0,
    min_validation_cases: int = 0,
) -> EvaluationData:
    """Clips from ``path`` as raw hops: the training split (in order, one stream) calibrates, the
    validation split (as training split it, seeded) is judged by clip accuracy; ``validation_fraction``
    None judges every clip and calibrates on them too."""
    from edgernn.tasks import case_order

    fe = (
        info_or_fe
        if isinstance(info_or_fe, FrontEnd)
        else FrontEnd.from_metadata(info_or_fe.extra.get("front_end"))
    )
    clips = read_clips(path)
    if clips.rate != fe.sample_rate:
        raise InputError(f"{path}: {clips.rate} Hz clips; the model takes {fe.sample_rate} Hz")
    unknown = sorted(set(clips.labels) - set(classes))
    if unknown:
        raise InputError(f"{path}: labels {unknown} were not in the training classes {classes}")
    labels = [classes.index(label) for label in clips.labels]
    if validation_fraction is None:
        judged, calibrating = list(range(len(clips))), list(range(len(clips)))
    else:
        order, n_val = case_order(labels, validation_fraction, seed, min_validation_cases)
        judged, calibrating = list(order[:n_val]), list(order[n_val:])
    sequences = tuple((hops_of(clips.audio[i], fe.hop), labels[i]) for i in judged)
    calibration = np.concatenate([hops_of(clips.audio[i], fe.hop) for i in calibrating])
    split = "whole folder" if validation_fraction is None else "validation split"
    return EvaluationData(calibration, "accuracy", str(path), sequences=sequences, split=split)
