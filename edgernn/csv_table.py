"""CSV files as tables of named columns, and what to do with cells that are not numbers. numpy only.

A column is numeric when at least half of its non-empty cells read as numbers; its other cells (empty,
``nan``, ``inf``, ``ERR``...) are *bad cells*, kept as NaN and reported with their file line numbers.
A bad cell never drops its column: the columns a task uses go through ``Table.resolve_missing`` with one
of the policies below (``--missing``), or ``Table.pick`` refuses them naming the lines.

==============  ====================================================================================
policy          what happens to a bad cell of a used column
==============  ====================================================================================
``error``       refused: the column, how many cells, their first lines
``ffill``       the column's last good value above it (leading bad cells: the first good value)
``interpolate`` linear between the good values either side (at an end: the nearest good value)
``drop-rows``   the row is left out (a series then joins the rows either side of it)
==============  ====================================================================================

Which columns a task reads by default (``default_inputs``: the numeric ones but timestamps, labels and
sequence ids, each column left out named with why) and the check of the names a user gives
(``check_option_names``) live here too.
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgernn.runtime.errors import InputError
from edgernn.runtime.untrusted import reads_untrusted

MISSING_POLICIES = ("error", "ffill", "interpolate", "drop-rows")
DEFAULT_MISSING = "interpolate"
SKIPPED_COLUMNS = {"timestamp", "time", "date", "datetime", "index"}  # never a default input
LABEL_COLUMNS = {"is_anomaly", "label", "labels", "class", "target_label"}
ID_COLUMNS = {"series_id", "sequence_id", "case_id", "utterance_id"}
_SHOWN_LINES = 5  # bad-cell line numbers named in a message
_SNIFFED_DELIMITERS = ";\t|"
_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")


@dataclass(frozen=True)
class BadCells:
    """The cells of a numeric column that are not finite numbers: how many, and the first few."""

    count: int
    lines: tuple[int, ...]  # file line numbers of the first ones (line 1 is the header)
    texts: tuple[str, ...]  # what those cells held

    def describe(self) -> str:
        shown = ", ".join(f"{line} {text!r}" for line, text in zip(self.lines, self.texts, strict=True))
        more = ", ..." if self.count > len(self.lines) else ""
        return f"{self.count} missing or non-numeric cell(s) (line {shown}{more})"


@dataclass
class Table:
    """The columns of a CSV file by name: numeric ones as float64 ``(N,)`` (NaN at bad cells), the others
    (dates, ids, text labels) as strings; ``lines[i]`` is the file line of row i."""

    path: Path
    columns: dict[str, np.ndarray]
    text: dict[str, list[str]] = field(default_factory=dict)
    bad: dict[str, BadCells] = field(default_factory=dict)
    lines: np.ndarray | None = None
    header: list[str] = field(default_factory=list)
    delimiter: str = ","

    @property
    def names(self) -> list[str]:
        """Every column, in the file's order."""
        return self.header or [*self.columns, *self.text]

    def __len__(self) -> int:
        return len(self.lines) if self.lines is not None else len(next(iter(self.columns.values()), []))

    def check_names(self, names: list[str], what: str) -> None:
        """Refuse names the file does not have, naming the ones it has (``what``: the option, e.g. ``--columns``)."""
        unknown = [n for n in names if n not in self.columns and n not in self.text]
        if unknown:
            raise InputError(f"{self.path}: no column(s) {unknown} ({what}); the columns are {self.names}")

    def labels(self, name: str, what: str = "label") -> list[str]:
        """A column as one string per row, numeric or text: whole numbers without a decimal point."""
        if name in self.columns:
            self._refuse_bad([name], what=f"{what} column", fix="give --missing drop-rows to skip their rows")
            values = self.columns[name]
            return [str(int(v)) if v == int(v) else repr(float(v)) for v in values.tolist()]
        if name in self.text:
            return self.text[name]
        raise InputError(f"{self.path}: no {what} column {name!r}; the columns are {self.names}")

    def pick(self, names: list[str]) -> np.ndarray:
        """The named numeric columns as float32 ``(N, len(names))``; a text column, an unknown name or a bad
        cell is an InputError that says which (resolve bad cells first with ``resolve_missing``)."""
        self._refuse_unknown(names)
        texts = [n for n in names if n in self.text]
        if texts:
            raise InputError(f"{self.path}: {self._text_problem(texts[0])}")
        self._refuse_bad(names)
        return np.stack([self.columns[n] for n in names], axis=1).astype(np.float32)  # (N, len(names))

    def _refuse_unknown(self, names: list[str]) -> None:
        unknown = [n for n in dict.fromkeys(names) if n not in self.columns and n not in self.text]
        if unknown:
            raise InputError(
                f"{self.path}: no column(s) {unknown}; the file's numeric columns are {list(self.columns)}"
                + (f", its text columns {list(self.text)}" if self.text else "")
            )

    def _text_problem(self, name: str) -> str:
        cells = [c for c in self.text[name] if c][:1] or [""]
        hint = ""
        if _DECIMAL_COMMA.fullmatch(cells[0]):
            hint = "; numbers with a decimal comma are not read as numbers: write them with a decimal point"
        return f"column {name!r} holds text, not numbers (first cell {cells[0]!r}){hint}"

    def _refuse_bad(
        self,
        names: list[str],
        what: str = "column",
        fix: str = "give --missing ffill, interpolate or drop-rows to fill them or skip their rows",
    ) -> None:
        for name in names:
            if name in self.bad:
                raise InputError(f"{self.path}: {what} {name!r} has {self.bad[name].describe()}; {fix}")

    def resolve_missing(
        self, names: list[str], policy: str, groups: np.ndarray | None = None
    ) -> tuple[Table, dict[str, Any]]:
        """This table with the bad cells of ``names`` handled by ``policy`` (see the module docstring), and
        a report of what was done: ``{"policy", "columns": [{"column", "count", "lines", "action"}]}``.

        ``groups`` (one id per row) keeps filling inside each group (a sequence of a classification CSV).
        A label column is never filled: with ``ffill``/``interpolate`` its bad cells stay and ``labels``
        refuses them; ``drop-rows`` leaves their rows out.
        """
        if policy not in MISSING_POLICIES:
            raise InputError(f"--missing: expected one of {', '.join(MISSING_POLICIES)}, got {policy!r}")
        self._refuse_unknown(names)
        affected = [n for n in dict.fromkeys(names) if n in self.bad]
        report = {"policy": policy, "columns": [self._bad_report(n, policy) for n in affected]}
        if not affected:
            return self, report
        if policy == "error":
            self._refuse_bad(affected)
        if policy == "drop-rows":
            keep = ~np.any([np.isnan(self.columns[n]) for n in affected], axis=0)
            if not keep.any():
                raise InputError(f"{self.path}: every row has a bad cell in {affected}; nothing is left")
            return self._rows(keep), report
        columns = dict(self.columns)
        for name in affected:
            columns[name] = _filled(self.columns[name], policy, groups, self.path, name)
        bad = {k: v for k, v in self.bad.items() if k not in affected}
        return replace(self, columns=columns, bad=bad), report

    def _bad_report(self, name: str, policy: str) -> dict[str, Any]:
        cells = self.bad[name]
        actions = {"error": "refused", "ffill": "filled forward", "interpolate": "interpolated"}
        actions["drop-rows"] = "their rows dropped"
        return {
            "column": name,
            "count": cells.count,
            "rows": len(self),
            "lines": list(cells.lines),
            "action": actions[policy],
        }

    def _rows(self, keep: np.ndarray) -> Table:
        """The rows where ``keep`` is True, every column alike, bad cells recounted."""
        columns = {k: v[keep] for k, v in self.columns.items()}
        text = {k: [c for c, kept in zip(v, keep, strict=True) if kept] for k, v in self.text.items()}
        lines = self.lines[keep] if self.lines is not None else None
        raw = {k: [repr(float(x)) for x in v] for k, v in columns.items()}
        bad = {k: _bad_cells(v, raw[k], lines) for k, v in columns.items() if np.isnan(v).any()}
        return replace(self, columns=columns, text=text, bad=bad, lines=lines)


def _filled(values: np.ndarray, policy: str, groups: np.ndarray | None, path: Path, name: str) -> np.ndarray:
    """``values`` (N,) with NaNs filled by ``policy`` within each group (the whole column without groups)."""
    out = values.copy()
    for rows in _group_rows(len(values), groups):
        segment = out[rows]
        good = np.flatnonzero(~np.isnan(segment))
        if len(good) == 0:
            raise InputError(
                f"{path}: column {name!r} has no number to fill from"
                + (" in one of its sequences" if groups is not None else "")
            )
        if policy == "interpolate":
            segment = np.interp(np.arange(len(segment)), good, segment[good])
        else:  # ffill: the last good value above, the first good one for a leading run
            source = np.maximum.accumulate(np.where(np.isnan(segment), -1, np.arange(len(segment))))
            segment = segment[np.where(source < 0, good[0], source)]
        out[rows] = segment
    return out


def _group_rows(n: int, groups: np.ndarray | None) -> list[np.ndarray]:
    if groups is None:
        return [np.arange(n)]
    return [np.flatnonzero(groups == g) for g in dict.fromkeys(groups.tolist())]


def _bad_cells(values: np.ndarray, raw: list[str], lines: np.ndarray | None) -> BadCells:
    where = np.flatnonzero(~np.isfinite(values))
    first = where[:_SHOWN_LINES]
    line_numbers = lines[first] if lines is not None else first + 2
    return BadCells(len(where), tuple(int(v) for v in line_numbers), tuple(raw[i] for i in first))


@reads_untrusted("the data file")
def read_csv(path: str | os.PathLike) -> Table:
    """Read a CSV with a header row. Commas separate fields; a file whose header has no comma but a
    semicolon, tab or pipe is read with that delimiter (``Table.delimiter``). Blank lines are skipped."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            delimiter = sniff_delimiter(f.readline())
            f.seek(0)
            reader = csv.reader(f, delimiter=delimiter)
            rows, lines = [], []
            for row in reader:
                if row:
                    rows.append(row)
                    lines.append(reader.line_num)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; expected a CSV file with a header row") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: expected a UTF-8 CSV file, found undecodable bytes") from None
    _check_row_counts(path, rows, lines)
    header = [name.strip() for name in rows[0]]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise InputError(
            f"{path}: the header names column(s) {repeated} more than once; expected unique names"
        )
    body, line_numbers = rows[1:], np.array(lines[1:], dtype=np.int64)
    columns, text, bad = {}, {}, {}
    for j, name in enumerate(header):
        cells = [row[j].strip() for row in body]
        values = _numbers(cells)
        if values is None:
            text[name] = cells  # a date, an id, a text label
            continue
        columns[name] = values
        if not np.isfinite(values).all():
            bad[name] = _bad_cells(values, cells, line_numbers)
    return Table(path, columns, text, bad, line_numbers, header, delimiter)


def sniff_delimiter(header_line: str) -> str:
    """Comma, unless the header has none and holds a semicolon, tab or pipe (csv.Sniffer picks which)."""
    if "," in header_line or not any(d in header_line for d in _SNIFFED_DELIMITERS):
        return ","
    try:
        return csv.Sniffer().sniff(header_line, delimiters=_SNIFFED_DELIMITERS).delimiter
    except csv.Error:
        return ","


def _check_row_counts(path: Path, rows: list[list[str]], lines: list[int]) -> None:
    if not rows:
        raise InputError(f"{path}: the file is empty; expected a header row and data rows")
    if len(rows) == 1:
        raise InputError(f"{path}: the file has a header row but no data rows")
    if len(rows) == 2:
        raise InputError(f"{path}: expected at least 2 data rows below the header, found 1")
    width = len(rows[0])
    bad = [line for row, line in zip(rows[1:], lines[1:], strict=True) if len(row) != width]
    if bad:
        raise InputError(
            f"{path}: expected {width} fields per row (as the header has), lines {bad[:5]} differ"
        )


def _numbers(cells: list[str]) -> np.ndarray | None:
    """The cells as float64 (NaN where a cell is not a finite number), or None for a text column: one
    where fewer than half of the non-empty cells read as numbers."""
    values = []
    numeric = filled = 0
    for cell in cells:
        number = math.nan
        if cell:
            filled += 1
            try:
                number = float(cell)
                numeric += 1
            except ValueError:
                pass
        values.append(number)
    if numeric == 0 or 2 * numeric < filled:
        return None
    array = np.array(values, dtype=np.float64)
    array[~np.isfinite(array)] = np.nan  # "nan", "inf": bad cells like any other
    return array


def delimiter_name(delimiter: str) -> str:
    return _DELIMITER_NAMES.get(delimiter, repr(delimiter))


# --- which columns a task reads -------------------------------------------------------------------


def default_inputs(table: Table, exclude: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The numeric columns but timestamps, labels, sequence ids and ``exclude`` (name -> why), and why
    each other column is left out (name -> reason): nothing is left out without a word."""
    names, left_out = [], {}
    for name in table.names:
        lower = name.lower()
        if name in exclude:
            left_out[name] = exclude[name]
        elif name in table.text:
            left_out[name] = "text"
        elif lower in SKIPPED_COLUMNS:
            left_out[name] = "a time or index column"
        elif lower in LABEL_COLUMNS:
            left_out[name] = "a label column"
        elif lower in ID_COLUMNS:
            left_out[name] = "a sequence id column"
        else:
            names.append(name)
    if not names:
        raise InputError(
            f"{table.path}: no numeric feature columns found (columns: {table.names}, left out: "
            f"{', '.join(f'{k} ({v})' for k, v in left_out.items())}); name them with --columns"
        )
    return names, left_out


def check_option_names(table: Table, columns, targets, label_column) -> None:
    """Every name given on the command line is a column of the file (else the known ones are named)."""
    table.check_names(columns or [], "--columns")
    table.check_names(targets or [], "--targets")
    if label_column:
        table.check_names([label_column], "--label-column")


def reading_notes(table: Table, missing: dict, left_out: dict[str, str], **more) -> dict[str, Any]:
    """What the training summary says about how the CSV was read (``metrics.json`` keeps it)."""
    notes = {"missing": missing, "left_out": left_out, **more}
    if table.delimiter != ",":
        notes["delimiter"] = delimiter_name(table.delimiter)
    return notes
