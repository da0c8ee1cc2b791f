"""The chunk graph: ``T`` steps in one call, with the step graph's state contract.

``Stepper.run`` feeds whole chunks through it: one onnxruntime call per ``T`` steps instead of ``T``, and
the input projection of every layer (and the head) done for all ``T`` steps as one matrix product; only
the recurrence itself runs step by step, unrolled (no Loop, no Scan, no RNN op).

==============================  ==================================  ==================================
tensor                          shape                               meaning
==============================  ==================================  ==================================
input  ``x``                    ``(batch, T)`` / ``(batch, T, F)``  T steps of tokens / features
input  ``h`` (``c``)            ``(batch, layers, hidden)``         state before the first step
output ``y``                    ``(batch, T, output_size)``         one output per step
output ``h_next`` (``c_next``)  ``(batch, layers, hidden)``         state after the T-th step
==============================  ==================================  ==================================

Its metadata is the step model's with ``steps_per_call = T``; the exporter writes it next to the step
model (``edgernn.runtime.chunk.chunk_path``) after ``verify_chunk`` checked it against PyTorch.

Inside, time runs major: x becomes ``(T*B, ...)``, each layer's input projection is one MatMul over all
steps, split into T ``(B, ...)`` blocks. Each gate group has its own weight slice, so a step's recurrent
MatMul adds the precomputed block and feeds its activation directly (onnxruntime fuses the three into one
Gemm node) and no step splits a gate tensor it does not need to.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from edgernn.export.graph import _Graph, _input, _layer_weights, _np, _output, _stack_layers
from edgernn.export.verify import ParityReport, _Checker, _random_inputs, _torch_run
from edgernn.models import RecurrentModel
from edgernn.runtime import contract
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ParityError

CHUNK_STEPS = 32
"""Steps per call of the chunk graph the exporter writes by default (see benchmarks/STEPPER_NOTES.md)."""

CHUNK_BATCH_FOR_LOOP = 3


@dataclass(frozen=True)
class _GateGroup:
    """Gates computed by one MatMul pair: PyTorch rows of W_ih/W_hh, and the activation they share."""

    name: str
    rows: tuple[slice, ...]
    activation: str  # "Sigmoid", "Tanh", "Relu", or "candidate" (GRU's n, built by hand)


def _gate_groups(cell: str, hidden: int) -> tuple[_GateGroup, ...]:
    h = hidden
    if cell == "gru":  # PyTorch order r, z, n
        return (
            _GateGroup("r", (slice(0, h),), "Sigmoid"),
            _GateGroup("z", (slice(h, 2 * h),), "Sigmoid"),
            _GateGroup("n", (slice(2 * h, 3 * h),), "candidate"),
        )
    if cell == "lstm":  # PyTorch order i, f, g, o: the three sigmoid gates together, then g
        return (
            _GateGroup("ifo", (slice(0, 2 * h), slice(3 * h, 4 * h)), "Sigmoid"),
            _GateGroup("g", (slice(2 * h, 3 * h),), "Tanh"),
        )
    return (_GateGroup("a", (slice(0, h),), "Tanh" if cell == "rnn_tanh" else "Relu"),)


class _ChunkGraph(_Graph):
    """A ``_Graph`` that also declares the shapes of the per-step blocks.

    Shape inference cannot tell that a Split of ``(T*B, n)`` into T parts gives ``(B, n)`` parts; left
    alone, every part gets its own unknown size and onnxruntime's session setup grows about cubically
    with T (0.8 s at T = 32 for a 2-layer GRU, 0.05 s once declared).
    """

    def __init__(self) -> None:
        super().__init__()
        self.value_info: list[onnx.ValueInfoProto] = []

    def declare_batch_rows(self, names: list[str], width: int) -> None:
        for name in names:
            shape = [contract.BATCH_AXIS_NAME, width]
            self.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))


def _rows(array: np.ndarray, group: _GateGroup) -> np.ndarray:
    return np.concatenate([array[r] for r in group.rows], axis=0)


class _Layer:
    """One layer's weights, split by gate group, as graph constants."""

    def __init__(self, g: _Graph, model: RecurrentModel, layer: int):
        w_ih, w_hh, b_ih, b_hh = (_np(t) for t in _layer_weights(model, layer))
        self.hidden = model.config.hidden_size
        self.groups = _gate_groups(model.config.cell, self.hidden)
        self.name = f"l{layer}"
        self.w_ih, self.w_hh, self.bias = {}, {}, {}
        for group in self.groups:
            prefix = f"{self.name}.{group.name}"
            self.w_ih[group.name] = g.const(f"{prefix}.ih.weight_t", _rows(w_ih, group).T)
            self.w_hh[group.name] = g.const(f"{prefix}.hh.weight_t", _rows(w_hh, group).T)
            # b_hh joins the input-side bias, except GRU's n, where r scales it with W_hn h
            both = _rows(b_ih, group) + (0 if group.activation == "candidate" else _rows(b_hh, group))
            self.bias[group.name] = g.const(f"{prefix}.bias", both)
            if group.activation == "candidate":
                self.bias["n_hh"] = g.const(f"{prefix}.hh.bias", _rows(b_hh, group))
        if model.config.cell == "lstm":
            self.split_ifo = g.const(f"{self.name}.split_ifo", np.full(3, self.hidden, dtype=np.int64))

    def project(self, g: _ChunkGraph, sequence: str, steps: int) -> dict[str, list[str]]:
        """(T*B, I) layer input -> per gate group, T blocks (B, gates) of x @ W_ih^T + bias."""
        blocks = {}
        for group in self.groups:
            name = f"{self.name}.{group.name}"
            projected = g.op("Add", g.op("MatMul", sequence, self.w_ih[group.name]), self.bias[group.name])
            parts = g.op("Split", projected, axis=0, outputs=steps, name=f"{name}_steps")
            blocks[group.name] = [parts] if steps == 1 else parts
            g.declare_batch_rows(blocks[group.name], sum(r.stop - r.start for r in group.rows))
        return blocks

    def step(self, g: _Graph, blocks: dict[str, str], states: list[str]) -> list[str]:
        """One step from this step's input blocks and the state [h] or [h, c]; returns the next state."""
        h = states[0]
        gates = {
            group.name: g.op(
                group.activation, g.op("Add", g.op("MatMul", h, self.w_hh[group.name]), blocks[group.name])
            )
            for group in self.groups
            if group.activation != "candidate"
        }
        if "n" in blocks:  # GRU: n = tanh(x W_in + b_in + r * (h W_hn + b_hn)); h' = n + z * (h - n)
            recurrent = g.op("Add", g.op("MatMul", h, self.w_hh["n"]), self.bias["n_hh"])
            n = g.op("Tanh", g.op("Add", blocks["n"], g.op("Mul", gates["r"], recurrent)))
            return [g.op("Add", n, g.op("Mul", gates["z"], g.op("Sub", h, n)))]
        if "ifo" in gates:  # LSTM: c' = f * c + i * g; h' = o * tanh(c')
            i, f, o = g.op("Split", gates["ifo"], self.split_ifo, axis=1, outputs=3)
            c_next = g.op("Add", g.op("Mul", f, states[1]), g.op("Mul", i, gates["g"]))
            return [g.op("Mul", o, g.op("Tanh", c_next)), c_next]
        return [gates["a"]]


def build_chunk_model(
    model: RecurrentModel, step_info: ModelInfo, steps: int = CHUNK_STEPS
) -> onnx.ModelProto:
    """The ``steps``-step ONNX model of ``model``: same states as the step model, x and y with a time axis."""
    config = model.config
    g = _ChunkGraph()
    sequence = _input(g, model, _time_major(g, config.input_kind == "tokens", config.input_size))
    layer_states = _split_states(g, step_info, config.num_layers)
    finals: list[list[str]] = []
    for layer in range(config.num_layers):
        cell = _Layer(g, model, layer)
        blocks = cell.project(g, sequence, steps)
        states, tops = layer_states[layer], []
        for t in range(steps):
            states = cell.step(g, {name: parts[t] for name, parts in blocks.items()}, states)
            tops.append(states[0])
        finals.append(states)
        sequence = tops[0] if steps == 1 else g.op("Concat", *tops, axis=0)  # (T*B, H)
    _output(g, model, sequence, "y_time_major")
    _batch_major_output(g, steps, config.output_size)
    for index, spec in enumerate(step_info.states):
        _stack_layers(g, [states[index] for states in finals], spec.output, config.hidden_size)
    return _make_chunk_model(g, replace(step_info, steps_per_call=steps))


def _time_major(g: _Graph, tokens: bool, input_size: int) -> str:
    """x (B, T[, F]) -> (T*B[, F]): step t's rows are the t-th block of B."""
    perm = [1, 0] if tokens else [1, 0, 2]
    transposed = g.op("Transpose", contract.INPUT_NAME, perm=perm, name="x_time_major")
    shape = np.array([-1] if tokens else [-1, input_size], dtype=np.int64)
    return g.op("Reshape", transposed, g.const("x_steps.shape", shape), name="x_steps")


def _split_states(g: _Graph, info: ModelInfo, num_layers: int) -> list[list[str]]:
    """State inputs (B, L, H) -> per layer, [h] or [h, c] as (B, H)."""
    per_layer: list[list[str]] = [[] for _ in range(num_layers)]
    for spec in info.states:
        for layer in range(num_layers):
            index = g.const(f"{spec.input}.layer{layer}", np.array(layer, dtype=np.int64))
            per_layer[layer].append(g.op("Gather", spec.input, index, axis=1, name=f"l{layer}_{spec.input}"))
    return per_layer


def _batch_major_output(g: _Graph, steps: int, output_size: int) -> None:
    shape = g.const("y.shape", np.array([steps, -1, output_size], dtype=np.int64))
    by_step = g.op("Reshape", "y_time_major", shape, name="y_by_step")  # (T, B, O)
    g.op("Transpose", by_step, perm=[1, 0, 2], name=contract.OUTPUT_NAME)  # (B, T, O)


def _make_chunk_model(g: _ChunkGraph, info: ModelInfo) -> onnx.ModelProto:
    batch, steps = contract.BATCH_AXIS_NAME, info.steps_per_call
    if info.input.kind == "tokens":
        x = helper.make_tensor_value_info(contract.INPUT_NAME, TensorProto.INT64, [batch, steps])
    else:
        x = helper.make_tensor_value_info(
            contract.INPUT_NAME, TensorProto.FLOAT, [batch, steps, info.input.size]
        )
    y = helper.make_tensor_value_info(
        contract.OUTPUT_NAME, TensorProto.FLOAT, [batch, steps, info.output.size]
    )
    states_in = [
        helper.make_tensor_value_info(s.input, TensorProto.FLOAT, [batch, *s.shape]) for s in info.states
    ]
    states_out = [
        helper.make_tensor_value_info(s.output, TensorProto.FLOAT, [batch, *s.shape]) for s in info.states
    ]
    graph = helper.make_graph(
        g.nodes,
        f"edgernn_{info.cell}_chunk{steps}",
        [x, *states_in],
        [y, *states_out],
        g.initializers,
        value_info=g.value_info,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", info.opset)],
        ir_version=contract.IR_VERSION,
        producer_name="edgernn",
        producer_version=info.edgernn_version,
    )
    helper.set_model_props(model, {contract.METADATA_KEY: info.to_json()})
    return model


# --- verification ------------------------------------------------------------------------------------


def verify_chunk(model: RecurrentModel, proto: onnx.ModelProto, seed: int = 0) -> ParityReport:
    """Check the chunk graph ``proto`` of ``model`` against PyTorch, as ``verify_export`` checks a step graph.

    ``chunk_one_call``: batch 1 from a random state, one call of T steps. ``chunk_closed_loop``: batch 3,
    at least ``CLOSED_LOOP_STEPS`` steps, chunk after chunk with the graph's own state fed back.
    ``chunk_after_reset``: the initial state again, then two chunks. Raises ParityError listing every
    mismatch, else returns the largest errors.
    """
    checker = _Checker()
    for check in ("chunk_one_call", "chunk_closed_loop", "chunk_after_reset"):
        checker.report.tolerances[check] = (contract.CLOSED_LOOP_ATOL, contract.CLOSED_LOOP_RTOL)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ParityError([f"onnx.checker (chunk graph): {exc}"]) from None
    info = chunk_info(proto)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    model = model.eval()
    rng = np.random.default_rng(seed)
    steps = info.steps_per_call
    start = tuple((0.5 * rng.standard_normal((1, *s.shape))).astype(np.float32) for s in info.states)
    _check_chunks(checker, "chunk_one_call", model, session, info, _random_inputs(info, 1, steps, rng), start)
    calls = -(-contract.CLOSED_LOOP_STEPS // steps)
    loop_xs = _random_inputs(info, CHUNK_BATCH_FOR_LOOP, calls * steps, rng)
    _check_chunks(checker, "chunk_closed_loop", model, session, info, loop_xs, None)
    reset_xs = _random_inputs(info, CHUNK_BATCH_FOR_LOOP, 2 * steps, rng)
    _check_chunks(checker, "chunk_after_reset", model, session, info, reset_xs, None)
    if checker.mismatches:
        raise ParityError(checker.mismatches)
    return checker.report


def chunk_info(proto: onnx.ModelProto) -> ModelInfo:
    """The edgernn metadata of a chunk (or step) model."""
    props = {p.key: p.value for p in proto.metadata_props}
    return contract.parse_info(props.get(contract.METADATA_KEY, ""))


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """PyTorch on one thread for a while: a tiny recurrence gains nothing from more, and on a busy machine
    its spinning thread pool made a 0.03 s reference take seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _check_chunks(
    checker: _Checker,
    check: str,
    model: RecurrentModel,
    session: ort.InferenceSession,
    info: ModelInfo,
    xs: np.ndarray,
    start: tuple[np.ndarray, ...] | None,
) -> None:
    """Run xs (B, K*T, ...) through the chunk graph K calls in a row, state fed back; compare with torch."""
    steps, batch = info.steps_per_call, xs.shape[0]
    state = start or tuple(np.full((batch, *s.shape), s.initial, np.float32) for s in info.states)
    names = [contract.OUTPUT_NAME, *(s.output for s in info.states)]
    ys = []
    for begin in range(0, xs.shape[1], steps):
        feed = {contract.INPUT_NAME: np.ascontiguousarray(xs[:, begin : begin + steps])}
        feed.update({s.input: value for s, value in zip(info.states, state, strict=True)})
        y, *state = session.run(names, feed)
        ys.append(y)
    with one_torch_thread():
        ys_want, state_want = _torch_run(model, xs, start)
    checker.compare(check, contract.OUTPUT_NAME, np.concatenate(ys, axis=1), ys_want, time_axis=1)
    for spec, got, want in zip(info.states, state, state_want, strict=True):
        checker.compare(check, f"{spec.output} (final)", got, want)
