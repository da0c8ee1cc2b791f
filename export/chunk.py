"""The chunk graph: ``T`` steps in one call, with the step graph's state contract.

``Stepper.run`` feeds whole chunks through it: one onnxruntime call per ``T`` steps instead of ``T``.

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

Inside, each layer is one ONNX ``GRU`` / ``LSTM`` / ``RNN`` node over all T steps (time major, the
weights reordered from PyTorch's gate order to ONNX's), and the head one MatMul over all steps.
onnxruntime runs such a node as one kernel: the input projection of all T steps as one matrix product,
then the recurrence in a C++ loop, with no per-step node dispatch. That makes a chunk step about half
the cost of the same cell unrolled into T x ~9 nodes (benchmarks/STEPPER_NOTES.md, section 6). The step
graph keeps the unrolled cell: quantizers, C generators and older runtimes need it; this file is only a
float32 fast path for ``run``, and every state output still goes through the denormal flush.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import torch

from edgernn.export.graph import (
    _Graph,
    _input,
    _layer_weights,
    _make_model,
    _np,
    _output,
    _split_layers,
    _stack_layers,
)
from edgernn.export.verify import ParityReport, _Checker, _random_inputs, _torch_run
from edgernn.models import RecurrentModel
from edgernn.runtime import contract
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ParityError

CHUNK_STEPS = 32
"""Steps per call of the chunk graph the exporter writes by default (see benchmarks/STEPPER_NOTES.md)."""

CHUNK_BATCH_FOR_LOOP = 3

# PyTorch stores gate blocks as GRU r, z, n and LSTM i, f, g, o; the ONNX ops want z, r, h and i, o, f, c.
_ONNX_GATE_ORDER = {"gru": (1, 0, 2), "lstm": (0, 3, 1, 2), "rnn_tanh": (0,), "rnn_relu": (0,)}


def _onnx_gates(array: np.ndarray, cell: str, hidden: int) -> np.ndarray:
    """PyTorch's stacked gate blocks (rows) in the ONNX op's order."""
    return np.concatenate([array[k * hidden : (k + 1) * hidden] for k in _ONNX_GATE_ORDER[cell]], axis=0)


def _recurrent_layer(
    g: _Graph, model: RecurrentModel, layer: int, sequence: str, states: list[str]
) -> tuple[str, list[str]]:
    """One ONNX RNN-op node over the whole chunk: (T, B, I) sequence and (1, B, H) states in;
    returns the (T, B, H) outputs and the final (B, H) states."""
    config = model.config
    cell, hidden, name = config.cell, config.hidden_size, f"l{layer}"
    w_ih, w_hh, b_ih, b_hh = (_onnx_gates(_np(t), cell, hidden) for t in _layer_weights(model, layer))
    weights = [
        g.const(f"{name}.W", w_ih[None]),
        g.const(f"{name}.R", w_hh[None]),
        g.const(f"{name}.B", np.concatenate([b_ih, b_hh])[None]),
        "",  # sequence_lens: every sequence is T long
    ]
    # linear_before_reset=1 is PyTorch's GRU: n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    op, attrs = {"gru": ("GRU", {"linear_before_reset": 1}), "lstm": ("LSTM", {})}.get(
        cell, ("RNN", {"activations": ["Tanh" if cell == "rnn_tanh" else "Relu"]})
    )
    y, *finals = g.op(  # Y, then Y_h (and Y_c): one final output per state
        op, sequence, *weights, *states, hidden_size=hidden, outputs=1 + len(states), name=name, **attrs
    )
    axis0, axis1 = (
        g.const(f"{name}.axis0", np.array([0], np.int64)),
        g.const(f"{name}.axis1", np.array([1], np.int64)),
    )
    outputs = g.op("Squeeze", y, axis1, name=f"{name}_outputs")  # (T, 1, B, H) -> (T, B, H)
    return outputs, [g.op("Squeeze", f, axis0, name=f"{f}_final") for f in finals]


def build_chunk_model(
    model: RecurrentModel, step_info: ModelInfo, steps: int = CHUNK_STEPS
) -> onnx.ModelProto:
    """The ``steps``-step ONNX model of ``model``: same states as the step model, x and y with a time axis."""
    config = model.config
    g = _Graph()
    sequence = g.op("Transpose", _input(g, model), perm=[1, 0, 2], name="x_time_major")  # (T, B, F or E)
    per_state = [_split_layers(g, s.input, config.num_layers, config.hidden_size) for s in step_info.states]
    axis0 = g.const("states.axis0", np.array([0], np.int64))
    finals: list[list[str]] = []
    for layer in range(config.num_layers):
        # (B, H) -> (1, B, H): the ONNX ops put num_directions first
        states = [g.op("Unsqueeze", layers[layer], axis0) for layers in per_state]
        sequence, layer_finals = _recurrent_layer(g, model, layer, sequence, states)
        finals.append(layer_finals)
    _output(g, model, sequence, "y_time_major")  # (T, B, O)
    g.op("Transpose", "y_time_major", perm=[1, 0, 2], name=contract.OUTPUT_NAME)
    for index, spec in enumerate(step_info.states):
        _stack_layers(g, [states[index] for states in finals], spec.output, config.hidden_size)
    return _make_model(g, replace(step_info, steps_per_call=steps), steps)


# --- verification ------------------------------------------------------------------------------------


def verify_chunk(model: RecurrentModel, proto: onnx.ModelProto, seed: int = 0) -> ParityReport:
    """Check the chunk graph ``proto`` of ``model`` against PyTorch, as ``verify_export`` checks a step graph.

    ``chunk_one_call``: batch 1 from a random state, one call of T steps. ``chunk_closed_loop``: batch 3,
    at least ``CLOSED_LOOP_STEPS`` steps, chunk after chunk with the graph's own state fed back.
    ``chunk_after_reset``: the initial state again, then two chunks. Raises ParityError listing every
    mismatch, else returns the largest errors.
    """
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ParityError([f"onnx.checker (chunk graph): {exc}"]) from None
    info = chunk_info(proto)
    checker = _Checker(info)  # y judged on the model's scale, as the step graph's checks
    for check in ("chunk_one_call", "chunk_closed_loop", "chunk_after_reset"):
        checker.report.tolerances[check] = (contract.CLOSED_LOOP_ATOL, contract.CLOSED_LOOP_RTOL)
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
        raise ParityError(checker.mismatches, checker.report)
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
