"""What a program of one's own needs to run the generated C on an emulated device: the device's start-up
code, the small C library and its headers, a linker script made from the board's memory map, and the
command lines that build and run it (``edgernn platforms --device``).

The files are the ones every self-test and bench of that device is built with (``build.build``); the
build command is theirs too, with the program's own sources (``app.c`` and ``model.c`` by default) in
place of the harness.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from edgernn.export.c.build import STRICT_FLAGS
from edgernn.export.c.devices import Board, Device, firmware_file, get_device
from edgernn.export.c.devices.build import (
    LIBGCC_MULTILIB,
    OPTIMIZE,
    SECTION_FLAGS,
    Build,
    bare_metal_link_flags,
    emulator_command,
    firmware_sources,
    linker_script,
)
from edgernn.runtime.errors import InputError


@dataclass(frozen=True)
class DeviceKit:
    """``files``: relative path -> bytes, to be written beside the program's sources; ``build`` and
    ``run``: shell command lines run in that folder."""

    device: Device
    board: Board
    files: dict[Path, bytes]
    build: str
    run: str


def device_kit(
    name: str, sources: tuple[str, ...] = ("app.c", "model.c"), program: str = "app.elf"
) -> DeviceKit:
    """The kit of the device called ``name`` for its first board (the one its self-test runs on when the
    program fits). InputError for an unknown device or one that runs Linux (it needs no kit)."""
    device = get_device(name)
    if not device.bare_metal:
        build = shlex.join(
            [device.compiler, *STRICT_FLAGS, OPTIMIZE, *device.cflags, *sources, "-lm", "-o", "app"]
        )
        run = shlex.join([device.emulator, *device.emulator_args, "app"])
        raise InputError(f"device {name} runs Linux: it needs no platform files (build: {build}; run: {run})")
    board = device.boards[0]
    script = f"{board.machine}.ld"
    support = firmware_sources(device)
    files = {Path(source.name): source.read_bytes() for source in support}
    include = firmware_file("include")
    files.update({Path("include") / header.name: header.read_bytes() for header in sorted(include.iterdir())})
    files[Path(script)] = linker_script(device, board).encode()
    compile_flags = [*STRICT_FLAGS, OPTIMIZE, *device.cflags, *SECTION_FLAGS, "-isystem", "include"]
    command = [device.compiler, *compile_flags, *sources, *(s.name for s in support)]
    build = " ".join(
        [
            shlex.join([*command, *bare_metal_link_flags(script, [])]),
            _libgcc_text(device),
            shlex.join(["-o", program]),
        ]
    )
    run = shlex.join(emulator_command(Build(Path(program), device, board)))
    return DeviceKit(device, board, dict(sorted(files.items())), build, run)


def _libgcc_text(device: Device) -> str:
    """libgcc in a shell command: ``-lgcc``, or the multilib's file asked of the compiler (``$(...)``)."""
    if device.name not in LIBGCC_MULTILIB:
        return "-lgcc"
    return f"$({shlex.join([device.compiler, *LIBGCC_MULTILIB[device.name], '-print-libgcc-file-name'])})"


__all__ = ["DeviceKit", "device_kit"]
