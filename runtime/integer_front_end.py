"""The integer log-mel front end of a keyword model (``QLogMel``) and its reference in numpy: the definition
of what the generated C computes, bit for bit (``edgernn.export.c.integer_front_end`` makes the operation
from the lowered float step and writes its C).

One operation stands for the float step's real FFT with its power, the mel bands' product, ``+ floor`` and
``Log``: one scale per int16 buffer cannot hold a power spectrum's range, so the operation works wider
inside and gives the log-mel at the output buffer's calibrated int16 scale. Its arithmetic, for a frame of
int16 samples ``f`` (the frame buffer's scale):

1. windowed samples ``v = round(f * w / 2^pre_shift)`` (an int64 product to int32), the window ``w`` Q30;
   ``pre_shift`` is chosen so that the sum of the largest ``|v|`` stays within 2^30: every value of the
   FFT (a partial DFT: a sum of the ``v`` times twiddles of modulus 1) stays there, no scaling by stage;
2. a radix-2 FFT of the N/2 complex points (even samples real, odd imaginary) in int32, twiddles Q30
   (int32), each product int64 rounded half up; then the split into the real signal's bins 0 .. N/2
   (``X[k] = E + W^k O``, the halves by an arithmetic shift);
3. the power ``re^2 + im^2`` in int64, shifted right by ``power_shift`` so that each band's sum of the
   power times its Q15 weights (Parseval bounds the sum over the bins) stays within int64;
4. ``log2(mel + floor)`` in Q16: the leading one's position, then a 64-interval table of ``log2(1 + t)``
   with linear interpolation; digital silence gives the floor's log;
5. ``out = (log2 * multiplier + offset) >> shift`` saturated to int16: ln 2, the log of the power's scale
   and the output's scale folded into one int64 multiply-add.

This module never imports torch or onnx.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

TWIDDLE_FRAC = 30  # twiddles Q30 (int32)
WINDOW_FRAC = 30  # window Q30 (int32, its peak 2^30 - 1)
LOG_FRAC = 16  # log2 in Q16
LOG_INTERVALS = 64  # the table of log2(1 + t), t in [0, 1)
LOG_TABLE = np.round(np.log2(1.0 + np.arange(LOG_INTERVALS + 1) / LOG_INTERVALS) * (1 << LOG_FRAC)).astype(
    np.int64
)  # (65,) Q16


@dataclass
class QLogMel:
    """``out (mels) = log(mel bands of |FFT(window * x)|^2 + floor)`` at the output's scale (module
    docstring). ``out``, ``x``: views (``edgernn.runtime.integer_program.View``); ``first``/``count``: per
    band its first bin and how many follow; ``weights``: every band's Q15 weights one after another."""

    out: Any
    x: Any
    fft: int
    window: np.ndarray  # (frame,) Q30
    pre_shift: int  # v = round(f * w / 2^pre_shift)
    power_shift: int
    first: np.ndarray  # (mels,)
    count: np.ndarray  # (mels,)
    weights: np.ndarray  # (sum count,) Q15
    floor: np.ndarray  # (mels,) the floor in units of each band's sum
    multiplier: int
    shift: int
    offset: np.ndarray  # (mels,) int64: the log of each band's scale and the rounding

    @property
    def bins(self) -> int:
        return self.fft // 2 + 1


def _frozen(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.flags.writeable = False
    return arrays


@lru_cache(maxsize=8)
def bit_reversed(count: int) -> np.ndarray:
    """The bit-reversal permutation of ``count`` (a power of two) indices (read-only, made once a size)."""
    bits = count.bit_length() - 1
    return _frozen(np.array([int(f"{i:0{bits}b}"[::-1], 2) if bits else 0 for i in range(count)], np.int64))[
        0
    ]


@lru_cache(maxsize=8)
def twiddles(fft: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of 2 pi t / fft for t < fft / 2, Q30 (read-only, made once a size)."""
    angle = 2.0 * np.pi * np.arange(fft // 2) / fft
    scale = float(1 << TWIDDLE_FRAC)
    return _frozen(
        np.round(np.cos(angle) * scale).astype(np.int64), np.round(np.sin(angle) * scale).astype(np.int64)
    )


@lru_cache(maxsize=8)
def _butterflies(half: int) -> tuple[tuple[np.ndarray, np.ndarray, int], ...]:
    """Every radix-2 butterfly group of a ``half``-point FFT in order: (tops, bottoms, twiddle index)."""
    groups, span = [], 1
    while span < half:
        for j in range(span):
            a = np.arange(j, half, 2 * span)
            groups.append((*_frozen(a, a + span), j * half // span))
        span *= 2
    return tuple(groups)


def _rotate(re: np.ndarray, im: np.ndarray, c: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(re + i im) times exp(-i angle) with the Q30 twiddle (c, s), rounded half up. At the twiddles 1
    (2^30, 0) and -i (0, 2^30) it is exactly (re, im) and (im, -re): the C skips those products."""
    half = np.int64(1) << (TWIDDLE_FRAC - 1)
    return (re * c + im * s + half) >> TWIDDLE_FRAC, (im * c - re * s + half) >> TWIDDLE_FRAC


def q_spectrum(op: QLogMel, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """re and im of bins 0 .. N/2 of the windowed frame, (B, bins) int64 holding int32 values."""
    batch, half = frame.shape[0], op.fft // 2
    signal = np.zeros((batch, op.fft), np.int64)
    length = op.window.size
    signal[:, :length] = (frame * op.window + (np.int64(1) << (op.pre_shift - 1))) >> op.pre_shift
    rev = bit_reversed(half)
    re, im = np.zeros((batch, half), np.int64), np.zeros((batch, half), np.int64)
    re[:, rev], im[:, rev] = signal[:, 0::2], signal[:, 1::2]
    cos, sin = twiddles(op.fft)
    for a, b, t in _butterflies(half):
        tr, ti = _rotate(re[:, b], im[:, b], cos[t], sin[t])
        re[:, b], im[:, b] = re[:, a] - tr, im[:, a] - ti
        re[:, a], im[:, a] = re[:, a] + tr, im[:, a] + ti
    out_re, out_im = np.zeros((batch, half + 1), np.int64), np.zeros((batch, half + 1), np.int64)
    out_re[:, 0], out_re[:, half] = re[:, 0] + im[:, 0], re[:, 0] - im[:, 0]
    for k in range(1, half // 2 + 1):
        m = half - k
        er, ei = (re[:, k] + re[:, m]) >> 1, (im[:, k] - im[:, m]) >> 1
        o_r, o_i = (im[:, k] + im[:, m]) >> 1, (re[:, m] - re[:, k]) >> 1
        tr, ti = _rotate(o_r, o_i, cos[k], sin[k])
        out_re[:, k], out_im[:, k] = er + tr, ei + ti
        out_re[:, m], out_im[:, m] = er - tr, ti - ei
    return out_re, out_im


def q_log2(v: np.ndarray) -> np.ndarray:
    """log2(v) in Q16 for int64 v >= 1: the leading one's position and the table, interpolated."""
    v = np.asarray(v, np.int64)
    top = np.zeros(v.shape, np.int64)
    rest = v.copy()
    for bits in (32, 16, 8, 4, 2, 1):
        over = (rest >> bits) != 0
        top = np.where(over, top + bits, top)
        rest = np.where(over, rest >> bits, rest)
    normal = np.where(top >= 30, v >> np.maximum(top - 30, 0), v << np.maximum(30 - top, 0))  # [2^30, 2^31)
    fraction = normal - (np.int64(1) << 30)
    index, rem = fraction >> 24, (fraction >> 8) & 0xFFFF
    low = LOG_TABLE[index]
    step = LOG_TABLE[index + 1] - low
    return (top << LOG_FRAC) + low + ((step * rem + (1 << 15)) >> 16)


def q_log_mel(op: QLogMel, frame: np.ndarray) -> np.ndarray:
    """The operation on a batch of frames (B, frame) int16 values -> (B, mels) int16 values (int64)."""
    re, im = q_spectrum(op, np.asarray(frame, np.int64))
    power = (re * re + im * im) >> op.power_shift  # (B, bins)
    bands = []
    start = 0
    for first, count in zip(op.first.tolist(), op.count.tolist(), strict=True):
        weights = op.weights[start : start + count]
        bands.append((power[:, first : first + count] * weights).sum(axis=1))
        start += count
    mel = np.stack(bands, axis=1) + op.floor
    value = (q_log2(mel) * op.multiplier + op.offset) >> op.shift
    return np.clip(value, -32768, 32767)
