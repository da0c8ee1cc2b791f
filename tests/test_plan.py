"""edgernn plan and its cost model: predictions within 10% of a fresh bench --device measurement
(instructions, flash, RAM) for shapes the fit never saw, in every precision (aarch64's int8 with an input
its vectorised loops do not divide, the Cortex-M55's Helium int8 with a head of rows past its groups of
four); the largest configurations fit and one size wider does not; bad
budgets and devices in one line, exit 2.

The measurement needs the device's toolchain and emulator: it skips naming the Debian packages (fails
under CI=true).
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from device_support import require_device

from edgernn.cli import cli
from edgernn.cost_model import Shape, counts, dsp_code, erratum_bytes, export_shape, load_cost_model, tail
from edgernn.plan import HIDDEN_STEP, Budget, Io, make_plan, parse_size
from edgernn.runtime.errors import InputError


@pytest.mark.parametrize(
    ("device", "precision", "shape"),
    [
        ("cortex-m4", "float32", Shape("gru", 2, 24, 12, 5)),
        ("cortex-m4", "int8", Shape("lstm", 1, 32, 40, 8, "tokens", 16)),
        ("cortex-m0plus", "int8", Shape("rnn_tanh", 2, 24, 6, 3)),
        ("cortex-m0plus", "integer", Shape("gru", 1, 48, 10, 4)),
        ("aarch64", "int8", Shape("lstm", 1, 32, 20, 5)),
        ("cortex-m55", "int8", Shape("gru", 1, 36, 30, 10, "tokens", 16)),  # Helium, rows past the fours
    ],
)
def test_predictions_are_within_10_percent_of_a_fresh_measurement(device, precision, shape, tmp_path):
    from edgernn.export.c.devices.bench import bench_precision, graph_macs

    profile = require_device(device, mca=True)
    torch.set_num_threads(1)
    model = export_shape(shape, tmp_path / "model.onnx", seed=3)
    assert graph_macs(model) == counts(shape)["macs"]
    measured = bench_precision(model, profile, precision, clock_mhz=profile.clock_mhz, steps=4, work=tmp_path,
                               self_test=False)  # fmt: skip
    predicted = load_cost_model().predict(device, precision, shape)
    erratum = erratum_bytes(profile, tmp_path / f"{device}-{precision}", tmp_path / f"c-{precision}")
    assert 0 <= erratum <= 8192 and (erratum == 0 or device == "aarch64")  # aarch64: a 4 KB page of stubs
    pairs = {
        "instructions": (predicted.instructions, measured.instructions_median),
        "flash": (predicted.flash_bytes, measured.flash_bytes - erratum),
        "RAM": (predicted.ram_bytes, measured.ram_bytes + measured.stack_bytes),
    }
    for name, (guess, truth) in pairs.items():
        assert abs(guess - truth) <= 0.10 * truth, f"{name}: predicted {guess:,.0f}, measured {truth:,.0f}"


def test_the_largest_configurations_fit_and_one_size_wider_does_not():
    model = load_cost_model()
    budget = Budget.make("cortex-m4", flash="64K", ram="16K", rate_hz=200)
    assert budget.flash_bytes == 65536 and budget.ram_bytes == 16384 and budget.step_us == 5000
    io = Io("features", 12, 9)
    plan = make_plan(budget, io, cost_model=model)
    assert len(plan.rows) + len(plan.none_fit) == 3 * 3 * 3
    assert plan.rows, "something fits 64K of flash at 200 Hz on an 80 MHz Cortex-M4"
    for prediction, headroom in plan.rows:
        assert set(headroom) == {"flash", "ram", "time"} and min(headroom.values()) >= 0
        shape = prediction.shape
        wider = model.predict("cortex-m4", prediction.precision, io.shape(shape.cell, shape.num_layers,
                                                                          shape.hidden_size + HIDDEN_STEP))  # fmt: skip
        assert not budget.fits(wider)
    int8 = {
        (p.shape.cell, p.shape.num_layers): p.shape.hidden_size for p, _ in plan.rows if p.precision == "int8"
    }
    fp32 = {
        (p.shape.cell, p.shape.num_layers): p.shape.hidden_size
        for p, _ in plan.rows
        if p.precision == "float32"
    }
    assert all(int8[key] >= fp32[key] for key in fp32 if key in int8)  # a quarter of the weight bytes
    integer = {
        (p.shape.cell, p.shape.num_layers): p.shape.hidden_size
        for p, _ in plan.rows
        if p.precision == "integer"
    }
    assert integer and all(integer[key] >= fp32[key] for key in fp32 if key in integer)


def test_the_tail_is_the_macs_a_rule_leaves_to_scalar_code():
    assert [tail("rem8", n) for n in (8, 13, 20)] == [0, 5, 4]
    assert [tail("whole8", n) for n in (8, 13, 20)] == [0, 13, 20]
    assert tail("none", 13) == 0
    shape = Shape("gru", 2, 24, 13, 5)  # products: 72x13, 72x24 (three of them), the head 5x24
    assert shape.products() == [(72, 13), (72, 24), (72, 24), (72, 24), (5, 24)]
    assert counts(shape, "whole8")["tail_macs"] == 72 * 13
    assert counts(shape, "rem16")["tail_macs"] == 72 * 13 + 3 * 72 * 8 + 5 * 8
    assert counts(shape)["macs"] == sum(rows * inputs for rows, inputs in shape.products())


def test_the_dsp_code_counts_are_what_the_int8_dsp_loop_writes_out():
    from edgernn.export.c import arm_dsp

    for inputs in (1, 3, 4, 5, 8, 13, 16, 24, 30, 32, 40, 50, 96, 130):
        for rows in (1, 2, 3, 5, 8, 9, 12, 17, 96):
            text = "\n".join(
                arm_dsp.dsp_products("m", inputs, rows, lambda g, a: f"oj[{g}] = {a};", lambda j: [])
            )
            scalar = sum(text.count(f"b{p} += wb * x") for p in range(arm_dsp.DSP_PAIRS))
            written = (text.count("__smlad("), scalar, text.count("oj["))
            assert dsp_code(inputs, rows) == written, (inputs, rows)
    # written out once a product, whatever its rows: a GRU 1x32 on 13 features has 96 x 13 (passes of two
    # pairs over 8 + 4 inputs, one left alone), 96 x 32 (four pairs over all 32), the head 3 x 32 (a pair,
    # then the odd row, 16 inputs a pass)
    written = counts(Shape("gru", 1, 32, 13, 3))
    assert written["dsp_smlads"] == 2 * 2 * 6 + 2 * 4 * 16 + 2 * 8 + 2 * 8
    assert (written["dsp_scalar"], written["dsp_stores"]) == (2, 4 + 8 + 2 + 1)


def test_plan_offers_integer_on_a_core_without_an_fpu():
    args = ["plan", "--device", "cortex-m0plus", "--flash", "64K", "--ram", "8K", "--rate-hz", "20",
            "--input-size", "6", "--output-size", "2", "--cells", "gru", "--precision", "float32,integer"]  # fmt: skip
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    assert "gru      integer" in done.output and "cortex-m0plus has no FPU: integer steps" in done.output
    fits = json.loads(CliRunner().invoke(cli, [*args, "--json"]).output)["fits"]
    widest = {p: max(f["hidden_size"] for f in fits if f["precision"] == p) for p in ("float32", "integer")}
    assert widest["integer"] > widest["float32"]  # soft float: integer runs a wider model at the same rate


def test_plan_command_json_and_text():
    runner = CliRunner()
    args = ["plan", "--device", "cortex-m4", "--flash", "128K", "--ram", "32K", "--rate-hz", "100",
            "--vocab", "65", "--output-size", "65", "--cells", "gru", "--precision", "int8"]  # fmt: skip
    done = runner.invoke(cli, [*args, "--json"])
    assert done.exit_code == 0, done.output
    doc = json.loads(done.output)
    assert doc["budget"] == {"device": "cortex-m4", "clock_mhz": 80.0, "flash_bytes": 131072, "ram_bytes": 32768,
                             "step_us": 10000.0}  # fmt: skip
    assert [row["num_layers"] for row in doc["fits"]] == [1, 2, 3]
    for row in doc["fits"]:
        assert row["cell"] == "gru" and row["precision"] == "int8" and row["embedding_size"] == 32
        assert row["flash_bytes"] <= 131072 and row["ram_bytes"] <= 32768 and row["us_per_step"] <= 10000
    text = runner.invoke(cli, args)
    assert text.exit_code == 0 and "cortex-m4 at 80 MHz" in text.output and "gru      int8" in text.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "cortex-m4", "--flash", "12Q", "--input-size", "3", "--output-size", "2"], "flash '12Q'"),
        (["--device", "pdp11", "--flash", "1M", "--input-size", "3", "--output-size", "2"], "device 'pdp11'"),
        (["--device", "cortex-m4", "--input-size", "3", "--output-size", "2"], "no budget"),
        (["--device", "cortex-m4", "--rate-hz", "10", "--budget-us", "5", "--input-size", "3", "--output-size", "2"],
         "a step rate and a time per step"),
        (["--device", "cortex-m4", "--rate-hz", "-1", "--input-size", "3", "--output-size", "2"], "step rate"),
        (["--device", "cortex-m4", "--flash", "1M", "--output-size", "2"], "--input-size"),
        (["--device", "cortex-m4", "--flash", "1M", "--input-size", "3", "--output-size", "2", "--cells", "tcn"],
         "--cells 'tcn'"),
    ],
)  # fmt: skip
def test_bad_budgets_and_devices_get_one_line_and_exit_2(args, message):
    done = CliRunner().invoke(cli, ["plan", *args])
    assert done.exit_code == 2, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], done.output


def test_sizes_read_as_on_a_datasheet():
    assert parse_size("256K", "flash") == 262144 and parse_size("1M", "flash") == 1048576
    assert parse_size("65536", "RAM") == 65536 and parse_size("64KiB", "RAM") == 65536
    for bad in ("", "K", "-1K", "1G", "0"):
        with pytest.raises(InputError):
            parse_size(bad, "flash")
