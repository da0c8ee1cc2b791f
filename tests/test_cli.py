"""The CLI through click's CliRunner: the whole path, --help everywhere, and one-line errors (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgernn import __version__
from edgernn.cli import cli

SHAKESPEARE = Path(__file__).parents[1] / "examples" / "data" / "tinyshakespeare.txt"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny char model trained and exported through the CLI: (run_dir, model.onnx)."""
    root = tmp_path_factory.mktemp("cli")
    text = root / "small.txt"
    text.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:40_000], encoding="utf-8")
    run_dir, model = root / "run", root / "model.onnx"
    runner = CliRunner()
    args = ["train", str(text), "-o", str(run_dir), "--steps", "30", "--hidden-size", "32", "--embedding-size", "16",
            "--batch-size", "8", "--seq-len", "32", "--eval-every", "15", "--quiet"]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "best validation loss" in result.stdout
    result = runner.invoke(cli, ["export", str(run_dir), "-o", str(model)])
    assert result.exit_code == 0, result.output
    return run_dir, model


def run_cli(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("command", [None, "train", "export", "inspect", "generate", "bench"])
def test_every_command_has_help_with_an_example(command):
    result = run_cli(*([command] if command else []), "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout


def test_version():
    result = run_cli("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


def test_python_dash_m_works():
    done = subprocess.run(
        [sys.executable, "-m", "edgernn", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and __version__ in done.stdout


def test_export_reports_parity(trained, tmp_path):
    run_dir, _ = trained
    result = run_cli("export", run_dir, "-o", tmp_path / "m.onnx", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc["parity"]) == {"one_step", "closed_loop", "after_reset"}
    assert max(max(v.values()) for v in doc["parity"].values()) < 1e-4
    assert doc["size_bytes"] == (tmp_path / "m.onnx").stat().st_size


def test_inspect_shows_contract_and_metadata(trained):
    _, model = trained
    result = run_cli("inspect", model)
    assert result.exit_code == 0, result.output
    for text in ("gru", "h_next", "tokens", "batch"):
        assert text in result.stdout
    doc = json.loads(run_cli("inspect", model, "--json").stdout)
    assert doc["edgernn"]["cell"] == "gru"
    assert doc["size_bytes"] == model.stat().st_size


def test_generate_writes_text_from_the_vocabulary(trained):
    run_dir, model = trained
    vocabulary = set(json.loads((run_dir / "vocab.json").read_text()))
    result = run_cli("generate", model, "--prompt", "ROMEO:", "-n", "80", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ROMEO:")
    written = result.stdout[len("ROMEO:") :].rstrip("\n")
    assert len(written) >= 79 and set(written) <= vocabulary
    again = run_cli("generate", model, "--prompt", "ROMEO:", "-n", "80", "--seed", "3")
    assert again.stdout == result.stdout
    assert result.stdout.endswith("\n")  # a shell prompt after it starts on its own line


def test_bench_json(trained):
    _, model = trained
    result = run_cli("bench", model, "--steps", "200", "--warmup", "20", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)["stepper"]
    assert stats["steps"] == 200
    assert 0 < stats["p50_us"] <= stats["p90_us"] <= stats["p99_us"] <= stats["max_us"]
    assert stats["steps_per_s"] > 0


def test_bench_table(trained):
    _, model = trained
    result = run_cli("bench", model, "--steps", "100", "--warmup", "10", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    assert "p99 us" in result.stdout and "stepper" in result.stdout


def assert_one_line_usage_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_arguments_are_one_line_exit_2(trained, tmp_path):
    run_dir, model = trained
    assert_one_line_usage_error(
        run_cli("train", tmp_path / "nope.txt", "-o", tmp_path / "r"), "does not exist"
    )
    assert_one_line_usage_error(
        run_cli("train", SHAKESPEARE, "-o", tmp_path / "r", "--cell", "transformer"), "transformer"
    )
    assert_one_line_usage_error(
        run_cli("train", SHAKESPEARE, "-o", tmp_path / "r", "--hidden-size", "0"), "0"
    )
    assert_one_line_usage_error(run_cli("export", run_dir), "-o")
    assert_one_line_usage_error(run_cli("bench", model, "--steps", "-5"), "-5")
    assert_one_line_usage_error(run_cli("generate", model, "--temperature", "-1"), "-1")
    assert_one_line_usage_error(run_cli("frobnicate"), "frobnicate")


def test_bad_files_are_one_line_exit_2(trained, tmp_path):
    _, model = trained
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"this is not an onnx model")
    for command in ("inspect", "bench", "generate"):
        assert_one_line_usage_error(run_cli(command, corrupt))
    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    out = tmp_path / "out.onnx"
    assert_one_line_usage_error(run_cli("export", empty_run, "-o", out), "config.json")
    assert not out.exists()
    assert_one_line_usage_error(run_cli("generate", model, "--prompt", "\u00e9\u00e9"), "\u00e9")
    short = tmp_path / "short.txt"
    short.write_text("too short")
    assert_one_line_usage_error(run_cli("train", short, "-o", tmp_path / "r2"), "at least 1000 characters")
    assert not (tmp_path / "r2").exists()


# --- a newcomer's first day: nothing lost, nothing guessed silently, everything said ----------------------

BLEEDING = SHAKESPEARE.parent / "ucr_internalbleeding16_train.csv"


def test_train_refuses_to_overwrite_a_run_unless_asked(trained, tmp_path):
    run_dir, _ = trained
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    result = run_cli("train", SHAKESPEARE, "-o", run_dir, "--steps", "5")
    assert_one_line_usage_error(result, "already holds a run", f"--resume {run_dir}", "--overwrite")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_overwrite_replaces_the_run(tmp_path):
    csv_path = tmp_path / "readings.csv"
    csv_path.write_text(
        "value\n" + "\n".join(line.split(",")[1] for line in BLEEDING.read_text().splitlines()[1:])
    )
    args = ["train", csv_path, "-o", tmp_path / "run", "--steps", "4", "--eval-every", "2", "--quiet"]
    assert run_cli(*args).exit_code == 0
    result = run_cli(*args[:-1], "--hidden-size", "8", "--overwrite", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["hidden_size"] == 8


def test_task_is_inferred_said_and_refused_when_ambiguous(tmp_path):
    assert_one_line_usage_error(
        run_cli("train", BLEEDING, "-o", tmp_path / "a"), "cannot tell the task", "'is_anomaly'", "--task"
    )
    assert not (tmp_path / "a").exists()
    numeric_text = tmp_path / "numbers.txt"
    numeric_text.write_text("a,b\n" + "\n".join(f"{i},{i * 2}" for i in range(600)))
    assert_one_line_usage_error(run_cli("train", numeric_text, "-o", tmp_path / "b"), "--task charlm")
    csv_path = tmp_path / "readings.csv"
    rows = BLEEDING.read_text().splitlines()[1:]
    csv_path.write_text(
        "time,value,other\n"
        + "\n".join(f"{r.split(',')[0]},{r.split(',')[1]},{i % 7}" for i, r in enumerate(rows))
    )
    result = run_cli(
        "train", csv_path, "-o", tmp_path / "run", "--steps", "6", "--eval-every", "3", "--targets", "value"
    )
    assert result.exit_code == 0, result.output
    assert "task: forecast (a CSV table" in result.stderr
    summary = result.stdout
    assert "columns used, in order: value, other" in summary and "targets: value" in summary
    assert "1,079 training rows, 120 validation rows" in summary
    assert "MSE of the targets normalised by their training mean and std" in summary
    # the human inspect output says what each column and output is, and counts parameters as train does
    assert run_cli("export", tmp_path / "run", "-o", tmp_path / "m.onnx").exit_code == 0
    shown = run_cli("inspect", tmp_path / "m.onnx").stdout
    assert "task: forecast" in shown and "x columns, in order: value, other" in shown
    assert "y: value, one step ahead" in shown
    parameters = summary.split(" parameters")[0].rsplit(" ", 1)[1]
    assert f"weights: {parameters} parameters" in shown


def test_progress_is_plain_lines_off_a_terminal_and_quiet_is_quiet(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    args = ["train", text, "--steps", "60", "--hidden-size", "8", "--embedding-size", "4", "--batch-size", "2",
            "--seq-len", "16", "--eval-every", "30"]  # fmt: skip
    result = run_cli(*args, "-o", tmp_path / "a")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert "\r" not in result.stderr and 10 <= len(lines) <= 30, lines
    assert lines[0].startswith("task: charlm") and any(line.startswith("train: step 60/60") for line in lines)
    assert "timesteps/s (mean since the start)" in lines[1]
    quiet = run_cli(*args, "-o", tmp_path / "b", "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert quiet.stdout.startswith(f"{tmp_path / 'b'}: charlm") and "nats per character" in quiet.stdout


def test_bench_several_models_side_by_side_with_plot_and_paced(trained, tmp_path):
    _, model = trained
    plot = tmp_path / "side.png"
    twin = tmp_path / "twin.onnx"  # a second file of the same model: float32 next to int8 in real use
    twin.write_bytes(model.read_bytes())
    (tmp_path / "twin.chunk.onnx").write_bytes(model.with_suffix(".chunk.onnx").read_bytes())
    result = run_cli(
        "bench", model, twin, "--steps", "60", "--warmup", "5", "--paced", "2000", "--plot", plot
    )
    assert result.exit_code == 0, result.output
    assert "mean steps/s" in result.stdout and result.stdout.count("paced, ") == 2
    assert plot.read_bytes().startswith(b"\x89PNG")
    one = run_cli("bench", model, "--no-baselines", "--batch-size", "3", "--steps", "40", "--warmup", "5",
                  "--paced", "2000", "--plot", tmp_path / "one.png", "--json")  # fmt: skip
    assert one.exit_code == 0, one.output
    doc = json.loads(one.stdout)
    assert doc["batch_size"] == 3 and doc["stepper"]["steps"] == 40 and doc["paced"]["latency"]["steps"] == 40
    assert (tmp_path / "one.png").read_bytes().startswith(b"\x89PNG")


def test_foreign_model_hints_give_the_cli_flags(foreign_model):
    result = run_cli("bench", foreign_model.path, "--steps", "10")
    assert_one_line_usage_error(result, "--state IN=OUT", "--constant NAME=NUMBER", "Inputs:")
    assert "state_map" not in result.stderr
    assert "--state IN=OUT" in run_cli("inspect", foreign_model.path).stdout


def test_help_texts_are_plain(tmp_path):
    export_help = run_cli("export", "--help").stdout
    assert "%%" not in export_help and "+2% RMSE" in export_help and "about 4-5x" in export_help
    train_help = run_cli("train", "--help").stdout
    for text in (
        "--label-column is_anomaly",
        "--columns temperature",
        "default: 32 charlm",
        "[default: 1; x>=1]",
    ):
        assert text in " ".join(train_help.split()), text


def test_quantization_check_lines_speak_points_for_a_change_of_a_percentage():
    from edgernn.report import _check_lines

    checks = {
        "one_step": {"y": 1e-3, "y_relative": 1e-3, "h_next": 2e-3},
        "closed_loop": {"steps": 3000, "window": 300, "h_next": [1e-3, 1e-3]},
        "metric": {
            "name": "accuracy",
            "unit": "%",
            "float32": 97.84,
            "quantized": 97.57,
            "tolerance": -1.0,
            "data": "v.ts",
        },
    }
    line = _check_lines(checks)[2]
    assert "97.8400 % float32 -> 97.5700 % (-0.2700 points, tolerance -1.0000 points)" in line
