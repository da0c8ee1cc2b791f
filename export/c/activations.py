"""The activations the generated C computes itself: exp, sigmoid and tanh without libm and without branches
(the default), and the cheaper rational tanh/sigmoid of ``fast_activations``; their measured errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgernn.export.c.ctext import literal

if TYPE_CHECKING:
    from edgernn.export.c.emitter import Emitter

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


def activation(e: Emitter, name: str, arg: str) -> str:
    """The C call of ``Sigmoid`` or ``Tanh`` on ``arg``: the fast rational one or the default, whose
    helpers the file then defines."""
    kind = {"Sigmoid": "sigmoid", "Tanh": "tanh"}[name]
    if e.fast:
        e.helpers.add("fast")
        return f"{e.name}_fast_{kind}({arg})"
    e.helpers.add("exp")
    return f"{e.name}_{kind}({arg})"
