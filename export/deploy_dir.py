"""Where ``edgernn deploy`` writes: what ``-o DIR`` may hold, and publishing a stage into it.

A destination is new, empty, or an earlier edgernn deployment of the same target: its ``deploy.json``
lists every file edgernn wrote there. Deploying again replaces exactly those files; a user's files beside
them (an ``app.c``, ``build/notes.txt``) stay, and one the new deployment would overwrite is refused by
name. A directory holding anything else (other files, another target's deployment, a ``deploy.json`` that
cannot be read) is refused, naming what is there; ``force`` replaces it whole.

A new directory is the stage itself, renamed into place in one step, with the mode the umask gives (as
``mkdir`` would). Into an existing directory the files move one by one, the replaced ones first aside, and
every move is undone if one fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgernn.runtime.errors import InputError
from edgernn.runtime.files import folder_mode
from edgernn.runtime.untrusted import describe_exception, read_json

MANIFEST = "deploy.json"
_SHOWN = 4  # entries named in a refusal


@dataclass(frozen=True)
class Destination:
    """``kind``: ``new`` (absent), ``files`` (empty, or an earlier deployment of the same target: only the
    ``previous`` files are replaced) or ``replace`` (anything else, with force: replaced whole)."""

    path: Path
    kind: str
    previous: frozenset[str] = frozenset()


def check_destination(out_dir: Path, target: str, force: bool) -> Destination:
    """What ``out_dir`` holds and how a deployment of ``target`` may go there (InputError if it may not)."""
    where = f"-o {str(out_dir)!r}"
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise InputError(f"{where}: expected a directory, found a file or link")
    _check_parents(out_dir, where)
    if not out_dir.exists():
        return Destination(out_dir, "new")
    entries = sorted(os.listdir(out_dir))
    if not entries:
        return Destination(out_dir, "files")
    earlier_target, listed, problem = _earlier_deployment(out_dir)
    if problem is None and earlier_target == target:
        return Destination(out_dir, "files", frozenset(listed) | {MANIFEST})
    if force:
        return Destination(out_dir, "replace")
    if problem is None:
        raise InputError(
            f"{where}: holds an edgernn {earlier_target} deployment ({MANIFEST} says so), not a {target} one; "
            f"deploy with --target {earlier_target} there, choose another directory, or --force to replace it"
        )
    raise InputError(
        f"{where}: expected a new or empty directory or an earlier edgernn {target} deployment (with "
        f"{MANIFEST}); it holds other files ({_listing(out_dir, entries)}){problem}; edgernn leaves them "
        "alone: choose another directory, or --force to replace it"
    )


def _check_parents(out_dir: Path, where: str) -> None:
    for parent in out_dir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{where}: {str(parent)!r} is not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise InputError(f"{where}: {str(parent)!r} is not writable")
            return


def _listing(out_dir: Path, entries: list[str]) -> str:
    shown = [f"{e}/" if (out_dir / e).is_dir() and not (out_dir / e).is_symlink() else e for e in entries]
    more = f" and {len(entries) - _SHOWN} more" if len(entries) > _SHOWN else ""
    return ", ".join(repr(e)[1:-1] for e in shown[:_SHOWN]) + more


def _earlier_deployment(out_dir: Path) -> tuple[str | None, list[str], str | None]:
    """(target, listed files, None) of the deployment ``out_dir`` holds, or (None, [], why it is none)."""
    manifest = out_dir / MANIFEST
    if not manifest.is_file() or manifest.is_symlink():
        return None, [], ""
    try:
        doc = read_json(manifest, "the deployment manifest")
        target, files = doc["target"], [entry["path"] for entry in doc["files"]]
        if not isinstance(target, str) or not all(isinstance(p, str) for p in files):
            raise ValueError("target and paths are not text")
    except Exception as exc:  # noqa: BLE001 - a hand-edited or truncated manifest: say so, touch nothing
        return None, [], f"; its {MANIFEST} cannot be read ({describe_exception(exc)})"
    for path in files:
        if not _inside(out_dir, path):
            return None, [], f"; its {MANIFEST} lists {path!r:.80}, not a file edgernn writes inside it"
    return target, files, None


def _inside(out_dir: Path, relative: str) -> bool:
    """True for a relative path with no '..' whose folders are real folders under ``out_dir`` and which is a
    regular file there or absent: the only kind of entry a manifest may make edgernn replace."""
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in relative:
        return False
    path = out_dir
    for part in parts[:-1]:
        path = path / part
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            return False
    last = path / parts[-1]
    return not last.is_symlink() and (not last.exists() or last.is_file())


def files_of(folder: Path) -> list[str]:
    """Every regular file under ``folder``, as sorted relative POSIX paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def publish(stage: Path, destination: Destination, force: bool) -> None:
    """Move the verified ``stage`` into the destination (see the module docstring)."""
    for path in [stage, *stage.rglob("*")]:
        _fsync(path)
    out_dir = destination.path
    try:
        if destination.kind == "new":
            os.chmod(stage, folder_mode())  # mkdtemp made it 0700; a new directory follows the umask
            os.replace(stage, out_dir)
        elif destination.kind == "replace":
            _replace_whole(stage, out_dir)
        else:
            _replace_files(stage, out_dir, destination.previous, force)
    except OSError as exc:  # every move was undone: say so in one line
        raise InputError(
            f"-o {str(out_dir)!r}: the deployment could not be moved into place ({describe_exception(exc)}); "
            "what was there is as it was"
        ) from None
    _fsync(out_dir.parent)


def _replace_whole(stage: Path, out_dir: Path) -> None:
    os.chmod(stage, folder_mode())
    old = Path(tempfile.mkdtemp(prefix=".edgernn-", suffix=".old", dir=out_dir.parent))
    old.rmdir()
    os.replace(out_dir, old)
    try:
        os.replace(stage, out_dir)
    except BaseException:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _replace_files(stage: Path, out_dir: Path, previous: frozenset[str], force: bool) -> None:
    new = files_of(stage)
    blocking = sorted({b for p in new if (b := _blocking(out_dir, p, previous)) is not None})
    if blocking and not force:
        raise InputError(
            f"-o {str(out_dir)!r}: the deployment would overwrite {', '.join(map(repr, blocking[:_SHOWN]))}, "
            f"which edgernn did not write there (not in {MANIFEST}); move it, or --force to overwrite it"
        )
    aside = Path(tempfile.mkdtemp(prefix=".edgernn-", suffix=".old", dir=out_dir.parent))
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        for path in sorted(previous | set(blocking)):
            if (out_dir / path).exists() or (out_dir / path).is_symlink():
                (aside / path).parent.mkdir(parents=True, exist_ok=True)
                os.replace(out_dir / path, aside / path)
                moved_out.append(path)
        for path in new:
            (out_dir / path).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / path, out_dir / path)
            moved_in.append(path)
    except BaseException:
        for path in reversed(moved_in):
            os.replace(out_dir / path, stage / path)
        for path in reversed(moved_out):
            os.replace(aside / path, out_dir / path)
        shutil.rmtree(aside, ignore_errors=True)
        raise
    _remove_emptied_folders(out_dir, previous)
    shutil.rmtree(aside, ignore_errors=True)
    shutil.rmtree(stage, ignore_errors=True)


def _blocking(out_dir: Path, relative: str, previous: frozenset[str]) -> str | None:
    """The entry in the way of writing ``relative`` (a file, link or folder edgernn did not write), if any."""
    parts = PurePosixPath(relative).parts
    path = out_dir
    for depth, part in enumerate(parts, 1):
        path = path / part
        prefix = "/".join(parts[:depth])
        last = depth == len(parts)
        if path.is_symlink() or (path.exists() and (last or not path.is_dir())):
            return None if last and prefix in previous and path.is_file() else prefix
        if not path.exists():
            return None
    return None


def _remove_emptied_folders(out_dir: Path, previous: frozenset[str]) -> None:
    """Folders that held only files of the earlier deployment, now empty, go too (deepest first)."""
    folders = {parent for p in previous for parent in PurePosixPath(p).parents if str(parent) != "."}
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty (a user's file, or the new deployment's): it stays
            (out_dir / folder).rmdir()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
