"""What ``edgernn inspect`` shows: the contract, the metadata, and the size and precision of each weight."""

from __future__ import annotations

import os
from typing import Any

from edgernn.runtime import describe


def weight_table(path: str | os.PathLike) -> list[dict[str, Any]] | None:
    """Name, dtype, shape and bytes of every initializer; None where onnx is not installed."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return None
    proto = onnx.load(os.fspath(path), load_external_data=False)
    rows = []
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        rows.append(
            {"name": init.name, "dtype": str(array.dtype), "shape": list(array.shape), "bytes": array.nbytes}
        )
    return rows


def describe_model(path: str | os.PathLike) -> dict[str, Any]:
    """``edgernn.runtime.describe`` plus the weights (when onnx is available)."""
    doc = describe(path)  # validates the file and its metadata first
    weights = weight_table(path)
    doc["weights"] = weights
    if weights is not None:
        doc["parameters"] = sum(_count(w["shape"]) for w in weights if w["dtype"].startswith("float"))
        doc["weight_bytes"] = sum(w["bytes"] for w in weights)
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
        lines.append("not an edgernn model (no edgernn metadata): run it with Stepper(..., state_map=...)")
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
    lines.append("inputs:")
    lines += [_tensor_line(a) for a in doc["inputs"]]
    lines.append("outputs:")
    lines += [_tensor_line(a) for a in doc["outputs"]]
    if doc.get("weights") is not None:
        lines.append(f"weights: {doc['parameters']:,} parameters, {doc['weight_bytes']:,} bytes")
        for w in doc["weights"]:
            shape = "x".join(str(d) for d in w["shape"]) or "scalar"
            lines.append(f"  {w['name']:<22} {w['dtype']:<8} {shape:<12} {w['bytes']:>10,} B")
    return "\n".join(lines)
