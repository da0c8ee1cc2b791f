"""Real targets for the generated C: build a deployed directory (NAME.h, NAME.c, NAME_test.c) for a
machine, run it there, and read what it printed.

=============  =========================================================  ===============================
target         compiler and flags                                         runs under
=============  =========================================================  ===============================
``host``       ``cc`` (x86-64 or whatever this machine is)                 the machine itself
``cortex-m4``  ``arm-none-eabi-gcc -mcpu=cortex-m4 -mfpu=fpv4-sp-d16        ``qemu-system-arm -M mps2-an386``
               -mfloat-abi=hard``, newlib + semihosting (librdimon), the    with semihosting
               start-up code and linker script in ``platforms/``
``aarch64``    ``aarch64-linux-gnu-gcc -static``                            ``qemu-aarch64`` (user mode)
=============  =========================================================  ===============================

Every build uses the flags the generated C is held to (``-std=c99 -Wall -Wextra -Werror -pedantic``).
The self-test prints ``max_abs_error=<g> steps=<n>`` and, last, ``PASS`` or ``FAIL``; 32-bit ARM
semihosting does not carry the exit status, so that line decides. ``measure_footprint`` is what the
model alone takes on the Cortex-M4: flash (text + data) and RAM (data + bss, plus the state and scratch
the header declares), read with ``arm-none-eabi-size``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgernn.export.c.build import STRICT_FLAGS, CompilerMissing, ProgramRun, find_compiler, run_program
from edgernn.export.c.devices import get_device
from edgernn.export.c.devices.build import SECTION_FLAGS, Build, emulator_command
from edgernn.export.c.selftest import parse_output
from edgernn.runtime.errors import ContractError, InputError


class ToolchainError(InputError):
    """A compiler, emulator or size tool a target needs is not installed (the message names the packages)."""


@dataclass(frozen=True)
class Target:
    """How to build a C program for one machine and run it (``runner``: the command before the program)."""

    name: str
    description: str
    compiler: str
    cflags: tuple[str, ...]
    link_flags: tuple[str, ...]
    runner: tuple[str, ...]
    packages: tuple[str, ...]
    size_tool: str | None = None

    @property
    def tools(self) -> tuple[str, ...]:
        return (self.compiler, *self.runner[:1], *((self.size_tool,) if self.size_tool else ()))

    def missing_tools(self) -> list[str]:
        """The tools this target needs that are not on PATH."""
        return [tool for tool in self.tools if shutil.which(tool) is None]

    def require_tools(self) -> None:
        """Raise ToolchainError naming the Debian packages when a tool is missing."""
        missing = self.missing_tools()
        if missing:
            raise ToolchainError(
                f"target {self.name}: {', '.join(missing)} not found; install the Debian packages "
                f"{' '.join(self.packages)}"
            )


def _platform_file(name: str) -> Path:
    return Path(__file__).with_name("platforms") / name


def linker_script() -> Path:
    """The mps2-an386 linker script (code and constants at 0, data and stack at 0x20000000)."""
    return _platform_file("mps2_an386.ld")


def startup_source() -> Path:
    """The Cortex-M4F start-up code and vector table (FPU on, .data/.bss, semihosting stdio, exit)."""
    return _platform_file("startup_cortex_m4.c")


def _cortex_m4() -> Target:
    """The cortex-m4 device profile's compiler, flags and board (``devices``), built with newlib and its
    semihosting (rdimon) and this folder's start-up code instead of the device firmware's small C library."""
    device = get_device("cortex-m4")
    [board] = device.boards
    *runner, _program = emulator_command(Build(Path("PROGRAM"), device, board))  # ends "-kernel PROGRAM"
    return Target(
        name="cortex-m4",
        description=f"Cortex-M4F bare metal ({board.machine} under {device.emulator}, newlib semihosting)",
        compiler=device.compiler,
        cflags=(*device.cflags, *SECTION_FLAGS),
        link_flags=("-nostartfiles", "--specs=rdimon.specs", "-Wl,--gc-sections"),
        runner=tuple(runner),
        packages=(*device.packages[:1], "libnewlib-arm-none-eabi", *device.packages[1:]),
        size_tool="arm-none-eabi-size",
    )


def _host() -> Target:
    try:
        compiler = find_compiler()  # $CC, else cc, gcc or clang
    except CompilerMissing:
        compiler = "cc"  # missing_tools() names it
    return Target("host", "this machine", compiler, (), (), (), ("gcc",))


def _aarch64() -> Target:
    device = get_device("aarch64")
    return Target(
        name="aarch64",
        description="aarch64 Linux (static, under qemu-aarch64 user mode)",
        compiler=device.compiler,
        cflags=(),
        link_flags=device.cflags,  # -static
        runner=(device.emulator,),
        packages=device.packages,
    )


TARGET_NAMES = ("host", "cortex-m4", "aarch64")


def get_target(name: str) -> Target:
    """The target called ``name`` (one of ``TARGET_NAMES``)."""
    makers = {"host": _host, "cortex-m4": _cortex_m4, "aarch64": _aarch64}
    if name not in makers:
        raise InputError(f"target {name!r}: expected one of {', '.join(TARGET_NAMES)}")
    return makers[name]()


# --- building and running --------------------------------------------------------------------------------


RunResult = ProgramRun  # what a program built for a target printed, and how it ended


def compile_command(
    target: Target,
    sources: list[Path],
    output: Path,
    *,
    optimize: str = "-O2",
    extra_flags: tuple[str, ...] = (),
    link: bool = True,
) -> list[str]:
    """The compiler command line that builds ``sources`` into ``output`` (an executable or, with
    ``link=False``, one object file) for ``target``."""
    command = [target.compiler, *STRICT_FLAGS, optimize, *target.cflags, *extra_flags]
    if not link:
        return [*command, "-c", *map(str, sources), "-o", str(output)]
    if target.name == "cortex-m4":
        command += ["-T", str(linker_script()), str(startup_source())]
    return [*command, *map(str, sources), *target.link_flags, "-lm", "-o", str(output)]


def build_executable(
    target: Target | str,
    sources: list[Path],
    output: Path,
    *,
    optimize: str = "-O2",
    extra_flags: tuple[str, ...] = (),
) -> Path:
    """Compile and link ``sources`` for ``target`` into ``output``; a compiler error raises
    ContractError with the compiler's own message."""
    target = get_target(target) if isinstance(target, str) else target
    target.require_tools()
    command = compile_command(target, sources, output, optimize=optimize, extra_flags=extra_flags)
    _compile(command, target)
    return output


def _compile(command: list[str], target: Target) -> None:
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise ContractError(
            f"{target.compiler} ({target.name}) failed with exit code {done.returncode}:\n"
            f"{done.stderr.strip()[-4000:]}"
        )


def run_executable(
    target: Target | str,
    executable: Path,
    *,
    args: tuple[str, ...] = (),
    stdin: str | None = None,
    timeout_s: float = 120.0,
) -> RunResult:
    """Run a program built for ``target`` (under its emulator); past ``timeout_s`` raises ContractError."""
    target = get_target(target) if isinstance(target, str) else target
    command = [*target.runner, str(executable), *args]
    if args and target.name == "cortex-m4":
        raise InputError("target cortex-m4: a bare-metal program takes no command-line arguments")
    return run_program(command, f"{executable.name} on {target.name}", timeout_s, stdin)


# --- the self-test ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelfTest:
    """The generated self-test's verdict on one target."""

    target: str
    passed: bool
    max_abs_error: float | None
    steps: int | None
    seconds: float
    output: str


def parse_self_test(target: str, run: RunResult) -> SelfTest:
    """Read the self-test's output: the last non-empty line decides (``PASS`` or ``FAIL``); on targets
    whose exit status is carried (not the Cortex-M4's semihosting) a non-zero status is a failure too."""
    lines = [line.strip() for line in run.stdout.splitlines() if line.strip()]
    if not lines or lines[-1] not in ("PASS", "FAIL"):
        raise ContractError(
            f"self-test on {target}: expected PASS or FAIL as its last line, it printed "
            f"{run.stdout[-300:]!r} (stderr {run.stderr[-300:]!r}, exit code {run.returncode})"
        )
    parsed = parse_output(run.stdout)
    found = parsed.steps > 0
    status_ok = run.returncode == 0 or target == "cortex-m4"
    return SelfTest(
        target,
        parsed.passed and status_ok,
        parsed.max_abs_error if found else None,
        parsed.steps if found else None,
        run.seconds,
        run.stdout,
    )


def model_name(deployed: Path) -> str:
    """The NAME of a deployed C directory: the one ``NAME_test.c`` with ``NAME.c`` and ``NAME.h`` beside it."""
    names = sorted(
        p.name[: -len("_test.c")]
        for p in Path(deployed).glob("*_test.c")
        if (p.parent / p.name.replace("_test.c", ".c")).is_file()
    )
    if len(names) != 1:
        raise InputError(
            f"{str(deployed)!r}: expected one deployed C model (NAME.h, NAME.c, NAME_test.c), found {names or 'none'}"
        )
    return names[0]


def run_self_test(
    deployed: str | os.PathLike,
    target: Target | str = "host",
    *,
    name: str | None = None,
    build_dir: str | os.PathLike | None = None,
    optimize: str = "-O2",
    timeout_s: float = 300.0,
) -> SelfTest:
    """Build NAME.c with NAME_test.c from the deployed directory for ``target``, run it there and
    return its verdict. ``build_dir`` keeps the executable (default: a temporary directory)."""
    deployed = Path(deployed)
    target = get_target(target) if isinstance(target, str) else target
    name = name or model_name(deployed)
    with tempfile.TemporaryDirectory(prefix="edgernn-c-") as scratch:
        out = Path(build_dir or scratch)
        out.mkdir(parents=True, exist_ok=True)
        executable = out / f"{name}_test-{target.name}{'.elf' if target.name == 'cortex-m4' else ''}"
        sources = [deployed / f"{name}.c", deployed / f"{name}_test.c"]
        build_executable(target, sources, executable, optimize=optimize)
        return parse_self_test(target.name, run_executable(target, executable, timeout_s=timeout_s))


# --- flash and RAM on the Cortex-M4 ------------------------------------------------------------------------


@dataclass(frozen=True)
class Footprint:
    """What the model alone takes on a Cortex-M4F (bytes): ``flash`` = text + data of NAME.o, ``static_ram``
    = its data + bss (0 for the generated code: no mutable statics), ``step_ram`` = the header's
    NAME_RAM_BYTES (state plus a step's scratch, on the caller's stack), ``linked_flash``: what linking it
    into a program adds, libm's functions included (None when the program does not fit the board's 4 MiB);
    ``header_flash`` = the header's NAME_FLASH_BYTES."""

    text: int
    data: int
    bss: int
    step_ram: int | None
    header_flash: int | None
    linked_flash: int | None

    @property
    def flash(self) -> int:
        return self.text + self.data

    @property
    def static_ram(self) -> int:
        return self.data + self.bss

    @property
    def ram(self) -> int:
        return self.static_ram + (self.step_ram or 0)

    def to_dict(self) -> dict[str, int | None]:
        return {
            "flash_bytes": self.flash,
            "ram_bytes": self.ram,
            "text": self.text,
            "data": self.data,
            "bss": self.bss,
            "step_ram_bytes": self.step_ram,
            "header_flash_bytes": self.header_flash,
            "linked_flash_bytes": self.linked_flash,
        }


def header_constant(header: Path, macro: str) -> int | None:
    """The integer value of ``#define MACRO <n>`` in a generated header, or None."""
    found = re.search(rf"^#define\s+{re.escape(macro)}\s+\(?(\d+)[uUlL]*\)?", header.read_text(), re.M)
    return int(found.group(1)) if found else None


_STEP_ONCE = """#include "{name}.h"
int main(void)
{{
\t{name}_state state;
\tfloat x[{upper}_INPUT_SIZE > 0 ? {upper}_INPUT_SIZE : 1] = {{0}};
\tfloat y[{upper}_OUTPUT_SIZE];
\t{name}_reset(&state);
\treturn {upper}_VOCAB_SIZE > 0 ? {name}_step_token(&state, 0, y) : {name}_step(&state, x, y);
}}
"""
_EMPTY_MAIN = "int main(void)\n{\n\treturn 0;\n}\n"


def measure_footprint(
    deployed: str | os.PathLike, *, name: str | None = None, optimize: str = "-O2"
) -> Footprint:
    """Flash and RAM of NAME.c alone on the Cortex-M4F (see Footprint), compiled as the self-test is."""
    deployed = Path(deployed)
    target = get_target("cortex-m4")
    target.require_tools()
    name = name or model_name(deployed)
    header = deployed / f"{name}.h"
    upper = name.upper()
    with tempfile.TemporaryDirectory(prefix="edgernn-size-") as scratch:
        out = Path(scratch)
        obj = out / f"{name}.o"
        _compile(
            compile_command(target, [deployed / f"{name}.c"], obj, optimize=optimize, link=False), target
        )
        text, data, bss = _berkeley_size(target, obj)
        (out / "step_once.c").write_text(_STEP_ONCE.format(name=name, upper=upper))
        (out / "empty.c").write_text(_EMPTY_MAIN)
        linked = _linked_flash(target, deployed, name, out, optimize) if text + data < BOARD_FLASH else None
    return Footprint(
        text,
        data,
        bss,
        header_constant(header, f"{upper}_RAM_BYTES"),
        header_constant(header, f"{upper}_FLASH_BYTES"),
        linked,
    )


BOARD_FLASH = 4 * 1024 * 1024  # mps2-an386's SSRAM1, where the linker script puts code and constants


def _linked_flash(target: Target, deployed: Path, name: str, out: Path, optimize: str) -> int | None:
    """Flash of a program that steps the model once, less that of an empty program (None: no fit)."""
    try:
        with_model = build_executable(
            target,
            [out / "step_once.c", deployed / f"{name}.c"],
            out / "with.elf",
            optimize=optimize,
            extra_flags=(f"-I{deployed}",),
        )
    except ContractError as exc:
        if "will not fit in region" in str(exc):
            return None
        raise
    without = build_executable(target, [out / "empty.c"], out / "without.elf", optimize=optimize)
    return sum(_berkeley_size(target, with_model)[:2]) - sum(_berkeley_size(target, without)[:2])


def _berkeley_size(target: Target, path: Path) -> tuple[int, int, int]:
    assert target.size_tool is not None
    done = subprocess.run([target.size_tool, str(path)], capture_output=True, text=True, check=True)
    text, data, bss = (int(v) for v in done.stdout.splitlines()[1].split()[:3])
    return text, data, bss


# --- the step benchmark (host) -----------------------------------------------------------------------------


NATIVE_FLAGS = ("-O3", "-march=native")


def bench_source(name: str = "model") -> str:
    """The C source of the step benchmark for the generated model ``name`` (host, POSIX clock)."""
    template = _platform_file("step_bench.c.in").read_text()
    return template.replace("@name@", name).replace("@NAME@", name.upper())


def build_bench(
    deployed: str | os.PathLike,
    output: str | os.PathLike,
    *,
    name: str | None = None,
    flags: tuple[str, ...] = NATIVE_FLAGS,
) -> Path:
    """Build the step benchmark of a directory holding NAME.h and NAME.c for this machine
    (``-O3 -march=native`` by default); the program is ``output``."""
    deployed, output = Path(deployed), Path(output)
    name = name or _source_name(deployed)
    source = output.with_name(f"{name}_bench.c")
    source.write_text(bench_source(name))
    target = get_target("host")
    return build_executable(
        target,
        [source, deployed / f"{name}.c"],
        output,
        optimize=flags[0],
        extra_flags=(*flags[1:], f"-I{deployed}"),
    )


def _source_name(directory: Path) -> str:
    names = sorted(p.stem for p in directory.glob("*.h") if (directory / f"{p.stem}.c").is_file())
    if len(names) != 1:
        raise InputError(f"{str(directory)!r}: expected one NAME.h with NAME.c, found {names or 'none'}")
    return names[0]


@dataclass(frozen=True)
class CStepBench:
    """A model's generated C with the step benchmark, built for this machine: ``run(steps)`` times
    ``steps`` steps in C (after ``warmup`` untimed ones, in a fresh process) and returns its JSON."""

    executable: Path
    warmup: int = 500
    timeout_s: float = 600.0

    @classmethod
    def build(
        cls,
        model: str | os.PathLike,
        directory: str | os.PathLike,
        *,
        precision: str | None = None,
        fast_activations: bool = False,
        name: str = "model",
        warmup: int = 500,
        flags: tuple[str, ...] = NATIVE_FLAGS,
    ) -> CStepBench:
        """Generate the C of ``model`` (an edgernn ONNX file) into ``directory`` and build its benchmark."""
        from edgernn.export.c import generate_sources

        get_target("host").require_tools()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        options = {"precision": precision} if precision is not None else {}
        sources = generate_sources(Path(model), name=name, fast_activations=fast_activations, **options)
        for file_name, text in sources.files.items():
            (directory / file_name).write_text(text)
        return cls(build_bench(directory, directory / f"{name}_bench", name=name, flags=flags), warmup)

    def run(self, steps: int, *, raw: bool = False) -> dict:
        """The benchmark's JSON: steps, warmup, p50/p90/p99/max/mean_us, steps_per_s, errors (and, with
        ``raw``, ``timings_ns``: every step)."""
        args = (str(steps), str(self.warmup), *(("raw",) if raw else ()))
        done = run_executable("host", self.executable, args=args, timeout_s=self.timeout_s)
        if done.returncode != 0:
            raise ContractError(
                f"{self.executable.name} exited with {done.returncode}: {done.stdout[-300:]!r} {done.stderr[-300:]!r}"
            )
        return json.loads(done.stdout)

    def time_steps(self, steps: int) -> np.ndarray:
        """Per-step times of ``steps`` steps, microseconds (float64)."""
        return np.asarray(self.run(steps, raw=True)["timings_ns"], dtype=np.float64) / 1000.0


# --- outputs on one target, to compare with another ------------------------------------------------------


def trace_source(name: str = "model", steps: int = 64) -> str:
    """A C program that steps ``name`` through ``steps`` deterministic inputs and prints every output."""
    template = _platform_file("trace.c.in").read_text()
    return template.replace("@name@", name).replace("@NAME@", name.upper()).replace("@steps@", str(steps))


def run_trace(
    deployed: str | os.PathLike,
    target: Target | str = "host",
    *,
    name: str | None = None,
    steps: int = 64,
    build_dir: str | os.PathLike | None = None,
    timeout_s: float = 120.0,
) -> np.ndarray:
    """The outputs ``(steps, output_size)`` float64 of the deployed model on ``target`` for the inputs
    of ``trace_source``: the same inputs on every target, so traces compare directly."""
    deployed = Path(deployed)
    target = get_target(target) if isinstance(target, str) else target
    name = name or _source_name(deployed)
    with tempfile.TemporaryDirectory(prefix="edgernn-trace-") as scratch:
        out = Path(build_dir or scratch)
        out.mkdir(parents=True, exist_ok=True)
        source = out / f"{name}_trace.c"
        source.write_text(trace_source(name, steps))
        executable = build_executable(
            target,
            [source, deployed / f"{name}.c"],
            out / f"{name}_trace-{target.name}",
            extra_flags=(f"-I{deployed}",),
        )
        done = run_executable(target, executable, timeout_s=timeout_s)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if not lines or lines[-1] != "PASS" or len(lines) != steps + 1:
        raise ContractError(
            f"trace on {target.name}: expected {steps} output lines and PASS, got {done.stdout[-300:]!r}"
        )
    return np.array([[float(v) for v in line.split()] for line in lines[:-1]])
