"""Recurrent models with explicit state: ``forward(x, state) -> (y, state)``.

State is a tuple of tensors laid out as the ONNX contract lays it out, batch first:
``(h,)`` for GRU and vanilla RNN, ``(h, c)`` for LSTM, each ``(batch, num_layers, hidden_size)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from edgernn.runtime.contract import CELLS, INPUT_KINDS, OUTPUT_KINDS
from edgernn.runtime.errors import InputError

State = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; saved as JSON next to the safetensors weights.

    ``input_size`` is the vocabulary size for token inputs and the feature count for feature inputs.
    ``input_mean``/``input_std`` normalise raw features inside the model; ``output_mean``/``output_std``
    turn regression outputs back into the user's units.
    """

    cell: str = "gru"
    input_kind: str = "tokens"
    input_size: int = 65
    hidden_size: int = 128
    num_layers: int = 1
    output_size: int = 65
    output_kind: str = "logits"
    embedding_size: int = 32
    dropout: float = 0.0
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None
    output_mean: tuple[float, ...] | None = None
    output_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        problems = []
        for name, value, choices in (
            ("cell", self.cell, CELLS),
            ("input_kind", self.input_kind, INPUT_KINDS),
            ("output_kind", self.output_kind, OUTPUT_KINDS),
        ):
            if value not in choices:
                problems.append(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        for name in ("input_size", "hidden_size", "num_layers", "output_size", "embedding_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout!r}")
        problems += _check_stats(self, "input", self.input_size)
        problems += _check_stats(self, "output", self.output_size)
        if problems:
            raise InputError("invalid model config: " + "; ".join(problems))

    @property
    def state_size(self) -> int:
        return 2 if self.cell == "lstm" else 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, doc: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise InputError(f"invalid model config: unknown field(s) {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in doc.items()}
        return cls(**values)


def _check_stats(config: ModelConfig, prefix: str, size: int) -> list[str]:
    mean, std = getattr(config, f"{prefix}_mean"), getattr(config, f"{prefix}_std")
    if (mean is None) != (std is None):
        return [f"{prefix}_mean and {prefix}_std go together"]
    if mean is None:
        return []
    if prefix == "input" and config.input_kind == "tokens":
        return ["token inputs take no input_mean/input_std"]
    if len(mean) != size or len(std) != size:
        return [f"{prefix}_mean/{prefix}_std need {size} values, got {len(mean)}/{len(std)}"]
    if any(s <= 0 for s in std):
        return [f"{prefix}_std must be positive"]
    return []


_RNN_CLASSES = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn_tanh": nn.RNN, "rnn_relu": nn.RNN}


class RecurrentModel(nn.Module):
    """Embedding or raw features -> stacked GRU/LSTM/RNN -> linear head, one output per step."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        if config.input_kind == "tokens":
            self.embedding = nn.Embedding(config.input_size, config.embedding_size)
            rnn_input_size = config.embedding_size
        else:
            self.embedding = None
            rnn_input_size = config.input_size
        kwargs = {"nonlinearity": config.cell[4:]} if config.cell.startswith("rnn_") else {}
        self.rnn = _RNN_CLASSES[config.cell](
            rnn_input_size,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            **kwargs,
        )
        self.head = nn.Linear(config.hidden_size, config.output_size)
        self._register_stats("input", config.input_mean, config.input_std)
        self._register_stats("output", config.output_mean, config.output_std)

    def _register_stats(self, prefix: str, mean, std) -> None:
        # Buffers (not parameters): saved with the weights, never trained.
        if mean is None:
            setattr(self, f"{prefix}_mean", None)
            setattr(self, f"{prefix}_std", None)
            return
        self.register_buffer(f"{prefix}_mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer(f"{prefix}_std", torch.tensor(std, dtype=torch.float32))

    def initial_state(self, batch_size: int = 1) -> State:
        """Zero state, ``(batch, num_layers, hidden_size)`` per state tensor."""
        shape = (batch_size, self.config.num_layers, self.config.hidden_size)
        device = self.head.weight.device
        return tuple(torch.zeros(shape, device=device) for _ in range(self.config.state_size))

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Run a sequence or a single step.

        x: tokens ``(B, T)`` int64 or features ``(B, T, F)`` float32; a single step drops the T axis
        (``(B,)`` or ``(B, F)``). Returns y ``(B, T, O)`` (or ``(B, O)`` for a step) and the next state.
        """
        single_step = x.dim() == (1 if self.config.input_kind == "tokens" else 2)
        if single_step:
            x = x.unsqueeze(1)
        batch_size = x.shape[0]
        if state is None:
            state = self.initial_state(batch_size)
        features = self._embed(x)  # (B, T, E)
        torch_state = tuple(s.transpose(0, 1).contiguous() for s in state)  # (L, B, H)
        hidden, torch_state = self.rnn(features, torch_state if len(torch_state) == 2 else torch_state[0])
        if not isinstance(torch_state, tuple):
            torch_state = (torch_state,)
        y = self.head(hidden)  # (B, T, O)
        if self.output_mean is not None:
            y = y * self.output_std + self.output_mean
        next_state = tuple(s.transpose(0, 1) for s in torch_state)  # (B, L, H)
        return (y.squeeze(1) if single_step else y), next_state

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            return self.embedding(x)
        if self.input_mean is not None:
            return (x - self.input_mean) / self.input_std
        return x


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
