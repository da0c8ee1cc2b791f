"""The activations the generated C computes itself: exp, sigmoid and tanh without libm and without branches
(the default for float32), the cheaper rational tanh/sigmoid of ``fast_activations``, and the int8 steps'
sigmoid and tanh read off a table with linear interpolation (no division, no exp); their measured errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edgernn.export.c.ctext import literal

if TYPE_CHECKING:
    from edgernn.export.c.emitter import Emitter
    from edgernn.export.c.ir import Elementwise

# tanh as a rational function: odd polynomial of degree 13 over an even one of degree 6, on x clamped to
# +-7.9988 (past which float32 tanh is +-1 within rounding). The coefficients are Eigen's (ptanh_float).
# Measured maximum error over [-10, 10]: FAST_TANH_MAX_ERROR; sigmoid(x) = 0.5 + 0.5 tanh(x / 2).
FAST_TANH_ALPHA = (
    4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
    -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16,
)  # fmt: skip
FAST_TANH_BETA = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)
FAST_TANH_CLAMP = 7.99881172180175781

# The default exp, sigmoid and tanh: float32 code of the generated file itself, no libm, no branches (every
# select is a mask on integer bits and every clamp an integer min: gcc does not if-convert float compares,
# nor speculate float arithmetic that a branch would skip, under the default -ftrapping-math), so the activation
# loops vectorise at -O3 (and at -O2 wherever the target has vector blends, AVX and up).
# exp(x): x clamped to [-150, 150] (on its bits); n = round(x / ln 2) by the 1.5 * 2^23 rounding trick; r = x - n ln 2 in
# two parts (Cody-Waite); exp(r) by Cephes' degree-7 minimax polynomial; 2^n as two powers of two built in
# the exponent bits, so results overflow to +inf and underflow through the subnormals to 0 as expf's do.
# sigmoid(x) = 1 / (1 + exp(-x)); tanh(x): Cephes' odd polynomial below |x| = 0.625, else
# sign(x) (1 - 2 / (exp(2 |x|) + 1)) with |x| clamped to 9. Measured against double precision over every
# third float32 (benchmarks/c_activations.py; tests/test_c_target.py samples every float's neighbourhood):
EXP_MAX_REL_ERROR = 8.2e-08  # results in the normal range
TANH_MAX_ABS_ERROR = 7.9e-08
SIGMOID_MAX_ABS_ERROR = 8.9e-08
EXP_POLY = (
    1.9875691500e-4,
    1.3981999507e-3,
    8.3334519073e-3,
    4.1665795894e-2,
    1.6666665459e-1,
    5.0000001201e-1,
)
TANH_POLY = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1)


def _horner(coefficients: tuple[float, ...], var: str) -> str:
    c = [literal(v) for v in coefficients]
    poly = c[0]
    for term in c[1:]:
        poly = f"({poly} * {var} + {term})"
    return poly


def exp_helpers(n: str) -> list[str]:
    return [
        "/* exp, sigmoid and tanh without libm and without branches, so that their loops vectorise; max error",
        f" * against double precision: exp {EXP_MAX_REL_ERROR:.2g} relative, sigmoid {SIGMOID_MAX_ABS_ERROR:.2g},"
        f" tanh {TANH_MAX_ABS_ERROR:.2g} absolute. */",
        f"static inline float {n}_exp(float x)",
        "{",
        f"    {n}_bits v, t, s1, s2;",
        "    v.f = x;",
        "    const int32_t mag = (int32_t)(v.u & 0x7FFFFFFFu); /* signed compares: SSE2 has no unsigned ones */",
        "    t.u = (uint32_t)(mag < 0x43160000 ? mag : 0x43160000) | (v.u & 0x80000000u); /* x clamped to +-150 */",
        "    const float c = t.f;",
        "    t.f = c * 1.44269504f + 12582912.0f; /* n = round(c / ln 2) in the low mantissa bits */",
        "    const float k = t.f - 12582912.0f;",
        "    const float r = (c - k * 0.693359375f) + k * 2.12194440e-4f;",
        f"    const float p = {_horner(EXP_POLY, 'r')} * r * r + r + 1.0f;",
        "    const uint32_t e = t.u - 0x4B400000u + 256u; /* n + 256 */",
        "    const uint32_t half = e >> 1;",
        "    s1.u = (half - 1u) << 23; /* 2^(half - 128) */",
        "    s2.u = (e - half - 1u) << 23; /* 2^(n - half + 128) */",
        "    t.f = p * s1.f * s2.f; /* overflows to inf, underflows through the subnormals to 0 */",
        "    const uint32_t nan = 0u - (uint32_t)(mag > 0x7F800000); /* all ones for NaN: masks, not branches */",
        "    t.u = (v.u & nan) | (t.u & ~nan); /* NaN stays NaN */",
        "    return t.f;",
        "}",
        "",
        f"static inline float {n}_sigmoid(float x)",
        "{",
        f"    return 1.0f / (1.0f + {n}_exp(-x));",
        "}",
        "",
        f"static inline float {n}_tanh(float x)",
        "{",
        f"    {n}_bits v, a, c, small, big;",
        "    v.f = x;",
        "    a.u = v.u & 0x7FFFFFFFu;",
        "    const int32_t mag = (int32_t)a.u;",
        "    const float z = a.f * a.f;",
        f"    small.f = {_horner(TANH_POLY, 'z')} * z * a.f + a.f;",
        "    c.u = (uint32_t)(mag < 0x41100000 ? mag : 0x41100000); /* |x| clamped to 9 */",
        f"    big.f = 1.0f - 2.0f / ({n}_exp(2.0f * c.f) + 1.0f);",
        "    const uint32_t below = 0u - (uint32_t)(mag < 0x3F200000); /* |x| < 0.625 */",
        "    const uint32_t nan = 0u - (uint32_t)(mag > 0x7F800000);",
        "    c.u = ((small.u & below) | (big.u & ~below) | (v.u & 0x80000000u)) & ~nan;",
        "    c.u |= v.u & nan; /* NaN stays NaN */",
        "    return c.f;",
        "}",
        "",
    ]


def fast_helpers(n: str) -> list[str]:
    a = [literal(v) for v in FAST_TANH_ALPHA]
    b = [literal(v) for v in FAST_TANH_BETA]
    poly = a[6]
    for c in reversed(a[:6]):
        poly = f"({poly} * x2 + {c})"
    den = b[3]
    for c in reversed(b[:3]):
        den = f"({den} * x2 + {c})"
    return [
        "/* tanh as a rational function (Eigen's coefficients), no branches, no libm: vectorisable. */",
        f"static float {n}_fast_tanh(float v)",
        "{",
        f"    const float c = {literal(FAST_TANH_CLAMP)};",
        "    const float x = v < -c ? -c : (v > c ? c : v);",
        "    const float x2 = x * x;",
        f"    return x * {poly} / {den};",
        "}",
        "",
        f"static float {n}_fast_sigmoid(float v)",
        "{",
        f"    return 0.5f + 0.5f * {n}_fast_tanh(0.5f * v);",
        "}",
        "",
    ]


# int8 steps: sigmoid from a table of its values at x = -16 + k / 16 (k = 0..513; float32 of the exact value),
# linearly interpolated: |x| clamped to 16 on its bits, x * 2^20 truncated to an integer whose high bits are
# the index and low 16 the fraction. No division and no exp: about a third of the instructions of the
# default sigmoid; gcc vectorises its loop with SSE2 and NEON (the table read lane by lane), Helium builds
# take four lanes a pass by gathers (``table_vector_helpers``), scalar elsewhere. tanh(x) = 2 sigmoid(2x) - 1.
# Their error is far below int8's own (the hidden state quantized to 1/254 of its largest |value|).
# Largest error against double precision over every float32 in [-20, 20] (tests/test_int8_activations.py):
TABLE_STEPS_PER_UNIT = 16
TABLE_RANGE = 16
TABLE_SIGMOID_MAX_ABS_ERROR = 4.8e-05
TABLE_TANH_MAX_ABS_ERROR = 9.5e-05


def sigmoid_table() -> np.ndarray:
    """The table's values (float32): sigmoid at -16 + k / 16, k = 0..513 (the last one past 16, read only
    with a zero fraction)."""
    x = -TABLE_RANGE + np.arange(2 * TABLE_RANGE * TABLE_STEPS_PER_UNIT + 2) / TABLE_STEPS_PER_UNIT
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


ARM_TABLE_CONDITION = (
    "defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M' && defined(__ARM_FP) && (__ARM_FP & 4) "
    "&& defined(__ARM_FEATURE_SAT) && defined(__GNUC__)"
)


def _arm_lookup(table: str, fraction_bits: int) -> list[str]:
    """The table read on a Cortex-M with VFP and SSAT (M4, M7, M33, M55), of x * 2^``fraction_bits`` (20:
    sigmoid(x); 21: sigmoid(2x), whose index is the same number), into ``c``; ``v`` and ``mag`` are x's.
    The index (x clamped to +-16 + 16) * 2^20 by one VCVT (saturating; NaN to 0, the select after it
    keeps NaN) and SSAT to [-2^24, 2^24 - 1]; the fraction (q & 0xFFFF) / 2^16 by one VCVT to 16-bit
    fixed point (it reads the low halfword). Three and two instructions where gcc makes eight and four
    of the portable C. The same bits: at the top, 2^24 - 1 where the C clamps to 2^24, it reads k = 511
    with a fraction of 65535 / 65536 where the C reads k = 512 with none, the same value while the table
    holds the same float at 511 and 512 (checked where the table is made)."""
    return [
        "    int32_t s;",
        "    c.f = x;",
        f'    __asm__("vcvt.s32.f32 %1, %1, #{fraction_bits}\\n\\tvmov %0, %1\\n\\tssat %0, #25, %0" : "=r"(s), "+t"(c.f));',
        "    const uint32_t q = (uint32_t)(s + 16777216);",
        "    const uint32_t k = q >> 16;",
        f"    const float lo = {table}[k], hi = {table}[k + 1];",
        "    float fraction;",
        '    __asm__("vmov %0, %1\\n\\tvcvt.f32.u16 %0, %0, #16" : "=t"(fraction) : "r"(q));',
        "    c.f = lo + (hi - lo) * fraction;",
        "    c.u = mag > 0x7F800000 ? v.u : c.u; /* NaN stays NaN */",
    ]


def table_helpers(n: str, table: str) -> list[str]:
    """``NAME_table_sigmoid`` and ``NAME_table_tanh`` on the constant array ``table`` (needs ``NAME_bits``)."""
    values = sigmoid_table()
    top = TABLE_RANGE * TABLE_STEPS_PER_UNIT * 2
    lines = [
        "/* int8 steps: sigmoid read off a table (sigmoid at -16 + k / 16) with linear interpolation, no division,",
        f" * no exp; max error against double precision: sigmoid {TABLE_SIGMOID_MAX_ABS_ERROR:.2g},"
        f" tanh {TABLE_TANH_MAX_ABS_ERROR:.2g} absolute. */",
    ]
    if values[top - 1] == values[top]:
        lines += [
            f"#if {ARM_TABLE_CONDITION}",
            "/* Cortex-M with VFP and SSAT: the index and the fraction by VCVT and SSAT, the same bits as the",
            " * C below (export/c/activations.py) */",
            f"static inline float {n}_table_sigmoid(float x)",
            "{",
            f"    {n}_bits v, c;",
            "    v.f = x;",
            "    const int32_t mag = (int32_t)(v.u & 0x7FFFFFFFu);",
            *_arm_lookup(table, 20),
            "    return c.f;",
            "}",
            "",
            f"static inline float {n}_table_tanh(float x)",
            "{",
            f"    {n}_bits v, c; /* sigmoid(2x) read at x * 2^21, the index of 2x * 2^20, one multiply fewer */",
            "    v.f = x;",
            "    const int32_t mag = (int32_t)(v.u & 0x7FFFFFFFu);",
            *_arm_lookup(table, 21),
            "    return 2.0f * c.f - 1.0f;",
            "}",
            "#else",
        ]
    lines += [
        f"static inline float {n}_table_sigmoid(float x)",
        "{",
        f"    {n}_bits v, c;",
        "    v.f = x;",
        "    const int32_t mag = (int32_t)(v.u & 0x7FFFFFFFu);",
        "    c.u = (uint32_t)(mag < 0x41800000 ? mag : 0x41800000) | (v.u & 0x80000000u); /* x clamped to +-16 */",
        "    const uint32_t q = (uint32_t)((int32_t)(c.f * 1048576.0f) + 16777216); /* (x + 16) * 2^20 */",
        "    const uint32_t k = q >> 16;",
        f"    const float lo = {table}[k], hi = {table}[k + 1];",
        "    c.f = lo + (hi - lo) * ((float)(int32_t)(q & 0xFFFFu) * 1.52587890625e-05f);",
        "    /* NaN stays NaN: by masks where gcc vectorises this loop (SSE2, NEON: a branch would stop it), by a",
        "     * select elsewhere (the scalar cores then branch around the arithmetic, fewer instructions) */",
        "#if defined(__SSE2__) || defined(__ARM_NEON)",
        "    const uint32_t nan = 0u - (uint32_t)(mag > 0x7F800000);",
        "    c.u = (v.u & nan) | (c.u & ~nan);",
        "#else",
        "    c.u = mag > 0x7F800000 ? v.u : c.u;",
        "#endif",
        "    return c.f;",
        "}",
        "",
        f"static inline float {n}_table_tanh(float x)",
        "{",
        f"    return 2.0f * {n}_table_sigmoid(2.0f * x) - 1.0f;",
        "}",
    ]
    if values[top - 1] == values[top]:
        lines.append("#endif")
    return [*lines, ""]


def table_vector_helpers(n: str, table: str) -> list[str]:
    """Helium (``NAME_ARM_MVE``): ``NAME_table_sigmoid4`` and ``NAME_table_tanh4``, four lanes of the scalar
    helpers, operation for operation."""
    return [
        f"#if defined({n.upper()}_ARM_MVE)",
        "/* Helium: the table sigmoid and tanh on four lanes, operation for operation the scalar ones: the clamp",
        " * on the bits, x * 2^20 truncated by VCVT's fixed point, both table entries read by gathers, the",
        " * fraction (q & 0xFFFF) / 2^16 exact, the NaN lanes' bits selected by a mask. MVE's float arithmetic",
        " * flushes subnormals and returns the default NaN, which changes no result: a subnormal x truncates",
        " * to 0 either way, every operand of the interpolation is normal, a NaN lane takes the scalar bits.",
        " * The gathers' offsets are computed a few operations ahead (a gather reads them early). */",
        f"static inline float32x4_t {n}_table4(float32x4_t x, uint32x4_t *keep)",
        "{",
        "    const uint32x4_t v = vreinterpretq_u32_f32(x);",
        "    const uint32x4_t mag = vbicq_n_u32(v, 0x80000000u);",
        "    const uint32x4_t c = vorrq_u32(vreinterpretq_u32_s32(vminq_s32(vreinterpretq_s32_u32(mag),"
        " vdupq_n_s32(0x41800000))),",
        "                                   veorq_u32(v, mag)); /* x clamped to +-16 */",
        "    const uint32x4_t q = vreinterpretq_u32_s32(vaddq_n_s32(vcvtq_n_s32_f32(vreinterpretq_f32_u32(c), 20),"
        " 16777216));",
        "    const uint32x4_t k = vshrq_n_u32(q, 16);",
        "    const float32x4_t f = vcvtq_n_f32_s32(vreinterpretq_s32_u32(vmovlbq_u16(vreinterpretq_u16_u32(q))), 16);",
        "    /* all ones but where |x|'s bits pass inf's (NaN): (|x| - 0x7F800001) >> 31 */",
        "    *keep = vreinterpretq_u32_s32(vshrq_n_s32(vsubq_n_s32(vreinterpretq_s32_u32(mag), 0x7F800001), 31));",
        f"    const float32x4_t lo = vldrwq_gather_shifted_offset_f32({table}, k);",
        f"    const float32x4_t hi = vldrwq_gather_shifted_offset_f32({table} + 1, k);",
        "    return vaddq_f32(lo, vmulq_f32(vsubq_f32(hi, lo), f));",
        "}",
        "",
        f"static inline float32x4_t {n}_table_sigmoid4(float32x4_t x)",
        "{",
        "    uint32x4_t keep;",
        f"    const uint32x4_t y = vreinterpretq_u32_f32({n}_table4(x, &keep));",
        "    return vreinterpretq_f32_u32(vorrq_u32(vandq_u32(y, keep), vbicq_u32(vreinterpretq_u32_f32(x), keep)));",
        "}",
        "",
        f"static inline float32x4_t {n}_table_tanh4(float32x4_t x)",
        "{",
        "    uint32x4_t keep; /* 2x is NaN where x is */",
        f"    const float32x4_t s = {n}_table4(vmulq_n_f32(x, 2.0f), &keep);",
        "    const uint32x4_t y = vreinterpretq_u32_f32(vsubq_n_f32(vmulq_n_f32(s, 2.0f), 1.0f));",
        "    /* a NaN lane: x quieted, as the scalar 2.0f * x leaves it */",
        "    const uint32x4_t quiet = vorrq_n_u32(vreinterpretq_u32_f32(x), 0x00400000u);",
        "    return vreinterpretq_f32_u32(vorrq_u32(vandq_u32(y, keep), vbicq_u32(quiet, keep)));",
        "}",
        "#endif",
        "",
    ]


def table_loop(e: Emitter, op: Elementwise) -> list[str] | None:
    """An int8 step's Sigmoid or Tanh over a whole vector: under ``NAME_ARM_MVE`` four lanes a pass
    (``table_vector_helpers``), else (and for what does not fit) the shared layers' loop. None where the
    operation is not one."""
    from edgernn.export.c import layers

    if not e.int8 or e.fast or op.op not in ("Sigmoid", "Tanh") or len(op.inputs) != 1:
        return None
    out, x = op.out, op.inputs[0]
    n = out.size
    if x.size != n or n < 4 or x.storage.kind == "const":
        return None
    scalar = layers.elementwise(e, op)  # registers the table and the helpers
    if x.storage.kind == out.storage.kind:  # one buffer (the arena, the state): where each starts in it
        start, at = e.base(x.storage) + x.offset, e.base(out.storage) + out.offset
        if start != at and abs(start - at) < n:  # partly overlapping: only the scalar order is right
            return scalar
    whole = n // 4 * 4
    kind = {"Sigmoid": "sigmoid", "Tanh": "tanh"}[op.op]
    lines = [
        f"#if defined({e.NAME}_ARM_MVE)",
        f"{{ const float *a = {e.ptr(x)}; float *y = {e.ptr(out)};",
        f"  for (int i = 0; i < {whole}; i += 4) vstrwq_f32(y + i, {e.name}_table_{kind}4(vldrwq_f32(a + i)));",
    ]
    if whole < n:
        lines.append(f"  for (int i = {whole}; i < {n}; i++) y[i] = {e.name}_table_{kind}(a[i]);")
    return [*lines, "}", "#else", *scalar, "#endif"]


def activation(e: Emitter, name: str, arg: str) -> str:
    """The C call of ``Sigmoid`` or ``Tanh`` on ``arg``: the fast rational one, the int8 steps' table, or
    the default, whose helpers the file then defines."""
    kind = {"Sigmoid": "sigmoid", "Tanh": "tanh"}[name]
    if e.fast:
        e.helpers.add("fast")
        return f"{e.name}_fast_{kind}({arg})"
    if e.int8:
        e.helpers.add("bits")
        e.sigmoid_table = e.const_array(sigmoid_table(), "float", "t")
        return f"{e.name}_table_{kind}({arg})"
    e.helpers.add("exp")
    return f"{e.name}_{kind}({arg})"


def with_table_activations(proto) -> None:
    """Rewrite every Sigmoid and Tanh node of ``proto`` (an onnx ModelProto, in place) into the table
    interpolation the int8 C computes, operation for operation in float32 and int32, so that the reference
    graph that checks the C rounds as it does."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    consts = {
        "edgernn_t_table": sigmoid_table(),
        "edgernn_t_lo": np.array(-TABLE_RANGE, np.float32),
        "edgernn_t_hi": np.array(TABLE_RANGE, np.float32),
        "edgernn_t_scale": np.array(1048576.0, np.float32),
        "edgernn_t_offset": np.array(16777216, np.int32),
        "edgernn_t_unit": np.array(65536, np.int32),
        "edgernn_t_one_index": np.array(1, np.int32),
        "edgernn_t_fraction": np.array(1.52587890625e-05, np.float32),
        "edgernn_t_two": np.array(2.0, np.float32),
        "edgernn_t_one": np.array(1.0, np.float32),
    }
    nodes = []
    count = 0

    def sigmoid(x: str, y: str, p: str) -> list:
        return [
            helper.make_node("Clip", [x, "edgernn_t_lo", "edgernn_t_hi"], [p + "c"]),
            helper.make_node("Mul", [p + "c", "edgernn_t_scale"], [p + "s"]),
            helper.make_node("Cast", [p + "s"], [p + "t"], to=6),  # int32, truncated as C's cast
            helper.make_node("Add", [p + "t", "edgernn_t_offset"], [p + "q"]),
            helper.make_node("Div", [p + "q", "edgernn_t_unit"], [p + "k"]),
            helper.make_node("Add", [p + "k", "edgernn_t_one_index"], [p + "k1"]),
            helper.make_node("Mod", [p + "q", "edgernn_t_unit"], [p + "m"]),
            helper.make_node("Cast", [p + "m"], [p + "mf"], to=1),
            helper.make_node("Mul", [p + "mf", "edgernn_t_fraction"], [p + "f"]),
            helper.make_node("Gather", ["edgernn_t_table", p + "k"], [p + "lo"], axis=0),
            helper.make_node("Gather", ["edgernn_t_table", p + "k1"], [p + "hi"], axis=0),
            helper.make_node("Sub", [p + "hi", p + "lo"], [p + "d"]),
            helper.make_node("Mul", [p + "d", p + "f"], [p + "df"]),
            helper.make_node("Add", [p + "lo", p + "df"], [y]),
        ]

    for node in graph.node:
        if node.op_type not in ("Sigmoid", "Tanh") or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        p = f"edgernn_t{count}_"
        count += 1
        if node.op_type == "Sigmoid":
            nodes += sigmoid(node.input[0], node.output[0], p)
        else:  # tanh(x) = 2 sigmoid(2x) - 1
            nodes.append(helper.make_node("Mul", [node.input[0], "edgernn_t_two"], [p + "x2"]))
            nodes += sigmoid(p + "x2", p + "sg", p)
            nodes += [
                helper.make_node("Mul", [p + "sg", "edgernn_t_two"], [p + "sg2"]),
                helper.make_node("Sub", [p + "sg2", "edgernn_t_one"], [node.output[0]]),
            ]
    if count:
        graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
        del graph.node[:]
        graph.node.extend(nodes)
