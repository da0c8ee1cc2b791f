"""Drop-in step modules for nn.GRU / nn.LSTM / nn.RNN, written as plain matmuls and elementwise ops.

``step_module(layer)`` takes the same ``(input, hx)`` and returns the same ``(output, h_n)`` (LSTM:
``(output, (h_n, c_n))``) as ``layer``, using ``layer``'s own parameter tensors (shared, not copied),
so a user's forward runs unchanged around it. Exported, it becomes MatMul/Gemm, Slice and elementwise
nodes: no ONNX GRU/LSTM/RNN op, no loop. Math and gate order follow PyTorch's documentation:

- GRU (gates r, z, n): ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = n + z * (h - n)``
- LSTM (gates i, f, g, o): ``c' = f * c + i * g``, ``h' = o * tanh(c')``
- RNN: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`` (or relu)

Inter-layer dropout is not applied: the step modules stand for the layer in eval mode.
"""

from __future__ import annotations

from copy import deepcopy

import torch
import torch.nn.functional as F
from torch import nn

RECURRENT_TYPES = (nn.GRU, nn.LSTM, nn.RNN)


def cell_name(layer: nn.RNNBase) -> str:
    """The contract's cell name of ``layer``: gru, lstm, rnn_tanh or rnn_relu."""
    if isinstance(layer, nn.RNN):
        return f"rnn_{layer.nonlinearity}"
    return "lstm" if isinstance(layer, nn.LSTM) else "gru"


class _Step(nn.Module):
    """Shared plumbing: parameters, sequence layout and the loop over layers and steps."""

    def __init__(self, layer: nn.RNNBase):
        super().__init__()
        self.num_layers, self.hidden_size = layer.num_layers, layer.hidden_size
        self.batch_first = layer.batch_first
        for name, parameter in layer.named_parameters(recurse=False):
            self.register_parameter(name, parameter)  # weight_ih_l0, ... shared with ``layer``

    def weights(self, layer: int) -> tuple[torch.Tensor | None, ...]:
        """W_ih, W_hh, b_ih, b_hh of one layer; the biases are None for a layer made with bias=False."""
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        return tuple(getattr(self, f"{name}_l{layer}", None) for name in names)

    def run(self, input: torch.Tensor, states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """input (B, T, I) or (T, B, I); states: (L, B, H) each -> output in input's layout, final states."""
        time_axis = 1 if self.batch_first else 0
        per_layer = [[s[layer] for s in states] for layer in range(self.num_layers)]  # (B, H) each
        outputs = []
        for step in range(input.shape[time_axis]):
            x = input.select(time_axis, step)  # (B, I)
            for layer in range(self.num_layers):
                per_layer[layer] = self.cell(x, per_layer[layer], layer)
                x = per_layer[layer][0]  # h of this layer feeds the next
            outputs.append(x)
        output = torch.stack(outputs, time_axis)
        return output, [torch.stack([p[i] for p in per_layer]) for i in range(len(states))]

    def initial(self, input: torch.Tensor) -> torch.Tensor:
        batch = input.shape[0 if self.batch_first else 1]
        return input.new_zeros(self.num_layers, batch, self.hidden_size)

    def forward(
        self, input: torch.Tensor, hx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The one-state signature of nn.GRU / nn.RNN; LSTMStep overrides it for (h, c)."""
        output, (h_n,) = self.run(input, [self.initial(input) if hx is None else hx])
        return output, h_n

    def cell(self, x: torch.Tensor, state: list[torch.Tensor], layer: int) -> list[torch.Tensor]:
        raise NotImplementedError


class GRUStep(_Step):
    """nn.GRU as plain ops: forward(input, hx=None) -> (output, h_n)."""

    def cell(self, x: torch.Tensor, state: list[torch.Tensor], layer: int) -> list[torch.Tensor]:
        (h,) = state
        w_ih, w_hh, b_ih, b_hh = self.weights(layer)
        size = self.hidden_size
        gi, gh = F.linear(x, w_ih, b_ih), F.linear(h, w_hh, b_hh)  # (B, 3H): r, z, n
        rz = torch.sigmoid(gi[:, : 2 * size] + gh[:, : 2 * size])
        r, z = rz[:, :size], rz[:, size:]
        n = torch.tanh(gi[:, 2 * size :] + r * gh[:, 2 * size :])
        return [n + z * (h - n)]


class LSTMStep(_Step):
    """nn.LSTM as plain ops: forward(input, hx=None) -> (output, (h_n, c_n))."""

    def forward(
        self, input: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        start = [self.initial(input), self.initial(input)] if hx is None else list(hx)
        output, (h_n, c_n) = self.run(input, start)
        return output, (h_n, c_n)

    def cell(self, x: torch.Tensor, state: list[torch.Tensor], layer: int) -> list[torch.Tensor]:
        h, c = state
        w_ih, w_hh, b_ih, b_hh = self.weights(layer)
        size = self.hidden_size
        gates = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)  # (B, 4H): i, f, g, o
        i, f = torch.sigmoid(gates[:, :size]), torch.sigmoid(gates[:, size : 2 * size])
        g, o = torch.tanh(gates[:, 2 * size : 3 * size]), torch.sigmoid(gates[:, 3 * size :])
        c_next = f * c + i * g
        return [o * torch.tanh(c_next), c_next]


class RNNStep(_Step):
    """nn.RNN (tanh or relu) as plain ops: forward(input, hx=None) -> (output, h_n)."""

    def __init__(self, layer: nn.RNN):
        super().__init__(layer)
        self.activation = torch.tanh if layer.nonlinearity == "tanh" else torch.relu

    def cell(self, x: torch.Tensor, state: list[torch.Tensor], layer: int) -> list[torch.Tensor]:
        w_ih, w_hh, b_ih, b_hh = self.weights(layer)
        return [self.activation(F.linear(x, w_ih, b_ih) + F.linear(state[0], w_hh, b_hh))]


def step_module(layer: nn.RNNBase) -> _Step:
    """The plain-ops twin of ``layer`` (unidirectional, no projection), sharing its parameters."""
    if isinstance(layer, nn.LSTM):
        return LSTMStep(layer)
    return RNNStep(layer) if isinstance(layer, nn.RNN) else GRUStep(layer)


def with_step_modules(module: nn.Module) -> nn.Module:
    """A copy of ``module`` sharing its parameters and buffers, every nn.GRU/LSTM/RNN swapped for its step
    module; ``module`` itself is left untouched."""
    shared = {id(t): t for t in (*module.parameters(), *module.buffers())}
    twin = deepcopy(module, memo=shared)
    if isinstance(twin, RECURRENT_TYPES):
        return step_module(twin)
    for name, layer in list(twin.named_modules()):
        if isinstance(layer, RECURRENT_TYPES):
            parent, _, child = name.rpartition(".")
            setattr(twin.get_submodule(parent), child, step_module(layer))
    return twin
