"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Each write goes to a temporary file in the target's folder, is flushed to disk, renamed over the target,
and the folder is flushed too (so the rename itself survives a power cut). The new file gets the mode an
ordinary ``open()`` would give it under the process's umask (a device service running as another user can
read a model written 0644), or the mode of the file it replaces. Only regular files are replaced: a symlink,
a device node such as /dev/null, a folder or a FIFO as the target is refused with InputError, as is a
target whose folder cannot be made or written (the message names the path and the reason).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from edgernn.runtime.errors import InputError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    return atomic_write_files([(path, data)])[0]


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_files(files: Sequence[tuple[str | os.PathLike, bytes]]) -> list[Path]:
    """Write several files that belong together (a step graph and its chunk graph): every one is written
    and flushed to a temporary file first, and only then are they renamed into place, in the order given,
    so that the window in which a kill leaves a mixed pair is two renames long rather than two writes."""
    staged: list[tuple[Path, str]] = []
    try:
        for path, data in files:
            path = Path(path)
            staged.append((path, _stage(path, data)))
        for path, tmp in staged:
            _rename(tmp, path)
    finally:
        for _, tmp in staged:
            Path(tmp).unlink(missing_ok=True)
    for folder in {path.parent for path, _ in staged}:
        _fsync_folder(folder)
    return [path for path, _ in staged]


def _stage(path: Path, data: bytes) -> str:
    mode = _mode_for(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {_reason(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InputError(f"cannot write {path}: {_reason(exc)}") from None
        raise
    return tmp


def _mode_for(path: Path) -> int:
    """The mode of the regular file ``path`` replaces, or what the umask gives a new file; refuses others."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return 0o666 & ~_umask()
    except OSError as exc:
        raise InputError(f"cannot write {path}: {_reason(exc)}") from None
    if not stat.S_ISREG(found.st_mode):
        kind = _kind(found.st_mode)
        raise InputError(f"cannot write {path}: it is {kind}, not a regular file; give another path")
    return stat.S_IMODE(found.st_mode)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def folder_mode() -> int:
    """The mode ``mkdir`` gives a new folder under the process's umask (0755 under the usual 022)."""
    return 0o777 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where the kernel tells (Linux 4.7+), since setting it
    to read it would race with other threads creating files."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def _rename(tmp: str, path: Path) -> None:
    _mode_for(path)  # the target may have become a link or a device since it was staged
    try:
        os.replace(tmp, path)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {_reason(exc)}") from None


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # a platform without directory handles (Windows): the rename is as durable as it gets
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the file itself was flushed
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
