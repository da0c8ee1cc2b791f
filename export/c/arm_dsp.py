"""int8 dot products with Helium (MVE: Cortex-M55) and with the DSP instructions of ARMv7E-M and ARMv8-M
Mainline (Cortex-M4, M7, M33), chosen by the compiler's ``__ARM_FEATURE_MVE``, ``__ARM_FEATURE_DSP`` and
``__ARM_FEATURE_SIMD32`` (the portable loop everywhere else, or with ``-DNAME_PORTABLE``). gcc does not
vectorise the portable loop for these cores: it makes one multiply-accumulate per instruction.

Helium reads the portable weights (w + 128, 0..255) and stores the quantized input as x + 128 (1..255), so
that VMLADAVA.U8 adds sixteen unsigned byte products an instruction: sum (w + 128)(x + 128) =
sum w x + 128 sum x + 128 sum w + 128 * 128 * k, where sum x is the step's and 128 (sum w + 128 k) a
constant of each row, stored beside the weights for the Helium build alone (``NAME_ARM_MVE``).

The DSP loop reads the weights of each pair of rows (A, B) interleaved, A's byte (w + 128) then B's (w,
signed), input by input: each halfword is then uA + 256 wB as a signed 16-bit number, and SMLAD of a
word of them with a word of two inputs (x_i, x_i+1, in order) adds xi (uA_i + 256 wB_i) +
xi+1 (uA_i+1 + 256 wB_i+1), while SMLAD of the same word's odd bytes sign-extended (SXTB16 with its
rotation) adds B's two products alone: B's sum is the second, A's the first less 256 times the second
(in modular int32: exact whatever the wrap). Three instructions make four multiply-accumulates where
widening each row's bytes (UXTB16 twice) took five. A pass takes four pairs (``DSP_PAIRS``) where rows
have 16 inputs or more, each word of inputs loaded once for eight rows; the rows past the last pass a
pair at a time, an odd last row with a row of zeros (``dsp_padded``). That layout is chosen by the same ``#if`` as the loop,
so the portable build compiles the portable layout from the same file. Every product and sum is the
portable loop's, in int32: the outputs are bit-identical."""

from __future__ import annotations

import numpy as np

from edgernn.export.c.ctext import c_ints


def mve_condition(name: str) -> str:
    return f"defined(__ARM_FEATURE_MVE) && !defined({name.upper()}_PORTABLE)"


def dsp_condition(name: str) -> str:
    """The DSP loop's condition (Helium, where present, is chosen first)."""
    upper = name.upper()
    return (
        f"!defined(__ARM_FEATURE_MVE) && defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32) "
        f"&& !defined({upper}_PORTABLE)"
    )


def declarations(name: str) -> list[str]:
    """The switch, the quantized input's type and ``NAME_XQ_BIAS`` (what is added to each stored input)."""
    upper = name.upper()
    return [
        "/* Helium (MVE: Cortex-M55, M85): sixteen multiply-accumulates an instruction (VMLADAVA.U8) of the",
        " * weights + 128 by the inputs + 128 (xq stored so), each row's constant share taken off;",
        " * the DSP extension (Cortex-M4/M7/M33): SMLAD on the interleaved bytes of two rows, three",
        " * instructions for four multiply-accumulates; the portable loop elsewhere */",
        f"#if {mve_condition(name)}",
        f"#define {upper}_ARM_MVE 1",
        "#include <arm_mve.h>",
        f"#define {upper}_XQ_BIAS 128",
        f"typedef uint8_t {name}_xq_arm;",
        "#if defined(__GNUC__) && !defined(__clang__)",
        "/* the step's vector loads and multiply-accumulates kept in the order written, alternating: their",
        " * beats overlap (gcc's scheduler would hoist the loads together) */",
        '#pragma GCC optimize("no-schedule-insns")',
        "#endif",
        f"#elif {dsp_condition(name)}",
        f"#define {upper}_ARM_DSP 1",
        "#include <arm_acle.h>",
        "#if defined(__GNUC__) && !defined(__clang__)",
        "/* each group of loads next to its SMLADs, as written: gcc's first scheduling pass would hoist the",
        " * next groups' loads, past the registers that eight accumulators leave free */",
        '#pragma GCC optimize("no-schedule-insns")',
        "#endif",
        f"#define {upper}_XQ_BIAS 0",
        "/* bytes 1 and 3 sign-extended: SXTB16 with its own rotation, one instruction (gcc makes two of the",
        " * C form) */",
        f"static inline int32_t {name}_odd_bytes(uint32_t w)",
        "{",
        "    int32_t odd;",
        '    __asm__("sxtb16 %0, %1, ror #8" : "=r"(odd) : "r"(w));',
        "    return odd;",
        "}",
        "#else",
        f"#define {upper}_XQ_BIAS 0",
        "#endif",
        "",
    ]


def xq_type(name: str) -> str:
    """The quantized input's C type: bytes for Helium, else the portable choice."""
    return f"{name}_xq_t"


def xq_typedef(name: str) -> list[str]:
    upper = name.upper()
    return [
        f"#if defined({upper}_ARM_MVE)",
        f"typedef {name}_xq_arm {name}_xq_t;",
        "#else",
        f"typedef {name}_xq {name}_xq_t;",
        "#endif",
        "",
    ]


def dsp_layout(offset: np.ndarray, rows: int) -> np.ndarray:
    """The DSP build's weights: ``offset`` (n x k, w + 128, output-major) with each pair of its first
    ``rows`` rows interleaved input by input, A's byte as it is, B's as w (signed: its top bit flipped);
    the rows past ``rows`` as they are (the same offsets)."""
    n, k = offset.shape
    out = offset.copy()
    pairs = offset[:rows].reshape(rows // 2, 2, k)
    woven = np.empty((rows // 2, k, 2), dtype=np.uint8)
    woven[:, :, 0] = pairs[:, 0]
    woven[:, :, 1] = pairs[:, 1] ^ np.uint8(0x80)
    out[:rows] = woven.reshape(rows, k)
    return out


def mve_row_terms(offset: np.ndarray) -> np.ndarray:
    """Each row's constant share of the Helium sum: 128 (sum w + 128 k) = 128 times the sum of its stored
    bytes."""
    return 128 * offset.astype(np.int64).sum(axis=1)


def layout_arrays(e, portable: np.ndarray, dsp: np.ndarray, terms: np.ndarray | None) -> tuple[str, str]:
    """The weights (the DSP layout under the DSP loop's ``#if``, else the portable one) and, for Helium
    builds only, each row's constant: their symbols."""
    key = ("int8-layouts", portable.tobytes(), dsp.tobytes(), None if terms is None else terms.tobytes())
    if key in e.array_names:
        return e.array_names[key]
    index = len(e.array_names)
    w, c = f"{e.name}_q{index}", f"{e.name}_c{index}"
    e.array_names[key] = (w, c)
    e.arrays.append(
        "\n".join(
            [
                f"#if {dsp_condition(e.name)} /* row pairs interleaved for SMLAD */",
                f"static const uint8_t {w}[{max(1, dsp.size)}] = {{\n{c_ints(dsp)}\n}};",
                "#else",
                f"static const uint8_t {w}[{max(1, portable.size)}] = {{\n{c_ints(portable)}\n}};",
                "#endif",
            ]
        )
    )
    if terms is not None:
        e.arrays.append(
            f"#if {mve_condition(e.name)} /* each row's constant share of the Helium sums */\n"
            f"static const int32_t {c}[{max(1, terms.size)}] = {{\n{c_ints(terms)}\n}};\n#endif"
        )
    e.flash += max(portable.size, dsp.size)
    return w, c


def rows_dot(
    name: str,
    k: int,
    rows: int,
    init: str,
    portable: list[str],
    stores: list[str],
    vector: list[str],
    dsp: bool = True,
) -> list[str]:
    """One pass's ``rows`` rows (``r``: the first row's weights, ``j`` its index): under ``NAME_ARM_MVE``
    the Helium sums ``u0``.. (from 0) and the ``vector`` lines that store them; under ``NAME_ARM_DSP``
    and else, ``init`` (the accumulators ``a0``.. at their constant term), the SMLAD or the ``portable``
    loop, then ``stores``."""
    upper = name.upper()
    lines = [f"#if defined({upper}_ARM_MVE)"]
    lines.append(f"        uint32_t {', '.join(f'u{g} = 0' for g in range(rows))};")
    k16 = k // 16 * 16
    if k16:  # a pointer per row, post-incremented: each load then alternates with a multiply-accumulate
        lines += [
            "        const uint8_t *restrict xi = xq;",
            *(f"        const uint8_t *restrict r{g} = r + {g * k};" for g in range(rows)),
            "        /* opaque to gcc, which would otherwise address every row from one pointer, adding an",
            "         * offset between the loads (immediates reach 127 bytes) */",
            '        __asm__("" : ' + ", ".join(f'"+r"(r{g})' for g in range(rows)) + ");",
            f"        for (int i = 0; i < {k16}; i += 16) {{",
            "            const uint8x16_t x16 = vldrbq_u8(xi);",
            "            xi += 16;",
        ]
        for g in range(rows):
            lines += [
                f"            u{g} = vmladavaq_u8(u{g}, vldrbq_u8(r{g}), x16);",
                f"            r{g} += 16;",
            ]
        lines.append("        }")
    if k16 < k:
        lines += [
            "        {",
            f"            const mve_pred16_t p = vctp8q({k - k16});",
            f"            const uint8x16_t x16 = vldrbq_z_u8(xq + {k16}, p);",
            *(
                f"            u{g} = vmladavaq_p_u8(u{g}, vldrbq_z_u8(r + {g * k + k16}, p), x16, p);"
                for g in range(rows)
            ),
            "        }",
        ]
    lines += vector
    if dsp:
        lines += [f"#elif defined({upper}_ARM_DSP)", init, "        {"]
        lines += _dsp_pairs(name, k, rows)
        lines += ["        }", *stores]
    lines += ["#else", init, *portable, *stores, "#endif"]
    return lines


DSP_PAIRS = 4  # row pairs each pass of the DSP loop computes (eight outputs a pass over the input)


def dsp_padded(offset: np.ndarray) -> np.ndarray:
    """The DSP build's weights of every row: ``dsp_layout`` over all rows, an odd count paired with a
    row of zeros (its stored bytes 128)."""
    n, k = offset.shape
    if n % 2:
        offset = np.vstack([offset, np.full((1, k), 128, np.uint8)])
    return dsp_layout(offset, offset.shape[0])


def dsp_products(name: str, k: int, n: int, store, pointers) -> list[str]:
    """Every row under ``NAME_ARM_DSP`` (``w``: the ``dsp_padded`` weights, ``offset``, ``back``):
    DSP_PAIRS pairs a pass, walked as the state's pass bit says, then a pair at a time, then an odd
    last row with its zero partner. ``store(g, acc)``: the C storing output ``j + g``;
    ``pointers(j)``: the lines before the stores."""
    group = 2 * (DSP_PAIRS if k >= 16 else 2)  # short rows: the stores dominate, less code
    whole = n // group * group
    lines = []

    def one_pass(rows: int, real: int) -> list[str]:
        accs = [f"a{g}" for g in range(rows)]
        out = [
            f"        const uint8_t *restrict r = w + j * {k};",
            f"        int32_t {', '.join(f'{a} = -offset' for a in accs)}; /* the weights' +128 taken off */",
            "        {",
            *_dsp_pairs(name, k, rows),
            "        }",
            *pointers("j"),
            *(f"        {store(g, a)}" for g, a in enumerate(accs[:real])),
        ]
        return out + [f"        (void){a};" for a in accs[real:]]

    if whole:
        lines += [
            f"    for (int jj = 0; jj < {whole}; jj += {group}) {{",
            f"        const int j = back ? {whole - group} - jj : jj;",
            *one_pass(group, group),
            "    }",
        ]
    pairs_end = whole + (n - whole) // 2 * 2
    if pairs_end > whole:
        lines += [f"    for (int j = {whole}; j < {pairs_end}; j += 2) {{", *one_pass(2, 2), "    }"]
    if n % 2:
        lines += [
            "    {",
            f"        const int j = {n - 1}; /* with a row of zeros */",
            *one_pass(2, 1),
            "    }",
        ]
    return lines


def row_dot(name: str, k: int, init: str, portable: str) -> list[str]:
    """One row past the whole groups (``r``: its weights, ``j`` its index) into ``acc``: under
    ``NAME_ARM_MVE`` its Helium sum less the row's constant and the input's share (the same int32, modulo
    2^32), else ``init`` and the ``portable`` loop."""
    k16 = k // 16 * 16
    lines = [f"#if defined({name.upper()}_ARM_MVE)", "        uint32_t u = 0;"]
    if k16:
        lines.append(
            f"        for (int i = 0; i < {k16}; i += 16) u = vmladavaq_u8(u, vldrbq_u8(r + i), vldrbq_u8(xq + i));"
        )
    if k16 < k:
        lines += [
            "        {",
            f"            const mve_pred16_t p = vctp8q({k - k16});",
            f"            u = vmladavaq_p_u8(u, vldrbq_z_u8(r + {k16}, p), vldrbq_z_u8(xq + {k16}, p), p);",
            "        }",
        ]
    lines += ["        const int32_t acc = (int32_t)(u - (uint32_t)c[j] - (uint32_t)offset);", "#else", init]
    return [*lines, portable, "#endif"]


def vector_store(rows: int, scale: str, bias: str | None, accumulate: bool) -> list[str]:
    """Helium: the ``rows`` (4) sums ``u0``.. less each row's constant and the input's share, scaled and
    stored four at a time, lane by lane the scalar code's operations in its order:
    ``o[j] = (s[j] * vs) * (float)a + b[j]`` (or ``o[j] += ...``)."""
    assert rows == 4
    value = "vmulq_f32(vmulq_n_f32(vldrwq_f32(" + scale + " + j), vs), vcvtq_f32_s32(q))"
    if accumulate:
        value = f"vaddq_f32(vldrwq_f32(o + j), {value})"
    elif bias is not None:
        value = f"vaddq_f32({value}, vldrwq_f32({bias} + j))"
    return [
        "        {",
        "        const uint32x4_t sums = vsetq_lane_u32(u3, vsetq_lane_u32(u2, vsetq_lane_u32(u1,"
        " vdupq_n_u32(u0), 1), 2), 3);",
        "        const int32x4_t q = vsubq_n_s32(vsubq_s32(vreinterpretq_s32_u32(sums), vldrwq_s32(c + j)),"
        " offset);",
        f"        vstrwq_f32(o + j, {value});",
        "        }",
    ]


def _dsp_pairs(name: str, k: int, rows: int) -> list[str]:
    """SMLAD over interleaved row pairs: ``m`` (A + 256 B) and ``b`` (B) per pair; A = m - 256 b."""
    pairs = rows // 2
    lines = []
    for p in range(pairs):
        lines.append(f"        int32_t m{p} = a{2 * p}, b{p} = 0; /* B's weights are signed: no constant */")
    if k >= 4:
        lines.append("        const int16_t *restrict xp = xq;")

    def loads(names: list[str], places: list[str]) -> list[str]:
        """Loads in one asm statement (consecutive loads pipeline on the Cortex-M4, and a loaded value
        used by the next instruction stalls it a cycle: gcc interleaves each load with its use)."""
        text = "\\n\\t".join(f"ldr %{n}, %{len(names) + n}" for n in range(len(names)))
        outputs = ", ".join(f'"=&r"({v})' for v in names)
        inputs = ", ".join(f'"m"(*(const uint32_t *)&{place})' for place in places)
        return [
            f"            uint32_t {', '.join(names)};",
            f'            __asm__("{text}" : {outputs} : {inputs});',
        ]

    def macs(h: int, among: range) -> list[str]:
        out = []
        for p in among:
            out += [
                f"            m{p} = __smlad(w{p}{h}, x{h}, m{p});",
                f"            b{p} = __smlad({name}_odd_bytes(w{p}{h}), x{h}, b{p});",
            ]
        return out

    def group(at: int, words: int) -> list[str]:
        """``words`` words of inputs from ``xp + at``: up to two pairs, two words at a time, their loads
        and their rows' in one asm statement, then their SMLADs; more pairs (more accumulators, fewer
        free registers), a word at a time, its loads two pairs at a time."""
        out = []
        if pairs <= 2:
            for h0 in range(0, words, 2):
                hs = list(range(h0, min(h0 + 2, words)))
                names = [f"x{h}" for h in hs] + [f"w{p}{h}" for h in hs for p in range(pairs)]
                places = [f"xp[{at + 2 * h}]" for h in hs]
                places += [f"r[{2 * p * k} + 2 * i + {2 * (at + 2 * h)}]" for h in hs for p in range(pairs)]
                out += loads(names, places)
                for h in hs:
                    out += macs(h, range(pairs))
            return out
        for h in range(words):
            for p0 in range(0, pairs, 2):
                among = range(p0, min(p0 + 2, pairs))
                names = ([f"x{h}"] if p0 == 0 else []) + [f"w{p}{h}" for p in among]
                places = ([f"xp[{at + 2 * h}]"] if p0 == 0 else []) + [
                    f"r[{2 * p * k} + 2 * i + {2 * (at + 2 * h)}]" for p in among
                ]
                out += loads(names, places)
                out += macs(h, among)
        return out

    # inputs a pass: 32 only where the weights are large beside the code it takes
    step = 32 if k >= 128 else 16 if k >= 16 else 8 if k >= 8 else 4
    if pairs > 2:  # twice the code a word: half the words a pass, all of them where they are few
        step = 16 if k >= 96 else k // 4 * 4 if k <= 32 else 8
    main = k // step * step
    if main:
        lines += [f"        for (int i = 0; i < {main}; i += {step}) {{", *group(0, step // 2)]
        lines += [f"            xp += {step};", "        }"]
    done = main
    while k - done >= 4:
        lines += ["        {", f"            const int i = {main};", *group(done - main, 2)]
        lines.append("        }")
        done += 4
    for i in range(done, k):
        for p in range(pairs):
            lines += [
                f"        {{ const int32_t x = xq[{i}], wb = (int8_t)r[{2 * p * k + 2 * i + 1}];",
                f"          m{p} += ((int32_t)r[{2 * p * k + 2 * i}] + 256 * wb) * x; b{p} += wb * x; }}",
            ]
    for p in range(pairs):
        lines += [
            f"        a{2 * p} = (int32_t)((uint32_t)m{p} - ((uint32_t)b{p} << 8));",
            f"        a{2 * p + 1} = b{p};",
        ]
    return lines


def vector_max(name: str, k: int) -> list[str]:
    """Helium: max |v| over v's whole vectors of four, on the bits as the scalar loop (NaN the largest);
    ``from`` is where the scalar loops go on (0 elsewhere)."""
    upper = name.upper()
    k4 = k // 4 * 4
    lines = [f"#if defined({upper}_ARM_MVE)", f"    const int from = {k4};"]
    if k4:
        lines += [
            "    {",
            "        uint32x4_t t4 = vdupq_n_u32(0);",
            f"        for (int i = 0; i < {k4}; i += 4)",
            "            t4 = vmaxq_u32(t4, vandq_u32(vreinterpretq_u32_f32(vldrwq_f32(v + i)), vdupq_n_u32(0x7FFFFFFFu)));",
            "        top = vmaxvq_u32(0, t4);",
            "    }",
        ]
    return [*lines, "#else", "    const int from = 0;", "#endif"]


def vector_quantize(name: str, k: int) -> list[str]:
    """Helium: v's whole vectors of four quantized as the scalar loop does, lane for lane (v * inv, then
    + 1.5 * 2^23), stored as bytes q + 128 (the low byte of each lane with its top bit flipped: VSTRB.32),
    their sum kept."""
    upper = name.upper()
    k4 = k // 4 * 4
    if not k4:
        return []
    return [
        f"#if defined({upper}_ARM_MVE)",
        "    {",
        "        uint32_t biased = 0; /* the sum of q + 128 */",
        f"        for (int i = 0; i < {k4}; i += 4) {{",
        "            const float32x4_t r = vaddq_n_f32(vmulq_n_f32(vldrwq_f32(v + i), inv), 12582912.0f);",
        "            const uint32x4_t q = veorq_u32(vreinterpretq_u32_f32(r), vdupq_n_u32(0x80u));",
        "            vstrbq_u32(xq + i, q);",
        "            biased = vaddvaq_u32(biased, vandq_u32(q, vdupq_n_u32(0xFFu)));",
        "        }",
        f"        xsum = (int32_t)biased - {128 * k4};",
        "    }",
        "#endif",
    ]
