"""Export a RecurrentModel (or a run directory) to a verified single-step ONNX file."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx
from onnx import helper

from edgernn.checkpoint import load_checkpoint
from edgernn.export.chunk import CHUNK_STEPS, build_chunk_model, chunk_info, verify_chunk
from edgernn.export.graph import build_info, build_step_model
from edgernn.export.quality import EvaluationData, check_quality, evaluation_data, evaluation_data_from_model
from edgernn.export.quantize import QuantizeConfig, quantize_step_model
from edgernn.export.verify import ParityReport, verify_export
from edgernn.models import RecurrentModel
from edgernn.runtime import contract
from edgernn.runtime.chunk import chunk_path
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ContractError, InputError, QuantizationError
from edgernn.runtime.files import atomic_write_bytes, atomic_write_files
from edgernn.runtime.integrity import graph_sha256


@dataclass
class ExportReport:
    """What was written and how closely it matches PyTorch."""

    path: Path
    size_bytes: int
    info: ModelInfo
    parity: ParityReport | None
    float32_size_bytes: int | None = None  # set for a quantized export; its metadata has the rest
    chunk_path: Path | None = None  # the chunk graph written next to it (float32 exports)
    chunk_parity: ParityReport | None = None

    @property
    def quantization(self) -> dict[str, Any] | None:
        """The ``quantization`` metadata: mode, what was quantized, calibration, checks; None for float32."""
        return self.info.quantization


def export_model(
    model: RecurrentModel,
    path: str | os.PathLike,
    *,
    vocabulary: list[str] | None = None,
    verify: bool = True,
    extra_metadata: dict | None = None,
    quantize: QuantizeConfig | None = None,
    data: EvaluationData | None = None,
    chunk_steps: int | None = CHUNK_STEPS,
) -> ExportReport:
    """Write ``model`` as a single-step ONNX graph with explicit state, verified against PyTorch first.

    A float32 export also writes its chunk graph (``chunk_steps`` steps per call, verified the same way)
    next to it as ``<name>.chunk.onnx``, which ``Stepper.run`` uses; ``chunk_steps=None`` writes none.
    Either way a chunk graph left there by an earlier export is replaced or removed.

    With ``quantize`` (mode other than none) the verified float32 graph is quantized and checked against
    itself on ``data`` (real data: needed for quantized exports): one step, a 3000-step closed loop, the
    task metric. The file is written atomically and only after every check passed: a failed check raises
    ParityError (QuantizationError for the quantized checks) and leaves ``path`` as it was.
    """
    if vocabulary is not None and len(vocabulary) != model.config.input_size:
        raise InputError(
            f"vocabulary has {len(vocabulary)} entries, the model's input_size is {model.config.input_size}"
        )
    model = model.eval()
    info = build_info(model, vocabulary, extra_metadata)
    proto = build_step_model(model, info)
    parity = verify_export(model, proto, info) if verify else None
    float32_size = None
    quantized = quantize is not None and quantize.mode != "none"
    chunk = None if quantized or not chunk_steps else build_chunk_model(model, info, chunk_steps)
    chunk_parity = verify_chunk(model, chunk) if chunk is not None and verify else None
    if quantized:
        float32_size = sealed_size(proto, info)
        proto, info = quantize_checked(proto, info, quantize, data)
    if chunk is not None:
        info = replace(info, chunk_steps=chunk_info(chunk).steps_per_call)
    content, info = seal(proto, info)
    written, written_chunk = write_pair(path, content, chunk, info)
    return ExportReport(written, len(content), info, parity, float32_size, written_chunk, chunk_parity)


def seal(proto: onnx.ModelProto, info: ModelInfo) -> tuple[bytes, ModelInfo]:
    """The file's bytes with ``info`` and the checksum of its graph (``graph_sha256``) in the metadata,
    which the stepper checks at load (``edgernn.runtime.integrity``)."""
    info = replace(info, graph_sha256=graph_sha256(proto.SerializeToString()))
    _set_info(proto, info)
    content = proto.SerializeToString()
    assert graph_sha256(content) == info.graph_sha256, "setting the metadata changed the graph's bytes"
    return content, info


def sealed_size(proto: onnx.ModelProto, info: ModelInfo) -> int:
    """Bytes of the file ``seal`` would make of ``proto`` (the float32 size a quantized export reports)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return len(seal(copy, info)[0])


def write_pair(
    path: str | os.PathLike, content: bytes, chunk: onnx.ModelProto | None, info: ModelInfo
) -> tuple[Path, Path | None]:
    """Write a sealed step graph and its chunk graph (which records the step graph's checksum, so a chunk
    beside another export's step graph is recognised at load), or remove a chunk an earlier export left.

    Both are staged before either is renamed into place, step graph first: a kill in between leaves the
    new step graph beside the old chunk graph, which the checksum tells apart.
    """
    target = chunk_path(path)
    if chunk is None:
        written = atomic_write_bytes(path, content)
        target.unlink(missing_ok=True)
        return written, None
    chunk_meta = replace(chunk_info(chunk), step_graph_sha256=info.graph_sha256)
    chunk_content, _ = seal(chunk, chunk_meta)
    written, written_chunk = atomic_write_files([(path, content), (target, chunk_content)])
    return written, written_chunk


def quantize_checked(
    proto: onnx.ModelProto, info: ModelInfo, config: QuantizeConfig, data: EvaluationData | None
) -> tuple[onnx.ModelProto, ModelInfo]:
    """Quantize a verified float32 step graph, check it against that graph on ``data`` (one step, the
    closed loop, the task metric) and record it all in the metadata; or refuse (QuantizationError)."""
    if data is None:
        raise InputError("a quantized export is checked on real data: pass data=EvaluationData(...)")
    info = contract.unsealed(info)  # a new graph: the float32 graph's checksum does not describe it
    quantized, summary = quantize_step_model(proto, info, config, data.calibration)
    _set_info(quantized, info := replace(info, quantization=summary))
    report = check_quality(
        proto.SerializeToString(), quantized.SerializeToString(), info, data, config.tolerance
    )
    if report.fatal or (report.failures and not config.force):
        raise QuantizationError([*report.fatal, *report.failures], forceable=not report.fatal)
    summary["checks"] = _rounded(report.summary())
    _set_info(quantized, info := replace(info, quantization=summary))
    return quantized, info


def _rounded(value: Any) -> Any:
    """Five significant digits: the metadata records the checks, not every bit of them."""
    if isinstance(value, float):
        return float(f"{value:.5g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _set_info(proto: onnx.ModelProto, info: ModelInfo) -> None:
    del proto.metadata_props[:]
    helper.set_model_props(proto, {contract.METADATA_KEY: contract.parse_info(info.to_json()).to_json()})


def export_run(
    run_dir: str | os.PathLike,
    path: str | os.PathLike,
    *,
    verify: bool = True,
    quantize: QuantizeConfig | None = None,
    data_path: str | os.PathLike | None = None,
) -> ExportReport:
    """Export the model of a run directory written by ``edgernn train``.

    A quantized export is checked on the run's own data (its validation split; ``data_path`` replaces the
    file it was trained on).
    """
    checkpoint = load_checkpoint(run_dir)
    if checkpoint.task == "keyword":  # the front end goes in front of the model (edgernn.export.keyword)
        from edgernn.export.keyword import export_keyword_run

        return export_keyword_run(checkpoint, path, verify=verify, quantize=quantize, data_path=data_path)
    extra = {"task": checkpoint.task} if checkpoint.task else {}
    extra.update(checkpoint.train_config.get("metadata") or {})  # classes, columns, targets, anomaly
    quantized = quantize is not None and quantize.mode != "none"
    data = evaluation_data(checkpoint, data_path) if quantized else None
    return export_model(
        checkpoint.model,
        path,
        vocabulary=checkpoint.vocabulary,
        verify=verify,
        extra_metadata=extra,
        quantize=quantize,
        data=data,
    )


def quantize_file(
    model: str | os.PathLike,
    path: str | os.PathLike,
    config: QuantizeConfig,
    data_path: str | os.PathLike,
    **data_options: Any,
) -> ExportReport:
    """Quantize a verified float32 edgernn file (``export_model``'s or ``export_module``'s) without its run
    directory: the same quantization and checks as ``export_run(..., quantize=config)``, on ``data_path``
    read as the model's metadata says (``evaluation_data_from_model``; ``data_options`` go there) and split
    as training splits it. Written atomically to ``path`` only after every check passed; a chunk graph
    left beside ``path`` is removed, as a quantized export has none.
    """
    model, path = Path(model), Path(path)
    if config.mode == "none":
        raise InputError("--mode: expected one of int8, fp16, int4")
    if path.resolve() == model.resolve():
        raise InputError(f"-o {str(path)!r}: expected a new file, not the model itself (it stays as it was)")
    proto, info = _read_float32(model)
    data = evaluation_data_from_model(info, data_path, **data_options)
    quantized, info = quantize_checked(proto, info, config, data)
    content, info = seal(quantized, info)
    written, _ = write_pair(path, content, None, info)  # removes a chunk graph left beside path
    return ExportReport(written, len(content), info, None, model.stat().st_size)


def _read_float32(model: Path) -> tuple[onnx.ModelProto, ModelInfo]:
    """The model's graph and metadata; refused unless it is an edgernn float32 step graph."""
    try:
        proto = onnx.load(str(model))
    except Exception as exc:  # onnx raises DecodeError and others for a file that is not a model
        raise InputError(f"{model}: not an ONNX model ({type(exc).__name__})") from None
    text = {p.key: p.value for p in proto.metadata_props}.get(contract.METADATA_KEY)
    if text is None:
        raise ContractError(f"{model}: no edgernn metadata; quantize takes a file edgernn exported")
    info = contract.parse_info(text)
    if info.steps_per_call != 1:
        raise InputError(f"{model}: a chunk graph; quantize the step model it belongs to")
    if info.quantization is not None:
        raise InputError(
            f"{model}: already quantized ({info.quantization.get('mode')}); quantize its float32 original"
        )
    return proto, info
