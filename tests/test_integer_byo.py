"""The integer C precision of bring-your-own models: per-step layers (Linear, LayerNorm, activations,
Embedding, Softmax, Concat...) around nn.GRU / nn.LSTM / nn.RNN, calibrated on real data, gated, compiled
and replayed bit for bit against the integer program's reference on the host, the emulated cortex-m0plus
and rv32imc, with no float or double helper linked; what has no integer form refused by name; the error of
the integer LayerNorm, Softmax and exp measured."""

from __future__ import annotations

import functools
import importlib
import json
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
from torch import nn

from edgernn.cli import cli
from edgernn.export import export_module
from edgernn.export.c.devices.bench import self_test_on
from edgernn.export.c.devices.build import build
from edgernn.export.deploy import deploy
from edgernn.runtime import integer_layers
from edgernn.runtime.errors import ContractError, QuantizationError

if shutil.which("cc") is None and shutil.which("gcc") is None:
    if os.environ.get("CI") == "true":
        pytest.fail("the C target tests need a C compiler (Debian package gcc)", pytrace=False)
    pytest.skip("no C compiler: install the Debian package gcc", allow_module_level=True)

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"
FLOAT_HELPER = re.compile(
    r"__aeabi_[fd]\w*|__aeabi_[iul]+2[fd]|__(add|sub|mul|div|neg|cmp|eq|ne|lt|le|gt|ge|unord)[sd]f[23]"
    r"|__(float|fix|fixuns|extend|trunc)\w*[sd]f\w*"
)


class Forecaster(nn.Module):
    """Linear -> LayerNorm -> GRU (2 layers) -> ReLU -> Linear: one raw reading in, one out."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(1, 12)
        self.norm = nn.LayerNorm(12)
        self.gru = nn.GRU(12, 16, num_layers=2, batch_first=True)
        self.out = nn.Linear(16, 1)

    def forward(self, x, state=None):
        z, state = self.gru(self.norm(self.inp(x / 50.0)), state)
        return self.out(torch.relu(z)), state


class CharSoftmax(nn.Module):
    """Embedding -> LSTM -> Linear -> Softmax: tokens in, probabilities out."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(len(VOCAB), 8)
        self.lstm = nn.LSTM(8, 12, batch_first=True)
        self.head = nn.Linear(12, len(VOCAB))

    def forward(self, tokens, state=None):
        z, state = self.lstm(self.embedding(tokens), state)
        return torch.softmax(self.head(z), dim=-1), state


class TwoRNNs(nn.Module):
    """RNN tanh and RNN relu (2 layers) side by side, concatenated, gated by a sigmoid, clipped; slices
    compared, selected and combined element-wise; features picked by constant indices."""

    def __init__(self):
        super().__init__()
        self.a = nn.RNN(3, 6, batch_first=True)
        self.b = nn.RNN(3, 5, num_layers=2, nonlinearity="relu", batch_first=True)
        self.gate = nn.Linear(11, 11)
        self.pruned = nn.Linear(19, 64)  # 8% nonzero: float32 keeps it sparse, integer makes it dense
        with torch.no_grad():
            self.pruned.weight.mul_((torch.rand(64, 19) < 0.08).float())
        self.out = nn.Linear(64, 2)
        self.skip = nn.Linear(3, 2, bias=False)  # its product adds into the head's output

    def forward(self, x, state=None):
        state = state or {"a": None, "b": None}
        za, ha = self.a(x, state["a"])
        zb, hb = self.b(x, state["b"])
        z = torch.cat([za, zb], dim=-1)
        z = torch.sigmoid(self.gate(z)) * nn.functional.leaky_relu(z, 0.1) - 0.25 * z
        wide = torch.maximum(za[..., :5], -zb) + torch.minimum(za[..., 1:], zb.abs())
        wide = torch.where((wide > 0.1) & (za[..., :5] < zb), wide, wide / 1.25)
        z = torch.cat([torch.clamp(z, -0.5, 0.8), torch.tanh(wide), za[..., [5, 1, 4]]], dim=-1)
        return self.out(torch.relu(self.pruned(z))) + self.skip(x), {"a": ha, "b": hb}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("byo")
    torch.manual_seed(3)
    out = {"forecast": folder / "forecast.onnx", "char": folder / "char.onnx", "rnns": folder / "rnns.onnx"}
    extra = {"task": "forecast", "columns": ["value"], "targets": ["value"]}
    export_module(
        Forecaster().eval(), out["forecast"], example_input=torch.randn(1, 5, 1), extra_metadata=extra
    )
    export_module(
        CharSoftmax().eval(),
        out["char"],
        example_input=torch.zeros(1, 5, dtype=torch.int64),
        vocabulary=VOCAB,
    )
    export_module(TwoRNNs().eval(), out["rnns"], example_input=torch.randn(1, 5, 3))
    (folder / "text.txt").write_text(TEXT[:3000], encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def deployed(models, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("byo_c")
    out = {key: folder / key for key in models}
    done = CliRunner().invoke(
        cli,
        ["deploy", str(models["forecast"]), "--target", "c", "--precision", "integer", "--out",
         str(out["forecast"]), "--data", str(DATA / "ucr_internalbleeding16_test.csv")],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "integer task metric: rmse" in done.output and "bit for bit" in done.output
    report = deploy(
        models["char"], "c", out["char"], precision="integer", data=models["char"].parent / "text.txt"
    )
    metric = report.details["quality"]["metric"]
    assert metric["name"] == "loss" and abs(metric["quantized"] - metric["float32"]) < 0.05
    assert report.details["activation_max_error"]["exp"] == integer_layers.EXP_MAX_ERROR
    assert report.details["verified"] and report.details["max_abs_error"] == 0.0
    report = deploy(models["rnns"], "c", out["rnns"], precision="integer")
    assert report.details["verified"] and report.details["max_abs_error"] == 0.0
    loop = report.details["quality"]["closed_loop"]
    assert loop["y"][1] < 0.02, loop
    return out


@pytest.mark.parametrize("key", ["forecast", "char", "rnns"])
def test_host_replays_the_integer_program_and_the_step_has_no_float(deployed, key):
    source = (deployed[key] / "model.c").read_text()
    step_part = source.split("#ifndef EDGERNN_NO_FLOAT")[0]
    assert "float" not in step_part and "double" not in step_part and "malloc" not in source
    assert "#include <math.h>" not in source
    header = (deployed[key] / "model.h").read_text()
    assert "typedef struct { int16_t s[MODEL_STATE_VALUES]; } model_state;" in header
    assert ("q_layer_norm(" in source) == (key == "forecast") and ("q_softmax(" in source) == (key == "char")


STEP_ONLY = """#include "model.h"
int main(void)
{
    model_state st; int16_t y[MODEL_OUTPUT_SIZE]; int32_t sum = 0;
    model_reset(&st);
    for (int32_t t = 0; t < 3; t++) {
        int16_t x[MODEL_INPUT_SIZE + 1] = {0};
        x[0] = (int16_t)(t * 300);
        if (STEP != MODEL_OK) return 1;
        sum += (int32_t)y[0] + x[0];
    }
    return sum == 12345;
}
"""


@pytest.mark.parametrize("key", ["forecast", "char"])
def test_cortex_m0plus_replays_bit_for_bit_and_links_no_float_helper(deployed, key, tmp_path):
    device = require_device("cortex-m0plus")
    passed, error, output = self_test_on(device, deployed[key], tmp_path)
    assert passed and error == 0.0, output[-2000:]
    step = "model_step_token(&st, t, y)" if key == "char" else "model_step(&st, x, y)"
    (tmp_path / "step_only.c").write_text(STEP_ONLY.replace("STEP", step))
    program = build(device, [tmp_path / "step_only.c", deployed[key] / "model.c"], tmp_path / "step.elf",
                    include=(deployed[key],), defines=("EDGERNN_NO_FLOAT",))  # fmt: skip
    nm = device.compiler.replace("gcc", "nm")
    symbols = subprocess.run([nm, str(program.elf)], check=True, capture_output=True, text=True).stdout
    names = [line.split()[-1] for line in symbols.splitlines() if line.strip()]
    assert {n for n in names if FLOAT_HELPER.fullmatch(n)} == set()
    if key == "forecast":  # LayerNorm's int64 division and square root: integer helpers only
        assert "__aeabi_ldivmod" in names


def test_rv32imc_replays_bit_for_bit(deployed, tmp_path):
    device = require_device("rv32imc")
    passed, error, output = self_test_on(device, deployed["rnns"], tmp_path)
    assert passed and error == 0.0, output[-2000:]


def test_bench_on_the_cortex_m0plus_side_by_side_calibrated_on_data(models, tmp_path):
    """bench --device with --data: float32, int8 and integer of a bring-your-own model traced on the
    emulated Cortex-M0+ (integer calibrated on the data as deploy --data is, and its self-test replayed
    there), each with instructions, flash and RAM; data the model cannot read is refused in one line."""
    require_device("cortex-m0plus")
    data = DATA / "ucr_internalbleeding16_test.csv"
    done = CliRunner().invoke(
        cli,
        ["bench", str(models["forecast"]), "--device", "cortex-m0plus", "--precision", "float32,int8,integer",
         "--data", str(data), "--steps", "2", "--json"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    results = {r["precision"]: r for r in json.loads(done.stdout)["results"]}
    assert list(results) == ["float32", "int8", "integer"]
    for r in results.values():
        assert r["instructions"]["median"] > 0 and r["flash_bytes"] > 0 and r["ram_bytes"] > 0
        assert r["stack_bytes"] > 0 and r["macs"] == results["float32"]["macs"] > 0
    instructions = {p: r["instructions"]["median"] for p, r in results.items()}
    # soft float: every float32 multiply-add a library call; integer: none (measured 0.069x, int8 0.25x)
    assert instructions["integer"] < 0.1 * instructions["float32"]
    assert instructions["integer"] < 0.5 * instructions["int8"]
    assert results["integer"]["flash_bytes"] < results["float32"]["flash_bytes"]
    assert results["integer"]["ram_bytes"] < results["float32"]["ram_bytes"]  # an int16 state
    bad = tmp_path / "other.csv"
    bad.write_text("other\n1\n2\n3\n")
    done = CliRunner().invoke(
        cli,
        ["bench", str(models["forecast"]), "--device", "cortex-m0plus", "--precision", "integer",
         "--data", str(bad)],
    )  # fmt: skip
    assert done.exit_code == 2 and "no column(s) ['value']" in done.output, done.output
    assert len(done.output.strip().splitlines()) == 1


def test_bench_stopped_by_a_gate_hints_what_bench_takes(models, monkeypatch):
    """bench has no --force: a gate that fails (held here to a tolerance below zero) stops it with a hint
    naming what bench takes and deploy's --force, not export's."""
    require_device("cortex-m0plus")
    deploy_module = importlib.import_module("edgernn.export.deploy")
    monkeypatch.setattr(deploy_module, "deploy", functools.partial(deploy_module.deploy, tolerance=-1.0))
    done = CliRunner().invoke(
        cli,
        ["bench", str(models["forecast"]), "--device", "cortex-m0plus", "--precision", "integer",
         "--data", str(DATA / "ucr_internalbleeding16_test.csv")],
    )  # fmt: skip
    assert done.exit_code == 1 and "metric: rmse" in done.output, done.output
    assert "leave integer out of --precision" in done.output and "deploy --target c" in done.output
    assert "export --force" not in done.output and "force=True" not in done.output


def test_a_failing_gate_is_named_with_its_size(models, tmp_path):
    with pytest.raises(QuantizationError, match=r"rmse.*") as caught:
        deploy(models["forecast"], "c", tmp_path / "c", precision="integer",
               data=DATA / "ucr_internalbleeding16_test.csv", tolerance=-1.0)  # fmt: skip
    assert "-1" in str(caught.value) and not (tmp_path / "c").exists()


class WithSoftplus(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(2, 4, batch_first=True)
        self.out = nn.Linear(4, 1)

    def forward(self, x, state=None):
        z, state = self.gru(x, state)
        return nn.functional.softplus(self.out(z)), state


class WithLogSoftmax(WithSoftplus):
    def forward(self, x, state=None):
        z, state = self.gru(x, state)
        return torch.log_softmax(self.out(z), dim=-1), state


def test_an_op_without_integer_form_is_refused_by_name(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "softplus.onnx"
    export_module(WithSoftplus().eval(), path, example_input=torch.randn(1, 4, 2))
    with pytest.raises(
        ContractError, match=r"op Softplus .* has no integer form; it takes .*LayerNormalization"
    ):
        deploy(path, "c", tmp_path / "c", precision="integer")
    log_path = tmp_path / "log_softmax.onnx"
    export_module(WithLogSoftmax().eval(), log_path, example_input=torch.randn(1, 4, 2))
    with pytest.raises(ContractError, match=r"LogSoftmax .* has no integer form"):
        deploy(log_path, "c", tmp_path / "c", precision="integer")
    done = CliRunner().invoke(
        cli, ["deploy", str(path), "--target", "c", "--precision", "integer", "--out", str(tmp_path / "c")]
    )
    assert done.exit_code == 2 and "Softplus" in done.output and "Traceback" not in done.output
    assert len(done.output.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


# --- the error of the integer layers (docs/c.md quotes these) ---------------------------------------


def test_exp_table_error_over_every_input():
    """Every Q4.11 input in [-16, 0]: the largest error 1.39e-4 (x = -0.047: the interpolation where exp
    bends most, and exp(0) stored as 32767)."""
    x = np.arange(-32768, 1)
    error = np.abs(integer_layers.q_exp(x) / 32768.0 - np.exp(x / 2048.0))
    assert error.max() == pytest.approx(integer_layers.EXP_MAX_ERROR, abs=0.01e-4)


def test_softmax_error_on_random_rows():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (2000, 10))
    scale = 2 * np.abs(logits).max() / 32767
    q = np.round(logits / scale).astype(np.int64)
    from edgernn.runtime.integer_ref import quantize_multiplier

    m, s = quantize_multiplier(np.array([scale * 2048]))
    got = integer_layers.q_softmax(q, int(m[0]), int(s[0])) / 32768.0
    want = np.exp(q * scale - (q * scale).max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    assert np.abs(got - want).max() < 1.5e-4  # measured: 1.16e-4


def test_layer_norm_error_on_random_rows():
    rng = np.random.default_rng(1)
    n = 16
    x = rng.normal(2.0, 1.5, (2000, n))
    gamma, beta = rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n)
    s_x = 2 * np.abs(x).max() / 32767
    q = np.round(x / s_x).astype(np.int64)
    s_g = gamma.max() / 16384
    g_q = np.round(gamma / s_g).astype(np.int64)
    b_q = np.round(beta / (s_g * 2.0**-11)).astype(np.int64)
    s_out = 2 * 6.0 / 32767
    from edgernn.runtime.integer_ref import quantize_multiplier

    m, s = quantize_multiplier(np.array([s_g * 2.0**-11 / s_out]))
    eps = round(1e-5 * n * n / s_x**2)
    got = integer_layers.q_layer_norm(q, g_q, b_q, eps, int(m[0]), int(s[0])) * s_out
    xs = q * s_x
    want = (xs - xs.mean(axis=1, keepdims=True)) / np.sqrt(
        xs.var(axis=1, keepdims=True) + 1e-5
    ) * gamma + beta
    assert np.abs(got - want).max() < 8e-4  # measured: 6.1e-4 (the output's step: 3.7e-4)


def test_narrow_requantization_is_within_one_step_of_the_wide_one():
    """q_narrow (two 32-bit products) against q_requantize (one 64-bit product) over every int16 input and
    ratios from 2^-15 to 2^14: at most one unit apart."""
    from edgernn.runtime import integer_ops
    from edgernn.runtime.integer_ref import quantize_multiplier

    v = np.arange(-32768, 32768)
    for ratio in (3.1e-5, 0.013, 0.4999, 1.0, 1.7, 37.2, 9000.0):
        (m,), (s,) = quantize_multiplier(np.array([ratio]))
        assert integer_layers.NARROW_SHIFTS[0] <= s <= integer_layers.NARROW_SHIFTS[1]
        narrow = integer_layers.q_narrow(v, int(m), int(s))
        assert np.abs(narrow - integer_ops.q_requantize(v, int(m), int(s))).max() <= 1
    assert np.array_equal(integer_layers.q_narrow(v, 1 << 30, 30), v)
