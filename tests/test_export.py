"""Export: the graph follows the contract, matches PyTorch through the stepper, and refuses to lie."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import edgernn.export.exporter as exporter
from edgernn.export import build_info, build_step_model, export_model
from edgernn.models import ModelConfig, RecurrentModel
from edgernn.runtime import Stepper, contract
from edgernn.runtime.errors import InputError, ParityError

CELLS = ["gru", "lstm", "rnn_tanh", "rnn_relu"]
VOCAB = [chr(ord("a") + i) for i in range(11)]


def make_model(cell: str, num_layers: int, input_kind: str, seed: int = 0) -> RecurrentModel:
    torch.manual_seed(seed)
    if input_kind == "tokens":
        config = ModelConfig(
            cell=cell,
            input_kind="tokens",
            input_size=len(VOCAB),
            hidden_size=24,
            num_layers=num_layers,
            output_size=len(VOCAB),
            embedding_size=8,
        )
    else:
        config = ModelConfig(
            cell=cell, input_kind="features", input_size=5, hidden_size=24, num_layers=num_layers, output_size=2, output_kind="values",
            input_mean=(1.0, -2.0, 0.5, 10.0, 0.0), input_std=(0.5, 2.0, 1.0, 4.0, 1.0), output_mean=(100.0, -3.0), output_std=(20.0, 0.5),
        )  # fmt: skip
    return RecurrentModel(config).eval()


def random_inputs(model: RecurrentModel, batch: int, steps: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    config = model.config
    if config.input_kind == "tokens":
        return rng.integers(0, config.input_size, size=(batch, steps))
    return (rng.standard_normal((batch, steps, config.input_size)) * 3 + 1).astype(np.float32)


@pytest.mark.parametrize("input_kind", ["tokens", "features"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_export_matches_pytorch_through_the_stepper(tmp_path, cell, num_layers, input_kind):
    model = make_model(cell, num_layers, input_kind)
    path = tmp_path / "model.onnx"
    report = export_model(model, path, vocabulary=VOCAB if input_kind == "tokens" else None)
    assert path.stat().st_size == report.size_bytes
    assert set(report.parity.errors) == {"one_step", "closed_loop", "after_reset"}
    assert report.parity.max_error() < contract.CLOSED_LOOP_ATOL

    stepper = Stepper(path)
    for batch in (1, 3):
        xs = random_inputs(model, batch, 40)
        with torch.no_grad():
            want, want_state = model(torch.from_numpy(xs))
        stream = stepper.new_stream(batch_size=batch)
        got = np.stack([stream.step(xs[:, t]) for t in range(xs.shape[1])], axis=1)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-4)
        for spec, tensor in zip(stepper.info.states, want_state, strict=True):
            np.testing.assert_allclose(stream.state[spec.input], tensor.numpy(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", CELLS)
def test_graph_is_an_unrolled_cell_within_edge_limits(cell):
    model = make_model(cell, 2, "tokens")
    proto = build_step_model(model, build_info(model, VOCAB))
    ops = {node.op_type for node in proto.graph.node}
    assert not ops & {"GRU", "LSTM", "RNN", "If", "Loop", "Scan"}
    assert "MatMul" in ops
    assert proto.ir_version <= 10
    assert all(o.version <= 18 for o in proto.opset_import)
    names_in = [i.name for i in proto.graph.input]
    names_out = [o.name for o in proto.graph.output]
    states = contract.state_names(cell)
    assert names_in == ["x", *(i for i, _ in states)]
    assert names_out == ["y", *(o for _, o in states)]
    for value in [*proto.graph.input[1:], *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch"  # batch first and dynamic, states included
        assert all(d.dim_value > 0 for d in dims[1:])


def test_metadata_describes_the_model():
    model = make_model("lstm", 2, "features")
    proto = build_step_model(model, build_info(model))
    props = {p.key: p.value for p in proto.metadata_props}
    info = contract.parse_info(props[contract.METADATA_KEY])
    assert (info.cell, info.num_layers, info.hidden_size) == ("lstm", 2, 24)
    assert info.input.kind == "features" and info.input.size == 5
    assert info.input.mean == model.config.input_mean and info.input.std == model.config.input_std
    assert info.output.kind == "values" and info.output.mean == (100.0, -3.0)
    assert info.state_map == {"h": "h_next", "c": "c_next"}
    assert all(s.shape == (2, 24) and s.initial == 0.0 for s in info.states)
    assert info.opset == contract.OPSET and info.schema_version == contract.SCHEMA_VERSION


def _corrupting(build):
    def corrupt(model, info):
        proto = build(model, info)
        init = next(i for i in proto.graph.initializer if i.name == "l0.hh.weight_t")
        weights = numpy_helper.to_array(init).copy()
        weights += 0.05
        init.CopyFrom(numpy_helper.from_array(weights, init.name))
        return proto

    return corrupt


def test_failed_parity_raises_every_mismatch_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(exporter, "build_step_model", _corrupting(exporter.build_step_model))
    path = tmp_path / "model.onnx"
    with pytest.raises(ParityError) as caught:
        export_model(make_model("gru", 1, "features"), path)
    checks = {m.split(":")[0] for m in caught.value.mismatches}
    assert checks == {"one_step", "closed_loop", "after_reset"}
    assert "differs from PyTorch" in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # no model, no temporary file


def test_failed_export_leaves_an_existing_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    report = export_model(make_model("gru", 1, "features"), path)
    before, chunk_before = path.read_bytes(), report.chunk_path.read_bytes()
    monkeypatch.setattr(exporter, "build_step_model", _corrupting(exporter.build_step_model))
    with pytest.raises(ParityError):
        export_model(make_model("gru", 1, "features", seed=5), path)
    assert path.read_bytes() == before and report.chunk_path.read_bytes() == chunk_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.chunk.onnx", "model.onnx"]


def test_checker_failure_is_a_parity_error(monkeypatch, tmp_path):
    def broken(model, info):
        proto = build_step_model(model, info)
        proto.graph.node[0].input[0] = "no_such_tensor"
        return proto

    monkeypatch.setattr(exporter, "build_step_model", broken)
    with pytest.raises(ParityError, match="onnx.checker"):
        export_model(make_model("rnn_tanh", 1, "tokens"), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_vocabulary_must_match_the_model(tmp_path):
    with pytest.raises(InputError, match="vocabulary has 3 entries"):
        export_model(make_model("gru", 1, "tokens"), tmp_path / "m.onnx", vocabulary=["a", "b", "c"])


def test_exported_file_loads_with_onnx_and_keeps_float32_weights(tmp_path):
    path = tmp_path / "m.onnx"
    export_model(make_model("gru", 1, "tokens"), path, vocabulary=VOCAB)
    proto = onnx.load(path)
    assert {i.data_type for i in proto.graph.initializer if i.name.endswith("weight_t")} == {
        onnx.TensorProto.FLOAT
    }
