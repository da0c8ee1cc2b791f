"""The integer precision's reference: its kernels' arithmetic, the largest table error over every input, the
calibration from real data and the quality gates against float32, every cell, tokens and features."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from edge_models import TEXT, VOCAB, export_byo, text_data

from edgernn.export import export_model, integer_calibration
from edgernn.export.c.generate import read_info
from edgernn.models import ModelConfig, RecurrentModel
from edgernn.runtime import contract
from edgernn.runtime import integer_ops as ops
from edgernn.runtime.errors import ContractError
from edgernn.runtime.integer_ref import IntegerStepper, quantize_multiplier, quantize_product


def test_tables_largest_error_over_every_int16_input():
    x = np.arange(-32768, 32768)
    real = x / 4096.0
    sigmoid_error = np.abs(ops.q_sigmoid(x) / 32768.0 - 1.0 / (1.0 + np.exp(-real))).max()
    tanh_error = np.abs(ops.q_tanh(x) / 32768.0 - np.tanh(real)).max()
    assert 3.7e-5 < sigmoid_error <= ops.SIGMOID_MAX_ERROR
    assert 1.1e-4 < tanh_error <= ops.TANH_MAX_ERROR
    assert ops.q_sigmoid(np.array([0]))[0] == 16384 and ops.q_tanh(np.array([0]))[0] == 0
    assert np.all(np.diff(ops.q_sigmoid(x)) >= 0) and np.all(np.diff(ops.q_tanh(x)) >= 0)
    assert ops.q_sigmoid(x).min() >= 0 and ops.q_sigmoid(x).max() <= 32767
    assert ops.q_tanh(x).min() >= -32767 and ops.q_tanh(x).max() <= 32767


def test_rounding_shift_rounds_half_up_and_requantize_saturates():
    assert ops.q_round_shift(np.array([3, 2, 1, -1, -2, -3]), 1).tolist() == [2, 1, 1, 0, -1, -1]
    assert ops.q_round_shift(np.array([-49152, 49152]), 15).tolist() == [-1, 2]
    multiplier, shift = quantize_multiplier(np.array([1.0]))
    assert ops.q_requantize(np.array([2**31 - 1]), multiplier, shift)[0] == 2**30 - 1
    assert ops.q_requantize(np.array([-(2**31)]), multiplier, shift)[0] == -(2**30)


def test_integer_multipliers_reproduce_their_ratios():
    ratios = np.array([1e-12, 3.7e-9, 2.4e-4, 0.5, 0.999999, 1.0, 7.25, 1e5])
    multiplier, shift = quantize_multiplier(ratios)
    assert np.all((shift >= 1) & (shift <= 62)) and np.all(multiplier < 2**31)
    assert np.all(multiplier[1:] >= 2**30)
    np.testing.assert_allclose(multiplier / 2.0**shift, ratios, rtol=1e-9, atol=2.0**-63)
    with pytest.raises(ContractError, match="past what an int32 multiplier holds"):
        quantize_multiplier(np.array([2.0**31]))


def _char(path: Path, cell: str, layers: int = 2) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(
        cell=cell, input_size=len(VOCAB), output_size=len(VOCAB), hidden_size=24, num_layers=layers,
        embedding_size=16,
    )  # fmt: skip
    export_model(RecurrentModel(config).eval(), path, vocabulary=VOCAB, extra_metadata={"task": "charlm"},
                 chunk_steps=None)  # fmt: skip
    return path


def _sensor(path: Path, cell: str) -> tuple[Path, np.ndarray]:
    torch.manual_seed(3)
    config = ModelConfig(
        cell=cell, input_kind="features", input_size=3, hidden_size=16, num_layers=2, output_size=2,
        output_kind="values", input_mean=(20.0, -3.0, 500.0), input_std=(4.0, 0.5, 80.0),
        output_mean=(1.0, -2.0), output_std=(3.0, 0.2),
    )  # fmt: skip
    export_model(RecurrentModel(config).eval(), path, chunk_steps=None)
    t = np.arange(3000)[:, None]
    series = np.array([20.0, -3.0, 500.0]) + np.array([4.0, 0.5, 80.0]) * np.sin(
        t / np.array([17.0, 5.0, 41.0])
    )
    return path, series.astype(np.float32)


def _integer(path: Path, calibration: np.ndarray):
    proto = onnx.load(path)
    info = read_info(proto)
    weights = integer_calibration.float_parameters(proto, info)
    ranges = integer_calibration.calibrate(path.read_bytes(), info, calibration)
    return info, integer_calibration.integer_model(weights, ranges, info)


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn_tanh", "rnn_relu"])
def test_every_cell_passes_the_gates_on_features_with_normalisation(tmp_path, cell):
    path, series = _sensor(tmp_path / "sensor.onnx", cell)
    info, model = _integer(path, series[:2000])
    report = integer_calibration.check_integer(path.read_bytes(), model, info, series[2000:], None)
    assert not report.failures and not report.fatal
    assert report.one_step["y_relative"] < 0.02
    assert report.closed_loop["y"]["end"] < 0.02
    if cell == "lstm":
        assert all(0 <= layer.c_frac <= 15 for layer in model.layers)
    for layer in model.layers:
        assert layer.ih.weight.min() >= -127 and layer.ih.weight.max() <= 127
        assert np.all(layer.ih.multiplier < 2**31) and np.all(layer.ih.shift >= 1)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_char_model_within_the_metric_gate_on_real_text(tmp_path, cell):
    path = _char(tmp_path / "char.onnx", cell)
    data = text_data()
    info, model = _integer(path, data.calibration)
    short = type(data)(
        data.calibration, "loss", data.source, inputs=data.inputs[:1500], targets=data.targets[:1500]
    )
    report = integer_calibration.check_integer(path.read_bytes(), model, info, data.series()[:2000], short)
    metric = report.metric
    assert metric["name"] == "loss" and metric["tolerance"] == 0.05
    assert abs(metric["quantized"] - metric["float32"]) < 0.05 and not report.failures


def test_a_strict_tolerance_names_the_failed_gate(tmp_path):
    path = _char(tmp_path / "char.onnx", "gru", layers=1)
    data = text_data()
    info, model = _integer(path, data.calibration)
    short = type(data)(
        data.calibration, "loss", data.source, inputs=data.inputs[:500], targets=data.targets[:500]
    )
    report = integer_calibration.check_integer(
        path.read_bytes(), model, info, data.series()[:500], short, tolerance=-1.0
    )
    assert (
        report.failures
        and report.failures[0].startswith("metric: loss")
        and "past the tolerance" in report.failures[0]
    )


def test_the_stream_api_quantizes_at_its_edges(tmp_path):
    path = _char(tmp_path / "char.onnx", "lstm", layers=1)
    info, model = _integer(path, text_data().calibration)
    stream = IntegerStepper(model, info).new_stream()
    ys = stream.run(np.array([1, 2, 3]))
    assert ys.shape == (3, len(VOCAB)) and ys.dtype == np.float32
    state = stream.state
    assert set(state) == {"h", "c"} and state["h"].shape == (1, 1, 24)
    other = IntegerStepper(model, info).new_stream()
    other.state = state
    assert [np.array_equal(a, b) for a, b in zip(other.q_state, stream.q_state, strict=True)] == [True, True]
    assert np.array_equal(other.step(4), stream.step(4))


def test_bring_your_own_graphs_are_refused_by_name(tmp_path):
    path = export_byo(tmp_path / "byo.onnx")
    proto = onnx.load(path)
    with pytest.raises(ContractError, match="initializer 'l0.ih.weight_t'"):
        integer_calibration.float_parameters(proto, read_info(proto))


def test_a_keyword_models_front_end_is_refused_by_name(tmp_path):
    path = _char(tmp_path / "char.onnx", "gru", layers=1)
    proto = onnx.load(path)
    info = read_info(proto)
    info.extra["front_end"] = {"kind": "log_mel"}  # what a keyword model's metadata carries
    with pytest.raises(ContractError, match="keyword model's audio front end .* float32 or int8"):
        integer_calibration.float_parameters(proto, info)


def test_a_graph_that_is_not_the_cell_its_weights_name_is_refused(tmp_path):
    path = _char(tmp_path / "char.onnx", "gru", layers=1)
    proto = onnx.load(path)
    for node in proto.graph.node:
        if node.op_type == "Tanh":
            node.op_type = "Sigmoid"
    for prop in proto.metadata_props:  # an edited graph: its checksum no longer describes it
        if prop.key == contract.METADATA_KEY:
            prop.value = contract.unsealed(contract.parse_info(prop.value)).to_json()
    with pytest.raises(ContractError, match="computes something else"):
        integer_calibration.float_parameters(proto, read_info(proto))


def test_an_accumulator_that_could_overflow_is_refused():
    weight = np.full((2, 600), 50.0)
    with pytest.raises(ContractError, match="int32 accumulator"):
        quantize_product(weight, np.zeros(2), 2.0**-12, "layer 0's input product")


def test_the_reference_imports_neither_torch_nor_onnx():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
        "import edgernn.runtime.integer_ref, edgernn.runtime.integer_ops\nprint('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
    assert TEXT  # the shared text is the real one
