"""``edgernn deploy`` never deletes what it did not write, refuses hostile graphs and arguments up front.

Redeploying into ``-o DIR`` used to replace the whole directory (a user's ``app.c`` and ``build/notes.txt``
went with it, and ``--target triton`` replaced a C deployment); a dangling input made the C target raise
KeyError; ``--model-name deploy.json`` was an IsADirectoryError, a 300-character name ENAMETOOLONG,
``--name _`` the compiler's raw error; ``-o DIR`` was created 0700 whatever the umask.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from edge_models import export_char
from onnx import helper, numpy_helper
from reliability_support import bounded_baseline_mib

from edgernn.cli import cli
from edgernn.export.deploy import MANIFEST, deploy


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return export_char(tmp_path_factory.mktemp("deploy_reliability") / "char.onnx")


def run_cli(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_exit_2(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def user_files(directory: Path) -> dict[str, bytes]:
    (directory / "build").mkdir(exist_ok=True)
    (directory / "app.c").write_text("int main(void) { return 0; }\n")
    (directory / "build" / "notes.txt").write_text("flash at 0x08000000\n")
    return {"app.c": b"int main(void) { return 0; }\n", "build/notes.txt": b"flash at 0x08000000\n"}


def listed(directory: Path) -> set[str]:
    return {entry["path"] for entry in json.loads((directory / MANIFEST).read_text())["files"]}


# --- data loss ---------------------------------------------------------------------------------------------


def test_redeploying_replaces_only_the_files_the_manifest_lists(model, tmp_path):
    out = tmp_path / "ort"
    deploy(model, "ort", out, static_batch=True)
    mine = user_files(out)
    report = deploy(model, "ort", out)
    files = snapshot(out)
    assert {k: files[k] for k in mine} == mine  # the user's files stay
    assert "char.batch1.ort" not in files  # the earlier deployment's file the new one does not write goes
    assert set(files) == {*mine, *(p for p, _ in report.files)} and listed(out) == {
        p for p, _ in report.files if p != MANIFEST
    }
    assert [p.name for p in tmp_path.iterdir()] == ["ort"]  # no stage or aside folder left


def test_another_targets_deployment_is_refused_and_force_replaces_it(model, tmp_path):
    out = tmp_path / "out"
    deploy(model, "triton", out)
    before = snapshot(out)
    result = run_cli("deploy", model, "--target", "ort", "-o", out)
    assert_one_line_exit_2(result, "holds an edgernn triton deployment", "--target triton", "--force")
    assert snapshot(out) == before
    assert run_cli("deploy", model, "--target", "ort", "-o", out, "--force").exit_code == 0
    assert json.loads((out / MANIFEST).read_text())["target"] == "ort" and not (out / "char").exists()


def test_a_foreign_directory_is_refused_naming_what_is_there(model, tmp_path):
    out = tmp_path / "project"
    out.mkdir()
    mine = user_files(out)
    result = run_cli("deploy", model, "--target", "triton", "-o", out)
    assert_one_line_exit_2(result, "holds other files (app.c, build/)", MANIFEST, "--force")
    assert snapshot(out) == mine and sorted(p.name for p in tmp_path.iterdir()) == ["project"]


def test_a_file_in_the_way_is_refused_by_name_unless_forced(model, tmp_path):
    out = tmp_path / "ort"
    deploy(model, "ort", out)
    (out / "char.batch1.ort").write_text("the user's own file of that name")
    before = snapshot(out)
    result = run_cli("deploy", model, "--target", "ort", "-o", out, "--static-batch")
    assert_one_line_exit_2(result, "would overwrite 'char.batch1.ort'", "not in deploy.json")
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ort"]
    deploy(model, "ort", out, static_batch=True, force=True)
    assert (out / "char.batch1.ort").read_bytes()[4:8] == b"ORTM"


@pytest.mark.parametrize("listing", [["../victim.txt"], ["/etc/hostname"], ["link/x"], "garbage"])
def test_a_manifest_pointing_elsewhere_is_not_trusted(model, tmp_path, listing):
    out = tmp_path / "ort"
    deploy(model, "ort", out)
    victim = tmp_path / "victim.txt"
    victim.write_text("not edgernn's")
    (out / "link").symlink_to(tmp_path)
    doc = json.loads((out / MANIFEST).read_text())
    doc["files"] = listing if isinstance(listing, str) else [{"path": p, "bytes": 1} for p in listing]
    (out / MANIFEST).write_text(json.dumps(doc))
    before = snapshot(out)
    result = run_cli("deploy", model, "--target", "ort", "-o", out)
    assert_one_line_exit_2(result, MANIFEST, "--force")
    assert snapshot(out) == before and victim.read_text() == "not edgernn's"


def test_deploying_into_the_current_directory_keeps_its_files(model, tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    assert run_cli("deploy", model, "--target", "ort", "-o", ".").exit_code == 0
    mine = user_files(project)
    assert run_cli("deploy", model, "--target", "ort", "-o", ".", "--static-batch").exit_code == 0
    files = snapshot(project)
    assert {k: files[k] for k in mine} == mine and "char.batch1.ort" in files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]


def test_a_failed_move_puts_everything_back(model, tmp_path, monkeypatch):
    out = tmp_path / "ort"
    deploy(model, "ort", out)
    user_files(out)
    before = snapshot(out)
    moves = []

    def replace(source, target):
        moves.append(target)
        if len(moves) == 6:  # 4 earlier files moved aside, 1 new one in: then the disk fails
            raise OSError(28, "No space left on device")
        os.rename(source, target)

    monkeypatch.setattr("edgernn.export.deploy_dir.os.replace", replace)
    result = run_cli("deploy", model, "--target", "ort", "-o", out, "--static-batch")
    assert_one_line_exit_2(result, "could not be moved into place", "No space left", "as it was")
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ort"]


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o755), (0o077, 0o700), (0o002, 0o775)])
def test_the_new_directory_follows_the_umask(model, tmp_path, mask, mode):
    saved = os.umask(mask)
    try:
        deploy(model, "ort", tmp_path / "ort")
    finally:
        os.umask(saved)
    assert (tmp_path / "ort").stat().st_mode & 0o777 == mode
    assert (tmp_path / "ort" / "char.ort").stat().st_mode & 0o777 == mode & 0o666


# --- arguments ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "flags", "fragments"),
    [
        ("triton", ["--model-name", "m" * 300], ["--model-name", "300 bytes", "at most 255"]),
        ("triton", ["--model-name", "deploy.json"], ["the manifest edgernn writes"]),
        ("triton", ["--model-name", "m\ud800"], ["expected UTF-8 text"]),
        ("c", ["--name", "n" * 5000], ["--name: 5,000 bytes given; expected at most 4,095"]),
        ("c", ["--name", "_"], ["starts with a letter", "__tanh"]),
        ("c", ["--name", "_kws"], ["starts with a letter"]),
    ],
)
def test_arguments_the_file_system_or_compiler_refuse_are_one_line_exit_2(
    model, tmp_path, target, flags, fragments
):
    result = run_cli("deploy", model, "--target", target, "-o", tmp_path / "out", *flags)
    assert_one_line_exit_2(result, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_a_300_character_out_component_is_one_line_exit_2(model, tmp_path):
    result = run_cli("deploy", model, "--target", "ort", "-o", tmp_path / ("d" * 300) / "ort")
    assert_one_line_exit_2(result, "a component of 300 bytes", "at most 255")
    assert list(tmp_path.iterdir()) == []


# --- graphs ------------------------------------------------------------------------------------------------


def edited(model: Path, folder: Path, name: str, edit) -> Path:
    proto = onnx.load(model)
    edit(proto.graph)
    path = folder / f"{name}.onnx"
    path.write_bytes(proto.SerializeToString())
    return path


def _cycle(graph) -> None:
    graph.node.extend([helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])])


GRAPH_EDITS = {
    "dangling_input": (
        lambda g: g.node[0].input.__setitem__(0, "nowhere"),
        "input 'nowhere' is defined nowhere",
    ),
    "cycle": (_cycle, "a cycle: 2 node(s)"),
    "undefined_output": (lambda g: g.output.add(name="missing"), "output 'missing': expected a value"),
}


@pytest.mark.parametrize("target", ["ort", "c", "triton"])
@pytest.mark.parametrize("case", sorted(GRAPH_EDITS))
def test_a_malformed_graph_is_one_line_exit_2_for_every_target(model, tmp_path, target, case):
    edit, fragment = GRAPH_EDITS[case]
    path = edited(model, tmp_path, case, edit)
    result = run_cli("deploy", path, "--target", target, "-o", tmp_path / "out")
    assert_one_line_exit_2(result, "the graph is not one edgernn runs", fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{case}.onnx"]


_BOMB_RUNNER = textwrap.dedent(
    """
    import json, resource, sys
    limit = int(sys.argv[1]) << 20
    from edgernn.export.deploy import deploy
    from edgernn.runtime.errors import ContractError
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for target in ("ort", "c", "triton"):
        try:
            deploy(sys.argv[2], target, sys.argv[3] + "/" + target)
            outcome = "written"
        except ContractError as exc:
            outcome = "ContractError: " + str(exc).splitlines()[1]
        except BaseException as exc:
            outcome = f"other: {type(exc).__name__}: {str(exc)[:200]}"
        print(json.dumps([target, outcome]), flush=True)
    """
)


def test_a_dead_65536_square_constant_is_refused_by_every_target_in_bounded_memory(model, tmp_path):
    proto = onnx.load(model)
    proto.graph.initializer.append(numpy_helper.from_array(np.array([65536, 65536], np.int64), "bomb_shape"))
    proto.graph.node.append(helper.make_node("ConstantOfShape", ["bomb_shape"], ["bomb"]))
    path = tmp_path / "bomb.onnx"
    path.write_bytes(proto.SerializeToString())
    limit = bounded_baseline_mib() + 1024  # before, deploy --target ort grew past 17 GB here
    done = subprocess.run(
        [sys.executable, "-c", _BOMB_RUNNER, str(limit), str(path), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    outcomes = dict(json.loads(line) for line in done.stdout.splitlines() if line.startswith("["))
    expected = "ContractError:   - node 'bomb' (ConstantOfShape): makes 4,294,967,296 elements"
    assert {
        t: outcomes.get(t, done.stderr[-300:])[: len(expected)] for t in ("ort", "c", "triton")
    } == dict.fromkeys(("ort", "c", "triton"), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.onnx"]


# --- stderr ------------------------------------------------------------------------------------------------


def test_the_ort_targets_warnings_are_one_clean_line_each(model, tmp_path):
    """onnxruntime's logger wrote ANSI-coloured, timestamped lines (twice, one per graph) for a fixed-style
    conversion; the missing chunk graph came as a Python UserWarning with its source line."""
    command = [sys.executable, "-m", "edgernn", "deploy", str(model), "--target", "ort", "-o"]
    fixed = ["--optimization-style", "fixed", "--target-platform", "amd64"]
    done = subprocess.run(
        [*command, str(tmp_path / "fixed"), *fixed], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "Warning: onnxruntime warning: Serializing optimized model"
    )
    assert "\x1b" not in done.stderr
    solo = tmp_path / "solo"
    solo.mkdir()
    (solo / model.name).write_bytes(model.read_bytes())  # without its chunk graph
    result = run_cli("deploy", solo / model.name, "--target", "ort", "-o", tmp_path / "ort")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Warning: {solo / 'char.chunk.onnx'} is missing"), lines
