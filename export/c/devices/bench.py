"""``bench_device``: what one step of a model costs on a device, measured under its emulator.

For each precision: deploy the model to C (verified on the host, as ``edgernn deploy --target c``),
build and run its self-test on the device, then build a harness that steps it through the self-test's
inputs between two marker calls and trace it (``trace.py``): exact instructions per step (median and
max), estimated cycles (``cycles.py``), the stack a step uses (painted high-water mark), flash (what
linking the model into a program adds, libgcc's soft float included) and RAM (the state plus static
data). MACs per step come from the graph's matrix products. A model with a front end in its step (a keyword
model: window, spectrum, mel bands, log) is traced with its marks (``export.c.marks``): the front end's
instructions and estimated cycles are reported apart from the rest of the step's (the recurrent part,
its input's normalisation and the head).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgernn.export.c import marks
from edgernn.export.c.devices import Device, get_device
from edgernn.export.c.devices.build import Build, build, run
from edgernn.export.c.devices.cycles import estimate
from edgernn.export.c.devices.trace import trace_program
from edgernn.runtime.errors import ContractError, InputError, QuantizationError

DEFAULT_STEPS = 200
SOFT_FLOAT_DEFAULT_STEPS = 5  # cores without an FPU: millions of instructions a step, float32 and int8 alike
PRECISIONS = ("float32", "int8", "integer")
MARKS = ("front_end_begin", "front_end_end")  # the labels of a front end's marks (export.c.lower)


def default_steps(device: Device) -> int:
    """The steps measured when none are given: fewer on the cores without an FPU (soft float)."""
    return SOFT_FLOAT_DEFAULT_STEPS if device.fpu.startswith("none") else DEFAULT_STEPS


@dataclass(frozen=True)
class PartCost:
    """A part of the step: its instructions (the median over the steps), estimated cycles (the mean) and
    the graph's multiply-accumulates in it (the front end's: its dense DFT and mel matrices, which the C
    may compute with fewer, as an FFT)."""

    instructions_median: float
    cycles: float
    macs: int

    def to_dict(self) -> dict:
        return {
            "instructions": self.instructions_median,
            "cycles": round(self.cycles),
            "graph_macs": self.macs,
        }


@dataclass(frozen=True)
class PrecisionBench:
    """One precision of one model on one device (``to_dict``: the keys of ``bench --device --json``)."""

    device: str
    precision: str
    clock_mhz: float
    instructions_median: float
    instructions_max: int
    cycles: float  # per step, the mean of the counted steps
    method: str
    macs: int
    flash_bytes: int
    ram_bytes: int
    stack_bytes: int
    steps: int
    board: str
    self_test_max_abs_error: float | None
    unmodelled: int = 0
    front_end: PartCost | None = None  # the front end's share of the step, where the model has one

    @property
    def rest(self) -> PartCost | None:
        """The step less its front end."""
        if self.front_end is None:
            return None
        fe = self.front_end
        return PartCost(
            self.instructions_median - fe.instructions_median, self.cycles - fe.cycles, self.macs - fe.macs
        )

    @property
    def us_per_step(self) -> float:
        return self.cycles / self.clock_mhz

    @property
    def max_rate_hz(self) -> float:
        return self.clock_mhz * 1e6 / self.cycles

    @property
    def macs_per_cycle(self) -> float:
        return self.macs / self.cycles

    def to_dict(self) -> dict:
        return {
            "device": self.device,
            "precision": self.precision,
            "clock_mhz": self.clock_mhz,
            "instructions": {"median": self.instructions_median, "max": self.instructions_max},
            "cycles": {"estimate": round(self.cycles), "method": self.method},
            "us_per_step": round(self.us_per_step, 2),
            "max_rate_hz": round(self.max_rate_hz, 1),
            "macs": self.macs,
            "macs_per_cycle": round(self.macs_per_cycle, 4),
            "flash_bytes": self.flash_bytes,
            "ram_bytes": self.ram_bytes,
            "stack_bytes": self.stack_bytes,
            **(
                {"front_end": self.front_end.to_dict(), "rest": self.rest.to_dict()}
                if self.front_end is not None and self.rest is not None
                else {}
            ),
        }


@dataclass
class DeviceBench:
    """Every precision of one model on one device."""

    model: str
    device: Device
    clock_mhz: float
    results: list[PrecisionBench] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"model": self.model, "results": [r.to_dict() for r in self.results]}


def graph_macs(model: str | os.PathLike, *, front_end: bool | None = None) -> int:
    """Multiply-accumulates of one step: the sum over the step graph's matrix products (MatMul, Gemm) of
    their weight matrices' sizes (an embedding lookup costs none). ``front_end``: True counts only the
    front end's products (the nodes ``export.c.lower.FRONT_END_PREFIX`` names), False all but those."""
    import onnx

    from edgernn.export.c.lower import FRONT_END_PREFIX

    proto = onnx.load(str(model), load_external_data=False)
    shapes = {init.name: list(init.dims) for init in proto.graph.initializer}
    total = 0
    for node in proto.graph.node:
        if front_end is not None and node.name.startswith(FRONT_END_PREFIX) != front_end:
            continue
        if node.op_type in ("MatMul", "Gemm"):
            for name in node.input[:2]:
                dims = shapes.get(name)
                if dims is not None and len(dims) == 2:
                    total += int(dims[0]) * int(dims[1])
    return total


def has_marks(deployed: Path, name: str = "model") -> bool:
    """Whether the generated step carries the front end's marks (``export.c.marks``)."""
    return f"{name.upper()}_BENCH_MARKS" in (deployed / f"{name}.c").read_text()


def _tool(device: Device, name: str) -> str:
    """A binutils tool of the device's toolchain (arm-none-eabi-nm for arm-none-eabi-gcc)."""
    return device.compiler[: -len("gcc")] + name


def symbol_address(device: Device, elf: Path, symbol: str) -> int:
    done = subprocess.run([_tool(device, "nm"), str(elf)], capture_output=True, text=True, check=True)
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == symbol:
            return int(parts[0], 16) & ~1  # the Thumb bit
    raise ContractError(f"{elf.name}: no symbol {symbol}")


def section_sizes(device: Device, path: Path) -> tuple[int, int, int]:
    """text, data, bss of an object or program (Berkeley ``size``)."""
    done = subprocess.run([_tool(device, "size"), str(path)], capture_output=True, text=True, check=True)
    text, data, bss = (int(v) for v in done.stdout.splitlines()[1].split()[:3])
    return text, data, bss


def writable_bytes(device: Device, obj: Path) -> int:
    """The RAM an object's static data takes: its .data and .bss sections (not .data.rel.ro, constant
    once a position-independent program is relocated, which ``size`` counts as data)."""
    done = subprocess.run(
        [_tool(device, "objdump"), "-h", str(obj)], capture_output=True, text=True, check=True
    )
    total = 0
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit():
            name = parts[1]
            if name.startswith((".data", ".bss", ".sdata", ".sbss")) and not name.startswith(".data.rel.ro"):
                total += int(parts[2], 16)
    return total


def _inputs_source(name: str, info, steps: int) -> tuple[str, str]:
    """The harness's recorded inputs (C) and its step call."""
    from edgernn.export.c.selftest import golden_inputs

    values = golden_inputs(info, steps)
    if info.input.kind == "tokens":
        body = ",".join(str(int(v)) for v in values)
        return (
            f"static const int32_t tokens[STEPS] = {{{body}}};",
            f"{name}_step_token(&state, tokens[t], y)",
        )
    rows = ",\n".join(
        "{" + ",".join(f"{float(v)!r}f".replace("inf", "INFINITY") for v in row) + "}" for row in values
    )
    upper = name.upper()
    return (
        f"static const float inputs[STEPS][{upper}_INPUT_SIZE] = {{\n{rows}\n}};",
        f"{name}_step(&state, inputs[t], y)",
    )


def _paint_bytes(program_device: Device) -> int:
    if not program_device.bare_metal:
        return 65536
    return min(min(board.ram_bytes for board in program_device.boards) // 2, 65536)


def _harness(device: Device, deployed: Path, info, steps: int, out: Path) -> Build:
    from edgernn.export.c import integer_bench
    from edgernn.export.c.devices import firmware_file

    name = "model"
    integer = integer_bench.is_integer(deployed, name)
    if integer:
        inputs, call = integer_bench.inputs_source(deployed, name, info, steps)
    else:
        inputs, call = _inputs_source(name, info, steps)
    text = (
        firmware_file("bench_main.c.in")
        .read_text()
        .replace("@inputs@", inputs)
        .replace("@step_call@", call)
        .replace("@steps@", str(steps))
        .replace("@paint_bytes@", str(_paint_bytes(device)))
        .replace("@name@", name)
        .replace("@NAME@", name.upper())
    )
    if integer:  # the integer C's y is int16
        text = text.replace("float y[", "int16_t y[")
    defines: tuple[str, ...] = ()
    if has_marks(deployed, name):  # the front end between two calls the trace counts
        text += "".join(
            f"\n__attribute__((noinline)) void {marks.symbol(label)}(void)\n{{\n"
            '\t__asm__ volatile("" ::: "memory");\n}\n'
            for label in MARKS
        )
        defines = (f"{name.upper()}_BENCH_MARKS",)
    source = out / "bench_main.c"
    source.write_text(text)
    return build(
        device, [source, deployed / f"{name}.c"], out / "bench.elf", include=(deployed,), defines=defines
    )


_STEP_ONCE = """#include "model.h"
#ifdef MODEL_PRECISION_INTEGER
typedef int16_t model_value;
#else
typedef float model_value;
#endif
int main(void)
{
\tmodel_state state;
\tmodel_value x[MODEL_INPUT_SIZE > 0 ? MODEL_INPUT_SIZE : 1] = {0};
\tmodel_value y[MODEL_OUTPUT_SIZE];
\tmodel_reset(&state);
\treturn MODEL_VOCAB_SIZE > 0 ? model_step_token(&state, 0, y) : model_step(&state, x, y);
}
"""
_EMPTY_MAIN = "int main(void)\n{\n\treturn 0;\n}\n"


def linked_flash(device: Device, deployed: Path, out: Path) -> int:
    """Flash that linking the model into a program adds (its code and weights, and the libgcc functions
    it calls): a program stepping it once less an empty one, on the same board."""
    (out / "step_once.c").write_text(_STEP_ONCE)
    (out / "empty.c").write_text(_EMPTY_MAIN)
    with_model = build(
        device, [out / "step_once.c", deployed / "model.c"], out / "with.elf", include=(deployed,)
    )
    without = build(device, [out / "empty.c"], out / "without.elf")
    return sum(section_sizes(device, with_model.elf)[:2]) - sum(section_sizes(device, without.elf)[:2])


def self_test_on(
    device: Device, deployed: Path, out: Path, timeout_s: float = 600.0
) -> tuple[bool, float | None, str]:
    """Build the deployed self-test for ``device``, run it there: (passed, max_abs_error, output)."""
    from edgernn.export.c.selftest import parse_output

    program = build(
        device, [deployed / "model.c", deployed / "model_test.c"], out / "selftest.elf", include=(deployed,)
    )
    done = run(program, timeout_s=timeout_s)
    parsed = parse_output(done.stdout)
    passed = parsed.passed and (done.returncode == 0 or device.kind == "cortex-m")
    return passed, (parsed.max_abs_error if parsed.steps else None), done.stdout + done.stderr


def bench_precision(
    model: Path,
    device: Device,
    precision: str,
    *,
    clock_mhz: float,
    steps: int,
    work: Path,
    self_test: bool = True,
    data: str | os.PathLike | None = None,
) -> PrecisionBench:
    """One precision of ``model`` on ``device`` (see the module docstring); ``data``: int8 and integer
    calibrated on it, as ``deploy --data`` (float32 takes none)."""
    from edgernn.export.c.generate import load_model, read_info

    deployed = work / f"c-{precision}"
    if not deployed.exists():
        from edgernn.export.deploy import deploy

        try:
            deploy(model, "c", deployed, precision=precision, data=None if precision == "float32" else data)
        except QuantizationError as exc:
            if not exc.forceable:
                raise
            hint = (
                f"bench measures only what passes these checks: leave {precision} out of --precision "
                f"(edgernn deploy --target c --precision {precision} --force writes it anyway)"
            )
            raise QuantizationError(exc.mismatches, forceable=True, hint=hint) from None
    out = work / f"{device.name}-{precision}"
    out.mkdir(parents=True, exist_ok=True)
    error = None
    if self_test:
        passed, error, output = self_test_on(device, deployed, out)
        if not passed:
            raise ContractError(f"the {precision} self-test fails on {device.name}:\n{output[-1500:]}")
    info = read_info(load_model(model)[0])
    program = _harness(device, deployed, info, steps, out)
    begin = symbol_address(device, program.elf, "edgernn_step_begin")
    end = symbol_address(device, program.elf, "edgernn_step_end")
    from edgernn.export.c import integer_bench

    marked = has_marks(deployed)
    mark_pcs = (
        tuple(symbol_address(device, program.elf, marks.symbol(label)) for label in MARKS) if marked else None
    )
    trace = trace_program(program, begin, end, marks=mark_pcs)
    lines = [line for line in trace.stdout.splitlines() if line.strip()]
    if not lines or lines[-1] != "PASS" or len(trace.steps) != steps:
        raise ContractError(
            f"the step harness on {device.name} ({precision}) did not run its {steps} steps: "
            f"{trace.stdout[-500:]!r} ({len(trace.steps)} counted)"
        )
    stack = int(next(line for line in lines if line.startswith("steps=")).split("stack_bytes=")[1].split()[0])
    counts = trace.steps
    guess = estimate(device, trace)
    front_end = None
    if marked:
        if len(trace.marked) != steps:
            raise ContractError(
                f"the step harness on {device.name} ({precision}) passed its front end's marks "
                f"{len(trace.marked)} times in {steps} steps"
            )
        front_end = PartCost(
            float(statistics.median(trace.marked)),
            estimate(device, trace.between_marks()).cycles / steps,
            graph_macs(model, front_end=True),
        )
    obj = out / "model.o"
    from edgernn.export.c.devices.build import compile_flags

    subprocess.run(
        [device.compiler, *compile_flags(device), "-c", str(deployed / "model.c"), "-o", str(obj)],
        check=True,
        capture_output=True,
    )
    static = writable_bytes(device, obj)
    if integer_bench.is_integer(deployed):
        state = integer_bench.state_bytes(deployed)
    else:
        state = 4 * _header_int(deployed / "model.h", "MODEL_STATE_FLOATS")
    return PrecisionBench(
        device=device.name,
        precision=precision,
        clock_mhz=clock_mhz,
        instructions_median=float(statistics.median(counts)),
        instructions_max=int(max(counts)),
        cycles=guess.cycles / len(counts),
        method=guess.method,
        macs=graph_macs(model),
        flash_bytes=linked_flash(device, deployed, out),
        ram_bytes=static + state,
        stack_bytes=stack,
        steps=steps,
        board=program.board.machine if program.board else f"{device.emulator} (user mode)",
        self_test_max_abs_error=error,
        unmodelled=guess.unmodelled,
        front_end=front_end,
    )


def _header_int(header: Path, macro: str) -> int:
    for line in header.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "#define" and parts[1] == macro:
            return int(parts[2].strip("()uUlL"))
    raise ContractError(f"{header.name}: no {macro}")


def bench_device(
    model: str | os.PathLike | None,
    device: str,
    *,
    precisions: tuple[str, ...] = ("float32",),
    clock_mhz: float | None = None,
    steps: int | None = None,
    work_dir: str | os.PathLike | None = None,
    self_test: bool = True,
    data: str | os.PathLike | None = None,
) -> list[DeviceBench]:
    """Measure ``model`` (an edgernn ONNX file; None: the reference GRU 2x128 and LSTM 2x128 on 32
    features) on ``device`` for each precision. ``clock_mhz``: default the device's typical clock;
    ``steps``: default ``default_steps(device)``; ``data``: int8 and integer calibrated on it (and held to
    their quality gates on it), as ``deploy --data``."""
    profile = get_device(device)
    if steps is None:
        steps = default_steps(profile)
    for precision in precisions:
        if precision not in PRECISIONS:
            raise InputError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if steps < 1:
        raise InputError(f"steps {steps}: expected at least 1")
    if clock_mhz is not None and not (np.isfinite(clock_mhz) and clock_mhz > 0):
        raise InputError(f"clock {clock_mhz} MHz: expected a positive number")
    if model is not None and not Path(model).is_file():
        raise InputError(f"model {str(model)!r}: expected an ONNX file, found none")
    if data is not None and model is None:
        raise InputError("data: expected a model for it to calibrate (the reference models take none)")
    profile.require_tools()
    clock = float(clock_mhz or profile.clock_mhz)
    with tempfile.TemporaryDirectory(prefix="edgernn-device-") as scratch:
        root = Path(work_dir or scratch)
        root.mkdir(parents=True, exist_ok=True)
        if model is None:
            from edgernn.benchmark import reference_models

            models = [(label, path) for label, path, _ in reference_models(root)]
        else:
            models = [(str(model), Path(model))]
        results = []
        for label, path in models:
            work = root / path.stem
            work.mkdir(parents=True, exist_ok=True)
            bench = DeviceBench(label, profile, clock)
            for precision in precisions:
                bench.results.append(
                    bench_precision(
                        path,
                        profile,
                        precision,
                        clock_mhz=clock,
                        steps=steps,
                        work=work,
                        self_test=self_test,
                        data=data,
                    )
                )
            results.append(bench)
    return results
