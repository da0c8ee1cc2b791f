"""Lines in, predictions out: the device app most users need, for every task (``edgernn stream``). numpy only.

Feature models read CSV (a header row, then one row per sample) or JSON lines (one object per sample);
the model's input columns are matched by name (``columns`` in its metadata), other columns are ignored.
A blank line, or a change of the value in ``series_column``, starts a new sequence from the initial
state. After every sample one line comes out:

==============  =====================================================================================
task            output per sample
==============  =====================================================================================
forecast        the next value of every target, in the user's units (``next_<target>``)
anomaly         the sample's anomaly score (``score``), and with a threshold a flag (``anomaly``)
classify        the current label and each class's probability (``label``, ``p_<class>``)
steplabels      as classify, for the sample's own label
charlm          every input line is text: after it, the ``top_k`` likeliest next characters
==============  =====================================================================================

Plain output is CSV with a header row; ``as_json`` gives one JSON object per line. A line that cannot be
read (a missing column, a value that is no finite number, a character outside the vocabulary) raises
InputError naming its line number; the lines before it were already answered.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from edgernn.runtime.errors import ContractError, InputError
from edgernn.runtime.tasks import AnomalyScorer, StreamingClassifier, metadata_strings

if TYPE_CHECKING:
    from edgernn.runtime import Stepper

FEATURE_TASKS = ("forecast", "anomaly", "classify", "steplabels")


def predict_lines(
    stepper: Stepper,
    lines: Iterable[str | bytes],
    *,
    series_column: str | None = None,
    threshold: float | None = None,
    top_k: int = 5,
    as_json: bool = False,
) -> Iterator[str]:
    """Output lines (no newline) for input ``lines``, one per sample, as they are read (see the module)."""
    task = _task(stepper)
    lines = _text_lines(lines)
    if task == "charlm":
        if series_column is not None or threshold is not None:
            raise InputError("--series-column and --threshold apply to feature models, not a character model")
        yield from _Text(stepper, top_k).lines(lines, as_json)
        return
    if threshold is not None and task != "anomaly":
        raise InputError(f"--threshold applies to anomaly models; this is a {task} model")
    yield from _Rows(_predictor(stepper, task, threshold), series_column).lines(lines, as_json)


def _text_lines(lines: Iterable[str | bytes]) -> Iterator[str]:
    """``lines`` as text: bytes are decoded line by line, and bytes that are not UTF-8 are refused by line."""
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"line {number}: expected UTF-8 text, got byte 0x{exc.object[exc.start]:02x}"
                ) from None
        yield line


def _task(stepper: Stepper) -> str:
    info = stepper.info
    if info is None:
        raise ContractError("stream needs an edgernn model (one with edgernn metadata)")
    task = info.extra.get("task")
    if task == "charlm" or (task is None and info.input.kind == "tokens"):
        return "charlm"
    if task not in FEATURE_TASKS:
        raise ContractError(
            f"the model's metadata records task {task!r}; stream serves {', '.join(('charlm', *FEATURE_TASKS))}"
        )
    return task


# --- feature models ----------------------------------------------------------------------------------


class _Forecaster:
    def __init__(self, stepper: Stepper):
        info = stepper.info
        self.stepper = stepper
        self.columns = metadata_strings(info, "columns", info.input.size)
        self.header = [f"next_{t}" for t in metadata_strings(info, "targets", info.output.size)]

    def reset(self) -> None:
        self.stepper.reset()

    def predict(self, x: np.ndarray) -> dict[str, Any]:
        y = self.stepper.step(x)
        return {name: float(v) for name, v in zip(self.header, y, strict=True)}


class _Anomaly:
    def __init__(self, stepper: Stepper, threshold: float | None):
        self.scorer = AnomalyScorer(stepper)
        info = stepper.info
        self.columns = metadata_strings(info, "columns", info.input.size)
        self.threshold = threshold
        self.header = ["score", *(["anomaly"] if threshold is not None else [])]

    def reset(self) -> None:
        self.scorer.reset()

    def predict(self, x: np.ndarray) -> dict[str, Any]:
        score = self.scorer.step(x)
        doc: dict[str, Any] = {"score": score}
        if self.threshold is not None:
            doc["anomaly"] = int(score > self.threshold)
        return doc


class _Classifier:
    def __init__(self, stepper: Stepper):
        self.classifier = StreamingClassifier(stepper)
        info = stepper.info
        self.columns = metadata_strings(info, "columns", info.input.size)
        self.header = ["label", *(f"p_{c}" for c in self.classifier.classes)]

    def reset(self) -> None:
        self.classifier.reset()

    def predict(self, x: np.ndarray) -> dict[str, Any]:
        label, probabilities = self.classifier.step(x)
        doc: dict[str, Any] = {"label": label}
        doc.update((f"p_{c}", float(p)) for c, p in zip(self.classifier.classes, probabilities, strict=True))
        return doc


def _predictor(stepper: Stepper, task: str, threshold: float | None) -> Any:
    if task == "forecast":
        return _Forecaster(stepper)
    if task == "anomaly":
        return _Anomaly(stepper, threshold)
    return _Classifier(stepper)


class _Rows:
    """Reads CSV or JSON lines sample by sample and answers each through a predictor."""

    def __init__(self, predictor: Any, series_column: str | None):
        self.predictor, self.series_column = predictor, series_column
        self.series: Any = None
        self.index: list[int] = []  # CSV: field index of each model column
        self.series_index: int | None = None
        self.width = 0

    def lines(self, lines: Iterable[str], as_json: bool) -> Iterator[str]:
        mode = None
        for number, line in enumerate(lines, start=1):
            text = line.rstrip("\r\n")
            if not text.strip():
                self._boundary()
                continue
            if mode is None:
                mode = "json" if text.lstrip().startswith("{") else "csv"
                if mode == "csv":
                    self._read_header(text, number)
                    if not as_json:
                        yield _csv_line(self._out_header())
                    continue
                if not as_json:
                    yield _csv_line(self._out_header())
            series, x = self._json_row(text, number) if mode == "json" else self._csv_row(text, number)
            if self.series_column is not None and series != self.series:
                self._boundary()
                self.series = series
            doc = self._predict(x, number)
            if self.series_column is not None:
                doc = {self.series_column: series, **doc}
            yield json.dumps({"line": number, **doc}) if as_json else _csv_line(list(doc.values()))

    def _out_header(self) -> list[str]:
        return [*([self.series_column] if self.series_column else []), *self.predictor.header]

    def _boundary(self) -> None:
        self.predictor.reset()
        self.series = None

    def _read_header(self, text: str, number: int) -> None:
        names = [name.strip() for name in _fields(text)]
        wanted = self.predictor.columns + ([self.series_column] if self.series_column else [])
        missing = [name for name in wanted if name not in names]
        if missing:
            raise InputError(f"line {number}: the header has no column(s) {missing}; it has {names}")
        self.index = [names.index(name) for name in self.predictor.columns]
        self.series_index = names.index(self.series_column) if self.series_column else None
        self.width = len(names)

    def _csv_row(self, text: str, number: int) -> tuple[Any, np.ndarray]:
        fields = _fields(text)
        if len(fields) != self.width:
            raise InputError(
                f"line {number}: expected {self.width} fields as in the header, got {len(fields)}"
            )
        values = [
            _number(fields[i], name, number)
            for i, name in zip(self.index, self.predictor.columns, strict=True)
        ]
        series = fields[self.series_index].strip() if self.series_index is not None else None
        return series, np.array(values, dtype=np.float32)

    def _json_row(self, text: str, number: int) -> tuple[Any, np.ndarray]:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"line {number}: not a JSON object ({exc.msg})") from None
        if not isinstance(doc, dict):
            raise InputError(f"line {number}: expected a JSON object, got {type(doc).__name__}")
        missing = [name for name in self.predictor.columns if name not in doc]
        if self.series_column is not None and self.series_column not in doc:
            missing.append(self.series_column)
        if missing:
            raise InputError(f"line {number}: no field(s) {missing}; it has {sorted(doc)}")
        values = [_number(doc[name], name, number) for name in self.predictor.columns]
        series = doc.get(self.series_column) if self.series_column else None
        return series, np.array(values, dtype=np.float32)

    def _predict(self, x: np.ndarray, number: int) -> dict[str, Any]:
        try:
            return self.predictor.predict(x)
        except InputError as exc:
            raise InputError(f"line {number}: {exc}") from None


def _fields(text: str) -> list[str]:
    return next(csv.reader([text]))


def _number(value: Any, column: str, number: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError(f"line {number}: column {column!r}: expected a number, got {value!r:.40}")
    try:
        result = float(value)
    except ValueError:
        raise InputError(f"line {number}: column {column!r}: expected a number, got {value!r:.40}") from None
    if not math.isfinite(result):
        raise InputError(f"line {number}: column {column!r}: expected a finite number, got {value!r:.40}")
    return result


def _csv_line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(
        [f"{v:.6g}" if isinstance(v, float) else v for v in values]
    )
    return buffer.getvalue()


# --- character models -----------------------------------------------------------------------------------


class _Text:
    """Every input line is text, stepped character by character; the newline that ends a line is fed before
    the next line's characters (when the vocabulary has one), so the model sees the text as it is and
    predicts at each line's end."""

    def __init__(self, stepper: Stepper, top_k: int):
        vocabulary = stepper.info.input.vocabulary
        if not vocabulary:
            raise ContractError("a token model without a vocabulary in its metadata cannot read text")
        if not isinstance(top_k, int) or top_k < 1:
            raise InputError(f"--top-k: expected a positive integer, got {top_k!r}")
        self.stepper, self.vocabulary = stepper, list(vocabulary)
        self.index = {token: i for i, token in enumerate(self.vocabulary)}
        self.top_k = min(top_k, len(self.vocabulary))
        self.newline = "\n" if "\n" in self.index else ""

    def lines(self, lines: Iterable[str], as_json: bool) -> Iterator[str]:
        for number, line in enumerate(lines, start=1):
            text = line.rstrip("\r\n")
            fed = (self.newline if number > 1 else "") + text
            if not fed:
                continue  # an empty first line: nothing to predict from yet
            top = self._feed(fed, number)
            if as_json:
                yield json.dumps({"line": number, "text": text, "top_k": [[t, p] for t, p in top]})
            else:
                yield "  ".join(f"{json.dumps(t)} {p:.4f}" for t, p in top)

    def _feed(self, text: str, number: int) -> list[tuple[str, float]]:
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            raise InputError(f"line {number}: characters not in the model's vocabulary: {''.join(unknown)!r}")
        ids = np.array([self.index[c] for c in text], dtype=np.int64)
        logits = np.asarray(self.stepper.run(ids)[-1], dtype=np.float64)  # (V,) after the last character
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        order = np.argsort(-probabilities, kind="stable")[: self.top_k]
        return [(self.vocabulary[i], float(probabilities[i])) for i in order]
