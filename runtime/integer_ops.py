"""The integer kernels of the ``integer`` C precision, in numpy: the definition of its results, bit for bit.

Every function here has the name of the static C function that does the same (``export.c.integer_kernels``
writes them), and the same arithmetic: integers only, int64 where the C uses int64, rounding and
saturation written out. Arrays are numpy int64 holding the values the C holds in its narrower types.

Fixed-point formats:

- gate pre-activations: int16 Q3.12 (value = q / 4096, range [-8, 8)). Sigmoid and tanh are flat to within
  3.4e-4 and 2.3e-7 past |x| = 8, and one step of 1/4096 moves either by at most 2.4e-4 (tanh's slope is at
  most 1, the sigmoid's 1/4): Q3.12 puts the input's rounding and its range at the same size, below the
  table's own error (``SIGMOID_MAX_ERROR``, ``TANH_MAX_ERROR``). Q4.11 would halve the range error of the
  sigmoid and double the rounding error of both.
- activations, the hidden state of GRU, LSTM and tanh RNN: int16 Q0.15 (value = q / 32768; 1.0 is 32767).
- the LSTM cell state: int16 with ``c_frac`` fraction bits per layer (a power of two chosen from the data).
- everything else (relu RNN state, inputs, outputs, embeddings) int16 with a calibrated scale.
"""

from __future__ import annotations

import numpy as np

GATE_FRAC = 12  # Q3.12
ACT_FRAC = 15  # Q0.15
INT16_MIN, INT16_MAX = -32768, 32767
ACC_LIMIT = 2**31 - 1  # an int32 accumulator
PRE_LIMIT = 2**30  # requantized values are kept within [-2^30, 2^30 - 1]: the sum of two fits int32
HN_LIMIT = 65535  # GRU: W_hn h + b_hn is clamped here so that r * it fits int32
TABLE_INTERVALS = 256  # over [0, 8): one interval is 1/32, 128 steps of Q3.12
TABLE_SHIFT = 7  # log2(128)


def _table(function) -> np.ndarray:
    x = np.arange(TABLE_INTERVALS + 1, dtype=np.float64) / 32.0
    return np.minimum(np.round(function(x) * 32768.0), INT16_MAX).astype(np.int64)


SIGMOID_TABLE = _table(lambda x: 1.0 / (1.0 + np.exp(-x)))  # (257,) Q0.15 at x = k / 32
TANH_TABLE = _table(np.tanh)  # (257,) Q0.15 at x = k / 32

# The largest |q_sigmoid(x) / 32768 - sigmoid(x / 4096)| and the same for tanh over every one of the 65,536
# int16 x (tests/test_integer_ref.py measures them; docs/c.md quotes them): 3.81e-5 (x = 1.518) and 1.151e-4
# (x = -0.797), 1.2 and 3.8 steps of Q0.15. A pre-activation past the Q3.12 range adds at most 3.4e-4
# (sigmoid) and 2.3e-7 (tanh).
SIGMOID_MAX_ERROR = 3.82e-5
TANH_MAX_ERROR = 1.151e-4


def q_sat16(v: np.ndarray) -> np.ndarray:
    """Saturate to int16."""
    return np.clip(v, INT16_MIN, INT16_MAX)


def q_round_shift(v: np.ndarray, shift: int | np.ndarray) -> np.ndarray:
    """``v / 2^shift`` rounded half up: ``(v + 2^(shift-1)) >> shift``, an arithmetic shift (shift >= 1)."""
    v = np.asarray(v, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    return (v + (np.int64(1) << (shift - 1))) >> shift


def q_requantize(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``acc * multiplier / 2^shift`` (int64 product, rounded half up), saturated to [-2^30, 2^30 - 1].
    multiplier: int32 in [2^30, 2^31) (or smaller where shift is 62); shift in [1, 62]."""
    product = np.asarray(acc, np.int64) * np.asarray(multiplier, np.int64)
    return np.clip(q_round_shift(product, shift), -PRE_LIMIT, PRE_LIMIT - 1)


def _interpolate(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The table at |x| (Q3.12; -32768 read as 32767), linear between entries: (x >= 0, value)."""
    x = np.asarray(x, np.int64)
    a = np.minimum(np.abs(x), INT16_MAX)
    index, frac = a >> TABLE_SHIFT, a & ((1 << TABLE_SHIFT) - 1)
    low = table[index]
    step = table[index + 1] - low  # >= 0: both functions increase
    return x >= 0, low + ((step * frac + (1 << (TABLE_SHIFT - 1))) >> TABLE_SHIFT)


def q_sigmoid(x: np.ndarray) -> np.ndarray:
    """sigmoid, Q3.12 in, Q0.15 out: the table of the right half, sigmoid(-x) = 1 - sigmoid(x)."""
    positive, y = _interpolate(SIGMOID_TABLE, x)
    return np.where(positive, y, 32768 - y)


def q_tanh(x: np.ndarray) -> np.ndarray:
    """tanh, Q3.12 in, Q0.15 out: the table of the right half, tanh(-x) = -tanh(x)."""
    positive, y = _interpolate(TANH_TABLE, x)
    return np.where(positive, y, -y)


def q_accumulate(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``bias + weight @ x`` in int32: x (B, K) int16 values, weight (N, K) int8, bias (N,) int32 -> (B, N).
    The generation checks that no row can leave int32 for any int16 x (``accumulator_bound``)."""
    return np.asarray(x, np.int64) @ np.asarray(weight, np.int64).T + np.asarray(bias, np.int64)


def q_product(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, multiplier: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """Each row's accumulator requantized by its own multiplier and shift: (B, K) -> (B, N)."""
    return q_requantize(q_accumulate(x, weight, bias), multiplier, shift)


def accumulator_bound(weight: np.ndarray, bias: np.ndarray) -> int:
    """The largest |accumulator| ``q_product`` can reach for any int16 input."""
    rows = np.abs(np.asarray(weight, np.int64)).sum(axis=1) * 32768 + np.abs(np.asarray(bias, np.int64))
    return int(rows.max(initial=0))


def q_gru_cell(gi: np.ndarray, gh: np.ndarray, h: np.ndarray) -> np.ndarray:
    """One GRU layer: gi, gh (B, 3H) the requantized products (Q3.12, gates r, z, n), h (B, H) Q0.15 -> h'."""
    hidden = h.shape[-1]
    r = q_sigmoid(q_sat16(gi[:, :hidden] + gh[:, :hidden]))
    z = q_sigmoid(q_sat16(gi[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden]))
    hn = np.clip(gh[:, 2 * hidden :], -HN_LIMIT, HN_LIMIT)
    n = q_tanh(q_sat16(gi[:, 2 * hidden :] + q_round_shift(r * hn, ACT_FRAC)))
    return q_sat16(n + q_round_shift(z * (h - n), ACT_FRAC))


def q_lstm_cell(
    gi: np.ndarray, gh: np.ndarray, h: np.ndarray, c: np.ndarray, c_frac: int
) -> tuple[np.ndarray, np.ndarray]:
    """One LSTM layer: gi, gh (B, 4H) Q3.12 (gates i, f, g, o), c (B, H) with ``c_frac`` fraction bits ->
    (h' Q0.15, c')."""
    hidden = h.shape[-1]
    pre = [
        q_sat16(gi[:, k * hidden : (k + 1) * hidden] + gh[:, k * hidden : (k + 1) * hidden]) for k in range(4)
    ]
    i, f, g, o = q_sigmoid(pre[0]), q_sigmoid(pre[1]), q_tanh(pre[2]), q_sigmoid(pre[3])
    c_next = q_sat16(q_round_shift(f * c, ACT_FRAC) + q_round_shift(i * g, 2 * ACT_FRAC - c_frac))
    h_next = q_round_shift(o * q_tanh(q_cell_to_gate(c_next, c_frac)), ACT_FRAC)
    return h_next, c_next


def q_cell_to_gate(c: np.ndarray, c_frac: int) -> np.ndarray:
    """The cell state (``c_frac`` fraction bits) in Q3.12, saturated."""
    if c_frac > GATE_FRAC:
        return q_round_shift(c, c_frac - GATE_FRAC)
    return q_sat16(np.asarray(c, np.int64) * (1 << (GATE_FRAC - c_frac)))


def q_rnn_tanh_cell(gi: np.ndarray, gh: np.ndarray) -> np.ndarray:
    """tanh RNN: h' = tanh(gi + gh), Q3.12 in, Q0.15 out."""
    return q_tanh(q_sat16(gi + gh))


def q_rnn_relu_cell(gi: np.ndarray, gh: np.ndarray) -> np.ndarray:
    """relu RNN: gi, gh already at the state's scale; h' = min(max(gi + gh, 0), 32767)."""
    return np.clip(gi + gh, 0, INT16_MAX)
