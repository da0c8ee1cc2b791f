"""What every matrix product shares in C: its opening (a block over the input vector ``v``) and the
input-major float loop, ``out[j] += x[i] * W[i][j]`` over contiguous rows of W, which has no reduction in
its inner loop, so gcc and clang vectorise it at -O2/-O3 without -ffast-math."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgernn.export.c.ir import Gemv

if TYPE_CHECKING:
    from edgernn.export.c.emitter import Emitter

AXPY_INPUTS = 4  # rows of a matrix each pass over the output adds in


def opening(e: Emitter, op: Gemv) -> list[str]:
    """The block's first lines: what it computes, and ``v``, its input."""
    k, n = op.weight.shape
    return [
        f"{{ /* {op.out.name}: {k} -> {n}{', added' if op.accumulate else ''} */",
        f"    const float *restrict v = {e.ptr(op.x)};",
    ]


def axpy(k: int, n: int, out: str) -> list[str]:
    """``out[j] += sum_i v[i] * w[i][j]``, AXPY_INPUTS rows of w per pass over out (fewer loads and
    stores of out per product; the inner loop over j has no reduction in it and vectorises)."""
    lines = []
    group = AXPY_INPUTS
    whole = k // group * group
    if whole:
        lines.append(f"    for (int i = 0; i < {whole}; i += {group}) {{")
        for g in range(group):
            lines.append(f"        const float x{g} = v[i + {g}];")
            lines.append(f"        const float *restrict w{g} = w + (i + {g}) * {n};")
        terms = " + ".join(f"x{g} * w{g}[j]" for g in range(group))
        lines.append(f"        for (int j = 0; j < {n}; j++) {out}[j] += {terms};")
        lines.append("    }")
    rest = k - whole
    if rest:
        lines.append("    {")
        for g in range(rest):
            lines.append(f"        const float x{g} = v[{whole + g}];")
            lines.append(f"        const float *restrict w{g} = w + {(whole + g) * n};")
        terms = " + ".join(f"x{g} * w{g}[j]" for g in range(rest))
        lines.append(f"        for (int j = 0; j < {n}; j++) {out}[j] += {terms};")
        lines.append("    }")
    return lines
