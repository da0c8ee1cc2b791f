"""A user's own sensor CSV: bad cells reported and handled by a stated policy, column names checked, the
input order said, short or odd files explained. Tiny trainings (a few steps) through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_support import assert_refused
from click.testing import CliRunner
from sensor_data import CHANNELS, write_sensor_csv

from edgernn.cli import cli
from edgernn.csv_table import read_csv
from edgernn.runtime.errors import InputError
from edgernn.tasks import infer_task, load_task

BAD = {502: "", 577: "ERR", 703: "nan"}  # file lines (the header is line 1) and what ankle_vert holds there
TINY = ["--steps", "4", "--eval-every", "2", "--batch-size", "4", "--seq-len", "16", "--hidden-size", "8"]


def run_cli(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def sensor(tmp_path_factory) -> Path:
    return write_sensor_csv(tmp_path_factory.mktemp("csv") / "readings.csv")


@pytest.fixture(scope="module")
def bad_sensor(tmp_path_factory) -> Path:
    return write_sensor_csv(tmp_path_factory.mktemp("csv") / "readings.csv", bad=BAD)


# --- bad cells ----------------------------------------------------------------------------------------


def test_bad_cells_are_counted_with_their_lines_and_keep_their_column(bad_sensor):
    table = read_csv(bad_sensor)
    assert list(table.columns) == [*CHANNELS, "is_anomaly"] and list(table.text) == ["timestamp"]
    cells = table.bad["ankle_vert"]
    assert (cells.count, cells.lines, cells.texts) == (3, (502, 577, 703), ("", "ERR", "nan"))
    with pytest.raises(InputError, match=r"column 'ankle_vert' has 3 missing or non-numeric cell\(s\) "
                       r"\(line 502 '', 577 'ERR', 703 'nan'\); give --missing"):  # fmt: skip
        table.pick(["leg_vert", "ankle_vert"])


@pytest.mark.parametrize("policy", ["ffill", "interpolate", "drop-rows"])
def test_each_policy_handles_the_bad_cells_of_the_columns_used(bad_sensor, policy):
    table = read_csv(bad_sensor)
    raw = table.columns["ankle_vert"]
    fixed, report = table.resolve_missing(["leg_vert", "ankle_vert"], policy)
    assert report["policy"] == policy and [c["column"] for c in report["columns"]] == ["ankle_vert"]
    assert report["columns"][0]["lines"] == [502, 577, 703] and report["columns"][0]["count"] == 3
    rows = [line - 2 for line in BAD]  # row index of each bad line
    values = fixed.pick(["ankle_vert"])[:, 0]
    if policy == "drop-rows":
        assert len(fixed) == 797 and not set(BAD) & set(fixed.lines.tolist())
        np.testing.assert_array_equal(values, np.delete(raw, rows).astype(np.float32))
        assert len(fixed.text["timestamp"]) == 797  # every column loses the same rows
        return
    for row in rows:
        expected = raw[row - 1] if policy == "ffill" else (raw[row - 1] + raw[row + 1]) / 2
        assert values[row] == pytest.approx(expected, abs=1e-3)
    np.testing.assert_array_equal(np.delete(values, rows), np.delete(raw, rows).astype(np.float32))


def test_default_policy_trains_on_every_channel_and_says_what_it_did(bad_sensor, tmp_path):
    result = run_cli("train", bad_sensor, "-o", tmp_path / "run", "--task", "forecast", *TINY)
    assert result.exit_code == 0, result.output
    summary = result.stdout
    assert f"columns used, in order: {', '.join(CHANNELS)}" in summary  # ankle_vert is not dropped
    assert "left out: timestamp (text), is_anomaly (a label column)" in summary
    assert "missing or non-numeric cells (--missing interpolate):" in summary
    assert "ankle_vert: 3 of 800 cells, interpolated (lines 502, 577, 703)" in summary
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["missing"]["policy"] == "interpolate" and metrics["columns"] == CHANNELS
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["input_size"] == 9 and config["train"]["data_options"]["missing"] == "interpolate"


def test_a_column_mostly_filled_is_worth_a_warning(tmp_path):
    path = write_sensor_csv(tmp_path / "sparse.csv", bad={line: "" for line in range(100, 300)})
    result = run_cli("train", path, "-o", tmp_path / "run", "--columns", "leg_vert,ankle_vert", *TINY)
    assert result.exit_code == 0, result.output
    assert "ankle_vert: 200 of 800 cells, interpolated (lines 100, 101, 102, 103, 104, ...)" in result.stdout
    assert "warning: 25% of ankle_vert was not numbers: check that it is a column to use" in result.stdout


def test_missing_error_names_the_real_problem_and_writes_nothing(bad_sensor, tmp_path):
    result = run_cli(
        "train", bad_sensor, "-o", tmp_path / "run", "--columns", "ankle_vert", "--missing", "error", *TINY
    )
    assert_refused(
        result, "column 'ankle_vert' has 3 missing or non-numeric cell(s)", "line 502 ''", "577 'ERR'"
    )
    assert not (tmp_path / "run").exists()


def test_eval_takes_the_same_policy(bad_sensor, sensor, tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli("train", sensor, "-o", run_dir, "--columns", "ankle_vert,leg_vert", *TINY).exit_code == 0
    model = tmp_path / "m.onnx"
    assert run_cli("export", run_dir, "-o", model).exit_code == 0
    assert_refused(run_cli("eval", model, bad_sensor, "--missing", "error"), "'ankle_vert' has 3 missing")
    dropped = json.loads(run_cli("eval", model, bad_sensor, "--missing", "drop-rows", "--json").stdout)
    filled = json.loads(run_cli("eval", model, bad_sensor, "--json").stdout)  # interpolate by default
    assert dropped["steps"] == 796 and filled["steps"] == 799  # one step less than rows: forecasts


# --- column names, inference and the input order ----------------------------------------------------


def test_columns_with_a_label_column_infer_forecast_in_the_order_given(sensor, tmp_path):
    args = ["--columns", "leg_vert,ankle_vert", "--targets", "ankle_vert"]
    result = run_cli("train", sensor, "-o", tmp_path / "run", *args, *TINY)
    assert result.exit_code == 0, result.output
    assert "task: forecast (a CSV table with --columns and --targets: one step ahead, the label column " \
        "'is_anomaly' not an input" in result.stderr  # fmt: skip
    assert "columns used, in order: leg_vert, ankle_vert" in result.stdout  # the target is not moved first
    assert "targets: ankle_vert, predicted one step ahead" in result.stdout
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["metadata"]["columns"] == ["leg_vert", "ankle_vert"]


def test_a_target_outside_the_inputs_is_said(sensor, tmp_path):
    result = run_cli(
        "train", sensor, "-o", tmp_path / "run", "--columns", "leg_vert", "--targets", "ankle_vert", *TINY
    )
    assert result.exit_code == 0, result.output
    assert "not inputs: ankle_vert (the model never sees their past" in result.stdout


def test_without_targets_the_summary_says_only_the_first_column_is_predicted(sensor, tmp_path):
    result = run_cli("train", sensor, "-o", tmp_path / "run", "--task", "forecast", *TINY)
    assert result.exit_code == 0, result.output
    assert "targets: chest_lat, predicted one step ahead" in result.stdout
    assert (
        "only chest_lat, the first input: without --targets a forecaster predicts the first input"
        in result.stdout
    )


@pytest.mark.parametrize(
    ("option", "name"),
    [("--label-column", "is_anomly"), ("--columns", "leg_vert,ankle_vrt"), ("--targets", "ankle_vrt")],
)
def test_unknown_column_names_are_refused_naming_the_known_ones(sensor, tmp_path, option, name):
    bad = name.split(",")[-1]
    for task in ([], ["--task", "forecast"], ["--task", "anomaly"]):
        if option == "--targets" and task == ["--task", "anomaly"]:
            continue
        result = run_cli("train", sensor, "-o", tmp_path / "run", option, name, *task, *TINY)
        assert_refused(
            result, f"no column(s) ['{bad}'] ({option}); the columns are ['timestamp', 'chest_lat'"
        )
    assert not (tmp_path / "run").exists()


def test_label_column_is_left_out_of_forecast_inputs(sensor):
    data = load_task("anomaly", sensor, label_column="is_anomaly", validation_fraction=0.1)
    assert (
        data.metadata["columns"] == CHANNELS and data.notes["left_out"]["is_anomaly"] == "the --label-column"
    )
    assert infer_task(sensor, targets=["leg_vert"])[0] == "forecast"
    with pytest.raises(InputError, match="--targets applies to the forecast task"):
        load_task("anomaly", sensor, targets=["leg_vert"])


# --- files that are short, empty or not comma-separated --------------------------------------------


def test_header_only_short_and_one_row_files_say_what_they_lack(sensor, tmp_path):
    lines = sensor.read_text().splitlines()
    cases = {
        "empty.csv": ("", "the file is empty"),
        "header.csv": (lines[0] + "\n", "has a header row but no data rows"),
        "one.csv": ("\n".join(lines[:2]) + "\n", "expected at least 2 data rows below the header, found 1"),
        "short.csv": ("\n".join(lines[:30]) + "\n", "a series of 29 rows is too short to split into training and "
                      "validation: at validation fraction 0.1 it needs at least 151 rows"),
        "small.csv": ("\n".join(lines[:200]) + "\n", "the training split has 178 rows; batch_size 8 x 1 process(es) "
                      "of seq_len 32 needs at least 544: a file of at least 606 rows"),
    }  # fmt: skip
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        assert_refused(run_cli("train", path, "-o", tmp_path / "run", "--task", "forecast"), message)
    assert not (tmp_path / "run").exists()


def test_a_repeated_column_name_is_refused(tmp_path):
    path = tmp_path / "twice.csv"
    path.write_text("a,b,a\n" + "1,2,3\n" * 5)
    with pytest.raises(InputError, match=r"names column\(s\) \['a'\] more than once"):
        read_csv(path)


@pytest.mark.parametrize(("delimiter", "name"), [(";", "semicolon"), ("\t", "tab")])
def test_semicolon_and_tab_separated_files_are_read(tmp_path, delimiter, name):
    path = write_sensor_csv(tmp_path / "readings.csv", delimiter=delimiter)
    assert read_csv(path).delimiter == delimiter
    result = run_cli("train", path, "-o", tmp_path / "run", "--columns", "ankle_vert", *TINY)
    assert result.exit_code == 0, result.output
    assert f"readings.csv ({name}-separated): 719 training rows" in result.stdout


def test_a_tsv_file_is_a_table_and_a_semicolon_table_is_not_text(tmp_path):
    tsv = write_sensor_csv(tmp_path / "readings.tsv", delimiter="\t")
    assert infer_task(tsv, columns=["ankle_vert"])[0] == "forecast"
    semicolons = write_sensor_csv(tmp_path / "readings.txt", delimiter=";")
    with pytest.raises(InputError, match="reads as a numeric CSV table but is not named .csv"):
        infer_task(semicolons)


def test_decimal_commas_get_a_hint(tmp_path):
    path = tmp_path / "comma.csv"
    path.write_text("a;b\n" + "".join(f"{i},5;{i}\n" for i in range(300)))
    result = run_cli("train", path, "-o", tmp_path / "run", "--columns", "a,b")
    assert_refused(result, "column 'a' holds text, not numbers (first cell '0,5')", "decimal point")


# --- anomaly threshold and one accuracy style -----------------------------------------------------


def test_anomaly_run_suggests_a_threshold_kept_in_the_metadata(sensor, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        "train", sensor, "-o", run_dir, "--task", "anomaly", "--columns", "ankle_vert,leg_vert", *TINY
    )
    assert result.exit_code == 0, result.output
    anomaly = json.loads((run_dir / "config.json").read_text())["train"]["metadata"]["anomaly"]
    threshold = anomaly["suggested_threshold"]
    assert threshold > 1.0 and anomaly["threshold_quantile"] == 0.999 and len(anomaly["residual_std"]) == 2
    assert (
        f"suggested stream --threshold {threshold:g} (the 99.9th percentile of the validation"
        in result.stdout
    )
    model = tmp_path / "m.onnx"
    assert run_cli("export", run_dir, "-o", model).exit_code == 0
    assert f"suggested stream --threshold: {threshold:g}" in run_cli("inspect", model).stdout


def test_accuracy_prints_as_a_percentage_in_train_and_eval(sensor, tmp_path):
    run_dir = tmp_path / "run"
    args = ["--label-column", "is_anomaly", "--columns", "ankle_vert"]
    result = run_cli("train", sensor, "-o", run_dir, *args, *TINY)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    accuracy = metrics["best_val_accuracy"]  # a fraction in metrics.json
    assert f"validation accuracy {100 * accuracy:.2f} %" in result.stdout
    model = tmp_path / "m.onnx"
    assert run_cli("export", run_dir, "-o", model).exit_code == 0
    evaluation = run_cli("eval", model, sensor)
    value = json.loads(run_cli("eval", model, sensor, "--json").stdout)["metrics"]["accuracy"]
    assert f"accuracy      {value:.2f} %" in evaluation.stdout


def test_labels_are_never_filled_only_their_rows_dropped(tmp_path):
    path = write_sensor_csv(tmp_path / "labels.csv", bad={300: "?"}, column="is_anomaly")
    args = ["train", path, "--label-column", "is_anomaly", "--columns", "ankle_vert", *TINY]
    assert_refused(
        run_cli(*args, "-o", tmp_path / "a"),
        "label column 'is_anomaly' has 1 missing or non-numeric cell(s) (line 300 '?'); give --missing drop-rows",
    )
    result = run_cli(*args, "-o", tmp_path / "b", "--missing", "drop-rows")
    assert result.exit_code == 0, result.output
    assert "is_anomaly: 1 of 800 cells, their rows dropped (lines 300)" in result.stdout


@pytest.mark.parametrize(
    ("policy", "expected"), [("interpolate", [1, 2, 3, 5, 5]), ("ffill", [1, 1, 3, 5, 5])]
)
def test_filling_stays_inside_each_sequence(tmp_path, policy, expected):
    path = tmp_path / "cases.csv"
    path.write_text("series_id,x,label\na,1,up\na,,up\na,3,up\nb,nan,down\nb,5,down\n")
    table, _ = read_csv(path).resolve_missing(["x"], policy, groups=np.array(["a", "a", "a", "b", "b"]))
    assert table.pick(["x"])[:, 0].tolist() == expected
