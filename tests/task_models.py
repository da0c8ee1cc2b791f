"""Hand-built step graphs (no torch) whose metadata records a task and its fields, and CSV files for them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import TinyModel, build_tiny_model


def task_model(directory: Path, name: str, extra: dict, **shape) -> TinyModel:
    """A hand-built step graph whose metadata records a task and its fields (columns, classes...)."""
    doc = json.loads(build_tiny_model(**shape).info.to_json())
    doc.update(extra)
    model = build_tiny_model(metadata=json.dumps(doc), **shape)
    model.save(directory, name)
    return model


def anomaly_model(directory: Path) -> TinyModel:
    """A one-column anomaly model (residual std 0.5) with untrained weights."""
    extra = {
        "task": "anomaly",
        "columns": ["value"],
        "targets": ["value"],
        "anomaly": {"residual_std": [0.5]},
    }
    return task_model(directory, "anomaly.onnx", extra, input_kind="features", input_size=1, hidden_size=4)


def write_csv(path: Path, header: list[str], rows: np.ndarray) -> Path:
    lines = [",".join(header), *(",".join(f"{v:.5f}" for v in row) for row in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path
