"""Build a C program for a device and run it under its emulator.

Bare-metal devices are built without a C library: the device's start-up code, ``firmware/libc.c``
(string functions, printf, exit) and ``firmware/libm.c``, with the compiler's libgcc (soft float, integer
division), linked by a script made here from the board's memory map. Linux devices (aarch64) use the
cross compiler's own static C library. Every build uses the flags the generated C is held to
(``-std=c99 -Wall -Wextra -Werror -pedantic``) at -O2, as the self-test does.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgernn.export.c.build import STRICT_FLAGS, ProgramRun, run_program
from edgernn.export.c.devices import Board, Device, firmware_file
from edgernn.runtime.errors import ContractError

OPTIMIZE = "-O2"
SECTION_FLAGS = ("-ffunction-sections", "-fdata-sections")

_CORTEX_M_SCRIPT = """/* {machine}: code and constants in "flash" at {flash_origin:#x}, data and stack in RAM at {ram_origin:#x} */
ENTRY(Reset_Handler)
MEMORY
{{
  FLASH (rx)  : ORIGIN = {flash_origin:#x}, LENGTH = {flash_bytes:#x}
  RAM   (rwx) : ORIGIN = {ram_origin:#x}, LENGTH = {ram_bytes:#x}
  VECTORS (rx) : ORIGIN = {vectors_origin:#x}, LENGTH = 0x400
}}
SECTIONS
{{
  .vectors : {{ KEEP(*(.vectors)) }} > {vectors_region}
  .text : {{ *(.text .text.*) *(.rodata .rodata.*) . = ALIGN(4); }} > FLASH
  .ARM.exidx : {{ *(.ARM.exidx* .gnu.linkonce.armexidx.*) }} > FLASH
  .data : ALIGN(4) {{ __data_start__ = .; *(.data .data.*) . = ALIGN(4); __data_end__ = .; }} > RAM AT > FLASH
  __data_load__ = LOADADDR(.data);
  .bss (NOLOAD) : ALIGN(4) {{ __bss_start__ = .; *(.bss .bss.*) *(COMMON) . = ALIGN(4); __bss_end__ = .; }} > RAM
  __stack_top__ = ORIGIN(RAM) + LENGTH(RAM);
  __stack_limit__ = ALIGN(__bss_end__, 8);
  /DISCARD/ : {{ *(.ARM.attributes) *(.comment) }}
}}
"""

_RISCV_SCRIPT = """/* QEMU virt: everything in RAM, code and constants at {flash_origin:#x}, data and stack at {ram_origin:#x} */
ENTRY(_start)
MEMORY
{{
  FLASH (rx)  : ORIGIN = {flash_origin:#x}, LENGTH = {flash_bytes:#x}
  RAM   (rwx) : ORIGIN = {ram_origin:#x}, LENGTH = {ram_bytes:#x}
}}
SECTIONS
{{
  .text : {{ KEEP(*(.text.start)) *(.text .text.*) }} > FLASH
  .rodata : {{ *(.rodata .rodata.* .srodata .srodata.*) . = ALIGN(4); }} > FLASH
  .data : ALIGN(4) {{ __data_start__ = .; *(.data .data.*) __global_pointer$ = . + 0x800; *(.sdata .sdata.*) . = ALIGN(4); __data_end__ = .; }} > RAM
  .bss (NOLOAD) : ALIGN(4) {{ __bss_start__ = .; *(.sbss .sbss.* .bss .bss.*) *(COMMON) . = ALIGN(4); __bss_end__ = .; }} > RAM
  __stack_top__ = ORIGIN(RAM) + LENGTH(RAM);
  __stack_limit__ = ALIGN(__bss_end__, 8);
}}
"""


def linker_script(device: Device, board: Board) -> str:
    template = _RISCV_SCRIPT if device.kind == "riscv" else _CORTEX_M_SCRIPT
    return template.format(
        machine=board.machine,
        flash_origin=board.flash_origin,
        flash_bytes=board.flash_bytes,
        ram_origin=board.ram_origin,
        ram_bytes=board.ram_bytes,
        vectors_origin=board.vectors_origin if board.vectors_origin is not None else board.flash_origin,
        vectors_region="VECTORS" if board.vectors_origin is not None else "FLASH",
    )


def firmware_sources(device: Device) -> list[Path]:
    """The start-up code and the small C library a bare-metal program of ``device`` links with."""
    if not device.bare_metal:
        return []
    startup = "startup_riscv.c" if device.kind == "riscv" else "startup_cortex_m.c"
    return [firmware_file(startup), firmware_file("libc.c"), firmware_file("libm.c")]


def compile_flags(device: Device, optimize: str = OPTIMIZE) -> list[str]:
    """The compiler flags of every C file of a ``device`` build (the generated C's included)."""
    flags = [*STRICT_FLAGS, optimize, *device.cflags, *SECTION_FLAGS]
    if device.bare_metal:
        flags += ["-isystem", str(firmware_file("include"))]
    return flags


@dataclass(frozen=True)
class Build:
    """A linked program and the board it runs on (None on Linux devices)."""

    elf: Path
    device: Device
    board: Board | None


def build(
    device: Device,
    sources: list[Path],
    output: Path,
    *,
    include: tuple[Path, ...] = (),
    defines: tuple[str, ...] = (),
    optimize: str = OPTIMIZE,
) -> Build:
    """Compile and link ``sources`` for ``device`` into ``output``: on the first of its boards the program
    fits (the Cortex-M0+'s micro:bit, then the mps2-an385). ContractError with the compiler's message."""
    device.require_tools()
    command = [device.compiler, *compile_flags(device, optimize)]
    command += [f"-I{path}" for path in include] + [f"-D{define}" for define in defines]
    if not device.bare_metal:
        _run_compiler([*command, *map(str, sources), *device.cflags, "-lm", "-o", str(output)], device)
        return Build(output, device, None)
    last_error = None
    for board in device.boards:
        script = output.with_name(f"{output.stem}-{board.machine}.ld")
        script.write_text(linker_script(device, board))
        link = [*bare_metal_link_flags(str(script), libgcc(device)), "-o", str(output)]
        try:
            _run_compiler([*command, *map(str, [*sources, *firmware_sources(device)]), *link], device)
        except ContractError as exc:
            if "will not fit in region" not in str(exc) and "overflowed by" not in str(exc):
                raise
            last_error = exc
            continue
        return Build(output, device, board)
    raise ContractError(f"the program does not fit any board of {device.name}: {last_error}")


def bare_metal_link_flags(script: str, libgcc_flags: list[str]) -> list[str]:
    """How a bare-metal program links: no C library or start files of the compiler's, the linker script
    ``script``, unused sections dropped, libgcc."""
    return ["-nostdlib", "-nostartfiles", "-T", script, "-Wl,--gc-sections", *libgcc_flags]


# gcc-riscv64-unknown-elf has no rv32imc multilib: the rv32imac one's libgcc (no atomics in it) serves
LIBGCC_MULTILIB = {
    "rv32imc": ("-march=rv32imac", "-mabi=ilp32"),
    "rv32imafc": ("-march=rv32imafc", "-mabi=ilp32f"),
}


def libgcc(device: Device) -> list[str]:
    """How a bare-metal program of ``device`` links libgcc (soft float, integer division)."""
    if device.name not in LIBGCC_MULTILIB:
        return ["-lgcc"]
    done = subprocess.run(
        [device.compiler, *LIBGCC_MULTILIB[device.name], "-print-libgcc-file-name"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [done.stdout.strip()]


def _run_compiler(command: list[str], device: Device) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    except subprocess.TimeoutExpired:
        raise ContractError(f"{device.compiler} ({device.name}) did not finish in 600 s") from None
    if done.returncode != 0:
        raise ContractError(
            f"{device.compiler} ({device.name}) failed with exit code {done.returncode}:\n"
            f"{done.stderr.strip()[-4000:]}"
        )


def emulator_command(program: Build, *, trace_to: Path | None = None) -> list[str]:
    """The command that runs ``program`` under its emulator (with ``trace_to``: QEMU logs every translated
    block's instructions and every block it executes, unchained, to that file or FIFO)."""
    device = program.device
    trace = ["-d", "in_asm,exec,nochain", "-D", str(trace_to)] if trace_to is not None else []
    if device.kind == "linux":
        return [device.emulator, *device.emulator_args, *trace, str(program.elf)]
    assert program.board is not None
    command = [device.emulator, "-M", program.board.machine, "-nographic", "-monitor", "none", *trace]
    if device.kind == "riscv":
        command += ["-bios", "none"]
    else:
        command += ["-semihosting-config", "enable=on,target=native"]
    return [*command, "-kernel", str(program.elf)]


Run = ProgramRun  # what a program printed under its emulator


def run(program: Build, *, timeout_s: float = 300.0) -> Run:
    """Run ``program`` under its emulator and return what it printed; past ``timeout_s``, ContractError."""
    label = f"{program.elf.name} on {program.device.name}"
    return run_program(emulator_command(program), label, timeout_s)
