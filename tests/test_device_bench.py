"""The generated C on every emulated device (edgernn.export.c.devices): each device's self-test passes
and its outputs equal the host's; the step harness's instruction counts are exact and repeatable and
grow with the MACs; bench --device's JSON and bad input. Counts only, never times.

A missing toolchain skips with one line naming its Debian packages; under CI (``CI=true``) it fails.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgernn.cli import cli
from edgernn.export import export_model
from edgernn.export.c.devices import DEVICE_NAMES, Device, ToolchainMissing, get_device
from edgernn.export.c.devices.bench import bench_device, bench_precision, graph_macs, symbol_address
from edgernn.export.c.devices.build import build, run
from edgernn.export.c.devices.trace import trace_program
from edgernn.export.c.targets import run_trace, trace_source
from edgernn.export.deploy import deploy
from edgernn.models import ModelConfig, RecurrentModel
from edgernn.runtime.errors import InputError

JSON_KEYS = {
    "device", "precision", "clock_mhz", "instructions", "cycles", "us_per_step", "max_rate_hz", "macs",
    "macs_per_cycle", "flash_bytes", "ram_bytes", "stack_bytes",
}  # fmt: skip


def require(name: str) -> Device:
    """The device, or a skip (a failure under CI=true) naming the Debian packages of what is missing."""
    device = get_device(name)
    missing = device.missing_tools() + ([] if shutil.which("llvm-mca-14") else ["llvm-mca-14"])
    if missing:
        packages = " ".join(device.packages) + ("" if shutil.which("llvm-mca-14") else " llvm-14")
        message = f"{name}: {', '.join(missing)} not found (Debian packages: {packages})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return device


def _gru(path: Path, hidden: int, features: int = 3, layers: int = 1) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(cell="gru", input_kind="features", input_size=features, hidden_size=hidden,
                         num_layers=layers, output_size=2, output_kind="values")  # fmt: skip
    export_model(RecurrentModel(config).eval(), path, chunk_steps=None)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("device_bench")
    small = _gru(root / "small.onnx", 16, layers=2)
    made = {
        "small": small,
        "float32": deploy(small, "c", root / "float32").out_dir,
        "int8": deploy(small, "c", root / "int8", precision="int8").out_dir,
        "narrow": _gru(root / "narrow.onnx", 24, features=8),
        "wide": _gru(root / "wide.onnx", 36, features=8),
    }
    made["narrow-int8"] = deploy(made["narrow"], "c", root / "narrow-int8", precision="int8").out_dir
    return made


@pytest.fixture(scope="module")
def host_outputs(models) -> np.ndarray:
    return run_trace(models["float32"], "host", steps=16)


@pytest.mark.parametrize("name", DEVICE_NAMES)
def test_self_test_passes_and_outputs_equal_the_host(models, host_outputs, name, tmp_path):
    device = require(name)
    deployed = models["int8" if name in ("cortex-m4", "cortex-m55", "rv32imc") else "float32"]
    program = build(
        device, [deployed / "model.c", deployed / "model_test.c"], tmp_path / "t.elf", include=(deployed,)
    )
    done = run(program, timeout_s=120)
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "PASS", done.stdout[-500:]
    assert lines[-2].startswith("max_abs_error=") and lines[-2].endswith("steps=1000")

    source = tmp_path / "model_trace.c"
    source.write_text(trace_source("model", 16))
    deployed = models["float32"]
    traced = run(build(device, [source, deployed / "model.c"], tmp_path / "trace.elf", include=(deployed,)))
    rows = [line for line in traced.stdout.splitlines() if line.strip()]
    assert rows[-1] == "PASS" and len(rows) == 17
    outputs = np.array([[float(v) for v in row.split()] for row in rows[:-1]])
    np.testing.assert_array_equal(outputs, host_outputs)  # bit-identical: same C, IEEE float, no contraction


def test_the_same_build_counts_the_same_instructions_twice(models, tmp_path):
    device = require("cortex-m4")
    shutil.copytree(models["int8"], tmp_path / "c-int8")  # bench_precision's deployment, made once
    first = bench_precision(
        models["small"], device, "int8", clock_mhz=80.0, steps=3, work=tmp_path, self_test=False
    )
    program_dir = tmp_path / "cortex-m4-int8"
    elf = program_dir / "bench.elf"
    from edgernn.export.c.devices.build import Build

    program = Build(elf, device, device.boards[0])
    begin, end = (symbol_address(device, elf, s) for s in ("edgernn_step_begin", "edgernn_step_end"))
    again = trace_program(program, begin, end)
    twice = trace_program(program, begin, end)
    assert again.steps == twice.steps and len(again.steps) == 3
    assert first.instructions_median == float(np.median(again.steps))
    assert first.instructions_max == max(again.steps) > 1000
    assert again.executed == twice.executed and again.taken == twice.taken


def test_twice_the_macs_take_about_twice_the_instructions(models, tmp_path):
    device = require("cortex-m4")
    narrow, wide = models["narrow"], models["wide"]
    ratio_macs = graph_macs(wide) / graph_macs(narrow)
    assert graph_macs(narrow) == 3 * 24 * (8 + 24) + 24 * 2
    assert 1.9 < ratio_macs < 2.1
    small = bench_precision(
        narrow, device, "float32", clock_mhz=80.0, steps=2, work=tmp_path / "n", self_test=False
    )
    large = bench_precision(
        wide, device, "float32", clock_mhz=80.0, steps=2, work=tmp_path / "w", self_test=False
    )
    assert 1.6 <= large.instructions_median / small.instructions_median <= 2.4
    assert large.cycles > small.cycles > small.instructions_median * 0.9


def test_bench_device_json_has_the_issue_keys(models, tmp_path):
    require("cortex-m0plus")
    for precision in ("float32", "int8"):
        shutil.copytree(models[precision], tmp_path / "small" / f"c-{precision}", dirs_exist_ok=True)
    (bench,) = bench_device(
        models["small"],
        "cortex-m0plus",
        precisions=("float32", "int8"),
        steps=2,
        clock_mhz=48,
        self_test=False,
        work_dir=tmp_path,
    )
    docs = bench.to_dict()["results"]
    assert [d["precision"] for d in docs] == ["float32", "int8"]
    for doc in docs:
        assert set(doc) == JSON_KEYS
        assert doc["device"] == "cortex-m0plus" and doc["clock_mhz"] == 48
        assert doc["macs"] == graph_macs(models["small"]) > 0
        assert 0 < doc["instructions"]["median"] <= doc["instructions"]["max"]
        assert (
            "Cortex-M0+ TRM" in doc["cycles"]["method"]
            and doc["cycles"]["estimate"] > doc["instructions"]["median"]
        )
        assert doc["us_per_step"] == pytest.approx(doc["cycles"]["estimate"] / 48, rel=1e-3)
        assert doc["max_rate_hz"] == pytest.approx(48e6 / doc["cycles"]["estimate"], abs=0.1)
        assert doc["flash_bytes"] > 0 and doc["ram_bytes"] == 4 * 32 and 0 < doc["stack_bytes"] < 8192
    assert bench.results[0].board == "microbit"


def test_cli_device_json_and_bad_input(models):
    require("cortex-m4")
    runner = CliRunner()
    done = runner.invoke(
        cli, ["bench", str(models["small"]), "--device", "cortex-m4", "--steps", "2", "--json"]
    )
    assert done.exit_code == 0, done.output
    doc = json.loads(done.output)
    assert doc["steps"] == 2 and doc["board"] == "mps2-an386"
    assert set(doc["results"][0]) == JSON_KEYS and doc["results"][0]["clock_mhz"] == 80.0

    bad = runner.invoke(cli, ["bench", "--device", "cortex-m99"])
    assert bad.exit_code == 2
    assert "expected one of cortex-m0plus, cortex-m3, cortex-m4" in bad.output and "rv32imc" in bad.output
    bad = runner.invoke(cli, ["bench", "--device", "cortex-m4", "--precision", "int4"])
    assert bad.exit_code == 2 and "--precision" in bad.output
    bad = runner.invoke(cli, ["bench", "--device", "cortex-m4", "--clock-mhz", "0"])
    assert bad.exit_code == 2 and "--clock-mhz" in bad.output


def test_missing_toolchain_names_the_packages():
    device = get_device("rv32imc")
    broken = Device(**{**device.__dict__, "compiler": "no-such-gcc"})
    with pytest.raises(
        ToolchainMissing, match="no-such-gcc not found; install the Debian packages gcc-riscv64-unknown-elf"
    ):
        broken.require_tools()
    with pytest.raises(InputError, match="expected one of cortex-m0plus"):
        get_device("esp32")


@pytest.mark.parametrize("name", ["cortex-m4", "cortex-m55"])
def test_arm_dsp_and_mve_products_equal_the_portable_loop(models, tmp_path, name):
    device = require(name)
    deployed = models["narrow-int8"]
    source_text = (deployed / "model.c").read_text()
    assert "__smlad(" in source_text and "vmladavaq_u8(" in source_text
    source = tmp_path / "model_trace.c"
    source.write_text(trace_source("model", 24))
    outputs = {}
    for label, defines in (("dsp", ()), ("portable", ("MODEL_PORTABLE",))):
        program = build(
            device,
            [source, deployed / "model.c"],
            tmp_path / f"{label}.elf",
            include=(deployed,),
            defines=defines,
        )
        outputs[label] = run(program).stdout
    assert outputs["dsp"] == outputs["portable"] and outputs["dsp"].rstrip().endswith("PASS")
    np.testing.assert_array_equal(
        np.array([[float(v) for v in row.split()] for row in outputs["dsp"].splitlines()[:-1]]),
        run_trace(deployed, "host", steps=24),
    )
