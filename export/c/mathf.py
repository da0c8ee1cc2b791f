"""The generated file's own natural logarithm, float only (no libm, no double: a ``logf`` computed in
double runs in software on a Cortex-M4F, whose FPU is single precision), fdlibm's: ``x = m * 2^k`` with
``m`` in [sqrt(1/2), sqrt(2)), ``f = m - 1``, ``s = f / (2 + f)``, ``log m = f - (f^2/2 - s (f^2/2 + R))``
with R a minimax polynomial in ``s^2`` (FreeBSD's e_logf.c coefficients, |error| < 2^-34), ``k * ln 2`` in
two parts. Within LOG_MAX_ULP units in the last place of the correctly rounded logarithm (0.82 over every
61st positive float; ``tests/test_keyword_device.py`` measures it on the generated C); 0 gives -inf, a
negative number or NaN NaN, +inf +inf, subnormals are scaled first."""

from __future__ import annotations

LOG_MAX_ULP = 1  # the largest error, in float32 ulps of the result, over the positive floats tested


def log_helper(n: str) -> list[str]:
    """``static float NAME_log(float x)`` (needs the ``NAME_bits`` union)."""
    return [
        f"static float {n}_log(float x)",
        "{",
        f"    {n}_bits b;",
        "    int k = 0;",
        "    float m, f, s, z, w, r, hf;",
        "    b.f = x;",
        "    if (b.u - 0x00800000u >= 0x7F000000u) { /* no positive normal float: one compare on the bits */",
        "        if (!(x > 0.0f) || x > 3.40282347e38f) /* 0, negative, NaN, +inf */",
        "            return x == 0.0f ? -HUGE_VALF : (x > 0.0f ? x : NAN);",
        "        b.f = x * 8388608.0f; /* subnormal: scaled by 2^23 */",
        "        k = -23;",
        "    }",
        "    k += (int)(b.u >> 23) - 127;",
        "    b.u = (b.u & 0x007FFFFFu) | 0x3F800000u; /* m in [1, 2) */",
        "    m = b.f;",
        "    if (m > 1.41421356f) {",
        "        m *= 0.5f;",
        "        k++;",
        "    }",
        "    f = m - 1.0f;",
        "    s = f / (2.0f + f);",
        "    z = s * s;",
        "    w = z * z;",
        "    r = z * (0.66666662693f + w * 0.28498786688f) + w * (0.40000972152f + w * 0.24279078841f);",
        "    hf = 0.5f * f * f;",
        "    return (float)k * 0.693145752f - ((hf - (s * (hf + r) + (float)k * 1.42860677e-06f)) - f);",
        "}",
        "",
    ]
