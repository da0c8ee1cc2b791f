"""Estimated cycles from the traced per-block execution counts.

Each executed block (its exact instructions, as QEMU decoded them) is one code region for ``llvm-mca-14``
with the core's scheduling model; its steady-state cycles per pass (over 100 passes, as in a loop) times
the times it ran, plus ``branch_penalty`` cycles for each taken branch on cores that do not predict
branches (their TRMs' pipeline refill), is the estimate. The Cortex-M0+ has no scheduling model in
llvm-mca: its TRM's instruction timings are used instead (loads and stores 2 cycles, LDM/STM/PUSH/POP
1 + registers, BL 3, a taken branch 2, everything else, the single-cycle multiplier included, 1).
What neither models: flash wait states, caches (Cortex-M7, Cortex-A53), bus contention, interrupts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from edgernn.export.c.devices import Device, ToolchainMissing
from edgernn.export.c.devices.trace import Trace

LLVM_MCA = "llvm-mca-14"
ITERATIONS = 100
MCA_ATTRIBUTES = {"rv32imc": "+m,+c", "rv32imafc": "+m,+a,+f,+c"}
_ARM_BRANCH = re.compile(
    r"^(b|bl|blx|cbz|cbnz|b(eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le|al))(\.w|\.n)?$"
)
_TARGET = re.compile(r"#-?0x[0-9a-f]+$")


@dataclass(frozen=True)
class Estimate:
    """Estimated cycles of all the counted steps together, and how they were estimated."""

    cycles: float
    method: str
    unmodelled: int  # instructions llvm-mca could not read, counted as one cycle each


def estimate(device: Device, trace: Trace) -> Estimate:
    """The cycles of the traced steps (all of them together) on ``device`` at zero wait states."""
    taken = sum(trace.taken.values()) * device.branch_penalty
    if device.mca is None:
        total = sum(_m0plus_block(trace.blocks[pc].instructions) * n for pc, n in trace.executed.items())
        method = "Cortex-M0+ TRM instruction timings (fast multiplier) x per-block counts"
        return Estimate(float(total + taken), method, 0)
    if shutil.which(LLVM_MCA) is None:
        raise ToolchainMissing(
            f"device {device.name}: {LLVM_MCA} not found; install the Debian package llvm-14"
        )
    pcs = sorted(trace.executed)
    per_block, unmodelled = _mca_cycles(device, [trace.blocks[pc].instructions for pc in pcs])
    total = sum(per_block[i] * trace.executed[pc] for i, pc in enumerate(pcs))
    lost = sum(unmodelled[i] * trace.executed[pc] for i, pc in enumerate(pcs))
    triple, cpu = device.mca
    method = f"llvm-mca-14 -mcpu={cpu} per executed block x its count"
    if device.branch_penalty:
        method += f", +{device.branch_penalty} per taken branch"
    if device.name == "cortex-m55":
        method += (
            ", MVE instructions 2 cycles each (dual-beat; llvm-mca-14 has no MVE timings), 1 where a vector"
            " load/store and a vector operation follow each other (their beats overlap), gathers 2"
        )
    return Estimate(float(total + taken), method, lost)


def _m0plus_block(instructions: list[str]) -> int:
    cycles = 0
    for text in instructions:
        mnemonic = text.split(None, 1)[0].lower()
        registers = text.count(",") + 1 if "{" in text else 0
        if mnemonic in ("push", "pop", "ldm", "stm", "ldmia", "stmia"):
            cycles += 1 + registers
        elif mnemonic.startswith(("ldr", "str")):
            cycles += 2
        elif mnemonic == "bl":
            cycles += 2  # 3 with the taken branch's refill
        else:
            cycles += 1
    return cycles


_CONDITION = re.compile(r"^([a-z]+?)(eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le)((?:\.[a-z0-9]+)*)$")
_MVE_AS_COPROCESSOR = re.compile(r"^(ldc|stc)l? p1[45], c(\d+), (.*)$")
_MVE = re.compile(
    r"\bq[0-7]\b|^(vctp|vpst|vpt|vmlav|vaddv|vmladav|vmlsdav|dlstp|letp|wlstp|ldc2?l?|stc2?l?|cdp2?|undecoded)\b"
)  # QEMU 7.2's disassembler prints MVE instructions it does not know as coprocessor ones
# llvm-mca-14 has no MVE timings. A Cortex-M55 MVE instruction is two beats of 64 bits, one a cycle, in one
# of its pipes (load/store, integer, float/multiply, control); the first beat of the next instruction
# overlaps the second of the one before when their pipes differ (LLVM's Cortex-M55 model,
# ARMScheduleM55.td, from LLVM 15). QEMU 7.2 decodes none of MVE's arithmetic, so two classes are told
# apart: loads and stores, and the rest. An MVE instruction is 2 cycles, 1 right after an MVE instruction
# of the other class (a load after a multiply-accumulate, or the reverse); after a scalar one, 2.
_MVE_MEMORY = re.compile(r"^v(ldr|str|ld[24]|st[24])")
# gathers and scatters by a vector of offsets (VLDR/VSTR with Qm: 111U 1100 1D0L Rn, Qd 0 111 ...), which
# QEMU 7.2 prints undecoded: load/store-pipe instructions. LLVM's model reads their offsets 4 cycles early
# (a stall where the offsets were just computed); they are counted 2 cycles each, never overlapped.
_MVE_GATHER = re.compile(r"^undecoded\.w [ef]c[89cd][0-9a-f][02468ace][ef][0-9a-f]{2}$")
_CALLS = {"cortex-m": ("bl", "blx"), "linux": ("bl", "blr"), "riscv": ("jal", "jalr", "call")}


def _fix(device: Device, text: str, label: str) -> str:
    """One instruction as QEMU printed it, in the syntax llvm-mca reads. A call becomes a branch to the
    block's end (llvm-mca gives calls a 100-cycle latency; the callee's blocks are counted themselves)."""
    mnemonic, _, operands = text.partition(" ")
    is_call = device.kind != "riscv" or operands.startswith("ra") or mnemonic == "call"
    if mnemonic in _CALLS[device.kind] and is_call:
        return f"j {label}" if device.kind == "riscv" else f"b {label}"
    if device.kind == "riscv":
        if mnemonic in (
            "lui",
            "auipc",
            "c.lui",
        ):  # QEMU prints the shifted value, the assembler takes bits 31:12
            register, _, value = operands.partition(",")
            number = int(value, 0)
            return f"{mnemonic} {register},{(number >> 12 if number % 4096 == 0 else number) & 0xFFFFF}"
        if mnemonic in ("jal", "j") or mnemonic.startswith(("b", "c.b", "c.j")):
            return re.sub(r"(?<=[ ,])-?(?:0x[0-9a-f]+|\d+)$", label, text)
        return text
    coprocessor = _MVE_AS_COPROCESSOR.match(text)
    if coprocessor:  # QEMU 7.2's disassembler reads MVE's VLDRW/VSTRW as LDC/STC to p14/p15
        load, register, address = coprocessor.groups()
        address = address.split("]")[0] + "]"  # llvm-mca-14 has no timing for the writeback forms
        return f"{'vldrw.u32' if load == 'ldc' else 'vstrw.32'} q{int(register) // 2}, {address}"
    if _ARM_BRANCH.match(mnemonic) or (
        device.kind == "linux" and (mnemonic in ("cbz", "cbnz", "tbz", "tbnz") or mnemonic.startswith("b."))
    ):
        return _TARGET.sub(label, text)
    return text


def _it_cut(instructions: list[str]) -> bool:
    """Whether the block ends inside an IT block (QEMU ends a translation block there at times; the next
    block's instructions are then printed without their condition)."""
    for index, text in enumerate(instructions):
        mnemonic = text.split(" ", 1)[0]
        if re.fullmatch(r"it[te]{0,3}", mnemonic) and index + len(mnemonic) - 1 >= len(instructions):
            return True
    return False


def _without_it(instructions: list[str]) -> list[str]:
    """For llvm-mca's Cortex-M7 model, which has no IT instruction: the IT dropped (the M7 folds it) and the
    instructions it predicates written unconditionally (each still issues)."""
    out, pending = [], 0
    for text in instructions:
        mnemonic, _, operands = text.partition(" ")
        if re.fullmatch(r"it[te]{0,3}", mnemonic):
            pending = len(mnemonic) - 1
            continue
        if pending:
            pending -= 1
            found = _CONDITION.match(mnemonic)
            if found:
                text = f"{found.group(1)}{found.group(3)} {operands}".strip()
        out.append(text)
    return out


def _mca_cycles(device: Device, blocks: list[list[str]]) -> tuple[list[float], list[int]]:
    """Steady-state cycles per pass of each block, and how many of its instructions were unreadable."""
    assert device.mca is not None
    triple, cpu = device.mca
    lines: list[str] = []
    where: dict[int, tuple[int, int]] = {}  # line number (1-based) -> (block, instruction)
    header = [".syntax unified", ".thumb"] if device.kind == "cortex-m" else []
    lines += header
    for b, instructions in enumerate(blocks):
        if device.name == "cortex-m7" or _it_cut(instructions):
            instructions = _without_it(instructions)
        lines.append(f"# LLVM-MCA-BEGIN b{b}")
        previous = None  # the pipe of the MVE instruction just before (None: not one)
        for i, text in enumerate(instructions):
            fixed = _fix(device, text, f"end{b}")
            if device.name == "cortex-m55" and _MVE.search(fixed):
                if _MVE_GATHER.match(fixed):
                    lines += ["nop"] * 2
                    previous = None
                    continue
                pipe = "memory" if _MVE_MEMORY.match(fixed) else "compute"
                lines += ["nop"] * (1 if previous not in (None, pipe) else 2)
                previous = pipe
                continue
            previous = None
            lines.append(fixed)
            where[len(lines)] = (b, i)
        lines.append(f"end{b}:")
        lines.append("# LLVM-MCA-END")
    unreadable = [0] * len(blocks)
    command = [
        LLVM_MCA,
        f"-mtriple={triple}",
        f"-mcpu={cpu}",
        f"-iterations={ITERATIONS}",
        "-all-views=false",
        "-summary-view",
    ]
    if device.name in MCA_ATTRIBUTES:
        command.append(f"-mattr={MCA_ATTRIBUTES[device.name]}")
    for _ in range(200):
        done = subprocess.run(command, input="\n".join(lines) + "\n", capture_output=True, text=True)
        bad = {int(m) for m in re.findall(r"<stdin>:(\d+):\d+: error", done.stderr)}
        if done.returncode == 0 and not bad:
            break
        unsupported = re.search(r"unsupported instruction.*\n.*instruction:\s*(.+)", done.stderr)
        if unsupported and not bad:
            text = " ".join(unsupported.group(1).split())
            bad = {n for n in where if " ".join(lines[n - 1].split()) == text}
            if not bad:  # printed differently (#16 for #0x10): every instruction of that mnemonic
                bad = {n for n in where if lines[n - 1].split(None, 1)[0] == text.split(None, 1)[0]}
        if not bad:
            raise RuntimeError(f"llvm-mca failed: {done.stderr[-1000:]}")
        for number in bad:
            if lines[number - 1] == "nop":  # a nop in an IT block (its condition was lost): drop the IT
                for back in range(number - 2, max(number - 6, 0), -1):
                    if re.match(r"it[te]{0,3}\b", lines[back]):
                        lines[back] = "nop"
                        break
                else:
                    raise RuntimeError(f"llvm-mca failed on line {number}: {done.stderr[-500:]}")
            elif number in where:
                lines[number - 1] = "nop"
                unreadable[where[number][0]] += 1
            else:
                raise RuntimeError(
                    f"llvm-mca failed on line {number}: {lines[number - 1]!r}: {done.stderr[-500:]}"
                )
    else:
        raise RuntimeError("llvm-mca kept failing")
    totals = [float(v) for v in re.findall(r"Total Cycles:\s+(\d+)", done.stdout)]
    if len(totals) != len(blocks):
        raise RuntimeError(f"llvm-mca reported {len(totals)} regions for {len(blocks)} blocks")
    return [t / ITERATIONS for t in totals], unreadable
