"""Shared fixtures: tiny ONNX models written by hand, each with a numpy reference of its maths."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgernn.runtime import contract
from edgernn.runtime.contract import InputSpec, ModelInfo, OutputSpec

# --- runtime fixtures: hand-built step graphs (no torch) ---------------------------------------------
#
# A TinyModel is a small recurrent step graph that follows the edgernn contract. Its cell is not a real
# GRU/LSTM (the runtime does not care what the graph computes), but its maths is simple enough to mirror
# in numpy, so tests compare the stepper's numbers with an independent reference:
#
#   h'_l = tanh(in_l @ W_l + h_l @ U_l + b_l)                         (gru, rnn_tanh, rnn_relu)
#   c'_l = 0.5 * tanh(in_l @ W_l + h_l @ U_l + b_l) + 0.5 * c_l;  h'_l = tanh(c'_l)        (lstm)
#   in_0 = E[x] (tokens) or x (features);  in_{l+1} = h'_l;  y = h'_last @ V + d

VOCABULARY = tuple("abcdefgh ")


@dataclass
class TinyModel:
    """A hand-built edgernn step graph plus the numpy reference of what it computes."""

    info: ModelInfo
    weights: dict[str, np.ndarray]
    proto: onnx.ModelProto
    path: Path | None = None

    def initial_state(self, batch_size: int = 1) -> dict[str, np.ndarray]:
        return {s.input: np.full((batch_size, *s.shape), s.initial, np.float32) for s in self.info.states}

    def step(self, x: np.ndarray, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """x: (B,) int64 or (B, F) float32; state: name -> (B, L, H). Returns y (B, O) and the next state."""
        w = self.weights
        layer_in = w["E"][x] if self.info.input.kind == "tokens" else x.astype(np.float32)
        h_next, c_next = [], []
        for layer in range(self.info.num_layers):
            h = state["h"][:, layer]  # (B, H)
            pre = np.tanh(layer_in @ w[f"W{layer}"] + h @ w[f"U{layer}"] + w[f"b{layer}"])
            if self.info.cell == "lstm":
                c = 0.5 * pre + 0.5 * state["c"][:, layer]
                c_next.append(c)
                pre = np.tanh(c)
            h_next.append(pre)
            layer_in = pre
        y = layer_in @ w["V"] + w["d"]
        new_state = {"h": np.stack(h_next, axis=1)}  # (B, L, H)
        if c_next:
            new_state["c"] = np.stack(c_next, axis=1)
        return y.astype(np.float32), {k: v.astype(np.float32) for k, v in new_state.items()}

    def run(self, xs: np.ndarray, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """xs: (B, T) or (B, T, F). Returns ys (B, T, O) and the final state."""
        ys = []
        for t in range(xs.shape[1]):
            y, state = self.step(xs[:, t], state)
            ys.append(y)
        return np.stack(ys, axis=1), state

    def save(self, directory: Path, name: str = "model.onnx") -> Path:
        self.path = directory / name
        self.path.write_bytes(self.proto.SerializeToString())
        return self.path


def make_info(cell: str, input_kind: str, input_size: int, hidden_size: int, num_layers: int) -> ModelInfo:
    vocabulary = VOCABULARY if input_kind == "tokens" and input_size == len(VOCABULARY) else None
    dtype = "int64" if input_kind == "tokens" else "float32"
    output = OutputSpec(kind="logits" if input_kind == "tokens" else "values", size=input_size)
    return contract.make_info(
        cell=cell,
        num_layers=num_layers,
        hidden_size=hidden_size,
        input=InputSpec(kind=input_kind, size=input_size, dtype=dtype, vocabulary=vocabulary),
        output=output,
        edgernn_version="test",
    )


def build_tiny_model(
    cell: str = "gru",
    input_kind: str = "tokens",
    input_size: int = len(VOCABULARY),
    hidden_size: int = 6,
    num_layers: int = 2,
    seed: int = 0,
    metadata: str | None = "",
) -> TinyModel:
    """A TinyModel; ``metadata`` overrides the edgernn JSON ("" = the right one, None = no metadata)."""
    info = make_info(cell, input_kind, input_size, hidden_size, num_layers)
    weights = _tiny_weights(info, np.random.default_rng(seed))
    graph = _tiny_graph(info, weights)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", contract.OPSET)])
    proto.ir_version = contract.IR_VERSION
    text = info.to_json() if metadata == "" else metadata
    if text is not None:
        helper.set_model_props(proto, {contract.METADATA_KEY: text})
    onnx.checker.check_model(proto, full_check=True)
    return TinyModel(info=info, weights=weights, proto=proto)


def _tiny_weights(info: ModelInfo, rng: np.random.Generator) -> dict[str, np.ndarray]:
    hidden, size = info.hidden_size, info.input.size
    weights = {}
    if info.input.kind == "tokens":
        weights["E"] = rng.standard_normal((size, hidden))
    for layer in range(info.num_layers):
        weights[f"W{layer}"] = rng.standard_normal(
            (hidden if layer or info.input.kind == "tokens" else size, hidden)
        )
        weights[f"U{layer}"] = rng.standard_normal((hidden, hidden)) * 0.5
        weights[f"b{layer}"] = rng.standard_normal(hidden) * 0.1
    weights["V"] = rng.standard_normal((hidden, info.output.size))
    weights["d"] = rng.standard_normal(info.output.size) * 0.1
    return {k: v.astype(np.float32) for k, v in weights.items()}


def _tiny_graph(info: ModelInfo, weights: dict[str, np.ndarray]) -> onnx.GraphProto:
    nodes = []
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    layer_in = "x"
    if info.input.kind == "tokens":
        nodes.append(helper.make_node("Gather", ["E", "x"], ["emb"]))
        layer_in = "emb"
    h_parts, c_parts = [], []
    for layer in range(info.num_layers):
        inits.append(numpy_helper.from_array(np.array(layer, np.int64), f"idx{layer}"))
        l = str(layer)  # noqa: E741
        nodes += [
            helper.make_node("Gather", ["h", f"idx{l}"], [f"h{l}"], axis=1),  # (B, H)
            helper.make_node("MatMul", [layer_in, f"W{l}"], [f"xw{l}"]),
            helper.make_node("MatMul", [f"h{l}", f"U{l}"], [f"hu{l}"]),
            helper.make_node("Add", [f"xw{l}", f"hu{l}"], [f"s{l}"]),
            helper.make_node("Add", [f"s{l}", f"b{l}"], [f"pre{l}"]),
            helper.make_node("Tanh", [f"pre{l}"], [f"t{l}"]),
        ]
        out = f"t{l}"
        if info.cell == "lstm":
            inits.append(numpy_helper.from_array(np.array(0.5, np.float32), f"half{l}"))
            nodes += [
                helper.make_node("Gather", ["c", f"idx{l}"], [f"c{l}"], axis=1),
                helper.make_node("Add", [f"t{l}", f"c{l}"], [f"tc{l}"]),
                helper.make_node("Mul", [f"tc{l}", f"half{l}"], [f"cn{l}"]),
                helper.make_node("Tanh", [f"cn{l}"], [f"hn{l}"]),
                helper.make_node("Unsqueeze", [f"cn{l}", "axis1"], [f"cu{l}"]),
            ]
            c_parts.append(f"cu{l}")
            out = f"hn{l}"
        nodes.append(helper.make_node("Unsqueeze", [out, "axis1"], [f"hu_{l}"]))
        h_parts.append(f"hu_{l}")
        layer_in = out
    nodes += [
        helper.make_node("MatMul", [layer_in, "V"], ["yv"]),
        helper.make_node("Add", ["yv", "d"], ["y"]),
        helper.make_node("Concat", h_parts, ["h_next"], axis=1),
    ]
    if c_parts:
        nodes.append(helper.make_node("Concat", c_parts, ["c_next"], axis=1))
    return helper.make_graph(nodes, "tiny", *_tiny_io(info), initializer=inits)


def _tiny_io(info: ModelInfo) -> tuple[list, list]:
    batch = contract.BATCH_AXIS_NAME
    if info.input.kind == "tokens":
        x = helper.make_tensor_value_info("x", TensorProto.INT64, [batch])
    else:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, info.input.size])
    state_in = [
        helper.make_tensor_value_info(s.input, TensorProto.FLOAT, [batch, *s.shape]) for s in info.states
    ]
    state_out = [
        helper.make_tensor_value_info(s.output, TensorProto.FLOAT, [batch, *s.shape]) for s in info.states
    ]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, info.output.size])
    return [x, *state_in], [y, *state_out]


@dataclass
class ForeignModel:
    """A Silero-VAD-like graph edgernn did not write: state (2, batch, 16) and a constant ``sr`` input.

    inputs ``input`` (B, 64) float32, ``state`` (2, B, 16) float32, ``sr`` int64 scalar;
    outputs ``output`` (B, 1) float32, ``stateN`` (2, B, 16) float32.
    """

    weights: dict[str, np.ndarray]
    proto: onnx.ModelProto
    path: Path | None = None
    state_map: dict[str, str] = field(default_factory=lambda: {"state": "stateN"})

    def step(self, x: np.ndarray, state: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        w = self.weights
        first = np.tanh(x @ w["W"] + state[0] @ w["U"] + np.float32(sr) * np.float32(1e-4))  # (B, 16)
        second = 0.5 * state[1] + 0.5 * first
        output = 1.0 / (1.0 + np.exp(-(second @ w["v"])))  # (B, 1)
        return output.astype(np.float32), np.stack([first, second]).astype(np.float32)


def build_foreign_model(seed: int = 1) -> ForeignModel:
    rng = np.random.default_rng(seed)
    weights = {
        "W": (rng.standard_normal((64, 16)) * 0.2).astype(np.float32),
        "U": (rng.standard_normal((16, 16)) * 0.5).astype(np.float32),
        "v": rng.standard_normal((16, 1)).astype(np.float32),
    }
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    inits += [
        numpy_helper.from_array(np.array(0, np.int64), "i0"),
        numpy_helper.from_array(np.array(1, np.int64), "i1"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array(1e-4, np.float32), "sr_scale"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    nodes = [
        helper.make_node("Gather", ["state", "i0"], ["s0"], axis=0),
        helper.make_node("Gather", ["state", "i1"], ["s1"], axis=0),
        helper.make_node("Cast", ["sr"], ["sr_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["sr_f", "sr_scale"], ["sr_term"]),
        helper.make_node("MatMul", ["input", "W"], ["xw"]),
        helper.make_node("MatMul", ["s0", "U"], ["su"]),
        helper.make_node("Add", ["xw", "su"], ["a"]),
        helper.make_node("Add", ["a", "sr_term"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["first"]),
        helper.make_node("Add", ["s1", "first"], ["sum"]),
        helper.make_node("Mul", ["sum", "half"], ["second"]),
        helper.make_node("MatMul", ["second", "v"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["output"]),
        helper.make_node("Unsqueeze", ["first", "axis0"], ["first_u"]),
        helper.make_node("Unsqueeze", ["second", "axis0"], ["second_u"]),
        helper.make_node("Concat", ["first_u", "second_u"], ["stateN"], axis=0),
    ]
    inputs = [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64]),
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 16]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
    ]
    outputs = [
        helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1]),
        helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", 16]),
    ]
    graph = helper.make_graph(nodes, "foreign", inputs, outputs, initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", contract.OPSET)])
    proto.ir_version = contract.IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    return ForeignModel(weights=weights, proto=proto)


def build_two_output_model() -> onnx.ModelProto:
    """A foreign accumulator: inputs ``x``, ``total`` (B, 3); outputs ``double`` = 2 * total', ``total_next``
    = x + total, ``negative`` = -total' (two results around one state output, in that graph order).
    """
    nodes = [
        helper.make_node("Add", ["x", "total"], ["total_next"]),
        helper.make_node("Add", ["total_next", "total_next"], ["double"]),
        helper.make_node("Neg", ["total_next"], ["negative"]),
    ]
    vector = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 3]) for n in ("x", "total")]
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 3])
        for n in ("double", "total_next", "negative")
    ]
    graph = helper.make_graph(nodes, "accumulator", vector, outputs)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", contract.OPSET)])
    proto.ir_version = contract.IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    return proto


@pytest.fixture
def tiny_model_builder():
    """``build_tiny_model`` itself, for tests that need a variant (other sizes, other metadata)."""
    return build_tiny_model


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtime_models")


@pytest.fixture(scope="session")
def token_model(models_dir: Path) -> TinyModel:
    """A 2-layer GRU-contract token model over VOCABULARY (9 characters), hidden size 6."""
    model = build_tiny_model("gru", "tokens")
    model.save(models_dir, "token_gru.onnx")
    return model


@pytest.fixture(scope="session")
def feature_model(models_dir: Path) -> TinyModel:
    """A 2-layer LSTM-contract feature model: 4 features in, 4 values out, hidden size 5."""
    model = build_tiny_model("lstm", "features", input_size=4, hidden_size=5, seed=2)
    model.save(models_dir, "features_lstm.onnx")
    return model


@pytest.fixture(scope="session")
def foreign_model(models_dir: Path) -> ForeignModel:
    model = build_foreign_model()
    model.path = models_dir / "foreign.onnx"
    model.path.write_bytes(model.proto.SerializeToString())
    return model


@pytest.fixture(scope="session")
def two_output_model_path(models_dir: Path) -> Path:
    path = models_dir / "accumulator.onnx"
    path.write_bytes(build_two_output_model().SerializeToString())
    return path


# --- end of runtime fixtures ------------------------------------------------------------------------


# --- the last line of a run: how many tests skipped for want of which packages ----------------------

_DEBIAN = re.compile(r"Debian packages?:?\s+(.*)")
_PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]*")
_NOT_PACKAGES = {"and", "or", "for", "the", "then", "to", "with", "set"}
_PIP_EXTRA = re.compile(r"pip install '(edgernn\[\w+\])'")
_PYTHON_MODULE = re.compile(r"could not import '([\w.]+)'")


def _packages_named(reason: str) -> tuple[set[str], set[str]]:
    """The Debian packages and the pip requirements a skip reason names."""
    debian: set[str] = set()
    for match in _DEBIAN.finditer(reason):
        for word in match.group(1).split():
            name = word.rstrip("),;:.")
            if not _PACKAGE_NAME.fullmatch(name) or name in _NOT_PACKAGES:
                break
            debian.add(name)
            if name != word:  # punctuation ends the list
                break
    pip = set(_PIP_EXTRA.findall(reason)) | set(_PYTHON_MODULE.findall(reason))
    return debian, pip


def pytest_unconfigure(config: pytest.Config) -> None:
    """After pytest's own summary: one line saying how many tests skipped for want of which packages."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not hasattr(reporter, "stats") or config.option.collectonly:
        return
    count, debian, pip = 0, set(), set()
    for report in reporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        named_debian, named_pip = _packages_named(reason)
        count += bool(named_debian or named_pip)
        debian |= named_debian
        pip |= named_pip
    wanted = []
    if debian:
        wanted.append(f"Debian {' '.join(sorted(debian))} (make system-deps)")
    if pip:
        wanted.append(f"Python {' '.join(sorted(pip))} (pip install)")
    line = f"{count} test(s) skipped for want of packages" + (f": {'; '.join(wanted)}" if wanted else "")
    reporter.write_line(line)
