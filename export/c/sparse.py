"""A product by a constant matrix that is mostly zeros (a mel filterbank: each spectrum bin feeds one or two
bands) as ``SparseGemv`` (``ir.py``): float32 in every precision, only the nonzero weights stored and
multiplied, each output's as runs of consecutive inputs, one dot product a run (a mel band: one run in the
real parts, one in the imaginary parts). Chosen when at most MAX_DENSITY of the matrix's values are nonzero; the
sums are the dense product's terms less its exact zeros, in another order (a finite input times zero adds
nothing; an inf or NaN input makes the step fail either way)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edgernn.export.c.emitter import Emitter
    from edgernn.export.c.ir import SparseGemv

MAX_DENSITY = 0.125  # the largest share of nonzero values a matrix written sparse may have
MIN_VALUES = 1024  # smaller matrices stay dense (the index tables would cost more than they save)
UNROLLED_VALUES = 512  # nonzeros up to which each run is written out (a mel filterbank: a few hundred)


def is_sparse(matrix: np.ndarray) -> bool:
    m = np.asarray(matrix)
    return m.ndim == 2 and m.size >= MIN_VALUES and np.count_nonzero(m) <= MAX_DENSITY * m.size


def runs(matrix: np.ndarray) -> list[tuple[int, int, int]]:
    """The nonzeros of each column as runs of consecutive rows: (column, first row, length), column by
    column (a mel band's filter is one run in the real parts' rows and one in the imaginary parts')."""
    found = []
    for column in range(matrix.shape[1]):
        rows = np.flatnonzero(matrix[:, column])
        if not rows.size:
            continue
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for run in np.split(rows, breaks):
            found.append((column, int(run[0]), len(run)))
    return found


def emit(e: Emitter, op: SparseGemv) -> list[str]:
    """Each run a dot product of contiguous inputs and weights (no index per weight), added to its
    output: written out term by term up to UNROLLED_VALUES nonzeros, else a loop over a table of the
    runs; the same sums in the same order either way."""
    k, n = op.weight.shape
    found = runs(op.weight)
    weights = np.concatenate(
        [op.weight[first : first + length, column] for column, first, length in found]
        or [np.zeros(1, np.float32)]
    ).astype(np.float32)
    w = e.const_array(weights, "float", "sw")
    lines = [
        f"{{ /* {op.out.name}: {k} -> {n}, its {int(np.count_nonzero(op.weight))} nonzero weights of {k * n} "
        f"in {len(found)} runs of consecutive inputs */",
        f"    const float *restrict v = {e.ptr(op.x)};",
        f"    float *restrict o = {e.ptr(op.out)};",
        f"    const float *restrict w = {w};",
    ]
    b = e.const_array(op.bias, "float", "b") if op.bias is not None else None
    if weights.size <= UNROLLED_VALUES:  # each run written out: no index table, no loop
        at, started = 0, set()
        for column, first, length in found:
            terms = [f"acc += v[{first + i}] * w[{at + i}];" for i in range(length)]
            start = f"o[{column}] +" if column in started else (f"{b}[{column}] +" if b else "0.0f +")
            lines.append("    { float acc = 0.0f;")
            lines += ["      " + " ".join(terms[i : i + 4]) for i in range(0, length, 4)]
            lines.append(f"      o[{column}] = {start} acc; }}")
            started.add(column)
            at += length
        for column in sorted(set(range(n)) - started):
            lines.append(f"    o[{column}] = {f'{b}[{column}]' if b else '0.0f'};")
        return [*lines, "}"]
    if b is not None:
        lines.append(f"    for (int j = 0; j < {n}; j++) o[j] = {b}[j];")
    else:
        lines.append(f"    for (int j = 0; j < {n}; j++) o[j] = 0.0f;")
    table = np.array([[column, first, length] for column, first, length in found] or [[0, 0, 0]], np.int32)
    r = e.const_array(table.reshape(-1), "int32_t", "sr")
    lines += [
        f"    for (int q = 0; q < {3 * len(found)}; q += 3) {{ /* (output, first input, length) */",
        f"        const float *restrict x = v + {r}[q + 1];",
        f"        const int length = {r}[q + 2];",
        "        float acc = 0.0f;",
        "        for (int i = 0; i < length; i++) acc += x[i] * w[i];",
        f"        o[{r}[q]] += acc;",
        "        w += length;",
        "    }",
        "}",
    ]
    return lines
