"""Element-wise runs in one loop on scalar cores: consecutive element-wise operations (a GRU's gate
arithmetic, the state's denormal flush) written as one loop over the elements, each operation's
statement in order in its body, where the cores have no vector unit that gcc vectorises the separate
loops with (``NAME_FUSED``: Cortex-M without Helium, RISC-V without V). Each value is then loaded and
stored once a run instead of once an operation, and the loops' own counting is paid once.

Same values, bit for bit: a run is fused only where two of its statements that touch the same element
of the step's buffers (``t``, the state, x) touch it at the same index of the loop (after the buffers'
placement in the scratch array), so that every element sees its operations in the order they were
written; an operation over k times the run's length is written as k statements over consecutive parts
(a GRU's r and z gates after one sigmoid over both). Before that, an element-wise operation moves up
past operations of other kinds that touch none of the elements it reads or writes (the state's flush
past the head's product), next to the run before it. Marks stay where they are. Vector CPUs keep one
loop per operation, in the order found here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgernn.export.c.arena import reads, writes
from edgernn.export.c.ir import Copy, Elementwise, Gemv, Mark, Storage, Tensor

if TYPE_CHECKING:
    from edgernn.export.c.emitter import Emitter

MIN_LENGTH = 2  # elements: shorter operations stay as they are


def condition(name: str) -> list[str]:
    """``NAME_FUSED``: defined on cores without a vector unit gcc vectorises element-wise loops with."""
    upper = name.upper()
    return [
        "/* scalar cores: each run of element-wise operations in one loop (every value loaded and stored",
        " * once a run); vector CPUs: one loop per operation, which gcc vectorises; the same values */",
        "#if !defined(__SSE2__) && !defined(__ARM_NEON) && !defined(__ARM_FEATURE_MVE) && "
        f"!defined(__riscv_vector) && !defined(__ALTIVEC__) && !defined(__wasm_simd128__) && !defined({upper}_UNFUSED)",
        f"#define {upper}_FUSED 1",
        "#endif",
        "",
    ]


Region = tuple[str, int, int]  # (space, first element, length)


def _space(e: Emitter, s: Storage) -> tuple[str, int] | None:
    """The buffer a storage lives in and where it starts there; None for constants (never written)."""
    if s.kind == "arena":
        return "t", e.arena.start(s)
    if s.kind == "state":
        return "st", s.base
    if s.kind in ("x", "token"):
        return s.kind, 0
    return None


def _tensor_region(e: Emitter, t: Tensor, offset: int = 0, length: int | None = None) -> Region | None:
    where = _space(e, t.storage)
    if where is None:
        return None
    return where[0], where[1] + t.offset + offset, t.size if length is None else length


def _storage_regions(e: Emitter, storages: list[Storage]) -> list[Region]:
    found = []
    for s in storages:
        where = _space(e, s)
        if where is not None:
            found.append((where[0], where[1], s.size))
    return found


def _op_regions(e: Emitter, op) -> tuple[list[Region], list[Region]]:
    """(read, written) regions of any operation: exact for the tensors that have one, else the whole
    buffer."""
    if isinstance(op, Elementwise):
        read = [r for t in op.inputs if (r := _tensor_region(e, t)) is not None]
        out = _tensor_region(e, op.out)
        return read, [out] if out is not None else []
    if isinstance(op, Gemv):
        read = [r for r in (_tensor_region(e, op.x),) if r is not None]
        out = _tensor_region(e, op.out)
        if op.accumulate and out is not None:
            read.append(out)
        return read, [out] if out is not None else []
    if isinstance(op, Copy):
        return _storage_regions(e, [op.src]), _storage_regions(e, [op.dst])
    return _storage_regions(e, reads(op)), _storage_regions(e, writes(op))


def _overlap(a: Region, b: Region) -> bool:
    return a[0] == b[0] and a[1] < b[1] + b[2] and b[1] < a[1] + a[2]


def _commute(e: Emitter, first, second) -> bool:
    """Whether two operations touch no element that either writes (their order then changes nothing)."""
    r1, w1 = _op_regions(e, first)
    r2, w2 = _op_regions(e, second)
    return not any(_overlap(a, b) for a in w1 for b in (*r2, *w2)) and not any(
        _overlap(a, b) for a in r1 for b in w2
    )


def fusable(op) -> bool:
    if not isinstance(op, Elementwise) or op.out.size < MIN_LENGTH:
        return False
    return all(t.size in (op.out.size, 1) for t in op.inputs)


@dataclass
class Piece:
    """Part ``part`` (of ``op.out.size // length``) of an element-wise operation: its elements
    ``part * length`` .. ``(part + 1) * length``."""

    op: Elementwise
    part: int
    length: int

    def regions(self, e: Emitter) -> tuple[list[Region], list[Region]]:
        at = self.part * self.length
        read = []
        for t in self.op.inputs:
            region = (
                _tensor_region(e, t, at, self.length) if t.size == self.op.out.size else _tensor_region(e, t)
            )
            if region is not None:
                read.append(region)
        out = _tensor_region(e, self.op.out, at, self.length)
        return read, [out] if out is not None else []


def _pieces(op: Elementwise, length: int) -> list[Piece]:
    return [Piece(op, k, length) for k in range(op.out.size // length)]


def _consistent(e: Emitter, pieces: list[Piece]) -> bool:
    """Every two statements of one loop body that touch a common element touch it at the same index."""
    touched = [p.regions(e) for p in pieces]
    for i, (r1, w1) in enumerate(touched):
        for r2, w2 in touched[i + 1 :]:
            pairs = [(a, b) for a in w1 for b in (*r2, *w2)] + [(a, b) for a in r1 for b in w2]
            for a, b in pairs:
                if _overlap(a, b) and a != b:
                    return False
    return True


def reorder(e: Emitter, order: list[int], barrier: set[int]) -> list[int]:
    """``order`` (indices into e.p.ops) with each fusable element-wise operation moved up past the
    operations of other kinds before it that it commutes with, to just after an element-wise one; never
    past a ``barrier`` index or a Mark."""
    ops = e.p.ops
    result: list[int] = []
    for index in order:
        op = ops[index]
        if fusable(op) and index not in barrier:
            at = len(result)
            while at > 0:
                before = ops[result[at - 1]]
                if fusable(before) or isinstance(before, Mark) or result[at - 1] in barrier:
                    break
                if not _commute(e, before, op):
                    break
                at -= 1
            if at < len(result) and at > 0 and fusable(ops[result[at - 1]]):
                result.insert(at, index)
                continue
        result.append(index)
    return result


def runs(
    e: Emitter, order: list[int], barrier: set[int]
) -> list[list[int] | tuple[int, list[Piece], list[int]]]:
    """``order`` cut into single operations ([its index]) and fused runs of two operations or more
    (the run's length, its pieces in statement order, its operations' indices)."""
    ops = e.p.ops
    out: list = []
    group: list[int] = []

    def close() -> None:
        if len(group) >= 2:
            length = min(ops[i].out.size for i in group)
            out.append((length, [p for i in group for p in _pieces(ops[i], length)], list(group)))
        else:
            out.extend([i] for i in group)
        group.clear()

    for index in order:
        op = ops[index]
        if not fusable(op) or index in barrier:
            close()
            out.append([index])
            continue
        if group:
            sizes = [ops[i].out.size for i in group] + [op.out.size]
            length = min(sizes)
            pieces = [p for i in [*group, index] for p in _pieces(ops[i], length)]
            if any(s % length for s in sizes) or not _consistent(e, pieces):
                close()
        group.append(index)
    close()
    return out


def _less(parts: list[tuple[int, int]], cut: Region, space: str) -> list[tuple[int, int]]:
    """The intervals ``parts`` (of ``space``) less the elements of ``cut``."""
    if cut[0] != space:
        return parts
    lo, hi = cut[1], cut[1] + cut[2]
    kept = []
    for a, b in parts:
        kept += [(x, y) for x, y in ((a, min(b, lo)), (max(a, hi), b)) if x < y]
    return kept


def read_after(e: Emitter, region: Region, later: list, finals: list[Tensor]) -> bool:
    """Whether an element of ``region`` is read after a run before something writes over it: by the
    ``later`` operations in order, or committed at the end (``finals``: y and the next states)."""
    space = region[0]
    parts = [(region[1], region[1] + region[2])]
    for op in later:
        read, written = _op_regions(e, op)
        if any(_overlap((space, a, b - a), r) for a, b in parts for r in read):
            return True
        if not isinstance(op, Elementwise | Gemv):  # whole buffers: what they write is only roughly known
            continue
        for w in written:
            parts = _less(parts, w, space)
        if not parts:
            return False
    ends = [r for t in finals if (r := _tensor_region(e, t)) is not None]
    return any(_overlap((space, a, b - a), r) for a, b in parts for r in ends)


def body(e: Emitter, pieces: list[Piece], live) -> list[str]:
    """The loop body at index ``i``: each piece's value in a local, read from there by the pieces after
    it; stored once, at the end, for the elements read after the run (the others are scratch)."""
    from edgernn.export.c.layers import expression

    lines, values, last = [], {}, {}
    for number, piece in enumerate(pieces):
        op, at = piece.op, piece.part * piece.length
        args = []
        for t in op.inputs:
            whole = t.size == op.out.size
            region = _tensor_region(e, t, at, piece.length) if whole else None
            if region in values:
                args.append(values[region])
            else:
                args.append(
                    e.ref(t.storage, t.offset + at, "i") if whole else e.ref(t.storage, t.offset, "0")
                )
        name = f"f{number}"
        lines.append(f"const float {name} = {expression(e, op, args)};")
        out = _tensor_region(e, op.out, at, piece.length)
        values[out] = name
        last[out] = (piece, name)
    for region, (piece, name) in last.items():
        if region is None or live(region):
            op, at = piece.op, piece.part * piece.length
            lines.append(f"{e.ref(op.out.storage, op.out.offset + at, 'i')} = {name};")
    return lines


def fused_loop(e: Emitter, length: int, pieces: list[Piece], separate: list[str], live) -> list[str]:
    """The run as one loop under ``NAME_FUSED``, else the ``separate`` loops; ``live(region)``: whether
    what the run writes there is read after it."""
    return [
        f"#if defined({e.NAME}_FUSED)",
        f"for (int i = 0; i < {length}; i++) {{ /* {len({id(p.op) for p in pieces})} element-wise operations */",
        *(f"    {line}" for line in body(e, pieces, live)),
        "}",
        "#else",
        *separate,
        "#endif",
    ]
