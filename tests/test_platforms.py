"""``edgernn platforms``: where the installed C platform files are, and copies of them next to a model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import edgernn.export.c
from edgernn.cli import cli

FOLDER = Path(edgernn.export.c.__file__).with_name("platforms")
NAMES = sorted(p.name for p in FOLDER.iterdir() if p.is_file())


def run_cli(*args):
    return CliRunner().invoke(cli, ["platforms", *map(str, args)])


def test_it_prints_the_installed_folder_and_every_file_in_it():
    result = run_cli()
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == str(FOLDER)
    assert [line.split()[0] for line in lines[1:]] == NAMES
    assert {"startup_cortex_m4.c", "mps2_an386.ld"} <= set(NAMES)
    size = (FOLDER / "mps2_an386.ld").stat().st_size
    [ld] = [line.split() for line in lines if "mps2_an386.ld" in line]
    assert ld == ["mps2_an386.ld", f"{size:,}", "bytes"]
    assert run_cli("--path").stdout == f"{FOLDER}\n"
    doc = json.loads(run_cli("--json").stdout)
    assert doc["folder"] == str(FOLDER) and [f["path"] for f in doc["files"]] == NAMES


def test_copy_writes_every_file_and_leaves_the_same_bytes_alone(tmp_path):
    out = tmp_path / "firmware" / "platform"
    result = run_cli("--copy", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"copied {len(NAMES)} file(s) to {out}"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {n: (FOLDER / n).read_bytes() for n in NAMES}
    again = run_cli("--copy", out, "--json")
    doc = json.loads(again.stdout)
    assert (doc["copied"], doc["unchanged"]) == ([], NAMES)


def test_copy_refuses_a_file_with_other_contents_in_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "mps2_an386.ld").write_text("/* the board's own map */\n")
    result = run_cli("--copy", tmp_path)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: --copy {str(tmp_path)!r}: mps2_an386.ld already there with other contents; move them away "
        "or copy into another directory"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mps2_an386.ld"]
    assert (tmp_path / "mps2_an386.ld").read_text() == "/* the board's own map */\n"
    afile = tmp_path / "afile"
    afile.write_text("x")
    for target in (afile, afile / "sub"):
        result = run_cli("--copy", target)
        assert result.exit_code == 2 and result.stderr.startswith("Error: --copy "), result.output
        assert "Traceback" not in result.output


def test_it_needs_neither_torch_nor_onnx(tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None; "
        "sys.argv = ['edgernn', 'platforms', '--path']; from edgernn.cli import main; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{FOLDER}\n"
    device = subprocess.run(
        [sys.executable, "-c", code.replace("'--path'", "'--device', 'rv32imc'")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert (device.returncode, device.stderr) == (
        2,
        "Error: edgernn platforms --device needs the deploy extra (onnx is not installed): "
        "pip install 'edgernn[deploy]'\n",
    )


# --- a device's kit: edgernn platforms --device ------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed_c(tmp_path_factory):
    """A small GRU deployed to C (model.h, model.c and its self-test model_test.c), without compiling."""
    torch = pytest.importorskip("torch")
    from edgernn.export import export_model
    from edgernn.export.deploy import deploy
    from edgernn.models import ModelConfig, RecurrentModel

    work = tmp_path_factory.mktemp("kit")
    torch.manual_seed(0)
    config = ModelConfig(cell="gru", input_kind="features", input_size=6, hidden_size=12, output_size=3)
    export_model(RecurrentModel(config).eval(), work / "model.onnx", chunk_steps=None)
    deploy(work / "model.onnx", "c", work / "c", skip_verify=True)
    return work / "c"


@pytest.mark.parametrize("device", ["cortex-m0plus", "rv32imc"])
def test_a_device_kit_builds_and_runs_the_model_with_the_commands_it_prints(deployed_c, tmp_path, device):
    from device_support import require_device

    require_device(device)
    out = tmp_path / "firmware"
    result = run_cli("--device", device, "--copy", out)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    board = {"cortex-m0plus": "microbit", "rv32imc": "virt"}[device]
    assert lines[0].startswith(f"{device} (") and f"on QEMU's {board}: flash" in lines[0]
    copied = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    startup = "startup_cortex_m.c" if device.startswith("cortex") else "startup_riscv.c"
    assert {startup, "libc.c", "libm.c", f"{board}.ld", "include/stdio.h"} <= set(copied)
    build, run = (
        lines[lines.index(next(x for x in lines if x.startswith("build ("))) + 1].strip(),
        lines[-1].strip(),
    )
    assert lines[-2] == "run:" and build.endswith("-o app.elf") and run.endswith("-kernel app.elf")
    for name in ("model.h", "model.c", "model_test.c"):
        shutil.copy(deployed_c / name, out / name)
    subprocess.run(build.replace("app.c", "model_test.c"), shell=True, cwd=out, check=True)
    done = subprocess.run(run, shell=True, cwd=out, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "PASS", done.stdout[-2000:]
    doc = json.loads(run_cli("--device", device, "--copy", out, "--json").stdout)
    assert (doc["build"], doc["run"], doc["copied"]) == (build, run, [])
    assert sorted(doc["unchanged"]) == copied and doc["board"] == board


def test_a_device_kit_refuses_what_it_cannot_give_in_one_line(tmp_path):
    for args, message in [
        (["--device", "cortex-m5"], "Error: device 'cortex-m5': expected one of cortex-m0plus, cortex-m3,"),
        (["--device", "aarch64"], "Error: device aarch64 runs Linux: it needs no platform files (build: "),
        (["--device", "rv32imc", "--path"], "Error: --path with --device: a device's linker script is made"),
    ]:
        result = run_cli(*args)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
        assert result.stderr.startswith(message), result.stderr
    (tmp_path / "virt.ld").write_text("/* mine */\n")
    result = run_cli("--device", "rv32imc", "--copy", tmp_path)
    assert result.exit_code == 2 and "virt.ld already there with other contents" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["virt.ld"]
