"""Bring your own model: a module you wrote exports to the same contract, checked against the original."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgernn.export import (
    QuantizeConfig,
    UnsupportedModuleError,
    byo_cells,
    export_model,
    export_module,
    quantize_step_model,
)
from edgernn.export.byo_cells import step_module
from edgernn.models import ModelConfig, RecurrentModel, count_parameters
from edgernn.report import describe_model
from edgernn.runtime import Stepper, contract
from edgernn.runtime.chunk import chunk_path
from edgernn.runtime.contract import InputSpec, OutputSpec, StackSpec
from edgernn.runtime.errors import ContractError, InputError, ParityError

ROOT = Path(__file__).parents[1]
VOCAB = list("abcdefghijk")


# --- user modules, written the way people write them -------------------------------------------------


class SensorGRU(nn.Module):
    """Linear -> GRU (batch_first, 2 layers) -> LayerNorm -> Linear; state h (layers, batch, hidden)."""

    def __init__(self, hidden_size: int = 24):
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.gru = nn.GRU(16, hidden_size, num_layers=2, batch_first=True)
        self.norm = nn.LayerNorm(hidden_size)
        self.out = nn.Linear(hidden_size, 3)

    def forward(self, x, state=None):
        z, state = self.gru(torch.relu(self.inp(x)), state)
        return self.out(self.norm(z)), state


class CharLSTM(nn.Module):
    """Embedding -> LSTM (time first) -> Linear; tokens (steps, batch), state (h, c)."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(len(VOCAB), 8)
        self.lstm = nn.LSTM(8, 20)
        self.head = nn.Linear(20, len(VOCAB))

    def forward(self, tokens, state=None):
        out, state = self.lstm(self.embedding(tokens), state)
        return self.head(out), state


class ReluRNN(nn.Module):
    """Dropout -> RNN (relu, 2 layers) -> ReLU -> Linear; state (batch, layers, hidden), required."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.3)
        self.rnn = nn.RNN(4, 16, num_layers=2, nonlinearity="relu", batch_first=True)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(16, 2))

    def forward(self, x, state):
        out, h = self.rnn(self.drop(x), state.transpose(0, 1).contiguous())
        return self.head(out), h.transpose(0, 1)


class TwoStacks(nn.Module):
    """GRU -> LayerNorm -> LSTM (2 layers); state {"encoder": h (batch, hidden), "decoder": (h, c)}."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.GRU(5, 12, batch_first=True)
        self.norm = nn.LayerNorm(12)
        self.decoder = nn.LSTM(12, 9, num_layers=2, batch_first=True)
        self.head = nn.Linear(9, 3)

    def forward(self, x, state=None):
        state = state or {"encoder": None, "decoder": None}
        encoder_state = None if state["encoder"] is None else state["encoder"].unsqueeze(0)
        z, encoder_state = self.encoder(x, encoder_state)
        z, decoder_state = self.decoder(self.norm(z), state["decoder"])
        return self.head(z), {"encoder": encoder_state[0], "decoder": decoder_state}


def _layers_first(*tensors: torch.Tensor) -> list[np.ndarray]:
    return [t.transpose(0, 1).numpy() for t in tensors]


@dataclass
class Case:
    """A user module, how to export it, and how its own state reads in the contract's layout."""

    build: Callable[[], nn.Module]
    kwargs: dict
    contract_state: Callable[[object], list[np.ndarray]]
    batch_first: bool = True
    start: Callable[[int], object] = field(default=lambda batch: None)


CASES = {
    "bare_gru": Case(  # nn.GRU's own forward is (input, hx) -> (output, h_n)
        lambda: nn.GRU(3, 7, num_layers=2, batch_first=True),
        {"example_input": torch.randn(1, 5, 3)},
        lambda s: _layers_first(s),
    ),
    "gru": Case(SensorGRU, {"example_input": torch.randn(1, 5, 6)}, lambda s: _layers_first(s)),
    "lstm_tokens": Case(
        CharLSTM,
        {"example_input": torch.zeros(5, 1, dtype=torch.int64), "vocabulary": VOCAB},
        lambda s: _layers_first(*s),
        batch_first=False,
    ),
    "rnn_relu": Case(
        ReluRNN,
        {"example_input": torch.randn(1, 5, 4), "initial_state": lambda batch: torch.zeros(batch, 2, 16)},
        lambda s: [s.numpy()],
        start=lambda batch: torch.zeros(batch, 2, 16),
    ),
    "two_stacks": Case(
        TwoStacks,
        {"example_input": torch.randn(1, 5, 5)},
        lambda s: [s["encoder"][:, None].numpy(), *_layers_first(*s["decoder"])],
    ),
}


@dataclass
class Exported:
    name: str
    case: Case
    module: nn.Module
    path: Path
    report: object


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory) -> Exported:
    case = CASES[request.param]
    torch.manual_seed(0)
    module = case.build().eval()
    path = tmp_path_factory.mktemp("byo") / f"{request.param}.onnx"
    return Exported(request.param, case, module, path, export_module(module, path, **case.kwargs))


def random_inputs(info: contract.ModelInfo, batch: int, steps: int) -> np.ndarray:
    """Contract layout: (B, T) int64 tokens or (B, T, F) float32 features."""
    rng = np.random.default_rng(7)
    if info.input.kind == "tokens":
        return rng.integers(0, info.input.size, size=(batch, steps))
    return (rng.standard_normal((batch, steps, info.input.size)) * 2).astype(np.float32)


# --- exported, verified, stepped ---------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3])
def test_stepper_matches_the_original_module(exported, batch):
    stepper = Stepper(exported.path)
    xs = random_inputs(stepper.info, batch, 60)
    case = exported.case
    x = torch.from_numpy(xs) if case.batch_first else torch.from_numpy(xs).transpose(0, 1)
    with torch.no_grad():
        want, want_state = exported.module(x, case.start(batch))
    want = want.numpy() if case.batch_first else want.transpose(0, 1).numpy()
    stream = stepper.new_stream(batch_size=batch)
    got = np.stack([stream.step(xs[:, t]) for t in range(xs.shape[1])], axis=1)  # (B, T, O)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    for spec, tensor in zip(stepper.info.states, case.contract_state(want_state), strict=True):
        np.testing.assert_allclose(stream.state[spec.input], tensor, atol=1e-5, rtol=1e-4)


def test_every_parity_check_ran(exported):
    parity = exported.report.parity
    assert set(parity.errors) == {"one_step", "closed_loop", "after_reset"}
    assert parity.closed_loop_steps >= 1000
    assert 0 < parity.max_error() < contract.ONE_STEP_ATOL
    assert exported.path.stat().st_size == exported.report.size_bytes


def test_graph_is_an_unrolled_cell_within_edge_limits(exported):
    proto = onnx.load(exported.path)
    ops = {node.op_type for node in proto.graph.node}
    assert not ops & {"GRU", "LSTM", "RNN", "If", "Loop", "Scan"}
    assert ops & {"MatMul", "Gemm"}
    assert proto.ir_version == contract.IR_VERSION
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", contract.OPSET)]
    info = exported.report.info
    assert [i.name for i in proto.graph.input] == ["x", *(s.input for s in info.states)]
    assert [o.name for o in proto.graph.output] == ["y", *(s.output for s in info.states)]
    for value in [*proto.graph.input, *proto.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    producers = {out: node.op_type for node in proto.graph.node for out in node.output}
    assert all(producers[s.output] == "Where" for s in info.states)  # tiny values flushed, as graph.py does
    onnx.checker.check_model(proto, full_check=True)


def test_inspect_counts_the_module_parameters(exported):
    assert describe_model(exported.path)["parameters"] == count_parameters(exported.module)


EXPECTED_METADATA = {  # cell, layers, hidden, input (kind, size), output (kind, size), states, stacks
    "bare_gru": ("gru", 2, 7, ("features", 3), ("values", 7), {"h": "h_next"}, ()),
    "gru": ("gru", 2, 24, ("features", 6), ("values", 3), {"h": "h_next"}, ()),
    "lstm_tokens": ("lstm", 1, 20, ("tokens", 11), ("logits", 11), {"h": "h_next", "c": "c_next"}, ()),
    "rnn_relu": ("rnn_relu", 2, 16, ("features", 4), ("values", 2), {"h": "h_next"}, ()),
    "two_stacks": (
        "gru", 1, 12, ("features", 5), ("values", 3), {"h0": "h0_next", "h1": "h1_next", "c1": "c1_next"},
        (StackSpec("gru", 1, 12), StackSpec("lstm", 2, 9)),
    ),
}  # fmt: skip


def test_metadata_describes_the_module(exported):
    info = Stepper(exported.path).info
    described = (
        info.cell, info.num_layers, info.hidden_size, (info.input.kind, info.input.size),
        (info.output.kind, info.output.size), info.state_map, info.stacks,
    )  # fmt: skip
    assert described == EXPECTED_METADATA[exported.name]
    stacks = info.stacks or (StackSpec(info.cell, info.num_layers, info.hidden_size),)
    shapes = [
        (stack.num_layers, stack.hidden_size) for stack in stacks for _ in range(1 + (stack.cell == "lstm"))
    ]
    assert [s.shape for s in info.states] == shapes
    assert info.input.vocabulary == (tuple(VOCAB) if info.input.kind == "tokens" else None)


# --- the module is left as it was, and edgernn's own model exports to the same contract -------------


@pytest.fixture(scope="module")
def recurrent_model_exports(tmp_path_factory):
    """An edgernn RecurrentModel in training mode, exported both ways."""
    torch.manual_seed(3)
    config = ModelConfig(
        cell="gru", input_kind="features", input_size=5, hidden_size=16, num_layers=2,
        output_size=2, output_kind="values", dropout=0.2,
    )  # fmt: skip
    model = RecurrentModel(config).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folder = tmp_path_factory.mktemp("both_ways")
    export_module(model, folder / "byo.onnx", example_input=torch.randn(1, 4, 5))
    reference = RecurrentModel(config)
    reference.load_state_dict(before)
    export_model(reference, folder / "own.onnx")
    return model, before, folder


def test_module_is_left_as_it_was(recurrent_model_exports):
    model, before, _ = recurrent_model_exports
    assert model.training and model.rnn.training  # back in the mode it was in
    assert type(model.rnn) is nn.GRU  # the swap happened on a copy
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_same_contract_as_export_model(recurrent_model_exports):
    _, _, folder = recurrent_model_exports
    byo, own = Stepper(folder / "byo.onnx"), Stepper(folder / "own.onnx")
    assert (byo.info.cell, byo.info.num_layers, byo.info.hidden_size) == ("gru", 2, 16)
    assert byo.info.states == own.info.states
    xs = random_inputs(own.info, 3, 50)
    np.testing.assert_allclose(byo.new_stream(3).run(xs), own.new_stream(3).run(xs), atol=1e-5, rtol=1e-5)


def test_exported_file_quantizes_like_any_edgernn_model(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "sensor.onnx"
    report = export_module(SensorGRU(hidden_size=96).eval(), path, example_input=torch.randn(1, 5, 6))
    proto = onnx.load(path)
    calibration = np.random.default_rng(0).standard_normal((64, 6)).astype(np.float32)
    quantized, _ = quantize_step_model(proto, report.info, QuantizeConfig("int8"), calibration)
    assert quantized.ByteSize() < proto.ByteSize() / 2
    xs = calibration[None, :32]  # (1, T, F)
    np.testing.assert_allclose(
        Stepper(quantized.SerializeToString()).run(xs), Stepper(path).run(xs), atol=0.1
    )


class CharGRU(nn.Module):
    """Embedding -> GRU (batch_first) -> Linear, for a real vocabulary."""

    def __init__(self, vocabulary_size: int):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary_size, 16)
        self.gru = nn.GRU(16, 64, batch_first=True)
        self.head = nn.Linear(64, vocabulary_size)

    def forward(self, tokens, state=None):
        out, state = self.gru(self.embedding(tokens), state)
        return self.head(out), state


def test_export_module_quantizes_and_checks_on_real_data(tmp_path):
    from edgernn.data import build_vocabulary, encode, split_train_validation
    from edgernn.export import EvaluationData

    text = (ROOT / "examples" / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000]
    vocabulary = build_vocabulary(text)
    train, validation = split_train_validation(encode(text, vocabulary))
    data = EvaluationData(
        train, "loss", "tinyshakespeare.txt", inputs=validation[:-1], targets=validation[1:]
    )
    torch.manual_seed(0)
    module = CharGRU(len(vocabulary)).eval()
    example = torch.zeros(1, 4, dtype=torch.long)
    float32 = export_module(module, tmp_path / "f32.onnx", example_input=example, vocabulary=vocabulary)
    report = export_module(
        module, tmp_path / "int8.onnx", example_input=example, vocabulary=vocabulary,
        quantize=QuantizeConfig("int8"), data=data,
    )  # fmt: skip
    q = report.quantization
    assert q["mode"] == "int8" and q["method"] == "weights" and q["checks"]["forced"] is False
    assert abs(q["checks"]["metric"]["quantized"] - q["checks"]["metric"]["float32"]) < 0.02
    assert report.float32_size_bytes == float32.size_bytes
    assert report.float32_size_bytes / report.size_bytes > 3.0
    assert Stepper(report.path).info.quantization == q
    tokens = encode(text[:100], vocabulary)
    np.testing.assert_allclose(Stepper(report.path).run(tokens), Stepper(float32.path).run(tokens), atol=0.05)
    with pytest.raises(InputError, match="real data"):
        export_module(module, tmp_path / "x.onnx", example_input=example, quantize=QuantizeConfig("int8"))
    assert not (tmp_path / "x.onnx").exists()


# --- refused, clearly, before anything is traced or written ------------------------------------------


class Bidirectional(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 8, batch_first=True, bidirectional=True)

    def forward(self, x, state=None):
        return self.gru(x, state)


class Projected(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 8, batch_first=True, proj_size=4)

    def forward(self, x, state=None):
        return self.lstm(x, state)


class WellFormed(nn.Module):
    """The smallest module export_module takes: forward(x, state) -> (y, state)."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 8, batch_first=True)

    def forward(self, x, state=None):
        return self.gru(x, state)


class Stateless(WellFormed):
    """forward(x) -> y: the state stays hidden inside."""

    def forward(self, x):
        return self.gru(x)[0]


class ReturnsOnlyY(WellFormed):
    def forward(self, x, state=None):
        return self.gru(x, state)[0]


class NoRecurrentLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, x, state=None):
        return self.linear(x), state


class ScaledState(WellFormed):
    def forward(self, x, state=None):
        return self.gru(x, None if state is None else state * 0.5)


class StepCounter(WellFormed):
    """State (h, steps): the counter is no recurrent layer's state."""

    def forward(self, x, state=None):
        h, steps = state if state is not None else (None, torch.zeros(x.shape[0], 1))
        y, h = self.gru(x, h)
        return y, (h, steps + x.shape[1])


class CellLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.GRUCell(3, 8)

    def forward(self, x, state=None):
        outputs = []
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], state)
            outputs.append(state)
        return torch.stack(outputs, 1), state


class CalledTwice(WellFormed):
    def forward(self, x, state=None):
        y, state = self.gru(x, state)
        return self.gru(y.tanh()[..., :3], state)


class TupleInBareOut(WellFormed):
    def forward(self, x, state):
        return self.gru(x, state[0])


class LearnedStart(WellFormed):
    def __init__(self):
        super().__init__()
        self.h0 = nn.Parameter(torch.ones(1, 1, 8))

    def forward(self, x, state=None):
        start = self.h0.expand(1, x.shape[0], 8).contiguous() if state is None else state
        return self.gru(x, start)


class LastStepOnly(WellFormed):
    def forward(self, x, state=None):
        y, state = self.gru(x, state)
        return y[:, -1], state


class Float64(WellFormed):
    def __init__(self):
        super().__init__()
        self.double()


FEATURES = torch.randn(1, 4, 3)


@pytest.mark.parametrize(
    ("module", "match"),
    [
        (CellLoop, r"`cell` is an nn.GRUCell, which export_module does not swap; an nn.GRU with one layer"),
        (CalledTwice, r"`gru` \(gru, 1x8\) runs 2 times in one step; expected once"),
        (TupleInBareOut, r"forward takes its state as \(\*,\) but returns \*; it must return the next state"),
        (Bidirectional, r"bidirectional GRU: its backward direction reads the sequence from the end"),
        (Projected, r"LSTM with proj_size=4; edgernn exports proj_size=0"),
        (Stateless, r"Stateless.forward\(x\) cannot be called as forward\(x, state\)"),
        (ReturnsOnlyY, r"returned a tensor \(2, 1, 8\) float32; expected \(y, state\)"),
        (NoRecurrentLayer, r"found no nn.GRU, nn.LSTM or nn.RNN in NoRecurrentLayer"),
        (ScaledState, r"the h state `gru` \(gru, 1x8\) receives is not one of the state tensors as given"),
        (StepCounter, r"state\[1\] \(2, 1\) reaches no recurrent layer"),
        (LearnedStart, r"with state None, forward hands `gru` \(gru, 1x8\) a non-zero state"),
        (LastStepOnly, r"forward returned y \(2, 8\) float32; expected float32 \(batch, steps, outputs\)"),
        (Float64, r"gru.weight_ih_l0 is float64; convert with module.float\(\)"),
    ],
)
def test_unsupported_modules_are_refused_clearly(tmp_path, module, match):
    start = (lambda batch: (torch.zeros(1, batch, 8),)) if module is TupleInBareOut else None
    with pytest.raises(UnsupportedModuleError, match=match):
        export_module(module(), tmp_path / "m.onnx", example_input=FEATURES, initial_state=start)
    assert list(tmp_path.iterdir()) == []


def test_a_non_zero_initial_state_is_refused(tmp_path):
    with pytest.raises(UnsupportedModuleError, match=r"initial_state\(2\) is not all zeros"):
        export_module(
            WellFormed(),
            tmp_path / "m.onnx",
            example_input=FEATURES,
            initial_state=lambda b: torch.ones(1, b, 8),
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"example_input": FEATURES.double()}, r"expected float32 features .* got \(1, 4, 3\) float64"),
        ({"example_input": FEATURES[0]}, r"expected float32 features .* got \(4, 3\) float32"),
        ({"example_input": FEATURES, "vocabulary": VOCAB}, "vocabulary is for token models"),
        ({"example_input": FEATURES, "output_kind": "probabilities"}, "output_kind: expected one of logits"),
        ({"example_input": torch.zeros(1, 4, dtype=torch.int64)}, r"needs vocabulary=\[...\] when it has 0"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs, match):
    with pytest.raises(InputError, match=match):
        export_module(WellFormed(), tmp_path / "m.onnx", **kwargs)
    assert list(tmp_path.iterdir()) == []


class TimeNormalised(WellFormed):
    """Subtracts the mean over time: runs fine, but no single step can reproduce it."""

    def forward(self, x, state=None):
        y, state = self.gru(x, state)
        return y - y.mean(dim=1, keepdim=True), state


def test_a_module_that_looks_across_time_fails_parity_and_writes_nothing(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"left as it was")
    with pytest.raises(ParityError) as caught:
        export_module(TimeNormalised(), path, example_input=FEATURES)
    assert {m.split(":")[0] for m in caught.value.mismatches} >= {"closed_loop", "after_reset"}
    assert path.read_bytes() == b"left as it was"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_a_chunk_graph_left_by_an_earlier_export_is_removed(tmp_path):
    path = tmp_path / "m.onnx"
    chunk_path(path).write_bytes(b"an earlier model's chunk graph")
    export_module(WellFormed(), path, example_input=FEATURES)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    assert Stepper(path).run(np.ones((1, 40, 3), np.float32)).shape == (1, 40, 8)


def test_checked_against_the_original_module_not_the_swapped_one(tmp_path, monkeypatch):
    def gates_swapped(self, x, state, layer):  # r and z the wrong way round: a plausible slip
        w_ih, w_hh, b_ih, b_hh = self.weights(layer)
        gi, gh = nn.functional.linear(x, w_ih, b_ih), nn.functional.linear(state[0], w_hh, b_hh)
        size = self.hidden_size
        z, r = torch.sigmoid(gi[:, : 2 * size] + gh[:, : 2 * size]).split(size, dim=1)
        n = torch.tanh(gi[:, 2 * size :] + r * gh[:, 2 * size :])
        return [n + z * (state[0] - n)]

    monkeypatch.setattr(byo_cells.GRUStep, "cell", gates_swapped)
    with pytest.raises(ParityError) as caught:
        export_module(SensorGRU(), tmp_path / "m.onnx", example_input=torch.randn(1, 5, 6))
    assert {m.split(":")[0] for m in caught.value.mismatches} == {"one_step", "closed_loop", "after_reset"}
    assert list(tmp_path.iterdir()) == []


# --- the step modules and the contract's stacks ------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [
        nn.GRU(5, 7, num_layers=2, batch_first=True),
        nn.GRU(5, 7, bias=False),
        nn.LSTM(5, 7, num_layers=2),
        nn.LSTM(5, 7, batch_first=True, bias=False),
        nn.RNN(5, 7, num_layers=2, nonlinearity="relu"),
        nn.RNN(5, 7, batch_first=True),
    ],
    ids=lambda layer: repr(layer),
)
def test_step_module_matches_the_torch_layer_with_state_fed_back(layer):
    torch.manual_seed(0)
    step = step_module(layer)
    assert {name for name, _ in step.named_parameters()} == {name for name, _ in layer.named_parameters()}
    assert all(p is getattr(layer, name) for name, p in step.named_parameters())  # shared, not copied
    xs = torch.randn(4, 3, 5)  # (B, T, I) or (T, B, I): both are 3-D
    want_state = got_state = None
    with torch.no_grad():
        for _ in range(2):  # the second call starts from the state the first returned
            want, want_state = layer(xs, want_state)
            got, got_state = step(xs, got_state)
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    for a, b in zip(
        torch.utils._pytree.tree_leaves(got_state), torch.utils._pytree.tree_leaves(want_state), strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def stack_info(stacks):
    first = stacks[0] if stacks else StackSpec("gru", 2, 8)
    return contract.make_info(
        cell=first.cell, num_layers=first.num_layers, hidden_size=first.hidden_size,
        input=InputSpec(kind="features", size=3, dtype="float32"), output=OutputSpec(kind="values", size=1),
        edgernn_version="test", stacks=stacks,
    )  # fmt: skip


def test_stacks_round_trip_with_numbered_states():
    info = stack_info((StackSpec("gru", 2, 8), StackSpec("lstm", 1, 4)))
    assert contract.parse_info(info.to_json()) == info
    assert [(s.input, s.output, s.shape) for s in info.states] == [
        ("h0", "h0_next", (2, 8)), ("h1", "h1_next", (1, 4)), ("c1", "c1_next", (1, 4)),
    ]  # fmt: skip


def test_one_stack_writes_exactly_what_it_always_wrote():
    doc = json.loads(stack_info(()).to_json())
    assert "stacks" not in doc
    assert [s["input"] for s in doc["states"]] == ["h"]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(stacks=d["stacks"][:1]), r"stacks: expected two or more"),
        (lambda d: d["stacks"][0].update(hidden_size=9), r"stacks\[0\]: expected the model's own cell"),
        (lambda d: d["states"][0].update(input="h"), r"states: a model with 2 recurrent stacks expects"),
        (lambda d: d["stacks"][1].update(cell="transformer"), r"stacks\[1\].cell: expected one of gru"),
        (lambda d: d.pop("stacks"), r"states: a gru model with 2 layer\(s\) of 8 expects"),
    ],
)
def test_stacks_that_do_not_fit_are_refused(edit, match):
    doc = json.loads(stack_info((StackSpec("gru", 2, 8), StackSpec("rnn_tanh", 1, 4))).to_json())
    edit(doc)
    with pytest.raises(ContractError, match=match):
        contract.parse_info(json.dumps(doc))


# --- the example -------------------------------------------------------------------------------------


def test_bring_your_own_example_runs(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "bring_your_own.py"), "--out", str(tmp_path / "byo")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["denoiser.onnx"]  # under --out only
    assert (tmp_path / "byo" / "denoiser.onnx").is_file()
    assert "max parity error" in done.stdout
    assert "stepper vs PyTorch" in done.stdout
