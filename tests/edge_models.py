"""Small verified edgernn files for the deployment and command tests: exported from untrained models (the
weights are random, the graphs are the real ones), float32 with its chunk graph, int8, fp16, a feature
model and a bring-your-own module."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgernn.data import build_vocabulary, encode, split_train_validation
from edgernn.export import EvaluationData, QuantizeConfig, export_model, export_module
from edgernn.models import ModelConfig, RecurrentModel

SHAKESPEARE = Path(__file__).parents[1] / "examples" / "data" / "tinyshakespeare.txt"
TEXT = SHAKESPEARE.read_text(encoding="utf-8")[:24_000]
VOCAB = build_vocabulary(TEXT)


def text_data() -> EvaluationData:
    train, validation = split_train_validation(encode(TEXT, VOCAB))
    return EvaluationData(
        train, "loss", "tinyshakespeare[:24000]", inputs=validation[:-1], targets=validation[1:]
    )


def char_model(cell: str = "gru", hidden_size: int = 32, num_layers: int = 1) -> RecurrentModel:
    torch.manual_seed(0)
    config = ModelConfig(
        cell=cell, input_size=len(VOCAB), output_size=len(VOCAB), hidden_size=hidden_size,
        num_layers=num_layers, embedding_size=16,
    )  # fmt: skip
    return RecurrentModel(config).eval()


def export_char(path: Path, mode: str = "none", method: str = "auto", **model_options) -> Path:
    """A character model over VOCAB at ``path`` (float32 with its chunk graph, or quantized, forced past
    the metric gate: an untrained model's loss is no measure of anything)."""
    extra = {"task": "charlm"}
    quantize = None if mode == "none" else QuantizeConfig(mode, method, force=True)
    data = None if quantize is None else text_data()
    model = char_model(**model_options)
    export_model(model, path, vocabulary=VOCAB, extra_metadata=extra, quantize=quantize, data=data)
    return path


class SensorGRU(nn.Module):
    """A bring-your-own model: Linear -> GRU (2 layers) -> LayerNorm -> Linear, 6 features in, 3 out."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.gru = nn.GRU(16, 24, num_layers=2, batch_first=True)
        self.norm = nn.LayerNorm(24)
        self.out = nn.Linear(24, 3)

    def forward(self, x, state=None):
        z, state = self.gru(torch.relu(self.inp(x)), state)
        return self.out(self.norm(z)), state


def export_byo(path: Path, extra_metadata: dict | None = None) -> Path:
    torch.manual_seed(0)
    export_module(SensorGRU().eval(), path, example_input=torch.randn(1, 5, 6), extra_metadata=extra_metadata)
    return path
