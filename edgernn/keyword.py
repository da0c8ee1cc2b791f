"""The keyword task: a spoken-word recognizer trained on labelled clips (``edgernn train DIR``).

The run's model is a RecurrentModel over log-mel frames (optionally less their running mean per band, the
front end's causal normalisation, ``RUNNING_MS``), normalised in the model by the training frames' mean and std
per band; the export puts the front end in front of it (``edgernn.export.keyword``), so the exported step
takes one 10 ms hop of raw samples. Training sees:

- every training clip as it is, and ``Augmentation.copies`` varied copies of it (speed, frequency warp, gain, time
  shift with background before and after the word, white or pink noise at several SNRs; on the log-mel
  frames a spectral tilt and SpecAugment-style band and time masks), drawn afresh every epoch
  (``Redrawn``; ``REDRAW`` False: drawn once);
- a "no word" class (``_none``) of generated silence, white and pink noise at several levels and the
  clips' own first and last 60 ms in quiet noise, one class's share of the clips.

Each varied case's steps are labelled by what they hear (``STEP_LABELS``, ``edgernn.batches.StepLabels``):
a clip heard first as its own word, the background before the word as no word, the word from the hop
its first sample arrives in; after a word, ``TAIL_MS`` of steps go unjudged before the background is no
word. The case's label (the last step's) is unchanged.

Validation: a stratified share of the clips as they are (no augmentation), plus no-word clips. All of it
is seeded: a resumed run rebuilds exactly the same data, epoch by epoch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from edgernn.audio import (
    Augmentation,
    augment_spans,
    clip_edges,
    dft_matrix,
    log_mel_fast,
    no_word_clip,
    running_normalise,
    stacked_filterbank,
    vary_features,
)
from edgernn.batches import IGNORE, StepLabels
from edgernn.runtime.audio import NO_WORD, PCM_SCALE, Clips, FrontEnd, read_clips
from edgernn.runtime.errors import InputError
from edgernn.tasks import MIN_VALIDATION_CASES, TaskData, _natural_key, _stats, case_order

AUGMENTATION = Augmentation()  # the task's augmentation (benchmarks/keyword_loso.py varies it)
REDRAW = True  # the varied training cases drawn afresh every epoch (False: drawn once)
RUNNING_MS = 0.0  # the front end's running normalisation by default: its time constant in ms (0: off)
STEP_LABELS = True  # each varied case's steps labelled by what they hear (False: all by the case's label)
TAIL_MS = 300.0  # after a word ends, how long its steps go unjudged before they are no word
TAIL_IS_WORD = False  # those steps labelled as the word instead of unjudged
WORD_UNJUDGED = 0.0  # the share of a word's steps, from its first, that no loss judges (0: all judged)
ONSET_NO_WORD = False  # that share labelled no word instead (the word cannot be told yet: stay quiet)


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
    wav_repeat: int = 1,
) -> TaskData:
    """Clips from ``path`` (a folder of WAV files, or clip bundles, or both: ``read_clips``, with
    ``wav_repeat``) as a TaskData of log-mel sequences."""
    return task_from_clips(
        read_clips(path, wav_repeat), validation_fraction, seed, min_validation_cases, augment=augment,
        mels=mels, running_ms=running_ms,
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
    aug = AUGMENTATION if augment else replace(AUGMENTATION, copies=0)
    running_ms = RUNNING_MS if running_ms is None else running_ms
    if running_ms:
        fe = replace(fe, running_ms=float(running_ms), running_start=_band_means(clips, fe))
    features = _Features(fe)
    draws, recipes = _Draws(clips, index, aug, features, rng), []
    train = _word_cases(draws, recipes)
    train += _no_word_cases(draws, len(clips) // (len(classes) - 1) * (1 + aug.copies), recipes)
    checks = _Draws(validation, index, replace(aug, copies=0), features, rng)
    valid = _word_cases(checks) + _no_word_cases(checks, max(2, len(validation) // (len(classes) - 1)))
    mean, std = _stats(np.concatenate([x for x, _ in train]))
    fields = {
        "input_kind": "features", "input_size": fe.mels, "output_kind": "logits", "output_size": len(classes),
        "input_mean": mean, "input_std": std,
    }  # fmt: skip
    metadata = {"classes": classes, "no_word": NO_WORD, "front_end": fe.to_dict()}
    notes = {
        "clips": {"train": len(clips), "validation": len(validation)},
        "augmentation": _augmentation_note(aug),
        "augmented_copies": "drawn afresh every epoch" if aug.copies and REDRAW else "drawn once",
    }
    as_tensors = lambda cases: [(torch.from_numpy(x), label) for x, label in cases]  # noqa: E731
    return TaskData(
        "keyword",
        "cross_entropy",
        fields,
        train=Redrawn(as_tensors(train), recipes, seed) if aug.copies and REDRAW else as_tensors(train),
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

    def __call__(self, signal: np.ndarray, vary=None, warp: float = 1.0, tempo: float = 1.0) -> np.ndarray:
        bank = self.bank if warp == 1.0 else stacked_filterbank(self.fe, warp)
        frames = log_mel_fast(signal, self.fe, self.dft, bank, tempo)
        return self.normalise(frames if vary is None else vary(frames))

    def normalise(self, frames: np.ndarray) -> np.ndarray:
        return running_normalise(frames, self.fe)


class _Draws:
    """How each varied case is drawn from a clip: a copy, a copy followed by background (no word), a
    no-word clip; the same calls make the first epoch's cases and every later epoch's fresh ones."""

    def __init__(self, clips: Clips, index: dict[str, int], aug: Augmentation, features, rng):
        self.rng = rng  # the first epoch's draws, one after another
        self.signals = [samples.astype(np.float32) / PCM_SCALE for samples in clips.audio]
        self.labels = [index[label] for label in clips.labels]
        self.rate, self.aug, self.features, self.no_word = clips.rate, aug, features, index[NO_WORD]
        self.edges = [e for signal in self.signals[:400] for e in clip_edges(signal, clips.rate)]
        self.hop = features.fe.hop
        self.tail = int(round(TAIL_MS * clips.rate / 1000.0 / self.hop))

    def copy(self, clip: int, rng) -> tuple[np.ndarray, int]:
        aug, signals = self.aug, self.signals
        other = int(rng.integers(len(signals))) if rng.random() < aug.context_probability else None
        before = None if other is None else signals[other]
        varied, spans = augment_spans(signals[clip], self.rate, aug, rng, before=before)
        warp = rng.uniform(*aug.warp) if aug.warp[0] != aug.warp[1] else aug.warp[0]
        tempo = rng.uniform(*aug.tempo) if aug.tempo[0] != aug.tempo[1] else aug.tempo[0]
        frames = self.features(varied, lambda frames: vary_features(frames, aug, rng), warp, tempo)
        if tempo != 1.0:  # where the words are in the copy as heard, at that tempo
            spans = {k: (int(a / tempo), int(np.ceil(b / tempo))) for k, (a, b) in spans.items()}
        label = self.labels[clip]
        return frames, self.step_labels(label, label, spans, None if other is None else self.labels[other])

    def after(self, clip: int, rng) -> tuple[np.ndarray, int]:
        varied, spans = augment_spans(
            self.signals[clip], self.rate, self.aug, rng, trail_ms=self.aug.after_ms
        )
        return self.features(varied), self.step_labels(self.no_word, self.labels[clip], spans)

    def none(self, clip: int, rng) -> tuple[np.ndarray, int]:
        return self.features(no_word_clip(self.rate, self.edges, rng)), self.no_word

    def step_labels(self, final: int, word: int, spans: dict, before: int | None = None) -> int:
        """``final`` (the case's label), with each step labelled by what it hears (``STEP_LABELS``): the
        clip heard first as its own word, the background after a word as no word once ``TAIL_MS`` have
        passed (unjudged until then, or the word with ``TAIL_IS_WORD``), the background before the word as no word, the word as ``word``
        from the hop its first sample arrives in (its first ``WORD_UNJUDGED`` share, if any, unjudged);
        after it, ``final``."""
        if not STEP_LABELS:
            return final
        hop, marks = self.hop, []
        if before is not None:
            end = -(-spans["before"][1] // hop)
            tail = before if TAIL_IS_WORD else IGNORE
            marks += [*self.word_marks(0, end, before), (end, tail), (end + self.tail, self.no_word)]
        start, end = spans["word"][0] // hop, -(-spans["word"][1] // hop)
        if start > 0 and not marks:
            marks.append((0, self.no_word))
        marks += self.word_marks(start, end, word)
        if final != word:
            marks += [(end, word if TAIL_IS_WORD else IGNORE), (end + self.tail, final)]
        return StepLabels(final, marks)

    def as_is(self, signal: np.ndarray, label: int) -> tuple[np.ndarray, int]:
        """A clip as it is: the word from its first hop to its last."""
        frames = self.features(signal)
        if not STEP_LABELS or not WORD_UNJUDGED:
            return frames, label
        return frames, StepLabels(label, self.word_marks(0, len(frames), label))

    def word_marks(self, first: int, end: int, word: int) -> list[tuple[int, int]]:
        """A word heard from step ``first`` to ``end``: its first ``WORD_UNJUDGED`` share unjudged (or
        no word, ``ONSET_NO_WORD``)."""
        judged = first + int(WORD_UNJUDGED * (end - first))
        onset = self.no_word if ONSET_NO_WORD else IGNORE
        return [(first, onset), (judged, word)] if judged > first else [(first, word)]


def _word_cases(draws: _Draws, recipes: list | None = None) -> list[tuple[np.ndarray, int]]:
    """Each clip as it is, its varied copies (some after another clip), and with probability
    ``aug.after_probability`` a copy followed by ``aug.after_ms`` of background, labelled no word.
    ``recipes`` gains, per case, how to draw it again (None: the clip as it is)."""
    cases, aug, rng = [], draws.aug, draws.rng
    recipes = [] if recipes is None else recipes
    for clip, (signal, label) in enumerate(zip(draws.signals, draws.labels, strict=True)):
        cases.append(draws.as_is(signal, label))
        recipes.append(None)
        for _ in range(aug.copies):
            cases.append(draws.copy(clip, rng))
            recipes.append((draws.copy, clip))
        if aug.copies and rng.random() < aug.after_probability:
            cases.append(draws.after(clip, rng))
            recipes.append((draws.after, clip))
    return cases


def _no_word_cases(draws: _Draws, count: int, recipes: list | None = None) -> list[tuple[np.ndarray, int]]:
    recipes = [] if recipes is None else recipes
    recipes.extend([(draws.none, 0)] * count)
    return [draws.none(0, draws.rng) for _ in range(count)]


class Redrawn(Sequence):
    """The training cases, whose varied ones are drawn afresh every epoch (``set_epoch``, called by the
    batches): epoch 0 is the cases as first drawn, epoch e > 0 draws case i from a generator seeded by
    ``(seed, e, i)``, so a resumed run sees the same data. The clips as they are never change."""

    def __init__(self, cases: list, recipes: list, seed: int):
        import torch

        self.torch, self.cases, self.recipes, self.seed, self.epoch = torch, cases, recipes, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        case = self.cases[i]
        recipe = self.recipes[i]
        if self.epoch == 0 or recipe is None:
            return case
        draw, clip = recipe
        x, label = draw(clip, np.random.default_rng([self.seed, self.epoch, i % len(self)]))
        return self.torch.from_numpy(x), label


def _augmentation_note(aug: Augmentation) -> dict[str, Any] | str:
    if aug.copies == 0:
        return "off"
    return {
        "copies": aug.copies, "speed": list(aug.speed), "warp": list(aug.warp), "tempo": list(aug.tempo), "gain_db": list(aug.gain_db), "lead_ms": aug.lead_ms,
        "trail_ms": aug.trail_ms, "snrs_db": list(aug.snrs_db), "gap_s": list(aug.gap_s), "noise_probability": aug.noise_probability,
        "eq_db": aug.eq_db, "shelf_db": aug.shelf_db, "band_masks": [aug.band_masks, aug.band_mask],
        "time_masks": [aug.time_masks, aug.time_mask],
    }  # fmt: skip
