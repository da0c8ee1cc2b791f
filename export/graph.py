"""Build the single-step ONNX graph of a RecurrentModel as an unrolled cell.

The recurrence is written out as MatMul and elementwise ops (no ONNX GRU/LSTM/RNN op, no ``If``):
onnxruntime's quantizers never quantize the GRU op, C code generators lack the RNN ops, and exporters'
RNN paths have had silent bugs. Gate weights of each layer are fused into one matrix per input
(``x @ W_ih^T`` gives all gates at once), which is what PyTorch stores anyway.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from edgernn import __version__
from edgernn.models import RecurrentModel
from edgernn.runtime import contract
from edgernn.runtime.contract import InputSpec, ModelInfo, OutputSpec

# A state that decays (silence, zero input) ends in denormal floats, where every step can run 15-18x
# slower; onnxruntime's denormal setting only covers its pool threads, not the caller's thread that runs a
# 1-thread session. So each state output goes through Where(|v| < FLUSH_BELOW, 0, v): tiny values become
# exactly 0, every other value (NaN and inf too) passes unchanged. Three vectorised elementwise ops per
# state tensor; see benchmarks/STEPPER_NOTES.md for Shrink (one op, but a scalar loop: 300 us for 256
# streams) and (v + C) - C (two ops, but it rounds small values onto a grid where a decaying state sticks).
FLUSH_BELOW = 1e-30


class _Graph:
    """Collects nodes and initializers with unique, readable names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def op(
        self, op_type: str, *inputs: str, name: str | None = None, outputs: int = 1, **attrs
    ) -> str | list[str]:
        self._count += 1
        base = name or f"{op_type.lower()}_{self._count}"
        out = [base] if outputs == 1 else [f"{base}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), out, name=f"{base}_node", **attrs))
        return out[0] if outputs == 1 else out

    def linear(
        self, x: str, weight: torch.Tensor, bias: np.ndarray | None, name: str, out: str | None = None
    ) -> str:
        """x @ weight^T (+ bias), the weight stored pre-transposed as (in, out)."""
        w = self.const(f"{name}.weight_t", _np(weight).T)
        y = self.op("MatMul", x, w, name=out if bias is None and out else f"{name}_matmul")
        if bias is None:
            return y
        return self.op("Add", y, self.const(f"{name}.bias", bias), name=out or f"{name}_add")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy()


def _layer_weights(model: RecurrentModel, layer: int) -> tuple[torch.Tensor, ...]:
    rnn = model.rnn
    return tuple(
        getattr(rnn, f"{kind}_l{layer}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    )


def _gru_cell(g: _Graph, x: str, h: str, model: RecurrentModel, layer: int) -> tuple[str]:
    # PyTorch GRU: r, z = sigmoid(.); n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); h' = n + z * (h - n)
    w_ih, w_hh, b_ih, b_hh = _layer_weights(model, layer)
    hidden = model.config.hidden_size
    name = f"l{layer}"
    gi = g.linear(x, w_ih, _np(b_ih), f"{name}.ih")  # (B, 3H)
    gh = g.linear(h, w_hh, _np(b_hh), f"{name}.hh")  # (B, 3H)
    split = g.const(f"{name}.split_rz_n", np.array([2 * hidden, hidden], dtype=np.int64))
    gi_rz, gi_n = g.op("Split", gi, split, axis=1, outputs=2, name=f"{name}_gi")
    gh_rz, gh_n = g.op("Split", gh, split, axis=1, outputs=2, name=f"{name}_gh")
    rz = g.op("Sigmoid", g.op("Add", gi_rz, gh_rz), name=f"{name}_rz")
    r, z = g.op(
        "Split",
        rz,
        g.const(f"{name}.split_r_z", np.array([hidden, hidden], dtype=np.int64)),
        axis=1,
        outputs=2,
        name=f"{name}_r_z",
    )
    n = g.op("Tanh", g.op("Add", gi_n, g.op("Mul", r, gh_n)), name=f"{name}_n")
    h_next = g.op("Add", n, g.op("Mul", z, g.op("Sub", h, n)), name=f"{name}_h_next")
    return (h_next,)


def _lstm_cell(g: _Graph, x: str, h: str, c: str, model: RecurrentModel, layer: int) -> tuple[str, str]:
    # PyTorch LSTM gate order i, f, g, o; c' = f*c + i*g; h' = o * tanh(c')
    w_ih, w_hh, b_ih, b_hh = _layer_weights(model, layer)
    name = f"l{layer}"
    gates = g.op(
        "Add", g.linear(x, w_ih, _np(b_ih) + _np(b_hh), f"{name}.ih"), g.linear(h, w_hh, None, f"{name}.hh")
    )
    i, f, cand, o = g.op(
        "Split",
        gates,
        g.const(f"{name}.split_gates", np.full(4, model.config.hidden_size, dtype=np.int64)),
        axis=1,
        outputs=4,
        name=f"{name}_gates",
    )
    i, f, o = (g.op("Sigmoid", t) for t in (i, f, o))
    c_next = g.op("Add", g.op("Mul", f, c), g.op("Mul", i, g.op("Tanh", cand)), name=f"{name}_c_next")
    h_next = g.op("Mul", o, g.op("Tanh", c_next), name=f"{name}_h_next")
    return h_next, c_next


def _rnn_cell(g: _Graph, x: str, h: str, model: RecurrentModel, layer: int) -> tuple[str]:
    w_ih, w_hh, b_ih, b_hh = _layer_weights(model, layer)
    name = f"l{layer}"
    pre = g.op(
        "Add", g.linear(x, w_ih, _np(b_ih) + _np(b_hh), f"{name}.ih"), g.linear(h, w_hh, None, f"{name}.hh")
    )
    act = "Tanh" if model.config.cell == "rnn_tanh" else "Relu"
    return (g.op(act, pre, name=f"{name}_h_next"),)


def _cell(g: _Graph, x: str, states: list[str], model: RecurrentModel, layer: int) -> tuple[str, ...]:
    cell = model.config.cell
    if cell == "gru":
        return _gru_cell(g, x, states[0], model, layer)
    if cell == "lstm":
        return _lstm_cell(g, x, states[0], states[1], model, layer)
    return _rnn_cell(g, x, states[0], model, layer)


def _input(g: _Graph, model: RecurrentModel, x: str = contract.INPUT_NAME) -> str:
    """x -> the first layer's input, (B, E) or (B, F)."""
    config = model.config
    if config.input_kind == "tokens":
        table = g.const("embedding.weight", _np(model.embedding.weight))
        return g.op("Gather", table, x, axis=0, name="embedding")
    if model.input_mean is None:
        return x
    centred = g.op("Sub", x, g.const("input.mean", _np(model.input_mean)), name="input_centred")
    return g.op("Div", centred, g.const("input.std", _np(model.input_std)), name="input_normalised")


def _output(g: _Graph, model: RecurrentModel, top: str, y: str = contract.OUTPUT_NAME) -> None:
    head = model.head
    if model.output_mean is None:
        g.linear(top, head.weight, _np(head.bias), "head", out=y)
        return
    out = g.linear(top, head.weight, _np(head.bias), "head")
    scaled = g.op("Mul", out, g.const("output.std", _np(model.output_std)), name="output_scaled")
    g.op("Add", scaled, g.const("output.mean", _np(model.output_mean)), name=y)


def _flush_tiny(g: _Graph, value: str, name: str) -> str:
    """``value`` with every |v| < FLUSH_BELOW set to exactly 0 (see FLUSH_BELOW)."""
    # Constant nodes, not initializers: the two scalars are no weights (inspect counts initializers)
    limit = g.op("Constant", value=numpy_helper.from_array(np.array(FLUSH_BELOW, np.float32)))
    zero = g.op("Constant", value=numpy_helper.from_array(np.array(0.0, np.float32)))
    tiny = g.op("Less", g.op("Abs", value), limit)
    return g.op("Where", tiny, zero, value, name=f"{name}_flushed")


def _split_layers(g: _Graph, state: str, num_layers: int, hidden_size: int) -> list[str]:
    """The (B, L, H) state input -> per layer (B, H): one Reshape and one Split (6-8% faster a step than a
    Gather per layer, benchmarks/STEPPER_NOTES.md section 4)."""
    flat = g.op(
        "Reshape", state, g.const(f"{state}.flat", np.array([-1, num_layers * hidden_size], np.int64))
    )
    if num_layers == 1:
        return [flat]
    split = g.const(f"{state}.split", np.full(num_layers, hidden_size, dtype=np.int64))
    return g.op("Split", flat, split, axis=1, outputs=num_layers, name=f"{state}_layers")


def _stack_layers(g: _Graph, per_layer: list[str], output_name: str, hidden_size: int) -> None:
    """Per-layer (B, H) tensors -> the (B, L, H) state output, tiny values flushed to zero."""
    flat = per_layer[0] if len(per_layer) == 1 else g.op("Concat", *per_layer, axis=1)  # (B, L*H)
    flushed = _flush_tiny(g, flat, output_name)
    shape = np.array([-1, len(per_layer), hidden_size], dtype=np.int64)
    g.op("Reshape", flushed, g.const(f"{output_name}.shape", shape), name=output_name)


def build_info(
    model: RecurrentModel, vocabulary: list[str] | None = None, extra: dict | None = None
) -> ModelInfo:
    """The contract metadata describing ``model``'s single-step graph."""
    config = model.config
    tokens = config.input_kind == "tokens"
    input_spec = InputSpec(
        kind=config.input_kind,
        size=config.input_size,
        dtype="int64" if tokens else "float32",
        vocabulary=tuple(vocabulary) if vocabulary is not None else None,
        mean=config.input_mean,
        std=config.input_std,
    )
    output_spec = OutputSpec(
        kind=config.output_kind, size=config.output_size, mean=config.output_mean, std=config.output_std
    )
    return contract.make_info(
        cell=config.cell,
        num_layers=config.num_layers,
        hidden_size=config.hidden_size,
        input=input_spec,
        output=output_spec,
        edgernn_version=__version__,
        extra=extra,
    )


def build_step_model(model: RecurrentModel, info: ModelInfo) -> onnx.ModelProto:
    """The single-step ONNX model of ``model`` with explicit state, as the contract describes."""
    config = model.config
    g = _Graph()
    x = _input(g, model)
    per_layer = [_split_layers(g, s.input, config.num_layers, config.hidden_size) for s in info.states]
    next_states: list[list[str]] = [[] for _ in info.states]
    for layer in range(config.num_layers):
        outs = _cell(g, x, [states[layer] for states in per_layer], model, layer)
        for collected, out in zip(next_states, outs, strict=True):
            collected.append(out)
        x = outs[0]  # the next layer (or the head) reads this layer's h
    _output(g, model, x)
    for spec, per_layer in zip(info.states, next_states, strict=True):
        _stack_layers(g, per_layer, spec.output, config.hidden_size)
    return _make_model(g, info)


def _make_model(g: _Graph, info: ModelInfo, steps: int | None = None) -> onnx.ModelProto:
    """The model of ``g``'s nodes with the contract's inputs, outputs and metadata; ``steps``: x and y get a
    time axis of that length after the batch axis (the chunk graph)."""
    batch, time = contract.BATCH_AXIS_NAME, [] if steps is None else [steps]
    if info.input.kind == "tokens":
        x = helper.make_tensor_value_info(contract.INPUT_NAME, TensorProto.INT64, [batch, *time])
    else:
        x = helper.make_tensor_value_info(
            contract.INPUT_NAME, TensorProto.FLOAT, [batch, *time, info.input.size]
        )
    states_in = [
        helper.make_tensor_value_info(s.input, TensorProto.FLOAT, [batch, *s.shape]) for s in info.states
    ]
    states_out = [
        helper.make_tensor_value_info(s.output, TensorProto.FLOAT, [batch, *s.shape]) for s in info.states
    ]
    y = helper.make_tensor_value_info(
        contract.OUTPUT_NAME, TensorProto.FLOAT, [batch, *time, info.output.size]
    )
    name = f"edgernn_{info.cell}_step" if steps is None else f"edgernn_{info.cell}_chunk{steps}"
    graph = helper.make_graph(g.nodes, name, [x, *states_in], [y, *states_out], g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", info.opset)],
        ir_version=contract.IR_VERSION,
        producer_name="edgernn",
        producer_version=info.edgernn_version,
    )
    helper.set_model_props(model, {contract.METADATA_KEY: info.to_json()})
    return model
