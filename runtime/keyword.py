"""Keyword models at run time (numpy and onnxruntime only): clip accuracy, the spotter that turns a
stream of per-hop scores into detected words, and its evaluation on a continuous stream.

The spotter (``Spotter``), as ``edgernn stream --wav`` and ``edgernn eval`` run it:

1. each hop's logits become posteriors (softmax);
2. smoothing: each class's posterior averaged over the last ``smooth_ms`` (default 100 ms);
3. a word fires once its smoothed posterior has been the best word's, at or above ``threshold``
   (default 0.6), for ``stable_ms`` (default 100 ms), while the spotter is armed and at least
   ``refractory_ms`` (default 600 ms) after the last detection;
4. it re-arms when every word's smoothed posterior has fallen below ``threshold / 2`` (with
   ``other_word_rearms``, also when another word fires after the refractory period).

The time of a detection is the end of the hop that fired it. The stream keeps its state from start to
end, as a device would: nothing is reset between words.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from edgernn.runtime.audio import (
    NO_WORD,
    PCM_SCALE,
    Clips,
    FrontEnd,
    hops_of,
    pink_noise,
    read_clips,
    white_noise,
)
from edgernn.runtime.errors import ContractError, InputError

DEFAULT_THRESHOLD = 0.6
DEFAULT_SMOOTH_MS = 100.0
DEFAULT_REFRACTORY_MS = 600.0
DEFAULT_STABLE_MS = 100.0
DEFAULT_OTHER_WORD_REARMS = False  # the rule before: another word re-armed the spotter
MATCH_AFTER_MS = 500.0  # a detection up to this long after a word's end still counts for that word
LATE_MS = 1000.0  # a false alarm up to this long after a word's end: a late decision on it, counted apart


@dataclass(frozen=True)
class KeywordModel:
    """What a keyword model's metadata says: its front end and classes (the no-word class last)."""

    front_end: FrontEnd
    classes: tuple[str, ...]

    @classmethod
    def of(cls, info: Any) -> KeywordModel:
        """From a Stepper's ``info``; ContractError unless it is a keyword model."""
        extra = getattr(info, "extra", None) or {}
        if extra.get("task") != "keyword":
            raise InputError(f"expected a keyword model (task 'keyword'), got task {extra.get('task')!r}")
        classes = extra.get("classes")
        if (
            not isinstance(classes, list)
            or not all(isinstance(c, str) for c in classes)
            or NO_WORD not in classes
        ):
            raise ContractError(f"classes: expected a list of words with {NO_WORD!r}, got {classes!r:.80}")
        if len(classes) != info.output.size:
            raise ContractError(f"classes: {len(classes)} names for {info.output.size} outputs")
        return cls(FrontEnd.from_metadata(extra.get("front_end")), tuple(classes))

    @property
    def no_word(self) -> int:
        return self.classes.index(NO_WORD)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


# --- clips -------------------------------------------------------------------------------------------------


def classify_clips(stepper: Any, clips: Clips, batch_size: int = 256) -> np.ndarray:
    """Each clip's class index after its last hop, every clip from the initial state: int64 ``(n,)``."""
    return clip_logits(stepper, clips, batch_size).argmax(axis=1)


def clip_logits(stepper: Any, clips: Clips, batch_size: int = 256) -> np.ndarray:
    """Each clip's logits after its last hop, every clip from the initial state: float32 ``(n, classes)``."""
    model = KeywordModel.of(stepper.info)
    check_rate(clips.rate, model.front_end)
    logits = np.empty((len(clips), len(model.classes)), dtype=np.float32)
    for start in range(0, len(clips), batch_size):
        part = clips.audio[start : start + batch_size]
        hops = [hops_of(a, model.front_end.hop) for a in part]
        steps = np.array([len(h) for h in hops])
        xs = np.zeros((len(hops), steps.max(), model.front_end.hop), np.float32)
        for i, h in enumerate(hops):
            xs[i, : len(h)] = h
        stream = stepper.new_stream(batch_size=len(hops))
        last = np.empty((len(hops), len(model.classes)), np.float32)
        for t in range(xs.shape[1]):
            y = stream.step(xs[:, t])
            done = steps == t + 1
            last[done] = y[done]
        logits[start : start + len(hops)] = last
    return logits


def check_rate(rate: int, fe: FrontEnd) -> None:
    if rate != fe.sample_rate:
        raise InputError(f"{rate} Hz audio; the model takes {fe.sample_rate} Hz (resample it first)")


# --- the spotter -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    time_s: float
    word: str
    score: float


@dataclass
class Spotter:
    """Posterior smoothing, threshold, refractory period and re-arming over a stream of hops (see the
    module's docstring). ``push`` takes one hop's logits and returns a Detection or None."""

    model: KeywordModel
    threshold: float = DEFAULT_THRESHOLD
    smooth_ms: float = DEFAULT_SMOOTH_MS
    refractory_ms: float = DEFAULT_REFRACTORY_MS
    stable_ms: float = DEFAULT_STABLE_MS
    other_word_rearms: bool = DEFAULT_OTHER_WORD_REARMS
    hops: int = 0
    _window: deque = field(default_factory=deque)
    _last_hop: int | None = None
    _last_word: int | None = None
    _armed: bool = True
    _leader: int | None = None  # the word at or above the threshold as the best, and for how many hops
    _led: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise InputError(f"threshold: expected a probability in (0, 1), got {self.threshold}")
        if self.smooth_ms < 0 or self.refractory_ms < 0 or self.stable_ms < 0:
            raise InputError("smooth_ms, refractory_ms and stable_ms: expected 0 or more milliseconds")
        hop_ms = self.model.front_end.hop_ms
        self._span = max(1, round(self.smooth_ms / hop_ms))
        self._refractory = round(self.refractory_ms / hop_ms)
        self._stable = max(1, round(self.stable_ms / hop_ms))  # hops at the top, this one included
        self._words = np.array([i != self.model.no_word for i in range(len(self.model.classes))])

    def push(self, logits: np.ndarray) -> Detection | None:
        self.hops += 1
        self._window.append(softmax(np.asarray(logits, np.float64).reshape(-1)))
        if len(self._window) > self._span:
            self._window.popleft()
        smoothed = np.where(self._words, np.mean(self._window, axis=0), 0.0)
        best = int(np.argmax(smoothed))
        score = float(smoothed[best])
        leading = score >= self.threshold
        self._led = self._led + 1 if leading and best == self._leader else int(leading)
        self._leader = best if leading else None
        since = None if self._last_hop is None else self.hops - self._last_hop
        if score < self.threshold / 2:
            self._armed = True
        if not leading or self._led < self._stable or (since is not None and since < self._refractory):
            return None
        if not self._armed and (best == self._last_word or not self.other_word_rearms):
            return None
        self._armed, self._last_hop, self._last_word = False, self.hops, best
        return Detection(self.hops * self.model.front_end.hop_ms / 1000.0, self.model.classes[best], score)


def spot(stepper: Any, samples: np.ndarray, **spotter_options: Any) -> list[Detection]:
    """Every word the model detects in ``samples`` (int16 or float in [-1, 1)), streamed hop by hop."""
    model = KeywordModel.of(stepper.info)
    return list(spot_hops(stepper, hops_of(samples, model.front_end.hop), **spotter_options))


def spot_hops(stepper: Any, hops: Iterable[np.ndarray], **spotter_options: Any) -> Iterator[Detection]:
    """Each detection as soon as the hop that makes it has been stepped: ``hops`` float32 ``(hop,)``."""
    spotter = Spotter(KeywordModel.of(stepper.info), **spotter_options)
    stream = stepper.new_stream()
    for hop in hops:
        detection = spotter.push(stream.step(hop[None])[0])
        if detection is not None:
            yield detection


def pcm_hops(source: BinaryIO, hop: int) -> Iterator[np.ndarray]:
    """Raw 16-bit little-endian mono PCM from ``source`` as hops, float32 ``(hop,)`` in [-1, 1), read as
    it arrives; the last partial hop zero-padded. An odd byte at the end is an InputError."""
    size = 2 * hop
    while True:
        chunk = source.read(size)
        while chunk and len(chunk) < size:  # a pipe may hand over less than asked
            more = source.read(size - len(chunk))
            if not more:
                break
            chunk += more
        if not chunk:
            return
        if len(chunk) % 2:
            raise InputError(
                f"the PCM ended in an odd byte ({len(chunk)} bytes in the last hop); expected 16-bit samples"
            )
        samples = np.frombuffer(chunk, dtype="<i2").astype(np.float32) / PCM_SCALE
        out = np.zeros(hop, np.float32)
        out[: len(samples)] = samples
        yield out
        if len(chunk) < size:
            return


# --- a continuous test stream --------------------------------------------------------------------------------


@dataclass
class WordStream:
    """Test clips one after another with silence or noise between them: ``samples`` float32, each word's
    (start_s, end_s, label), and the seconds of gap audio (no word)."""

    samples: np.ndarray
    words: list[tuple[float, float, str]]
    gap_seconds: float


def build_stream(clips: Clips, seed: int = 0, gap_s: tuple[float, float] = (0.8, 2.0)) -> WordStream:
    """The clips in a seeded order, each gap (and the stream's lead-in) one of: digital silence, or white
    or pink noise at -60, -50 or -40 dBFS, ``gap_s`` seconds long."""
    rng = np.random.default_rng(seed)
    pieces, words, at, gaps = [], [], 0, 0
    for i in rng.permutation(len(clips)):
        gap = _gap(int(rng.uniform(*gap_s) * clips.rate), rng)
        clip = clips.audio[i].astype(np.float32) / PCM_SCALE
        pieces += [gap, clip]
        at, gaps = at + len(gap), gaps + len(gap)
        words.append((at / clips.rate, (at + len(clip)) / clips.rate, clips.labels[i]))
        at += len(clip)
    tail = _gap(int(gap_s[1] * clips.rate), rng)
    samples = np.concatenate([*pieces, tail]).astype(np.float32)
    return WordStream(samples, words, (gaps + len(tail)) / clips.rate)


def _gap(samples: int, rng: np.random.Generator) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:
        return np.zeros(samples, np.float32)
    level = 10.0 ** (float(rng.choice([-60.0, -50.0, -40.0])) / 20.0)
    noise = white_noise(samples, rng) if kind == 1 else pink_noise(samples, rng)
    return (noise * level).astype(np.float32)


def score_stream(test: WordStream, detections: list[Detection]) -> dict[str, Any]:
    """Words detected (the right word from the word's start to ``MATCH_AFTER_MS`` after its end), missed,
    detected as another word, and false alarms (detections outside every word's window), per hour of the
    gap audio; ``late_alarms``: those of the false alarms up to ``LATE_MS`` after a word's end (a late
    decision on the word just heard, not a word out of silence)."""
    matched = [False] * len(test.words)
    wrong, false_alarms, late = 0, 0, 0
    for d in detections:
        hit = next(
            (i for i, (s, e, _) in enumerate(test.words) if s <= d.time_s <= e + MATCH_AFTER_MS / 1000.0),
            None,
        )
        if hit is None:
            false_alarms += 1
            late += any(e < d.time_s <= e + LATE_MS / 1000.0 for _, e, _ in test.words)
        elif test.words[hit][2] == d.word and not matched[hit]:
            matched[hit] = True
        elif test.words[hit][2] != d.word:
            wrong += 1
    detected = sum(matched)
    hours = test.gap_seconds / 3600.0
    return {
        "words": len(test.words),
        "detected": detected,
        "missed": len(test.words) - detected,
        "detected_pct": 100.0 * detected / max(1, len(test.words)),
        "wrong_word": wrong,
        "false_alarms": false_alarms,
        "false_alarms_per_hour": false_alarms / hours if hours else 0.0,
        "late_alarms": late,
        "gap_seconds": test.gap_seconds,
    }


def evaluate_keyword(
    stepper: Any,
    clips: Clips,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    smooth_ms: float = DEFAULT_SMOOTH_MS,
    refractory_ms: float = DEFAULT_REFRACTORY_MS,
    stable_ms: float = DEFAULT_STABLE_MS,
    seed: int = 0,
) -> dict[str, Any]:
    """Clip accuracy (the decision after each clip's last hop) and the spotter on a continuous stream of
    the same clips (``build_stream``, ``score_stream``)."""
    model = KeywordModel.of(stepper.info)
    unknown = sorted(set(clips.labels) - set(model.classes))
    if unknown:
        raise InputError(f"labels {unknown} are not among the model's words {list(model.classes)}")
    predicted = classify_clips(stepper, clips)
    truth = np.array([model.classes.index(label) for label in clips.labels])
    test = build_stream(clips, seed)
    options = {
        "threshold": threshold,
        "smooth_ms": smooth_ms,
        "refractory_ms": refractory_ms,
        "stable_ms": stable_ms,
    }
    stream = score_stream(test, spot(stepper, test.samples, **options))
    stream["stream_seconds"] = len(test.samples) / clips.rate
    words, mistakes = clip_mistakes(list(clips.labels), [model.classes[i] for i in predicted])
    return {
        "clips": len(clips),
        "clip_accuracy": float(np.mean(predicted == truth)),
        "words": words,
        "mistakes": mistakes,
        "stream": stream,
        "spotter": {**options, "match_after_ms": MATCH_AFTER_MS},
    }


def clip_mistakes(
    said: list[str], heard: list[str]
) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
    """Per word, its clips and how many were heard right; and every mistake (a word heard as another,
    or as no word), most frequent first: ``{"word", "heard", "clips", "of"}`` (``of``: the word's clips)."""
    words: dict[str, dict[str, int]] = {}
    pairs: dict[tuple[str, str], int] = {}
    for a, b in zip(said, heard, strict=True):
        counts = words.setdefault(a, {"clips": 0, "correct": 0})
        counts["clips"] += 1
        if a == b:
            counts["correct"] += 1
        else:
            pairs[a, b] = pairs.get((a, b), 0) + 1
    ranked = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))
    mistakes = [{"word": a, "heard": b, "clips": n, "of": words[a]["clips"]} for (a, b), n in ranked]
    return dict(sorted(words.items())), mistakes


def evaluate_keyword_file(stepper: Any, data: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """``evaluate_keyword`` on the clips of ``data`` (a folder of WAV files, clip bundles, or one)."""
    doc = evaluate_keyword(stepper, read_clips(data), **options)
    return {"data": str(data), "task": "keyword", **doc}


def format_evaluation(doc: dict[str, Any], model: str) -> str:
    """``evaluate_keyword_file``'s result as ``edgernn eval`` prints it."""
    s, spotter = doc["stream"], doc["spotter"]
    return "\n".join(
        [
            f"{model} on {doc['data']}: keyword, {doc['clips']:,} clips",
            f"  clip accuracy {100 * doc['clip_accuracy']:.2f} % (the decision after each clip's last hop)",
            f"  mistakes      {_mistakes_line(doc['mistakes'])}",
            f"  stream        {s['stream_seconds']:.0f} s, {s['words']} words: {s['detected']} detected "
            f"({s['detected_pct']:.1f} %), {s['missed']} missed, {s['wrong_word']} heard as another word",
            f"  false alarms  {s['false_alarms']} in {s['gap_seconds']:.0f} s of silence and noise: "
            f"{s['false_alarms_per_hour']:.1f} per hour ({s['late_alarms']} of them up to "
            f"{LATE_MS / 1000:g} s after a word: late decisions on it)",
            f"  spotter       threshold {spotter['threshold']:g}, smoothing {spotter['smooth_ms']:g} ms, "
            f"stable for {spotter['stable_ms']:g} ms, refractory {spotter['refractory_ms']:g} ms",
        ]
    )


def _mistakes_line(mistakes: list[dict[str, Any]], shown: int = 3) -> str:
    if not mistakes:
        return "none"
    parts = [f"{m['word']!r} heard as {m['heard']!r} in {m['clips']} of {m['of']}" for m in mistakes[:shown]]
    more = len(mistakes) - shown
    return ", ".join(parts) + (f" (the most frequent {shown} of {len(mistakes)} kinds)" if more > 0 else "")


def is_keyword_model(info: Any) -> bool:
    return bool(info is not None and (getattr(info, "extra", None) or {}).get("task") == "keyword")
