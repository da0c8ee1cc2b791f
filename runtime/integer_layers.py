"""The integer kernels of a bring-your-own model's per-step layers, in numpy: the definition of their
results, bit for bit (``edgernn.export.c.integer_program_c`` writes the same functions in C).

As in ``integer_ops``: integers only, int64 arrays holding the values the C holds in its narrower types,
rounding and saturation written out, every integer division rounded half away from zero.

- ``q_exp``: exp of a non-positive Q4.11 input, Q0.15 out, by a 513-entry table over [-16, 0] with linear
  interpolation (steps of 1/32; below the range exp(-16) = 1.1e-7 rounds to 0 anyway).
- ``q_layer_norm``: LayerNormalization over rows of n int16 values: n x - sum(x) exact, the variance's
  n^2-fold by one int64 division, an integer square root (``q_isqrt``), the normalised value in int16 Q4.11
  by one int64 division, then gamma (int16) and beta (int32) and a requantization to the output's scale.
- ``q_softmax``: Softmax over rows: x - max(x) requantized to Q4.11, ``q_exp``, the sum, and each
  probability in Q0.15 by one int32 division.
"""

from __future__ import annotations

import math

import numpy as np

from edgernn.runtime import integer_ops as ops

NORM_FRAC = 11  # the normalised value (x - mean) / std in int16 Q4.11: |z| <= sqrt(n - 1) < 16 for n <= 256
MAX_NORM_SIZE = 1024  # rows LayerNorm takes: n^2 x^2 summed over n rows stays within int64
EPS_LIMIT = 2**61

EXP_FRAC = 11  # the exp's input: Q4.11, [-16, 0]
EXP_INTERVALS = 512  # steps of 1/32: 64 units of Q4.11
EXP_SHIFT = 6
EXP_TABLE = np.minimum(np.round(np.exp(-np.arange(EXP_INTERVALS + 1) / 32.0) * 32768.0), ops.INT16_MAX)
EXP_TABLE = EXP_TABLE.astype(np.int64)  # (513,) Q0.15 at x = -k / 32
# The largest |q_exp(x) / 32768 - exp(x / 2048)| over every Q4.11 x in [-16, 0] (tests/test_integer_byo.py
# measures it; docs/c.md quotes it): 1.39e-4, at x = -0.047.
EXP_MAX_ERROR = 1.39e-4


def q_rescale(v: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """``v * multiplier / 2^shift`` rounded, saturated to int16 (``integer_ops.q_requantize`` then
    ``q_sat16``); (2^30, 30) is the identity."""
    return ops.q_sat16(ops.q_requantize(v, multiplier, shift))


NARROW_SHIFTS = (17, 46)  # q_narrow's own arithmetic for these shifts; the others as q_requantize


def q_narrow(v: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """An int16 ``v`` requantized by ``multiplier / 2^shift`` in 32-bit arithmetic (no 64-bit product: on a
    Cortex-M0 two MULS): the multiplier's high and low 16 bits apart, ``t = v m_hi + ((v m_lo) >> 16)``,
    then ``(t + 2^(shift-17)) >> (shift - 16)``. For a shift outside NARROW_SHIFTS (a ratio past 2^14 or
    below 2^-15) ``integer_ops.q_requantize``. |result| < 2^30."""
    v = np.asarray(v, np.int64)
    if not NARROW_SHIFTS[0] <= shift <= NARROW_SHIFTS[1]:
        return ops.q_requantize(v, multiplier, shift)
    t = v * (multiplier >> 16) + ((v * (multiplier & 0xFFFF)) >> 16)
    return (t + (1 << (shift - 17))) >> (shift - 16)


def q_div_round(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` (den > 0) rounded half away from zero: ``sign(num) * ((|num| + den / 2) / den)``."""
    num, den = np.asarray(num, np.int64), np.asarray(den, np.int64)
    quotient = (np.abs(num) + den // 2) // den
    return np.where(num < 0, -quotient, quotient)


def q_isqrt(v: np.ndarray) -> np.ndarray:
    """floor(sqrt(v)) of int64 values >= 0, exactly (the C finds it bit by bit)."""
    flat = np.asarray(v, np.int64).reshape(-1)
    return np.array([math.isqrt(int(a)) for a in flat], np.int64).reshape(np.shape(v))


def q_exp(x: np.ndarray) -> np.ndarray:
    """exp of x <= 0 in Q4.11 (x is saturated to -32768 at worst), Q0.15 out."""
    a = np.minimum(-np.asarray(x, np.int64), ops.INT16_MAX)
    index, frac = a >> EXP_SHIFT, a & ((1 << EXP_SHIFT) - 1)
    low = EXP_TABLE[index]
    step = EXP_TABLE[index + 1] - low  # <= 0: exp decreases
    return low + ((step * frac + (1 << (EXP_SHIFT - 1))) >> EXP_SHIFT)


def q_layer_norm(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: int, multiplier: int, shift: int
) -> np.ndarray:
    """x (..., n) int16 -> (..., n) int16: ((x - mean) / sqrt(var + eps)) * gamma + beta at the output's
    scale. gamma (n,) int16 and beta (n,) int32 at 2^-11 of gamma's scale; eps: epsilon * n^2 in units of
    x squared; (multiplier, shift): gamma's scale * 2^-11 over the output's."""
    x = np.asarray(x, np.int64)
    n = x.shape[-1]
    d = n * x - x.sum(axis=-1, keepdims=True)  # n (x - mean), exact
    variance = (d * d).sum(axis=-1, keepdims=True) // n  # n^2 var
    sd = np.maximum(q_isqrt(variance + eps), 1)  # n std
    z = ops.q_sat16(q_div_round(d << NORM_FRAC, sd))
    return q_rescale(z * gamma + beta, multiplier, shift)


def q_softmax(x: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """x (..., n) int16 -> probabilities (..., n) Q0.15; (multiplier, shift): x's scale over 2^-11."""
    x = np.asarray(x, np.int64)
    t = q_rescale(x - x.max(axis=-1, keepdims=True), multiplier, shift)
    e = q_exp(t)
    total = e.sum(axis=-1, keepdims=True)  # >= 32767: the largest value's exp(0)
    return np.minimum((e * 32768 + total // 2) // total, ops.INT16_MAX)
