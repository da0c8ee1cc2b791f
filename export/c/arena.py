"""Scratch placement: every buffer a step computes lives in one array on the stack, placed by lifetimes so
that buffers no longer read are reused, and an element-wise op writes over its input where nothing reads
that input afterwards."""

from __future__ import annotations

from collections.abc import Sequence

from edgernn.export.c.ir import Copy, Elementwise, GatherRow, Gemv, Mark, Operation, Storage
from edgernn.runtime.errors import ContractError

ALIGN = 8  # floats (32 bytes): every scratch tensor starts on a 256-bit vector boundary


def writes(op: Operation) -> list[Storage]:
    if isinstance(op, Copy):
        return [op.dst]
    if isinstance(op, Mark):
        return []
    return [op.out.storage]


def reads(op: Operation) -> list[Storage]:
    if isinstance(op, Copy):
        return [op.src]
    if isinstance(op, Gemv):
        extra = [op.out.storage] if op.accumulate else []
        return [op.x.storage, *extra]
    if isinstance(op, GatherRow | Mark):
        return []
    if isinstance(op, Elementwise):
        return [t.storage for t in op.inputs]
    return [op.x.storage]


class Arena:
    """Where each scratch storage starts (in floats) in the step's array ``t``, and its ``size``."""

    def __init__(self) -> None:
        self.base: dict[int, int] = {}
        self.alias: dict[int, tuple[int, int]] = {}  # id(storage) -> (id(the storage it lives in), offset)
        self.size = 0

    def start(self, s: Storage) -> int:
        """The first element of arena storage ``s`` in ``t``."""
        root, offset = self._root(id(s))
        return self.base[root] + offset

    def plan(
        self, ops: Sequence[Operation], extra_live: list[Storage], born_first: list[Storage] = ()
    ) -> None:
        """Place every scratch storage so that no two alive at the same op overlap; ``born_first``
        storages are alive from the first op (their op may run first)."""
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        storages: dict[int, Storage] = {}
        end = len(ops)
        for index, op in enumerate(ops):
            for s in writes(op):
                if s.kind == "arena":
                    storages[id(s)] = s
                    first.setdefault(id(s), index)
                    last[id(s)] = max(last.get(id(s), index), index)
            for s in reads(op):
                if s.kind == "arena":
                    if id(s) not in first:
                        raise ContractError("internal: a scratch buffer is read before it is written")
                    last[id(s)] = index
        for s in extra_live:
            if s.kind == "arena" and id(s) in first:
                last[id(s)] = end
        for s in born_first:
            first[id(s)] = 0
        self._in_place(ops, first, last, storages)
        placed: list[tuple[int, int, int, int]] = []  # (first, last, start, stop)
        for key in sorted(storages, key=lambda k: (first[k], -storages[k].size)):
            s = storages[key]
            size = -(-s.size // ALIGN) * ALIGN
            busy = sorted((lo, hi) for f, end_, lo, hi in placed if f <= last[key] and first[key] <= end_)
            start = 0
            for b_start, b_stop in busy:
                if start + size <= b_start:
                    break
                start = max(start, b_stop)
            placed.append((first[key], last[key], start, start + size))
            self.base[key] = start
        self.size = max([stop for *_, stop in placed], default=0)

    def _root(self, key: int) -> tuple[int, int]:
        return self.alias.get(key, (key, 0))

    def _in_place(
        self,
        ops: Sequence[Operation],
        first: dict[int, int],
        last: dict[int, int],
        storages: dict[int, Storage],
    ) -> None:
        """An element-wise op writes over an input it reads at the same index when nothing reads that
        input's buffer after it (a gate's sigmoid over the GEMV that made it): less scratch RAM."""
        for index, op in enumerate(ops):
            if not isinstance(op, Elementwise) or op.out.storage.kind != "arena" or op.out.offset:
                continue
            out_key = id(op.out.storage)
            if out_key not in storages or first[out_key] != index:
                continue
            for t in op.inputs:
                if t.storage.kind != "arena" or t.size != op.out.size:
                    continue
                root, offset = self._root(id(t.storage))
                if last[root] != index:
                    continue
                start = offset + t.offset
                clash = False
                for u in op.inputs:
                    if u is t or u.storage.kind != "arena":
                        continue
                    u_root, u_offset = self._root(id(u.storage))
                    u_start = u_offset + u.offset
                    same = u_start == start and u.size == t.size
                    if u_root == root and not same and u_start < start + t.size and start < u_start + u.size:
                        clash = True
                if clash:
                    continue
                self.alias[out_key] = (root, start)
                last[root] = max(last[root], last[out_key])
                del storages[out_key]
                break
