"""The baselines ``edgernn bench`` measures the stepper against: PyTorch eager, a plain ONNX export of the same
weights run with session.run, and the floor (a model that does nothing, same call path)."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import cycle

import numpy as np

from edgernn.runtime.contract import METADATA_KEY, ModelInfo, parse_info, unsealed


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_model_from_onnx(path: str | os.PathLike):
    """Rebuild the RecurrentModel of an edgernn float32 step model from its weights (same maths: the
    combined biases go into ``bias_ih``). Raises KeyError or ValueError when the graph is not one the
    exporter wrote (quantized, or exported from your own module)."""
    import onnx
    import torch
    from onnx import numpy_helper

    from edgernn.models import ModelConfig, RecurrentModel

    proto = onnx.load(str(path))
    weights = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    info = _read_info(proto)
    config = _config_from(info, weights, ModelConfig)
    model = RecurrentModel(config).eval()
    state = {name: torch.from_numpy(np.array(value)) for name, value in _torch_weights(info, weights).items()}
    model.load_state_dict({**model.state_dict(), **state})
    return model


def _config_from(info: ModelInfo, weights: dict[str, np.ndarray], config_class):
    embedding = weights.get("embedding.weight")
    return config_class(
        cell=info.cell,
        input_kind=info.input.kind,
        input_size=info.input.size,
        hidden_size=info.hidden_size,
        num_layers=info.num_layers,
        output_size=info.output.size,
        output_kind=info.output.kind,
        embedding_size=embedding.shape[1] if embedding is not None else 32,
        input_mean=info.input.mean,
        input_std=info.input.std,
        output_mean=info.output.mean,
        output_std=info.output.std,
    )


def _torch_weights(info: ModelInfo, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    state = {"head.weight": weights["head.weight_t"].T, "head.bias": weights["head.bias"]}
    if info.input.kind == "tokens":
        state["embedding.weight"] = weights["embedding.weight"]
    for layer in range(info.num_layers):
        state[f"rnn.weight_ih_l{layer}"] = weights[f"l{layer}.ih.weight_t"].T
        state[f"rnn.weight_hh_l{layer}"] = weights[f"l{layer}.hh.weight_t"].T
        state[f"rnn.bias_ih_l{layer}"] = weights[f"l{layer}.ih.bias"]
        hh_bias = weights.get(f"l{layer}.hh.bias")  # only GRU keeps b_hh apart (r scales its n part)
        state[f"rnn.bias_hh_l{layer}"] = (
            np.zeros_like(weights[f"l{layer}.ih.bias"]) if hh_bias is None else hh_bias
        )
    for name in ("input.mean", "input.std", "output.mean", "output.std"):
        if name in weights:
            state[name.replace(".", "_")] = weights[name]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def _plain_module(model):
    """What a user writes around the same weights: embedding or features -> nn.GRU/LSTM/RNN -> head, one
    step per call, state in PyTorch's own ``(layers, batch, hidden)``."""
    from torch import nn

    class PlainStep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x, *state):
            features = self.model._embed(x.unsqueeze(1))  # (B, 1, E)
            out, new = self.model.rnn(features, state if len(state) == 2 else state[0])
            y = self.model.head(out[:, 0])
            if self.model.output_mean is not None:
                y = y * self.model.output_std + self.model.output_mean
            return (y, *new) if isinstance(new, tuple) else (y, new)

    return PlainStep().eval()


def _state_names(info: ModelInfo) -> list[str]:
    return [s.input for s in info.states]


def _baseline_onnx(
    plain, info: ModelInfo, threads: int, inputs: Iterator[np.ndarray]
) -> Callable[[], object]:
    import onnxruntime as ort
    import torch

    names = _state_names(info)
    example_x = torch.from_numpy(next(inputs))
    state = [np.zeros((info.num_layers, 1, info.hidden_size), np.float32) for _ in names]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        torch.onnx.export(
            plain,
            (example_x, *(torch.from_numpy(s) for s in state)),
            buffer,
            input_names=["x", *names],
            output_names=["y", *(f"{n}_next" for n in names)],
            opset_version=17,
            dynamo=False,
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = dict(zip(names, state, strict=True))

    def step() -> object:
        feed["x"] = next(inputs)
        outputs = session.run(None, feed)
        feed.update(zip(names, outputs[1:], strict=True))
        return outputs[0]

    return step


def _baseline_torch(plain, info: ModelInfo, inputs: Iterator[np.ndarray]) -> Callable[[], object]:
    import torch

    tensors = cycle([torch.from_numpy(next(inputs)) for _ in range(64)])
    state = [torch.zeros(info.num_layers, 1, info.hidden_size) for _ in info.states]

    def step() -> object:
        nonlocal state
        with torch.inference_mode():
            y, *state = plain(next(tensors), *state)
        return y

    return step


def floor_model(path: str | os.PathLike) -> bytes:
    """An edgernn model with the same inputs, outputs and metadata as the one at ``path`` that does no
    work: the states pass through, y is x itself when the shapes allow, else one tiny op (MatMul with a
    zero matrix, or a Gather from one). Needs onnx."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(path), load_external_data=False)
    info = _read_info(proto)
    nodes, initializers = [], []
    for spec in info.states:
        nodes.append(helper.make_node("Identity", [spec.input], [spec.output]))
    size = info.output.size
    if info.input.kind == "tokens":
        initializers.append(numpy_helper.from_array(np.zeros((info.input.size, size), np.float32), "zeros"))
        nodes.append(helper.make_node("Gather", ["zeros", "x"], ["y"], axis=0))
    elif info.input.size == size:
        nodes.append(helper.make_node("Identity", ["x"], ["y"]))
    else:
        initializers.append(numpy_helper.from_array(np.zeros((info.input.size, size), np.float32), "zeros"))
        nodes.append(helper.make_node("MatMul", ["x", "zeros"], ["y"]))
    graph = helper.make_graph(nodes, "floor", proto.graph.input, proto.graph.output, initializers)
    floor = helper.make_model(graph, opset_imports=proto.opset_import, ir_version=proto.ir_version)
    props = {p.key: p.value for p in proto.metadata_props}
    props[METADATA_KEY] = unsealed(info).to_json()  # another graph: the checksum is not its own
    helper.set_model_props(floor, props)
    return floor.SerializeToString()


def _read_info(proto) -> ModelInfo:
    """The edgernn metadata of an onnx ModelProto; KeyError if it has none."""
    return parse_info({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
