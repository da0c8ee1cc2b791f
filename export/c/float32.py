"""float32: the graph's own weights, as ``static const float`` arrays; products input-major."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgernn.export.c.ir import GatherRow, Gemv
from edgernn.export.c.products import axpy, opening

if TYPE_CHECKING:
    from edgernn.export.c.emitter import Emitter


def schedule(e: Emitter) -> list[int]:
    """The ops to run first (none: a float32 step runs in graph order)."""
    return []


def declarations(e: Emitter) -> list[str]:
    """Types the products need before the step (none)."""
    return []


def gemv(e: Emitter, op: Gemv) -> list[str]:
    k, n = op.weight.shape
    lines = opening(e, op)
    w = e.const_array(op.weight, "float", "w")
    lines.append(f"    float *restrict o = {e.ptr(op.out)};")
    lines.append(f"    const float *restrict w = {w};")
    if op.bias is not None:
        b = e.const_array(op.bias, "float", "b")
        lines.append(f"    for (int j = 0; j < {n}; j++) o[j] = {b}[j];")
    elif not op.accumulate:
        lines.append(f"    for (int j = 0; j < {n}; j++) o[j] = 0.0f;")
    lines += axpy(k, n, "o")
    lines.append("}")
    return lines


def gather(e: Emitter, op: GatherRow) -> list[str]:
    """The embedding row of the token (checked against the table's rows before the step)."""
    width = op.table.shape[1]
    table = e.const_array(op.table, "float", "e")
    return [
        f"{{ const float *restrict row = {table} + (long)token * {width}; float *restrict o = {e.ptr(op.out)};",
        f"  for (int j = 0; j < {width}; j++) o[j] = row[j]; }}",
    ]
