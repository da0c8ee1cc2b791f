"""Is a quantized model still the model? Three checks against its float32 original, on real data.

Both models run through edgernn's Stepper, the path users run:

- ``one_step``: from the state the float32 model reaches after ``WARM_STEPS`` real inputs, one more real
  input: the largest |error| of y and of every next state, and of y relative to the largest |y|.
- ``closed_loop``: ``LOOP_STEPS`` (3000) real inputs, each model feeding back its own state. The error is
  the RMS difference over the first and the last ``WINDOW_STEPS``; an end error past
  ``DRIFT_GROWTH_LIMIT`` times the start error (plus ``DRIFT_FLOOR``) is error growing without bound.

Errors of y are on the scale the model computes in (``edgernn.runtime.tolerance``): a regression model's
in units of each output's training std, so ``DRIFT_FLOOR`` means the same for readings in milli-g as in g.
- ``metric``: the task metric on the validation split, float32 against quantized: a loss (nats per character,
  default tolerance +0.02), an accuracy (percent, -1 point) or an RMSE (output units, +2% of float32's).

Non-finite outputs and structural problems always refuse; the drift and metric checks can be forced.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgernn.csv_table import DEFAULT_MISSING
from edgernn.data import encode, read_text, split_train_validation
from edgernn.runtime import Stepper, tolerance
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import InputError
from edgernn.runtime.tasks import metadata_strings
from edgernn.tasks import _split_series, case_order, load_task, read_csv, read_labelled_cases

if TYPE_CHECKING:  # evaluation_data_from_model and evaluate need no torch (edgernn eval on a device)
    from edgernn.checkpoint import Checkpoint

LOOP_STEPS = 3000
LOOP_STREAMS = 4
WINDOW_STEPS = 300
WARM_STEPS = 64
DRIFT_GROWTH_LIMIT = 4.0
DRIFT_FLOOR = 1e-4
MAX_EVAL_STREAMS = 32
_CHUNK_STEPS = 100


@dataclass(frozen=True)
class Metric:
    """A task metric: how to read it, which way is better, and what loss the gate tolerates by default."""

    name: str
    unit: str
    higher_is_better: bool

    def default_tolerance(self, fp32_value: float) -> float:
        if self.name == "accuracy":
            return -1.0  # points
        if self.name == "rmse":
            return 0.02 * fp32_value
        return 0.02  # nats per character

    def passes(self, delta: float, tolerance: float) -> bool:
        return delta >= tolerance if self.higher_is_better else delta <= tolerance


METRICS = {
    "loss": Metric("loss", "nats/char", higher_is_better=False),  # charlm's next-character loss
    "accuracy": Metric("accuracy", "%", higher_is_better=True),
    "rmse": Metric("rmse", "output units", higher_is_better=False),
}


@dataclass(frozen=True)
class EvaluationData:
    """Real data to calibrate and judge a quantized export.

    calibration: training-split inputs in time order, ``(N,)`` int64 tokens or ``(N, F)`` float32 features.
    inputs/targets: the validation split as one series, a target per step: inputs like calibration; targets
    ``(N,)`` int64 (next token, class) or ``(N, O)`` float32 values. Or ``sequences``: validation cases
    ``(inputs (T, F), label)``, each run from the initial state and classified after its last step.
    metric: a key of METRICS; source: what the data is, recorded in the metadata; split: which part of it
    is judged.
    """

    calibration: np.ndarray
    metric: str
    source: str
    inputs: np.ndarray | None = None
    targets: np.ndarray | None = None
    sequences: tuple[tuple[np.ndarray, int], ...] | None = None
    split: str = "validation split"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise InputError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if (self.inputs is None) == (self.sequences is None):
            raise InputError("give the validation data as inputs and targets, or as sequences (not both)")
        if self.inputs is not None and (self.targets is None or len(self.targets) != len(self.inputs)):
            raise InputError("inputs and targets must have one target per step")
        if len(self.calibration) < 2:
            raise InputError(f"expected at least 2 calibration inputs, got {len(self.calibration)}")

    def series(self) -> np.ndarray:
        """A long series of real inputs for the closed loop: the validation inputs, or the cases in turn."""
        if self.inputs is not None:
            return self.inputs
        return np.concatenate([np.asarray(x) for x, _ in self.sequences])

    def describe(self) -> str:
        """What the metric was measured on, for the metadata: the file's name (a shipped model carries no
        local paths), the split and its length."""
        source = Path(self.source).name or self.source
        if self.inputs is not None:
            return f"{source}: {self.split}, {len(self.inputs):,} steps"
        return f"{source}: {self.split}, {len(self.sequences):,} sequences"


@dataclass
class QualityReport:
    """What the checks measured, and which failed (``failures``: one line each, numbers included)."""

    one_step: dict[str, float] = field(default_factory=dict)
    closed_loop: dict[str, Any] = field(default_factory=dict)
    metric: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    fatal: list[str] = field(default_factory=list)  # never forced: non-finite numbers

    def summary(self) -> dict[str, Any]:
        """The compact record kept in the metadata: closed-loop errors as [start, end]."""
        loop = {k: [v["start"], v["end"]] if isinstance(v, dict) else v for k, v in self.closed_loop.items()}
        metric = {k: v for k, v in self.metric.items() if k != "delta"}
        doc = {
            "one_step": self.one_step,
            "closed_loop": loop,
            "metric": metric,
            "forced": bool(self.failures),
        }
        if self.failures:
            doc["failures"] = self.failures
        return doc


def check_quality(
    fp32_model: bytes,
    quantized_model: bytes,
    info: ModelInfo,
    data: EvaluationData,
    tolerance: float | None = None,
) -> QualityReport:
    """Run every check (nothing raises on a failed check: the caller decides, see ``failures``)."""
    fp32, quantized = Stepper(fp32_model), Stepper(quantized_model)
    return check_steppers(fp32, quantized, info, data.series(), data, tolerance)


def check_steppers(
    fp32: Any,
    quantized: Any,
    info: ModelInfo,
    series: np.ndarray,
    data: EvaluationData | None = None,
    tolerance: float | None = None,
) -> QualityReport:
    """The checks of ``check_quality`` on two steppers with the Stream API (``Stepper``, or the generated
    C's ``NativeStepper``): one step and the closed loop on ``series`` (real inputs in time order), the
    task metric on ``data`` when given (without it ``metric`` stays empty)."""
    report = QualityReport()
    tiled = _tile(series, WARM_STEPS + 1 + LOOP_STEPS, LOOP_STREAMS)  # (S, T[, F])
    report.one_step = _one_step(fp32, quantized, info, tiled)
    report.closed_loop = _closed_loop(fp32, quantized, info, tiled[:, :LOOP_STEPS])
    if data is not None:
        report.metric = _metric(fp32, quantized, data, tolerance)
    _judge(report)
    return report


def _tile(inputs: np.ndarray, steps: int, streams: int) -> np.ndarray:
    """``streams`` contiguous stretches of ``steps`` inputs, the data repeated where it is too short."""
    inputs = np.asarray(inputs)
    reps = math.ceil(steps * streams / len(inputs))
    long = np.concatenate([inputs] * reps)[: steps * streams]
    return long.reshape(streams, steps, *inputs.shape[1:])


# --- one step and closed loop --------------------------------------------------------------------------


def _one_step(fp32: Stepper, quantized: Stepper, info: ModelInfo, series: np.ndarray) -> dict[str, float]:
    warm = fp32.new_stream(batch_size=series.shape[0])
    warm.run(series[:, :WARM_STEPS])
    a, b = fp32.new_stream(series.shape[0]), quantized.new_stream(series.shape[0])
    a.state = b.state = warm.state
    x = series[:, WARM_STEPS]
    y_a, y_b = a.step(x), b.step(x)
    errors = {"y": _max_error(y_a, y_b, tolerance.output_scale(info))}
    errors["y_relative"] = _max_error(y_a, y_b) / max(float(np.abs(y_a).max()), 1e-12)
    for spec in info.states:
        errors[spec.output] = _max_error(a.state[spec.input], b.state[spec.input])
    return errors


def _max_error(want: np.ndarray, got: np.ndarray, scale: np.ndarray | float = 1.0) -> float:
    return tolerance.largest(tolerance.scaled_error(got, want, scale))


def _closed_loop(fp32: Stepper, quantized: Stepper, info: ModelInfo, xs: np.ndarray) -> dict[str, Any]:
    """Per tensor: RMS error over the first and the last WINDOW_STEPS of the loop."""
    a, b = fp32.new_stream(xs.shape[0]), quantized.new_stream(xs.shape[0])
    squared: dict[str, list[np.ndarray]] = {"y": [], **{s.output: [] for s in info.states}}
    y_scale = tolerance.output_scale(info)
    for start in range(0, xs.shape[1], _CHUNK_STEPS):
        chunk = xs[:, start : start + _CHUNK_STEPS]
        squared["y"].append(_squared_error(a.run(chunk), b.run(chunk), y_scale).mean(axis=(0, 2)))  # (T,)
        for spec in info.states:  # states at the end of each chunk
            squared[spec.output].append(_squared_error(a.state[spec.input], b.state[spec.input]).mean()[None])
    result: dict[str, Any] = {"steps": int(xs.shape[1]), "window": WINDOW_STEPS}
    for name, parts in squared.items():
        per_step = np.concatenate(parts)
        window = max(1, len(per_step) * WINDOW_STEPS // xs.shape[1])
        result[name] = {"start": _rms(per_step[:window]), "end": _rms(per_step[-window:])}
    return result


def _squared_error(want: np.ndarray, got: np.ndarray, scale: np.ndarray | float = 1.0) -> np.ndarray:
    return np.square(tolerance.scaled_error(got, want, scale))


def _rms(mean_squares: np.ndarray) -> float:
    value = float(np.sqrt(np.mean(mean_squares)))
    return value if math.isfinite(value) else math.inf


# --- the task metric -----------------------------------------------------------------------------------


def _metric(fp32: Stepper, quantized: Stepper, data: EvaluationData, tolerance: float | None) -> dict:
    metric = METRICS[data.metric]
    value_fp32, value_q = evaluate(fp32, data), evaluate(quantized, data)
    tolerance = metric.default_tolerance(value_fp32) if tolerance is None else tolerance
    return {
        "name": metric.name,
        "unit": metric.unit,
        "float32": value_fp32,
        "quantized": value_q,
        "delta": value_q - value_fp32,
        "tolerance": tolerance,
        "data": data.describe(),
    }


def evaluate(stepper: Stepper, data: EvaluationData) -> float:
    """The task metric of a model on ``data``'s validation split, through the stepper."""
    return measure(stepper, data)[data.metric]


def measure(
    stepper: Stepper, data: EvaluationData, metrics: Sequence[str] = (), *, streams: int | None = None
) -> dict[str, float]:
    """Task metrics of a model on ``data``'s validation split in one pass through the stepper.

    metrics: names among ``loss`` (nats per step), ``accuracy`` (percent), ``mse`` and ``rmse`` (output
    units); default ``data.metric``. streams: a series is cut into that many contiguous streams, each
    from the initial state (default: up to MAX_EVAL_STREAMS of at least 64 steps); sequences always run
    one by one from the initial state.
    """
    metrics = tuple(dict.fromkeys(metrics)) or (data.metric,)
    if data.sequences is not None:
        return _sequence_metrics(stepper, data, metrics)
    inputs, targets = data.inputs, data.targets
    streams = streams or max(1, min(MAX_EVAL_STREAMS, len(inputs) // 64))
    length = len(inputs) // streams
    xs = inputs[: length * streams].reshape(streams, length, *inputs.shape[1:])
    targets = targets[: length * streams].reshape(streams, length, *targets.shape[1:])
    stream = stepper.new_stream(batch_size=streams)
    totals = dict.fromkeys(metrics, 0.0)
    for start in range(0, length, 256):
        ys = stream.run(xs[:, start : start + 256]).astype(np.float64)  # (S, T, O)
        flat = ys.reshape(-1, ys.shape[-1])  # (S * T, O)
        chunk_targets = targets[:, start : start + 256].reshape(len(flat), -1)
        for name in metrics:
            totals[name] += _metric_sum(name, flat, chunk_targets)
    return {name: _finish(name, total, streams * length) for name, total in totals.items()}


def _sequence_metrics(stepper: Stepper, data: EvaluationData, metrics: Sequence[str]) -> dict[str, float]:
    stream = stepper.new_stream()
    last = []
    for inputs, _ in data.sequences:
        stream.reset()
        last.append(stream.run(inputs)[-1])  # (O,)
    ys = np.stack(last).astype(np.float64)
    labels = np.array([label for _, label in data.sequences]).reshape(-1, 1)
    return {name: _finish(name, _metric_sum(name, ys, labels), len(labels)) for name in metrics}


def _metric_sum(metric: str, ys: np.ndarray, targets: np.ndarray) -> float:
    """ys ``(N, O)`` float64; targets ``(N, 1)`` class ids or ``(N, O)`` values. The sum over N."""
    if metric in ("rmse", "mse"):
        return float(np.square(ys - targets).mean(axis=1).sum())
    labels = targets[:, 0].astype(np.int64)
    if metric == "accuracy":
        return float((ys.argmax(axis=1) == labels).sum())
    top = ys.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(ys - top).sum(axis=1))
    return float((log_z - ys[np.arange(len(ys)), labels]).sum())


def _finish(metric: str, total: float, count: int) -> float:
    mean = total / count
    if metric == "accuracy":
        return 100.0 * mean
    return math.sqrt(mean) if metric == "rmse" else mean


# --- verdict -------------------------------------------------------------------------------------------


def _judge(report: QualityReport) -> None:
    numbers = [*report.one_step.values(), *([report.metric["quantized"]] if report.metric else [])]
    numbers += [v for t in report.closed_loop.values() if isinstance(t, dict) for v in t.values()]
    if not all(math.isfinite(v) for v in numbers):
        report.fatal.append("the quantized model produces non-finite numbers (NaN or inf)")
        return
    for name, errors in report.closed_loop.items():
        if isinstance(errors, dict) and errors["end"] > DRIFT_GROWTH_LIMIT * errors["start"] + DRIFT_FLOOR:
            report.failures.append(
                f"closed loop: {name} error grows from {errors['start']:.3g} (RMS, first {WINDOW_STEPS} steps) "
                f"to {errors['end']:.3g} (last {WINDOW_STEPS} of {report.closed_loop['steps']}), "
                f"past {DRIFT_GROWTH_LIMIT:g}x"
            )
    m = report.metric
    if m and not METRICS[m["name"]].passes(m["delta"], m["tolerance"]):
        report.failures.append(
            f"metric: {m['name']} {m['quantized']:.4f} {m['unit']} quantized vs {m['float32']:.4f} float32, "
            f"change {m['delta']:+.4f} is past the tolerance {m['tolerance']:+.4f} ({m['data']})"
        )


# --- real data from a run directory --------------------------------------------------------------------

_TASK_METRICS = {
    "charlm": "loss",
    "steplabels": "accuracy",
    "classify": "accuracy",
    "keyword": "accuracy",
}  # others: rmse


def evaluation_data(checkpoint: Checkpoint, data_path: str | os.PathLike | None = None) -> EvaluationData:
    """The run's own data, split as in training: the training split calibrates, validation judges.

    ``data_path`` replaces the file the run was trained on (recorded in config.json / metrics.json).
    """
    settings = checkpoint.train_config
    path = data_path or settings.get("data") or checkpoint.metrics.get("data")
    if not checkpoint.task or not path:
        raise InputError(
            "a quantized export is checked on real validation data, and this run records no task and data "
            "file; give one (edgernn export --data FILE)"
        )
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file; the run was trained on it (give another with --data FILE)")
    fraction = settings.get("validation_fraction", 0.1)
    metric = _TASK_METRICS.get(checkpoint.task, "rmse")
    if checkpoint.task == "charlm":  # encoded with the model's own vocabulary
        ids = encode(read_text(path), checkpoint.vocabulary)
        train, validation = split_train_validation(ids, fraction)
        return EvaluationData(train, metric, f"{path}", inputs=validation[:-1], targets=validation[1:])
    task = load_task(
        checkpoint.task, path, seed=settings.get("seed", 0), validation_fraction=fraction,
        min_validation_cases=settings.get("min_validation_cases", 0),  # older runs: 10% (not stratified then)
        **(settings.get("data_options") or {}),
    )  # fmt: skip
    if not task.is_series:
        sequences = tuple((x.numpy(), int(label)) for x, label in task.validation)
        calibration = np.concatenate([x.numpy() for x, _ in task.train])
        return EvaluationData(calibration, metric, str(path), sequences=sequences)
    (train_x, _), (val_x, val_y) = task.train, task.validation
    return EvaluationData(train_x.numpy(), metric, str(path), inputs=val_x.numpy(), targets=val_y.numpy())


# --- real data for a model file alone -----------------------------------------------------------------

_DATA_FILES = {
    "charlm": "a UTF-8 text file",
    "forecast": "a CSV file with a header",
    "anomaly": "a CSV file with a header",
    "steplabels": "a CSV file with a header",
    "classify": "a .ts file or a CSV file (series id, features, label)",
    "keyword": "a folder of .wav files or .npz clip bundles",
}


def evaluation_data_from_model(
    model: str | os.PathLike | bytes | ModelInfo,
    data_path: str | os.PathLike,
    *,
    validation_fraction: float | None = 0.1,
    seed: int = 0,
    id_column: str = "series_id",
    label_column: str | None = None,
    missing: str = DEFAULT_MISSING,
) -> EvaluationData:
    """Real data for a model from its ONNX file alone (no run directory, no torch).

    The model's edgernn metadata says what the data must be: its ``task``, and the vocabulary, ``columns``,
    ``targets``, ``label_column`` and ``classes`` recorded at export. ``data_path`` is a file in the format
    training reads: text for charlm; a CSV with those columns (matched by name) for forecast, anomaly and
    steplabels; a .ts file or a CSV (``id_column``, the feature columns, ``label_column``, default
    ``label``) for classify. A file that does not fit the model (missing columns, characters outside the
    vocabulary, labels the model has no class for) is an InputError saying which.

    validation_fraction: split as training splits (series: the first part calibrates, the rest is judged;
    classify: the seeded shuffle of ``seed``); None judges the whole file (a test file) and calibrates on
    it too. Features are raw values: the model normalises them in its graph. Empty or non-numeric cells of
    the columns used are handled by ``missing`` as in training (``edgernn.csv_table``).
    """
    info = model if isinstance(model, ModelInfo) else Stepper(model, chunk_model=False).info
    task = _model_task(info)
    path = Path(data_path)
    if task == "keyword":  # clips as raw hops (edgernn.export.keyword_data)
        from edgernn.export.keyword_data import keyword_evaluation_data

        classes = metadata_strings(info, "classes", info.output.size)
        return keyword_evaluation_data(
            info, classes, path, validation_fraction=validation_fraction, seed=seed
        )
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected {_DATA_FILES[task]} for this {task} model")
    metric = _TASK_METRICS.get(task, "rmse")
    if task == "charlm":
        return _text_data(info, path, metric, validation_fraction)
    if task == "classify":
        labels = label_column or "label"
        return _case_data(info, path, metric, validation_fraction, seed, id_column, labels, missing)
    return _series_data(info, task, path, metric, validation_fraction, missing)


def _model_task(info: ModelInfo | None) -> str:
    if info is None:
        raise InputError("the model has no edgernn metadata, so nothing says what data it takes")
    task = info.extra.get("task")
    if task is None and info.input.kind == "tokens" and info.input.vocabulary:
        return "charlm"
    if task not in _DATA_FILES:
        raise InputError(
            f"the model's metadata records task {task!r}; expected one of {', '.join(_DATA_FILES)} "
            "(a bring-your-own model records it with export_module(..., extra_metadata={'task': ..., "
            "'columns': [...], 'targets': [...]}))"
        )
    return task


def _text_data(info: ModelInfo, path: Path, metric: str, fraction: float | None) -> EvaluationData:
    vocabulary = list(info.input.vocabulary or ())
    if len(vocabulary) != info.input.size:
        raise InputError("the model's metadata has no vocabulary, so its characters are unknown")
    try:
        ids = encode(read_text(path), vocabulary)
    except InputError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise InputError(f"{path}: {exc} (the model knows {len(vocabulary)} characters)") from None
    train, judged = split_train_validation(ids, fraction) if fraction else (ids, ids)
    return EvaluationData(
        train, metric, str(path), inputs=judged[:-1], targets=judged[1:], split=_split_name(fraction)
    )


def _split_name(fraction: float | None) -> str:
    return "whole file" if fraction is None else "validation split"


def _series_data(
    info: ModelInfo, task: str, path: Path, metric: str, fraction: float | None, missing: str
) -> EvaluationData:
    """forecast, anomaly: the columns at t, the targets at t + 1; steplabels: the columns and the label at t."""
    table = read_csv(path)
    columns = metadata_strings(info, "columns", info.input.size)
    used = [*columns, *(metadata_strings(info, "targets", info.output.size) if task != "steplabels" else [])]
    if task == "steplabels" and missing == "drop-rows" and info.extra.get("label_column") in table.columns:
        used.append(info.extra["label_column"])  # labels are never filled, only their rows dropped
    table, _ = table.resolve_missing(used, missing)
    features = table.pick(columns)  # (N, F)
    if task == "steplabels":
        inputs, targets = features, _step_labels(info, table)  # (N, F), (N,)
    else:
        targets = table.pick(metadata_strings(info, "targets", info.output.size))[1:]  # (N - 1, O)
        inputs = features[:-1]
    if fraction is None:
        return EvaluationData(inputs, metric, str(path), inputs=inputs, targets=targets, split="whole file")
    cut = _split_series(len(features), fraction) - (task != "steplabels")
    return EvaluationData(inputs[:cut], metric, str(path), inputs=inputs[cut:], targets=targets[cut:])


def _step_labels(info: ModelInfo, table: Any) -> np.ndarray:
    """The label column as class indices ``(N,)`` int64, each label one of the model's classes."""
    classes = metadata_strings(info, "classes", info.output.size)
    column = info.extra.get("label_column")
    if not isinstance(column, str) or column not in table.columns:
        raise InputError(
            f"{table.path}: no numeric label column {column!r} (the model's label_column); "
            f"numeric columns are {sorted(table.columns)}"
        )
    labels = table.labels(column)
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise InputError(
            f"{table.path}: labels {unknown[:10]} in {column!r} are not the model's classes {classes}"
        )
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[label] for label in labels], dtype=np.int64)


def _case_data(
    info: ModelInfo,
    path: Path,
    metric: str,
    fraction: float | None,
    seed: int,
    id_column: str,
    label_column: str,
    missing: str,
) -> EvaluationData:
    classes = metadata_strings(info, "classes", info.output.size)
    columns = metadata_strings(info, "columns", info.input.size)
    options = {"id_column": id_column, "label_column": label_column, "columns": columns, "missing": missing}
    cases = read_labelled_cases(path, classes, **options)
    sizes = sorted({frames.shape[1] for frames, _ in cases})
    if sizes != [info.input.size]:
        raise InputError(f"{path}: cases have {sizes} dimension(s); the model takes {info.input.size}")
    if fraction is None:
        train = judged = cases
    else:
        order, n_val = case_order([label for _, label in cases], fraction, seed)
        judged, train = [cases[i] for i in order[:n_val]], [cases[i] for i in order[n_val:]]
    calibration = np.concatenate([frames for frames, _ in train])
    return EvaluationData(
        calibration, metric, str(path), sequences=tuple(judged), split=_split_name(fraction)
    )
