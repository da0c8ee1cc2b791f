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
    """Copy every platform file into ``destination`` (created): returns (copied, already there with the
    same bytes). A file there with other bytes is refused, naming it, and nothing is written."""
    from edgernn.runtime.files import atomic_write_files

    if destination.exists() and not destination.is_dir():
        raise InputError(f"--copy {str(destination)!r}: expected a directory, found a file")
    files = platform_files(folder)
    same, writes, clashes = [], [], []
    for name in files:
        data, target = (folder / name).read_bytes(), destination / name
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
    "--copy",
    "copy_to",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Copy every file into DIR (made if missing; a file there with other contents is refused).",
)
@click.option("--path", "path_only", is_flag=True, help="Print only the folder (for scripts and Makefiles).")
@json_option
def platforms(copy_to, path_only, as_json) -> None:
    """Show the C platform files installed with edgernn, or copy them next to a model.

    The files a bare-metal build of the generated C needs besides model.h/model.c: start-up code, linker
    scripts and the templates of the C benchmarks, for the boards docs/devices.md describes (the
    Cortex-M4F of mps2-an386: startup_cortex_m4.c, mps2_an386.ld). Listed from the installed folder.

    \b
    Examples:
      edgernn platforms
      edgernn platforms --path
      edgernn platforms --copy firmware/platform
    """
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
            doc["copied_to"] = str(copy_to)
            doc["copied"] = [p.as_posix() for p in copied]
            doc["unchanged"] = [p.as_posix() for p in same]
        click.echo(json.dumps(doc, indent=2))
    elif path_only:
        click.echo(str(folder))
    elif copy_to is not None:
        click.echo(
            f"copied {len(copied)} file(s) to {copy_to}" + (f" ({len(same)} already there)" if same else "")
        )
        for name in copied:
            click.echo(f"  {name.as_posix()}")
    else:
        click.echo(str(folder))
        width = max((len(p.as_posix()) for p in files), default=0)
        for name in files:
            click.echo(f"  {name.as_posix():<{width}}  {(folder / name).stat().st_size:>8,} bytes")
        click.echo("copy them next to a model: edgernn platforms --copy DIR", err=True)
