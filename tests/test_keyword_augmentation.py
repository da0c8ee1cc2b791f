"""The keyword task's augmentation: the tempo (a varied copy read faster or slower than it was spoken,
its pitch and spectrum kept, its steps labelled where its words are at that tempo) and the noise's level
against the copy's gain."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgernn.audio import dft_matrix, frames_of, log_mel_fast, stacked_filterbank
from edgernn.runtime.audio import FrontEnd, read_bundle

FSDD = Path(__file__).resolve().parent.parent / "examples" / "data" / "fsdd"


def tone(hz: float, seconds: float) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(8000 * seconds)) / 8000)).astype(np.float32)


def test_tempo_one_is_the_streams_own_framing():
    fe, signal = FrontEnd(), tone(700, 0.333)
    frames = frames_of(signal, fe)
    assert frames.shape == (-(-len(signal) // 80), 200)
    np.testing.assert_array_equal(frames_of(signal, fe, 1.0), frames)
    np.testing.assert_array_equal(frames[0, 120:], signal[:80])  # frame 0: the zero state, then hop 0


@pytest.mark.parametrize("tempo", [0.75, 1.25, 1.5])
def test_a_tempo_reads_the_clip_at_that_rate_and_keeps_its_pitch(tempo):
    fe = FrontEnd()
    low, high = tone(500, 0.4), tone(2000, 0.4)
    signal = np.concatenate([low, high])
    frames = frames_of(signal, fe, tempo)
    assert len(frames) == int(np.ceil(len(signal) / (80 * tempo)))
    padded = np.concatenate([np.zeros(120), signal, np.zeros(400)])
    for k in (0, 7, len(frames) - 1):  # frame k: 200 of the clip's own samples from round(k * hop * tempo)
        start = int(round(k * 80 * tempo))
        np.testing.assert_array_equal(frames[k], padded[start : start + 200])
    logmel = log_mel_fast(signal, fe, dft_matrix(fe), stacked_filterbank(fe), tempo)
    plain = log_mel_fast(signal, fe, dft_matrix(fe), stacked_filterbank(fe))
    peaks, plain_peaks = logmel.argmax(axis=1), plain.argmax(axis=1)
    # the same two bands (the pitch kept), the switch from one to the other at the tempo's step
    assert set(peaks[2:-2]) == set(plain_peaks[2:-2]) and len(set(plain_peaks[2:-2])) == 2
    switch, plain_switch = np.argmax(peaks != peaks[0]), np.argmax(plain_peaks != plain_peaks[0])
    assert plain_switch == 40 + 1  # 0.4 s at 10 ms hops; the frame after reaches into the 2 kHz tone
    assert abs(switch - plain_switch / tempo) <= 1.5


def test_a_copys_step_labels_follow_its_words_at_the_tempo(monkeypatch):
    from edgernn import keyword
    from edgernn.batches import IGNORE, StepLabels
    from edgernn.keyword import TAIL_MS

    clips = read_bundle(FSDD / "lucas.npz").subset(range(20))
    task = lambda: keyword.task_from_clips(clips, seed=3).train  # noqa: E731
    monkeypatch.setattr(keyword, "AUGMENTATION", replace(keyword.AUGMENTATION, tempo=(1.0, 1.0)))
    plain = task()
    monkeypatch.setattr(keyword, "AUGMENTATION", replace(keyword.AUGMENTATION, tempo=(1.5, 1.5)))
    fast = task()  # one factor: no draw, so the same waveforms as plain, read at 1.5 times the rate
    copies = [i for i, recipe in enumerate(plain.recipes) if recipe and recipe[0].__name__ == "copy"]
    others = [i for i in range(len(plain)) if i not in copies]
    as_is = [i for i, recipe in enumerate(plain.recipes) if recipe is None]
    assert len(copies) == 4 * len(as_is) > 40 and all(
        np.array_equal(fast.cases[i][0], plain.cases[i][0]) for i in others
    )
    for i in copies:
        (x, label), (y, was) = fast.cases[i], plain.cases[i]
        assert abs(len(x) - len(y) / 1.5) <= 1
        assert isinstance(label, StepLabels) and int(label) == int(was)
        assert [c for _, c in label.spans] == [c for _, c in was.spans]
        previous = None
        for (step, c), (plain_step, _) in zip(label.spans, was.spans, strict=True):
            # where each word starts and ends, in steps at the tempo; the 300 ms after a word that
            # go unjudged are 300 ms of the stream whatever the tempo
            tail = int(TAIL_MS / 10) if previous == IGNORE else 0
            assert abs((step - tail) - (plain_step - tail) / 1.5) <= 1.0
            previous = c
    monkeypatch.setattr(keyword, "AUGMENTATION", replace(keyword.AUGMENTATION, tempo=(0.75, 1.35)))
    made = keyword.task_from_clips(clips, seed=3)
    assert made.notes["augmentation"]["tempo"] == [0.75, 1.35]
    drawn, again = made.train, task()
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(drawn.cases, again.cases, strict=True))
    drawn.set_epoch(2), again.set_epoch(2)
    assert all(np.array_equal(drawn[i][0], again[i][0]) for i in copies[:12])


def test_the_noise_is_at_its_snr_to_the_clip_as_recorded_or_to_the_word_as_heard():
    from edgernn.audio import Augmentation, augment_spans
    from edgernn.runtime.audio import rms

    word = read_bundle(FSDD / "lucas.npz").audio[0].astype(np.float32) / 32768
    aug = Augmentation(
        speed=(1.0, 1.0), gain_db=(-20.0, -20.0), snrs_db=(10.0,), noise_probability=1.0, lead_ms=300.0
    )
    levels = {False: [], True: []}
    for seed in range(12):
        for follows in levels:
            made = replace(aug, noise_follows_gain=follows)
            out, spans = augment_spans(word, 8000, made, np.random.default_rng(seed))
            levels[follows].append(rms(out[: spans["word"][0]]))  # the background before the word: noise
    # the same draws: the noise 20 dB quieter when it follows the copy's gain of -20 dB
    np.testing.assert_allclose(np.array(levels[True]) / np.array(levels[False]), 0.1, rtol=1e-3)
    # at 10 dB below the clip as recorded (a short stretch of pink noise strays from its mean level)
    np.testing.assert_allclose(np.median(levels[False]), rms(word) * 10 ** (-10 / 20), rtol=0.2)
