"""``edgernn eval``: a model's task metric on a test file, streamed through the Stepper (no torch needed).

The model's metadata says what the file must hold (``evaluation_data_from_model``); the whole file is the
test set, stepped as one stream from the initial state, the way a device sees it:

==============  ================================================================================
task            metrics
==============  ================================================================================
charlm          loss (nats per character) and bits per character
classify        accuracy (%) and loss (nats) after the last frame of each sequence
steplabels      loss (nats per step) and accuracy (%)
forecast        MSE and RMSE of the next step, in the targets' own units
anomaly         MSE and RMSE of the next step, and the top anomaly score with its row
==============  ================================================================================
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgernn.csv_table import DEFAULT_MISSING, read_csv
from edgernn.export.quality import EvaluationData, evaluation_data_from_model, measure
from edgernn.runtime import Stepper
from edgernn.runtime.tasks import AnomalyScorer, metadata_strings

_METRICS = {  # task -> (metric, unit) in the order shown
    "charlm": (("loss", "nats/char"), ("bits_per_char", "bits/char")),
    "classify": (("accuracy", "%"), ("loss", "nats")),
    "steplabels": (("loss", "nats/step"), ("accuracy", "%")),
    "forecast": (("mse", "units^2"), ("rmse", "units")),
    "anomaly": (("mse", "units^2"), ("rmse", "units")),
}


@dataclass
class Evaluation:
    """What ``evaluate_file`` measured: ``metrics`` name -> value, ``units`` name -> unit."""

    model: str
    data: str
    task: str
    count: int
    counted: str  # "steps" or "sequences"
    metrics: dict[str, float]
    units: dict[str, str]
    top_anomaly: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = {
            "model": self.model,
            "data": self.data,
            "task": self.task,
            self.counted: self.count,
            "metrics": self.metrics,
            "units": self.units,
        }
        if self.top_anomaly is not None:
            doc["top_anomaly"] = self.top_anomaly
        return doc

    def format(self) -> str:
        lines = [f"{self.model} on {self.data}: {self.task}, {self.count:,} {self.counted}, one stream"]
        lines += [f"  {name:<14}{_value(value, self.units[name])}" for name, value in self.metrics.items()]
        if self.top_anomaly is not None:
            top = self.top_anomaly
            lines.append(f"  top anomaly   score {top['score']:.4g} at row {top['row']} (line {top['line']})")
        return "\n".join(lines)


def _value(value: float, unit: str) -> str:
    """A percentage as ``edgernn train`` prints accuracy (``90.91 %``), anything else to 6 digits."""
    return f"{value:.2f} %" if unit == "%" else f"{value:.6g} {unit}"


def evaluate_file(
    model: str | os.PathLike,
    data_path: str | os.PathLike,
    *,
    id_column: str = "series_id",
    label_column: str | None = None,
    missing: str = DEFAULT_MISSING,
) -> Evaluation:
    """The task metrics of ``model`` on the test file ``data_path`` (see the module docstring); empty or
    non-numeric cells of the columns used are handled by ``missing`` (``edgernn.csv_table``)."""
    stepper = Stepper(model)
    options = {"id_column": id_column, "label_column": label_column, "missing": missing}
    data = evaluation_data_from_model(stepper.info, data_path, validation_fraction=None, **options)
    task = _task(stepper)
    names = [name for name, _ in _METRICS[task]]
    measured = measure(stepper, data, [n if n != "bits_per_char" else "loss" for n in names], streams=1)
    if "bits_per_char" in names:
        measured["bits_per_char"] = measured["loss"] / math.log(2)
    count, counted = _count(data)
    return Evaluation(
        model=Path(model).name,
        data=Path(data_path).name,
        task=task,
        count=count,
        counted=counted,
        metrics={n: measured[n] for n in names},
        units=dict(_METRICS[task]),
        top_anomaly=_top_anomaly(Stepper(model), data_path, missing) if task == "anomaly" else None,
    )


def _task(stepper: Stepper) -> str:
    task = stepper.info.extra.get("task")
    return task if task in _METRICS else "charlm"  # evaluation_data_from_model refused anything else


def _count(data: EvaluationData) -> tuple[int, str]:
    if data.sequences is not None:
        return len(data.sequences), "sequences"
    return len(data.inputs), "steps"


def _top_anomaly(stepper: Stepper, data_path: str | os.PathLike, missing: str) -> dict[str, Any]:
    """The highest anomaly score over the file's rows (AnomalyScorer, from the initial state)."""
    columns = metadata_strings(stepper.info, "columns", stepper.info.input.size)
    table, _ = read_csv(data_path).resolve_missing(columns, missing)
    scores = AnomalyScorer(stepper).score(table.pick(columns))  # (N,)
    row = int(np.argmax(scores))
    return {"score": float(scores[row]), "row": row, "line": int(table.lines[row])}  # line 1: the header
