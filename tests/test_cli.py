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
