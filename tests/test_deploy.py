"""``edgernn deploy``: the frame every target writes through (options by name, destination checks, atomic
publishing, nothing left behind) and the command's output, through the ``ort`` target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from edge_models import export_char

import edgernn.export.ort_format as ort_format
from edgernn.cli import cli
from edgernn.export.deploy import MANIFEST, deploy
from edgernn.runtime.errors import InputError, ParityError


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return export_char(tmp_path_factory.mktemp("deploy_model") / "char.onnx")


def run_cli(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith((".stage", ".old")))


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--precision", "int8"], "--precision"),
        (["--name", "kws", "--max-batch-size", "4"], "--max-batch-size, --name"),
        (["--no-verify"], "--no-verify"),
    ],
)
def test_options_of_another_target_are_refused_by_name(model, tmp_path, flags, named):
    result = run_cli("deploy", model, "--target", "ort", "-o", tmp_path / "out", *flags)
    assert_one_line_error(result, 2, named, "not an option of --target ort", "--optimization-style")
    assert list(tmp_path.iterdir()) == []


def test_a_python_keyword_spelled_as_its_flag_is_refused_naming_the_keyword_to_use(model, tmp_path):
    with pytest.raises(InputError) as caught:
        deploy(model, "c", tmp_path / "out", no_verify=True)
    assert str(caught.value).startswith(
        "no_verify= (--no-verify is skip_verify=True in Python): not an option of --target c (it takes --data"
    )
    assert list(tmp_path.iterdir()) == []


def test_bad_option_values_are_one_line_exit_2(model, tmp_path):
    result = run_cli(
        "deploy", model, "--target", "ort", "-o", tmp_path / "out", "--optimization-style", "fixed"
    )
    assert_one_line_error(result, 2, "--target-platform")
    result = run_cli("deploy", model, "--target", "tflite", "-o", tmp_path / "out")
    assert_one_line_error(result, 2, "tflite")
    assert list(tmp_path.iterdir()) == []


def test_out_onto_a_file_is_refused_and_left_as_it_was(model, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    assert_one_line_error(
        run_cli("deploy", model, "--target", "ort", "-o", target), 2, "expected a directory"
    )
    assert target.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_out_onto_a_directory_of_other_files_is_refused_and_left_as_it_was(model, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "main.c").write_text("int main(void) { return 0; }\n")
    result = run_cli("deploy", model, "--target", "ort", "-o", project)
    assert_one_line_error(result, 2, "holds other files", MANIFEST)
    assert snapshot(project) == {"main.c": b"int main(void) { return 0; }\n"}
    assert leftovers(tmp_path) == []


def test_a_missing_or_foreign_model_is_refused(tmp_path):
    result = run_cli("deploy", tmp_path / "none.onnx", "--target", "ort", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "none.onnx" in result.stderr
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    assert_one_line_error(run_cli("deploy", junk, "--target", "ort", "-o", tmp_path / "out"), 2, "junk.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.onnx"]


def test_an_earlier_deployment_is_replaced_atomically(model, tmp_path):
    out = tmp_path / "ort"
    first = deploy(model, "ort", out, static_batch=True)
    assert "char.batch1.ort" in {p for p, _ in first.files}
    second = deploy(model, "ort", out)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p for p, _ in second.files) and "char.batch1.ort" not in names
    assert json.loads((out / MANIFEST).read_text())["files"] == [
        {"path": p, "bytes": n} for p, n in second.files if p != MANIFEST
    ]
    assert leftovers(tmp_path) == []


def test_a_writer_failure_leaves_the_earlier_deployment_intact(model, tmp_path, monkeypatch):
    out = tmp_path / "ort"
    deploy(model, "ort", out)
    before = snapshot(out)

    def fail(*args, **kwargs):
        raise ParityError(["char.ort: largest error 1 over 1000 steps against the ONNX file"])

    monkeypatch.setattr(ort_format, "_session_loop", fail)  # the static copy's check fails
    result = run_cli("deploy", model, "--target", "ort", "-o", out, "--static-batch")
    assert result.exit_code == 1 and "largest error" in result.stderr and "Traceback" not in result.output
    assert snapshot(out) == before and leftovers(tmp_path) == []
    with pytest.raises(InputError):  # a bad option fails before anything is staged, too
        deploy(model, "ort", out, optimization_style="fixed")
    assert snapshot(out) == before and leftovers(tmp_path) == []


def test_deploy_prints_what_it_wrote_and_the_checks(model, tmp_path):
    result = run_cli("deploy", model, "--target", "ort", "-o", tmp_path / "ort")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{tmp_path / 'ort'}: ort target"
    assert any(line.startswith("  wrote char.ort (") for line in lines)
    assert sum(line.startswith("  check: ") for line in lines) == 2
    assert any("build.sh" in line for line in lines)


def test_deploy_json_is_the_report(model, tmp_path):
    result = run_cli("deploy", model, "--target", "ort", "-o", tmp_path / "ort", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["target"] == "ort" and doc["out_dir"] == str(tmp_path / "ort")
    files = {f["path"]: f["bytes"] for f in doc["files"]}
    assert files["char.ort"] == (tmp_path / "ort" / "char.ort").stat().st_size
    assert {"char.chunk.ort", ort_format.CONFIG_NAME, MANIFEST} <= set(files)
    assert doc["details"]["ort_format_version"] == "6" and len(doc["checks"]) == 2
    assert doc["details"]["largest_error"]["char.ort"] <= 1e-6
