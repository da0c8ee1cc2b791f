"""The C target: generated C99 from the verified step graph, compiled and run on this machine against the
onnxruntime stepper (self-test with golden vectors, and the same library driven from Python), float32
and int8, every cell, depth, tokens and features, normalisation, a bring-your-own model; its refusals."""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from edge_models import TEXT, VOCAB, SensorGRU, export_char

from edgernn.cli import cli
from edgernn.export import export_model, export_module
from edgernn.export.c import build_shared_library, compile_host, generate_sources, run_self_test
from edgernn.export.c.activations import FAST_TANH_CLAMP
from edgernn.export.deploy import deploy
from edgernn.models import ModelConfig, RecurrentModel
from edgernn.runtime import Stepper
from edgernn.runtime.errors import ContractError, InputError, QuantizationError
from edgernn.runtime.native import NativeStepper

if shutil.which("cc") is None and shutil.which("gcc") is None:
    if os.environ.get("CI") == "true":
        pytest.fail("the C target tests need a C compiler (Debian package gcc)", pytrace=False)
    pytest.skip("no C compiler: install the Debian package gcc", allow_module_level=True)


class TwoStacks(torch.nn.Module):
    """GRU -> LayerNorm -> LSTM (2 layers) -> Linear: two recurrent stacks, states h0, h1, c1."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.GRU(5, 12, batch_first=True)
        self.norm = torch.nn.LayerNorm(12)
        self.decoder = torch.nn.LSTM(12, 9, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(9, 3)

    def forward(self, x, state=None):
        state = state or {"encoder": None, "decoder": None}
        z, encoder = self.encoder(x, state["encoder"])
        z, decoder = self.decoder(self.norm(z), state["decoder"])
        return self.head(torch.tanh(z)), {"encoder": encoder, "decoder": decoder}


class Activations(torch.nn.Module):
    """Per-step layers beyond Linear: GELU (Erf), LeakyReLU, ELU, Softplus, SiLU, HardSwish, clamp, then an
    LSTM, LayerNorm and a head mixing LogSoftmax, Softmax, abs and sqrt."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 10), torch.nn.Linear(10, 10)
        self.rnn = torch.nn.LSTM(10, 12, batch_first=True)
        self.norm, self.head = torch.nn.LayerNorm(12), torch.nn.Linear(12, 5)

    def forward(self, x, state=None):
        f = torch.nn.functional
        z = f.gelu(self.a(x))
        z = (
            f.leaky_relu(self.b(z), 0.1)
            + f.elu(z)
            + f.softplus(z) * torch.sigmoid(z)
            - f.hardswish(z)
            + f.silu(z)
        )
        out, state = self.rnn(torch.clamp(z, -3, 3), state)
        y = self.head(self.norm(out))
        return torch.log_softmax(y, dim=-1) + torch.softmax(y, dim=-1) * 0.5 + y.abs().sqrt(), state


def _features(cell: str, layers: int, normalised: bool = False, hidden: int = 12) -> RecurrentModel:
    torch.manual_seed(1)
    stats = {}
    if normalised:
        stats = {
            "input_mean": (10.0, -2.0, 0.5, 100.0),
            "input_std": (2.0, 0.5, 1.0, 25.0),
            "output_mean": (3.0, -1.0),
            "output_std": (4.0, 0.25),
        }
    config = ModelConfig(
        cell=cell, input_kind="features", input_size=4, hidden_size=hidden, num_layers=layers,
        output_size=2, output_kind="values", **stats,
    )  # fmt: skip
    return RecurrentModel(config).eval()


def _tokens(cell: str, layers: int) -> RecurrentModel:
    torch.manual_seed(2)
    config = ModelConfig(
        cell=cell, input_size=len(VOCAB), output_size=len(VOCAB), hidden_size=16, num_layers=layers,
        embedding_size=8,
    )  # fmt: skip
    return RecurrentModel(config).eval()


MODELS = {
    "gru_forecast_2x12": lambda: (_features("gru", 2, normalised=True), None),
    "lstm_tokens_1x16": lambda: (_tokens("lstm", 1), VOCAB),
    "rnn_tanh_features_1x12": lambda: (_features("rnn_tanh", 1), None),
    "rnn_relu_tokens_2x16": lambda: (_tokens("rnn_relu", 2), VOCAB),
    "lstm_features_2x12": lambda: (_features("lstm", 2), None),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("c_models")
    paths = {}
    for name, build in MODELS.items():
        model, vocabulary = build()
        paths[name] = folder / f"{name}.onnx"
        export_model(model, paths[name], vocabulary=vocabulary, chunk_steps=None)
    torch.manual_seed(0)
    paths["byo_sensor_gru"] = folder / "byo.onnx"
    export_module(SensorGRU().eval(), paths["byo_sensor_gru"], example_input=torch.randn(1, 5, 6))
    paths["byo_activations"] = folder / "activations.onnx"
    export_module(Activations().eval(), paths["byo_activations"], example_input=torch.randn(1, 5, 4))
    paths["byo_two_stacks"] = folder / "two_stacks.onnx"
    export_module(TwoStacks().eval(), paths["byo_two_stacks"], example_input=torch.randn(1, 5, 5))
    return paths


def _deployed(models, tmp_path_factory, key: str, **options) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("c_out") / key
    report = deploy(models[key], "c", out, **options)
    return out, report


# --- every model, float32 and int8: the host self-test -------------------------------------------------


@pytest.mark.parametrize("key", [*MODELS, "byo_sensor_gru", "byo_two_stacks", "byo_activations"])
def test_float32_self_test_passes_on_the_host(models, tmp_path_factory, key):
    out, report = _deployed(models, tmp_path_factory, key)
    assert sorted(p.name for p in out.iterdir()) == ["deploy.json", "model.c", "model.h", "model_test.c"]
    assert report.details["verified"] is True
    assert report.details["max_abs_error"] < 1e-4
    assert report.details["self_test_steps"] == 1000
    header = (out / "model.h").read_text()
    info = Stepper(models[key]).info
    tokens = info.input.kind == "tokens"
    assert f"#define MODEL_INPUT_SIZE    {0 if tokens else info.input.size}\n" in header
    assert f"#define MODEL_VOCAB_SIZE    {info.input.size if tokens else 0}\n" in header
    assert f"#define MODEL_OUTPUT_SIZE   {info.output.size}\n" in header
    state_floats = sum(int(np.prod(s.shape)) for s in info.states)
    assert f"#define MODEL_STATE_FLOATS  {state_floats}\n" in header
    assert f"#define MODEL_RAM_BYTES     {report.details['ram_bytes']}\n" in header
    assert f"#define MODEL_FLASH_BYTES   {report.details['flash_bytes']}\n" in header
    assert any(f"RAM {report.details['ram_bytes']:,} bytes" in n for n in report.notes)
    if tokens:
        assert "extern const char *const model_vocabulary[" in header


@pytest.mark.parametrize(
    "key", ["gru_forecast_2x12", "lstm_tokens_1x16", "rnn_relu_tokens_2x16", "byo_sensor_gru"]
)
def test_int8_self_test_passes_and_the_gates_ran(models, tmp_path_factory, key):
    out, report = _deployed(models, tmp_path_factory, key, precision="int8")
    assert report.details["verified"] is True and report.details["max_abs_error"] < 1e-4
    quality = report.details["quality"]
    assert quality["one_step"]["y_relative"] < 0.05
    assert not quality["forced"]
    assert any("task metric: NOT RUN" in c for c in report.checks)
    source = (out / "model.c").read_text()
    assert "static const uint8_t" in source  # the weights, offset by 128
    assert "st->pass ^= 1u;" in source  # the rows walked the other way on the next step
    assert "int8" in (out / "model.h").read_text()
    native = _native(out, tmp_path_factory)
    assert native.info.extra["c_target"]["precision"] == "int8"


@pytest.mark.parametrize("key", ["lstm_features_2x12", "gru_forecast_2x12", "rnn_relu_tokens_2x16"])
def test_int8_steps_are_the_same_bits_walked_either_way(models, tmp_path_factory, key):
    """int8 steps alternate the order of their products and rows (the state's pass word); a stream
    restored onto the other parity must give the same bits, step after step."""
    out, _ = _deployed(models, tmp_path_factory, key, precision="int8")
    source = (out / "model.c").read_text()
    assert "if (back) { /* the products of the state alone first" in source
    assert "const int j = back ? " in source
    library = tmp_path_factory.mktemp("lib") / "libmodel.so"  # -march=native: FMA contraction too
    native = NativeStepper(build_shared_library(out, "model", library, native=True))
    xs = _inputs(native.info, 1, 60, seed=11)[0]
    steps = [int(x) if native.info.input.kind == "tokens" else x for x in xs]
    a = native.new_stream()
    a.step(steps[0])  # a's pass word is now odd
    b = native.new_stream()
    b.restore(a.snapshot())  # the same state, pass word even
    for x in steps[1:]:
        np.testing.assert_array_equal(a.step(x), b.step(x))
    for name, value in a.state.items():
        np.testing.assert_array_equal(b.state[name], value)


def test_int8_flash_is_much_smaller(tmp_path):
    torch.manual_seed(3)
    model = RecurrentModel(
        ModelConfig(
            cell="gru",
            input_kind="features",
            input_size=16,
            hidden_size=96,
            num_layers=2,
            output_size=8,
            output_kind="values",
        )  # fmt: skip
    ).eval()
    path = tmp_path / "gru96.onnx"
    export_model(model, path, chunk_steps=None, verify=False)
    fp32 = generate_sources(path)
    int8 = generate_sources(path, precision="int8")
    assert fp32.flash_bytes / int8.flash_bytes > 3.5
    # the quantized input of the widest product (int16 where there is no byte dot product), the pass word
    assert int8.ram_bytes == fp32.ram_bytes + 2 * 96 + 4


# --- the library from Python: NativeStepper against Stepper -------------------------------------------


def _native(out: Path, tmp_path_factory, **kwargs) -> NativeStepper:
    library = build_shared_library(out, "model", tmp_path_factory.mktemp("lib") / "libmodel.so")
    return NativeStepper(library, **kwargs)


def _inputs(info, batch: int, steps: int, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if info.input.kind == "tokens":
        return rng.integers(0, info.input.size, size=(batch, steps))
    mean = np.array(info.input.mean or [0.0] * info.input.size, np.float32)
    std = np.array(info.input.std or [1.0] * info.input.size, np.float32)
    return (mean + std * rng.standard_normal((batch, steps, info.input.size))).astype(np.float32)


@pytest.fixture(scope="module")
def natives(models, tmp_path_factory) -> dict[str, tuple[NativeStepper, Stepper]]:
    pairs = {}
    for key in ("gru_forecast_2x12", "lstm_tokens_1x16", "byo_sensor_gru"):
        out, _ = _deployed(models, tmp_path_factory, key)
        pairs[key] = (_native(out, tmp_path_factory), Stepper(models[key]))
    return pairs


@pytest.fixture(scope="module")
def libraries(natives) -> dict[str, Path]:
    return {key: native.path for key, (native, _) in natives.items()}


@pytest.mark.parametrize("key", ["gru_forecast_2x12", "lstm_tokens_1x16", "byo_sensor_gru"])
def test_native_stepper_equals_the_stepper_over_many_steps(natives, key):
    native, stepper = natives[key]
    assert native.info.cell == stepper.info.cell and native.info.states == stepper.info.states
    xs = _inputs(stepper.info, 1, 400)[0]
    a, b = native.new_stream(), stepper.new_stream()
    for x in xs:
        x = int(x) if stepper.info.input.kind == "tokens" else x
        np.testing.assert_allclose(a.step(x), b.step(x), atol=1e-4, rtol=1e-4)
    for name, value in b.state.items():
        np.testing.assert_allclose(a.state[name], value, atol=1e-4, rtol=1e-4)
    batch = _inputs(stepper.info, 3, 50, seed=9)
    a, b = native.new_stream(3), stepper.new_stream(3)
    np.testing.assert_allclose(a.run(batch), b.run(batch), atol=1e-4, rtol=1e-4)
    snap = a.snapshot()
    ys = a.run(batch[:, :7])
    a.restore(snap)
    np.testing.assert_array_equal(a.run(batch[:, :7]), ys)
    a.reset()
    assert all(not v.any() for v in a.state.values())


def test_native_stepper_refuses_bad_input_and_keeps_its_state(natives):
    native, _ = natives["lstm_tokens_1x16"]
    for x in (3, 5, 1):
        native.step(x)
    before = native.state
    for bad, message in ((-1, "expected token ids in [0, "), (len(VOCAB), "expected token ids in [0, "),
                         (2.5, "expected integer token ids"), ([1, 2], "expected token ids of shape")):  # fmt: skip
        with pytest.raises(InputError, match=re.escape(message)):
            native.step(bad)
        for name, value in before.items():
            np.testing.assert_array_equal(native.state[name], value)
    stream = native.new_stream(2)
    stream.run(np.array([[1, 2], [3, 4]]))
    kept = stream.state
    with pytest.raises(InputError):
        stream.run(np.array([[1, 2, 3], [4, 5, len(VOCAB)]]))  # the second row fails late: all roll back
    for name, value in kept.items():
        np.testing.assert_array_equal(stream.state[name], value)
    with pytest.raises(InputError, match="expected names"):
        native.state = {"h": before["h"]}
    features, _ = natives["gru_forecast_2x12"]
    features.step(np.ones(4, np.float32))
    before = features.state
    with pytest.raises(InputError, match="expected finite values"):
        features.step(np.array([1.0, np.nan, 0.0, 0.0], np.float32))
    np.testing.assert_array_equal(features.state["h"], before["h"])


def test_the_c_itself_refuses_bad_input_with_the_state_untouched(natives):
    """Straight through ctypes, past NativeStepper's own checks: the error codes of the C API."""
    tokens_lib = natives["lstm_tokens_1x16"][0]._library
    features_lib = natives["gru_forecast_2x12"][0]._library
    for lib, floats in ((tokens_lib, 32), (features_lib, 24)):
        state = (ctypes.c_float * floats)(*np.linspace(-0.5, 0.5, floats))
        y = (ctypes.c_float * len(VOCAB))()
        before = bytes(state)
        if lib is tokens_lib:
            assert lib.step_token(ctypes.addressof(state), -1, ctypes.addressof(y)) == 1
            assert lib.step_token(ctypes.addressof(state), len(VOCAB), ctypes.addressof(y)) == 1
            assert lib.step(ctypes.addressof(state), ctypes.addressof(y), ctypes.addressof(y)) == 3
        else:
            x = (ctypes.c_float * 4)(1.0, float("nan"), 0.0, 0.0)
            assert lib.step(ctypes.addressof(state), ctypes.addressof(x), ctypes.addressof(y)) == 2
            x = (ctypes.c_float * 4)(float("inf"), 0.0, 0.0, 0.0)
            assert lib.step(ctypes.addressof(state), ctypes.addressof(x), ctypes.addressof(y)) == 2
            assert lib.step_token(ctypes.addressof(state), 0, ctypes.addressof(y)) == 3
        assert bytes(state) == before


def test_native_runtime_needs_neither_torch_nor_onnxruntime(natives, libraries):
    _, stepper = natives["gru_forecast_2x12"]
    code = (
        "import sys, json\n"
        "for blocked in ('torch', 'onnx', 'onnxruntime'): sys.modules[blocked] = None\n"
        "import numpy as np\n"
        "from edgernn.runtime.native import NativeStepper\n"
        "s = NativeStepper(sys.argv[1])\n"
        "y = s.step(np.ones(4, np.float32))\n"
        "print(json.dumps({'y': y.tolist(), 'cell': s.info.cell}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(libraries["gru_forecast_2x12"])],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout)
    want = stepper.new_stream().step(np.ones(4, np.float32))
    np.testing.assert_allclose(result["y"], want, atol=1e-4)


# --- what the generated C is (and is not) ----------------------------------------------------------------


def test_generated_c_has_no_malloc_no_mutable_statics_and_compiles_strictly(models, tmp_path):
    sources = generate_sources(models["byo_sensor_gru"], name="sensor", fast_activations=True)
    for file_name, text in sources.files.items():
        code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        assert not re.search(r"\b(malloc|calloc|realloc|free|alloca)\s*\(", code), file_name
        for line in code.splitlines():
            if re.match(r"\s*static\b", line):
                assert re.match(r"\s*static (const\b|int |float |inline float )", line), line
                if not line.lstrip().startswith("static const"):
                    assert "(" in line, line  # functions only
        assert "#include <stdlib.h>" not in code
    (tmp_path / "sensor.h").write_text(sources.files["sensor.h"])
    (tmp_path / "sensor.c").write_text(sources.files["sensor.c"])
    (tmp_path / "sensor_test.c").write_text(
        '#include "sensor.h"\nint main(void) { sensor_state s; sensor_reset(&s); return 0; }\n'
    )
    executable = compile_host(tmp_path, "sensor")
    assert subprocess.run([str(executable)], check=False).returncode == 0


def test_fast_activations_measured_error(tmp_path, models):
    """The rational tanh and sigmoid against double-precision libm over [-12, 12] (2.4M points)."""
    sources = generate_sources(models["gru_forecast_2x12"], fast_activations=True)
    (tmp_path / "model.h").write_text(sources.files["model.h"])
    (tmp_path / "model.c").write_text(sources.files["model.c"])
    (tmp_path / "fast.c").write_text("typedef int fast_unused;\n")  # the harness includes model.c itself
    (tmp_path / "fast_test.c").write_text(
        '#include <math.h>\n#include <stdio.h>\n#include "model.c"\n'
        "int main(void) {\n  double et = 0, es = 0;\n"
        "  for (long i = -1200000; i <= 1200000; i++) {\n    const float x = (float)i * 1e-5f;\n"
        "    const double t = fabs((double)model_fast_tanh(x) - tanh((double)x));\n"
        "    const double s = fabs((double)model_fast_sigmoid(x) - 1.0 / (1.0 + exp(-(double)x)));\n"
        "    if (t > et) et = t;\n    if (s > es) es = s;\n  }\n"
        '  printf("%.3g %.3g\\n", et, es);\n  return 0;\n}\n'
    )
    flags = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-Wno-unused-function")
    executable = compile_host(tmp_path, "fast", flags=flags)
    tanh_error, sigmoid_error = (float(v) for v in subprocess.run(
        [str(executable)], capture_output=True, text=True, check=True).stdout.split())  # fmt: skip
    assert tanh_error < 1e-6 and sigmoid_error < 1e-6, (tanh_error, sigmoid_error)
    assert FAST_TANH_CLAMP < 8.0


def test_default_activations_measured_error(tmp_path):
    """The generated exp, sigmoid and tanh (no libm) against double precision over float32 itself (every
    4099th bit pattern, both signs, subnormals to infinities), the special values, and no libm call."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from c_activations import activation_errors

    torch.manual_seed(0)
    config = ModelConfig(
        cell="gru", input_kind="features", input_size=4, hidden_size=8, output_size=2, output_kind="values"
    )
    export_model(RecurrentModel(config).eval(), tmp_path / "m.onnx", chunk_steps=None)
    plain = generate_sources(tmp_path / "m.onnx").files["model.c"]
    assert "expf(" not in plain and "tanhf(" not in plain
    errors = activation_errors(tmp_path / "m.onnx", tmp_path, 4099)
    assert errors["exp"][0] <= 2e-7 and errors["sigmoid"][0] <= 2e-7 and errors["tanh"][0] <= 2e-7, errors
    assert errors["fast_sigmoid"][0] < 1e-6 and errors["fast_tanh"][0] < 1e-6, errors
    inf = float("inf")
    specials = errors["specials"]  # exp(inf, -inf, 89, -100), tanh(-inf), sigmoid(inf, -inf), tanh(-0), NaNs
    assert specials[:3] + specials[4:] == (inf, 0.0, inf, -1.0, 1.0, 0.0, -0.0, 1.0), specials
    assert specials[3] == pytest.approx(float(np.exp(-100.0)), rel=1e-4)  # a subnormal, not flushed
    assert str(specials[7]) == "-0.0"


def test_unsupported_op_is_refused_by_name(models, tmp_path):
    proto = onnx.load(str(models["gru_forecast_2x12"]))
    index = next(i for i, n in enumerate(proto.graph.node) if n.op_type == "Tanh")
    proto.graph.node[index].op_type = "Hardmax"
    path = tmp_path / "hardmax.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(
        ContractError, match=rf"op 'Hardmax' \(node {index}.*not supported by the C target; supported: .*Gemm"
    ):
        generate_sources(path)


def test_dynamic_int8_and_int4_files_are_refused_clearly(tmp_path):
    path = export_char(tmp_path / "dynamic.onnx", mode="int8", method="dynamic")
    with pytest.raises(ContractError, match=r"quantized int8 \(dynamic\).*--precision int8"):
        generate_sources(path)


def test_weights_int8_and_fp16_files_are_dequantized_at_generation(tmp_path):
    for mode, method in (("int8", "weights"), ("fp16", "auto")):
        path = export_char(tmp_path / f"{mode}.onnx", mode=mode, method=method)
        out = tmp_path / f"out_{mode}"
        report = deploy(path, "c", out)
        assert report.details["verified"] and report.details["max_abs_error"] < 1e-4
        with pytest.raises(ContractError, match="already quantized"):
            generate_sources(path, precision="int8")


# --- the deploy command --------------------------------------------------------------------------------


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_deploy_command_writes_and_verifies(models, tmp_path):
    result = run_cli(
        "deploy", models["lstm_tokens_1x16"], "--target", "c", "-o", tmp_path / "c", "--name", "char_lstm"
    )
    assert result.exit_code == 0, result.output
    assert "host self-test" in result.output and "RAM " in result.output
    assert (tmp_path / "c" / "char_lstm.h").is_file() and (tmp_path / "c" / "char_lstm_test.c").is_file()
    result = run_cli(
        "deploy", models["lstm_tokens_1x16"], "--target", "c", "-o", tmp_path / "u", "--no-verify", "--json"
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["details"]["verified"] is False
    assert any(c.startswith("NOT VERIFIED") for c in doc["checks"])


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--name", "1model"], "expected a C identifier"),
        (["--name", "int"], "C keyword"),
        (["--data", __file__], "quality gates are for --precision int8"),
        (["--precision", "int16"], "int16"),
    ],
)
def test_deploy_command_bad_options_exit_2(models, tmp_path, args, fragment):
    result = run_cli("deploy", models["lstm_tokens_1x16"], "--target", "c", "-o", tmp_path / "c", *args)
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output
    assert not (tmp_path / "c").exists()


def test_deploy_command_refuses_a_file_it_cannot_translate(tmp_path):
    path = export_char(tmp_path / "int4.onnx", mode="int4")
    result = run_cli("deploy", path, "--target", "c", "-o", tmp_path / "c")
    assert result.exit_code == 2 and "int4" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "c").exists()


def test_int8_metric_gate_with_data(tmp_path):
    path = export_char(tmp_path / "char.onnx", hidden_size=24)
    data = tmp_path / "text.txt"
    data.write_text(TEXT[:12_000], encoding="utf-8")
    report = deploy(path, "c", tmp_path / "c8", precision="int8", data=data)
    metric = report.details["quality"]["metric"]
    assert metric["name"] == "loss" and abs(metric["quantized"] - metric["float32"]) < 0.02
    assert any(c.startswith("int8 task metric: loss") for c in report.checks)
    with pytest.raises(QuantizationError, match="past the tolerance"):
        deploy(path, "c", tmp_path / "strict", precision="int8", data=data, tolerance=-1.0)
    assert not (tmp_path / "strict").exists()
    forced = deploy(path, "c", tmp_path / "forced", precision="int8", data=data, tolerance=-1.0, force=True)
    assert any(c.startswith("FORCED") for c in forced.checks) and forced.details["quality"]["forced"]


def test_without_a_compiler_nothing_is_written_unless_verification_is_skipped(models, tmp_path, monkeypatch):
    import edgernn.export.c.build as build

    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(InputError, match="no C compiler found.*Debian package gcc.*--no-verify"):
        deploy(models["lstm_tokens_1x16"], "c", tmp_path / "c")
    assert not (tmp_path / "c").exists()
    report = deploy(models["lstm_tokens_1x16"], "c", tmp_path / "u", skip_verify=True)
    assert report.checks[0].startswith("NOT VERIFIED") and report.details["verified"] is False
    assert (tmp_path / "u" / "model_test.c").is_file()


def test_vocabulary_outside_ascii_and_c_special_characters(tmp_path):
    vocabulary = ["a", "\u00e9", "?", "\n", '"', "\\", "\u65e5", " "]
    torch.manual_seed(4)
    config = ModelConfig(cell="gru", input_size=len(vocabulary), output_size=len(vocabulary), hidden_size=8)
    path = tmp_path / "utf8.onnx"
    export_model(RecurrentModel(config).eval(), path, vocabulary=vocabulary, chunk_steps=None, verify=False)
    out = tmp_path / "c"
    report = deploy(path, "c", out)
    assert report.details["verified"]
    assert '"\\303\\251"' in (out / "model.c").read_text()  # UTF-8 bytes as octal escapes
    library = build_shared_library(out, "model", tmp_path / "libmodel.so")
    assert list(NativeStepper(library).info.input.vocabulary) == vocabulary


def test_foreign_files_and_chunk_graphs_are_refused(foreign_model, tmp_path):
    with pytest.raises(ContractError, match="no edgernn metadata"):
        generate_sources(foreign_model.path)
    path = export_char(tmp_path / "char.onnx")
    with pytest.raises(ContractError, match="chunk graph"):
        generate_sources(tmp_path / "char.chunk.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ContractError, match="not an ONNX model"):
        generate_sources(tmp_path / "junk.onnx")
    with pytest.raises(InputError, match="expected an ONNX file"):
        generate_sources(tmp_path / "missing.onnx")
    assert generate_sources(path).info.cell == "gru"


def test_a_self_test_that_disagrees_fails(models, tmp_path):
    out, _ = _deployed_plain(models["rnn_tanh_features_1x12"], tmp_path)
    test = (out / "model_test.c").read_text()
    start = test.index("golden_y[CHECKED * MODEL_OUTPUT_SIZE] = {\n") + len(
        "golden_y[CHECKED * MODEL_OUTPUT_SIZE] = {\n"
    )
    end = test.index(",", start)
    (out / "model_test.c").write_text(test[:start] + "    1000.0f" + test[end:])  # the first golden y
    result = run_self_test(compile_host(out, "model"))
    assert not result.passed
    lines = result.output.strip().splitlines()
    assert lines[-1] == "FAIL" and lines[0].startswith("mismatch: y[0] at step 0")
    assert result.max_abs_error > 900


def _deployed_plain(model: Path, tmp_path: Path) -> tuple[Path, object]:
    out = tmp_path / "c"
    return out, deploy(model, "c", out)


def _zoo_model() -> onnx.ModelProto:
    """A hand-built contract graph (features 6, state h (1, 6)) through the strided paths: a Transpose that
    moves data, Slice with a step, Gather by a list of indices, Concat, Expand, a non-flat broadcast,
    ReduceMean-free LayerNorm over two axes, Where, Clip, Max/Min and a Softmax head."""
    from onnx import TensorProto, helper, numpy_helper

    from edgernn.runtime import contract
    from edgernn.runtime.contract import InputSpec, OutputSpec

    rng = np.random.default_rng(3)
    inits = {
        "shape_2x3": np.array([1, 2, 3], np.int64),
        "shape_6": np.array([1, 6], np.int64),
        "bias_3x1": rng.standard_normal((3, 1)).astype(np.float32),
        "w": (rng.standard_normal((6, 6)) * 0.5).astype(np.float32),
        "u": (rng.standard_normal((6, 6)) * 0.5).astype(np.float32),
        "starts": np.array([0], np.int64),
        "ends": np.array([6], np.int64),
        "axes": np.array([1], np.int64),
        "steps": np.array([2], np.int64),
        "idx": np.array([2, 0, 1], np.int64),
        "expand": np.array([1, 2, 3], np.int64),
        "ln_scale": rng.standard_normal((2, 3)).astype(np.float32),
        "zero": np.array(0.0, np.float32),
        "h_shape": np.array([-1, 1, 6], np.int64),
    }
    n = helper.make_node
    nodes = [
        n("Reshape", ["x", "shape_2x3"], ["x23"]),  # (1, 2, 3)
        n("Transpose", ["x23"], ["x32"], perm=[0, 2, 1]),  # (1, 3, 2): moves data
        n("Add", ["x32", "bias_3x1"], ["b"]),  # (1, 3, 2) + (3, 1): broadcast, not flat
        n("Reshape", ["b", "shape_6"], ["b_flat_first"], allowzero=0),
        n("Slice", ["x", "starts", "ends", "axes", "steps"], ["x_odd"]),  # (1, 3) every other feature
        n("Gather", ["x", "idx"], ["x_pick"], axis=1),  # (1, 3) in the order 2, 0, 1
        n("Concat", ["x_odd", "x_pick"], ["x_cat"], axis=1),  # (1, 6)
        n("Expand", ["x_odd", "expand"], ["x_exp"]),  # (1, 2, 3)
        n("LayerNormalization", ["x_exp", "ln_scale"], ["x_ln"], axis=1, epsilon=1e-5),  # over (2, 3)
        n("Reshape", ["x_ln", "shape_6"], ["x_ln6"]),
        n("Max", ["x_cat", "x_ln6"], ["mx"]),
        n("Min", ["mx", "b_flat_first"], ["mn"]),
        n("Reshape", ["h", "shape_6"], ["h6"]),
        n("MatMul", ["mn", "w"], ["p"]),
        n("MatMul", ["h6", "u"], ["q"]),
        n("Add", ["p", "q"], ["pre"]),
        n("Tanh", ["pre"], ["hn"]),
        n("Less", ["hn", "zero"], ["neg"]),
        n("Clip", ["hn", "zero", ""], ["pos"]),
        n("Where", ["neg", "hn", "pos"], ["hw"]),
        n("Reshape", ["hw", "h_shape"], ["h_next"]),
        n("Softmax", ["hw"], ["y"], axis=-1),
    ]
    info = contract.make_info(
        cell="rnn_tanh", num_layers=1, hidden_size=6,
        input=InputSpec(kind="features", size=6, dtype="float32"), output=OutputSpec(kind="values", size=6),
        edgernn_version="test",
    )  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "zoo",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", 1, 6]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 6]),
            helper.make_tensor_value_info("h_next", TensorProto.FLOAT, ["batch", 1, 6]),
        ],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", contract.OPSET)])
    proto.ir_version = contract.IR_VERSION
    helper.set_model_props(proto, {contract.METADATA_KEY: info.to_json()})
    return proto


def test_strided_copies_and_broadcasts_match_the_stepper(tmp_path):
    path = tmp_path / "zoo.onnx"
    onnx.save(_zoo_model(), str(path))
    report = deploy(path, "c", tmp_path / "c")
    assert report.details["verified"] and report.details["max_abs_error"] < 1e-5
    source = (tmp_path / "c" / "model.c").read_text()
    assert "for (int i1 = 0; i1 < 3; i1++) for (int i2 = 0; i2 < 2; i2++)" in source  # the non-flat Add


def test_int8_self_test_tolerance_follows_the_references_own_sensitivity(models):
    """The int8 self-test allows 2% of the largest |y|, or twice how far the reference itself moves when its
    state is nudged by one rounding after every step, up to 20%: a flip that a sensitive model carries for
    hundreds of steps passes, an error of the order of the outputs does not."""
    from edgernn.export.c.selftest import ATOL, record_golden, tolerance_for
    from edgernn.runtime.tolerance import output_scale

    sources = generate_sources(models["rnn_tanh_features_1x12"], precision="int8")
    golden = record_golden(sources, steps=200)
    outputs = golden.ys.shape[1]
    assert golden.sensitivity.shape == (outputs,) and np.isfinite(golden.sensitivity).all()
    assert (golden.sensitivity >= 0).all()
    scale = np.broadcast_to(np.asarray(output_scale(sources.info), np.float32), (outputs,))
    largest = float(np.abs(golden.ys / scale).max())
    golden.sensitivity = np.zeros(outputs, np.float32)
    assert tolerance_for(sources, golden) == pytest.approx(ATOL + 0.02 * largest)
    golden.sensitivity = (0.05 * largest * scale).astype(np.float32)
    assert tolerance_for(sources, golden) == pytest.approx(ATOL + 0.1 * largest, rel=1e-5)
    golden.sensitivity = (3.0 * largest * scale).astype(np.float32)
    assert tolerance_for(sources, golden) == pytest.approx(ATOL + 0.2 * largest, rel=1e-5)
    plain = generate_sources(models["rnn_tanh_features_1x12"])
    assert tolerance_for(plain, record_golden(plain, steps=20)) == ATOL
