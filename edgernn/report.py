"""What ``edgernn inspect`` shows: the contract, the metadata, and the size and precision of each weight."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from edgernn.runtime import describe
from edgernn.train_summary import names_text


def weight_table(path: str | os.PathLike) -> list[dict[str, Any]] | None:
    """Every initializer: name, stored dtype, shape, bytes, and what it is.

    ``role`` is ``weight``, ``scale`` or ``zero point`` (quantization parameters), ``normalisation`` (the
    training split's mean and std, applied in the graph) or ``constant`` (indices, shapes); ``precision`` is how a weight's numbers are held (``int4`` for 4-bit weights packed two to a
    uint8 byte, with their block size); ``parameters`` counts a weight's numbers (packed ones unpacked).
    None where onnx is not installed.
    """
    try:
        import onnx
    except ImportError:
        return None
    proto = onnx.load(os.fspath(path), load_external_data=False)
    packed = _packed_weights(proto)
    front_end = _front_end_constants(proto)
    return [
        _weight_row(init, packed.get(init.name), init.name in front_end) for init in proto.graph.initializer
    ]


FRONT_END_PREFIX = "frontend"  # a keyword model's front-end nodes and constants (export.keyword)


def _front_end_constants(proto: Any) -> set[str]:
    """Initializers that only a keyword model's front end reads (its window, DFT and mel matrices): fixed
    by the front end's sizes, not trained."""
    readers: dict[str, list[str]] = {}
    for node in proto.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.name)
    return {
        init.name
        for init in proto.graph.initializer
        if readers.get(init.name) and all(n.startswith(FRONT_END_PREFIX) for n in readers[init.name])
    }


def _packed_weights(proto: Any) -> dict[str, tuple[str, int]]:
    """Initializers holding n-bit blocks (MatMulNBits input B): name -> (precision, parameter count)."""
    packed = {}
    for node in proto.graph.node:
        if node.op_type == "MatMulNBits" and len(node.input) > 1:
            attrs = {a.name: a.i for a in node.attribute}
            precision = f"int{attrs.get('bits', 4)} (packed, blocks of {attrs.get('block_size', '?')})"
            packed[node.input[1]] = (precision, attrs.get("K", 0) * attrs.get("N", 0))
    return packed


def _weight_row(init: Any, packed: tuple[str, int] | None, front_end: bool = False) -> dict[str, Any]:
    from onnx import helper

    dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
    shape = list(init.dims)
    count = _count(shape)
    nbytes = len(init.raw_data) if init.HasField("raw_data") else count * dtype.itemsize
    role = _role(init.name, dtype)
    if front_end and role == "weight":
        role = "front end"  # a constant of the front end (window, DFT, mel bands): not trained
    precision = str(dtype) if role == "weight" else f"{dtype} {role}"
    if packed is not None:
        precision, count = packed
    return {
        "name": init.name,
        "dtype": str(dtype),
        "shape": shape,
        "bytes": nbytes,
        "role": role,
        "precision": precision,
        "parameters": count if role == "weight" else 0,
        "front_end_constants": count if role == "front end" else 0,
    }


_NORMALISATION = {"input.mean", "input.std", "output.mean", "output.std"}


def _role(name: str, dtype: Any) -> str:
    if name in _NORMALISATION:
        return "normalisation"  # training statistics, not trained: outside the parameter count, as in train
    # onnxruntime's quantizers name the parameters they add after the tensor they belong to.
    if name.endswith(("_scale", "_scales")):
        return "scale"
    if name.endswith(("_zero_point", "_zero_points")):
        return "zero point"
    return "constant" if dtype.kind in "iu" and dtype.itemsize == 8 else "weight"


def describe_model(path: str | os.PathLike) -> dict[str, Any]:
    """``edgernn.runtime.describe`` plus the weights (when onnx is available)."""
    doc = describe(path)  # validates the file and its metadata first
    weights = weight_table(path)
    doc["weights"] = weights
    if weights is not None:
        doc["parameters"] = sum(w["parameters"] for w in weights)
        doc["weight_bytes"] = sum(w["bytes"] for w in weights)
        front_end = [w for w in weights if w["role"] == "front end"]
        if front_end:
            doc["front_end_constants"] = sum(w["front_end_constants"] for w in front_end)
            doc["front_end_bytes"] = sum(w["bytes"] for w in front_end)
    return doc


def _count(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _tensor_line(arg: dict) -> str:
    shape = ", ".join(str(d) for d in arg["shape"])
    return f"  {arg['name']:<10} {arg['dtype']:<8} ({shape})"


def format_description(doc: dict[str, Any]) -> str:
    """Human-readable text of ``describe_model``'s document."""
    lines = [f"{doc['path']}: {doc['size_bytes']:,} bytes"]
    meta = doc["edgernn"]
    if meta is None:
        lines.append(
            "not an edgernn model (no edgernn metadata): name its state pairs to run it, e.g. "
            "edgernn bench MODEL --state IN=OUT [--constant NAME=NUMBER] (Python: Stepper(MODEL, state_map={IN: OUT}))"
        )
    else:
        inp, out = meta["input"], meta["output"]
        lines.append(
            f"edgernn schema {meta['schema_version']} (written by edgernn {meta['edgernn_version']}, opset {meta['opset']}): "
            f"{meta['cell']}, {meta['num_layers']} layer(s) x {meta['hidden_size']} hidden"
        )
        vocab = f", vocabulary of {len(inp['vocabulary'])}" if inp.get("vocabulary") else ""
        norm = ", normalised in the graph" if inp.get("mean") else ""
        lines.append(
            f"input: {inp['kind']} (size {inp['size']}{vocab}{norm}); output: {out['kind']} (size {out['size']})"
        )
        pairs = ", ".join(f"{s['input']} -> {s['output']} (initial {s['initial']:g})" for s in meta["states"])
        lines.append(f"state: {pairs}")
        lines += _task_lines(meta)
        if meta.get("quantization"):
            lines += _quantization_lines(meta["quantization"])
    lines.append("inputs:")
    lines += [_tensor_line(a) for a in doc["inputs"]]
    lines.append("outputs:")
    lines += [_tensor_line(a) for a in doc["outputs"]]
    if doc.get("weights") is not None:
        lines.append(f"weights: {doc['parameters']:,} parameters, {doc['weight_bytes']:,} bytes")
        if doc.get("front_end_constants"):
            lines[-1] = (
                f"weights: {doc['parameters']:,} trained parameters; the front end's constants (window, DFT, mel "
                f"bands; not trained): {doc['front_end_constants']:,} values, {doc['front_end_bytes']:,} "
                f"bytes; {doc['weight_bytes']:,} bytes in all"
            )
        for w in doc["weights"]:
            shape = "x".join(str(d) for d in w["shape"]) or "scalar"
            lines.append(f"  {w['name']:<28} {w['precision']:<30} {shape:<12} {w['bytes']:>10,} B")
    return "\n".join(lines)


def _task_lines(meta: dict[str, Any]) -> list[str]:
    """What the task metadata says each input column and output is (``Stepper.info.extra`` in Python)."""
    task = meta.get("task")
    lines = [f"task: {task}" if task else "task: not recorded (a model exported from your own module)"]
    if meta.get("columns"):
        lines.append(
            f"  x columns, in order: {names_text(meta['columns'])} (the C target's header lists them too: "
            "<name>_columns)"
        )
    if meta.get("targets"):
        unit = " (values in the columns' own units)" if meta["output"]["kind"] == "values" else ""
        lines.append(f"  y: {names_text(meta['targets'])}, one step ahead{unit}")
    if meta.get("classes"):
        lines.append(f"  y: a logit per class, in order: {names_text(meta['classes'])}")
    if meta.get("label_column"):
        lines.append(f"  labels from column: {meta['label_column']}")
    if meta.get("anomaly"):
        lines.append(
            "  anomaly score: the largest |prediction error| / residual_std over the columns (AnomalyScorer)"
        )
        threshold = meta["anomaly"].get("suggested_threshold") if isinstance(meta["anomaly"], dict) else None
        if isinstance(threshold, (int, float)):
            lines.append(f"  suggested stream --threshold: {threshold:g} (from the validation scores)")
    if meta["input"].get("vocabulary") and task in (None, "charlm"):
        lines.append("  x: a token id (index into the vocabulary); y: a logit per token")
    return lines


def _quantization_lines(q: dict[str, Any]) -> list[str]:
    """What ``inspect`` and ``export`` say about a quantized model's metadata."""
    lines = [f"quantized: {q['mode']} ({q.get('method', '?')}): weights {q.get('weights', '?')}"]
    lines.append(f"  activations: {q.get('activations', '?')}; state inputs/outputs float32")
    if q.get("cell_state"):
        lines.append(f"  LSTM cell state: {q['cell_state']}")
    kept = ", ".join(q.get("float32", [])) or "none"
    lines.append(f"  quantized: {', '.join(q.get('quantized', []))}; kept float32: {kept}")
    calibration = q.get("calibration")
    if calibration:
        lines.append(
            f"  calibration: {calibration['samples']:,} samples ({calibration['streams']} streams x "
            f"{calibration['steps']} steps), {calibration['states']}"
        )
    checks = q.get("checks") or {}
    lines += _check_lines(checks)
    return lines


def _check_lines(checks: dict[str, Any]) -> list[str]:
    if not checks:
        return []
    one, loop, m = checks["one_step"], checks["closed_loop"], checks["metric"]
    drift = ", ".join(f"{k} {v[0]:.3g} -> {v[1]:.3g}" for k, v in loop.items() if isinstance(v, list))
    change = "points" if m["unit"] == "%" else m["unit"]  # a change of a percentage is in points
    others = ", ".join(f"{k} {v:.3g}" for k, v in one.items() if k not in ("y", "y_relative"))
    lines = [
        f"  one step vs float32: max |error| y {one['y']:.3g} ({100 * one['y_relative']:.2g}% of max |y|), {others}",
        f"  closed loop, {loop['steps']} steps, RMS error first -> last {loop['window']} steps: {drift}",
        f"  {m['name']}: {m['float32']:.4f} {m['unit']} float32 -> {m['quantized']:.4f} {m['unit']} "
        f"({m['quantized'] - m['float32']:+.4f} {change}, tolerance {m['tolerance']:+.4f} {change}) on {m['data']}",
    ]
    if checks.get("forced"):
        lines.append("  FORCED past: " + "; ".join(checks["failures"]))
    return lines


def export_document(report: Any) -> dict[str, Any]:
    """``edgernn export --json``: what was written, its parity with PyTorch, and its quantization."""
    parity = report.parity
    doc = {
        "path": str(report.path),
        "size_bytes": report.size_bytes,
        "parity": parity.errors
        if parity
        else None,  # None: quantized from a verified file (edgernn quantize)
        "tolerances": parity.tolerances if parity else None,
    }
    doc["files"] = [str(report.path), *([str(report.chunk_path)] if report.chunk_path else [])]
    if report.quantization is not None:
        doc["float32_size_bytes"] = report.float32_size_bytes
        doc["quantization"] = report.quantization
    return doc


def failure_document(error: Any) -> dict[str, Any]:
    """``edgernn export --json`` when a check refused the model (exit 1, nothing written): every mismatch,
    and what each check measured where the check has it (y on the model's scale, as the tolerances)."""
    quantized = hasattr(error, "forceable")  # QuantizationError
    doc: dict[str, Any] = {
        "written": False,
        "error": "quantization" if quantized else "parity",
        "message": str(error),
        "mismatches": list(error.mismatches),
    }
    if quantized:
        doc["forceable"] = error.forceable
    parity = getattr(error, "report", None)
    if parity is not None:
        errors = {check: {k: _json_number(v) for k, v in e.items()} for check, e in parity.errors.items()}
        doc.update(parity=errors, tolerances=parity.tolerances, y_scale=list(parity.y_scale))
    return doc


def _json_number(value: float) -> float | None:
    """JSON has no NaN or infinity: a non-finite error is null."""
    return value if math.isfinite(value) else None


def format_export(report: Any) -> str:
    """``edgernn export``'s text: the file, the float32 graph's parity with PyTorch, the quantization."""
    parity = report.parity
    lines = [
        f"wrote {report.path} ({report.size_bytes:,} bytes); the float32 graph verified against PyTorch:"
        if parity
        else f"wrote {report.path} ({report.size_bytes:,} bytes), quantized from a verified float32 file"
    ]
    for check, errors in parity.errors.items() if parity else ():
        atol, rtol = parity.tolerances[check]
        worst = ", ".join(f"{name} {err:.2e}" for name, err in errors.items())
        lines.append(f"  {check:<12} max |error|: {worst}  (atol {atol:g}, rtol {rtol:g})")
    if parity and any(scale != 1.0 for scale in parity.y_scale):
        lines.append(
            "  y's errors and atol are in units of its training std (the scale the model computes in)"
        )
    if parity and parity.logits:
        lines.append("  y's errors and atol are relative to each step's largest |logit| (at least 1)")
    if report.chunk_path is not None:
        lines.append(_chunk_line(report))
    if report.quantization is not None:
        ratio = report.float32_size_bytes / report.size_bytes
        lines.append(f"{ratio:.2f}x smaller than float32 ({report.float32_size_bytes:,} bytes)")
        lines += _quantization_lines(report.quantization)
    return "\n".join(lines)


def _chunk_line(report: Any) -> str:
    chunk = Path(report.chunk_path)
    return (
        f"wrote {chunk} ({chunk.stat().st_size:,} bytes), its chunk graph ({report.info.chunk_steps} steps per "
        f"call, paired by checksum): Stepper.run uses it for long sequences; ship both files together"
    )
