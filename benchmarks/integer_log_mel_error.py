"""The integer log-mel front end (``QLogMel``, the integer C precision of a keyword model) against numpy's
float64 front end (``np.fft.rfft``, the same Hann window and mel bands): its error over every frame of the
bundled clips, at full scale, in -60 dBFS noise and in digital silence (the numbers of docs/c.md, "A
keyword model's front end in integers").

    .venv/bin/python benchmarks/integer_log_mel_error.py

The frames are 16-bit PCM at the exact scale 2^-15; the output at a log-mel scale of 28 / 32767 (a
calibrated buffer holding |log(1e-6)| < 14 twice over). At 16 kHz the bundled 8 kHz clips are read with
each sample twice (no 16 kHz recordings are bundled).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgernn.audio import dft_matrix, frames_of, hann, mel_filterbank
from edgernn.export.c.fft import recognise
from edgernn.export.c.integer_front_end import log_mel_op
from edgernn.runtime.audio import FrontEnd, read_bundle
from edgernn.runtime.integer_front_end import q_log_mel

FSDD = Path(__file__).resolve().parents[1] / "examples" / "data" / "fsdd"
S_OUT = 2 * 14.0 / 32767


def float_log_mel(frames: np.ndarray, fe: FrontEnd) -> np.ndarray:
    """(T, frame) float64 samples -> (T, mels) log-mel in float64."""
    power = np.abs(np.fft.rfft(frames * hann(fe.frame), n=fe.fft)) ** 2
    return np.log(power @ mel_filterbank(fe).astype(np.float64) + 1e-6)


def errors(fe: FrontEnd, pcm: np.ndarray, op) -> np.ndarray:
    """|integer - float64| of int16 frames (T, frame)."""
    return np.abs(q_log_mel(op, pcm.astype(np.int64)) * S_OUT - float_log_mel(pcm / 32768.0, fe))


def measure(rate: int) -> None:
    fe = FrontEnd.for_rate(rate)
    layout = recognise(dft_matrix(fe))  # the window as the lowering recovers it from the graph's matrix
    bands = mel_filterbank(fe).astype(np.float64)
    op = log_mel_op(None, None, layout.window.astype(np.float64), fe.fft, bands, 1e-6, 2.0**-15, S_OUT)
    found, clips = [], 0
    for bundle in sorted(FSDD.glob("*.npz")):
        for clip in read_bundle(bundle).audio:
            samples = np.repeat(clip, rate // 8000)
            pcm = np.round(frames_of(samples.astype(np.float64) / 32768, fe) * 32768)
            found.append(errors(fe, pcm, op).ravel())
            clips += 1
    every = np.concatenate(found)
    print(f"{rate} Hz, {clips} clips, {every.size:,} band values: largest error {every.max():.4f}, "
          f"99th percentile {np.percentile(every, 99):.5f}, mean {every.mean():.5f} "
          f"(the output's step {S_OUT:.2e})")  # fmt: skip
    n = np.arange(fe.frame)
    rng = np.random.default_rng(0)
    loud = np.stack([
        np.full(fe.frame, 32767), np.where(n % 2, 32767, -32768), np.where((n // 2) % 2, 32767, -32768),
        np.round(32767 * np.sin(2 * np.pi * 1000 * n / rate)), rng.choice([-32768, 32767], fe.frame),
    ])  # fmt: skip
    noise = np.round(rng.normal(0, 32768 * 10 ** (-60 / 20), (8, fe.frame)))
    silence = q_log_mel(op, np.zeros((1, fe.frame), np.int64)) * S_OUT
    print(f"  full scale: {errors(fe, loud, op).max():.4f}; -60 dBFS noise: {errors(fe, noise, op).max():.4f}; "
          f"digital silence: {silence.min():.5f} to {silence.max():.5f} (log(1e-6) = {np.log(1e-6):.5f})")  # fmt: skip


def main() -> int:
    for rate in (8000, 16000):
        measure(rate)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
