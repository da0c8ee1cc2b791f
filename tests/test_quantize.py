"""Quantized exports: really smaller, really quantized (the recurrence too), checked against float32 on real
text (one step, a 3000-step closed loop, the validation loss), refused past the tolerance, run unchanged
by the stepper, and described by the metadata and by ``edgernn inspect``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

import edgernn.export.quality as quality
import edgernn.export.quantize as quantize
from edgernn.cli import cli
from edgernn.data import build_vocabulary, encode, split_train_validation
from edgernn.export import EvaluationData, QuantizeConfig, build_info, build_step_model, export_model
from edgernn.models import ModelConfig, RecurrentModel
from edgernn.report import describe_model, format_description
from edgernn.runtime import Stepper, contract
from edgernn.runtime.errors import ContractError, InputError, QuantizationError

SHAKESPEARE = Path(__file__).parents[1] / "examples" / "data" / "tinyshakespeare.txt"
CELLS = ["gru", "lstm", "rnn_tanh"]
TEXT = SHAKESPEARE.read_text(encoding="utf-8")[:24_000]
VOCAB = build_vocabulary(TEXT)


@pytest.fixture(scope="module")
def data() -> EvaluationData:
    """Real text: the first 90% calibrates, the last 10% (next character) judges."""
    train, validation = split_train_validation(encode(TEXT, VOCAB))
    return EvaluationData(
        train, "loss", "tinyshakespeare[:24000]", inputs=validation[:-1], targets=validation[1:]
    )


def char_model(cell: str, hidden_size: int = 64, seed: int = 0) -> RecurrentModel:
    torch.manual_seed(seed)
    config = ModelConfig(
        cell=cell, input_size=len(VOCAB), output_size=len(VOCAB), hidden_size=hidden_size, embedding_size=32
    )
    return RecurrentModel(config).eval()


def export(tmp_path: Path, cell: str, mode: str, data: EvaluationData, hidden_size: int = 64, **options):
    path = tmp_path / f"{cell}-{mode}.onnx"
    config = QuantizeConfig(mode=mode, **options)
    model = char_model(cell, hidden_size)
    return export_model(model, path, vocabulary=VOCAB, verify=False, quantize=config, data=data)


def initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def consumers(path: Path, tensor: str) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node if tensor in node.input]


# --- int8: smaller, really quantized, bounded, described, steppable ------------------------------------


def folds_dequantize(stepper: Stepper) -> bool:
    try:
        return (
            stepper.session.get_session_options().get_session_config_entry("session.disable_quant_qdq") == "1"
        )
    except RuntimeError:  # the key was never set
        return False


def state_consumers(path: Path, state: str = "h") -> list[str]:
    """What reads layer 0's slice of a state input (a quantized file renames the tensors in between)."""
    nodes = onnx.load(str(path)).graph.node
    flat = next(n.output[0] for n in nodes if n.op_type == "Reshape" and state in n.input)
    sliced = next((n.output[0] for n in nodes if n.op_type == "Split" and flat in n.input), flat)
    return [node.op_type for node in nodes if sliced in node.input]


@pytest.mark.parametrize("cell", CELLS)
def test_dynamic_int8_quantizes_the_recurrence_and_computes_in_int8(tmp_path, cell, data):
    report = export(tmp_path, cell, "int8", data, hidden_size=128, int8_method="dynamic")
    assert report.float32_size_bytes / report.size_bytes >= 3.0, (
        report.float32_size_bytes,
        report.size_bytes,
    )
    weights = initializers(report.path)
    assert "l0.hh.weight_t" not in weights  # the float32 recurrent matrix is gone...
    assert weights["l0.hh.weight_t_quantized"].dtype == np.int8  # ... replaced by int8
    assert weights["l0.hh.weight_t_quantized"].shape == (128, 128 * {"gru": 3, "lstm": 4}.get(cell, 1))
    assert consumers(report.path, "l0.hh.weight_t_quantized") == ["MatMulInteger"]
    assert state_consumers(report.path) == ["DynamicQuantizeLinear"] + (["Sub"] if cell == "gru" else [])
    assert (
        weights["embedding.weight_quantized"].dtype == np.uint8
        and weights["head.weight_t_quantized"].dtype == np.int8
    )
    assert not [n for n, a in weights.items() if a.dtype == np.float32 and a.ndim == 2]
    assert report.quantization["method"] == "dynamic"


@pytest.mark.parametrize("cell", CELLS)
def test_weight_int8_stores_every_weight_as_int8_and_the_stepper_folds_it_at_load(tmp_path, cell, data):
    report = export(tmp_path, cell, "int8", data, hidden_size=128, int8_method="weights")
    assert report.float32_size_bytes / report.size_bytes >= 3.5
    weights = initializers(report.path)
    assert not [n for n, a in weights.items() if a.dtype == np.float32 and a.size > 1]  # biases too
    assert weights["l0.hh.weight_t_quantized"].dtype == np.int8
    assert consumers(report.path, "l0.hh.weight_t_quantized") == ["DequantizeLinear"]
    assert "l0.hh.weight_t_zero_point" not in weights  # symmetric: DequantizeLinear's default zero point
    assert weights["embedding.weight_zero_point"].dtype == np.uint8
    graph = onnx.load(str(report.path)).graph
    assert not {"MatMulInteger", "DynamicQuantizeLinear", "QuantizeLinear"} & {n.op_type for n in graph.node}
    assert all(not n.name for n in graph.node)  # a quantized file carries no node names
    assert report.quantization["method"] == "weights" and report.quantization["float32"] == []
    stepper = Stepper(report.path)
    assert folds_dequantize(stepper)  # onnxruntime folds the weights to float32 once, at load
    model = char_model(cell, 128)
    float32 = Stepper(build_step_model(model, build_info(model, VOCAB)).SerializeToString())
    assert not folds_dequantize(float32)
    tokens = encode(TEXT[:200], VOCAB)
    ys, ys_float = stepper.run(tokens), float32.run(tokens)
    assert np.abs(ys - ys_float).max() < 0.1 * np.abs(ys_float).max()  # int8 weights, float arithmetic


def test_auto_int8_stores_small_models_and_computes_large_ones_in_int8(data):
    chosen = {}
    for hidden in (64, 256):  # 0.1 MB and 1.6 MB of float32 weights, on either side of AUTO_DYNAMIC_BYTES
        model = char_model("gru", hidden)
        info = build_info(model, VOCAB)
        _, summary = quantize.quantize_step_model(
            build_step_model(model, info), info, QuantizeConfig("int8"), data.calibration
        )
        chosen[hidden] = summary["method"]
    assert chosen == {64: "weights", 256: "dynamic"}


@pytest.mark.parametrize("cell", CELLS)
def test_int8_checks_are_recorded_and_the_stepper_runs_it_unchanged(tmp_path, cell, data):
    report = export(tmp_path, cell, "int8", data)
    q = Stepper(report.path).info.quantization
    assert q["mode"] == "int8" and q["method"] == "weights" and q["state_dtype"] == "float32"
    matrices = {"embedding.weight", "l0.ih.weight_t", "l0.hh.weight_t", "head.weight_t"}
    biases = {"l0.ih.bias", "head.bias"} | ({"l0.hh.bias"} if cell == "gru" else set())
    assert set(q["quantized"]) == matrices | biases and q["float32"] == []
    assert ("cell_state" in q) == (cell == "lstm")
    loop = q["checks"]["closed_loop"]
    assert loop["steps"] >= 3000
    for name in ["y", *(s.output for s in Stepper(report.path).info.states)]:
        start, end = loop[name]
        assert 0 < end <= quality.DRIFT_GROWTH_LIMIT * start + quality.DRIFT_FLOOR
    metric = q["checks"]["metric"]
    assert metric["name"] == "loss" and abs(metric["quantized"] - metric["float32"]) < 0.02
    assert metric["tolerance"] == 0.02
    assert q["checks"]["forced"] is False and "failures" not in q["checks"]

    stepper = Stepper(report.path)
    y = stepper.step(VOCAB.index("a"))
    assert y.shape == (len(VOCAB),) and y.dtype == np.float32
    assert all(v.dtype == np.float32 and v.shape == (1, 1, 64) for v in stepper.state.values())
    ys = stepper.new_stream(batch_size=3).run(np.zeros((3, 5), np.int64))
    assert ys.shape == (3, 5, len(VOCAB)) and np.isfinite(ys).all()


def test_static_int8_calibrates_on_states_the_model_reaches(tmp_path, data):
    report = export(
        tmp_path, "lstm", "int8", data, int8_method="static", calibration_streams=4, calibration_steps=32
    )
    q = report.quantization
    calibration = q["calibration"]
    assert q["method"] == "static" and calibration["samples"] == 4 * 32
    low, high = calibration["state_ranges"]["c"]
    assert low < -0.01 and high > 0.01  # real states, not zeros
    assert "QuantizeLinear" in {node.op_type for node in onnx.load(str(report.path)).graph.node}
    assert Stepper(report.path).step(3).shape == (len(VOCAB),)


def test_the_lstm_cell_state_check_catches_a_quantized_cell_state(data):
    model = char_model("lstm")
    info = build_info(model, VOCAB)
    proto = build_step_model(model, info)
    good, _ = quantize.quantize_step_model(proto, info, QuantizeConfig(), data.calibration)
    assert quantize._quantized_cell_state(good, info) == []
    reader = quantize.StateAwareReader(proto, info, data.calibration, streams=2, steps=8)
    everything = quantize._through_file(
        quantize.quantize_static,
        quantize._copy(proto),
        calibration_data_reader=reader,
        op_types_to_quantize=["MatMul", "Mul", "Add"],
    )
    assert quantize._quantized_cell_state(everything, info)  # Mul(f, c) quantized: caught


# --- fp16 and int4 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fp16", "int4"])
@pytest.mark.parametrize("cell", CELLS)
def test_fp16_and_int4_export_and_step(tmp_path, cell, mode, data):
    report = export(tmp_path, cell, mode, data, force=True)  # the gate is tested below; here: it runs
    assert report.size_bytes < report.float32_size_bytes / (
        1.6 if mode == "fp16" else 3.5
    )  # small: graph weighs
    weights = initializers(report.path)
    if mode == "fp16":
        assert weights["l0.hh.weight_t_fp16"].dtype == np.float16 and "l0.hh.weight_t" not in weights
    else:
        assert consumers(report.path, "l0.hh.weight_t_Q4") == ["MatMulNBits"]
    stepper = Stepper(report.path)
    assert stepper.info.quantization["mode"] == mode
    ys = stepper.run(np.arange(8) % len(VOCAB))
    assert ys.shape == (8, len(VOCAB)) and ys.dtype == np.float32 and np.isfinite(ys).all()
    metric = report.quantization["checks"]["metric"]
    assert abs(metric["quantized"] - metric["float32"]) < 0.1


# --- the gate ------------------------------------------------------------------------------------------


def test_metric_gate_refuses_with_the_numbers_and_writes_nothing(tmp_path, data):
    path = tmp_path / "gru-int8.onnx"
    with pytest.raises(QuantizationError) as err:
        export(tmp_path, "gru", "int8", data, tolerance=-1.0)
    message = str(err.value)
    assert "metric: loss" in message and "float32" in message and "tolerance -1.0000" in message
    assert "--force" in message and err.value.forceable
    assert not path.exists() and not list(tmp_path.iterdir())


def test_refusal_leaves_an_existing_file_as_it_was(tmp_path, data):
    path = tmp_path / "gru-int8.onnx"
    path.write_bytes(b"previous model")
    with pytest.raises(QuantizationError):
        export(tmp_path, "gru", "int8", data, tolerance=-1.0)
    assert path.read_bytes() == b"previous model"


def test_force_writes_it_and_records_what_failed(tmp_path, data):
    report = export(tmp_path, "gru", "int8", data, tolerance=-1.0, force=True)
    checks = Stepper(report.path).info.quantization["checks"]
    assert checks["forced"] is True
    assert len(checks["failures"]) == 1 and checks["failures"][0].startswith("metric: loss")


def test_drift_check_fails_an_error_that_grows(tmp_path, data, monkeypatch):
    monkeypatch.setattr(quality, "DRIFT_GROWTH_LIMIT", 0.5)  # any end error now counts as growth
    with pytest.raises(QuantizationError) as err:
        export(tmp_path, "rnn_tanh", "int8", data)
    assert "closed loop: y error grows from" in str(err.value)


def test_a_weight_left_in_float32_is_refused_even_when_forced(tmp_path, data, monkeypatch):
    def no_op(proto, info, config, calibration):
        return proto, {"method": "none"}

    monkeypatch.setattr(quantize, "_int8", no_op)
    with pytest.raises(QuantizationError) as err:
        export(tmp_path, "gru", "int8", data, force=True)
    assert "'l0.hh.weight_t' is still float32" in str(err.value) and "did not shrink" in str(err.value)
    assert not err.value.forceable and not list(tmp_path.iterdir())


def test_quantized_export_needs_real_data(tmp_path):
    with pytest.raises(InputError, match="real data"):
        export_model(char_model("gru"), tmp_path / "m.onnx", verify=False, quantize=QuantizeConfig("int8"))


def test_classifier_metric_is_accuracy_over_sequences(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(cell="gru", input_kind="features", input_size=3, hidden_size=64, output_size=4)
    rng = np.random.default_rng(0)
    cases = tuple((rng.standard_normal((12, 3)).astype(np.float32), int(rng.integers(4))) for _ in range(40))
    data = EvaluationData(
        rng.standard_normal((500, 3)).astype(np.float32), "accuracy", "random", sequences=cases
    )
    report = export_model(
        RecurrentModel(config), tmp_path / "c.onnx", verify=False, quantize=QuantizeConfig(), data=data
    )
    metric = report.quantization["checks"]["metric"]
    assert metric["name"] == "accuracy" and metric["unit"] == "%" and metric["tolerance"] == -1.0
    assert 0 <= metric["float32"] <= 100


def test_config_refuses_unknown_modes():
    with pytest.raises(InputError, match="mode must be one of none, int8, fp16, int4"):
        QuantizeConfig(mode="int3")


# --- metadata contract ---------------------------------------------------------------------------------


def test_quantization_metadata_is_validated_and_float32_models_do_not_carry_it():
    info = build_info(char_model("gru"), VOCAB)
    assert "quantization" not in json.loads(info.to_json())
    doc = {"mode": "int8", "state_dtype": "float32", "quantized": ["l0.hh.weight_t"]}
    assert contract.parse_info(replace(info, quantization=doc).to_json()).quantization == doc
    for bad, where in (
        ({"mode": "int3", "state_dtype": "float32"}, "quantization.mode"),
        ({"mode": "int8", "state_dtype": "float16"}, "quantization.state_dtype"),
    ):
        with pytest.raises(ContractError, match=where):
            contract.parse_info(replace(info, quantization=bad).to_json())


# --- inspect and the command line ----------------------------------------------------------------------


def test_inspect_shows_the_precision_of_every_weight(tmp_path, data):
    for mode, precision in (("int8", "int8"), ("int4", "int4 (packed, blocks of 16)")):
        report = export(tmp_path, "gru", mode, data, force=True)
        doc = describe_model(report.path)
        rows = {w["name"]: w for w in doc["weights"]}
        suffix = "_quantized" if mode == "int8" else "_Q4"
        assert rows[f"l0.hh.weight_t{suffix}"]["precision"] == precision
        assert doc["parameters"] == sum(p.numel() for p in char_model("gru").parameters())
        assert any(w["role"] == "scale" for w in doc["weights"])
        text = format_description(doc)
        assert f"quantized: {mode}" in text and precision in text and "float32 scale" in text


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("quantize_cli")
    text = root / "small.txt"
    text.write_text(TEXT, encoding="utf-8")
    args = ["train", str(text), "-o", str(root / "run"), "--steps", "20", "--hidden-size", "64", "--embedding-size", "16",
            "--batch-size", "8", "--seq-len", "32", "--eval-every", "20", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return root / "run"


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_quantize_int8(run_dir, tmp_path):
    result = run_cli("export", run_dir, "-o", tmp_path / "q.onnx", "--quantize", "int8", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["quantization"]["mode"] == "int8" and doc["size_bytes"] * 3 < doc["float32_size_bytes"]
    text = run_cli("inspect", tmp_path / "q.onnx").stdout
    assert "quantized: int8 (weights)" in text and "int8 " in text


def test_cli_refuses_past_the_tolerance_then_force_writes_it(run_dir, tmp_path):
    path = tmp_path / "q.onnx"
    result = run_cli("export", run_dir, "-o", path, "--quantize", "int8", "--tolerance", "-1")
    assert result.exit_code == 1 and "metric: loss" in result.stderr and "tolerance -1.0000" in result.stderr
    assert not path.exists()
    result = run_cli("export", run_dir, "-o", path, "--quantize", "int8", "--tolerance", "-1", "--force")
    assert result.exit_code == 0, result.output
    assert path.exists() and "FORCED past: metric" in result.stdout and "warning" in result.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--quantize", "int3"], "'int3' is not one of"),
        (["--force"], "--quantize"),
        (["--int8-method", "x"], "'x'"),
    ],
)
def test_cli_bad_quantize_arguments_are_one_line_usage_errors(run_dir, tmp_path, args, fragment):
    result = run_cli("export", run_dir, "-o", tmp_path / "q.onnx", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0]
    assert not (tmp_path / "q.onnx").exists()


def test_cli_bench_measures_float32_and_int8_side_by_side(run_dir, tmp_path):
    for args in ([], ["--quantize", "int8"]):
        result = run_cli("export", run_dir, "-o", tmp_path / f"m{len(args)}.onnx", *args)
        assert result.exit_code == 0, result.output
    result = run_cli("bench", tmp_path / "m0.onnx", tmp_path / "m2.onnx", "--steps", "100", "--warmup", "10")
    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()[2:]
    assert [row.split()[0] for row in rows] == ["m0.onnx", "m2.onnx"] and rows[0].endswith("1.00x")
    doc = json.loads(
        run_cli("bench", tmp_path / "m0.onnx", tmp_path / "m2.onnx", "--steps", "50", "--json").stdout
    )
    sizes = [m["size_bytes"] for m in doc["models"]]
    assert sizes[1] * 3 < sizes[0] and all(m["stepper"]["steps"] == 50 for m in doc["models"])
