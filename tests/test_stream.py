"""``edgernn stream``: CSV or JSON lines in, one prediction per line out for every task, equal to stepping the
model directly; sequence boundaries; bad rows refused by line number; flushed per line; no torch needed."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import VOCABULARY
from task_models import anomaly_model, task_model, write_csv

from edgernn.cli import cli
from edgernn.runtime import Stepper
from edgernn.runtime.errors import InputError
from edgernn.runtime.streaming_io import predict_lines
from edgernn.runtime.tasks import AnomalyScorer, StreamingClassifier


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stream")


@pytest.fixture(scope="module")
def forecaster(root):
    extra = {"task": "forecast", "columns": ["a", "b"], "targets": ["b", "a"]}
    return task_model(
        root, "forecast.onnx", extra, cell="lstm", input_kind="features", input_size=2, hidden_size=5
    )


@pytest.fixture(scope="module")
def classifier(root):
    extra = {"task": "classify", "columns": ["x0", "x1", "x2"], "classes": ["low", "mid", "high"]}
    return task_model(root, "classify.onnx", extra, input_kind="features", input_size=3, hidden_size=4)


def stream(*args, input: str) -> object:
    return CliRunner().invoke(cli, ["stream", *map(str, args)], input=input)


def test_forecasts_in_user_units_with_columns_matched_by_name(root, forecaster):
    rows = np.random.default_rng(0).standard_normal((20, 3)) * [1, 10, 100]  # file order: time, b, a
    path = write_csv(root / "sensor.csv", ["time", "b", "a"], rows)
    result = stream(forecaster.path, path, input="")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "next_b,next_a" and len(lines) == 21
    want = Stepper(forecaster.path).run(
        np.loadtxt(path, delimiter=",", skiprows=1)[:, [2, 1]].astype(np.float32)
    )
    np.testing.assert_allclose(np.loadtxt(lines[1:], delimiter=","), want, rtol=1e-5)


def test_json_lines_in_and_out(forecaster):
    rows = [{"a": 1.5, "b": -2.0, "note": "x"}, {"b": 0.25, "a": 3}]
    result = stream(forecaster.path, "--json", input="\n".join(json.dumps(r) for r in rows) + "\n")
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    want = Stepper(forecaster.path).run(np.array([[1.5, -2.0], [3.0, 0.25]], np.float32))
    assert [d["line"] for d in docs] == [1, 2]
    np.testing.assert_allclose([[d["next_b"], d["next_a"]] for d in docs], want, rtol=1e-6)


def test_anomaly_scores_and_the_threshold_flag(root):
    model = anomaly_model(root)
    signal = np.sin(np.arange(40) / 3.0)[:, None]
    signal[30] += 50.0
    path = write_csv(root / "s.csv", ["value"], signal)
    result = stream(model.path, "--threshold", "20", input=path.read_text())
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "score,anomaly"
    table = np.loadtxt(lines[1:], delimiter=",")
    written = np.loadtxt(path, skiprows=1, dtype=np.float32)[:, None]
    want = AnomalyScorer(Stepper(model.path)).score(written)
    np.testing.assert_allclose(table[:, 0], want, rtol=1e-5, atol=1e-6)
    assert np.flatnonzero(table[:, 1]).tolist() == [30]


def test_classifier_label_after_every_frame_with_series_and_blank_line_boundaries(classifier):
    rng = np.random.default_rng(1)
    frames = rng.standard_normal((9, 3)).round(4)
    ids = ["u1"] * 4 + ["u2"] * 3 + ["u2"] * 2  # a blank line splits the second u2 run
    body = [f"{sid},{a},{b},{c}" for sid, (a, b, c) in zip(ids, frames, strict=True)]
    text = "\n".join(["id,x0,x1,x2", *body[:7], "", *body[7:]]) + "\n"
    result = stream(classifier.path, "--series-column", "id", "--json", input=text)
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    reference = StreamingClassifier(Stepper(classifier.path))
    want = []
    for sequence in (frames[:4], frames[4:7], frames[7:]):
        reference.reset()
        want += [reference.step(frame) for frame in sequence]
    assert [d["id"] for d in docs] == ids and [d["line"] for d in docs] == [2, 3, 4, 5, 6, 7, 8, 10, 11]
    assert [d["label"] for d in docs] == [label for label, _ in want]
    np.testing.assert_allclose(
        [[d["p_low"], d["p_mid"], d["p_high"]] for d in docs], [p for _, p in want], rtol=1e-6
    )
    plain = stream(classifier.path, input="x2,x1,x0\n1,2,3\n").stdout.splitlines()
    assert plain[0] == "label,p_low,p_mid,p_high" and plain[1].split(",")[0] in ("low", "mid", "high")


def test_character_model_top_k_after_each_line(root):
    model = task_model(root, "char.onnx", {"task": "charlm"})
    result = stream(model.path, "--top-k", "3", "--json", input="abc\nhead ache\n")
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    stepper = Stepper(model.path)
    for doc, text in zip(docs, ["abc", "head ache"], strict=True):  # the vocabulary has no newline
        logits = stepper.run(np.array([VOCABULARY.index(c) for c in text]))[-1].astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        top = np.argsort(-p)[:3]
        assert [t for t, _ in doc["top_k"]] == [VOCABULARY[i] for i in top]
        np.testing.assert_allclose([q for _, q in doc["top_k"]], p[top], rtol=1e-6)
    plain = stream(model.path, input="abc\n").stdout.splitlines()
    assert len(plain) == 1 and len(plain[0].split("  ")) == 5


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("a,b\n1,2\n3,oops\n", "line 3: column 'b': expected a number, got 'oops'"),
        ("a,b\n1,2\n3,nan\n", "line 3: column 'b': expected a finite number"),
        ("a,c\n1,2\n", "line 1: the header has no column(s) ['b']"),
        ("a,b\n1,2,3\n", "line 2: expected 2 fields"),
        ('{"a": 1, "b": 2}\n{"a": 1}\n', "line 2: no field(s) ['b']"),
        ('{"a": 1, "b": 2}\n[1, 2]\n', "line 2: expected a JSON object"),
    ],
)
def test_bad_rows_are_one_line_naming_the_line_exit_2(forecaster, text, fragment):
    result = stream(forecaster.path, input=text)
    assert result.exit_code == 2, result.output
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and fragment in errors[0], result.stderr


def test_options_that_do_not_fit_the_model_are_refused(root, forecaster):
    model = task_model(root, "char2.onnx", {"task": "charlm"})
    assert "vocabulary" in stream(model.path, input="abc\nxyz\n").stderr
    assert stream(model.path, input="abc\nxyz\n").stdout.count("\n") == 1  # the first line was answered
    result = stream(forecaster.path, "--threshold", "3", input="a,b\n1,2\n")
    assert result.exit_code == 2 and "anomaly models" in result.stderr
    result = stream(model.path, "--series-column", "id", input="abc\n")
    assert result.exit_code == 2 and "feature models" in result.stderr


STREAM_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None
sys.modules["onnx"] = None
from edgernn.cli import main
sys.argv = ["edgernn", "stream", *sys.argv[1:]]
main()
"""


def test_each_prediction_is_flushed_as_its_line_arrives_without_torch(forecaster, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", STREAM_WITHOUT_TORCH, str(forecaster.path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    answers: list[str] = []

    def read_two() -> None:
        answers.extend(process.stdout.readline() for _ in range(2))

    try:
        process.stdin.write("a,b\n1.0,2.0\n")
        process.stdin.flush()  # stdin stays open: the answer must come before the input ends
        reader = threading.Thread(target=read_two, daemon=True)
        reader.start()
        reader.join(timeout=60)
        assert answers == ["next_b,next_a\n", answers[1]] and answers[1].count(",") == 1, answers
        process.stdin.write("3.0,4.0\n")
        process.stdin.close()
        assert process.wait(timeout=60) == 0, process.stderr.read()
        assert len(process.stdout.read().splitlines()) == 1
    finally:
        process.kill()
    want = Stepper(forecaster.path).step(np.array([1.0, 2.0], np.float32))
    np.testing.assert_allclose([float(v) for v in answers[1].split(",")], want, rtol=1e-5)


def read_lines(pipe, count: int) -> list[str]:
    """``count`` lines from a pipe, or fewer if they do not come within 60 s."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(pipe.readline() for _ in range(count)), daemon=True)
    reader.start()
    reader.join(timeout=60)
    return lines


def test_a_skipped_rows_marker_and_warning_leave_as_it_arrives(forecaster, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", STREAM_WITHOUT_TORCH, str(forecaster.path), "--on-bad-row", "skip"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        process.stdin.write("a,b\n1.0,2.0\n1.0,\n")
        process.stdin.flush()  # stdin stays open, as behind tail -f
        assert read_lines(process.stdout, 3)[::2] == ["next_b,next_a\n", ",\n"]
        assert read_lines(process.stderr, 1) == [
            "Warning: line 3: column 'b': expected a number, got '' (ASCII decimal, as Python or JSON write it); "
            "row skipped\n"
        ]
        process.stdin.write("3.0,4.0\n")
        process.stdin.close()
        assert process.wait(timeout=60) == 0, process.stderr.read()
        last = process.stdout.read().splitlines()
    finally:
        process.kill()
    want = Stepper(forecaster.path).run(np.array([[1, 2], [3, 4]], np.float32))[1]
    np.testing.assert_allclose([float(v) for v in last[0].split(",")], want, rtol=1e-5)


def test_the_library_reports_bad_rows_through_warn(forecaster):
    warnings: list[str] = []
    lines = ["a,b", "1,2", "x,3", "4,5"]
    out = list(predict_lines(Stepper(forecaster.path), lines, on_bad_row="hold", warn=warnings.append))
    assert len(out) == 4 and warnings[0].startswith("line 3: column 'a'") and warnings[0].endswith("(a=1)")
    want = Stepper(forecaster.path).run(np.array([[1, 2], [1, 3], [4, 5]], np.float32))
    np.testing.assert_allclose(np.loadtxt(out[1:], delimiter=","), want, rtol=1e-5)
    with pytest.raises(InputError, match="--on-bad-row: expected one of stop, skip, hold, got 'ignore'"):
        list(predict_lines(Stepper(forecaster.path), lines, on_bad_row="ignore"))


def test_step_labels_stream_through_one_sequence(root):
    extra = {"task": "steplabels", "columns": ["x0", "x1"], "label_column": "state", "classes": ["0", "1"]}
    model = task_model(root, "steps.onnx", extra, input_kind="features", input_size=2, hidden_size=3)
    frames = np.random.default_rng(2).standard_normal((6, 2)).round(4)
    text = "x1,x0,state\n" + "\n".join(f"{b},{a},0" for a, b in frames) + "\n"  # the label column is ignored
    result = stream(model.path, "--json", input=text)
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    reference = StreamingClassifier(Stepper(model.path))
    want = [reference.step(frame) for frame in frames.astype(np.float32)]
    assert [d["label"] for d in docs] == [label for label, _ in want]
    np.testing.assert_allclose([[d["p_0"], d["p_1"]] for d in docs], [p for _, p in want], rtol=1e-6)


def test_bytes_that_are_not_text_get_one_line_naming_the_line(forecaster):
    command = [sys.executable, "-m", "edgernn", "stream", str(forecaster.path)]
    done = subprocess.run(command, input=b"a,b\n1,2\n\xff\xfe,1\n", capture_output=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.decode().strip().splitlines() == ["Error: line 3: expected UTF-8 text, got byte 0xff"]
    assert len(done.stdout.decode().splitlines()) == 2  # the header and the first row's prediction
