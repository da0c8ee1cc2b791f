"""`edgernn train --init-from RUN`: training that starts from a run's trained weights, keeping its model,
normalisation, classes and front end, and refusing data or options those would not fit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from cli_support import assert_refused
from click.testing import CliRunner
from safetensors.torch import load_file

from edgernn.cli import cli

ROOT = Path(__file__).resolve().parent.parent
FSDD = ROOT / "examples" / "data" / "fsdd"
TINY = ["--batch-size", "8", "--no-augment", "--quiet"]


def train(*args) -> object:
    return CliRunner().invoke(cli, ["train", *map(str, args)])


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A keyword run on george's clips (GRU 1x12, 3 steps)."""
    run = tmp_path_factory.mktemp("init") / "base"
    made = train(FSDD / "george.npz", "-o", run, "--steps", "3", "--hidden-size", "12", *TINY)
    assert made.exit_code == 0, made.output
    return run


def test_the_new_run_starts_from_the_runs_weights_and_keeps_its_model(base, tmp_path):
    fine = tmp_path / "fine"
    result = train(
        FSDD / "lucas.npz", "-o", fine, "--init-from", base, "--steps", "1", "--lr", "1e-12", *TINY
    )
    assert result.exit_code == 0, result.output
    before, after = load_file(str(base / "model.safetensors")), load_file(str(fine / "model.safetensors"))
    assert before.keys() == after.keys()
    for name in before:  # a step of 1e-12 moves no weight visibly: the run began where the base ended
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=1e-6)
    config, base_config = (json.loads((run / "config.json").read_text()) for run in (fine, base))
    assert config["model"] == base_config["model"]  # GRU 1x12 (the task's default is 1x96), its mean and std
    assert config["train"]["init_from"] == {
        "run": str(base),
        "weights_sha256": hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest(),
    }
    assert config["train"]["data"] == str(FSDD / "lucas.npz")


def test_it_trains_on_and_a_resume_continues_it(base, tmp_path):
    fine = tmp_path / "fine"
    assert train(FSDD / "lucas.npz", "-o", fine, "--init-from", base, "--steps", "2", *TINY).exit_code == 0
    before, after = load_file(str(base / "model.safetensors")), load_file(str(fine / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("rnn."))
    resumed = train("--resume", fine, "--steps", "1", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    metrics = json.loads((fine / "metrics.json").read_text())
    assert metrics["steps"] == 3
    assert json.loads((fine / "config.json").read_text())["train"]["init_from"]["run"] == str(base)


def test_what_the_weights_would_not_fit_is_refused_in_assert_refused(base, tmp_path):
    out = tmp_path / "out"
    assert_refused(
        train(FSDD / "lucas.npz", "-o", out, "--init-from", base, "--steps", "1", "--hidden-size", "12"),
        f"--init-from {base} keeps that run's model: drop --hidden-size",
    )
    assert_refused(
        train(FSDD / "lucas.npz", "-o", out, "--init-from", base, "--steps", "1", "--mels", "20"),
        f"--init-from {base}: front_end.mels differs (the run's 32, the data's 20)",
    )
    vowels = ROOT / "examples" / "data" / "japanese_vowels_train.ts"
    assert_refused(
        train(vowels, "-o", out, "--init-from", base, "--steps", "1"),
        f"--init-from {base}: a keyword run; the data trains the classify task",
    )
    assert_refused(
        train("--resume", base, "--init-from", base), "--resume continues a run; --init-from starts"
    )
    assert not out.exists()


def test_a_character_model_needs_the_same_characters(tmp_path):
    text = ROOT / "examples" / "data" / "tinyshakespeare.txt"
    base = tmp_path / "chars"
    made = train(text, "-o", base, "--steps", "1", "--hidden-size", "8", "--seq-len", "16", "--quiet")
    assert made.exit_code == 0, made.output
    other = tmp_path / "abc.txt"
    other.write_text("abcabc cab bac " * 400)
    assert_refused(
        train(other, "-o", tmp_path / "out", "--init-from", base, "--steps", "1"),
        f"--init-from {base}: the data's characters differ from the run's vocabulary (run: 65 tokens; data: 4)",
    )


def test_from_python_a_model_config_may_only_repeat_the_runs_model(base, tmp_path):
    from edgernn.models import ModelConfig
    from edgernn.runtime.errors import InputError
    from edgernn.train import TrainConfig, train_task

    config = TrainConfig(budget_minutes=None, max_steps=1, batch_size=8)
    with pytest.raises(
        InputError, match=r"the model is the run's \(GRU 1x12\); --hidden-size differs: leave them out"
    ):
        train_task("keyword", FSDD / "lucas.npz", tmp_path / "a", ModelConfig(hidden_size=64), config,
                   init_from=base, progress=False)  # fmt: skip
    same = ModelConfig(cell="gru", hidden_size=12)
    result = train_task(
        "keyword", FSDD / "lucas.npz", tmp_path / "b", same, config, init_from=base, progress=False
    )
    assert result.model.config.hidden_size == 12 and not (tmp_path / "a").exists()


def test_own_recordings_beside_the_bundles_weigh_as_wav_repeat_says(base, tmp_path):
    import wave

    from edgernn.runtime.audio import read_bundle

    data = tmp_path / "data"
    data.mkdir()
    (data / "george.npz").write_bytes((FSDD / "george.npz").read_bytes())
    mine = read_bundle(FSDD / "lucas.npz")
    for i in range(0, 50, 5):  # one clip of each word
        with wave.open(str(data / f"{mine.labels[i]}_me_{i}.wav"), "wb") as f:
            f.setnchannels(1), f.setsampwidth(2), f.setframerate(8000), f.writeframes(mine.audio[i].tobytes())
    fine = tmp_path / "fine"
    result = train(data, "-o", fine, "--init-from", base, "--wav-repeat", "4", "--steps", "1", *TINY)
    assert result.exit_code == 0, result.output
    config = json.loads((fine / "config.json").read_text())["train"]
    assert config["data_options"]["wav_repeat"] == 4
    metrics = json.loads((fine / "metrics.json").read_text())
    assert metrics["clips"]["train"] + metrics["clips"]["validation"] == 50 + 4 * 10
    assert_refused(train("--resume", fine, "--wav-repeat", "2"), "--resume continues the run on its own data")
    assert_refused(
        train(FSDD, "-o", tmp_path / "x", "--wav-repeat", "2", "--steps", "1"), "found bundles only"
    )
