"""A product by a constant matrix that is mostly zeros (a mel filterbank: each spectrum bin feeds one or two
bands) as ``SparseGemv`` (``ir.py``): float32 in every precision, only the nonzero weights stored and
multiplied, row by row of the input-major matrix (``out[col] += x[i] * w`` over row i's nonzeros, the
columns in increasing order). Chosen when at most MAX_DENSITY of the matrix's values are nonzero; the
sums are the dense product's terms less its exact zeros (a nonzero times zero adds nothing, an inf or
NaN input aside, which the step refuses anyway)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edgernn.export.c.emitter import Emitter
    from edgernn.export.c.ir import SparseGemv

MAX_DENSITY = 0.125  # the largest share of nonzero values a matrix written sparse may have
MIN_VALUES = 1024  # smaller matrices stay dense (the index tables would cost more than they save)


def is_sparse(matrix: np.ndarray) -> bool:
    m = np.asarray(matrix)
    return m.ndim == 2 and m.size >= MIN_VALUES and np.count_nonzero(m) <= MAX_DENSITY * m.size


def emit(e: Emitter, op: SparseGemv) -> list[str]:
    k, n = op.weight.shape
    rows, cols = np.nonzero(op.weight)
    starts = np.searchsorted(rows, np.arange(k + 1)).astype(np.int32)
    index_type = "uint8_t" if n <= 256 else "int32_t"
    c = e.const_array(cols.astype(np.int32), index_type, "sc")
    w = e.const_array(op.weight[rows, cols].astype(np.float32), "float", "sw")
    s = e.const_array(starts, "int32_t", "ss")
    lines = [
        f"{{ /* {op.out.name}: {k} -> {n}, its {len(rows)} nonzero weights of {k * n} */",
        f"    const float *restrict v = {e.ptr(op.x)};",
        f"    float *restrict o = {e.ptr(op.out)};",
    ]
    if op.bias is not None:
        b = e.const_array(op.bias, "float", "b")
        lines.append(f"    for (int j = 0; j < {n}; j++) o[j] = {b}[j];")
    else:
        lines.append(f"    for (int j = 0; j < {n}; j++) o[j] = 0.0f;")
    lines += [
        f"    for (int i = 0; i < {k}; i++) {{",
        "        const float xi = v[i];",
        f"        for (int p = {s}[i]; p < {s}[i + 1]; p++) o[{c}[p]] += xi * {w}[p];",
        "    }",
        "}",
    ]
    return lines
