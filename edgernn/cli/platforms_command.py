"""edgernn platforms: where the C platform files installed with edgernn are, or copies of them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import click

from edgernn.cli.common import json_option
from edgernn.cli.group import cli
from edgernn.runtime.errors import InputError


def platforms_folder() -> Path:
    """The installed ``edgernn/export/c/platforms`` folder (found without importing the C generator, so
    that a device install without onnx finds it too)."""
    spec = importlib.util.find_spec("edgernn.export.c")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("edgernn.export.c is not installed: reinstall edgernn")
    folder = Path(next(iter(spec.submodule_search_locations))) / "platforms"
    if not folder.is_dir():
        raise InputError(
            f"{str(folder)!r}: the C platform files are missing from this install; reinstall edgernn"
        )
    return folder


def platform_files(folder: Path) -> list[Path]:
    """Every file of the folder (subfolders included), relative to it, sorted."""
    return sorted(
        p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )


def copy_platform_files(folder: Path, destination: Path) -> tuple[list[Path], list[Path]]:
    """Copy every platform file into ``destination`` (created): ``copy_files``'s answer."""
    return copy_files({name: (folder / name).read_bytes() for name in platform_files(folder)}, destination)


def copy_files(files: dict[Path, bytes], destination: Path) -> tuple[list[Path], list[Path]]:
    """Write ``files`` (relative path -> bytes) into ``destination`` (created): returns (copied, already
    there with the same bytes). A file there with other bytes is refused, naming it, and nothing is
    written."""
    from edgernn.runtime.files import atomic_write_files

    if destination.exists() and not destination.is_dir():
        raise InputError(f"--copy {str(destination)!r}: expected a directory, found a file")
    same, writes, clashes = [], [], []
    for name, data in files.items():
        target = destination / name
        if target.is_symlink() or (target.exists() and not target.is_file()):
            clashes.append(name)
        elif target.is_file() and target.read_bytes() == data:
            same.append(name)
        elif target.exists():
            clashes.append(name)
        else:
            writes.append((target, data))
    if clashes:
        raise InputError(
            f"--copy {str(destination)!r}: {', '.join(map(str, clashes))} already there with other contents; "
            "move them away or copy into another directory"
        )
    try:
        for target, _ in writes:
            target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"--copy {str(destination)!r}: cannot make {exc.filename!r} ({exc.strerror})"
        ) from None
    atomic_write_files(writes)
    return [target.relative_to(destination) for target, _ in writes], same


@cli.command()
@click.option(
    "--device",
    metavar="NAME",
    help="A device of docs/devices.md (cortex-m0plus, rv32imc...): its start-up code, small C library "
    "and a linker script for its board, with the commands that build and run a program with them.",
)
@click.option(
    "--copy",
    "copy_to",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Copy every file into DIR (made if missing; a file there with other contents is refused).",
)
@click.option("--path", "path_only", is_flag=True, help="Print only the folder (for scripts and Makefiles).")
@json_option
def platforms(device, copy_to, path_only, as_json) -> None:
    """Show the C platform files installed with edgernn, or copy them next to a model.

    The files a bare-metal build of the generated C needs besides model.h/model.c: start-up code, linker
    scripts and the templates of the C benchmarks, for the boards docs/devices.md describes (the
    Cortex-M4F of mps2-an386 with newlib: startup_cortex_m4.c, mps2_an386.ld). Listed from the installed
    folder. With --device, the files of that device's own build (no newlib: edgernn's small C library),
    the linker script made for its board, and the command lines that build app.c and model.c with them
    and run the program under the device's emulator.

    \b
    Examples:
      edgernn platforms
      edgernn platforms --path
      edgernn platforms --copy firmware/platform
      edgernn platforms --device cortex-m0plus --copy firmware/m0
    """
    if device is not None:
        _device_kit(device, copy_to, path_only, as_json)
        return
    folder = platforms_folder()
    files = platform_files(folder)
    copied = same = None
    if copy_to is not None:
        copied, same = copy_platform_files(folder, copy_to)
    if as_json:
        doc = {
            "folder": str(folder),
            "files": [{"path": p.as_posix(), "bytes": (folder / p).stat().st_size} for p in files],
        }
        if copy_to is not None:
            doc.update(_copied(copy_to, copied, same))
        click.echo(json.dumps(doc, indent=2))
    elif path_only:
        click.echo(str(folder))
    elif copy_to is not None:
        _say_copied(copy_to, copied, same)
    else:
        click.echo(str(folder))
        _list([(name, (folder / name).stat().st_size) for name in files])
        click.echo("copy them next to a model: edgernn platforms --copy DIR", err=True)


def _device_kit(name: str, copy_to: Path | None, path_only: bool, as_json: bool) -> None:
    if path_only:
        raise InputError(
            "--path with --device: a device's linker script is made for its board, not a file in the installed "
            "folder; use --device NAME --copy DIR"
        )
    try:
        from edgernn.export.c.devices.kit import device_kit
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "onnx":
            raise
        raise InputError(
            "edgernn platforms --device needs the deploy extra (onnx is not installed): pip install 'edgernn[deploy]'"
        ) from None
    kit = device_kit(name)
    copied = same = None
    if copy_to is not None:
        copied, same = copy_files(kit.files, copy_to)
    board = kit.board
    memory = (
        f"flash {board.flash_bytes // 1024:,} KiB at {board.flash_origin:#x}, "
        f"RAM {board.ram_bytes // 1024:,} KiB at {board.ram_origin:#x}"
    )
    if as_json:
        doc = {
            "device": kit.device.name,
            "board": board.machine,
            "memory": memory,
            "files": [{"path": p.as_posix(), "bytes": len(data)} for p, data in kit.files.items()],
            "build": kit.build,
            "run": kit.run,
        }
        if copy_to is not None:
            doc.update(_copied(copy_to, copied, same))
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"{kit.device.name} ({kit.device.core}) on QEMU's {board.machine}: {memory}")
    if copy_to is not None:
        _say_copied(copy_to, copied, same)
    else:
        _list([(p, len(data)) for p, data in kit.files.items()])
    where = f"in {copy_to}" if copy_to is not None else "in a folder holding these files"
    click.echo(f"build ({where}, beside app.c, model.h and model.c):\n  {kit.build}")
    click.echo(f"run:\n  {kit.run}")


def _copied(copy_to: Path, copied: list[Path], same: list[Path]) -> dict:
    return {
        "copied_to": str(copy_to),
        "copied": [p.as_posix() for p in copied],
        "unchanged": [p.as_posix() for p in same],
    }


def _say_copied(copy_to: Path, copied: list[Path], same: list[Path]) -> None:
    click.echo(
        f"copied {len(copied)} file(s) to {copy_to}" + (f" ({len(same)} already there)" if same else "")
    )
    for name in copied:
        click.echo(f"  {name.as_posix()}")


def _list(files: list[tuple[Path, int]]) -> None:
    width = max((len(p.as_posix()) for p, _ in files), default=0)
    for name, size in files:
        click.echo(f"  {name.as_posix():<{width}}  {size:>8,} bytes")
