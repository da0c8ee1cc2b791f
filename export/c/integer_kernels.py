"""The C of the integer kernels: the same names and the same arithmetic as ``edgernn.runtime.integer_ops``.

Integers only: int8 weights, int16 activations and state, int32 accumulators, int64 only for the product of an
accumulator and its multiplier. Rounding is written out (add half, shift right: half up) and so is every
saturation. Two assumptions of the arithmetic are checked when the file compiles: ``int`` has at least 32 bits
(an int16 times an int8 is an ``int``), and ``>>`` of a negative value is arithmetic (it is on gcc, clang,
armcc and IAR; C99 leaves it to the compiler).
"""

from __future__ import annotations

import numpy as np

from edgernn.export.c.ctext import c_ints
from edgernn.runtime import integer_ops as ops


def stored_order(weight: np.ndarray) -> np.ndarray:
    """A product's (N, K) int8 weights in the order ``q_product`` reads them: each row's groups of four as
    w0 w2 w1 w3, the last K % 4 as they are."""
    weight = np.array(weight)
    whole = weight.shape[1] // 4 * 4
    groups = weight[:, :whole].reshape(weight.shape[0], -1, 4)
    weight[:, :whole] = groups[:, :, [0, 2, 1, 3]].reshape(weight.shape[0], whole)
    return weight


def kernels(cell: str) -> list[str]:
    """The static functions ``cell``'s step uses (C warns of a static function left unused)."""
    sigmoid, tanh = cell in ("gru", "lstm"), cell != "rnn_relu"
    lines = [
        "#if defined(__ARM_FEATURE_SIMD32) && defined(__ARM_FEATURE_DSP) && !defined(__ARM_BIG_ENDIAN)",
        "#include <arm_acle.h>",
        "#define Q_SIMD32 1",
        "#endif",
        "",
        "typedef char q_int_has_32_bits[sizeof(int) >= 4 ? 1 : -1];",
        "typedef char q_shift_is_arithmetic[((-3) >> 1) == -2 ? 1 : -1];",
        "",
        "static int32_t q_sat16(int32_t v)",
        "{",
        "    return v < -32768 ? -32768 : (v > 32767 ? 32767 : v);",
        "}",
        "",
        "/* acc * multiplier / 2^shift, rounded half up, saturated to [-2^30, 2^30 - 1] */",
        "static int32_t q_requantize(int32_t acc, int32_t multiplier, int shift)",
        "{",
        "    int64_t p = (int64_t)acc * multiplier;",
        "    p = (p + ((int64_t)1 << (shift - 1))) >> shift;",
        f"    if (p < -{ops.PRE_LIMIT}) p = -{ops.PRE_LIMIT};",
        f"    if (p > {ops.PRE_LIMIT - 1}) p = {ops.PRE_LIMIT - 1};",
        "    return (int32_t)p;",
        "}",
        "",
        "#ifdef Q_SIMD32",
        "/* acc + w . x over four inputs, the weights stored w0 w2 w1 w3 */",
        "static int32_t q_dot4(const int8_t *w, const int16_t *x, int32_t acc)",
        "{",
        "    int8x4_t w4;",
        "    int16x2_t x01, x23;",
        "    memcpy(&w4, w, 4);",
        "    memcpy(&x01, x, 4);",
        "    memcpy(&x23, x + 2, 4);",
        "    acc = __smlad(__sxtb16(w4), x01, acc);",
        "    return __smlad(__sxtb16((int8x4_t)(((uint32_t)w4 >> 8) | ((uint32_t)w4 << 24))), x23, acc);",
        "}",
        "#endif",
        "",
        "/* acc + row . x over k inputs (the weights in their stored order) */",
        "static int32_t q_row(const int16_t *x, int k, const int8_t *row, int32_t acc)",
        "{",
        "    int i = 0;",
        "#ifdef Q_SIMD32",
        "    for (; i + 4 <= k; i += 4)",
        "        acc = q_dot4(row + i, x + i, acc);",
        "#else",
        "    for (; i + 4 <= k; i += 4)",
        "        acc += x[i] * row[i] + x[i + 1] * row[i + 2] + x[i + 2] * row[i + 1] + x[i + 3] * row[i + 3];",
        "#endif",
        "    for (; i < k; i++)",
        "        acc += x[i] * row[i];",
        "    return acc;",
        "}",
        "",
        "/* out[j] = requantize(bias[j] + w[j] . x) for n rows of k int8 weights; x: k int16 values. Rows go",
        " * two at a time (each x read once for both). Each row's weights are stored in groups of four as",
        " * w0 w2 w1 w3 (the tail of k % 4 as it is): with the Arm DSP extension SXTB16 pairs them with x0 x1",
        " * and x2 x3 for SMLAD (two products an instruction). The sums are exact: any order, the same bits. */",
        "static void q_product(const int16_t *x, int k, const int8_t *w, const int32_t *bias,",
        "                      const int32_t *multiplier, const uint8_t *shift, int n, int32_t *out)",
        "{",
        "    int j = 0;",
        "    for (; j + 2 <= n; j += 2) {",
        "        const int8_t *r0 = w + (long)j * k, *r1 = r0 + k;",
        "        int32_t a0 = bias[j], a1 = bias[j + 1];",
        "        int i = 0;",
        "#ifdef Q_SIMD32",
        "        for (; i + 4 <= k; i += 4) {",
        "            a0 = q_dot4(r0 + i, x + i, a0);",
        "            a1 = q_dot4(r1 + i, x + i, a1);",
        "        }",
        "#else",
        "        for (; i + 4 <= k; i += 4) {",
        "            int32_t x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3];",
        "            a0 += x0 * r0[i] + x1 * r0[i + 2] + x2 * r0[i + 1] + x3 * r0[i + 3];",
        "            a1 += x0 * r1[i] + x1 * r1[i + 2] + x2 * r1[i + 1] + x3 * r1[i + 3];",
        "        }",
        "#endif",
        "        for (; i < k; i++) {",
        "            a0 += x[i] * r0[i];",
        "            a1 += x[i] * r1[i];",
        "        }",
        "        out[j] = q_requantize(a0, multiplier[j], shift[j]);",
        "        out[j + 1] = q_requantize(a1, multiplier[j + 1], shift[j + 1]);",
        "    }",
        "    if (j < n)",
        "        out[j] = q_requantize(q_row(x, k, w + (long)j * k, bias[j]), multiplier[j], shift[j]);",
        "}",
        "",
    ]
    if sigmoid:
        lines += [
            "/* v / 2^shift rounded half up (shift >= 1) */",
            "static int32_t q_round_shift(int32_t v, int shift)",
            "{",
            "    return (v + ((int32_t)1 << (shift - 1))) >> shift;",
            "}",
            "",
            f"static const int16_t q_sigmoid_table[{ops.TABLE_INTERVALS + 1}] = {{ /* sigmoid(k / 32), Q0.15 */",
            c_ints(ops.SIGMOID_TABLE),
            "};",
        ]
    if tanh:
        lines += [
            f"static const int16_t q_tanh_table[{ops.TABLE_INTERVALS + 1}] = {{ /* tanh(k / 32), Q0.15 */",
            c_ints(ops.TANH_TABLE),
            "};",
            "",
        ]
    if not tanh:
        return lines
    lines += [
        "/* the table at |x| (Q3.12), linear between entries (steps of 1/32; both functions increase) */",
        "static int32_t q_interpolate(const int16_t *table, int32_t x)",
        "{",
        "    int32_t a = x < 0 ? -x : x;",
        "    int32_t index, frac, low;",
        "    if (a > 32767) a = 32767;",
        f"    index = a >> {ops.TABLE_SHIFT};",
        f"    frac = a & {(1 << ops.TABLE_SHIFT) - 1};",
        "    low = table[index];",
        f"    return low + (((table[index + 1] - low) * frac + {1 << (ops.TABLE_SHIFT - 1)}) >> {ops.TABLE_SHIFT});",
        "}",
        "",
        "static int32_t q_tanh(int32_t x) /* Q3.12 -> Q0.15 */",
        "{",
        "    int32_t y = q_interpolate(q_tanh_table, x);",
        "    return x >= 0 ? y : -y;",
        "}",
        "",
    ]
    if sigmoid:
        lines += [
            "static int32_t q_sigmoid(int32_t x) /* Q3.12 -> Q0.15 */",
            "{",
            "    int32_t y = q_interpolate(q_sigmoid_table, x);",
            "    return x >= 0 ? y : 32768 - y;",
            "}",
            "",
        ]
    return lines


def cell_function(cell: str) -> list[str]:
    """The static function of one layer of ``cell``: gi, gh are the requantized products (Q3.12; for relu
    RNN at the state's scale), h (and c) the layer's state, updated in place."""
    if cell == "gru":
        return [
            "static void q_gru_cell(const int32_t *gi, const int32_t *gh, int16_t *h, int n)",
            "{",
            "    for (int j = 0; j < n; j++) {",
            "        int32_t r = q_sigmoid(q_sat16(gi[j] + gh[j]));",
            "        int32_t z = q_sigmoid(q_sat16(gi[n + j] + gh[n + j]));",
            "        int32_t hn = gh[2 * n + j];",
            "        int32_t cand;",
            f"        hn = hn < -{ops.HN_LIMIT} ? -{ops.HN_LIMIT} : (hn > {ops.HN_LIMIT} ? {ops.HN_LIMIT} : hn);",
            "        cand = q_tanh(q_sat16(gi[2 * n + j] + q_round_shift(r * hn, 15)));",
            "        h[j] = (int16_t)q_sat16(cand + q_round_shift(z * (h[j] - cand), 15));",
            "    }",
            "}",
            "",
        ]
    if cell == "lstm":
        return [
            "static int32_t q_cell_to_gate(int32_t c, int c_frac) /* the cell state in Q3.12 */",
            "{",
            "    return c_frac > 12 ? q_round_shift(c, c_frac - 12) : q_sat16(c * ((int32_t)1 << (12 - c_frac)));",
            "}",
            "",
            "static void q_lstm_cell(const int32_t *gi, const int32_t *gh, int16_t *h, int16_t *c, int n, int c_frac)",
            "{",
            "    for (int j = 0; j < n; j++) {",
            "        int32_t i = q_sigmoid(q_sat16(gi[j] + gh[j]));",
            "        int32_t f = q_sigmoid(q_sat16(gi[n + j] + gh[n + j]));",
            "        int32_t g = q_tanh(q_sat16(gi[2 * n + j] + gh[2 * n + j]));",
            "        int32_t o = q_sigmoid(q_sat16(gi[3 * n + j] + gh[3 * n + j]));",
            "        int32_t next = q_sat16(q_round_shift(f * c[j], 15) + q_round_shift(i * g, 30 - c_frac));",
            "        c[j] = (int16_t)next;",
            "        h[j] = (int16_t)q_round_shift(o * q_tanh(q_cell_to_gate(next, c_frac)), 15);",
            "    }",
            "}",
            "",
        ]
    if cell == "rnn_tanh":
        return [
            "static void q_rnn_tanh_cell(const int32_t *gi, const int32_t *gh, int16_t *h, int n)",
            "{",
            "    for (int j = 0; j < n; j++)",
            "        h[j] = (int16_t)q_tanh(q_sat16(gi[j] + gh[j]));",
            "}",
            "",
        ]
    return [
        "static void q_rnn_relu_cell(const int32_t *gi, const int32_t *gh, int16_t *h, int n)",
        "{",
        "    for (int j = 0; j < n; j++) {",
        "        int32_t v = gi[j] + gh[j];",
        "        h[j] = (int16_t)(v < 0 ? 0 : (v > 32767 ? 32767 : v));",
        "    }",
        "}",
        "",
    ]
