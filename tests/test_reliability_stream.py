"""``edgernn stream`` behind a live feed: a bad reading stops, is skipped or held (``--on-bad-row``) with a
warning naming its line and the output kept line for line; hostile values are one line, exit 2, no
traceback; only ASCII decimal numbers are read; a long text line takes bounded memory."""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import VOCABULARY
from task_models import task_model

from edgernn.cli import cli
from edgernn.runtime import Stepper
from edgernn.runtime.errors import InputError
from edgernn.runtime.stream_lines import MAX_ROW_CHARS, file_lines
from edgernn.runtime.streaming_io import predict_file


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stream_reliability")


@pytest.fixture(scope="module")
def forecaster(root):
    extra = {"task": "forecast", "columns": ["a", "b"], "targets": ["b", "a"]}
    return task_model(
        root, "forecast.onnx", extra, cell="lstm", input_kind="features", input_size=2, hidden_size=5
    ).path


@pytest.fixture(scope="module")
def char_model(root):
    return task_model(root, "char.onnx", {"task": "charlm"}).path


def stream(*args, input: str):
    return CliRunner().invoke(cli, ["stream", *map(str, args)], input=input)


def one_error(result) -> str:
    """The single stderr line of a refused stream (exit code 2, no traceback)."""
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: line "), result.stderr
    return lines[0]


def forecasts(model: Path, rows: list[list[float]]) -> np.ndarray:
    return Stepper(model).run(np.array(rows, np.float32))


# --- --on-bad-row -------------------------------------------------------------------------------------

LIVE = "a,b\n1,2\n3,\n4,ERR\n5,nan\n1,2,3\n6,7\n"  # lines 3-6 are bad readings, line 7 good again


def test_stop_is_the_default_and_ends_at_the_first_bad_reading(forecaster):
    result = stream(forecaster, input=LIVE)
    assert (
        one_error(result)
        == "Error: line 3: column 'b': expected a number, got '' (ASCII decimal, as Python or JSON write it)"
    )
    assert len(result.stdout.splitlines()) == 2  # the header and line 2's forecast


def test_skip_keeps_one_answer_per_row_and_the_state_as_if_the_row_never_came(forecaster):
    result = stream(forecaster, "--on-bad-row", "skip", input=LIVE)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "next_b,next_a" and lines[2:6] == [","] * 4  # empty fields for lines 3-6
    want = forecasts(forecaster, [[1, 2], [6, 7]])
    np.testing.assert_allclose(np.loadtxt([lines[1], lines[6]], delimiter=","), want, rtol=1e-5)
    assert result.stderr.splitlines() == [
        "Warning: line 3: column 'b': expected a number, got '' (ASCII decimal, as Python or JSON write it); row skipped",
        "Warning: line 4: column 'b': expected a number, got 'ERR' (ASCII decimal, as Python or JSON write it); row skipped",
        "Warning: line 5: column 'b': expected a finite number, got 'nan'; row skipped",
        "Warning: line 6: expected 2 fields as in the header, got 3; row skipped",
    ]  # fmt: skip
    docs = [
        json.loads(line)
        for line in stream(forecaster, "--on-bad-row", "skip", "--json", input=LIVE).stdout.splitlines()
    ]
    assert [d["line"] for d in docs] == [2, 3, 4, 5, 6, 7]
    assert docs[1] == {
        "line": 3,
        "skipped": "column 'b': expected a number, got '' (ASCII decimal, as Python or JSON write it)",
    }
    np.testing.assert_allclose([[docs[5]["next_b"], docs[5]["next_a"]]], want[1:], rtol=1e-5)


def test_hold_reuses_each_columns_last_good_value_within_its_sequence(forecaster):
    text = "b,a\n,1\n2,1\nERR,3\n4,\n\n5,x\n6,7\n"  # line 2: nothing to hold yet; line 7: a new sequence
    result = stream(forecaster, "--on-bad-row", "hold", "--json", input=text)
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["line"] for d in docs] == [2, 3, 4, 5, 7, 8]
    assert (
        "skipped" in docs[0]
        and "skipped" in docs[4]
        and [d.get("held") for d in docs[1:4]] == [None, ["b"], ["a"]]
    )
    model = Stepper(forecaster)
    want = model.run(np.array([[1, 2], [3, 2], [3, 4]], np.float32))
    np.testing.assert_allclose([[d["next_b"], d["next_a"]] for d in docs[1:4]], want, rtol=1e-5)
    model.reset()
    np.testing.assert_allclose([docs[5]["next_b"], docs[5]["next_a"]], model.step([7, 6]), rtol=1e-5)
    warnings = result.stderr.splitlines()
    assert (
        warnings[1]
        == "Warning: line 4: column 'b': expected a number, got 'ERR' (ASCII decimal, as Python or JSON write it); held the last good value (b=2)"
    )
    assert warnings[0].startswith("Warning: line 2: column 'b'") and warnings[0].endswith(
        "no earlier good value in this sequence to hold; row skipped"
    )
    assert len(warnings) == 4 and warnings[3].startswith("Warning: line 7: column 'a'")


def test_a_header_without_the_models_columns_stops_whatever_the_policy(forecaster):
    assert "the header has no column(s) ['b']" in one_error(
        stream(forecaster, "--on-bad-row", "skip", input="a,c\n1,2\n")
    )


# --- hostile values: one line, exit 2, or skipped ------------------------------------------------------

HOSTILE = {
    "csv field of 200,000 characters": (
        "a,b\n1,2\n1," + "9" * 200_000 + "\n3,4\n",
        "line 3: not a CSV row: field larger than field limit (131072)",
    ),
    "json integer of 400 digits": (
        '{"a": 1, "b": 2}\n{"a": 1, "b": 1' + "0" * 399 + '}\n{"a": 3, "b": 4}\n',
        "line 2: column 'b': expected a finite float32 number (magnitude at most 3.4e38), got 1000000",
    ),
    "json integer of 5,000 digits": (
        '{"a": 1, "b": 2}\n{"a": 1, "b": ' + "7" * 5000 + '}\n{"a": 3, "b": 4}\n',
        "line 2: a JSON integer of 5,000 digits (at most 4,300 are read)",
    ),
    "json nested 100,000 deep": (
        '{"a": 1, "b": 2}\n{"a": 1, "b": ' + "[" * 100_000 + "]" * 100_000 + '}\n{"a": 3, "b": 4}\n',
        "line 2: not a JSON object (nested deeper than the reader follows)",
    ),
    "row over the row limit": (
        "a,b\n1,2\n1," + "2" * MAX_ROW_CHARS + "\n3,4\n",
        f"line 3: the line is longer than {MAX_ROW_CHARS:,} characters, the most a row may have",
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_values_are_one_line_naming_the_line_or_skipped(forecaster, case):
    text, message = HOSTILE[case]
    result = stream(forecaster, input=text)
    assert one_error(result).startswith(f"Error: {message}")
    skipped = stream(forecaster, "--on-bad-row", "skip", input=text)
    assert skipped.exit_code == 0 and skipped.stderr.startswith(f"Warning: {message}"), skipped.stderr
    lines = skipped.stdout.splitlines()
    assert len(lines) == 4 and lines[2] == ","
    np.testing.assert_allclose(
        np.loadtxt(lines[3:], delimiter=","), forecasts(forecaster, [[1, 2], [3, 4]])[1], rtol=1e-5
    )


# --- what a number is ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["1_000", "١٢٣", "１２", "٣.٥", "0x10", "1e39", "--1", "1.2.3", "½"])
def test_only_ascii_decimal_numbers_are_read(forecaster, cell):
    error = one_error(stream(forecaster, input=f"a,b\n1,{cell}\n"))
    assert error.startswith("Error: line 2: column 'b': expected a") and repr(cell) in error
    error = one_error(stream(forecaster, input=json.dumps({"a": 1, "b": cell}) + "\n"))
    assert error.startswith("Error: line 1: column 'b': expected a") and repr(cell) in error


def test_python_and_json_spellings_of_numbers_are_read(forecaster):
    result = stream(forecaster, input="a,b\n 1.5 ,-2\n+3.,.5\n1e3,-1E-3\n")
    assert result.exit_code == 0, result.output
    want = forecasts(forecaster, [[1.5, -2], [3, 0.5], [1000, -0.001]])
    np.testing.assert_allclose(np.loadtxt(result.stdout.splitlines()[1:], delimiter=","), want, rtol=1e-5)
    docs = stream(
        forecaster, "--json", input='{"a": 1.5, "b": -2}\n{"a": "3", "b": 5e-1}\n'
    ).stdout.splitlines()
    want = forecasts(forecaster, [[1.5, -2], [3, 0.5]])
    np.testing.assert_allclose(
        [[json.loads(d)["next_b"], json.loads(d)["next_a"]] for d in docs], want, rtol=1e-5
    )


@pytest.mark.parametrize(
    "row, reason", [('1,"2', "a quoted field is not closed"), ('1,"2"x', "',' expected after '\"'")]
)
def test_a_csv_row_with_a_broken_quote_is_refused(forecaster, row, reason):
    assert one_error(stream(forecaster, input=f"a,b\n{row}\n")) == f"Error: line 2: not a CSV row: {reason}"


# --- character models: long lines, bad lines ------------------------------------------------------------


def top_characters(model: Path, *texts: str, k: int = 3) -> list[list[str]]:
    """The k likeliest next characters after each of ``texts`` fed one after the other."""
    stepper, tops = Stepper(model), []
    for text in texts:
        logits = stepper.run(np.array([VOCABULARY.index(c) for c in text]))[-1].astype(np.float64)
        tops.append([VOCABULARY[i] for i in np.argsort(-logits, kind="stable")[:k]])
    return tops


def test_a_long_text_line_is_fed_in_bounded_memory(char_model):
    line = ("abc defgh " * 7_000).encode()  # 70,000 characters: two pieces of the file reader
    stepper = Stepper(char_model)
    tracemalloc.start()
    try:
        answers = list(predict_file(stepper, io.BytesIO(line + b"\nab\n"), top_k=3, as_json=True))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"peak {peak:,} bytes for a {len(line):,}-character line"  # held: over 30 MB
    docs = [json.loads(answer) for answer in answers]
    assert [[t for t, _ in doc["top_k"]] for doc in docs] == top_characters(char_model, line.decode(), "ab")
    assert docs[0]["text"] == line.decode() and "text_cut" not in docs[0]


def test_the_file_reader_decodes_across_pieces_and_reads_past_a_bad_line():
    text = "héllo wörld\r\n".encode() + b"\xffbad\n" + "ünï\n".encode() + b"end"
    lines = file_lines(io.BytesIO(text), piece_bytes=3)
    first = next(lines)
    assert first.number == 1 and "".join(first.pieces()) == "héllo wörld"
    with pytest.raises(InputError, match="expected UTF-8 text, got byte 0xff"):
        next(lines).text()
    assert next(lines).text() == "ünï"
    last = next(lines)
    assert last.number == 4 and last.text() == "end"
    with pytest.raises(InputError, match="longer than 4 characters"):
        next(file_lines(io.BytesIO(b"abcdefgh\n"), piece_bytes=3)).text(4)


def test_skip_passes_a_text_line_the_model_cannot_read_and_hold_is_refused(char_model):
    result = stream(char_model, "--top-k", "3", "--on-bad-row", "skip", "--json", input="abc\nxyz\nabc\n")
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert docs[1] == {"line": 2, "skipped": "characters not in the model's vocabulary: 'xyz'"}
    assert [t for t, _ in docs[2]["top_k"]] == top_characters(char_model, "abcabc")[
        0
    ]  # as if line 2 never came
    assert result.stderr == "Warning: line 2: characters not in the model's vocabulary: 'xyz'; line skipped\n"
    plain = stream(char_model, "--on-bad-row", "skip", input="abc\nxyz\nabc\n").stdout.splitlines()
    assert len(plain) == 3 and plain[1] == ""
    result = stream(char_model, "--on-bad-row", "hold", input="abc\n")
    assert result.exit_code == 2 and "a character model has no columns" in result.stderr
