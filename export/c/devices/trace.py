"""Exact instruction counts from QEMU's execution log, streamed through a FIFO.

QEMU 7.2 has no TCG plugins in Debian, but ``-d in_asm,exec,nochain`` logs every translation block (a
basic block: its guest instructions, once, when translated) and every execution of one (``nochain``:
each execution logged, none chained past the log). Summing the translated length of each executed block
gives the exact number of instructions executed, and the per-block execution counts that the cycle
estimate weighs (``cycles.py``). A step is counted between two non-inlined marker functions called
around it: from the first block after ``edgernn_step_begin`` returns to the call of ``edgernn_step_end``
(the step's call and its argument set-up included), less the count of an empty marker pair. A step built
with its marks (``export.c.marks``: a keyword model's front end between ``edgernn_front_end_begin`` and
``edgernn_front_end_end``) also gives the instructions between the two marks, and how often each block ran
between them; the marks' own function bodies are not counted (their calls are, in the step).
"""

from __future__ import annotations

import os
import select
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgernn.export.c.devices.build import Build, emulator_command
from edgernn.runtime.errors import ContractError


@dataclass
class Block:
    """A translation block: its start address, the address after its last instruction, its instructions."""

    pc: int
    end: int
    instructions: list[str]


@dataclass
class Trace:
    """What the trace of one run found: each window's instruction count (the first one is the empty
    marker pair), and over all windows but the first, how often each block ran and how often it left
    by a taken branch (its successor not the next address)."""

    windows: list[int] = field(default_factory=list)
    blocks: dict[int, Block] = field(default_factory=dict)
    executed: dict[int, int] = field(default_factory=dict)
    taken: dict[int, int] = field(default_factory=dict)
    stdout: str = ""
    seconds: float = 0.0
    marked: list[int] = field(default_factory=list)  # each counted step's instructions between the marks
    marked_executed: dict[int, int] = field(default_factory=dict)
    marked_taken: dict[int, int] = field(default_factory=dict)

    def between_marks(self) -> Trace:
        """The blocks run between the marks as a trace of their own (for the cycle estimate)."""
        return Trace(blocks=self.blocks, executed=self.marked_executed, taken=self.marked_taken)

    @property
    def steps(self) -> list[int]:
        """Instructions of each step (its window less the empty pair's)."""
        if not self.windows:
            return []
        overhead = self.windows[0]
        return [count - overhead for count in self.windows[1:]]


UNDECODED = "undecoded.w"  # a 32-bit Thumb instruction QEMU 7.2's disassembler does not know (MVE's),
# followed by its encoding (two halfwords in hex: "undecoded.w fc910f4b")


def _parse_instruction(line: str) -> tuple[int, int, str] | None:
    """(address, size in bytes, instruction) of one logged instruction: "0x00001084:  f04f 22e0  mov.w r2,
    #-0x1fff2000" (Arm), "0x80000000:  00000297          auipc t0,0  # 0x80000000" (RISC-V)."""
    head, sep, rest = line.partition(":  ")
    if not sep or not head.startswith("0x"):
        return None
    encoding, _, text = rest.strip().partition("  ")
    comment = text.find("# ")  # RISC-V: "# 0x80000000" after the operands (Arm immediates: "#0x1f")
    if comment >= 0:
        text = text[:comment]
    text = " ".join(text.split())
    if not text:
        return None
    size = len(encoding.replace(" ", "")) // 2
    if size == 2 and text.startswith(".byte") and int(encoding, 16) >> 11 >= 0b11101:
        size = -2  # the first half of a 32-bit Thumb instruction: the next line is its second half
        text = encoding  # its halfword, kept for the whole instruction's encoding
    return int(head, 16), size, text


class _Consumer:
    def __init__(self, begin: int, end: int, trace: Trace, marks: tuple[int, int] | None = None):
        self.begin, self.end, self.trace = begin, end, trace
        self.marks = marks or (-1, -1)
        self.mark_start: int | None = None  # the window's count at the first mark
        self.pending: list[tuple[int, int, str]] = []
        self.in_block = False
        self.window: int | None = None  # instructions so far in the open window
        self.counting = False
        self.previous: Block | None = None

    def feed(self, lines: list[bytes]) -> None:
        trace, blocks = self.trace, self.trace.blocks
        executed, taken = trace.executed, trace.taken
        for raw in lines:
            if raw.startswith(b"Trace "):
                if self.in_block:
                    self._close_block()
                pc = int(raw[raw.index(b"[") + 1 : raw.index(b"]")].split(b"/")[1], 16)
                block = blocks.get(pc)
                if block is None:
                    raise ContractError(f"the trace executed a block at {pc:#x} it never translated")
                previous = self.previous
                if self.window is not None and pc in self.marks:  # a mark's body: not counted
                    if pc == self.marks[0]:
                        self.mark_start = self.window
                    elif self.mark_start is not None:
                        if self.counting:
                            trace.marked.append(self.window - self.mark_start)
                        self.mark_start = None
                    continue
                if self.window is not None:
                    if pc == self.end:
                        trace.windows.append(self.window)
                        self.window = None
                    else:
                        self.window += len(block.instructions)
                        between = self.counting and self.mark_start is not None
                        if self.counting:
                            executed[pc] = executed.get(pc, 0) + 1
                        if between:
                            trace.marked_executed[pc] = trace.marked_executed.get(pc, 0) + 1
                        if self.counting and previous is not None and previous.end != pc:
                            taken[previous.pc] = taken.get(previous.pc, 0) + 1
                            if between:
                                trace.marked_taken[previous.pc] = trace.marked_taken.get(previous.pc, 0) + 1
                elif pc == self.begin:
                    self.window = 0
                    self.counting = len(trace.windows) > 0
                self.previous = block
                continue
            if raw.startswith(b"IN:"):
                if self.in_block:
                    self._close_block()
                self.in_block, self.pending = True, []
            elif self.in_block:
                if not raw.strip():
                    self._close_block()
                else:
                    parsed = _parse_instruction(raw.decode(errors="replace"))
                    if parsed is None:
                        continue
                    if self.pending and self.pending[-1][1] == -2:  # the second half of an undecoded one
                        second = raw.decode(errors="replace").partition(":  ")[2].split()[0]
                        encoding = f"{self.pending[-1][2]}{second}".lower()
                        self.pending[-1] = (self.pending[-1][0], 4, f"{UNDECODED} {encoding}")
                    else:
                        self.pending.append(parsed)

    def _close_block(self) -> None:
        self.in_block = False
        if self.pending:
            first, (last, size, _) = self.pending[0][0], self.pending[-1]
            self.trace.blocks[first] = Block(first, last + size, [text for _, _, text in self.pending])
        self.pending = []


def trace_program(
    program: Build, begin: int, end: int, *, timeout_s: float = 600.0, marks: tuple[int, int] | None = None
) -> Trace:
    """Run ``program`` under QEMU with the execution log streamed through a FIFO, counting each window
    between the markers at ``begin`` and ``end`` (addresses of the marker functions), and within each
    the instructions between the ``marks`` (addresses of the step's mark functions) when given."""
    trace = Trace()
    consumer = _Consumer(begin, end, trace, marks)
    with tempfile.TemporaryDirectory(prefix="edgernn-trace-") as scratch:
        fifo = Path(scratch) / "exec.fifo"
        os.mkfifo(fifo)
        fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer of our own: no EOF before QEMU's opens
        out = Path(scratch) / "stdout"
        start = time.perf_counter()
        with open(out, "w") as stdout:
            process = subprocess.Popen(
                emulator_command(program, trace_to=fifo),
                stdout=stdout,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            rest = b""
            try:
                while True:
                    if time.perf_counter() - start > timeout_s:
                        raise ContractError(
                            f"{program.elf.name} on {program.device.name} did not finish within {timeout_s:g} s "
                            "under the execution trace (fewer --steps?)"
                        )
                    ready, _, _ = select.select([fd], [], [], 0.05)
                    if ready:
                        chunk = os.read(fd, 1 << 22)
                        cut = chunk.rfind(b"\n")
                        if cut < 0:
                            rest += chunk
                            continue
                        lines = (rest + chunk[:cut]).split(b"\n")
                        rest = chunk[cut + 1 :]
                        consumer.feed(lines)
                    elif process.poll() is not None:
                        break
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                os.close(fd)
            if rest:
                consumer.feed([rest])
        trace.seconds = time.perf_counter() - start
        trace.stdout = out.read_text(errors="replace")
    return trace
