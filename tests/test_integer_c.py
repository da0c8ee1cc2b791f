"""The integer C precision: deployed, compiled and replayed bit for bit against the integer reference on the
host and on the emulated cortex-m0plus, cortex-m4 and rv32imc; no floating point in a step (no float or
double helper linked for the Cortex-M0+ with soft float, no F/D instruction or soft-float call for
rv32imc); the quality gates refuse by name and by how much unless forced."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from device_support import require_device
from edge_models import TEXT, VOCAB

from edgernn.cli import cli
from edgernn.export import export_model, integer_calibration
from edgernn.export.c.devices.bench import bench_precision, self_test_on
from edgernn.export.c.devices.build import build, compile_flags
from edgernn.export.deploy import deploy
from edgernn.models import ModelConfig, RecurrentModel
from edgernn.runtime.errors import ContractError, InputError, QuantizationError

if shutil.which("cc") is None and shutil.which("gcc") is None:
    if os.environ.get("CI") == "true":
        pytest.fail("the C target tests need a C compiler (Debian package gcc)", pytrace=False)
    pytest.skip("no C compiler: install the Debian package gcc", allow_module_level=True)

# float and double helpers of libgcc (ARM EABI names and the generic ones)
FLOAT_HELPER = re.compile(
    r"__aeabi_[fd]\w*|__aeabi_[iul]+2[fd]|__(add|sub|mul|div|neg|cmp|eq|ne|lt|le|gt|ge|unord)[sd]f[23]"
    r"|__(float|fix|fixuns|extend|trunc)\w*[sd]f\w*"
)


def _model(path: Path, cell: str, tokens: bool, layers: int = 2) -> Path:
    torch.manual_seed(4)
    if tokens:
        config = ModelConfig(cell=cell, input_size=len(VOCAB), output_size=len(VOCAB), hidden_size=20,
                             num_layers=layers, embedding_size=12)  # fmt: skip
        export_model(RecurrentModel(config).eval(), path, vocabulary=VOCAB, extra_metadata={"task": "charlm"},
                     chunk_steps=None)  # fmt: skip
        return path
    config = ModelConfig(
        cell=cell, input_kind="features", input_size=3, hidden_size=14, num_layers=layers, output_size=2,
        output_kind="values", input_mean=(20.0, -3.0, 500.0), input_std=(4.0, 0.5, 80.0),
        output_mean=(1.0, -2.0), output_std=(3.0, 0.2),
    )  # fmt: skip
    export_model(RecurrentModel(config).eval(), path, chunk_steps=None)
    return path


CASES = {
    "gru_tokens_2": ("gru", True, 2),
    "gru_features_1": ("gru", False, 1),
    "lstm_features_2": ("lstm", False, 2),
    "lstm_tokens_1": ("lstm", True, 1),
    "rnn_tanh_tokens_3": ("rnn_tanh", True, 3),
    "rnn_relu_features_2": ("rnn_relu", False, 2),
}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("integer")
    out = {}
    for key, (cell, tokens, layers) in CASES.items():
        model = _model(folder / f"{key}.onnx", cell, tokens, layers)
        out[key] = folder / key
        report = deploy(model, "c", out[key], precision="integer")
        assert report.details["verified"] and report.details["max_abs_error"] == 0.0, report.checks
        assert report.checks[0].startswith("host self-test") and "bit for bit" in report.checks[0]
    return out


@pytest.mark.parametrize("key", sorted(CASES))
def test_host_self_test_is_bit_identical_and_the_api_is_integer(deployed, key):
    header = (deployed[key] / "model.h").read_text()
    source = (deployed[key] / "model.c").read_text()
    assert "int model_step(model_state *st, const int16_t *x, int16_t *y);" in header
    assert re.search(r"#define MODEL_OUTPUT_SCALE\s+\d\.\d+e-?\d+f", header)
    assert "typedef struct { int16_t s[MODEL_STATE_VALUES]; } model_state;" in header
    step_part = source.split("#ifndef EDGERNN_NO_FLOAT")[0]
    assert "float" not in step_part and "double" not in step_part and "malloc" not in source
    assert "#include <math.h>" not in source


def _compile_run(folder: Path, main: str, tmp_path: Path, *flags: str) -> str:
    (tmp_path / "main.c").write_text(main)
    exe = tmp_path / "main"
    subprocess.run(
        ["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", *flags, f"-I{folder}",
         str(folder / "model.c"), str(tmp_path / "main.c"), "-o", str(exe)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=60).stdout


def test_float_helpers_convert_at_the_edges(deployed, tmp_path):
    main = """#include <stdio.h>
#include "model.h"
int main(void)
{
    model_state st; float x[3] = {21.5f, -3.25f, 480.0f}; int16_t xq[3], y[2]; float yf[2];
    model_reset(&st);
    model_quantize_input(x, xq);
    if (model_step(&st, xq, y) != MODEL_OK) return 1;
    model_dequantize_output(y, yf);
    printf("%d %d %d %d %d %.9g %.9g\\n", xq[0], xq[1], xq[2], y[0], y[1], yf[0], yf[1]);
    return 0;
}
"""
    folder = deployed["lstm_features_2"]
    printed = _compile_run(folder, main, tmp_path).split()
    scale = float(
        re.search(r"#define MODEL_OUTPUT_SCALE\s+(\S+)f", (folder / "model.h").read_text()).group(1)
    )
    xq, y, yf = [int(v) for v in printed[:3]], [int(v) for v in printed[3:5]], [float(v) for v in printed[5:]]
    assert all(abs(v) < 32768 for v in xq) and xq[0] > 0 > xq[1]
    np.testing.assert_allclose(yf, np.array(y) * scale, rtol=1e-6)
    with pytest.raises(subprocess.CalledProcessError):  # without floats the helpers are not there
        _compile_run(folder, main, tmp_path, "-DEDGERNN_NO_FLOAT")


def test_native_stepper_refuses_an_integer_library_by_name(deployed, tmp_path):
    from edgernn.export.c.build import build_shared_library
    from edgernn.runtime.native import NativeStepper

    library = build_shared_library(deployed["gru_features_1"], "model", tmp_path / "libmodel.so")
    with pytest.raises(ContractError, match="integer-only C .* NativeStepper does not step"):
        NativeStepper(library)


@pytest.mark.parametrize("key", ["lstm_features_2", "gru_tokens_2"])
def test_cortex_m4_self_test_is_bit_identical(deployed, tmp_path, key):
    # inputs per row 3 and 14 (LSTM), 12 and 20 (GRU): every path of the DSP product (16 and 8 inputs a
    # pass in assembly, a group of four in C, the last k % 4), and rows left over after the blocks of four
    device = require_device("cortex-m4")
    assert "Q_DOT_ASM" in (deployed[key] / "model.c").read_text()
    passed, error, output = self_test_on(device, deployed[key], tmp_path)
    assert passed and error == 0.0, output
    assert "max_abs_error=0 steps=1000" in output


def test_deploy_device_without_fpu_picks_integer_and_replays_there(deployed, tmp_path):
    require_device("rv32imc")
    model = str(deployed["rnn_relu_features_2"].parent / "rnn_relu_features_2.onnx")
    runner = CliRunner()
    done = runner.invoke(
        cli, ["deploy", model, "--target", "c", "--device", "rv32imc", "-o", str(tmp_path / "rv")]
    )
    assert done.exit_code == 0, done.output
    assert "rv32imc has no FPU: --precision integer" in done.output
    assert "rv32imc self-test (virt under qemu-system-riscv32): 1000 steps, largest error 0" in done.output
    assert "MODEL_PRECISION_INTEGER" in (tmp_path / "rv" / "model.h").read_text()
    done = runner.invoke(
        cli, ["deploy", model, "--target", "ort", "--device", "rv32imc", "-o", str(tmp_path / "o")]
    )
    assert (
        done.exit_code == 2 and "--device: only --target c" in done.output and "Traceback" not in done.output
    )
    done = runner.invoke(
        cli, ["deploy", model, "--target", "c", "--device", "z80", "-o", str(tmp_path / "z")]
    )
    assert done.exit_code == 2 and "expected one of" in done.output and not (tmp_path / "z").exists()


def test_cortex_m0plus_bench_replays_bit_for_bit_and_counts_instructions(deployed, tmp_path):
    device = require_device("cortex-m0plus")
    shutil.copytree(deployed["gru_tokens_2"], tmp_path / "c-integer")
    model = deployed["gru_tokens_2"].parent / "gru_tokens_2.onnx"
    bench = bench_precision(model, device, "integer", clock_mhz=48.0, steps=3, work=tmp_path)
    assert bench.self_test_max_abs_error == 0.0 and bench.precision == "integer"
    per_mac = bench.instructions_median / bench.macs
    assert bench.macs == 12 * 60 + 20 * 60 + 20 * 60 * 2 + 20 * len(VOCAB) and 2.0 < per_mac < 40.0
    assert bench.ram_bytes >= 2 * 2 * 20 and bench.flash_bytes > 0


def test_cli_bench_device_measures_integer_beside_int8(deployed):
    """edgernn bench MODEL --device D --precision int8,integer --json: both measured side by side, the
    integer step's RAM below int8's (an int16 state against a float one)."""
    import json

    require_device("cortex-m4")
    model = deployed["gru_tokens_2"].parent / "gru_tokens_2.onnx"
    done = CliRunner().invoke(
        cli,
        [
            "bench",
            str(model),
            "--device",
            "cortex-m4",
            "--precision",
            "int8,integer",
            "--steps",
            "2",
            "--json",
        ],
    )
    assert done.exit_code == 0, done.output
    results = {r["precision"]: r for r in json.loads(done.output)["results"]}
    assert set(results) == {"int8", "integer"}
    macs = 12 * 60 + 20 * 60 + 20 * 60 * 2 + 20 * len(VOCAB)
    for r in results.values():
        assert r["macs"] == macs and r["instructions"]["median"] > macs / 4 and r["flash_bytes"] > 0
    assert results["integer"]["ram_bytes"] < results["int8"]["ram_bytes"]


STEP_ONLY = """#include "model.h"
#ifdef MODEL_PRECISION_INTEGER
typedef int16_t output_t;
#else
typedef float output_t; /* the float32 C, to show the check finds helpers where they are */
#endif
int main(void)
{
    model_state st; output_t y[MODEL_OUTPUT_SIZE]; int32_t sum = 0;
    model_reset(&st);
    for (int32_t t = 0; t < 3; t++) {
        if (model_step_token(&st, t, y) != MODEL_OK) return 1;
        sum += (int32_t)y[0];
    }
    return sum == 12345;
}
"""


def _linked_float_helpers(device, folder: Path, out: Path, defines: tuple[str, ...] = ()) -> set[str]:
    (out / "step_only.c").write_text(
        STEP_ONLY.replace("model_step_token(&st, t, y)", "model_step_token(&st, t, y)")
    )
    program = build(device, [out / "step_only.c", folder / "model.c"], out / "step_only.elf", include=(folder,),
                    defines=defines)  # fmt: skip
    nm = device.compiler.replace("gcc", "nm")
    symbols = subprocess.run([nm, str(program.elf)], check=True, capture_output=True, text=True).stdout
    return {m.group(0) for line in symbols.splitlines() for m in [FLOAT_HELPER.search(line.split()[-1])] if m}


def test_cortex_m0plus_step_links_no_float_helper(deployed, tmp_path, tmp_path_factory):
    device = require_device("cortex-m0plus")
    assert "-mfloat-abi=soft" in device.cflags
    found = _linked_float_helpers(device, deployed["gru_tokens_2"], tmp_path, ("EDGERNN_NO_FLOAT",))
    assert found == set()
    float_folder = tmp_path_factory.mktemp("float32") / "c"  # the check sees helpers where they are
    deploy(deployed["gru_tokens_2"].parent / "gru_tokens_2.onnx", "c", float_folder, skip_verify=True)
    float_out = tmp_path_factory.mktemp("float32_link")
    assert {"__aeabi_fmul", "__aeabi_fadd"} <= _linked_float_helpers(device, float_folder, float_out)


def test_every_device_compiles_products_of_one_width_with_rows_left_over(tmp_path):
    """Every product 32 inputs wide (embedding and hidden alike: gcc specialises q_product for k = 32)
    and a head whose rows are not a multiple of four (q_row runs): -Werror builds for each device
    (gcc's loop analysis once warned of an index overflow in the tails of such a build)."""
    torch.manual_seed(2)
    config = ModelConfig(cell="gru", input_size=len(VOCAB), output_size=len(VOCAB), hidden_size=32,
                         num_layers=1, embedding_size=32)  # fmt: skip
    path = tmp_path / "wide.onnx"
    export_model(RecurrentModel(config).eval(), path, vocabulary=VOCAB, chunk_steps=None)
    assert len(VOCAB) % 4 != 0
    folder = tmp_path / "c"
    deploy(path, "c", folder, precision="integer")
    for name in ("cortex-m0plus", "cortex-m4", "rv32imc"):
        device = require_device(name)
        obj = tmp_path / f"{name}.o"
        done = subprocess.run([device.compiler, *compile_flags(device), "-c", str(folder / "model.c"), "-o",
                               str(obj)], capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0 and "-Werror" in compile_flags(device), done.stderr[-2000:]


def test_rv32imc_object_has_no_float_instruction_or_call(deployed, tmp_path):
    device = require_device("rv32imc")
    for key in ("gru_tokens_2", "lstm_features_2"):
        obj = tmp_path / f"{key}.o"
        subprocess.run(
            [device.compiler, *compile_flags(device), "-DEDGERNN_NO_FLOAT", "-c",
             str(deployed[key] / "model.c"), "-o", str(obj)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        objdump = device.compiler.replace("gcc", "objdump")
        listing = subprocess.run([objdump, "-d", str(obj)], check=True, capture_output=True, text=True).stdout
        mnemonics = {line.split("\t")[2].split()[0] for line in listing.splitlines() if line.count("\t") >= 2}
        assert "mul" in mnemonics and not {m for m in mnemonics if m.startswith("f") and m != "fence"}
        undefined = subprocess.run([device.compiler.replace("gcc", "nm"), "-u", str(obj)], check=True,
                                   capture_output=True, text=True).stdout  # fmt: skip
        assert not FLOAT_HELPER.search(undefined), undefined


def test_gates_refuse_by_name_unless_forced(tmp_path):
    model = _model(tmp_path / "char.onnx", "gru", True, 1)
    data = tmp_path / "text.txt"
    data.write_text(TEXT[:6000], encoding="utf-8")
    report = deploy(model, "c", tmp_path / "ok", precision="integer", data=data)
    metric = report.details["quality"]["metric"]
    assert metric["name"] == "loss" and metric["tolerance"] == 0.05
    assert abs(metric["quantized"] - metric["float32"]) < 0.05
    assert any(c.startswith("integer task metric: loss") for c in report.checks)
    with pytest.raises(QuantizationError, match=r"metric: loss .* past the tolerance -1\.0000"):
        deploy(model, "c", tmp_path / "strict", precision="integer", data=data, tolerance=-1.0)
    assert not (tmp_path / "strict").exists()
    forced = deploy(
        model, "c", tmp_path / "forced", precision="integer", data=data, tolerance=-1.0, force=True
    )
    assert any(c.startswith("FORCED") for c in forced.checks) and forced.details["quality"]["forced"]


def test_cli_deploys_integer_and_refuses_what_it_cannot(deployed, tmp_path):
    model = deployed["rnn_relu_features_2"].parent / "rnn_relu_features_2.onnx"
    runner = CliRunner()
    done = runner.invoke(
        cli, ["deploy", str(model), "--target", "c", "--precision", "integer", "-o", str(tmp_path / "c")]
    )
    assert done.exit_code == 0, done.output
    assert "bit for bit" in done.output and (tmp_path / "c" / "model_test.c").is_file()
    done = runner.invoke(
        cli,
        [
            "deploy",
            str(model),
            "--target",
            "c",
            "--precision",
            "integer",
            "--fast-activations",
            "-o",
            str(tmp_path / "f"),
        ],
    )
    assert done.exit_code == 2 and "own tables" in done.output and "Traceback" not in done.output
    with pytest.raises(InputError, match="own tables"):
        deploy(model, "c", tmp_path / "g", precision="integer", fast_activations=True)


def test_bring_your_own_model_is_deployed_as_an_integer_program(tmp_path):
    """Linear -> GRU (2 layers) -> LayerNorm -> Linear: lowered as the float C lowers it, every buffer int16
    (tests/test_integer_byo.py covers the layers, the devices and the refusals)."""
    from edge_models import export_byo

    path = export_byo(tmp_path / "byo.onnx")
    report = deploy(path, "c", tmp_path / "c", precision="integer")
    assert report.details["verified"] and report.details["max_abs_error"] == 0.0
    assert "a bring-your-own gru model" in (tmp_path / "c" / "model.h").read_text()


DATA = Path(__file__).resolve().parents[1] / "examples" / "data"


@pytest.mark.parametrize("task", ["classify", "forecast"])
def test_classify_and_forecast_gates_on_bundled_data(tmp_path, task):
    """The task metric on the bundled test files: accuracy within 1 point of float32's, a forecast's
    MSE within 10% (its RMSE within sqrt(1.1) - 1 = 4.88%), each named in the report."""
    torch.manual_seed(6)
    if task == "classify":
        config = ModelConfig(cell="gru", input_kind="features", input_size=12, hidden_size=16, num_layers=1,
                             output_size=9, output_kind="logits")  # fmt: skip
        extra = {"task": "classify", "classes": [str(c) for c in range(1, 10)],
                 "columns": [f"dim_{i}" for i in range(12)]}  # fmt: skip
        data = DATA / "japanese_vowels_test.ts"
    else:
        config = ModelConfig(cell="lstm", input_kind="features", input_size=1, hidden_size=8, num_layers=2,
                             output_size=1, output_kind="values", input_mean=(71.55,), input_std=(13.15,),
                             output_mean=(71.55,), output_std=(13.15,))  # fmt: skip
        extra = {"task": "forecast", "columns": ["value"], "targets": ["value"]}
        data = DATA / "ucr_internalbleeding16_test.csv"
    model = tmp_path / f"{task}.onnx"
    export_model(RecurrentModel(config).eval(), model, extra_metadata=extra, chunk_steps=None)
    report = deploy(model, "c", tmp_path / "c", precision="integer", data=data)
    metric = report.details["quality"]["metric"]
    change = metric["quantized"] - metric["float32"]
    if task == "classify":
        assert metric["name"] == "accuracy" and metric["tolerance"] == -1.0 and change >= -1.0
    else:
        assert metric["name"] == "rmse" and metric["tolerance"] == pytest.approx(
            metric["float32"] * (1.1**0.5 - 1), rel=1e-6
        )
        assert change <= metric["tolerance"]
    assert any(c.startswith(f"integer task metric: {metric['name']}") for c in report.checks)
    assert report.details["verified"] and report.details["max_abs_error"] == 0.0


def test_anomaly_window_is_checked_on_a_labelled_file(tmp_path):
    torch.manual_seed(5)
    config = ModelConfig(cell="gru", input_kind="features", input_size=1, hidden_size=8, num_layers=1,
                         output_size=1, output_kind="values", input_mean=(0.0,), input_std=(1.0,),
                         output_mean=(0.0,), output_std=(1.0,))  # fmt: skip
    extra = {
        "task": "anomaly",
        "columns": ["value"],
        "targets": ["value"],
        "anomaly": {"residual_std": [0.5]},
    }
    model = tmp_path / "anomaly.onnx"
    export_model(RecurrentModel(config).eval(), model, extra_metadata=extra, chunk_steps=None)
    values = np.sin(np.arange(800) / 9.0)
    values[600:604] = 40.0  # the anomaly: far from anything a prediction reaches
    labels = np.zeros(800, int)
    labels[600:604] = 1
    data = tmp_path / "series.csv"
    data.write_text(
        "value,is_anomaly\n" + "".join(f"{v:.5f},{a}\n" for v, a in zip(values, labels, strict=True))
    )
    report = deploy(model, "c", tmp_path / "c", precision="integer", data=data, force=True)
    window = report.details["anomaly_window"]
    assert window["window"] == [500, 703] and window["label_column"] == "is_anomaly"
    top = window["top_row"]["integer"]
    assert 600 <= top <= 603 and window["top_row"]["float32"] == top and window["found"]["integer"]
    assert any(c.startswith(f"integer anomaly window: top score at row {top}") for c in report.checks)
    missed = dict(window, top_row={"float32": 600, "integer": 100}, found={"float32": True, "integer": False})
    assert "outside rows 500-703" in integer_calibration.anomaly_failure(missed)
