"""One guarded path for bytes edgernn did not just write: model metadata, run files, data files.

A parser fed hostile bytes can fail in ways no list of exception types foresees (RecursionError from
deeply nested JSON, ValueError from an integer of 5000 digits, UnicodeDecodeError from onnxruntime's
metadata map, a safetensors header that lies, MemoryError). Every reader of such bytes runs inside
``guarded``, which turns any failure into the error family's ContractError or InputError naming the
file, and reads through ``read_bytes``/``parse_json``, which refuse sizes past a bound before parsing.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgernn.runtime.errors import ContractError, EdgeRNNError, InputError

MAX_JSON_BYTES = 64 << 20  # a run's config, vocabulary and metrics are kilobytes; 64 MiB is far past them


@contextmanager
def guarded(source: object, what: str, *, error: type[EdgeRNNError] = InputError) -> Iterator[None]:
    """Run a parse of untrusted bytes: edgernn's own errors pass through, any other becomes ``error``.

    The message names ``source`` (a path or a label) and ``what`` was being read, e.g.
    ``runs/x/config.json: the run config cannot be read (RecursionError: maximum recursion depth...)``.
    """
    try:
        yield
    except (ContractError, InputError) as exc:
        if str(source) in str(exc):
            raise
        raise type(exc)(f"{source}: {exc}") from None  # every message names the file it is about
    except EdgeRNNError:
        raise
    except Exception as exc:  # noqa: BLE001 - hostile bytes fail parsers in unforeseeable ways: see above
        raise error(f"{source}: {what} cannot be read ({describe_exception(exc)})") from None


def reads_untrusted(what: str, path_argument: str = "path") -> Callable[[Callable], Callable]:
    """Decorate a reader so that its whole run is ``guarded``, naming the file given as ``path_argument``."""

    def decorate(reader: Callable) -> Callable:
        signature = inspect.signature(reader)

        @functools.wraps(reader)
        def guarded_reader(*args: Any, **kwargs: Any) -> Any:
            source = signature.bind_partial(*args, **kwargs).arguments.get(path_argument, "the file")
            with guarded(source, what):
                return reader(*args, **kwargs)

        return guarded_reader

    return decorate


def describe_exception(exc: BaseException) -> str:
    """``Type: first line`` of an exception, at most 200 characters (some messages quote megabytes)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:200] if first else type(exc).__name__


def read_bytes(
    path: str | os.PathLike, what: str, *, max_bytes: int, error: type[EdgeRNNError] = InputError
) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; InputError for a missing one."""
    path = Path(path)
    with guarded(path, what, error=error):
        if not path.is_file():
            problem = "is a directory" if path.is_dir() else "does not exist"
            raise InputError(f"{path}: {what} {problem}")
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path}: {what} is {size:,} bytes, more than the {max_bytes:,} edgernn reads")
        return path.read_bytes()


def parse_json(
    text: str | bytes,
    source: object,
    what: str,
    *,
    max_bytes: int = MAX_JSON_BYTES,
    error: type[EdgeRNNError] = InputError,
) -> Any:
    """``json.loads`` of untrusted text; NaN and Infinity (not JSON) are refused."""
    if len(text) > max_bytes:
        raise error(f"{source}: {what} is {len(text):,} bytes, more than the {max_bytes:,} edgernn reads")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except Exception as exc:  # noqa: BLE001 - RecursionError, ValueError (5000-digit ints), MemoryError...
        raise error(f"{source}: {what} is not valid JSON ({describe_exception(exc)})") from None


def read_json(path: str | os.PathLike, what: str, *, error: type[EdgeRNNError] = InputError) -> Any:
    """Read and parse a JSON file through the guarded path."""
    data = read_bytes(path, what, max_bytes=MAX_JSON_BYTES, error=error)
    return parse_json(data, path, what, error=error)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
