"""Files and the command line: writes keep modes and refuse what is not a regular file, the step/chunk
pair stays together, and every bad argument or file is one line on stderr with exit code 2."""

from __future__ import annotations

import json
import os
import shutil
import stat
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner
from reliability_support import symbolic_model, token_doc

from edgernn.runtime import Stepper
from edgernn.runtime.errors import InputError
from edgernn.runtime.files import atomic_write_bytes

# --- 8. files -------------------------------------------------------------------------------------------


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    saved = os.umask(0o022)
    os.umask(saved)
    yield set_mask
    os.umask(saved)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_mode_the_umask_gives(tmp_path, umask, mask, mode):
    umask(mask)
    path = atomic_write_bytes(tmp_path / "model.onnx", b"data")
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_an_existing_files_mode_is_kept(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    path.chmod(0o640)
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_symlink_target_is_refused_and_left_alone(tmp_path):
    real = tmp_path / "real.onnx"
    real.write_bytes(b"real")
    link = tmp_path / "link.onnx"
    link.symlink_to(real)
    with pytest.raises(InputError, match="it is a symbolic link, not a regular file"):
        atomic_write_bytes(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"real"


def device_node(tmp_path: Path) -> Path:
    """A null device node of our own (never /dev/null itself: a writer that replaced targets would replace
    the system's), or a FIFO where nodes cannot be made (not root)."""
    path = tmp_path / "null"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        os.mkfifo(path)
    return path


def test_a_device_node_target_is_refused(tmp_path):
    node = device_node(tmp_path)
    kind = "a character device" if stat.S_ISCHR(os.lstat(node).st_mode) else "a FIFO"
    with pytest.raises(InputError, match=f"cannot write {node}: it is {kind}"):
        atomic_write_bytes(node, b"new")
    assert not stat.S_ISREG(os.lstat(node).st_mode)


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    synced: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write_bytes(tmp_path / "model.onnx", b"data")
    assert synced == [False, True]  # the file, then its folder


def test_a_pair_is_staged_whole_before_either_file_is_replaced(tmp_path):
    from edgernn.runtime.files import atomic_write_files

    step, chunk = tmp_path / "model.onnx", tmp_path / "model.chunk.onnx"
    step.write_bytes(b"old step")
    chunk.mkdir()  # the second file cannot be written: the first must not be replaced either
    with pytest.raises(InputError, match="it is a directory"):
        atomic_write_files([(step, b"new step"), (chunk, b"new chunk")])
    assert step.read_bytes() == b"old step"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.chunk.onnx", "model.onnx"]  # no temp left


def test_unwritable_places_are_input_errors_naming_the_path(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(InputError, match="cannot write .*file/model.onnx: "):
        atomic_write_bytes(tmp_path / "file" / "model.onnx", b"data")
    with pytest.raises(InputError, match="cannot write /proc/edgernn/model.onnx: "):
        atomic_write_bytes("/proc/edgernn/model.onnx", b"data")


# --- the CLI (item 4) and the exported pair (issue 12 item 6) --------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """An untrained tiny character model saved as a run directory (no training needed)."""
    torch = pytest.importorskip("torch")
    from edgernn.checkpoint import save_checkpoint
    from edgernn.models import ModelConfig, RecurrentModel

    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig(input_size=9, output_size=9, hidden_size=8, embedding_size=4))
    run = tmp_path_factory.mktemp("cli") / "run"
    save_checkpoint(run, model, task="charlm", vocabulary=list("abcdefgh "))
    return run


@pytest.fixture(scope="module")
def exported(run_dir) -> Path:
    path = run_dir.parent / "model.onnx"
    result = cli_run("export", run_dir, "-o", path)
    assert result.exit_code == 0, result.output
    return path


def cli_run(*args):
    from edgernn.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_exit_2(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_export_lists_both_files_and_pairs_them(exported, run_dir):
    result = cli_run("export", run_dir, "-o", exported)
    assert "model.onnx" in result.stdout and "model.chunk.onnx" in result.stdout
    assert "ship both files together" in result.stdout
    doc = json.loads(cli_run("export", run_dir, "-o", exported, "--json").stdout)
    assert doc["files"] == [str(exported), str(exported.with_name("model.chunk.onnx"))]
    stepper = Stepper(exported)
    assert stepper.info.chunk_steps == stepper.chunk_steps > 1


def test_a_missing_chunk_graph_is_warned_about(exported, tmp_path):
    alone = tmp_path / "model.onnx"
    shutil.copy(exported, alone)
    with pytest.warns(UserWarning, match=r"model.chunk.onnx is missing: .*ship both files together"):
        Stepper(alone)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Stepper(alone, chunk_model=False)


def test_a_chunk_graph_beside_another_export_is_recognised_by_its_checksum(exported, tmp_path):
    import torch

    from edgernn.checkpoint import save_checkpoint
    from edgernn.models import ModelConfig, RecurrentModel

    torch.manual_seed(2)  # the same shapes, other weights
    model = RecurrentModel(ModelConfig(input_size=9, output_size=9, hidden_size=8, embedding_size=4))
    save_checkpoint(tmp_path / "run2", model, task="charlm", vocabulary=list("abcdefgh "))
    other = tmp_path / "model.onnx"
    assert cli_run("export", tmp_path / "run2", "-o", other).exit_code == 0
    shutil.copy(exported.with_name("model.chunk.onnx"), other.with_name("model.chunk.onnx"))
    stepper = Stepper(other)
    with pytest.warns(UserWarning, match="its step_graph_sha256 .* is not this model's"):
        assert stepper.chunk_steps is None  # refused by the checksum, before any probe runs


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["generate", "{model}", "--seed", "-1"], ["--seed"]),
        (["export", "{run}", "-o", "{tmp}/out.onnx", "--quantize", "int8", "--tolerance", "nan"], ["finite"]),
        (["export", "{run}", "-o", "{tmp}/file/model.onnx"], ["cannot write", "file/model.onnx"]),
        (["export", "{run}", "-o", "/proc/edgernn/model.onnx"], ["cannot write /proc/edgernn/model.onnx"]),
        (["export", "{run}", "-o", "{tmp}/null"], ["not a regular file"]),
        (["export", "{run}", "-o", "{tmp}/link.onnx"], ["symbolic link"]),
        (["bench", "{model}", "--no-baselines", "--batch-size", "10000000", "--steps", "5"], ["batch_size"]),
        (
            ["bench", "{model}", "--steps", "20", "--warmup", "2", "--plot", "/proc/edgernn/plot.png"],
            ["cannot write"],
        ),
        (["bench", "{model}", "--run", "{other_run}", "--steps", "20"], ["--run", "is not"]),
        (["inspect", "{symbolic}"], ["expected shape"]),
    ],
)
def test_bad_arguments_and_targets_are_one_line_exit_2(args, fragments, exported, run_dir, tmp_path):
    (tmp_path / "file").write_bytes(b"")
    (tmp_path / "link.onnx").symlink_to(tmp_path / "file")
    (tmp_path / "symbolic.onnx").write_bytes(symbolic_model(token_doc(hidden_size=8)))
    device_node(tmp_path)
    other_run = _other_run(tmp_path)
    values = {"model": exported, "run": run_dir, "tmp": tmp_path, "other_run": other_run}
    values["symbolic"] = tmp_path / "symbolic.onnx"
    result = cli_run(*(a.format(**values) for a in args))
    assert_one_line_exit_2(result, *fragments)
    assert (tmp_path / "file").read_bytes() == b"" and (tmp_path / "link.onnx").is_symlink()
    assert not stat.S_ISREG(os.lstat(tmp_path / "null").st_mode)


def _other_run(tmp_path: Path) -> Path:
    import torch

    from edgernn.checkpoint import save_checkpoint
    from edgernn.models import ModelConfig, RecurrentModel

    torch.manual_seed(1)
    config = ModelConfig(
        input_kind="features", input_size=3, output_kind="values", output_size=3, hidden_size=8
    )
    save_checkpoint(tmp_path / "other_run", RecurrentModel(config), task="forecast")
    return tmp_path / "other_run"


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (lambda c: c["model"].update(hidden_size=10**6), ["model.hidden_size: expected at most 65536"]),
        (lambda c: c.update(train=[1]), ["train: expected an object"]),
        (lambda c: c.update(task="bogus"), ["task: expected one of"]),
        (lambda c: c["model"].update(hidden_size="8"), ["invalid model config"]),
    ],
)
def test_an_edited_config_json_is_refused_at_export(run_dir, tmp_path, edit, fragments):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))
    result = cli_run("export", run, "-o", tmp_path / "out.onnx")
    assert_one_line_exit_2(result, str(run / "config.json"), *fragments)
    assert not (tmp_path / "out.onnx").exists()


def test_a_corrupt_resume_state_is_one_line_exit_2(run_dir, tmp_path):
    import torch
    from safetensors.torch import save

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    for data in (
        b"\x00" * 64,
        save({"a": torch.zeros(1)}),
        save({"a": torch.zeros(1)}, metadata={"state": "{}"}),
    ):
        (run / "resume.safetensors").write_bytes(data)
        result = cli_run("train", "--resume", run, "--steps", "1", "--quiet")
        assert_one_line_exit_2(result, "resume.safetensors")


@pytest.mark.filterwarnings("ignore:data input .* has axes of unknown size")
def test_bench_runs_a_foreign_model_of_unknown_input_size_with_its_declared_shape(foreign_model, tmp_path):
    import onnx

    proto = onnx.ModelProto()
    proto.CopyFrom(foreign_model.proto)
    proto.graph.input[0].type.tensor_type.shape.dim[1].Clear()  # input: [batch, ?]
    path = tmp_path / "vad.onnx"
    path.write_bytes(proto.SerializeToString())
    args = [
        "bench",
        path,
        "--state",
        "state=stateN",
        "--constant",
        "sr=16000",
        "--steps",
        "50",
        "--warmup",
        "5",
    ]
    assert_one_line_exit_2(cli_run(*args), "cannot make random inputs", "--data-shape batch,N")
    result = cli_run(*args, "--data-shape", "batch,64", "--no-baselines", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stepper"]["steps"] == 50
    assert_one_line_exit_2(cli_run(*args, "--data-shape", "batch,x"), "--data-shape")


@pytest.mark.parametrize(
    ("name", "data", "task"),
    [
        ("huge_field.csv", b"a,b\n" + b"9" * 200_000 + b",1\n", "forecast"),  # csv.Error before
        ("utf8.ts", b"@problemName x\n@data\n1,2:\xff\n", "classify"),
    ],
)
def test_hostile_data_files_are_one_line_exit_2(tmp_path, name, data, task):
    path = tmp_path / name
    path.write_bytes(data)
    result = cli_run("train", path, "--task", task, "-o", tmp_path / "run", "--steps", "1", "--quiet")
    assert_one_line_exit_2(result, str(path))
