"""The generated file's own natural logarithm, float only (no libm, no double: a ``logf`` computed in
double runs in software on a Cortex-M4F, whose FPU is single precision): ``x = m * 2^k`` with ``m`` in
[sqrt(1/2), sqrt(2)), ``log m = 2 atanh(s)``, ``s = (m - 1) / (m + 1)``, as its odd series to ``s^9``
(fdlibm's reduction; the series' remainder below 2e-9 of the result), ``k * ln 2`` in two parts. Within
LOG_MAX_ULP units in the last place of the correctly rounded logarithm (``tests/test_keyword_device.py``
measures it on the generated C); 0 gives -inf, a negative number or NaN NaN, +inf +inf, subnormals are
scaled first."""

from __future__ import annotations

LOG_MAX_ULP = 3  # the largest error, in float32 ulps of the result, over every 61st positive float (2.66)


def log_helper(n: str) -> list[str]:
    """``static float NAME_log(float x)`` (needs the ``NAME_bits`` union)."""
    return [
        f"static float {n}_log(float x)",
        "{",
        f"    {n}_bits b;",
        "    int k = 0;",
        "    float m, s, z, p;",
        "    if (!(x > 0.0f) || x > 3.40282347e38f) /* 0, negative, NaN, +inf */",
        "        return x == 0.0f ? -HUGE_VALF : (x > 0.0f ? x : NAN);",
        "    b.f = x;",
        "    if (b.u < 0x00800000u) { /* subnormal: scaled by 2^23 */",
        "        b.f = x * 8388608.0f;",
        "        k = -23;",
        "    }",
        "    k += (int)(b.u >> 23) - 127;",
        "    b.u = (b.u & 0x007FFFFFu) | 0x3F800000u; /* m in [1, 2) */",
        "    m = b.f;",
        "    if (m > 1.41421356f) {",
        "        m *= 0.5f;",
        "        k++;",
        "    }",
        "    s = (m - 1.0f) / (m + 1.0f);",
        "    z = s * s;",
        "    p = s * (2.0f + z * (0.666666667f + z * (0.4f + z * (0.285714286f + z * 0.222222222f))));",
        "    return (float)k * 0.693145752f + (p + (float)k * 1.42860677e-06f); /* ln 2 in two parts */",
        "}",
        "",
    ]
