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

Plain output is CSV with a header row; ``as_json`` gives one JSON object per line. What a row may hold,
and what a bad row does under ``on_bad_row`` (``stop``: InputError naming its line, the lines before it
already answered; ``skip``; ``hold``), is in ``edgernn.runtime.stream_rows``. A character model's line is
read and fed in pieces, so a line of any length takes bounded memory; a line with a character outside
the vocabulary (or bytes that are not UTF-8) is a bad row too: ``skip`` answers it with an empty line
(JSON: ``{"line": n, "skipped": reason}``) and puts the state back to where it was before the line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from edgernn.runtime.errors import ContractError, InputError
from edgernn.runtime.stream_lines import MAX_ROW_CHARS, Line, file_lines, lines_of
from edgernn.runtime.stream_rows import Rows, check_policy
from edgernn.runtime.tasks import AnomalyScorer, StreamingClassifier, metadata_strings

if TYPE_CHECKING:
    from edgernn.runtime import Stepper

FEATURE_TASKS = ("forecast", "anomaly", "classify", "steplabels")
OUTPUTS_PER_CALL = 1 << 14  # a character model is fed at most this many logits' worth of characters at once


def predict_lines(
    stepper: Stepper,
    lines: Iterable[str | bytes],
    *,
    series_column: str | None = None,
    threshold: float | None = None,
    top_k: int = 5,
    as_json: bool = False,
    on_bad_row: str = "stop",
    warn: Callable[[str], None] | None = None,
) -> Iterator[str]:
    """Output lines (no newline) for input ``lines`` (each item one line, str or UTF-8 bytes), one per
    sample, as they are read (see the module). ``warn`` receives one line per bad row that ``skip`` or
    ``hold`` got past (naming its line number); by default they are dropped."""
    options = (series_column, threshold, top_k, as_json, on_bad_row, warn)
    yield from _predict(stepper, lines_of(lines), *options)


def predict_file(
    stepper: Stepper,
    source: BinaryIO,
    *,
    series_column: str | None = None,
    threshold: float | None = None,
    top_k: int = 5,
    as_json: bool = False,
    on_bad_row: str = "stop",
    warn: Callable[[str], None] | None = None,
) -> Iterator[str]:
    """As ``predict_lines`` for the lines of a binary file (stdin, a pipe), each line read in pieces: a
    character model's line of any length takes bounded memory, a longer CSV or JSON row than
    ``stream_lines.MAX_ROW_CHARS`` is a bad row, never held whole."""
    options = (series_column, threshold, top_k, as_json, on_bad_row, warn)
    yield from _predict(stepper, file_lines(source), *options)


def _predict(
    stepper: Stepper,
    lines: Iterable[Line],
    series_column: str | None,
    threshold: float | None,
    top_k: int,
    as_json: bool,
    on_bad_row: str,
    warn: Callable[[str], None] | None,
) -> Iterator[str]:
    task = _task(stepper)
    check_policy(on_bad_row)
    if task == "charlm":
        if series_column is not None or threshold is not None:
            raise InputError("--series-column and --threshold apply to feature models, not a character model")
        if on_bad_row == "hold":
            raise InputError(
                "--on-bad-row hold reuses a column's last good value; a character model has no columns "
                "(use skip or stop)"
            )
        yield from _Text(stepper, top_k, on_bad_row == "skip", warn).lines(lines, as_json)
        return
    if threshold is not None and task != "anomaly":
        raise InputError(f"--threshold applies to anomaly models; this is a {task} model")
    rows = Rows(_predictor(stepper, task, threshold), series_column, on_bad_row, warn)
    yield from rows.lines(lines, as_json)


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


# --- character models -----------------------------------------------------------------------------------


class _Text:
    """Every input line is text, stepped character by character; the newline that ends a line is fed before
    the next line's characters (when the vocabulary has one), so the model sees the text as it is and
    predicts at each line's end. A line is fed piece by piece and only the last logits are kept."""

    def __init__(self, stepper: Stepper, top_k: int, skip: bool, warn: Callable[[str], None] | None):
        vocabulary = stepper.info.input.vocabulary
        if not vocabulary:
            raise ContractError("a token model without a vocabulary in its metadata cannot read text")
        if not isinstance(top_k, int) or top_k < 1:
            raise InputError(f"--top-k: expected a positive integer, got {top_k!r}")
        self.stepper, self.vocabulary = stepper, list(vocabulary)
        self.index = {token: i for i, token in enumerate(self.vocabulary)}
        self.top_k = min(top_k, len(self.vocabulary))
        self.newline = "\n" if "\n" in self.index else ""
        self.skip, self.warn = skip, warn or (lambda message: None)
        chunk = stepper.chunk_steps or 1
        self.steps_per_call = max(chunk, OUTPUTS_PER_CALL // len(self.vocabulary) // chunk * chunk)

    def lines(self, lines: Iterable[Line], as_json: bool) -> Iterator[str]:
        for line in lines:
            before = self.stepper.snapshot()
            try:
                length, logits, kept = self._feed(line)
            except InputError as exc:
                self.stepper.restore(before)  # a line is fed whole or not at all
                if not self.skip:
                    raise InputError(f"line {line.number}: {exc}") from None
                self.warn(f"line {line.number}: {exc}; line skipped")
                yield json.dumps({"line": line.number, "skipped": str(exc)}) if as_json else ""
                continue
            if logits is None:
                continue  # an empty first line: nothing to predict from yet
            top = self._top(logits)
            if as_json:
                doc = {"line": line.number, "text": "".join(kept), "top_k": [[t, p] for t, p in top]}
                if length > len(doc["text"]):
                    doc["text_cut"] = True  # a line longer than MAX_ROW_CHARS is not repeated whole
                yield json.dumps(doc)
            else:
                yield "  ".join(f"{json.dumps(t)} {p:.4f}" for t, p in top)

    def _feed(self, line: Line) -> tuple[int, np.ndarray | None, list[str]]:
        """Feeds the line (after the newline before it); returns its length, the last logits (None when
        nothing was fed) and its first ``MAX_ROW_CHARS`` characters (JSON output repeats them), in pieces."""
        length, logits, kept = 0, None, []
        if line.number > 1 and self.newline:
            logits = self._run(self.newline)
        for piece in filter(None, line.pieces()):
            if length < MAX_ROW_CHARS:
                kept.append(piece[: MAX_ROW_CHARS - length])
            logits = self._run(piece)
            length += len(piece)
        return length, logits, kept

    def _run(self, text: str) -> np.ndarray:
        """Steps through ``text`` (not empty), a bounded number of characters per call; the last logits."""
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            raise InputError(f"characters not in the model's vocabulary: {''.join(unknown)!r}")
        ids = np.fromiter((self.index[c] for c in text), dtype=np.int64, count=len(text))
        for begin in range(0, len(ids), self.steps_per_call):
            logits = self.stepper.run(ids[begin : begin + self.steps_per_call])[-1]
        return logits

    def _top(self, logits: np.ndarray) -> list[tuple[str, float]]:
        logits = np.asarray(logits, dtype=np.float64)  # (V,) after the last character
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        order = np.argsort(-probabilities, kind="stable")[: self.top_k]
        return [(self.vocabulary[i], float(probabilities[i])) for i in order]
