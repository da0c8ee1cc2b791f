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

BLOCK_ROWS = 4  # rows a pass of q_product reads together


def stored_order(weight: np.ndarray) -> np.ndarray:
    """A product's (N, K) int8 weights in the order ``q_product`` reads them (flat). Rows go in blocks of
    four: for each group of four inputs, each row's four weights (w0 w2 w1 w3), one row after the other;
    then for each of the last K % 4 inputs the four rows' weights. The N % 4 rows after the blocks follow
    one by one, each row's groups of four as w0 w2 w1 w3 and its last K % 4 as they are."""
    weight = np.asarray(weight)
    n, k = weight.shape
    whole = k // 4 * 4
    swapped = np.array(weight)
    groups = swapped[:, :whole].reshape(n, -1, 4)
    swapped[:, :whole] = groups[:, :, [0, 2, 1, 3]].reshape(n, whole)
    blocks = n // BLOCK_ROWS * BLOCK_ROWS
    parts = []
    for j in range(0, blocks, BLOCK_ROWS):
        rows = swapped[j : j + BLOCK_ROWS]
        parts.append(rows[:, :whole].reshape(BLOCK_ROWS, -1, 4).transpose(1, 0, 2).reshape(-1))
        parts.append(rows[:, whole:].T.reshape(-1))
    parts.append(swapped[blocks:].reshape(-1))
    return np.concatenate(parts) if parts else swapped.reshape(-1)


def kernels(cell: str) -> list[str]:
    """The static functions ``cell``'s step uses (C warns of a static function left unused)."""
    sigmoid, tanh = cell in ("gru", "lstm"), cell != "rnn_relu"
    lines = [
        "#if defined(__ARM_FEATURE_SAT) || (defined(__ARM_FEATURE_SIMD32) && defined(__ARM_FEATURE_DSP))",
        "#include <arm_acle.h>",
        "#endif",
        "#if defined(__ARM_FEATURE_SIMD32) && defined(__ARM_FEATURE_DSP) && !defined(__ARM_BIG_ENDIAN)",
        "#define Q_SIMD32 1",
        "#endif",
        "",
        "#ifdef __GNUC__",
        "#define Q_LIKELY(c) __builtin_expect(!!(c), 1)",
        "#else",
        "#define Q_LIKELY(c) (c)",
        "#endif",
        "",
        "typedef char q_int_has_32_bits[sizeof(int) >= 4 ? 1 : -1];",
        "typedef char q_shift_is_arithmetic[((-3) >> 1) == -2 ? 1 : -1];",
        "",
        "#ifdef __ARM_FEATURE_SAT /* SSAT and USAT: a saturation in one instruction */",
        "#define q_sat16(v) __ssat((v), 16)",
        "#define q_sat_u15(v) ((int32_t)__usat((v), 15))",
        "#else",
        "static int32_t q_sat16(int32_t v)",
        "{",
        "    return v < -32768 ? -32768 : (v > 32767 ? 32767 : v);",
        "}",
        "",
        "static int32_t q_sat_u15(int32_t v) /* to [0, 32767] */",
        "{",
        "    return v < 0 ? 0 : (v > 32767 ? 32767 : v);",
        "}",
        "#endif",
        "",
        "/* acc * multiplier / 2^shift, rounded half up, saturated to [-2^30, 2^30 - 1]. The usual shift is",
        " * past 32: then the product's high word alone gives the same bits (the low word only adds less than",
        " * one before the floor), and |acc * multiplier| < 2^62 keeps the result within the range. */",
        "static int32_t q_requantize(int32_t acc, int32_t multiplier, int shift)",
        "{",
        "    int64_t p = (int64_t)acc * multiplier;",
        "    if (Q_LIKELY(shift > 32)) {",
        "        int32_t high = (int32_t)(p >> 32);",
        "        return (high + ((int32_t)1 << (shift - 33))) >> (shift - 32);",
        "    }",
        "    p = (p + ((int64_t)1 << (shift - 1))) >> shift;",
        f"    if (p < -{ops.PRE_LIMIT}) p = -{ops.PRE_LIMIT};",
        f"    if (p > {ops.PRE_LIMIT - 1}) p = {ops.PRE_LIMIT - 1};",
        "    return (int32_t)p;",
        "}",
        "",
        "#ifdef Q_SIMD32",
        "/* acc + w . x over four inputs, the weights stored w0 w2 w1 w3: SXTB16 widens bytes 0 and 2 (w0 w1,",
        " * met by x0 x1), with a rotation by 8 bytes 1 and 3 (w2 w3, met by x2 x3); SMLAD adds both products */",
        "static int32_t q_dot4(const int8_t *w, int16x2_t x01, int16x2_t x23, int32_t acc)",
        "{",
        "    int8x4_t w4;",
        "    int16x2_t odd;",
        "    memcpy(&w4, w, 4);",
        "#ifdef __GNUC__",
        '    __asm__("sxtb16 %0, %1, ror #8" : "=r"(odd) : "r"(w4)); /* one instruction (gcc makes two) */',
        "#else",
        "    odd = __sxtb16(__ror((uint32_t)w4, 8));",
        "#endif",
        "    acc = __smlad(__sxtb16(w4), x01, acc);",
        "    return __smlad(odd, x23, acc);",
        "}",
        "#endif",
        "",
        "#if defined(Q_SIMD32) && defined(__GNUC__) && defined(__thumb2__)",
        "#define Q_DOT_ASM 1",
        "/* The four accumulators of a block of four rows over x[0, end - x) (a multiple of the inputs a pass",
        " * takes), *p at the block's first group, left after the last. Per row and group of four inputs: one",
        " * load of four weights, two SXTB16 and two SMLAD. In assembly: gcc, given the C, spilled the",
        " * accumulators. */",
        *_dot_function(16),
        *_dot_function(8),
        "#endif",
        "",
        "/* acc + row . x over k inputs: a row stored on its own (groups of four as w0 w2 w1 w3, then the tail) */",
        "static int32_t q_row(const int16_t *x, int k, const int8_t *row, int32_t acc)",
        "{",
        "    const int whole = k & ~3; /* loop bounds computed once: gcc then knows no index overflows */",
        "    int i = 0;",
        "#ifdef Q_SIMD32",
        "    for (; i < whole; i += 4) {",
        "        int16x2_t x01, x23;",
        "        memcpy(&x01, x + i, 4);",
        "        memcpy(&x23, x + i + 2, 4);",
        "        acc = q_dot4(row + i, x01, x23, acc);",
        "    }",
        "#else",
        "    for (; i < whole; i += 4)",
        "        acc += x[i] * row[i] + x[i + 1] * row[i + 2] + x[i + 2] * row[i + 1] + x[i + 3] * row[i + 3];",
        "#endif",
        "    for (i = whole; i < k; i++)",
        "        acc += x[i] * row[i];",
        "    return acc;",
        "}",
        "",
        "/* out[j] = requantize(bias[j] + w[j] . x) for n rows of k int8 weights; x: k int16 values. Rows go",
        " * four at a time, each x read once for the four: a block of four rows is stored as, for each group of",
        " * four inputs, the four rows' weights of the group (each w0 w2 w1 w3: with the Arm DSP extension",
        " * SXTB16 pairs them with x0 x1 and x2 x3 for SMLAD, two products an instruction), then for each of the",
        " * last k % 4 inputs the four rows' weights; the n % 4 rows left are stored one by one. The sums are",
        " * exact: any order, the same bits. */",
        "static void q_product(const int16_t *x, int k, const int8_t *w, const int32_t *bias,",
        "                      const int32_t *multiplier, const uint8_t *shift, int n, int32_t *out)",
        "{",
        "    int j = 0;",
        "    const int blocks = n & ~3, whole = k & ~3;",
        "    for (; j < blocks; j += 4) {",
        "        const int8_t *p = w + (long)j * k;",
        "        int32_t a0 = bias[j], a1 = bias[j + 1], a2 = bias[j + 2], a3 = bias[j + 3];",
        "        int i = 0;",
        "#ifdef Q_SIMD32",
        "#ifdef Q_DOT_ASM",
        "        if (k >= 16) {",
        "            q_dot4x16(&a0, &a1, &a2, &a3, &p, x, x + (k & ~15));",
        "            i = k & ~15;",
        "        }",
        "        if (k & 8) {",
        "            q_dot4x8(&a0, &a1, &a2, &a3, &p, x + i, x + i + 8);",
        "            i += 8;",
        "        }",
        "#endif",
        "        for (; i < whole; i += 4, p += 16) {",
        "            int16x2_t x01, x23;",
        "            memcpy(&x01, x + i, 4);",
        "            memcpy(&x23, x + i + 2, 4);",
        "            a0 = q_dot4(p, x01, x23, a0);",
        "            a1 = q_dot4(p + 4, x01, x23, a1);",
        "            a2 = q_dot4(p + 8, x01, x23, a2);",
        "            a3 = q_dot4(p + 12, x01, x23, a3);",
        "        }",
        "#else",
        "        for (; i < whole; i += 4, p += 16) {",
        "            int32_t x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3];",
        "            a0 += x0 * p[0] + x1 * p[2] + x2 * p[1] + x3 * p[3];",
        "            a1 += x0 * p[4] + x1 * p[6] + x2 * p[5] + x3 * p[7];",
        "            a2 += x0 * p[8] + x1 * p[10] + x2 * p[9] + x3 * p[11];",
        "            a3 += x0 * p[12] + x1 * p[14] + x2 * p[13] + x3 * p[15];",
        "        }",
        "#endif",
        "        for (i = whole; i < k; i++, p += 4) {",
        "            int32_t xi = x[i];",
        "            a0 += xi * p[0];",
        "            a1 += xi * p[1];",
        "            a2 += xi * p[2];",
        "            a3 += xi * p[3];",
        "        }",
        "        out[j] = a0;",
        "        out[j + 1] = a1;",
        "        out[j + 2] = a2;",
        "        out[j + 3] = a3;",
        "    }",
        "    for (; j < n; j++)",
        "        out[j] = q_row(x, k, w + (long)j * k, bias[j]);",
        "    for (j = 0; j < n; j++) /* a loop of its own: the products' loop keeps its registers */",
        "        out[j] = q_requantize(out[j], multiplier[j], shift[j]);",
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
        "    int32_t a = q_sat_u15(x < 0 ? -x : x);",
        "    int32_t index, frac, low;",
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
        "    for (int j = 0; j < n; j++)",
        "        h[j] = (int16_t)q_sat_u15(gi[j] + gh[j]);",
        "}",
        "",
    ]


def _dot_function(inputs: int) -> list[str]:
    """``q_dot4x{inputs}``: the loop over a block of four rows taking ``inputs`` inputs a pass."""
    return [
        f"static void q_dot4x{inputs}(int32_t *acc0, int32_t *acc1, int32_t *acc2, int32_t *acc3,",
        "                     const int8_t **p, const int16_t *x, const int16_t *end)",
        "{",
        "    int32_t a0 = *acc0, a1 = *acc1, a2 = *acc2, a3 = *acc3;",
        "    const int8_t *w = *p;",
        "    uint32_t x01, x23, w0, w1, t;",
        "    __asm__ volatile(",
        '        "1:\\n\\t"',
        *('        "' + line + '\\n\\t"' for line in _dot_asm(inputs // 4)),
        f'        "add %[x], %[x], #{2 * inputs}\\n\\t"',
        f'        "add %[w], %[w], #{4 * inputs}\\n\\t"',
        '        "cmp %[x], %[end]\\n\\t"',
        '        "bne 1b"',
        '        : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [w] "+r"(w), [x] "+r"(x),',
        '          [x01] "=&r"(x01), [x23] "=&r"(x23), [w0] "=&r"(w0), [w1] "=&r"(w1), [t] "=&r"(t)',
        '        : [end] "r"(end)',
        '        : "cc", "memory");',
        "    *acc0 = a0, *acc1 = a1, *acc2 = a2, *acc3 = a3;",
        "    *p = w;",
        "}",
        "",
    ]


def _dot_asm(groups: int) -> list[str]:
    """The body of a ``q_dot4x*`` loop: ``groups`` groups of four inputs for four rows. Loads at offsets
    from the two pointers (a post-incremented base would hold the next load back a cycle), each weight
    word loaded a row before it is used."""
    lines = []
    for group in range(groups):
        x, w = 8 * group, 16 * group
        lines += [f"ldr %[x01], [%[x], #{x}]", f"ldr %[x23], [%[x], #{x + 4}]"]
        lines += [f"ldr %[w0], [%[w], #{w}]", f"ldr %[w1], [%[w], #{w + 4}]"]
        for row in range(4):
            word = "%[w0]" if row % 2 == 0 else "%[w1]"
            lines += [
                f"sxtb16 %[t], {word}",
                f"smlad %[a{row}], %[t], %[x01], %[a{row}]",
                f"sxtb16 %[t], {word}, ror #8",
                f"smlad %[a{row}], %[t], %[x23], %[a{row}]",
            ]
            if row < 2:
                lines.append(f"ldr {word}, [%[w], #{w + 8 + 4 * row}]")
    return lines
