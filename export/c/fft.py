"""The windowed real DFT as a real FFT: a product by a constant matrix that is, number for number, a window
times the cos and sin columns of an N-point real DFT becomes ``RealFFT`` (``ir.py``), written as a radix-2
FFT on N/2 complex points and one pass that splits their spectrum into the real signal's.

The matrix is recognised from its own values, never from a name or metadata: ``(frame, 2 * bins)`` with
``bins = N / 2 + 1``, N a power of two and ``frame <= N`` (the frame zero-padded to N points); its first
column is the window ``w`` (cos 0 = 1); every column ``k < bins`` must equal ``w * cos(2 pi n k / N)`` and
every column ``bins + k`` ``-w * sin(2 pi n k / N)`` (or ``+w * sin``) within a few float32 roundings of
the window's largest value. Anything else stays a matrix product.

The C (float32 in every precision: the int8 step keeps its spectrum in float32, and its reference graph
the dense matrix unquantized) works in place in the output: the windowed frame's even samples are the
real parts and its odd samples the imaginary parts of N/2 complex points, stored in bit-reversed order in
``re = out[0 .. N/2)`` and ``im = out[bins .. bins + N/2)``; log2(N/2) stages of butterflies (the first
three as the windowed points are read, eight that land side by side at a time: the first without
multiplies, the next two as the first paired pass; the others two at a time in one pass where they
can: ``stages``) give their spectrum Z; then bins k and N/2 - k of the real signal's spectrum X come from Z[k] and Z[N/2 - k]:
``X[k] = E + W^k O`` and ``X[N/2 - k] = conj(E - W^k O)`` with ``E = (Z[k] + conj Z[N/2 - k]) / 2``,
``O = (Z[k] - conj Z[N/2 - k]) / 2i``, ``W = exp(-2 pi i / N)``.
Twiddles are constant tables of N/2 cosines and sines. Where the graph squares the spectrum and sums the
squares of re and im by one product (``s * s`` then ``[M; M]``, the power spectrum into the mel bands),
the lowering has the FFT write each bin's ``re^2 + im^2`` and the product take ``M`` alone
(``Lowering.power_spectrum``). ``simulate`` is the same arithmetic in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgernn.runtime.integer_front_end import bit_reversed  # the same permutation as the integer FFT's

if TYPE_CHECKING:
    from edgernn.export.c.emitter import Emitter
    from edgernn.export.c.ir import RealFFT

MATCH_ROUNDINGS = 4  # float32 epsilons of the window's peak a matrix value may stray from the DFT's


@dataclass(frozen=True)
class DFTLayout:
    """What a recognised matrix computes: the ``fft``-point DFT of ``window * frame`` (``frame`` samples,
    zero-padded), the real parts of bins 0 .. fft/2, then ``imag_sign`` times the imaginary parts."""

    fft: int
    frame: int
    window: np.ndarray  # (frame,) float32: the matrix's first column
    imag_sign: float  # -1: columns -w sin (the imaginary part as exp(-i ...) gives it); +1: +w sin

    @property
    def bins(self) -> int:
        return self.fft // 2 + 1


def expected_matrix(window: np.ndarray, fft: int, imag_sign: float = -1.0) -> np.ndarray:
    """The windowed real DFT matrix, float64 ``(len(window), 2 * (fft / 2 + 1))``."""
    frame, bins = len(window), fft // 2 + 1
    phase = np.outer(np.arange(frame), np.arange(bins)) % fft  # exact: the angle mod 2 pi
    angle = 2.0 * np.pi * phase / fft
    w = np.asarray(window, np.float64)[:, None]
    return np.concatenate([w * np.cos(angle), imag_sign * w * np.sin(angle)], axis=1)


def recognise(matrix: np.ndarray) -> DFTLayout | None:
    """The layout of ``matrix`` if it is a windowed real DFT (see the module docstring), else None."""
    m = np.asarray(matrix)
    if m.ndim != 2 or m.dtype.kind != "f":
        return None
    frame, columns = m.shape
    if columns % 2 or columns < 6:
        return None
    fft = columns - 2
    if fft & (fft - 1) or frame < 2 or frame > fft or not np.isfinite(m).all():
        return None
    window = m[:, 0].astype(np.float32)
    peak = float(np.abs(window).max())
    if peak == 0.0:
        return None
    tolerance = MATCH_ROUNDINGS * float(np.finfo(np.float32).eps) * peak
    values = m.astype(np.float64)
    for sign in (-1.0, 1.0):
        if np.abs(values - expected_matrix(window, fft, sign)).max() <= tolerance:
            return DFTLayout(fft, frame, window, sign)
    return None


def twiddles(fft: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of 2 pi t / fft for t < fft / 2, float32."""
    angle = 2.0 * np.pi * np.arange(fft // 2) / fft
    return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)


def multiplications(layout: DFTLayout) -> int:
    """Real multiplications of one transform as written (the window, the butterflies after the first
    stage, the split): the figure to set beside the dense product's ``frame * 2 * bins``."""
    half = layout.fft // 2
    stages = half.bit_length() - 1
    return layout.frame + 4 * (half // 2) * max(0, stages - 1) + 8 * (half // 2)


def stages(half: int) -> list[tuple[int, bool]]:
    """The butterfly stages after the first (of two points, without multiplies): (span, paired), paired
    stages doing those of ``2 * span`` and ``4 * span`` points in one pass over the data (the second's
    twiddle for the odd quarter is ``-i`` times the even's: half the loads and stores of two passes)."""
    found, span = [], 2
    while span < half:
        paired = 4 * span <= half
        found.append((span, paired))
        span *= 4 if paired else 2
    return found


# --- numpy: the C's arithmetic, in float32 ------------------------------------------------------------


def simulate(layout: DFTLayout, x: np.ndarray, power: bool = False) -> np.ndarray:
    """``x (frame,) @ matrix`` computed as the generated C computes it (float32, the same order); with
    ``power``, each bin's re^2 + im^2 as the C writes it for a fused power spectrum."""
    f32 = np.float32
    half, bins = layout.fft // 2, layout.bins
    signal = np.zeros(layout.fft, f32)
    signal[: layout.frame] = np.asarray(x, f32) * layout.window
    rev = bit_reversed(half)
    re, im = np.zeros(half, f32), np.zeros(half, f32)
    re[rev] = signal[0::2]
    im[rev] = signal[1::2]
    cos, sin = twiddles(layout.fft)
    for a in range(0, half - 1, 2):  # butterflies of two: no multiplies
        tr, ti = re[a + 1], im[a + 1]
        re[a + 1], im[a + 1], re[a], im[a] = re[a] - tr, im[a] - ti, re[a] + tr, im[a] + ti
    for span, paired in stages(half):
        for j in range(span):
            c1, s1 = cos[j * half // span], sin[j * half // span]
            if not paired:
                a = np.arange(j, half, 2 * span)
                b = a + span
                tr, ti = re[b] * c1 + im[b] * s1, im[b] * c1 - re[b] * s1
                re[b], im[b] = re[a] - tr, im[a] - ti
                re[a], im[a] = re[a] + tr, im[a] + ti
                continue
            c2, s2 = cos[j * half // (2 * span)], sin[j * half // (2 * span)]
            p0 = np.arange(j, half, 4 * span)
            p1, p2, p3 = p0 + span, p0 + 2 * span, p0 + 3 * span
            t1r, t1i = re[p1] * c1 + im[p1] * s1, im[p1] * c1 - re[p1] * s1
            t3r, t3i = re[p3] * c1 + im[p3] * s1, im[p3] * c1 - re[p3] * s1
            y0r, y0i, y1r, y1i = re[p0] + t1r, im[p0] + t1i, re[p0] - t1r, im[p0] - t1i
            y2r, y2i, y3r, y3i = re[p2] + t3r, im[p2] + t3i, re[p2] - t3r, im[p2] - t3i
            ur, ui = y2r * c2 + y2i * s2, y2i * c2 - y2r * s2
            vr, vi = y3i * c2 - y3r * s2, -(y3r * c2 + y3i * s2)  # -i times the twiddle's product
            re[p0], im[p0], re[p2], im[p2] = y0r + ur, y0i + ui, y0r - ur, y0i - ui
            re[p1], im[p1], re[p3], im[p3] = y1r + vr, y1i + vi, y1r - vr, y1i - vi
    out_re, out_im = np.zeros(bins, f32), np.zeros(bins, f32)
    out_re[0], out_re[half] = re[0] + im[0], re[0] - im[0]
    for k in range(1, half // 2 + 1):
        m = half - k
        er, ei = f32(0.5) * (re[k] + re[m]), f32(0.5) * (im[k] - im[m])
        o_r, o_i = f32(0.5) * (im[k] + im[m]), f32(0.5) * (re[m] - re[k])
        c, s = cos[k], sin[k]
        tr, ti = c * o_r + s * o_i, c * o_i - s * o_r
        out_re[k], out_im[k] = er + tr, ei + ti
        out_re[m], out_im[m] = er - tr, ti - ei
    if power:
        return (out_re * out_re + out_im * out_im).astype(f32)
    imag = out_im if layout.imag_sign < 0 else -out_im  # the split gives exp(-i ...)'s: columns -w sin
    return np.concatenate([out_re, imag]).astype(f32)


# --- C ------------------------------------------------------------------------------------------------


def emit(e: Emitter, op: RealFFT) -> list[str]:
    """The C of one transform, in place in ``op.out`` (float32)."""
    layout = op.layout
    fft, frame, bins, half = layout.fft, layout.frame, layout.bins, layout.fft // 2
    later = stages(half)
    group = 8 if later and later[0] == (2, True) else 2  # points each pass of the first stages reads
    if group == 8:
        later = later[1:]  # butterflies of 4 and 8 as the points are read too
    spread = half // group  # the points of one group: m + spread * bitrev(b), b < group
    assert spread >= 1  # recognise: fft >= 4
    order = bit_reversed(half)[:spread]  # where each group starts
    rev = e.const_array(order, "uint8_t" if half <= 256 else "int32_t", "r")
    window = e.const_array(layout.window, "float", "win")
    cos, sin = twiddles(fft)
    c_table, s_table = e.const_array(cos, "float", "cos"), e.const_array(sin, "float", "sin")
    pairs, odd = frame // 2, frame % 2
    offsets = [spread * int(r) for r in bit_reversed(group)]  # position b holds point m + offsets[b]

    def point(m: str, at: int) -> tuple[str, str]:
        """The real and imaginary parts of complex point ``m`` (a C expression) for points like ``at``:
        two windowed samples, the last odd sample and a zero, or the zero padding."""
        if at < pairs:
            return f"v[2 * {m}] * {window}[2 * {m}]", f"v[2 * {m} + 1] * {window}[2 * {m} + 1]"
        if at == pairs and odd:
            return f"v[{frame - 1}] * {window}[{frame - 1}]", "0.0f"
        return "0.0f", "0.0f"

    lines = [
        f"{{ /* {op.out.name}: windowed real DFT of {frame} samples as a {fft}-point real FFT "
        f"({half} complex points), {bins} bins */",
        f"    const float *restrict v = {e.ptr(op.x)};",
        f"    float *restrict re = {e.ptr(op.out)};",
        f"    float *restrict im = re + {bins};",
    ]
    cuts = {0, spread}
    for edge in (pairs, pairs + odd):
        cuts.update(c for c in (edge - o for o in offsets) if 0 < c < spread)
    bounds = sorted(cuts)
    what = "butterflies of 2" if group == 2 else "butterflies of 2, 4 and 8"
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        lines += [
            f"    for (int m = {lo}; m < {hi}; m++) {{ /* points m + {offsets} (even samples: real parts, odd: "
            f"imaginary), windowed, as they lie bit-reversed from a, and their {what} */",
            f"        const int a = {rev}[m];",
        ]
        for b, o in enumerate(offsets):
            real, imag = point(f"(m + {o})" if o else "m", lo + o)
            lines.append(f"        const float r{b} = {real}, i{b} = {imag};")
        for b in range(0, group, 2):  # butterflies of two: no multiplies
            lines.append(
                f"        const float a{b}r = r{b} + r{b + 1}, a{b}i = i{b} + i{b + 1}, "
                f"a{b + 1}r = r{b} - r{b + 1}, a{b + 1}i = i{b} - i{b + 1};"
            )
        if group == 2:
            lines += [
                "        re[a + 1] = a1r; im[a + 1] = a1i; re[a] = a0r; im[a] = a0i;",
                "    }",
            ]
            continue
        for j in range(2):  # the first paired stage (butterflies of 4, then of 8), as written below
            p = [j, j + 2, j + 4, j + 6]
            c1, s1 = f"{c_table}[{j * (half // 2)}]", f"{s_table}[{j * (half // 2)}]"
            c2, s2 = f"{c_table}[{j * (half // 4)}]", f"{s_table}[{j * (half // 4)}]"
            r = [f"a{q}r" for q in p]
            i = [f"a{q}i" for q in p]
            lines += [
                "        {",
                f"            const float c1 = {c1}, s1 = {s1}, c2 = {c2}, s2 = {s2};",
                f"            const float t1r = {r[1]} * c1 + {i[1]} * s1, t1i = {i[1]} * c1 - {r[1]} * s1;",
                f"            const float t3r = {r[3]} * c1 + {i[3]} * s1, t3i = {i[3]} * c1 - {r[3]} * s1;",
                f"            const float y0r = {r[0]} + t1r, y0i = {i[0]} + t1i, y1r = {r[0]} - t1r, y1i = {i[0]} - t1i;",
                f"            const float y2r = {r[2]} + t3r, y2i = {i[2]} + t3i, y3r = {r[2]} - t3r, y3i = {i[2]} - t3i;",
                "            const float ur = y2r * c2 + y2i * s2, ui = y2i * c2 - y2r * s2;",
                "            const float vr = y3i * c2 - y3r * s2, vi = -(y3r * c2 + y3i * s2); /* -i w y3 */",
                f"            re[a + {p[0]}] = y0r + ur; im[a + {p[0]}] = y0i + ui; "
                f"re[a + {p[2]}] = y0r - ur; im[a + {p[2]}] = y0i - ui;",
                f"            re[a + {p[1]}] = y1r + vr; im[a + {p[1]}] = y1i + vi; "
                f"re[a + {p[3]}] = y1r - vr; im[a + {p[3]}] = y1i - vi;",
                "        }",
            ]
        lines.append("    }")
    for span, paired in later:
        if not paired:
            lines += [
                f"    for (int j = 0; j < {span}; j++) {{ /* butterflies of {2 * span} */",
                f"        const float c = {c_table}[j * {half // span}], s = {s_table}[j * {half // span}];",
                f"        for (int a = j; a < {half}; a += {2 * span}) {{",
                f"            const int b = a + {span};",
                "            const float tr = re[b] * c + im[b] * s, ti = im[b] * c - re[b] * s;",
                "            re[b] = re[a] - tr; im[b] = im[a] - ti; re[a] += tr; im[a] += ti;",
                "        }",
                "    }",
            ]
            continue
        lines += [
            f"    for (int j = 0; j < {span}; j++) {{ /* butterflies of {2 * span}, then of {4 * span}, in one pass */",
            f"        const float c1 = {c_table}[j * {half // span}], s1 = {s_table}[j * {half // span}];",
            f"        const float c2 = {c_table}[j * {half // (2 * span)}], s2 = {s_table}[j * {half // (2 * span)}];",
            f"        for (int p0 = j; p0 < {half}; p0 += {4 * span}) {{",
            f"            const int p1 = p0 + {span}, p2 = p0 + {2 * span}, p3 = p0 + {3 * span};",
            "            const float t1r = re[p1] * c1 + im[p1] * s1, t1i = im[p1] * c1 - re[p1] * s1;",
            "            const float t3r = re[p3] * c1 + im[p3] * s1, t3i = im[p3] * c1 - re[p3] * s1;",
            "            const float y0r = re[p0] + t1r, y0i = im[p0] + t1i, y1r = re[p0] - t1r, y1i = im[p0] - t1i;",
            "            const float y2r = re[p2] + t3r, y2i = im[p2] + t3i, y3r = re[p2] - t3r, y3i = im[p2] - t3i;",
            "            const float ur = y2r * c2 + y2i * s2, ui = y2i * c2 - y2r * s2;",
            "            const float vr = y3i * c2 - y3r * s2, vi = -(y3r * c2 + y3i * s2); /* -i w y3 */",
            "            re[p0] = y0r + ur; im[p0] = y0i + ui; re[p2] = y0r - ur; im[p2] = y0i - ui;",
            "            re[p1] = y1r + vr; im[p1] = y1i + vi; re[p3] = y1r - vr; im[p3] = y1i - vi;",
            "        }",
            "    }",
        ]
    lines += [
        "    { /* bins 0 and N/2 from Z[0]; then bins k and N/2 - k from Z[k] and Z[N/2 - k] */",
        "        const float r0 = re[0], i0 = im[0];",
        *(
            [f"        re[0] = (r0 + i0) * (r0 + i0); re[{half}] = (r0 - i0) * (r0 - i0); /* re^2 + im^2 */"]
            if op.power
            else [f"        re[0] = r0 + i0; im[0] = 0.0f; re[{half}] = r0 - i0; im[{half}] = 0.0f;"]
        ),
        "    }",
        f"    for (int k = 1; k <= {half // 2}; k++) {{",
        f"        const int m = {half} - k;",
        "        const float er = 0.5f * (re[k] + re[m]), ei = 0.5f * (im[k] - im[m]);",
        "        const float o_r = 0.5f * (im[k] + im[m]), o_i = 0.5f * (re[m] - re[k]);",
        f"        const float c = {c_table}[k], s = {s_table}[k];",
        "        const float tr = c * o_r + s * o_i, ti = c * o_i - s * o_r;",
        *(
            [
                "        const float kr = er + tr, ki = ei + ti, mr = er - tr, mi = ti - ei;",
                "        re[k] = kr * kr + ki * ki; /* the power of bins k and N/2 - k */",
                "        re[m] = mr * mr + mi * mi;",
            ]
            if op.power
            else ["        re[k] = er + tr; im[k] = ei + ti;", "        re[m] = er - tr; im[m] = ti - ei;"]
        ),
        "    }",
    ]
    if layout.imag_sign > 0 and not op.power:
        lines.append(f"    for (int k = 0; k < {bins}; k++) im[k] = -im[k]; /* columns +w sin */")
    lines.append("}")
    return lines
