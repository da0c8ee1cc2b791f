"""The ``c`` deploy writer: NAME.h, NAME.c and NAME_test.c, verified on this machine before they are kept."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from edgernn.export.c.build import build_shared_library, verify_host
from edgernn.export.c.generate import PRECISIONS, CSources, check_name, generate_sources
from edgernn.export.c.selftest import RTOL, golden_inputs, record_golden, test_source, tolerance_for
from edgernn.export.deploy import DeployReport
from edgernn.runtime.errors import InputError, ParityError, QuantizationError


def write(
    model: Path,
    stage: Path,
    *,
    name: str | None = None,
    precision: str | None = None,
    fast_activations: bool | None = None,
    skip_verify: bool | None = None,
    data: str | os.PathLike | None = None,
    tolerance: float | None = None,
    force: bool | None = None,
    max_state_bytes: int | None = None,
    max_scratch_bytes: int | None = None,
) -> DeployReport:
    """Generate the C for ``model`` into ``stage`` and verify it (see the module docstring of
    ``edgernn.export.c`` and docs/c.md).

    name: the file names and C prefix (default ``model``). precision: ``float32`` (default), ``int8``, or
    ``integer`` (no floating point in a step; calibrated on ``data``: ``export.c.integer_writer``).
    fast_activations: rational tanh/sigmoid. skip_verify: write without compiling and running the
    self-test (the report says so). data, tolerance, force: the int8 quality gates, as ``edgernn export``
    takes them: the task metric on ``data`` (a data file the model's metadata describes), its tolerance,
    and writing a target that fails the drift or metric check anyway (``deploy`` also passes ``force``
    when it replaces a foreign directory; float32 has no gate to force). max_state_bytes,
    max_scratch_bytes: raise the bounds on the state struct and on a step's scratch on the stack (docs/c.md).
    """
    name = check_name(name or "model")
    precision = precision or "float32"
    if precision == "integer":  # its own calibration, gates and self-test (export.c.integer_writer)
        from edgernn.export.c import integer_writer

        return integer_writer.write(
            model, stage, name=name, fast_activations=fast_activations, skip_verify=skip_verify, data=data,
            tolerance=tolerance, force=force, max_state_bytes=max_state_bytes,
            max_scratch_bytes=max_scratch_bytes,
        )  # fmt: skip
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "int8" and (data is not None or tolerance is not None):  # force: also the directory's
        flags = [f for f, v in (("--data", data), ("--tolerance", tolerance)) if v]
        raise InputError(f"{', '.join(flags)}: the quality gates are for --precision int8 (float32 is exact)")
    if tolerance is not None and data is None:
        raise InputError("--tolerance: the task-metric check it sets runs on --data FILE; give both")
    sources = generate_sources(
        model, name=name, precision=precision, fast_activations=bool(fast_activations),
        max_state_bytes=max_state_bytes, max_scratch_bytes=max_scratch_bytes,
    )  # fmt: skip
    golden = record_golden(sources)
    files = dict(sources.files)
    atol = tolerance_for(sources, golden)
    files[f"{name}_test.c"] = test_source(sources, golden, atol=atol)
    for file_name, text in files.items():
        (stage / file_name).write_text(text, encoding="utf-8")
    report = DeployReport(target="c", out_dir=stage)
    details: dict[str, Any] = {
        "name": name,
        "precision": precision,
        "fast_activations": bool(fast_activations),
        "flash_bytes": sources.flash_bytes,
        "ram_bytes": sources.ram_bytes,
        "state_bytes": 4 * sources.state_floats,
        "scratch_bytes": sources.scratch_bytes,
        "golden_steps": int(golden.ys.shape[0]),
        "golden_stride": golden.stride,
        "verified": False,
    }
    if skip_verify:
        report.checks.append("NOT VERIFIED: the self-test was neither compiled nor run (--no-verify)")
        report.notes.append(
            f"WARNING: unverified C; build and run {name}_test.c before trusting it: "
            f"cc -std=c99 -Wall -Wextra -Werror -pedantic -O2 {name}.c {name}_test.c -lm && ./a.out"
        )
    else:
        result = verify_host(stage, name)
        if not result.passed:
            raise ParityError(
                [f"the generated C failed its self-test on this machine:\n{result.output.strip()[-2000:]}"]
            )
        details.update(verified=True, max_abs_error=result.max_abs_error, self_test_steps=result.steps)
        report.checks.append(
            f"host self-test (cc -std=c99 -Wall -Wextra -Werror -pedantic -O2): {result.steps} steps against "
            f"the onnxruntime stepper, state fed back, largest error {result.max_abs_error:.3g} on the model's "
            f"scale (tolerance {atol:.3g} x each output's training std + {RTOL:g} x |want|); error paths checked"
        )
    if precision == "int8":
        _quality_gates(sources, report, details, data, tolerance, bool(force), skip_verify=bool(skip_verify))
    report.notes.append(
        f"RAM {sources.ram_bytes:,} bytes ({4 * sources.state_floats:,} state per stream, "
        f"{sources.scratch_bytes:,} scratch on the stack), flash {sources.flash_bytes:,} bytes of weights and "
        "constants (plus code)"
    )
    report.notes.append(
        f"build into an app: cc -std=c99 -O2 -c {name}.c (include {name}.h; link -lm); "
        f"self-test: cc -std=c99 -O2 {name}.c {name}_test.c -lm && ./a.out"
    )
    report.details = details
    return report


def _quality_gates(
    sources: CSources,
    report: DeployReport,
    details: dict[str, Any],
    data: str | os.PathLike | None,
    tolerance: float | None,
    force: bool,
    skip_verify: bool,
) -> None:
    """The int8 C against the float32 stepper: one step, the closed loop, the task metric with ``data``."""
    from edgernn.export import quality
    from edgernn.runtime import Stepper
    from edgernn.runtime.native import NativeStepper

    if skip_verify:
        report.checks.append("NOT CHECKED: int8 quality gates (they run the compiled C; --no-verify)")
        return
    evaluation = None
    if data is not None:
        evaluation = quality.evaluation_data_from_model(sources.source_model, data)
    with tempfile.TemporaryDirectory(prefix="edgernn-c-int8-") as tmp:
        for file_name, text in sources.files.items():
            (Path(tmp) / file_name).write_text(text, encoding="utf-8")
        library = build_shared_library(tmp, sources.name)
        native = NativeStepper(library, name=sources.name)
        fp32 = Stepper(sources.source_model, chunk_model=False)
        series = evaluation.series() if evaluation is not None else golden_inputs(sources.info, 4000)
        result = quality.check_steppers(fp32, native, sources.info, series, evaluation, tolerance)
        native.close()
    summary = result.summary()
    details["quality"] = summary
    one = result.one_step
    loop = result.closed_loop
    report.checks.append(
        f"int8 one step against float32: largest |error| of y {one['y']:.3g} ({one['y_relative']:.2%} of max |y|)"
    )
    report.checks.append(
        f"int8 closed loop ({loop['steps']} steps, {quality.LOOP_STREAMS} streams): y RMS error "
        f"{loop['y']['start']:.3g} (start) -> {loop['y']['end']:.3g} (end)"
    )
    if result.metric:
        m = result.metric
        report.checks.append(
            f"int8 task metric: {m['name']} {m['quantized']:.4f} {m['unit']} vs float32 {m['float32']:.4f} "
            f"(change {m['delta']:+.4f}, tolerance {m['tolerance']:+.4f}; {m['data']})"
        )
    else:
        report.checks.append(
            "int8 task metric: NOT RUN (no --data; the one-step and drift checks ran on the self-test's inputs)"
        )
    if result.fatal:
        raise QuantizationError(result.fatal)
    if result.failures:
        if not force:
            raise QuantizationError(result.failures, forceable=True)
        report.checks.append("FORCED past failed checks: " + "; ".join(result.failures))
