"""The keyword task: a spoken-word recognizer trained on labelled clips (``edgernn train DIR``).

The run's model is a RecurrentModel over log-mel frames less their running mean per band (the front
end's causal normalisation, ``RUNNING_MS``), normalised in the model by the training frames' mean and std
per band; the export puts the front end in front of it (``edgernn.export.keyword``), so the exported step
takes one 10 ms hop of raw samples. Training sees:

- every training clip as it is, and ``Augmentation.copies`` varied copies of it (speed, gain, time
  shift with background before and after the word, white or pink noise at several SNRs; on the log-mel
  frames a spectral tilt and SpecAugment-style band and time masks);
- a "no word" class (``_none``) of generated silence, white and pink noise at several levels and the
  clips' own first and last 60 ms in quiet noise, one class's share of the clips.

Validation: a stratified share of the clips as they are (no augmentation), plus no-word clips. All of it
is seeded: a resumed run rebuilds exactly the same data.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np

from edgernn.audio import (
    Augmentation,
    augment,
    clip_edges,
    dft_matrix,
    log_mel_fast,
    no_word_clip,
    running_normalise,
    stacked_filterbank,
    vary_features,
)
from edgernn.runtime.audio import NO_WORD, PCM_SCALE, Clips, FrontEnd, read_clips
from edgernn.runtime.errors import InputError
from edgernn.tasks import MIN_VALIDATION_CASES, TaskData, _natural_key, _stats, case_order

RUNNING_MS = 0.0  # the front end's running normalisation by default: its time constant in ms (0: off)


def keyword_classes(labels: list[str]) -> list[str]:
    """The model's classes: the labels in natural order, then the no-word class."""
    words = sorted(set(labels), key=_natural_key)
    if NO_WORD in words:
        raise InputError(f"{NO_WORD!r} is the no-word class edgernn adds; name that label otherwise")
    if len(words) < 2:
        raise InputError(f"expected clips of at least 2 words, found {words}")
    return [*words, NO_WORD]


def keyword_task(
    path: str | os.PathLike,
    validation_fraction: float = 0.1,
    seed: int = 0,
    min_validation_cases: int = MIN_VALIDATION_CASES,
    *,
    augment: bool = True,
    mels: int = 32,
    running_ms: float | None = None,
) -> TaskData:
    """Clips from ``path`` (a folder of WAV files, or clip bundles) as a TaskData of log-mel sequences."""
    return task_from_clips(
        read_clips(path), validation_fraction, seed, min_validation_cases, augment=augment, mels=mels,
        running_ms=running_ms,
    )  # fmt: skip


def task_from_clips(
    clips: Clips,
    validation_fraction: float = 0.1,
    seed: int = 0,
    min_validation_cases: int = MIN_VALIDATION_CASES,
    *,
    augment: bool = True,
    mels: int = 32,
    running_ms: float | None = None,
    validation: Clips | None = None,
) -> TaskData:
    """The keyword TaskData of ``clips``; ``validation`` given: those clips validate and all of ``clips``
    train (the benchmark's held-out speaker), else a stratified share of ``clips`` validates."""
    import torch

    fe = FrontEnd.for_rate(clips.rate, mels)
    classes = keyword_classes(clips.labels)
    index = {c: i for i, c in enumerate(classes)}
    if validation is None:
        order, n_val = case_order(
            [index[label] for label in clips.labels], validation_fraction, seed, min_validation_cases
        )
        validation, clips = clips.subset(order[:n_val]), clips.subset(order[n_val:])
    rng = np.random.default_rng(seed)
    aug = Augmentation() if augment else replace(Augmentation(), copies=0)
    running_ms = RUNNING_MS if running_ms is None else running_ms
    if running_ms:
        fe = replace(fe, running_ms=float(running_ms), running_start=_band_means(clips, fe))
    features = _Features(fe)
    train = _word_cases(clips, index, aug, rng, features) + _no_word_cases(
        clips, index, len(clips) // (len(classes) - 1) * (1 + aug.copies), rng, features
    )
    valid = _word_cases(validation, index, replace(aug, copies=0), rng, features)
    valid += _no_word_cases(validation, index, max(2, len(validation) // (len(classes) - 1)), rng, features)
    mean, std = _stats(np.concatenate([x for x, _ in train]))
    fields = {
        "input_kind": "features", "input_size": fe.mels, "output_kind": "logits", "output_size": len(classes),
        "input_mean": mean, "input_std": std,
    }  # fmt: skip
    metadata = {"classes": classes, "no_word": NO_WORD, "front_end": fe.to_dict()}
    notes = {
        "clips": {"train": len(clips), "validation": len(validation)},
        "augmentation": _augmentation_note(aug),
    }
    as_tensors = lambda cases: [(torch.from_numpy(x), label) for x, label in cases]  # noqa: E731
    return TaskData(
        "keyword",
        "cross_entropy",
        fields,
        train=as_tensors(train),
        validation=as_tensors(valid),
        metadata=metadata,
        notes=notes,
    )


def _band_means(clips: Clips, fe: FrontEnd) -> tuple[float, ...]:
    """Each mel band's mean log power over (up to 400 of) the clips as they are: where the running mean
    starts."""
    features = _Features(fe)
    step = max(1, len(clips) // 400)
    frames = [features(samples.astype(np.float32) / PCM_SCALE) for samples in clips.audio[::step]]
    return tuple(float(v) for v in np.concatenate(frames).mean(axis=0, dtype=np.float64))


class _Features:
    """log-mel frames through the graph's own float32 matrices."""

    def __init__(self, fe: FrontEnd):
        self.fe, self.dft, self.bank = fe, dft_matrix(fe), stacked_filterbank(fe)

    def __call__(self, signal: np.ndarray, vary=None) -> np.ndarray:
        frames = log_mel_fast(signal, self.fe, self.dft, self.bank)
        return self.normalise(frames if vary is None else vary(frames))

    def normalise(self, frames: np.ndarray) -> np.ndarray:
        return running_normalise(frames, self.fe)


def _word_cases(
    clips: Clips, index: dict[str, int], aug: Augmentation, rng, features
) -> list[tuple[np.ndarray, int]]:
    """Each clip as it is, its varied copies (some after another clip), and with probability
    ``aug.after_probability`` a copy followed by ``aug.after_ms`` of background, labelled no word."""
    cases = []
    signals = [samples.astype(np.float32) / PCM_SCALE for samples in clips.audio]
    for signal, label in zip(signals, clips.labels, strict=True):
        cases.append((features(signal), index[label]))
        for _ in range(aug.copies):
            before = signals[rng.integers(len(signals))] if rng.random() < aug.context_probability else None
            varied = augment(signal, clips.rate, aug, rng, before=before)
            cases.append((features(varied, lambda frames: vary_features(frames, aug, rng)), index[label]))
        if aug.copies and rng.random() < aug.after_probability:
            heard = augment(signal, clips.rate, aug, rng, trail_ms=aug.after_ms)
            cases.append((features(heard), index[NO_WORD]))
    return cases


def _no_word_cases(
    clips: Clips, index: dict[str, int], count: int, rng, features
) -> list[tuple[np.ndarray, int]]:
    edges = [
        e
        for samples in clips.audio[:400]
        for e in clip_edges(samples.astype(np.float32) / PCM_SCALE, clips.rate)
    ]
    return [(features(no_word_clip(clips.rate, edges, rng)), index[NO_WORD]) for _ in range(count)]


def _augmentation_note(aug: Augmentation) -> dict[str, Any] | str:
    if aug.copies == 0:
        return "off"
    return {
        "copies": aug.copies, "speed": list(aug.speed), "gain_db": list(aug.gain_db), "lead_ms": aug.lead_ms,
        "trail_ms": aug.trail_ms, "snrs_db": list(aug.snrs_db), "noise_probability": aug.noise_probability,
        "eq_db": aug.eq_db, "band_masks": [aug.band_masks, aug.band_mask],
        "time_masks": [aug.time_masks, aug.time_mask],
    }  # fmt: skip
