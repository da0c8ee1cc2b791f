"""Tasks: turn a data file into what the trainer needs and what the ONNX metadata must record.

Two shapes of data:

- **series**: one long stream (text, a sensor CSV) cut into contiguous streams and consecutive chunks for
  stateful truncated BPTT. Tasks: ``charlm``, ``forecast``, ``anomaly``, ``steplabels``.
- **sequences**: many short variable-length sequences, one label each (``classify``). The class is read
  after the last step; the loss also teaches every step, so early decisions are possible.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgernn.csv_table import (
    DEFAULT_MISSING,
    ID_COLUMNS,
    LABEL_COLUMNS,
    check_option_names,
    default_inputs,
    read_csv,
    reading_notes,
    sniff_delimiter,
)
from edgernn.data import build_vocabulary, encode, read_text, split_train_validation
from edgernn.runtime.audio import looks_like_audio
from edgernn.runtime.errors import InputError
from edgernn.runtime.untrusted import reads_untrusted

if TYPE_CHECKING:  # the file readers serve torch-free commands (edgernn eval): tasks import torch inside
    import torch

TASKS = ("charlm", "forecast", "anomaly", "classify", "steplabels", "keyword")
MIN_VALIDATION_CASES = 20  # classify: fewer validation cases make the kept model a matter of luck


@dataclass
class TaskData:
    """Training data plus what the model config and the metadata need to know about it."""

    task: str
    loss: str  # "cross_entropy" or "mse"
    model_fields: dict[str, Any]  # input_kind, input_size, output_kind, output_size, normalisation
    train: Any  # series: (inputs, targets); sequences: list of (inputs (T, F), label)
    validation: Any
    metadata: dict[str, Any] = field(default_factory=dict)  # extra metadata for the ONNX file
    vocabulary: list[str] | None = None
    class_weights: torch.Tensor | None = None
    notes: dict[str, Any] = field(default_factory=dict)  # how a CSV was read: missing cells, left out...

    @property
    def is_series(self) -> bool:
        return self.task not in ("classify", "keyword")

    @property
    def split_sizes(self) -> tuple[int, int]:
        """Training and validation sizes: rows (steps) of a series, or sequences."""
        if self.is_series:
            return len(self.train[0]), len(self.validation[0])
        return len(self.train), len(self.validation)

    @property
    def loss_description(self) -> str:
        """What the validation loss measures, in words."""
        if self.loss == "mse":
            return "MSE of the targets normalised by their training mean and std (1.0: as good as the mean)"
        if self.task == "charlm":
            return "cross-entropy, nats per character"
        if self.task in ("classify", "keyword"):
            return "cross-entropy of the class after each sequence's last step, nats per sequence"
        return "cross-entropy, nats per step"


# --- text --------------------------------------------------------------------------------------------


def charlm_task(path: str | os.PathLike, validation_fraction: float = 0.1) -> TaskData:
    """Next character of a UTF-8 text: first 90% trains, last 10% validates."""
    import torch

    text = read_text(path)
    vocabulary = build_vocabulary(text)
    train_ids, val_ids = (
        torch.from_numpy(a) for a in split_train_validation(encode(text, vocabulary), validation_fraction)
    )
    fields = {
        "input_kind": "tokens",
        "input_size": len(vocabulary),
        "output_kind": "logits",
        "output_size": len(vocabulary),
    }
    return TaskData(
        "charlm", "cross_entropy", fields,
        train=(train_ids[:-1], train_ids[1:]), validation=(val_ids[:-1], val_ids[1:]),
        vocabulary=vocabulary,
    )  # fmt: skip


# --- CSV -----------------------------------------------------------------------------------------------


def _stats(array: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = array.mean(axis=0)
    std = array.std(axis=0)
    std = np.where(std > 1e-8 * np.maximum(1.0, np.abs(mean)), std, 1.0)  # a constant column stays as is
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _classifier_fields(inputs: int, classes: int, mean: tuple, std: tuple) -> dict[str, Any]:
    return {
        "input_kind": "features", "input_size": inputs, "output_kind": "logits", "output_size": classes,
        "input_mean": mean, "input_std": std,
    }  # fmt: skip


MIN_SPLIT_ROWS = 16  # rows each side of a series split, at least


def minimum_series_rows(validation_fraction: float, training_rows: int = MIN_SPLIT_ROWS) -> int:
    """The fewest rows a series needs so that its split leaves ``training_rows`` for training and
    ``MIN_SPLIT_ROWS`` for validation at ``validation_fraction``."""
    n = training_rows + MIN_SPLIT_ROWS
    while True:
        cut = int(n * (1.0 - validation_fraction))
        if cut >= training_rows and n - cut >= MIN_SPLIT_ROWS:
            return n
        n += 1


def _split_series(n: int, validation_fraction: float) -> int:
    cut = int(n * (1.0 - validation_fraction))
    if cut < MIN_SPLIT_ROWS or n - cut < MIN_SPLIT_ROWS:
        raise InputError(
            f"a series of {n} rows is too short to split into training and validation: at validation "
            f"fraction {validation_fraction:g} it needs at least {minimum_series_rows(validation_fraction)} "
            f"rows ({MIN_SPLIT_ROWS} or more each side)"
        )
    return cut


def forecast_task(
    path: str | os.PathLike,
    columns: list[str] | None = None,
    targets: list[str] | None = None,
    validation_fraction: float = 0.1,
    task: str = "forecast",
    *,
    label_column: str | None = None,
    missing: str = DEFAULT_MISSING,
) -> TaskData:
    """One step ahead: the columns at time t predict the target columns at t + 1.

    The inputs are ``columns`` in the order given (default: the numeric columns but timestamps, labels and
    ``label_column``, in the file's order); ``targets`` default to the first input column. Bad cells of
    the columns used are handled by ``missing`` (``edgernn.csv_table``). Normalisation statistics come
    from the training split only; the model applies them in its graph, so users feed raw values and get
    predictions in their own units.
    """
    import torch

    table = read_csv(path)
    check_option_names(table, columns, targets, label_column)
    exclude = {label_column: "the --label-column"} if label_column else {}
    columns, left_out = (columns, {}) if columns else default_inputs(table, exclude)
    targets_default = not targets
    targets = columns if task == "anomaly" else (targets or columns[:1])
    table, missing_report = table.resolve_missing([*columns, *targets], missing)
    features, target_values = table.pick(columns), table.pick(targets)
    cut = _split_series(len(features), validation_fraction)
    input_mean, input_std = _stats(features[:cut])
    output_mean, output_std = _stats(target_values[:cut])
    x, y = torch.from_numpy(features[:-1]), torch.from_numpy(target_values[1:])
    fields = {
        "input_kind": "features", "input_size": len(columns), "output_kind": "values", "output_size": len(targets),
        "input_mean": input_mean, "input_std": input_std, "output_mean": output_mean, "output_std": output_std,
    }  # fmt: skip
    metadata = {"columns": columns, "targets": targets}
    notes = reading_notes(
        table, missing_report, left_out, targets_default=targets_default and task == "forecast"
    )
    return TaskData(
        task,
        "mse",
        fields,
        train=(x[: cut - 1], y[: cut - 1]),
        validation=(x[cut - 1 :], y[cut - 1 :]),
        metadata=metadata,
        notes=notes,
    )


def anomaly_task(
    path: str | os.PathLike,
    columns: list[str] | None = None,
    validation_fraction: float = 0.1,
    *,
    label_column: str | None = None,
    missing: str = DEFAULT_MISSING,
) -> TaskData:
    """A forecaster of its own inputs whose normalised prediction error is the anomaly score."""
    return forecast_task(
        path, columns, None, validation_fraction, task="anomaly", label_column=label_column, missing=missing
    )


def steplabels_task(
    path: str | os.PathLike,
    label_column: str,
    columns: list[str] | None = None,
    validation_fraction: float = 0.1,
    *,
    missing: str = DEFAULT_MISSING,
) -> TaskData:
    """A label per row: a streaming classifier that emits class logits at every step."""
    import torch

    table = read_csv(path)
    check_option_names(table, columns, None, label_column)
    columns, left_out = (columns, {}) if columns else default_inputs(table, {label_column: "the labels"})
    resolved = [*columns, label_column] if missing == "drop-rows" else columns  # labels are never filled
    table, missing_report = table.resolve_missing(resolved, missing)
    raw_labels = table.labels(label_column)
    classes = sorted(set(raw_labels), key=_natural_key)
    if len(classes) < 2:
        raise InputError(
            f"{table.path}: label column {label_column!r} must hold at least 2 classes, found {classes}"
        )
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[label] for label in raw_labels], dtype=torch.int64)
    features = table.pick(columns)
    cut = _split_series(len(features), validation_fraction)
    mean, std = _stats(features[:cut])
    x = torch.from_numpy(features)
    counts = torch.bincount(labels[:cut], minlength=len(classes)).clamp(min=1).float()
    fields = _classifier_fields(len(columns), len(classes), mean, std)
    metadata = {"columns": columns, "label_column": label_column, "classes": classes}
    return TaskData(
        "steplabels", "cross_entropy", fields, train=(x[:cut], labels[:cut]), validation=(x[cut:], labels[cut:]),
        metadata=metadata, class_weights=(counts.sum() / counts) / len(classes),
        notes=reading_notes(table, missing_report, left_out),
    )  # fmt: skip


# --- sequence classification ---------------------------------------------------------------------------


@reads_untrusted("the data file")
def read_ts(path: str | os.PathLike) -> tuple[list[np.ndarray], list[str]]:
    """A UEA/UCR ``.ts`` file: ``@`` header lines, then one case per line, dimensions split by ``:``,
    values by ``,``, the class label last. Returns sequences ``(T_i, dims)`` float32 and labels."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; expected a UEA/UCR .ts file") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: expected a UTF-8 .ts file") from None
    try:
        start = next(i for i, line in enumerate(lines) if line.strip().lower() == "@data") + 1
    except StopIteration:
        raise InputError(f"{path}: no @data line; expected a UEA/UCR .ts file") from None
    sequences, labels = [], []
    for number, line in enumerate(lines[start:], start=start + 1):
        if not line.strip() or line.startswith("#"):
            continue
        *dims, label = line.strip().split(":")
        try:
            channels = [np.array([float(v) for v in d.split(",")], dtype=np.float32) for d in dims]
        except ValueError:
            raise InputError(
                f"{path}:{number}: expected comma-separated numbers in every dimension"
            ) from None
        if not dims or len({len(c) for c in channels}) != 1:
            raise InputError(f"{path}:{number}: expected dimensions of equal length")
        sequences.append(np.stack(channels, axis=1))  # (T, dims)
        labels.append(label.strip())
    if not sequences:
        raise InputError(f"{path}: no cases after @data")
    if len({s.shape[1] for s in sequences}) != 1:
        raise InputError(f"{path}: cases have different numbers of dimensions")
    return sequences, labels


def read_sequences_csv(
    path: str | os.PathLike,
    id_column: str,
    label_column: str,
    columns: list[str] | None,
    missing: str = DEFAULT_MISSING,
) -> tuple[list[np.ndarray], list[str], list[str], dict[str, Any]]:
    """A CSV with one row per step: a sequence id column, feature columns and a label per sequence.

    Returns the sequences ``(T_i, F)`` float32, their labels, the feature columns and notes on how the
    file was read. Bad cells are filled inside their own sequence (``missing``); ids and labels are
    never filled.
    """
    table = read_csv(path)
    check_option_names(table, columns, None, label_column)
    table.check_names([id_column], "the sequence id column")
    exclude = {id_column: "the sequence ids", label_column: "the labels"}
    columns, left_out = (columns, {}) if columns else default_inputs(table, exclude)
    if missing == "drop-rows":
        table, report = table.resolve_missing([*columns, id_column, label_column], missing)
        ids = np.array(table.labels(id_column, "sequence id"))
    else:
        ids = np.array(table.labels(id_column, "sequence id"))
        table, report = table.resolve_missing(columns, missing, groups=ids)
    labels = table.labels(label_column)
    features = table.pick(columns)
    sequences, sequence_labels = [], []
    for sid in dict.fromkeys(ids.tolist()):  # in order of first appearance
        rows = np.flatnonzero(ids == sid)
        sequences.append(features[rows])
        sequence_labels.append(labels[rows[-1]])  # a label per sequence: its last row's
    return sequences, sequence_labels, columns, reading_notes(table, report, left_out)


def classify_task(
    path: str | os.PathLike,
    validation_fraction: float = 0.1,
    seed: int = 0,
    id_column: str = "series_id",
    label_column: str = "label",
    columns: list[str] | None = None,
    min_validation_cases: int = MIN_VALIDATION_CASES,
    missing: str = DEFAULT_MISSING,
) -> TaskData:
    """Sequence classification from a ``.ts`` file or a CSV (id column, features, label column).

    The validation cases are a stratified sample (every class in its share); on a small data set the
    validation share grows past ``validation_fraction`` to ``min_validation_cases`` (at most a quarter
    of the cases), so that the model kept is not picked on a handful of cases.
    """
    import torch

    notes: dict[str, Any] = {}
    if str(path).endswith(".ts"):
        sequences, labels = read_ts(path)
        columns = [f"dim_{i}" for i in range(sequences[0].shape[1])]
    else:
        sequences, labels, columns, notes = read_sequences_csv(
            path, id_column, label_column, columns, missing
        )
    classes = sorted(set(labels), key=_natural_key)
    if len(classes) < 2:
        raise InputError(f"{path}: expected at least 2 classes, found {classes}")
    index = {c: i for i, c in enumerate(classes)}
    order, n_val = case_order(
        [index[label] for label in labels], validation_fraction, seed, min_validation_cases
    )
    cases = [(torch.from_numpy(sequences[i]), index[labels[i]]) for i in order]
    mean, std = _stats(np.concatenate([s for s, _ in cases[n_val:]]))
    fields = _classifier_fields(len(columns), len(classes), mean, std)
    metadata = {"columns": columns, "classes": classes}
    return TaskData(
        "classify", "cross_entropy", fields, train=cases[n_val:], validation=cases[:n_val], metadata=metadata,
        notes=notes,
    )  # fmt: skip


def case_order(
    labels: list[int], validation_fraction: float, seed: int, min_validation_cases: int = MIN_VALIDATION_CASES
) -> tuple[np.ndarray, int]:
    """How classification cases are split: a seeded, stratified order of the cases (by their class
    indices ``labels``), of which the first ``n_val`` validate and the rest train."""
    return stratified_order(labels, seed), validation_cases(
        len(labels), validation_fraction, min_validation_cases
    )


def validation_cases(cases: int, fraction: float, minimum: int = MIN_VALIDATION_CASES) -> int:
    """How many of ``cases`` validate: ``fraction`` of them, at least ``minimum`` but at most a quarter."""
    return max(1, math.ceil(cases * fraction), min(minimum, cases // 4))


def stratified_order(labels: list[int], seed: int) -> np.ndarray:
    """A permutation of the cases whose every prefix holds each class in about its share.

    Each class's cases are shuffled, and case k of a class of n sorts at (k + u) / n, u uniform in [0, 1).
    """
    rng = np.random.default_rng(seed)
    labels_array = np.asarray(labels)
    keys = np.empty(len(labels_array))
    for label in np.unique(labels_array):
        members = rng.permutation(np.flatnonzero(labels_array == label))
        keys[members] = (np.arange(len(members)) + rng.random(len(members))) / len(members)
    return np.argsort(keys, kind="stable")


def read_labelled_cases(
    path: str | os.PathLike, classes: list[str], **csv_options
) -> list[tuple[np.ndarray, int]]:
    """Cases for a trained classifier: ``(frames (T, F) float32, class index)``, labels mapped to its
    classes (an InputError names labels it does not have). numpy only."""
    if str(path).endswith(".ts"):
        sequences, labels = read_ts(path)
    else:
        sequences, labels, _, _ = read_sequences_csv(path, **csv_options)
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise InputError(f"{path}: labels {unknown} were not in the training classes {classes}")
    return [(s, classes.index(label)) for s, label in zip(sequences, labels, strict=True)]


def read_labelled_sequences(
    path: str | os.PathLike, classes: list[str], **csv_options
) -> list[tuple[torch.Tensor, int]]:
    """Test cases for a trained classifier as tensors, labels mapped to its classes."""
    import torch

    return [(torch.from_numpy(s), label) for s, label in read_labelled_cases(path, classes, **csv_options)]


def _natural_key(label: str) -> tuple:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


@reads_untrusted("the data file")
def load_task(
    task: str,
    path: str | os.PathLike,
    *,
    columns=None,
    targets=None,
    label_column=None,
    missing=DEFAULT_MISSING,
    seed=0,
    validation_fraction=0.1,
    min_validation_cases=MIN_VALIDATION_CASES,
    augment=True,
    mels=None,
    running_ms=None,
    wav_repeat=None,
) -> TaskData:
    """Dispatch on the task name. ``columns``, ``targets``, ``label_column`` and ``missing`` are the CSV
    options (``--columns`` ...); a name the file does not have is refused, naming those it has.
    ``augment``, ``mels``, ``running_ms``, ``wav_repeat``: the keyword task's augmentation, front end and
    clips (``edgernn.keyword``; None: its defaults)."""
    given = (("mels", mels), ("running_ms", running_ms), ("wav_repeat", wav_repeat))
    front_end = {k: v for k, v in given if v is not None}
    if task == "keyword":
        from edgernn.keyword import keyword_task

        return keyword_task(
            path, validation_fraction, seed, min_validation_cases, augment=augment, **front_end
        )
    if front_end:
        flags = ", ".join("--" + k.replace("_", "-") for k in front_end)
        what = "front end" if set(front_end) <= {"mels", "running_ms"} else "options"
        raise InputError(f"{flags}: the keyword task's {what}; the {task} task has none")
    if Path(path).is_dir():
        raise InputError(
            f"{path}: a folder; the {task} task reads one file (a folder of .wav files is --task keyword)"
        )
    if task == "charlm":
        return charlm_task(path, validation_fraction)
    csv_options = {"label_column": label_column, "missing": missing}
    if task == "forecast":
        return forecast_task(path, columns, targets, validation_fraction, **csv_options)
    if targets:
        raise InputError(
            f"--targets applies to the forecast task; the {task} task predicts {_PREDICTS[task]}"
        )
    if task == "anomaly":
        return anomaly_task(path, columns, validation_fraction, **csv_options)
    if task == "steplabels":
        if not label_column:
            raise InputError("the steplabels task needs a label column (--label-column NAME)")
        return steplabels_task(path, label_column, columns, validation_fraction, missing=missing)
    if task == "classify":
        options = {"label_column": label_column} if label_column else {}
        return classify_task(
            path,
            validation_fraction,
            seed,
            columns=columns,
            min_validation_cases=min_validation_cases,
            missing=missing,
            **options,
        )
    raise InputError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


_PREDICTS = {
    "anomaly": "every input column",
    "steplabels": "the --label-column",
    "classify": "the label column",
}


# --- which task a file is for ----------------------------------------------------------------------------


def infer_task(path: str | os.PathLike, *, columns=None, targets=None, label_column=None) -> tuple[str, str]:
    """The task a data file is for, and why, from its kind and the CSV options; InputError when it could
    be several, or when an option names a column the file does not have (naming those it has).

    ``.ts``: classify. ``.csv`` (or ``.tsv``): forecast; classify when it has a sequence id column such as
    ``series_id`` and a ``label`` column (the classification CSV); with ``label_column``, classify when a
    sequence id column is present, else steplabels; with ``columns`` or ``targets``, forecast of them. Any
    other CSV holding a label column (``label``, ``is_anomaly``...) is refused as ambiguous. Any other
    file: charlm, but a file that reads as a numeric CSV table is refused as ambiguous.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if looks_like_audio(path):
        return "keyword", "audio clips (.wav files or clip bundles): a spoken-word recognizer"
    if path.is_dir():
        raise InputError(f"{path}: a folder without .wav files or .npz clip bundles; expected a data file")
    if suffix == ".ts":
        return "classify", "a .ts file holds labelled sequences"
    if suffix in (".csv", ".tsv"):
        return _infer_csv_task(path, columns, targets, label_column)
    if _looks_like_csv(path):
        raise InputError(
            f"{path}: cannot tell the task: the file reads as a numeric CSV table but is not named .csv; "
            "give --task charlm for a character model of its text, or --task forecast, anomaly, classify "
            "or steplabels"
        )
    return "charlm", "a text file: a character model of its text"


def _infer_csv_task(path: Path, columns, targets, label_column) -> tuple[str, str]:
    table = read_csv(path)
    check_option_names(table, columns, targets, label_column)
    names = table.names
    ids = [n for n in names if n.lower() in ID_COLUMNS]
    if label_column:
        if ids:
            return "classify", f"a CSV with --label-column and a sequence id column ({ids[0]!r})"
        return "steplabels", "a CSV with --label-column and no sequence id column: a label per row"
    labels = [n for n in names if n.lower() in LABEL_COLUMNS]
    if labels and ids and "label" in names and not (columns or targets):
        return "classify", f"a CSV with a sequence id column ({ids[0]!r}) and a 'label' column"
    if columns or targets:
        given = " and ".join(o for o, v in (("--columns", columns), ("--targets", targets)) if v)
        unused = [n for n in labels if n not in (columns or [])]
        left = f", the label column {unused[0]!r} not an input" if unused else ""
        return "forecast", f"a CSV table with {given}: one step ahead{left}"
    if labels:
        raise InputError(
            f"{path}: cannot tell the task: the CSV has a label column ({labels[0]!r}); give --columns (a "
            f"forecast of them), --task forecast or anomaly (the label is left out), or --task steplabels / "
            f"classify with --label-column {labels[0]}"
        )
    return "forecast", "a CSV table: one step ahead of its columns"


def _looks_like_csv(path: Path) -> bool:
    """The first lines: a header, then rows of as many fields (comma-, semicolon-, tab- or pipe-separated),
    at least half of them numbers (a timestamp or a label beside the readings)."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            lines = [line for _, line in zip(range(6), f, strict=False)]
    except (OSError, UnicodeDecodeError):
        return False
    rows = list(csv.reader(lines, delimiter=sniff_delimiter(lines[0]) if lines else ","))
    if len(rows) < 3 or len(rows[0]) < 2 or any(len(r) != len(rows[0]) for r in rows[1:]):
        return False
    cells = [cell for row in rows[1:] for cell in row]
    return 2 * sum(_is_number(cell) for cell in cells) >= len(cells)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
