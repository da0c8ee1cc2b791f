"""What a pip install gets: the deploy extra alone deploys, and without onnx deploy names the extra to
install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from edge_models import export_char

# Runs the command line in a fresh interpreter with some modules blocked: importing one raises
# ModuleNotFoundError, as on a machine where it is not installed.
BLOCKED_CLI = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
sys.argv = ["edgernn", *sys.argv[2:]]
from edgernn.cli import main
main()
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return export_char(tmp_path_factory.mktemp("wheel_model") / "char.onnx", hidden_size=16)


def edgernn_without(blocked: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_CLI, blocked, *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("target", [["ort"], ["c"], ["triton", "--backend", "c"]])
def test_deploy_without_onnx_names_the_deploy_extra(model, tmp_path, target):
    done = edgernn_without("onnx", "deploy", model, "--target", *target, "-o", tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"Error: deploy --target {target[0]} needs the deploy extra (onnx is not installed): "
        "pip install 'edgernn[deploy]'"
    ]
    assert done.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no directory, no stage left behind


@pytest.mark.parametrize("backend", ["onnxruntime", "python"])
def test_triton_flavours_without_c_need_neither_onnx_nor_torch(model, tmp_path, backend):
    out = tmp_path / "repo"
    done = edgernn_without(
        "onnx,torch", "deploy", model, "--target", "triton", "--backend", backend, "-o", out, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert (out / "char" / "config.pbtxt").is_file() and (out / "char" / "1" / "model.onnx").is_file()


def test_the_deploy_extra_alone_deploys_ort_and_c(model, tmp_path):
    """onnx without torch (nor onnxscript, the train extra's exporter) is enough for ort and c."""
    blocked = "torch,onnxscript,safetensors"
    ort = edgernn_without(blocked, "deploy", model, "--target", "ort", "-o", tmp_path / "ort", cwd=tmp_path)
    assert ort.returncode == 0, ort.stderr
    assert (tmp_path / "ort" / "char.ort").is_file() and (tmp_path / "ort" / "char.chunk.ort").is_file()
    c = edgernn_without(blocked, "deploy", model, "--target", "c", "-o", tmp_path / "c", cwd=tmp_path)
    assert c.returncode == 0, c.stderr
    assert "self-test" in c.stdout and (tmp_path / "c" / "model.c").is_file()
