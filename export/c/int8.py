"""int8: every matrix and the embedding table as int8 with one float scale per output (per token); each
product's input quantized to int8 once per step (one scale per vector), the products integer dot products
summed in int32, scaled once per output. The weights are stored output-major and offset by 128 (uint8), so
that each dot product is unsigned-by-signed bytes, the form of x86's vpdpbusd that gcc vectorises to; the
offset's share, 128 times the input's sum, is taken off exactly in int32. Each product walks its rows
forward on one step and backward on the next (a bit in the state), so that rows read last stay in cache for
the next step when the weights are larger than the cache. Every rounding is recorded (``e.replaced``,
``e.quantized_inputs``) for the reference graph that checks the C.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edgernn.export.c import arm_dsp
from edgernn.export.c.activations import table_helpers, table_vector_helpers
from edgernn.export.c.arena import reads, writes
from edgernn.export.c.ir import Elementwise, GatherRow, Gemv, Storage, Tensor
from edgernn.export.c.products import opening
from edgernn.runtime.errors import ContractError

if TYPE_CHECKING:
    from edgernn.export.c.emitter import Emitter

ROWS_PER_DOT = 4  # outputs each pass over the quantized input computes


def quantize_rows(matrix: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per slice along ``axis`` (per output column of an input-major
    matrix, per token row of an embedding table): q in [-127, 127], value = q * scale."""
    m = np.asarray(matrix, dtype=np.float32)
    peak = np.abs(m).max(axis=1 - axis)
    scale = (peak / np.float32(127.0)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    shape = (1, -1) if axis == 1 else (-1, 1)
    q = np.clip(np.rint(m / safe.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def dequantize_rows(q: np.ndarray, scale: np.ndarray, axis: int) -> np.ndarray:
    shape = (1, -1) if axis == 1 else (-1, 1)
    return (q.astype(np.float32) * scale.reshape(shape)).astype(np.float32)


def schedule(e: Emitter) -> list[int]:
    """The products of a state alone get their own buffers; the indices of those that may run first."""
    _split_state_products(e)
    return _hoistable(e)


def declarations(e: Emitter) -> list[str]:
    """The table activations' helpers and the quantized input's type, where some product has one."""
    n = e.name
    lines = table_helpers(n, e.sigmoid_table) if e.sigmoid_table else []
    if not e.int8_scratch:
        return lines
    return [
        *lines,
        "/* the quantized inputs: int8 where the CPU has an unsigned-by-signed byte dot product (gcc emits",
        " * vpdpbusd), int16 elsewhere (pmaddwd on SSE2/AVX2, vpdpwssd); the same sums either way */",
        "#if defined(__AVX512VNNI__) || defined(__AVXVNNI__)",
        f"typedef int8_t {n}_xq;",
        "#else",
        f"typedef int16_t {n}_xq;",
        "#endif",
        "",
        *arm_dsp.declarations(n),
        *arm_dsp.xq_typedef(n),
        *(table_vector_helpers(n, e.sigmoid_table) if e.sigmoid_table else []),
    ]


def _split_state_products(e: Emitter) -> None:
    """A product of a state alone that adds into another product's output (a layer's hidden-to-hidden
    product added to its input-to-hidden one) writes its own buffer instead, added after: it can then
    run first (``hoistable``), and both orders compute the same bits."""
    ops = []
    for op in e.p.ops:
        if isinstance(op, Gemv) and op.accumulate and op.x.storage.kind == "state" and op.bias is None:
            alone = Tensor(f"{op.out.name}_state", op.out.shape, "f", Storage("arena", op.out.size))
            ops.append(Gemv(alone, op.x, op.weight, None, False, op.source, op.x_name))
            ops.append(Elementwise(op.out, "Add", [op.out, alone]))
        else:
            ops.append(op)
    e.p.ops = ops


def _hoistable(e: Emitter) -> list[int]:
    """The indices of the products of a state alone (each layer's hidden-to-hidden product): nothing
    computed in the step feeds them, so they may run first. int8 steps run them first, last layer
    first, on the steps that walk their rows backward: the weights read at the end of one step are
    then the first read by the next, which keeps about half of them in a cache too small for all."""
    if any(s.kind == "state" for op in e.p.ops for s in writes(op)):
        return []
    found, touched = [], set()
    for index, op in enumerate(e.p.ops):
        if (
            isinstance(op, Gemv)
            and not op.accumulate
            and op.x.storage.kind == "state"
            and op.out.storage.kind == "arena"
            and id(op.out.storage) not in touched
        ):
            found.append(index)
        touched.update(id(s) for s in (*writes(op), *reads(op)))
    return found


def _scalar_loop(e: Emitter, k: int, statement) -> list[str]:
    """The loop over v's elements from ``from`` (0 but on Helium) of ``statement(i)``; on scalar cores
    (``NAME_FUSED``), where 4 divides k, four statements a pass: a quarter of the loop's compare and
    branch, the same operations in the same order."""
    plain = f"    for (int i = from; i < {k}; i++) {{ {statement('i')} }}"
    if k % 4 or k < 8:
        return [plain]
    four = " ".join(statement(f"i + {g}" if g else "i") for g in range(4))
    return [
        f"#if defined({e.NAME}_FUSED) /* four a pass */",
        f"    for (int i = from; i < {k}; i += 4) {{ {four} }}",
        "#else",
        plain,
        "#endif",
    ]


def gemv(e: Emitter, op: Gemv) -> list[str]:
    """int8 x int8 in int32: x quantized once (symmetric, one scale from its max |x|, rounded half to
    even as onnx Round), the weights stored output-major and offset by 128 (uint8), so that each output
    is a contiguous unsigned-by-signed byte dot product (gcc: vpdpbusd with AVX512-VNNI / AVX-VNNI,
    pmaddwd elsewhere); 128 times the sum of x is taken off in int32, which leaves exactly the int8
    product. Then it is scaled by the output's scale times x's and the float bias added. The rows are
    walked forward or backward as the state's pass bit says (the same sums either way)."""
    k, n = op.weight.shape
    lines = opening(e, op)
    q, scale = quantize_rows(op.weight, axis=1)
    if op.source is None:
        raise ContractError(
            f"int8: the matrix of {op.out.name!r} is computed in the graph rather than stored, so no "
            "reference graph with its int8 rounding can check the C; deploy this file as float32"
        )
    if op.x_name is None:
        raise ContractError(f"int8: the input of {op.out.name!r} has no name in the graph")
    _record(e, op.source, q, scale)
    e.quantized_inputs.append((op.x_name, op.source[0]))
    e.helpers.add("bits")
    e.int8_scratch = max(e.int8_scratch, 2 * k)  # int16 where the bytes have no dot product
    offset = (np.ascontiguousarray(q.T).astype(np.int16) + 128).astype(np.uint8)
    rows = ROWS_PER_DOT
    whole = n // rows * rows
    terms = arm_dsp.mve_row_terms(offset)
    w, c = arm_dsp.layout_arrays(e, offset, arm_dsp.dsp_padded(offset), terms)
    s = e.const_array(scale, "float", "s")
    b = e.const_array(op.bias, "float", "b") if op.bias is not None else None
    bits = f"{e.name}_bits"
    bias = f"{e.name.upper()}_XQ_BIAS"
    lines += [
        f"    float *restrict o = {e.ptr(op.out)};",
        f"    const uint8_t *restrict w = {w}; /* output-major: row j is output j's {k} weights + 128 */",
        f"    {arm_dsp.xq_type(e.name)} xq[{k}];",
        "    uint32_t top = 0;",
        *arm_dsp.vector_max(e.name, k),
        *_scalar_loop(
            e, k, lambda i: f"{{ {bits} a; a.f = v[{i}]; a.u &= 0x7FFFFFFFu; top = a.u > top ? a.u : top; }}"
        ),
        f"    {bits} m; m.u = top; /* max |v|: NaN stays NaN */",
        "    const float peak = m.f < 1e-30f ? 1e-30f : m.f;",
        "    const float inv = 127.0f / peak, vs = peak / 127.0f;",
        "    int32_t xsum = 0;",
        *arm_dsp.vector_quantize(e.name, k),
        "    /* round half to even: 1.5 * 2^23 + q, q in [-127, 127] sign-extended from the low byte */",
        *_scalar_loop(
            e,
            k,
            lambda i: (
                f"{{ {bits} r; r.f = v[{i}] * inv + 12582912.0f; "
                "const int32_t qi = (int32_t)((r.u & 0xFFu) ^ 0x80u) - 128; "
                f"xq[{i}] = ({arm_dsp.xq_type(e.name)})(qi + {bias}); xsum += qi; }}"
            ),
        ),
        "    const int32_t offset = 128 * xsum; /* the weights' +128 times x */",
        f"#if defined({e.NAME}_ARM_MVE)",
        f"    const int32_t *restrict c = {c}; /* each row's constant share of the Helium sums */",
        "#endif",
    ]

    def store(g: int, acc: str) -> str:
        value = f"(sj[{g}] * vs) * (float){acc}"
        if op.accumulate:
            return f"oj[{g}] += {value};"
        if b is not None:
            return f"oj[{g}] = {value} + bj[{g}];"
        return f"oj[{g}] = {value};"

    def row_pointers(index: str) -> list[str]:
        return [
            f"        const float *restrict sj = {s} + {index};",
            *([f"        const float *restrict bj = {b} + {index};"] if b is not None else []),
            f"        float *restrict oj = o + {index};",
        ]

    if whole or n >= 2 * arm_dsp.DSP_PAIRS:
        e.serpentine = True
    lines += [
        f"#if defined({e.NAME}_ARM_DSP) /* pairs of rows interleaved: DSP_PAIRS pairs a pass, then one */",
        *arm_dsp.dsp_products(e.name, k, n, store, row_pointers),
        "#else",
    ]
    if whole:  # ROWS_PER_DOT outputs per pass over xq: fewer loads of xq, fewer horizontal sums
        accs = [f"a{g}" for g in range(rows)]
        lines += [
            f"    for (int jj = 0; jj < {whole}; jj += {rows}) {{",
            f"        const int j = back ? {whole - rows} - jj : jj;",
            f"        const uint8_t *restrict r = w + j * {k};",
            *arm_dsp.rows_dot(
                e.name,
                k,
                rows,
                f"        int32_t {', '.join(f'{a} = -offset' for a in accs)}; /* the weights' +128 taken off */",
                [
                    f"        for (int i = 0; i < {k}; i++) {{",
                    "            const int32_t x = xq[i];",
                    *(f"            {a} += (int32_t)r[{g * k} + i] * x;" for g, a in enumerate(accs)),
                    "        }",
                ],
                [*row_pointers("j"), *(f"        {store(g, a)}" for g, a in enumerate(accs))],
                arm_dsp.vector_store(rows, s, b, op.accumulate),
                dsp=False,
            ),
            "    }",
        ]
    if n - whole:
        lines += [
            f"    for (int j = {whole}; j < {n}; j++) {{",
            f"        const uint8_t *restrict r = w + j * {k};",
            *arm_dsp.row_dot(
                e.name,
                k,
                "        int32_t acc = -offset;",
                f"        for (int i = 0; i < {k}; i++) acc += (int32_t)r[i] * ((int32_t)xq[i] - {bias});",
            ),
            *row_pointers("j"),
            f"        {store(0, 'acc')}",
            "    }",
        ]
    lines += ["#endif", "}"]
    return lines


def _record(e: Emitter, source: tuple[str, str], q: np.ndarray, scale: np.ndarray) -> None:
    name, kind = source
    value = dequantize_rows(q, scale, axis=1)
    if kind == "gemm_t":
        value = value.T
    elif kind != "matmul":
        raise ContractError(
            f"int8: weight {name!r} is scaled inside the graph (Gemm alpha); no float reference"
        )
    value = np.ascontiguousarray(value)
    if name in e.replaced and not np.array_equal(e.replaced[name], value):
        raise ContractError(f"int8: weight {name!r} is used by two products with different layouts")
    e.replaced[name] = value


def gather(e: Emitter, op: GatherRow) -> list[str]:
    """The embedding row of the token: int8 times the token's scale (checked against the table's rows
    before the step)."""
    width = op.table.shape[1]
    out = e.ptr(op.out)
    q, scale = quantize_rows(op.table, axis=0)
    if op.source is None:
        raise ContractError(
            f"int8: the table of {op.out.name!r} is computed in the graph rather than stored; deploy "
            "this file as float32"
        )
    value = dequantize_rows(q, scale, axis=0)
    if op.source in e.replaced and not np.array_equal(e.replaced[op.source], value):
        raise ContractError(f"int8: table {op.source!r} is used in two layouts")
    e.replaced[op.source] = value
    table = e.const_array(q, "int8_t", "e")
    s = e.const_array(scale, "float", "s")
    return [
        f"{{ const int8_t *restrict row = {table} + (long)token * {width}; float *restrict o = {out};",
        f"  for (int j = 0; j < {width}; j++) o[j] = {s}[token] * (float)row[j]; }}",
    ]
