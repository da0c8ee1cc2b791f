"""A keyword model's log-mel front end in the integer precision: the lowered float step's chain ``RealFFT``
(with its power) -> the mel bands' product -> ``Add`` (the floor) -> ``Log`` becomes one ``QLogMel``
(``edgernn.runtime.integer_front_end``: its arithmetic and numpy reference), and its C.

The chain is matched on the lowered operations, never on the metadata's words: the window comes from the
DFT matrix the lowering recognised (``export.c.fft``), the bands from the product's matrix, the floor from
the ``Add``'s constant. Anything else (a spectrum read elsewhere, a product with a bias, negative bands, no
floor) is refused by name.
"""

from __future__ import annotations

import math

import numpy as np

from edgernn.export.c import marks
from edgernn.export.c.ctext import c_ints
from edgernn.export.c.ir import Elementwise, Gemv, Mark, RealFFT, SparseGemv
from edgernn.runtime import integer_front_end as fe
from edgernn.runtime.errors import ContractError
from edgernn.runtime.integer_front_end import QLogMel
from edgernn.runtime.integer_ref import quantize_multiplier

FFT_LIMIT = 2**30 - 2**20  # the largest sum of |windowed samples| (every FFT value within it)
SUM_LIMIT = 2**62  # a band's sum of power times weights, plus the floor
PATTERN = "a real FFT with its power, then the mel bands' product, + a floor and Log"


def _refuse(what: str) -> ContractError:
    return ContractError(
        f"--precision integer: {what}; the integer front end takes {PATTERN} "
        "(deploy this model as float32 or int8)"
    )


def _pre_shift(window_q: np.ndarray) -> tuple[int, np.ndarray]:
    """The smallest shift whose windowed samples' largest magnitudes sum within FFT_LIMIT; those (frame,)."""
    for shift in range(1, fe.WINDOW_FRAC + 16):
        largest = (32768 * np.abs(window_q) + (1 << (shift - 1))) >> shift
        if int(largest.sum()) <= FFT_LIMIT:
            return shift, largest
    raise AssertionError("a Q15 window always fits")


def _bands(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(first, count, Q15 weights, each band's weights' scale) of a (bins, mels) band matrix: every band at
    its own scale (its peak 32767), so that a band of small weights keeps their precision."""
    first, count, weights, scales = [], [], [], []
    for band in matrix.T:
        peak = float(band.max(initial=0.0))
        q = np.round(band / peak * 32767).astype(np.int64) if peak > 0 else np.zeros(band.size, np.int64)
        nonzero = np.flatnonzero(q)
        lo, hi = (int(nonzero[0]), int(nonzero[-1]) + 1) if nonzero.size else (0, 0)
        first.append(lo)
        count.append(hi - lo)
        weights.append(q[lo:hi])
        scales.append(peak / 32767 if peak > 0 else 1.0)
    return np.array(first), np.array(count), np.concatenate(weights), np.array(scales)


def log_mel_op(
    out, x, window: np.ndarray, fft: int, bands: np.ndarray, floor: float, s_frame: float, s_out: float
) -> QLogMel:
    """The QLogMel of a frame at scale ``s_frame`` into an output at ``s_out``: ``window`` (frame,),
    ``bands`` (fft / 2 + 1, mels) nonnegative, ``floor`` > 0 (module docstring of the runtime's)."""
    w_peak = float(np.abs(window).max())
    top = (1 << fe.WINDOW_FRAC) - 1
    window_q = np.round(np.asarray(window, np.float64) / w_peak * top).astype(np.int64)
    pre_shift, largest = _pre_shift(window_q)
    first, count, weights, s_weights = _bands(np.asarray(bands, np.float64))
    s_v = s_frame * w_peak / top * 2.0**pre_shift
    power_sum = fft * int((largest * largest).sum()) * 2 + (fft + 2) * 2**33  # Parseval, with slack
    for power_shift in range(0, 63):
        s_mel = s_v * s_v * 2.0**power_shift * s_weights  # (mels,)
        floor_q = np.round(floor / s_mel).astype(np.int64)
        if 32767 * (power_sum >> power_shift) + int(floor_q.max()) < SUM_LIMIT:
            break
    if not (floor_q.min() >= 1 and floor_q.max() < 2**40):
        raise _refuse(f"a floor of {floor:.3g} is {floor_q.min()} units of a band's sum (from 1 to 2^40)")
    (multiplier,), (shift,) = quantize_multiplier(np.array([math.log(2) / 2**fe.LOG_FRAC / s_out]))
    offset = np.round(np.log(s_mel) / s_out * 2.0 ** int(shift)).astype(np.int64) + (1 << (int(shift) - 1))
    if not (np.abs(offset).max() < 2**62 and 64 * 2**fe.LOG_FRAC * int(multiplier) < 2**62):
        raise _refuse(f"the log-mel's scale {s_out:.3g} against the power's {s_mel.min():.3g} is past int64")
    return QLogMel(out, x, fft, window_q, pre_shift, power_shift, first, count, weights, floor_q,
                   int(multiplier), int(shift), offset)  # fmt: skip


def _reads(op) -> list:
    if isinstance(op, Elementwise):
        return [t.storage for t in op.inputs]
    if hasattr(op, "src"):
        return [op.src]
    return [op.x.storage] if hasattr(op, "x") else []


def match_log_mel(ops: list, at: int) -> tuple[list, RealFFT, object, Elementwise, Elementwise]:
    """The operations from ``ops[at]`` (a RealFFT) to its Log, Marks left out; refused by name otherwise.
    (every index consumed, the FFT, the product, the Add, the Log)."""
    fft = ops[at]
    chain = [i for i in range(at, len(ops)) if not isinstance(ops[i], Mark)][:4]
    if len(chain) < 4:
        raise _refuse("a real FFT at the end of the step")
    _, product, add, log = (ops[i] for i in chain)
    if not fft.power:
        raise _refuse(f"a real FFT whose spectrum is read as it is ({fft.out.name!r}), not as its power")
    if not isinstance(product, (Gemv, SparseGemv)) or product.x.storage is not fft.out.storage:
        raise _refuse(f"a real FFT's power ({fft.out.name!r}) not read by a product into the mel bands")
    if product.bias is not None or getattr(product, "accumulate", False) or product.x.offset != 0:
        raise _refuse(f"the mel bands' product into {product.out.name!r} with a bias or an offset")
    if np.any(product.weight < 0) or not np.any(product.weight > 0):
        raise _refuse(f"mel bands ({product.out.name!r}) with negative weights or none")
    if not (
        isinstance(add, Elementwise) and add.op == "Add" and add.inputs[0].storage is product.out.storage
    ):
        raise _refuse(f"mel bands ({product.out.name!r}) without + a floor")
    constant = add.inputs[1]
    if (
        constant.storage.kind != "const"
        or constant.size != 1
        or not float(constant.storage.array.reshape(-1)[constant.offset]) > 0
    ):
        raise _refuse(f"a floor ({add.out.name!r}) that is not one constant above zero")
    if not (isinstance(log, Elementwise) and log.op == "Log" and log.inputs[0].storage is add.out.storage):
        raise _refuse(f"the floored mel bands ({add.out.name!r}) not read by Log")
    inner = {id(fft.out.storage), id(product.out.storage), id(add.out.storage)}
    for index, op in enumerate(ops):
        if index not in chain and any(id(s) in inner for s in _reads(op)):
            raise _refuse(f"a front end's spectrum or bands read outside it (by {type(op).__name__})")
    return chain, fft, product, add, log


# --- C ------------------------------------------------------------------------------------------------

LOG2_KERNEL = [
    f"static const int32_t q_log2_table[{fe.LOG_INTERVALS + 1}] = {{ /* log2(1 + k / {fe.LOG_INTERVALS}), Q16 */",
    c_ints(fe.LOG_TABLE),
    "};",
    "",
    "/* log2(v) in Q16, v >= 1: the leading one's position, then the table, interpolated */",
    "static int64_t q_log2(int64_t v)",
    "{",
    "    int64_t rest = v, normal, fraction;",
    "    int32_t top = 0, index, rem, low;",
    "    int bits;",
    "    for (bits = 32; bits > 0; bits >>= 1)",
    "        if ((rest >> bits) != 0) {",
    "            top += bits;",
    "            rest >>= bits;",
    "        }",
    "    normal = top >= 30 ? v >> (top - 30) : v << (30 - top); /* [2^30, 2^31) */",
    "    fraction = normal - ((int64_t)1 << 30);",
    "    index = (int32_t)(fraction >> 24);",
    "    rem = (int32_t)((fraction >> 8) & 0xFFFF);",
    "    low = q_log2_table[index];",
    f"    return ((int64_t)top << {fe.LOG_FRAC}) + low + (((q_log2_table[index + 1] - low) * rem + (1 << 15)) >> 16);",
    "}",
    "",
]


def fft_lines(op: QLogMel, const, frame: str) -> list[str]:
    """The windowed frame's spectrum into ``re``/``im`` (int32, bins 0 .. N/2), as ``q_spectrum``."""
    half = op.fft // 2
    cos, sin = fe.twiddles(op.fft)
    c_table, s_table = const("int32_t", cos, 4), const("int32_t", sin, 4)
    window = const("int32_t", op.window, 4)
    rev = const("uint16_t", fe.bit_reversed(half), 2)
    length = op.window.size
    r = 1 << (fe.TWIDDLE_FRAC - 1)
    sample = f"(int32_t)(((int64_t){frame}[n] * {window}[n] + {1 << (op.pre_shift - 1)}LL) >> {op.pre_shift})"
    return [
        f"for (j = 0; j < {half}; j++) {{ /* windowed, even samples real, odd imaginary, bit-reversed */",
        "    int32_t n = 2 * j, v[2];",
        f"    v[0] = n < {length} ? {sample} : 0;",
        "    n++;",
        f"    v[1] = n < {length} ? {sample} : 0;",
        f"    re[{rev}[j]] = v[0];",
        f"    im[{rev}[j]] = v[1];",
        "}",
        f"for (span = 1; span < {half}; span *= 2) {{ /* radix-2 butterflies, twiddles Q30 */",
        "    for (j = 0; j < span; j++) {",
        f"        const int64_t c = {c_table}[j * ({half} / span)], s = {s_table}[j * ({half} / span)];",
        f"        for (a = j; a < {half}; a += 2 * span) {{",
        "            const int32_t b = a + span;",
        "            int32_t tr, ti;",
        "            if (j == 0) { /* the twiddle 1: the rounded product is the value itself */",
        "                tr = re[b]; ti = im[b];",
        "            } else if (2 * j == span) { /* -i: as exact */",
        "                tr = im[b]; ti = -re[b];",
        "            } else {",
        f"                tr = (int32_t)((re[b] * c + im[b] * s + {r}) >> {fe.TWIDDLE_FRAC});",
        f"                ti = (int32_t)((im[b] * c - re[b] * s + {r}) >> {fe.TWIDDLE_FRAC});",
        "            }",
        "            re[b] = re[a] - tr; im[b] = im[a] - ti; re[a] += tr; im[a] += ti;",
        "        }",
        "    }",
        "}",
        f"re[{half}] = re[0] - im[0]; re[0] += im[0]; im[0] = 0; im[{half}] = 0;",
        f"for (k = 1; k <= {half // 2}; k++) {{ /* bins k and N/2 - k of the real signal */",
        f"    const int32_t m = {half} - k;",
        "    const int64_t er = ((int64_t)re[k] + re[m]) >> 1, ei = ((int64_t)im[k] - im[m]) >> 1;",
        "    const int64_t o_r = ((int64_t)im[k] + im[m]) >> 1, o_i = ((int64_t)re[m] - re[k]) >> 1;",
        f"    const int64_t c = {c_table}[k], s = {s_table}[k];",
        f"    const int64_t tr = (o_r * c + o_i * s + {r}) >> {fe.TWIDDLE_FRAC};",
        f"    const int64_t ti = (o_i * c - o_r * s + {r}) >> {fe.TWIDDLE_FRAC};",
        "    re[k] = (int32_t)(er + tr); im[k] = (int32_t)(ei + ti);",
        "    re[m] = (int32_t)(er - tr); im[m] = (int32_t)(ti - ei);",
        "}",
    ]


def _mark(name: str, label: str) -> list[str]:
    """A call the device bench's build makes at ``label`` (``export.c.marks``), nothing elsewhere."""
    call = marks.symbol(label)
    return [f"#ifdef {name.upper()}_BENCH_MARKS", f"{{ extern void {call}(void); {call}(); }}", "#endif"]


def log_mel_lines(op: QLogMel, const, frame: str, out: str, name: str) -> tuple[list[str], int]:
    """The C of one QLogMel (a block with its own int32 and int64 scratch, between the front end's bench
    marks); (lines, its stack bytes)."""
    half, bins, mels = op.fft // 2, op.bins, op.first.size
    first, count = const("uint16_t", op.first, 2), const("uint16_t", op.count, 2)
    weights = const("int16_t", op.weights, 2)
    floor, offset = const("int64_t", op.floor, 8), const("int64_t", op.offset, 8)
    lines = [
        *_mark(name, "front_end_begin"),
        f"{{ /* log-mel: {op.window.size} samples, {op.fft}-point real FFT in int32, power in int64, "
        f"{mels} bands, log2 by a table */",
        f"    int32_t re[{half + 1}], im[{half + 1}];",
        f"    int64_t power[{bins}];",
        "    int32_t span, a, k, w = 0;",
        *("    " + line for line in fft_lines(op, const, frame)),
        f"    for (k = 0; k < {bins}; k++)",
        f"        power[k] = ((int64_t)re[k] * re[k] + (int64_t)im[k] * im[k]) >> {op.power_shift};",
        f"    for (j = 0; j < {mels}; j++) {{",
        f"        int64_t sum = {floor}[j], value;",
        f"        for (k = {first}[j]; k < {first}[j] + {count}[j]; k++)",
        f"            sum += power[k] * {weights}[w++];",
        f"        value = (q_log2(sum) * {op.multiplier} + {offset}[j]) >> {op.shift};",
        f"        {out}[j] = (int16_t)(value < -32768 ? -32768 : (value > 32767 ? 32767 : value));",
        "    }",
        "}",
        *_mark(name, "front_end_end"),
    ]
    return lines, 8 * (half + 1) + 8 * bins


def build_log_mel(builder, ops: list, at: int) -> list[int]:
    """Append the QLogMel of the chain that starts at ``ops[at]`` to ``builder`` (``export.c.integer_program``'s);
    the indices of the operations it stands for."""
    chain, fft, product, add, log = match_log_mel(ops, at)
    layout = fft.layout
    if fft.x.size != layout.frame:
        raise _refuse(f"a real FFT of {fft.x.size} samples whose window has {layout.frame}")
    x = builder.view(fft.x)
    out = builder.out(log.out)
    floor = float(add.inputs[1].storage.array.reshape(-1)[add.inputs[1].offset])
    op = log_mel_op(out, x, np.asarray(layout.window, np.float64), layout.fft, np.asarray(product.weight, np.float64),
                    floor, builder.buffers[x.buffer].scale, builder.buffers[out.buffer].scale)  # fmt: skip
    builder.ops.append(op)
    return chain
