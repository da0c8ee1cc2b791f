"""Every example runs as written (with a small model so the test stays fast)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from edgernn.data import build_vocabulary
from edgernn.export import export_model
from edgernn.models import ModelConfig, RecurrentModel

ROOT = Path(__file__).parents[1]


def test_keyboard_streams_example(tmp_path):
    vocabulary = build_vocabulary(
        (ROOT / "examples" / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    )
    torch.manual_seed(0)
    config = ModelConfig(
        input_size=len(vocabulary), output_size=len(vocabulary), hidden_size=16, embedding_size=8
    )
    model_path = tmp_path / "chars.onnx"
    export_model(RecurrentModel(config), model_path, vocabulary=vocabulary)
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "keyboard_streams.py"), str(model_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for user in ("alice", "bob", "carol"):
        assert f"{user} typed" in done.stdout
    assert "keystrokes, median" in done.stdout
    generated = done.stdout.split("--- generated ---\n", 1)[1]
    assert generated.startswith("ROMEO:") and len(generated) > 200
