"""``edgernn platforms``: where the installed C platform files are, and copies of them next to a model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
