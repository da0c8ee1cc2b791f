"""Compile the generated C on this machine: the self-test (strict C99) and the shared library that
``edgernn.runtime.native.NativeStepper`` loads."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgernn.export.c.selftest import SelfTestResult, parse_output
from edgernn.runtime.errors import ContractError, InputError

STRICT_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
TEST_FLAGS = (*STRICT_FLAGS, "-O2")
SHARED_FLAGS = ("-std=c99", "-O3", "-fPIC", "-shared", "-ffp-contract=fast")
_TIMEOUT_S = 600


class CompilerMissing(InputError):
    """No C compiler on this machine (the message names the Debian package)."""


def find_compiler(cc: str | None = None) -> str:
    """``cc``, else $CC, else cc/gcc/clang on PATH; CompilerMissing naming the package otherwise."""
    for candidate in [cc, os.environ.get("CC"), "cc", "gcc", "clang"]:
        if candidate and shutil.which(candidate.split()[0]):
            return candidate
    raise CompilerMissing(
        "no C compiler found (cc, gcc or clang); install the Debian package gcc, set CC, or skip "
        "verification (edgernn deploy --no-verify)"
    )


def _run(command: list[str], what: str, timeout: float = _TIMEOUT_S) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ContractError(f"{what} did not finish in {timeout:g} s: {' '.join(command)}") from None
    return done


@dataclass(frozen=True)
class ProgramRun:
    """What a program printed and how it ended (``seconds``: wall time of the run, emulator included)."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float


def run_program(command: list[str], label: str, timeout_s: float, stdin: str | None = None) -> ProgramRun:
    """Run a built program (on the host or under an emulator), ``stdin`` its input (none when None); past
    ``timeout_s``, ContractError naming ``label`` with the tail of what it printed."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as exc:
        printed = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
        raise ContractError(
            f"{label} did not finish within {timeout_s:g} s; it printed: {(printed or '')[-500:]!r}"
        ) from None
    return ProgramRun(done.returncode, done.stdout, done.stderr, time.perf_counter() - start)


def compile_host(
    directory: str | os.PathLike,
    name: str = "model",
    *,
    output: str | os.PathLike | None = None,
    cc: str | None = None,
    flags: tuple[str, ...] = TEST_FLAGS,
) -> Path:
    """Build NAME.c with NAME_test.c from ``directory`` with the host compiler and the strict flags.

    Returns the executable (``output``, default NAME_test in ``directory``); ContractError with the
    compiler's messages if it does not compile cleanly.
    """
    directory = Path(directory)
    compiler = find_compiler(cc)
    output = Path(output) if output is not None else directory / f"{name}_test"
    sources = [str(directory / f"{name}.c"), str(directory / f"{name}_test.c")]
    command = [*compiler.split(), *flags, "-I", str(directory), *sources, "-o", str(output), "-lm"]
    done = _run(command, "the C compiler")
    if done.returncode != 0:
        raise ContractError(
            f"the generated C does not compile cleanly with {' '.join(command[: len(compiler.split()) + len(flags)])}:\n"
            + _tail(done.stderr + done.stdout)
        )
    return output


def run_self_test(executable: str | os.PathLike, timeout: float = 300) -> SelfTestResult:
    """Run NAME_test; a crash is a failed result whose output ends with the signal that ended it."""
    done = _run([str(executable)], "the self-test", timeout)
    result = parse_output(done.stdout)
    if done.returncode < 0:
        return SelfTestResult(False, result.max_abs_error, result.steps, crash_report(done))
    if done.returncode != 0 and result.passed:  # PASS printed but a non-zero exit: not a pass
        return SelfTestResult(False, result.max_abs_error, result.steps, done.stdout + done.stderr)
    return result


def crash_report(done: subprocess.CompletedProcess) -> str:
    """What a program killed by a signal printed (its last lines) and the signal, named."""
    number = -done.returncode
    try:
        name = f"{signal.Signals(number).name}, {signal.strsignal(number)}"
    except ValueError:
        name = "unknown signal"
    printed = _tail(done.stdout + done.stderr) or "(it printed nothing)"
    return f"{printed}\nthe self-test was killed by signal {number} ({name})"


def verify_host(directory: str | os.PathLike, name: str, cc: str | None = None) -> SelfTestResult:
    """Compile the self-test in a temporary folder (nothing is left in ``directory``) and run it."""
    with tempfile.TemporaryDirectory(prefix="edgernn-c-") as tmp:
        executable = compile_host(directory, name, output=Path(tmp) / f"{name}_test", cc=cc)
        return run_self_test(executable)


def build_shared_library(
    directory: str | os.PathLike,
    name: str = "model",
    output: str | os.PathLike | None = None,
    *,
    native: bool = False,
    cc: str | None = None,
    extra_flags: tuple[str, ...] = (),
) -> Path:
    """NAME.c from ``directory`` as a shared library for ``NativeStepper`` (-O3 -fPIC, FMA contraction
    allowed, never -ffast-math; ``native``: -march=native). Returns its path (default libNAME.so, or .dylib
    / .dll by platform, in ``directory``)."""
    directory = Path(directory)
    compiler = find_compiler(cc)
    suffix = {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")
    output = Path(output) if output is not None else directory / f"lib{name}{suffix}"
    flags = [*SHARED_FLAGS, *(_native_flags() if native else []), *extra_flags]
    command = [*compiler.split(), *flags, str(directory / f"{name}.c"), "-o", str(output), "-lm"]
    done = _run(command, "the C compiler")
    if done.returncode != 0:
        raise ContractError(
            "the generated C did not build as a shared library:\n" + _tail(done.stderr + done.stdout)
        )
    return output


def _native_flags() -> list[str]:
    """-march=native; on x86-64 with 256-bit vectors preferred: called from Python, a step built for
    512-bit vectors measured 11.3 us against 8.4 us for 256-bit (GRU 2x128, benchmarks/c_native.py)."""
    if platform.machine().lower() in ("x86_64", "amd64"):
        return ["-march=native", "-mprefer-vector-width=256"]
    return ["-march=native"]


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
