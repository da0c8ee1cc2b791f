"""Training writes a complete run directory; checkpoints round-trip without pickle and refuse bad files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from edgernn.checkpoint import load_checkpoint, save_checkpoint
from edgernn.data import build_vocabulary, encode, split_train_validation, stream_chunks
from edgernn.models import ModelConfig, RecurrentModel
from edgernn.runtime.errors import InputError
from edgernn.train import TrainConfig, train_charlm

SHAKESPEARE = Path(__file__).parents[1] / "examples" / "data" / "tinyshakespeare.txt"


@pytest.fixture(scope="module")
def small_text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "small.txt"
    path.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    return path


def tiny_train(text: Path, run_dir: Path, **overrides) -> object:
    settings = dict(
        budget_minutes=None, max_steps=60, batch_size=16, seq_len=32, eval_every=30, eval_batch_size=8
    )
    settings.update(overrides)
    return train_charlm(
        text,
        run_dir,
        ModelConfig(cell="gru", hidden_size=32, embedding_size=16),
        TrainConfig(**settings),
        progress=False,
    )


def test_train_writes_a_run_directory_and_learns(small_text, tmp_path):
    result = tiny_train(small_text, tmp_path / "run")
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "metrics.json"} <= files
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    vocabulary = json.loads((tmp_path / "run" / "vocab.json").read_text())
    assert vocabulary == sorted(set(small_text.read_text(encoding="utf-8")))
    assert metrics["steps"] == 60 and metrics["history"]["step"] == [30, 60]
    assert metrics["best_val_loss"] < math.log(len(vocabulary)) - 0.5  # well below uniform guessing
    assert metrics["best_val_loss"] == min(metrics["history"]["val_loss"])
    assert result.model.config.input_size == len(vocabulary)


def test_training_is_deterministic_under_a_seed(small_text, tmp_path):
    a = tiny_train(small_text, tmp_path / "a", max_steps=20, eval_every=20)
    b = tiny_train(small_text, tmp_path / "b", max_steps=20, eval_every=20)
    assert a.metrics["best_val_loss"] == b.metrics["best_val_loss"]
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(cell="lstm", input_kind="features", input_size=3, hidden_size=8, num_layers=2, output_size=1,
                         output_kind="values", input_mean=(0.0, 1.0, 2.0), input_std=(1.0, 2.0, 3.0))  # fmt: skip
    model = RecurrentModel(config)
    save_checkpoint(tmp_path, model, task="forecast")
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))
    loaded = load_checkpoint(tmp_path)
    assert loaded.model.config == config and loaded.task == "forecast"
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(loaded.model(x)[0], model.eval()(x)[0])


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="expected a run directory"):
        load_checkpoint(tmp_path / "missing")
    with pytest.raises(InputError, match="no config.json"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, RecurrentModel(ModelConfig(hidden_size=8)), task="charlm")
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path / "other", RecurrentModel(ModelConfig(hidden_size=16)), task="charlm")
    (tmp_path / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(InputError, match="weights do not match config.json"):
        load_checkpoint(tmp_path)


def test_model_config_refuses_bad_values():
    with pytest.raises(InputError, match="cell must be one of"):
        ModelConfig(cell="transformer")
    with pytest.raises(InputError, match="hidden_size must be a positive integer, got 0"):
        ModelConfig(hidden_size=0)
    with pytest.raises(InputError, match="token inputs take no input_mean"):
        ModelConfig(input_mean=(0.0,), input_std=(1.0,))
    with pytest.raises(InputError, match="unknown field"):
        ModelConfig.from_dict({"cell": "gru", "bogus": 1})
    with pytest.raises(InputError, match="give a budget"):
        TrainConfig(budget_minutes=None, max_steps=None)


def test_model_steps_equal_the_whole_sequence():
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig(cell="gru", hidden_size=16, num_layers=2)).eval()
    x = torch.randint(0, 65, (3, 12))
    with torch.no_grad():
        whole, whole_state = model(x)
        state, steps = None, []
        for t in range(12):
            y, state = model(x[:, t], state)  # one step: (B,) -> (B, O)
            steps.append(y)
    torch.testing.assert_close(torch.stack(steps, dim=1), whole)
    torch.testing.assert_close(state[0], whole_state[0])
    assert state[0].shape == (3, 2, 16)  # batch first, as in the ONNX contract


def test_text_data_helpers():
    text = "abcabcabd" * 200
    vocabulary = build_vocabulary(text)
    ids = encode(text, vocabulary)
    assert vocabulary == ["a", "b", "c", "d"] and ids[:4].tolist() == [0, 1, 2, 0]
    train, val = split_train_validation(ids)
    assert len(train) == 1620 and len(val) == 180
    chunks = list(stream_chunks(torch.from_numpy(ids), batch_size=4, seq_len=100))
    inputs, targets = chunks[0]
    assert inputs.shape == (4, 100) and torch.equal(inputs[:, 1:], targets[:, :-1])
    with pytest.raises(InputError, match="not in the vocabulary: 'z'"):
        encode("abz", vocabulary)


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(cell="gru", hidden_size=32, embedding_size=16),
        ModelConfig(cell="lstm", input_kind="features", input_size=9, hidden_size=24, num_layers=3, output_size=2,
                    output_kind="values"),
        ModelConfig(cell="rnn_relu", input_kind="features", input_size=4, hidden_size=8, num_layers=2, output_size=3),
    ],
)  # fmt: skip
def test_the_memory_estimate_counts_the_parameters_of_the_model(config):
    from edgernn.memory import estimate_training_memory, parameter_count
    from edgernn.models import count_parameters

    assert parameter_count(config) == count_parameters(RecurrentModel(config))
    estimate = estimate_training_memory(config, batch_size=8, seq_len=32)
    assert estimate.parameter_bytes == 64 * parameter_count(config)
    assert estimate.activation_bytes > 4 * 8 * 32 * config.hidden_size * config.num_layers


@pytest.mark.parametrize("hidden_size", ["20000", "100000", "1000000"])
def test_a_model_too_big_for_the_memory_is_refused_before_allocating(tmp_path, monkeypatch, hidden_size):
    from click.testing import CliRunner

    from edgernn import memory
    from edgernn.cli import cli

    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 16 * 10**9)
    csv_path = tmp_path / "readings.csv"
    csv_path.write_text("a,b\n" + "".join(f"{i % 7},{i % 5}\n" for i in range(700)))
    run_dir = tmp_path / "run"
    args = ["train", str(csv_path), "-o", str(run_dir), "--hidden-size", hidden_size, "--steps", "5"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert f"x hidden {hidden_size} x 1 layer(s)), and this machine has 16.0 GB available now" in lines[0]
    assert "training this model would need about" in lines[0] and "parameters" in lines[0]
    assert not run_dir.exists()


def test_ctrl_c_saves_a_checkpoint_says_how_to_resume_and_the_resumed_run_ends_bit_exact(tmp_path):
    import re
    import signal
    import subprocess
    import sys

    from click.testing import CliRunner
    from safetensors.torch import load_file
    from sensor_data import write_sensor_csv

    from edgernn.cli import cli

    data = write_sensor_csv(tmp_path / "readings.csv", 800)
    args = ["train", str(data), "--task", "forecast", "--columns", "ankle_vert,leg_vert", "--steps", "200",
            "--hidden-size", "8", "--batch-size", "4", "--seq-len", "16", "--eval-every", "50",
            "--checkpoint-every", "1000"]  # fmt: skip
    interrupted = tmp_path / "interrupted"
    command = [sys.executable, "-m", "edgernn", *args, "-o", str(interrupted)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    for line in process.stderr:
        if line.startswith("train: step"):  # training has begun: Ctrl-C
            process.send_signal(signal.SIGINT)
            break
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    found = re.fullmatch(
        rf"interrupted at step (\d+)/200; checkpoint {interrupted}/resume.safetensors \(step (\d+), saved on "
        rf"the interrupt\); continue with: edgernn train --resume {interrupted}",
        last,
    )
    assert found and found.group(1) == found.group(2) and 0 < int(found.group(1)) < 200, last
    assert not (interrupted / "metrics.json").exists()  # the run is not finished
    runner = CliRunner()
    resumed = runner.invoke(cli, ["train", "--resume", str(interrupted), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    straight = runner.invoke(cli, [*args, "-o", str(tmp_path / "straight"), "--quiet"])
    assert straight.exit_code == 0, straight.output
    a, b = (load_file(str(tmp_path / run / "model.safetensors")) for run in ("straight", "interrupted"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    histories = [
        json.loads((tmp_path / run / "metrics.json").read_text())["history"]
        for run in ("straight", "interrupted")
    ]
    assert histories[0]["val_loss"] == histories[1]["val_loss"] and histories[0]["step"][-1] == 200
