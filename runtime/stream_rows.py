"""Feature rows for ``edgernn stream``: CSV or JSON lines in, one answer per row out, bad rows by policy.

What a row may hold: every model column as an ASCII decimal number the way Python and JSON write them
(``12``, ``-0.5``, ``1.5e-3``, ``.5``; in CSV with spaces around it; in JSON a number or a string holding
one), finite and within float32's range. Anything else in a model column is a bad reading: ``1_000``,
Arabic-Indic or other non-ASCII digits, ``0x10``, ``nan``, ``inf``, ``1e39``, an empty cell. A row is bad
as a whole when it cannot be read: a CSV row with an unclosed quote or another field count than the
header, a line that is no JSON object (nesting too deep included), a JSON integer of more digits than
Python reads (4,300), bytes that are not UTF-8, a line over ``MAX_ROW_CHARS``.

``on_bad_row`` says what a bad row does: ``stop`` (the default) raises InputError naming its line, after
the rows before it were answered; ``skip`` answers it with a marker (CSV: a row of empty fields; JSON:
``{"line": n, "skipped": reason}``) and leaves the state as it was; ``hold`` fills each bad reading with
its column's last good value in the same sequence (JSON answers list them in ``held``) and skips the row
when there is none or when the row cannot be read at all. Skip and hold report every bad row through
``warn``, one line naming its line number and columns. The header row is never skipped: a header without
the model's columns always stops.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgernn.runtime.errors import InputError
from edgernn.runtime.stream_lines import Line

BAD_ROW_POLICIES = ("stop", "skip", "hold")
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_INTEGER_DIGITS = 4300  # Python's own bound on int() of a string (sys.get_int_max_str_digits)
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NOT_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


def check_policy(on_bad_row: str) -> None:
    """InputError unless ``on_bad_row`` is one of BAD_ROW_POLICIES."""
    if on_bad_row not in BAD_ROW_POLICIES:
        raise InputError(f"--on-bad-row: expected one of {', '.join(BAD_ROW_POLICIES)}, got {on_bad_row!r}")


class RowError(InputError):
    """A row that cannot be read at all (no column of it can be trusted)."""


@dataclass
class Reading:
    """A row as read: ``values`` ``(columns,)`` float32, NaN where a cell could not be read; ``problems``
    says why (one entry per bad cell or group of cells), in column order."""

    series: Any
    values: np.ndarray
    problems: list[str]


class Rows:
    """Reads CSV or JSON lines sample by sample and answers each through a predictor (see the module)."""

    def __init__(
        self,
        predictor: Any,
        series_column: str | None,
        on_bad_row: str = "stop",
        warn: Callable[[str], None] | None = None,
    ):
        check_policy(on_bad_row)
        self.predictor, self.series_column = predictor, series_column
        self.on_bad_row, self.warn = on_bad_row, warn or (lambda message: None)
        self.series: Any = None
        self.held = np.full(len(predictor.columns), np.nan, np.float32)  # last good value per column
        self.index: list[int] = []  # CSV: field index of each model column
        self.series_index: int | None = None
        self.width = 0
        self.mode: str | None = None

    def lines(self, lines: Iterable[Line], as_json: bool) -> Iterator[str]:
        for line in lines:
            if self.mode is None:
                yield from self._first(line, as_json)
            else:
                yield from self._answer(line, as_json)

    def _first(self, line: Line, as_json: bool) -> Iterator[str]:
        """Before the first row: a blank line, or the line that says CSV (its header) or JSON."""
        text = _prefixed(line.number, line.text)
        if not text.strip():
            self._boundary()
            return
        self.mode = "json" if text.lstrip().startswith("{") else "csv"
        if self.mode == "csv":
            _prefixed(line.number, self._read_header, text)
        if not as_json:
            yield _csv_line(self._out_header())
        if self.mode == "json":
            yield from self._answer(Line(line.number, iter([text])), as_json)

    def _answer(self, line: Line, as_json: bool) -> Iterator[str]:
        try:
            text = line.text()
            if not text.strip():
                self._boundary()
                return
            reading = self._json_row(text) if self.mode == "json" else self._csv_row(text)
        except InputError as exc:  # the row cannot be read at all
            yield self._bad_row(line.number, str(exc), as_json)
            return
        new_sequence = self.series_column is not None and reading.series != self.series
        held: list[str] = []
        if reading.problems:
            held = self._hold(line.number, reading, new_sequence)
            if not held:
                yield self._bad_row(line.number, "; ".join(reading.problems), as_json)
                return
        if new_sequence:
            self._boundary()
            self.series = reading.series
        try:
            doc = self.predictor.predict(reading.values)
        except InputError as exc:  # the stepper refused it; the state is as it was
            yield self._bad_row(line.number, str(exc), as_json)
            return
        self.held = reading.values
        yield self._format(line.number, reading.series, doc, held, as_json)

    def _hold(self, number: int, reading: Reading, new_sequence: bool) -> list[str]:
        """Under ``hold``, fill the bad readings with their columns' last good values; the columns held,
        or [] when the row is to be skipped (or InputError under ``stop``)."""
        if self.on_bad_row == "stop":
            raise InputError(f"line {number}: {reading.problems[0]}")
        if self.on_bad_row == "skip":
            return []
        bad = np.isnan(reading.values)
        last = np.full_like(self.held, np.nan) if new_sequence else self.held
        if np.isnan(last[bad]).any():
            reading.problems.append("no earlier good value in this sequence to hold")
            return []
        reading.values[bad] = last[bad]
        held = [name for name, b in zip(self.predictor.columns, bad, strict=True) if b]
        values = ", ".join(f"{name}={v:.6g}" for name, v in zip(held, last[bad], strict=True))
        self.warn(f"line {number}: {'; '.join(reading.problems)}; held the last good value ({values})")
        return held

    def _bad_row(self, number: int, reason: str, as_json: bool) -> str:
        if self.on_bad_row == "stop":
            raise InputError(f"line {number}: {reason}")
        self.warn(f"line {number}: {reason}; row skipped")
        if as_json:
            return json.dumps({"line": number, "skipped": reason})
        return _csv_line([""] * len(self._out_header()))

    def _format(self, number: int, series: Any, doc: dict[str, Any], held: list[str], as_json: bool) -> str:
        if self.series_column is not None:
            doc = {self.series_column: series, **doc}
        if not as_json:
            return _csv_line(list(doc.values()))
        return json.dumps({"line": number, **doc, **({"held": held} if held else {})})

    def _out_header(self) -> list[str]:
        return [*([self.series_column] if self.series_column else []), *self.predictor.header]

    def _boundary(self) -> None:
        self.predictor.reset()
        self.series = None
        self.held = np.full_like(self.held, np.nan)

    def _read_header(self, text: str) -> None:
        names = [name.strip() for name in _fields(text)]
        wanted = self.predictor.columns + ([self.series_column] if self.series_column else [])
        missing = [name for name in wanted if name not in names]
        if missing:
            raise InputError(f"the header has no column(s) {missing}; it has {names}")
        self.index = [names.index(name) for name in self.predictor.columns]
        self.series_index = names.index(self.series_column) if self.series_column else None
        self.width = len(names)

    def _csv_row(self, text: str) -> Reading:
        fields = _fields(text)
        if len(fields) != self.width:
            raise RowError(f"expected {self.width} fields as in the header, got {len(fields)}")
        series = fields[self.series_index].strip() if self.series_index is not None else None
        return _reading(series, [fields[i] for i in self.index], self.predictor.columns)

    def _json_row(self, text: str) -> Reading:
        doc = _json_object(text)
        if self.series_column is not None and self.series_column not in doc:
            raise RowError(f"no field {self.series_column!r} (the series column); it has {sorted(doc)[:20]}")
        columns = self.predictor.columns
        missing = [name for name in columns if name not in doc]
        reading = _reading(doc.get(self.series_column), [doc.get(name, 0) for name in columns], columns)
        if missing:
            reading.values[[columns.index(name) for name in missing]] = np.nan
            reading.problems.insert(0, f"no field(s) {missing}; it has {sorted(doc)[:20]}")
        return reading


def _prefixed(number: int, read: Callable[..., Any], *args: Any) -> Any:
    try:
        return read(*args)
    except InputError as exc:
        raise InputError(f"line {number}: {exc}") from None


def _reading(series: Any, cells: list[Any], columns: list[str]) -> Reading:
    values, problems = [], []
    for cell, name in zip(cells, columns, strict=True):
        try:
            values.append(number(cell))
        except InputError as exc:
            values.append(math.nan)
            problems.append(f"column {name!r}: {exc}")
    return Reading(series, np.array(values, dtype=np.float32), problems)


def number(value: Any) -> float:
    """A reading as a float: an int or float, or text holding an ASCII decimal number (see the module);
    finite and within float32's range. InputError says what was expected and what was given."""
    if isinstance(value, str):
        text = value.strip(" \t")
        if not _DECIMAL.fullmatch(text):
            if _NOT_FINITE.fullmatch(text):
                raise InputError(f"expected a finite number, got {value!r:.40}")
            raise InputError(
                f"expected a number, got {value!r:.40} (ASCII decimal, as Python or JSON write it)"
            )
        result: int | float = float(text)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"expected a finite number, got {value!r:.40}")
        result = value  # an int of any size compares exactly with the float bound below
    else:
        raise InputError(f"expected a number, got {value!r:.40}")
    if not abs(result) <= FLOAT32_MAX:
        raise InputError(f"expected a finite float32 number (magnitude at most 3.4e38), got {value!r:.40}")
    return float(result)


def _fields(text: str) -> list[str]:
    try:
        return next(csv.reader([text], strict=True))
    except csv.Error as exc:
        reason = "a quoted field is not closed" if "unexpected end of data" in str(exc) else str(exc)
        raise RowError(f"not a CSV row: {reason}") from None


def _json_object(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text, parse_int=_json_integer)
    except json.JSONDecodeError as exc:
        raise RowError(f"not a JSON object ({exc.msg})") from None
    except RecursionError:
        raise RowError("not a JSON object (nested deeper than the reader follows)") from None
    if not isinstance(doc, dict):
        raise RowError(f"expected a JSON object, got {type(doc).__name__}")
    return doc


def _json_integer(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INTEGER_DIGITS:
        raise RowError(f"a JSON integer of {digits:,} digits (at most {MAX_INTEGER_DIGITS:,} are read)")
    return int(text)


def _csv_line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(
        [f"{v:.6g}" if isinstance(v, float) else v for v in values]
    )
    return buffer.getvalue()
