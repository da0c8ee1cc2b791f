"""The c flavour's backend library: the generated model.c and c_backend.c built as libtriton_edgernn.so.

On x86-64 a float32 or int8 model.c is compiled three times, for the AVX-512 VNNI level (x86-64-v4 with
VNNI: the int8 products become vpdpbusd), for AVX2 with FMA (x86-64-v3) and for the baseline x86-64 (SSE2), with its
public names suffixed per level; ``c_backend.c`` (built with ``EDGERNN_LEVELS``) picks the best the CPU
has when tritonserver loads it and logs the choice. The library stays portable to any x86-64 server and
is as fast as a ``-march`` build where the CPU allows. Elsewhere (aarch64), and for the integer-only C
(``c_backend.c`` converts its requests and responses with the C's own helpers), model.c is built once.
"""

from __future__ import annotations

import platform
import re
import tempfile
from pathlib import Path

from edgernn.export.c.build import SHARED_FLAGS, _run, _tail, find_compiler
from edgernn.runtime.errors import InputError

# (suffix, flags): most capable first; the backend checks them in this order at load
X86_LEVELS = (
    ("vnni", ("-march=x86-64-v4", "-mavx512vnni", "-mprefer-vector-width=256")),
    ("avx2", ("-march=x86-64-v3",)),
    ("base", ()),
)
PUBLIC = ("model_reset", "model_step", "model_step_token", "model_metadata")
_EXTERN_ARRAY = re.compile(r"^extern const char \*const (model_\w+)\[", re.MULTILINE)


def build_backend(version: Path, *, slots: int, idle_us: int, cc: str | None = None) -> tuple[Path, str]:
    """Build ``version``/libtriton_edgernn.so from the model.c, model.h and c_backend.c there. Returns the
    library and a line saying how it was built. Raises InputError with the compiler's output."""
    compiler = find_compiler(cc).split()
    library = version / "libtriton_edgernn.so"
    common = [f for f in SHARED_FLAGS if f != "-shared"]
    backend_flags = [
        *common, "-Wall", "-Wextra", "-Werror", "-D_POSIX_C_SOURCE=199309L",
        f"-DEDGERNN_SLOTS={slots}", f"-DEDGERNN_IDLE_US={idle_us}", "-I", str(version),
    ]  # fmt: skip
    integer = "_PRECISION_INTEGER 1" in (version / "model.h").read_text(encoding="utf-8")
    # integer-only C: no float in a step for the x86-64 levels to speed up, built once
    x86 = platform.machine().lower() in ("x86_64", "amd64") and not integer
    with tempfile.TemporaryDirectory(prefix="edgernn-triton-") as tmp:
        objects = []
        if x86:
            names = [*PUBLIC, *_EXTERN_ARRAY.findall((version / "model.h").read_text(encoding="utf-8"))]
            for suffix, flags in X86_LEVELS:
                renames = [f"-D{name}={name}_{suffix}" for name in names]
                obj = Path(tmp) / f"model_{suffix}.o"
                _compile(
                    [*compiler, *common, *flags, *renames, "-c", str(version / "model.c"), "-o", str(obj)]
                )
                objects.append(str(obj))
            backend_flags.append("-DEDGERNN_LEVELS")
        else:
            objects.append(str(version / "model.c"))
        _compile(
            [
                *compiler,
                *backend_flags,
                "-shared",
                str(version / "c_backend.c"),
                *objects,
                "-o",
                str(library),
                "-lm",
            ]
        )
    how = (
        f"model.c built for {', '.join(s for s, _ in X86_LEVELS)} (x86-64-v4 + VNNI, x86-64-v3, x86-64), "
        "the best the CPU has picked at load"
        if x86
        else "model.c built once" + (" (integer-only)" if integer else "")
    )
    return library, f"{library.name} built ({' '.join(compiler[:1] + common)}; {how}; -Wall -Wextra -Werror)"


def _compile(command: list[str]) -> None:
    done = _run(command, "the C compiler")
    if done.returncode != 0:
        raise InputError("the Triton C backend did not build:\n" + _tail(done.stderr + done.stdout))
