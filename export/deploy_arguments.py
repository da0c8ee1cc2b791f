"""``edgernn deploy``'s arguments, checked before anything is staged: each refusal is one InputError.

What they guard against: an argument the file system cannot take (a 300-character ``--model-name`` or
``-o`` component was ENAMETOOLONG), one that collides with a file edgernn writes (``--model-name
deploy.json`` made the manifest a directory: IsADirectoryError), text past what a C compiler must accept
(4,095 bytes) or that is not UTF-8, and a C name the generated code would turn into a reserved one
(``--name _`` gave ``__tanh``, which the C library declares: the compiler's raw error).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgernn.export.deploy_dir import MANIFEST
from edgernn.runtime.errors import InputError

MAX_TEXT_BYTES = 4095  # the longest string literal C99 compilers must accept; no option needs more
MAX_NAME_BYTES = 255  # NAME_MAX: one component of a path
MAX_OUT_BYTES = 4095 - 512  # PATH_MAX less room for what a target writes inside -o
_C_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def check_arguments(target: str, out_dir: Path, options: dict[str, Any], flag: Callable[[str], str]) -> None:
    """Refuse (InputError naming the flag) an argument that could not be written as given.

    ``flag(option)``: how the command line spells an option's name."""
    for key, value in options.items():
        if isinstance(value, str):
            _check_text(flag(key), value)
    _check_out_dir(out_dir)
    if target == "c" and isinstance(options.get("name"), str):
        _check_c_name(options["name"])
    if isinstance(options.get("model_name"), str):
        _check_model_name(options["model_name"])


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _check_text(flag: str, value: str) -> None:
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InputError(f"{flag} {_shown(value)}: expected UTF-8 text, got a lone surrogate") from None
    if size > MAX_TEXT_BYTES:
        raise InputError(f"{flag}: {size:,} bytes given; expected at most {MAX_TEXT_BYTES:,}")


def _check_out_dir(out_dir: Path) -> None:
    absolute = os.fsencode(os.path.abspath(out_dir))
    for part in absolute.split(b"/"):
        if len(part) > MAX_NAME_BYTES:
            raise InputError(
                f"-o {_shown(str(out_dir))}: a component of {len(part):,} bytes "
                f"({_shown(os.fsdecode(part))}); expected at most {MAX_NAME_BYTES} (the file system's limit on a name)"
            )
    if len(absolute) > MAX_OUT_BYTES:
        raise InputError(
            f"-o {_shown(str(out_dir))}: {len(absolute):,} bytes as an absolute path; expected at most "
            f"{MAX_OUT_BYTES:,} (the file system's 4,095 less room for the files written inside)"
        )


def _check_c_name(name: str) -> None:
    if not _C_NAME.fullmatch(name) or "__" in name or name.endswith("_"):
        raise InputError(
            f"--name {_shown(name)}: expected a C identifier that starts with a letter, without '__' or a "
            "trailing '_' (the generated names add '_' and a suffix to it: '_' would give __tanh, which the "
            "C library reserves)"
        )


def _check_model_name(name: str) -> None:
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise InputError(
            f"--model-name {_shown(name)}: {size:,} bytes; expected at most {MAX_NAME_BYTES} (it names a "
            "directory, and the file system's limit on a name is 255)"
        )
    if name == MANIFEST:
        raise InputError(
            f"--model-name {name!r}: the name of the manifest edgernn writes at the top of -o; choose another"
        )
