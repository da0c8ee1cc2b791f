"""``edgernn quantize``: a verified float32 file quantized without its run directory, with the checks of
``export --quantize`` on a data file read as the metadata says; refused with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from edge_models import TEXT, export_byo, export_char

from edgernn.cli import cli
from edgernn.runtime import Stepper
from edgernn.runtime.chunk import chunk_path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quantize_cli")
    (root / "text.txt").write_text(TEXT, encoding="utf-8")
    rows = np.random.default_rng(0).standard_normal((400, 7)).round(4)
    header = "t,f0,f1,f2,f3,f4,f5"
    (root / "sensor.csv").write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    extra = {"task": "forecast", "columns": [f"f{i}" for i in range(6)], "targets": ["f0", "f1", "f2"]}
    return {
        "root": root,
        "char": export_char(root / "char.onnx"),
        "byo": export_byo(root / "sensor.onnx", extra_metadata=extra),
        "bare_byo": export_byo(root / "bare.onnx"),
        "text": root / "text.txt",
        "csv": root / "sensor.csv",
    }


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_int8_from_the_onnx_file_alone(files, tmp_path):
    out = tmp_path / "char-int8.onnx"
    chunk_path(out).write_bytes(b"left by an earlier export")
    before = files["char"].read_bytes()
    result = run_cli(
        "quantize", files["char"], "-o", out, "--mode", "int8", "--data", files["text"], "--json"
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["path"] == str(out) and doc["size_bytes"] == out.stat().st_size
    assert doc["float32_size_bytes"] == len(before) > 2 * out.stat().st_size
    quantization = Stepper(out).info.quantization
    assert quantization["mode"] == "int8" and quantization["checks"]["forced"] is False
    assert quantization["checks"]["metric"]["data"] == "text.txt: validation split, 2,399 steps"
    assert set(quantization["checks"]) >= {"one_step", "closed_loop", "metric"}
    assert not chunk_path(out).exists() and files["char"].read_bytes() == before
    assert Stepper(out).info.extra["task"] == "charlm"


def test_bring_your_own_model_to_fp16_on_its_csv(files, tmp_path):
    out = tmp_path / "sensor-fp16.onnx"
    result = run_cli("quantize", files["byo"], "-o", out, "--mode", "fp16", "--data", files["csv"])
    assert result.exit_code == 0, result.output
    assert "quantized from a verified float32 file" in result.stdout.splitlines()[0]
    stepper, reference = Stepper(out), Stepper(files["byo"])
    xs = np.random.default_rng(1).standard_normal((50, 6)).astype(np.float32)
    np.testing.assert_allclose(stepper.run(xs), reference.run(xs), atol=1e-2)
    assert stepper.info.quantization["checks"]["metric"]["name"] == "rmse"


def test_a_failed_check_is_refused_and_nothing_is_written(files, tmp_path):
    out = tmp_path / "refused.onnx"
    result = run_cli(
        "quantize", files["char"], "-o", out, "--mode", "int8", "--data", files["text"], "--tolerance", "-1"
    )
    assert result.exit_code == 1 and "metric" in result.stderr and "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("quantized", "already quantized"),
        ("no_task", "task"),
        ("same_file", "not the model itself"),
        ("wrong_data", "numeric column"),
    ],
)
def test_files_that_cannot_be_quantized_are_one_line_exit_2(files, tmp_path, case, fragment):
    model, data, out = files["char"], files["text"], tmp_path / "out.onnx"
    if case == "quantized":
        quantized = tmp_path / "q.onnx"
        assert run_cli("quantize", model, "-o", quantized, "--mode", "fp16", "--data", data).exit_code == 0
        model = quantized
    elif case == "no_task":
        model, data = files["bare_byo"], files["csv"]
    elif case == "same_file":
        out = model
    elif case == "wrong_data":
        model = files["byo"]
        data = files["root"] / "few.csv"
        data.write_text("a,b\n" + "\n".join(f"{i},{i}" for i in range(40)) + "\n")
    before = model.read_bytes()
    result = run_cli("quantize", model, "-o", out, "--mode", "int8", "--data", data)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert model.read_bytes() == before and (case == "same_file" or not out.exists())
