"""The ``c`` deploy writer for ``--precision integer``: calibrate on real data, judge against float32, write
NAME.h, NAME.c and NAME_test.c, and replay the integer reference on this machine before they are kept.
edgernn's own cells become an ``IntegerModel`` (``export.integer_calibration``, ``export.c.integer``); any
other graph (a bring-your-own model) an ``IntegerProgram`` (``export.c.integer_program``,
``export.c.integer_program_c``).

A model that fails a quality gate (the closed-loop drift, the task metric on ``--data``: 0.05 nats per
character, 1 point of accuracy, an MSE within 10%; an anomaly model's top score within 100 rows of the
labelled anomaly where float32's is) is not written unless forced; the error says which gate failed and by
how much.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgernn.export.c.bounds import MAX_SCRATCH_BYTES, MAX_STATE_BYTES, check_size, size_option
from edgernn.export.c.build import verify_host
from edgernn.export.c.generate import _check_io, _check_quantization, check_name, load_model, read_info
from edgernn.export.c.integer import IntegerSources, integer_sources
from edgernn.export.c.integer_selftest import (
    integer_test_source,
    record_integer_golden,
    record_program_golden,
)
from edgernn.export.c.selftest import golden_inputs
from edgernn.export.deploy import DeployReport
from edgernn.runtime.errors import InputError, ParityError, QuantizationError
from edgernn.runtime.integer_layers import EXP_MAX_ERROR
from edgernn.runtime.integer_ops import SIGMOID_MAX_ERROR, TANH_MAX_ERROR
from edgernn.runtime.integer_program import IntegerProgram, QSoftmax
from edgernn.runtime.integer_ref import IntegerModel

SYNTHETIC_STEPS = 4000


def integer_model_for(
    model: str | os.PathLike | bytes,
    data: str | os.PathLike | None = None,
    tolerance: float | None = None,
) -> tuple[IntegerModel | IntegerProgram, Any, Any, bytes]:
    """Calibrate ``model`` (an edgernn float32 file) on ``data`` (or, without it, the self-test's inputs) and
    run the quality gates: (IntegerModel, or IntegerProgram for a bring-your-own graph; info,
    QualityReport, the model's bytes). Nothing raises on a failed gate (see the report's ``failures`` and
    ``fatal``)."""
    from edgernn.export import integer_calibration, quality

    proto, content = load_model(model)
    info = read_info(proto)
    _check_quantization(info, "int8")
    _check_io(proto, info)
    integer_calibration.check_integer_graph(info)
    own = integer_calibration.is_own_model(proto) and "front_end" not in info.extra  # keyword: a program
    weights = integer_calibration.float_parameters(proto, info) if own else None
    evaluation = None
    if data is not None:
        evaluation = quality.evaluation_data_from_model(content, data)
        calibration, series = evaluation.calibration, evaluation.series()
    else:
        calibration = series = golden_inputs(info, SYNTHETIC_STEPS)
    if own:
        ranges = integer_calibration.calibrate(content, info, calibration)
        integer = integer_calibration.integer_model(weights, ranges, info)
    else:
        integer = _program(proto, content, info, calibration)
    report = integer_calibration.check_integer(content, integer, info, series, evaluation, tolerance)
    return integer, info, report, content


def _program(proto, content: bytes, info, calibration) -> IntegerProgram:
    """A bring-your-own graph lowered as the float C lowers it, calibrated on ``calibration``."""
    from edgernn.export import integer_calibration, quality
    from edgernn.export.c.check import check_graph, check_vocabulary
    from edgernn.export.c.integer_float import program_peaks
    from edgernn.export.c.integer_program import integer_program
    from edgernn.export.c.lower import lower

    check_graph(proto, info)
    program = lower(proto, info)
    check_vocabulary(program)
    series = quality._tile(
        np.asarray(calibration),
        integer_calibration.CALIBRATION_STEPS,
        integer_calibration.CALIBRATION_STREAMS,
    )
    return integer_program(program, program_peaks(program, content, series))


def write(
    model: Path,
    stage: Path,
    *,
    name: str | None = None,
    fast_activations: bool | None = None,
    skip_verify: bool | None = None,
    data: str | os.PathLike | None = None,
    tolerance: float | None = None,
    force: bool | None = None,
    max_state_bytes: int | None = None,
    max_scratch_bytes: int | None = None,
) -> DeployReport:
    """Generate and verify the integer C of ``model`` into ``stage`` (options as ``writer.write``)."""
    name = check_name(name or "model")
    if fast_activations:
        raise InputError(
            "--fast-activations: the integer precision computes sigmoid and tanh by its own tables"
        )
    if tolerance is not None and data is None:
        raise InputError("--tolerance: the task-metric check it sets runs on --data FILE; give both")
    max_state = size_option(max_state_bytes, MAX_STATE_BYTES, "--max-state-bytes")
    max_scratch = size_option(max_scratch_bytes, MAX_SCRATCH_BYTES, "--max-scratch-bytes")
    integer, info, quality_report, content = integer_model_for(model, data, tolerance)
    window = None
    if data is not None and not quality_report.fatal:
        from edgernn.export import integer_calibration

        window = integer_calibration.anomaly_window(content, integer, info, data)
        failure = integer_calibration.anomaly_failure(window)
        if failure:
            quality_report.failures.append(failure)
    if quality_report.fatal:
        raise QuantizationError(quality_report.fatal)
    if quality_report.failures and not force:
        raise QuantizationError(quality_report.failures, forceable=True)
    if isinstance(integer, IntegerProgram):
        from edgernn.export.c.integer_program_c import program_sources

        sources = program_sources(integer, info, name, quality_report.summary())
        golden = record_program_golden(integer, info)
    else:
        sources = integer_sources(integer, info, name, quality_report.summary())
        golden = record_integer_golden(integer, info)
    check_size("the state", 2 * sources.state_values, max_state, "--max-state-bytes")
    check_size("a step's scratch on the stack", sources.scratch_bytes, max_scratch, "--max-scratch-bytes")
    files = {
        f"{name}.h": sources.header,
        f"{name}.c": sources.source,
        f"{name}_test.c": integer_test_source(name, integer, golden),
    }
    for file_name, text in files.items():
        (stage / file_name).write_text(text, encoding="utf-8")
    report = DeployReport(target="c", out_dir=stage)
    report.details = _details(name, sources, golden, quality_report)
    if isinstance(integer, IntegerProgram) and any(isinstance(op, QSoftmax) for op in integer.ops):
        report.details["activation_max_error"]["exp"] = EXP_MAX_ERROR
    _verify(stage, name, report, bool(skip_verify), golden.ys.shape[0])
    _quality_checks(report, quality_report, data is not None)
    if window is not None:
        report.details["anomaly_window"] = window
        report.checks.append(
            f"integer anomaly window: top score at row {window['top_row']['integer']} (float32: "
            f"{window['top_row']['float32']}); labelled anomaly +-100: rows {window['window'][0]}-{window['window'][1]}"
        )
    report.notes.append(
        f"RAM {sources.ram_bytes:,} bytes ({2 * sources.state_values:,} state per stream, {sources.scratch_bytes:,} "
        f"scratch on the stack), flash {sources.flash_bytes:,} bytes of weights and constants (plus code)"
    )
    report.notes.append(
        f"build into an app: cc -std=c99 -O2 -c {name}.c (include {name}.h; no libm; -DEDGERNN_NO_FLOAT "
        f"leaves out the float helpers); self-test: cc -std=c99 -O2 {name}.c {name}_test.c && ./a.out"
    )
    return report


def _details(name: str, sources: IntegerSources, golden, quality_report) -> dict[str, Any]:
    return {
        "name": name,
        "precision": "integer",
        "fast_activations": False,
        "flash_bytes": sources.flash_bytes,
        "ram_bytes": sources.ram_bytes,
        "state_bytes": 2 * sources.state_values,
        "scratch_bytes": sources.scratch_bytes,
        "golden_steps": int(golden.ys.shape[0]),
        "golden_stride": golden.stride,
        "verified": False,
        "activation_max_error": {"sigmoid": SIGMOID_MAX_ERROR, "tanh": TANH_MAX_ERROR},
        "quality": quality_report.summary(),
    }


def _verify(stage: Path, name: str, report: DeployReport, skip_verify: bool, steps: int) -> None:
    if skip_verify:
        report.checks.append("NOT VERIFIED: the self-test was neither compiled nor run (--no-verify)")
        report.notes.append(
            f"WARNING: unverified C; build and run {name}_test.c before trusting it: "
            f"cc -std=c99 -Wall -Wextra -Werror -pedantic -O2 {name}.c {name}_test.c && ./a.out"
        )
        return
    result = verify_host(stage, name)
    if not result.passed:
        raise ParityError(
            [f"the generated C failed its self-test on this machine:\n{result.output.strip()[-2000:]}"]
        )
    report.details.update(verified=True, max_abs_error=result.max_abs_error, self_test_steps=result.steps)
    report.checks.append(
        f"host self-test (cc -std=c99 -Wall -Wextra -Werror -pedantic -O2): {result.steps} steps equal the "
        "integer reference bit for bit (y and the final state, state fed back); error paths checked"
    )


def _quality_checks(report: DeployReport, result, with_data: bool) -> None:
    one, loop = result.one_step, result.closed_loop
    report.checks.append(
        f"integer one step against float32: largest |error| of y {one['y']:.3g} ({one['y_relative']:.2%} of max |y|)"
    )
    report.checks.append(
        f"integer closed loop ({loop['steps']} steps): y RMS error {loop['y']['start']:.3g} (start) -> "
        f"{loop['y']['end']:.3g} (end)"
    )
    if result.metric:
        m = result.metric
        report.checks.append(
            f"integer task metric: {m['name']} {m['quantized']:.4f} {m['unit']} vs float32 {m['float32']:.4f} "
            f"(change {m['delta']:+.4f}, tolerance {m['tolerance']:+.4f}; {m['data']})"
        )
    elif not with_data:
        report.checks.append(
            "integer task metric: NOT RUN (no --data; calibrated and checked on the self-test's synthetic inputs)"
        )
    if result.failures:
        report.checks.append("FORCED past failed checks: " + "; ".join(result.failures))
