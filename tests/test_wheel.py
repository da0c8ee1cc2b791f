"""What a pip install gets: the wheel holds every file a target needs, and installed (not editable) into a
fresh virtual environment it deploys to every target, benches, streams, serves and runs an example outside
the repository; the deploy extra alone deploys, and without onnx deploy names the extra to install."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
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


# --- the wheel, installed into a fresh virtual environment ------------------------------------------

ROOT = Path(__file__).parents[1]
PACKAGE_DIRS = {"edgernn": "edgernn", "export": "edgernn/export", "runtime": "edgernn/runtime"}
SERVE_HINT = "pip install 'edgernn[serve]'"


def _skip_or_fail(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must have it: {message}")
    pytest.skip(message)


def _git_files() -> list[str]:
    """The files under the package folders git tracks, or would (new, not ignored), that exist now."""
    if not shutil.which("git") or not (ROOT / ".git").exists():
        _skip_or_fail(
            "needs git and the checkout (the wheel is built from the files git tracks; Debian package: git)"
        )
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *PACKAGE_DIRS],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    return [p for p in listed if (ROOT / p).is_file()]  # not a file deleted but not yet committed


def _tracked_package_files() -> list[str]:
    """Every file of the package folders, as the wheel names it."""
    return sorted(PACKAGE_DIRS[p.split("/", 1)[0]] + "/" + p.split("/", 1)[1] for p in _git_files())


def _build_wheel(work: Path) -> Path:
    """The wheel of the working tree's files, built from a copy (no stale build/ of the repo)."""
    source = work / "source"
    for name in ["pyproject.toml", "README.md", *_git_files()]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    # setuptools from this environment when it is one pyproject.toml allows (>= 77), else an isolated build
    flags = ["--no-build-isolation"] if _setuptools_builds_wheels() else []
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", *flags, "-w", str(work / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    [wheel] = (work / "dist").glob("edgernn-*.whl")
    return wheel


def _setuptools_builds_wheels() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (77, 0)


class Installed:
    """A fresh virtual environment with the wheel installed (not editable). Its dependencies are this
    environment's, seen through a .pth file after the venv's own site-packages, so edgernn itself can only
    come from the wheel."""

    def __init__(self, work: Path, wheel: Path):
        self.venv = work / "venv"
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(self.venv)], check=True, timeout=120
        )
        self.python = self.venv / "bin" / "python"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(self.python), "install", "--quiet", "--no-deps",
             "--no-index", str(wheel)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        self.env["PATH"] = os.pathsep.join([str(self.venv / "bin"), self.env.get("PATH", "")])
        site = self.query("import sysconfig; print(sysconfig.get_paths()['purelib'])")
        dependencies = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
        (Path(site) / "edgernn_test_dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n")

    def query(self, code: str) -> str:
        done = subprocess.run(  # from outside the repository: ``-c`` puts the working directory first
            [str(self.python), "-c", code], cwd=self.venv.parent, env=self.env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def run(self, *args, cwd: Path, stdin: str | None = None, timeout: int = 300) -> str:
        """A command of the venv (``edgernn``, ``python``), from ``cwd``; asserts it succeeded."""
        command = [str(self.venv / "bin" / str(args[0])), *map(str, args[1:])]
        done = subprocess.run(
            command, cwd=cwd, env=self.env, input=stdin, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Installed, Path]:
    work = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(work)
    return Installed(work, wheel), wheel


def _char_model(directory: Path) -> Path:
    """An untrained GRU 1x16 character model over the whole of tinyshakespeare's characters."""
    import torch

    from edgernn.data import build_vocabulary
    from edgernn.export import export_model
    from edgernn.models import ModelConfig, RecurrentModel

    text = (ROOT / "examples" / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    vocabulary = build_vocabulary(text)
    torch.manual_seed(0)
    config = ModelConfig(
        input_size=len(vocabulary), output_size=len(vocabulary), hidden_size=16, embedding_size=8
    )
    path = directory / "chars.onnx"
    export_model(
        RecurrentModel(config).eval(), path, vocabulary=vocabulary, extra_metadata={"task": "charlm"}
    )
    return path


def test_the_wheel_holds_every_file_of_the_packages(installed):
    _, wheel = installed
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = _tracked_package_files()
    assert [name for name in expected if name not in names] == []
    for needed in ("edgernn/export/triton/c_backend.c", "edgernn/export/c/platforms/startup_cortex_m4.c"):
        assert needed in names
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n]


def test_the_installed_package_deploys_to_every_target_and_runs_outside_the_repo(installed, tmp_path):
    venv, _ = installed
    if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")):
        _skip_or_fail("no C compiler for the c targets (Debian package: gcc)")
    where = json.loads(venv.query(
        "import json, sys, edgernn, edgernn.export.triton, edgernn.runtime; "
        "print(json.dumps([[m.__file__ for m in (edgernn, edgernn.export.triton, edgernn.runtime)], sys.path]))"
    ))  # fmt: skip
    files, path = where
    site = venv.venv.resolve()
    assert all(Path(f).resolve().is_relative_to(site) for f in files), files
    assert not [p for p in path if p and Path(p).resolve() == ROOT.resolve()]
    assert not [p for p in path if p and Path(p).resolve().is_relative_to(ROOT.resolve()) and
                not Path(p).resolve().is_relative_to(ROOT.resolve() / ".venv")]  # fmt: skip

    model = _char_model(tmp_path)
    work = tmp_path / "user"  # a user's folder: neither the repo nor the model's
    work.mkdir()
    edgernn = functools.partial(venv.run, "edgernn", cwd=work)
    out = {}
    for name, args in {
        "ort": ["--target", "ort"],
        "c": ["--target", "c"],
        "triton-onnxruntime": ["--target", "triton", "--backend", "onnxruntime"],
        "triton-python": ["--target", "triton", "--backend", "python", "--model-name", "chars_py"],
        "triton-c": ["--target", "triton", "--backend", "c", "--model-name", "chars_c"],
    }.items():
        out[name] = json.loads(edgernn("deploy", model, *args, "-o", work / name, "--json"))
    assert {f["path"] for f in out["ort"]["files"]} >= {"chars.ort", "chars.chunk.ort"}
    assert {f["path"] for f in out["c"]["files"]} >= {"model.c", "model.h", "model_test.c"}
    assert (work / "triton-c" / "chars_c" / "1" / "libtriton_edgernn.so").is_file()
    assert (work / "triton-python" / "chars_py" / "1" / "model.py").is_file()

    platforms = json.loads(edgernn("platforms", "--copy", work / "platform", "--json"))
    assert Path(platforms["folder"]).resolve().is_relative_to(site)
    assert {"mps2_an386.ld", "startup_cortex_m4.c"} <= set(platforms["copied"])
    for name in platforms["copied"]:
        assert (work / "platform" / name).read_bytes() == (
            ROOT / "export" / "c" / "platforms" / name
        ).read_bytes()
    kit = json.loads(edgernn("platforms", "--device", "cortex-m0plus", "--copy", work / "m0", "--json"))
    firmware = ROOT / "export" / "c" / "devices" / "firmware"
    assert {"startup_cortex_m.c", "libc.c", "include/stdio.h", "microbit.ld"} <= set(kit["copied"])
    for name in set(kit["copied"]) - {"microbit.ld"}:
        assert (work / "m0" / name).read_bytes() == (firmware / name).read_bytes()

    bench = json.loads(edgernn("bench", model, "--steps", "200", "--warmup", "20", "--json"))
    assert bench["stepper"]["p50_us"] > 0
    assert "c" in bench, bench["notes"]  # the generated C timed with the installed step_bench.c.in

    streamed = edgernn("stream", work / "ort" / "chars.ort", "--top-k", "3", stdin="ROMEO:\n").splitlines()
    assert len(streamed) == 1 and streamed[0].count('"') >= 6  # three quoted characters, their probabilities

    example = work / "keyboard_streams.py"
    shutil.copy2(ROOT / "examples" / "keyboard_streams.py", example)
    typed = venv.run("python", example, "--model", model, cwd=work)
    assert "alice typed" in typed and "keystrokes, median" in typed

    _serve_both_flavours(venv, work, model)


def _serve_both_flavours(venv: Installed, work: Path, model: Path) -> None:
    """The installed server command serves the python flavour (its model.py imports the installed
    edgernn) and the c flavour (the backend built from the installed c_backend.c); Ctrl-C stops both."""
    try:
        import tritonclient.grpc as grpcclient
    except ImportError:
        _skip_or_fail(f"tritonclient not installed: {SERVE_HINT}")
    from edgernn.export.triton.server import free_port, pytriton_root
    from edgernn.runtime import Stepper

    if pytriton_root() is None:
        _skip_or_fail(f"tritonserver (nvidia-pytriton) not installed: {SERVE_HINT}")
    port = free_port()
    command = [
        str(venv.python),
        "-m",
        "edgernn.export.triton.server",
        "triton-python",
        "triton-c",
        "--grpc-port",
        str(port),
    ]
    process = subprocess.Popen(command, cwd=work, env=venv.env, stderr=subprocess.PIPE, text=True)
    tokens = np.array([3, 14, 15, 9, 26, 5, 35, 8], np.int64)
    got = {}
    try:
        serving = process.stderr.readline()
        assert serving.startswith("serving "), serving + process.stderr.read()[-3000:]
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            for name in ("chars_py", "chars_c"):
                ys = []
                for t, token in enumerate(tokens):
                    x = grpcclient.InferInput("x", [1, 1], "INT64")
                    x.set_data_from_numpy(token.reshape(1, 1))
                    result = client.infer(name, [x], sequence_id=77, sequence_start=t == 0,
                                          sequence_end=t == len(tokens) - 1)  # fmt: skip
                    ys.append(result.as_numpy("y")[0])
                got[name] = np.stack(ys)
        finally:
            client.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    stream = Stepper(model, chunk_model=False).new_stream()
    want = np.stack([stream.step(int(t)) for t in tokens])
    np.testing.assert_allclose(got["chars_py"], want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["chars_c"], want, atol=1e-4, rtol=1e-4)
