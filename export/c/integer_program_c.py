"""NAME.h and NAME.c of an ``IntegerProgram`` (a bring-your-own model at ``--precision integer``): C99 with
no floating point in a step, the reference ``edgernn.runtime.integer_program.q_run`` operation for
operation. The products are ``integer_kernels``' ``q_product``; the element-wise operations loops with
every requantization and saturation written out; LayerNorm, Softmax and their integer square root and
exp table the functions of ``edgernn.runtime.integer_layers``. Each scratch buffer is an int16 array on
the stack; the state an int16 struct; the only floats are the two conversion helpers callers with floats
use (left out by ``-DEDGERNN_NO_FLOAT``).
"""

from __future__ import annotations

import numpy as np

from edgernn.export.c.check import check_strings
from edgernn.export.c.ctext import c_ints, literal
from edgernn.export.c.integer import IntegerParts, IntegerSources, assemble
from edgernn.export.c.integer_front_end import LOG2_KERNEL, log_mel_lines
from edgernn.export.c.integer_kernels import kernels, stored_order
from edgernn.export.c.ir import broadcast_strides, contiguous_strides
from edgernn.runtime import integer_layers
from edgernn.runtime import integer_ops as ops
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.integer_front_end import LOG_INTERVALS
from edgernn.runtime.integer_layers import NARROW_SHIFTS
from edgernn.runtime.integer_program import (
    COMPARE,
    IntegerProgram,
    QCopy,
    QGather,
    QGemv,
    QIndexedCopy,
    QLayerNorm,
    QLogMel,
    QMap,
    QSoftmax,
    View,
)

DESCRIPTION = (
    "a bring-your-own graph in integers: int8 weights (one scale per row, folded into an int32 multiplier "
    "and shift), int32 accumulators, every buffer int16 at one calibrated scale, sigmoid, tanh and exp by "
    "tables with linear interpolation, LayerNorm by an integer square root, no floating point "
    "in a step"
)
C_COMPARE = {"less": "<", "greater": ">", "less_equal": "<=", "greater_equal": ">=", "equal": "=="}
assert set(C_COMPARE) == set(COMPARE)

NARROW_KERNEL = [
    f"/* an int16 v requantized in 32-bit arithmetic (shifts {NARROW_SHIFTS[0]} to {NARROW_SHIFTS[1]}; the others",
    " * by q_requantize): the multiplier's high and low halves apart, two 32-bit products */",
    "static int32_t q_narrow(int32_t v, int32_t multiplier, int shift)",
    "{",
    "    int32_t t;",
    f"    if (shift < {NARROW_SHIFTS[0]} || shift > {NARROW_SHIFTS[1]})",
    "        return q_requantize(v, multiplier, shift);",
    "    t = v * (multiplier >> 16) + ((v * (multiplier & 0xFFFF)) >> 16);",
    "    return (t + ((int32_t)1 << (shift - 17))) >> (shift - 16);",
    "}",
    "",
]
LAYER_KERNELS = [
    "static int32_t q_sat16_64(int64_t v)",
    "{",
    "    return (int32_t)(v < -32768 ? -32768 : (v > 32767 ? 32767 : v));",
    "}",
    "",
]
NORM_KERNELS = [
    "/* floor(sqrt(v)), bit by bit */",
    "static uint64_t q_isqrt(uint64_t v)",
    "{",
    "    uint64_t r = 0, bit = (uint64_t)1 << 62;",
    "    while (bit > v)",
    "        bit >>= 2;",
    "    while (bit != 0) {",
    "        if (v >= r + bit) {",
    "            v -= r + bit;",
    "            r = (r >> 1) + bit;",
    "        } else {",
    "            r >>= 1;",
    "        }",
    "        bit >>= 2;",
    "    }",
    "    return r;",
    "}",
    "",
    "/* num / den (den > 0) rounded half away from zero */",
    "static int64_t q_div_round(int64_t num, int64_t den)",
    "{",
    "    int64_t q = ((num < 0 ? -num : num) + den / 2) / den;",
    "    return num < 0 ? -q : q;",
    "}",
    "",
    "/* LayerNormalization of n values: d = n x - sum (exact), n^2 var = sum d^2 / n, n std by the integer",
    f" * square root, z = d / (n std) in Q4.{integer_layers.NORM_FRAC}, then gamma, beta and the output's scale */",
    "static void q_layer_norm(const int16_t *x, int16_t *out, int n, const int16_t *gamma, const int32_t *beta,",
    "                         int64_t eps, int32_t multiplier, int shift)",
    "{",
    "    int32_t sum = 0;",
    "    int64_t squares = 0, sd;",
    "    int j;",
    "    for (j = 0; j < n; j++)",
    "        sum += x[j];",
    "    for (j = 0; j < n; j++) {",
    "        int64_t d = (int64_t)n * x[j] - sum;",
    "        squares += d * d;",
    "    }",
    "    sd = (int64_t)q_isqrt((uint64_t)(squares / n + eps));",
    "    if (sd < 1)",
    "        sd = 1;",
    "    for (j = 0; j < n; j++) {",
    "        int64_t d = (int64_t)n * x[j] - sum;",
    f"        int32_t z = q_sat16_64(q_div_round(d * {1 << integer_layers.NORM_FRAC}, sd));",
    "        out[j] = (int16_t)q_sat16(q_requantize(z * gamma[j] + beta[j], multiplier, shift));",
    "    }",
    "}",
    "",
]


def softmax_kernels() -> list[str]:
    return [
        f"static const int16_t q_exp_table[{integer_layers.EXP_INTERVALS + 1}] = {{ /* exp(-k / 32), Q0.15 */",
        c_ints(integer_layers.EXP_TABLE),
        "};",
        "",
        "static int32_t q_exp(int32_t x) /* x <= 0, Q4.11 -> Q0.15 */",
        "{",
        "    int32_t a = x < -32767 ? 32767 : -x, index, frac, low;",
        f"    index = a >> {integer_layers.EXP_SHIFT};",
        f"    frac = a & {(1 << integer_layers.EXP_SHIFT) - 1};",
        "    low = q_exp_table[index];",
        f"    return low + (((q_exp_table[index + 1] - low) * frac + {1 << (integer_layers.EXP_SHIFT - 1)}) >> "
        f"{integer_layers.EXP_SHIFT});",
        "}",
        "",
        "/* Softmax of n values: x - max(x) to Q4.11, exp by the table, each share of the sum in Q0.15 */",
        "static void q_softmax(const int16_t *x, int16_t *out, int n, int32_t multiplier, int shift)",
        "{",
        "    int32_t top = x[0], total = 0;",
        "    int j;",
        "    for (j = 1; j < n; j++)",
        "        if (x[j] > top)",
        "            top = x[j];",
        "    for (j = 0; j < n; j++) {",
        "        int32_t e = q_exp(q_sat16(q_requantize(x[j] - top, multiplier, shift)));",
        "        out[j] = (int16_t)e;",
        "        total += e;",
        "    }",
        "    for (j = 0; j < n; j++) {",
        "        int32_t p = ((int32_t)out[j] * 32768 + total / 2) / total;",
        "        out[j] = (int16_t)(p > 32767 ? 32767 : p);",
        "    }",
        "}",
        "",
    ]


def _touches(op) -> tuple[list[int], list[int]]:
    """The buffers an operation reads and those it writes."""
    if isinstance(op, QCopy):
        return [op.src], [op.dst]
    if isinstance(op, QMap):
        return [v.buffer for v in op.inputs], [op.out.buffer]
    if isinstance(op, QGather):
        return [], [op.out.buffer]
    reads = [op.x.buffer] + ([op.out.buffer] if isinstance(op, QGemv) and op.accumulate else [])
    return reads, [op.out.buffer]


def place_arena(program: IntegerProgram) -> tuple[dict[int, int], int]:
    """An offset in one int16 scratch array for every arena buffer: buffers whose lifetimes (first write to
    last read, both ends included, the step's end reading the next state and y) overlap never share a
    value. (offsets, values the array takes)."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for index, op in enumerate(program.ops):
        reads, writes = _touches(op)
        for buffer in writes:
            first.setdefault(buffer, index)
        for buffer in reads + writes:
            last[buffer] = index
    end = len(program.ops)
    for buffer in [view.buffer for _, view in program.states] + [program.y.buffer]:
        last[buffer] = end
    placed: list[tuple[int, int, int, int]] = []  # offset, size, first, last
    offsets: dict[int, int] = {}
    for buffer in sorted(first, key=lambda b: (first[b], b)):
        if program.buffers[buffer].kind != "arena":
            continue
        size, span = program.buffers[buffer].size, (first[buffer], last[buffer])
        busy = sorted((o, o + n) for o, n, a, b in placed if a <= span[1] and span[0] <= b)
        offset = 0
        for low, high in busy:
            if offset + size <= low:
                break
            offset = max(offset, high)
        placed.append((offset, size, *span))
        offsets[buffer] = offset
    return offsets, max((o + n for o, n, _, _ in placed), default=0)


class _Writer:
    def __init__(self, program: IntegerProgram, name: str):
        self.program, self.n = program, name
        self.arrays: list[str] = []
        self.flash = 0
        self.counter = 0
        self.symbols: dict[int, str] = {}
        self.front_end_bytes = 0  # the log-mel's own int32 and int64 scratch

    def const(self, ctype: str, values: np.ndarray, size: int) -> str:
        values = np.asarray(values).reshape(-1)
        symbol = f"{self.n}_k{self.counter}"
        self.counter += 1
        self.arrays.append(
            f"static const {ctype} {symbol}[{max(1, values.size)}] = {{\n{c_ints(values)}\n}};"
        )
        self.flash += size * max(1, values.size)
        return symbol

    def base(self, index: int) -> str:
        """The C expression of buffer ``index``'s first value (a pointer)."""
        buffer = self.program.buffers[index]
        if buffer.kind == "state":
            return f"(st->s + {buffer.base})"
        if buffer.kind == "x":
            return "x"
        if buffer.kind == "const":
            if index not in self.symbols:
                self.symbols[index] = self.const("int16_t", buffer.values, 2)
            return self.symbols[index]
        return f"(arena + {self.offsets[index]})"

    def at(self, view: View | int, index: str, offset: int = 0) -> str:
        if isinstance(view, View):
            offset, view = view.offset + offset, view.buffer
        if self.program.buffers[view].kind == "token":
            return "token"
        base = self.base(view)
        position = f"{offset} + {index}" if offset else index
        return f"{base}[{position}]"

    # -- operations

    def gemv(self, op: QGemv) -> list[str]:
        n, k = op.weight.shape
        w = self.const("int8_t", stored_order(op.weight), 1)
        b = self.const("int32_t", op.bias, 4)
        m = self.const("int32_t", op.multiplier, 4)
        s = self.const("uint8_t", op.shift, 1)
        x = f"{self.base(op.x.buffer)} + {op.x.offset}"
        out = self.at(op.out, "j")
        value = f"{out} + acc[j]" if op.accumulate else "acc[j]"
        return [
            f"q_product({x}, {k}, {w}, {b}, {m}, {s}, {n}, acc);",
            f"for (j = 0; j < {n}; j++)",
            f"    {out} = (int16_t)q_sat16({value});",
        ]

    def map(self, op: QMap) -> list[str]:
        out_shape = op.out.shape
        n = op.out.size
        flat = all(v.size in (n, 1) for v in op.inputs)
        if flat:
            loops = [f"for (i = 0; i < {n}; i++) {{"]
            out = self.at(op.out, "i")
            args = [self.at(v, "i" if v.size == n and n > 1 else "0") for v in op.inputs]
        else:
            rank = len(out_shape)
            loops = [f"for (i{d} = 0; i{d} < {out_shape[d]}; i{d}++)" for d in range(rank - 1)]
            loops.append(f"for (i{rank - 1} = 0; i{rank - 1} < {out_shape[rank - 1]}; i{rank - 1}++) {{")
            out_index = " + ".join(f"i{d} * {s}" for d, s in enumerate(contiguous_strides(out_shape)) if s)
            out = self.at(op.out, out_index or "0")
            args = []
            for v in op.inputs:
                strides = broadcast_strides(v.shape, out_shape)
                index = " + ".join(f"i{d} * {s}" for d, s in enumerate(strides) if s) or "0"
                args.append(self.at(v, index))
        names = "abc"[: len(args)]
        body = [f"    int32_t {v} = {a};" for v, a in zip(names, args, strict=True)]
        body.append(f"    {out} = (int16_t)({self.expression(op, list(names))});")
        return [*loops, *body, "}"]

    @staticmethod
    def _rq(value: str, rescale, wide: bool = False) -> str:
        """``value`` requantized: ``q_narrow`` (an int16 value), ``q_requantize`` with ``wide``."""
        if rescale is None:
            return value
        return f"{'q_requantize' if wide else 'q_narrow'}({value}, {rescale[0]}, {rescale[1]})"

    def expression(self, op: QMap, v: list[str]) -> str:
        rq = [self._rq(name, r) for name, r in zip(v, op.rescale, strict=True)]
        kind = op.op
        if kind in ("add", "sub"):
            return f"q_sat16({rq[0]} {'+' if kind == 'add' else '-'} {rq[1]})"
        if kind == "mul":
            return f"q_sat16({self._rq(f'{v[0]} * {v[1]}', op.rescale[0], wide=True)})"
        if kind in ("max", "min"):
            return f"q_sat16(q_{kind}({rq[0]}, {rq[1]}))"
        if kind in C_COMPARE:
            if "threshold" in op.params:
                return f"{v[0]} {C_COMPARE[kind]} {op.params['threshold']}"
            return f"{rq[0]} {C_COMPARE[kind]} {rq[1]}"
        if kind == "where":
            return f"q_sat16({v[0]} != 0 ? {rq[1]} : {rq[2]})"
        if kind == "and":
            return f"{v[0]} != 0 && {v[1]} != 0"
        if kind == "or":
            return f"{v[0]} != 0 || {v[1]} != 0"
        if kind == "not":
            return f"{v[0]} == 0"
        if kind == "relu":
            return f"{v[0]} > 0 ? {v[0]} : 0"
        if kind == "neg":
            return f"q_sat16(-{v[0]})"
        if kind == "abs":
            return f"q_sat16({v[0]} < 0 ? -{v[0]} : {v[0]})"
        if kind == "clip":
            low, high = op.params["low"], op.params["high"]
            return f"q_min(q_max({v[0]}, {low}), {high})"  # as numpy's clip, even where low > high
        if kind == "leaky_relu":
            return f"{v[0]} >= 0 ? {v[0]} : q_sat16({rq[0]})"
        if kind in ("sigmoid", "tanh"):
            return f"q_{kind}(q_sat16({rq[0]}))"
        return f"q_sat16({rq[0]})"

    def copy(self, op: QCopy) -> list[str]:
        rank = len(op.shape)
        if rank == 0:
            shape, src_strides, dst_strides = (1,), (0,), (0,)
        else:
            shape, src_strides, dst_strides = op.shape, op.src_strides, op.dst_strides
        loops = [f"for (i{d} = 0; i{d} < {shape[d]}; i{d}++)" for d in range(len(shape))]
        src = self.at(op.src, " + ".join(f"i{d} * {s}" for d, s in enumerate(src_strides)), op.src_offset)
        dst = self.at(op.dst, " + ".join(f"i{d} * {s}" for d, s in enumerate(dst_strides)), op.dst_offset)
        value = src if op.rescale is None else f"(int16_t)q_sat16({self._rq(src, op.rescale)})"
        return [" ".join(loops) + f" {dst} = {value};"]

    def indexed_copy(self, op: QIndexedCopy) -> list[str]:
        table = self.const("int32_t", op.indices, 4)
        count = op.indices.size
        src = self.at(op.x, f"(i0 * {op.rows} + {table}[i1]) * {op.inner} + i2")
        dst = self.at(op.out, f"(i0 * {count} + i1) * {op.inner} + i2")
        return [
            f"for (i0 = 0; i0 < {op.outer}; i0++) for (i1 = 0; i1 < {count}; i1++) "
            f"for (i2 = 0; i2 < {op.inner}; i2++) {dst} = {src};"
        ]

    def gather(self, op: QGather) -> list[str]:
        rows, width = op.table.shape
        table = self.const("int16_t", op.table, 2)
        return [
            f"for (j = 0; j < {width}; j++)",
            f"    {self.at(op.out, 'j')} = {table}[(long)token * {width} + j];",
        ]

    def layer_norm(self, op: QLayerNorm) -> list[str]:
        gamma = self.const("int16_t", op.gamma, 2)
        beta = self.const("int32_t", op.beta, 4)
        rows = op.out.size // op.size
        x, out = f"{self.base(op.x.buffer)} + {op.x.offset}", f"{self.base(op.out.buffer)} + {op.out.offset}"
        return [
            f"for (j = 0; j < {rows}; j++)",
            f"    q_layer_norm({x} + j * {op.size}, {out} + j * {op.size}, {op.size}, {gamma}, {beta}, "
            f"(int64_t){op.eps}LL, {op.multiplier}, {op.shift});",
        ]

    def softmax(self, op: QSoftmax) -> list[str]:
        rows = op.out.size // op.size
        x, out = f"{self.base(op.x.buffer)} + {op.x.offset}", f"{self.base(op.out.buffer)} + {op.out.offset}"
        return [
            f"for (j = 0; j < {rows}; j++)",
            f"    q_softmax({x} + j * {op.size}, {out} + j * {op.size}, {op.size}, {op.multiplier}, {op.shift});",
        ]

    def body(self) -> tuple[list[str], int]:
        program = self.program
        self.offsets, arena_values = place_arena(program)
        widest = max([op.weight.shape[0] for op in program.ops if isinstance(op, QGemv)], default=1)
        rank = max([len(op.out.shape) for op in program.ops if isinstance(op, QMap)], default=1)
        rank = max([rank, 3, *(len(op.shape) for op in program.ops if isinstance(op, QCopy))])
        lines = [f"int16_t arena[{max(1, arena_values)}]; /* every scratch buffer, placed by lifetime */"]
        lines += [f"int32_t acc[{widest}];", "int i, j;", " ".join(f"int i{d};" for d in range(rank))]
        lines.append("(void)i, (void)j, (void)acc;")
        lines.append(" ".join(f"(void)i{d};" for d in range(rank)))
        for op in program.ops:
            if isinstance(op, QGemv):
                lines += self.gemv(op)
            elif isinstance(op, QMap):
                lines += self.map(op)
            elif isinstance(op, QCopy):
                lines += self.copy(op)
            elif isinstance(op, QIndexedCopy):
                lines += self.indexed_copy(op)
            elif isinstance(op, QGather):
                lines += self.gather(op)
            elif isinstance(op, QLayerNorm):
                lines += self.layer_norm(op)
            elif isinstance(op, QLogMel):
                frame = f"({self.base(op.x.buffer)} + {op.x.offset})"
                out = f"({self.base(op.out.buffer)} + {op.out.offset})"
                block, stack = log_mel_lines(op, self.const, frame, out, self.n)
                lines += block
                self.front_end_bytes = max(self.front_end_bytes, stack)
            else:
                lines += self.softmax(op)
        lines.append("/* the next state, at the state's scale */")
        for (index, view), rescale in zip(program.states, program.state_rescale, strict=True):
            value = self.at(view, "j")
            if rescale is not None:
                value = f"(int16_t)q_sat16({self._rq(value, rescale)})"
            lines += [f"for (j = 0; j < {view.size}; j++)", f"    {self.at(index, 'j')} = {value};"]
        lines += [f"for (j = 0; j < {program.y.size}; j++)", f"    y[j] = {self.at(program.y, 'j')};"]
        scratch = 2 * max(1, arena_values) + 4 * widest + self.front_end_bytes
        return lines, scratch


def program_sources(
    program: IntegerProgram, info: ModelInfo, name: str, quality: dict | None = None
) -> IntegerSources:
    """NAME.h and NAME.c of ``program`` (whose metadata is ``info``; ``quality``: the gates' summary)."""
    check_strings(info)
    N = name.upper()
    writer = _Writer(program, name)
    body, scratch = writer.body()
    uses = {type(op).__name__ for op in program.ops}
    tables = (
        2 * (ops.TABLE_INTERVALS + 1) * 2
        + 2 * (integer_layers.EXP_INTERVALS + 1) * int("QSoftmax" in uses)
        + 4 * (LOG_INTERVALS + 1) * int("QLogMel" in uses)
    )
    src = kernels("gru")
    src += [
        "static int32_t q_max(int32_t a, int32_t b)",
        "{",
        "    return a > b ? a : b;",
        "}",
        "",
        "static int32_t q_min(int32_t a, int32_t b)",
        "{",
        "    return a < b ? a : b;",
        "}",
        "",
    ]
    src += NARROW_KERNEL
    if "QLayerNorm" in uses:
        src += LAYER_KERNELS + NORM_KERNELS
    if "QSoftmax" in uses:
        src += softmax_kernels()
    if "QLogMel" in uses:
        src += LOG2_KERNEL
    state = []
    for state_name, (index, _) in zip(program.state_names, program.states, strict=True):
        buffer = program.buffers[index]
        state.append(
            f"#define {N}_STATE_{state_name.upper()}_OFFSET {buffer.base} /* {state_name}: {buffer.size} int16, "
            f"value = s * {literal(buffer.scale)} */"
        )
    parts = IntegerParts(
        title=f"a bring-your-own {info.cell} model",
        description=DESCRIPTION,
        defines=([], state),
        arrays=writer.arrays,
        array_bytes=writer.flash,
        table_bytes=tables,
        kernels=(src, []),
        body=[
            "(void)q_sigmoid, (void)q_tanh, (void)q_round_shift, (void)q_max, (void)q_min, (void)q_narrow;",
            *body,
        ],
        scratch_bytes=scratch,
        state_values=program.state_values,
    )
    return assemble(program, info, name, quality, parts)
