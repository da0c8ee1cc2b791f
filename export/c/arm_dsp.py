"""int8 dot products with Helium (MVE: Cortex-M55) and with the DSP instructions of ARMv7E-M and ARMv8-M
Mainline (Cortex-M4, M7, M33), chosen by the compiler's ``__ARM_FEATURE_MVE``, ``__ARM_FEATURE_DSP`` and
``__ARM_FEATURE_SIMD32`` (the portable loop everywhere else, or with ``-DNAME_PORTABLE``). With MVE,
VLDRB.U16 loads eight weights widened to 16 bits and VMLADAVA adds their eight products with the input's
to the accumulator. gcc does not vectorise the portable loop for these cores: it makes one
multiply-accumulate per instruction. Here SMLAD makes two: four weights are loaded as one word and widened
in pairs by UXTB16 (bytes 0 and 2, then, with its rotation, 1 and 3), and the quantized input is stored with each
group of four as x0 x2 x1 x3, so that one word holds the pair each widened half meets. The weights are
0..255 and the inputs -128..127: every product and sum is the portable loop's, in int32, so the outputs
are bit-identical."""

from __future__ import annotations


def declarations(name: str) -> list[str]:
    """The switch and the input's layout macro ``NAME_XQ_AT(i, k4)`` (where element i of x is stored)."""
    upper = name.upper()
    return [
        "/* Arm cores with the DSP extension (Cortex-M4/M7/M33/M55): SMLAD, two multiply-accumulates per",
        " * instruction, on weights widened in pairs; xq is then stored as x0 x2 x1 x3 in each group of four */",
        "/* Helium (MVE: Cortex-M55, M85) first: eight multiply-accumulates an instruction (VMLADAVA), the",
        " * weights widened to 16 bits as they load (VLDRB.U16); xq in order */",
        f"#if defined(__ARM_FEATURE_MVE) && !defined({upper}_PORTABLE)",
        f"#define {upper}_ARM_MVE 1",
        "#include <arm_mve.h>",
        f"#define {upper}_XQ_AT(i, k4) (i)",
        f"#elif defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32) && !defined({upper}_PORTABLE)",
        f"#define {upper}_ARM_DSP 1",
        "#include <arm_acle.h>",
        f"#define {upper}_XQ_AT(i, k4) ((i) < (k4) ? ((i) & ~3) | (((i) & 1) << 1) | (((i) >> 1) & 1) : (i))",
        "/* bytes 1 and 3 widened: UXTB16 with its own rotation, one instruction (gcc makes two of the C form) */",
        f"static inline uint32_t {name}_odd_bytes(uint32_t w)",
        "{",
        "    uint32_t odd;",
        '    __asm__("uxtb16 %0, %1, ror #8" : "=r"(odd) : "r"(w));',
        "    return odd;",
        "}",
        f"#define {upper}_ODD_BYTES(w) {name}_odd_bytes(w)",
        "#else",
        f"#define {upper}_XQ_AT(i, k4) (i)",
        "#endif",
        "",
    ]


def whole_groups(k: int) -> int:
    """The inputs the paired loop covers (groups of four); the rest stay in place."""
    return k // 4 * 4


def rows_dot(name: str, k: int, accumulators: list[str], portable: list[str]) -> list[str]:
    """The inner loop over one pass's rows (``r``: the first row, ``r + g * k`` row g) with SMLAD under
    ``NAME_ARM_DSP``, else the ``portable`` lines."""
    upper = name.upper()
    k4 = whole_groups(k)
    k8 = k // 8 * 8
    tail = [
        f"        for (; i < {k}; i++) {{",
        "            const int32_t x = xq[i];",
        *(f"            {acc} += (int32_t)r[{g * k} + i] * x;" for g, acc in enumerate(accumulators)),
        "        }",
    ]
    lines = [f"#if defined({upper}_ARM_MVE)", "        {", "        int i = 0;"]
    if k8:
        lines += [
            f"        for (; i < {k8}; i += 8) {{",
            "            const int16x8_t x8 = vldrhq_s16(xq + i);",
            *(
                f"            {acc} = vmladavaq_s16({acc}, vreinterpretq_s16_u16(vldrbq_u16(r + {g * k} + i)), x8);"
                for g, acc in enumerate(accumulators)
            ),
            "        }",
        ]
    if k8 < k:
        lines += tail
    lines += ["        }", f"#elif defined({upper}_ARM_DSP)", "        {", "        int i = 0;"]
    if k4:
        lines += [
            f"        for (; i < {k4}; i += 4) {{",
            "            uint32_t x02, x13, w4;",
            "            memcpy(&x02, xq + i, 4); /* x[i], x[i + 2] */",
            "            memcpy(&x13, xq + i + 2, 4); /* x[i + 1], x[i + 3] */",
        ]
        for g, acc in enumerate(accumulators):
            lines += [
                f"            memcpy(&w4, r + {g * k} + i, 4);",
                f"            {acc} = __smlad(__uxtb16(w4), x02, {acc});",
                f"            {acc} = __smlad({upper}_ODD_BYTES(w4), x13, {acc});",
            ]
        lines.append("        }")
    if k4 < k:
        lines += tail
    return [*lines, "        }", "#else", *portable, "#endif"]
