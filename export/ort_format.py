"""The ``ort`` deploy target: ORT format files for onnxruntime's mobile and minimal builds.

``write`` converts the verified step graph (and its chunk graph, when one sits beside it and passes the
stepper's checks) with onnxruntime's own converter (``onnxruntime.tools.convert_onnx_models_to_ort``) and
writes, into the stage:

- ``<name>.ort`` and ``<name>.chunk.ort`` (``Stepper("<name>.ort")`` finds the chunk graph beside it);
- ``required_operators_and_types.config``: the operators and types both graphs need, for a reduced build
  (``./build.sh --minimal_build ... --include_ops_by_config ... --enable_reduced_operator_type_support``);
- with ``static_batch``: ``<name>.batch1.ort``, the step graph with its batch axis fixed at 1 (what the NNAPI
  and CoreML execution providers need), and the verdict of onnxruntime's mobile-usability checker.

Optimisation style ``runtime`` (the default) keeps the file portable: basic optimisations are applied and
the rest recorded for the runtime to replay. ``fixed`` applies every optimisation for one platform
(``target_platform``: ``arm`` or ``amd64``). Every file written is opened again and checked against the
ONNX file over ``VERIFY_STEPS`` steps with state fed back: the .ort through the Stepper (the chunk graph
through ``run()``), the static copy through an onnxruntime session at batch 1. A file that differs by more
than ``TOLERANCE`` is refused (ParityError) and nothing is written.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgernn.export.deploy import DeployReport
from edgernn.runtime import Stepper, contract, tolerance
from edgernn.runtime.chunk import chunk_path, probe_input
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ContractError, InputError, ParityError
from edgernn.runtime.session import QUIET_LOG_LEVEL

VERIFY_STEPS = 1000
TOLERANCE = 1e-6  # largest |error| allowed, relative to max(1, largest |y|) of the ONNX file; y in std units
CONFIG_NAME = "required_operators_and_types.config"
STATIC_SUFFIX = ".batch1"
STYLES = ("runtime", "fixed")
PLATFORMS = ("arm", "amd64")
# The oldest onnxruntime release that loads each ORT format version (the file's ``ort_version`` field),
# measured by loading converted files with released wheels: benchmarks/ort_format.py --releases.
OLDEST_RELEASE = {"6": "1.16.0"}
# Saved runtime optimisations that older releases refuse to load, and what makes them load (measured
# the same way: an int8-weights file, runtime style, converted with onnxruntime 1.32.0).
SAVED_OPTIMIZATION_NOTES = {
    "QDQSelectorActionTransformer.DQMatMulToMatMulNBits": (
        "onnxruntime 1.16.0-1.21.1 load it only with session.disable_quant_qdq=1 (the Stepper sets it for "
        "int8 weight files; an app must too)"
    ),
}


@dataclass(frozen=True)
class _Converted:
    """One converted graph: the ONNX source and the .ort written from it (inside the stage)."""

    onnx_path: Path
    ort_path: Path


def write(
    model: Path,
    stage: Path,
    *,
    optimization_style: str | None = None,
    target_platform: str | None = None,
    static_batch: bool | None = None,
) -> DeployReport:
    """Write ``model`` (a verified edgernn ONNX file) as ORT format files into ``stage``, and verify them.

    optimization_style: ``runtime`` (default, portable) or ``fixed`` (for ``target_platform``, needed
    then). static_batch: also write ``<name>.batch1.ort`` with the batch axis fixed at 1.
    """
    style = _style(optimization_style, target_platform)
    model = Path(model)
    reference = Stepper(model)
    info = _edgernn_info(reference, model)
    chunk = chunk_path(model) if reference.chunk_steps is not None else None
    with tempfile.TemporaryDirectory(prefix="edgernn-ort-") as work:
        work = Path(work)
        sources = _copy_sources(model, chunk, work / "onnx")
        if static_batch:
            sources.append(_static_copy(model, work / "onnx" / f"{model.stem}{STATIC_SUFFIX}.onnx"))
        converted = _convert(sources, work / "ort", stage, style, target_platform)
        usability = _mobile_usability(sources[-1]) if static_batch else None
    report = DeployReport(target="ort", out_dir=stage)
    details = _verify(model, info, converted, chunk, report)
    details.update(_format_details(converted, style, target_platform))
    details["quantization"] = (
        {k: info.quantization.get(k) for k in ("mode", "method")} if info.quantization else None
    )
    report.details = details
    report.notes += _notes(details, usability)
    if chunk is None and chunk_path(model).is_file():
        report.notes.append(
            f"{chunk_path(model).name} beside the model failed the stepper's checks: not converted"
        )
    if usability is not None:
        details["mobile_usability"] = usability
    return report


def _style(optimization_style: str | None, target_platform: str | None) -> str:
    style = optimization_style or ("fixed" if target_platform else "runtime")
    if style not in STYLES:
        raise InputError(f"--optimization-style: expected one of {', '.join(STYLES)}, got {style!r}")
    if target_platform is not None and target_platform not in PLATFORMS:
        raise InputError(
            f"--target-platform: expected one of {', '.join(PLATFORMS)}, got {target_platform!r}"
        )
    if style == "fixed" and target_platform is None:
        raise InputError(
            "--optimization-style fixed optimises for one platform: give --target-platform arm|amd64"
        )
    if style == "runtime" and target_platform is not None:
        raise InputError(
            "--target-platform applies to --optimization-style fixed only (runtime style is portable)"
        )
    return style


def _edgernn_info(stepper: Stepper, model: Path) -> ModelInfo:
    if stepper.info is None:
        raise ContractError(f"{model}: no edgernn metadata; the ort target takes a verified edgernn file")
    return stepper.info


def _copy_sources(model: Path, chunk: Path | None, directory: Path) -> list[Path]:
    """Copies of the graphs to convert: the converter writes scratch files beside its inputs."""
    directory.mkdir(parents=True)
    copies = [Path(shutil.copy2(model, directory / model.name))]
    if chunk is not None:
        copies.append(Path(shutil.copy2(chunk, directory / chunk.name)))
    return copies


def _static_copy(model: Path, target: Path) -> Path:
    """The step graph with its ``batch`` axis fixed at 1 (onnxruntime's make_dynamic_shape_fixed)."""
    import onnx
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_dim_param_fixed

    proto = onnx.load(str(model))
    make_dim_param_fixed(proto.graph, contract.BATCH_AXIS_NAME, 1)
    fix_output_shapes(proto)
    onnx.save(proto, str(target))
    return target


def _convert(
    sources: list[Path], scratch: Path, stage: Path, style: str, platform: str | None
) -> list[_Converted]:
    """Convert every source with onnxruntime's tool; the .ort files and the config move into the stage."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    tool_log = logging.getLogger("ort_format_model.utils")
    level, tool_log.level = tool_log.level, logging.WARNING
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), onnxruntime_log_as_warnings():  # stdout is the command's
            convert_onnx_models_to_ort(
                sources[0].parent,
                output_dir=scratch,
                optimization_styles=[
                    OptimizationStyle.Runtime if style == "runtime" else OptimizationStyle.Fixed
                ],
                target_platform=platform,
                enable_type_reduction=True,
            )
    except Exception as exc:  # the tool raises whatever onnxruntime raised
        raise ContractError(f"onnxruntime could not convert the model to ORT format: {exc}") from None
    finally:
        tool_log.level = level
    tag = ".with_runtime_opt" if style == "runtime" else ""
    shutil.move(scratch / f"required_operators_and_types{tag}.config", stage / CONFIG_NAME)
    converted = []
    for source in sources:
        target = stage / f"{source.stem}.ort"
        shutil.move(scratch / f"{source.stem}{tag}.ort", target)
        converted.append(_Converted(source, target))
    return converted


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ORT_LOG_LINE = re.compile(r"^\S+ \S+ \[([VIWEF]):onnxruntime:[^\]]*\] (.*)$")
_SEVERITY = {"V": "verbose", "I": "info", "W": "warning", "E": "error", "F": "fatal"}


@contextlib.contextmanager
def onnxruntime_log_as_warnings() -> Iterator[None]:
    """What onnxruntime's C++ logger writes to stderr meanwhile (ANSI-coloured, timestamped lines the
    converter's sessions emit: "Serializing optimized model with ... NchwcTransformer enabled"), turned into
    one Python warning per distinct message, without colour or timestamp, once the block ends (also when
    it raises: the lines may say why)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for message in dict.fromkeys(_log_messages(captured.read().decode("utf-8", errors="replace"))):
                warnings.warn(message, stacklevel=3)


def _log_messages(text: str) -> Iterator[str]:
    for line in _ANSI.sub("", text).splitlines():
        line = line.strip()
        match = _ORT_LOG_LINE.match(line)
        if match:
            yield f"onnxruntime {_SEVERITY[match.group(1)]}: {match.group(2).strip()}"
        elif line:
            yield line


# --- verification ----------------------------------------------------------------------------------


def _verify(
    model: Path, info: ModelInfo, converted: list[_Converted], chunk: Path | None, report: DeployReport
) -> dict[str, Any]:
    xs = probe_input(info, VERIFY_STEPS)[0]  # (T,) token ids or (T, F) features on the model's scale
    want = _stepped(Stepper(model, chunk_model=False), xs)
    errors: dict[str, float] = {}
    step_ort = converted[0].ort_path
    y_scale = tolerance.output_scale(info)
    errors[step_ort.name] = _compare(
        want, _stepped(Stepper(step_ort, chunk_model=False), xs), step_ort.name, y_scale
    )
    report.checks.append(_check_line(step_ort.name, "the Stepper, step by step", errors[step_ort.name]))
    if chunk is not None:
        chunk_ort = converted[1].ort_path
        errors[chunk_ort.name] = _verify_chunk(model, step_ort, chunk_ort, xs, y_scale)
        report.checks.append(_check_line(chunk_ort.name, "Stepper.run()", errors[chunk_ort.name]))
    if converted[-1].ort_path.stem.endswith(STATIC_SUFFIX):
        static = converted[-1].ort_path
        errors[static.name] = _compare(want, _session_loop(static, info, xs), static.name, y_scale)
        report.checks.append(
            _check_line(static.name, "an onnxruntime session at batch 1", errors[static.name])
        )
    return {"verify_steps": VERIFY_STEPS, "tolerance": TOLERANCE, "largest_error": errors}


def _check_line(name: str, how: str, error: float) -> str:
    return (
        f"{name} through {how}: {VERIFY_STEPS} steps with state fed back equal the ONNX file "
        f"(largest error {error:.3g}, tolerance {TOLERANCE:g})"
    )


def _stepped(stepper: Stepper, xs: np.ndarray) -> list[np.ndarray]:
    """y at every step ``(T, O)``, then every state after the last step; one step per call."""
    ys = np.stack([stepper.step(x) for x in xs])
    return [ys, *(stepper.state[s.input][0] for s in stepper.info.states)]


def _verify_chunk(model: Path, step_ort: Path, chunk_ort: Path, xs: np.ndarray, y_scale: np.ndarray) -> float:
    reference = Stepper(model)
    converted = Stepper(step_ort, chunk_model=chunk_ort)
    if converted.chunk_steps is None or reference.chunk_steps is None:
        raise ParityError([f"{chunk_ort.name}: the Stepper did not take it as the chunk graph"])
    results = []
    for stepper in (reference, converted):
        ys = stepper.run(xs)  # (T, O), through the chunk graph
        results.append([ys, *(stepper.state[s.input][0] for s in stepper.info.states)])
    return _compare(results[0], results[1], chunk_ort.name, y_scale)


def _session_loop(path: Path, info: ModelInfo, xs: np.ndarray) -> list[np.ndarray]:
    """The static-batch graph stepped by a plain onnxruntime session (the Stepper wants a dynamic batch)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = QUIET_LOG_LEVEL  # a failure is raised and reported; no log lines
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    state = {s.input: np.full((1, *s.shape), s.initial, np.float32) for s in info.states}
    names = [contract.OUTPUT_NAME, *(s.output for s in info.states)]
    ys = []
    for x in xs:
        y, *after = session.run(names, {contract.INPUT_NAME: np.asarray(x)[None], **state})
        state = {s.input: value for s, value in zip(info.states, after, strict=True)}
        ys.append(y[0])
    return [np.stack(ys), *(state[s.input][0] for s in info.states)]


def _compare(want: list[np.ndarray], got: list[np.ndarray], name: str, y_scale: np.ndarray) -> float:
    """want, got: y ``(T, O)`` then every state. y is compared on the model's scale (divided by each
    output's training std, ``edgernn.runtime.tolerance``), so the bound means the same in any units."""
    scales = [y_scale, *([1.0] * (len(want) - 1))]
    error = max(
        tolerance.largest(tolerance.scaled_error(g, w, s)) for w, g, s in zip(want, got, scales, strict=True)
    )
    scale = max(1.0, float(np.abs(want[0] / y_scale).max()))
    if not error <= TOLERANCE * scale:
        raise ParityError(
            [f"{name}: largest error {error:.3g} over {VERIFY_STEPS} steps against the ONNX file, past "
             f"{TOLERANCE:g} x {scale:.3g}; nothing was written"]
        )  # fmt: skip
    return error


# --- what was written ------------------------------------------------------------------------------


def _session_table(path: Path) -> Any:
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.InferenceSession import InferenceSession

    buffer = path.read_bytes()
    if not InferenceSession.InferenceSessionBufferHasIdentifier(buffer, 0):
        raise ContractError(f"{path}: not an ORT format file (no ORTM identifier)")
    return InferenceSession.GetRootAs(buffer, 0)


def ort_format_version(path: Path) -> str:
    """The ORT format version a .ort file records (its ``ort_version`` field), read from the file."""
    return _session_table(path).OrtVersion().decode()


def saved_optimizations(path: Path) -> list[str]:
    """The runtime optimisations a runtime-style .ort file saved for replay (``Optimizer.Action``), read
    from the file; a release of onnxruntime that does not know one of them refuses the file."""
    saved = _session_table(path).Model().Graph().RuntimeOptimizations()
    names = set()
    for i in range(saved.RecordsLength() if saved is not None else 0):
        entry = saved.Records(i)
        for j in range(entry.RuntimeOptimizationRecordsLength()):
            action = entry.RuntimeOptimizationRecords(j).ActionId().decode()
            names.add(f"{entry.OptimizerName().decode()}.{action}")
    return sorted(names)


def _format_details(converted: list[_Converted], style: str, platform: str | None) -> dict[str, Any]:
    versions = sorted({ort_format_version(c.ort_path) for c in converted})
    optimizations = sorted({o for c in converted for o in saved_optimizations(c.ort_path)})
    return {
        "optimization_style": style,
        "target_platform": platform,
        "ort_format_version": versions[-1],
        "saved_runtime_optimizations": optimizations,
        "oldest_onnxruntime": max((OLDEST_RELEASE.get(v, "unknown") for v in versions), key=_release_key),
        "converted_with_onnxruntime": ort.__version__,
        "files": {c.onnx_path.name: c.ort_path.name for c in converted},
        "operator_config": CONFIG_NAME,
    }


def _release_key(version: str) -> tuple:
    return tuple(int(p) for p in version.split(".")) if version != "unknown" else (1_000,)


def build_command(config: str, style: str) -> str:
    """The reduced-build command for onnxruntime's build script, for the operators in ``config``.

    A runtime-style file replays its saved optimisations only in an extended minimal build.
    """
    minimal = "--minimal_build extended" if style == "runtime" else "--minimal_build"
    return (
        f"./build.sh --config MinSizeRel {minimal} --include_ops_by_config {config} "
        "--enable_reduced_operator_type_support --disable_ml_ops --disable_exceptions --build_shared_lib --parallel"
    )


def _notes(details: dict[str, Any], usability: dict[str, Any] | None) -> list[str]:
    style = details["optimization_style"]
    notes = [
        f"ORT format version {details['ort_format_version']} (converted with onnxruntime "
        f"{details['converted_with_onnxruntime']}); oldest onnxruntime that loads it: {details['oldest_onnxruntime']}",
        f"optimisation style {style}"
        + (f" for {details['target_platform']}" if details["target_platform"] else " (portable)"),
        f"reduced build: {build_command(f'<DIR>/{CONFIG_NAME}', style)}",
        "(<DIR> is this directory; add --android --android_abi arm64-v8a ... or --ios ... for a phone)",
    ]
    if style == "runtime":
        notes.append(
            "runtime style: set session.enable_saved_runtime_optimizations=1 to replay its optimisations"
        )
    notes += _precision_notes(details.get("quantization"))
    for name in details["saved_runtime_optimizations"]:
        if name in SAVED_OPTIMIZATION_NOTES:
            notes.append(f"saved optimisation {name}: {SAVED_OPTIMIZATION_NOTES[name]}")
    if usability is not None:
        notes += [f"mobile usability: {line}" for line in usability["verdict"]]
    return notes


def _precision_notes(quantization: dict[str, Any] | None) -> list[str]:
    """What the conversion does to quantized weights (measured; docs/ort.md)."""
    mode, method = (quantization or {}).get("mode"), (quantization or {}).get("method")
    if mode == "fp16":
        return [
            "fp16: the converter folds the weights' casts, so the .ort holds float32 weights (about 2x the .onnx)"
        ]
    if mode == "int8" and method == "weights":
        return [
            "int8 weights: onnxruntime folds no DequantizeLinear in an ORT format file; it runs at every step"
        ]
    return []


def _mobile_usability(static_onnx: Path) -> dict[str, Any]:
    """onnxruntime's mobile-usability checker on the static-batch graph: its verdict lines per EP."""
    from onnxruntime.tools.mobile_helpers import usability_checker

    lines: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("edgernn.ort_usability")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = _Collect()
    logger.addHandler(handler)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            try_eps = usability_checker.analyze_model(static_onnx, skip_optimize=False, logger=logger)
    finally:
        logger.removeHandler(handler)
    verdict = [line.strip() for line in lines if line.strip().startswith("Model should perform well with")]
    return {"try_nnapi_or_coreml": bool(try_eps), "verdict": verdict}
