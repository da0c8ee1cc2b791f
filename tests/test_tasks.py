"""Every task trains on real data, exports, passes parity and streams through the stepper (small settings)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import edgernn.train as train_module
from edgernn.cli import cli
from edgernn.export import export_run
from edgernn.models import ModelConfig
from edgernn.runtime import Stepper
from edgernn.runtime.errors import ContractError, InputError
from edgernn.runtime.tasks import AnomalyScorer, StreamingClassifier
from edgernn.tasks import read_csv, read_labelled_sequences, read_ts
from edgernn.train import SeriesBatches, TrainConfig, resume_training, train_task

DATA = Path(__file__).parents[1] / "examples" / "data"
BLEEDING_TRAIN, BLEEDING_TEST = (
    DATA / "ucr_internalbleeding16_train.csv",
    DATA / "ucr_internalbleeding16_test.csv",
)
VOWELS_TRAIN, VOWELS_TEST = DATA / "japanese_vowels_train.ts", DATA / "japanese_vowels_test.ts"
WINDOW = (4187, 4198)  # the labelled anomaly of the test series


def steps(n: int, **overrides) -> TrainConfig:
    settings = dict(
        budget_minutes=None,
        max_steps=n,
        batch_size=8,
        seq_len=32,
        eval_every=max(1, n // 2),
        eval_batch_size=4,
        warmup_steps=10,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def anomaly_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("anomaly")
    result = train_task(
        "anomaly", BLEEDING_TRAIN, run_dir, ModelConfig(hidden_size=32), steps(300), progress=False
    )
    export_run(run_dir, run_dir / "model.onnx")
    return run_dir, result


def test_forecast_normalises_with_training_statistics_and_streams_in_user_units(tmp_path):
    result = train_task(
        "forecast", BLEEDING_TRAIN, tmp_path, ModelConfig(hidden_size=16), steps(60), progress=False
    )
    values = read_csv(BLEEDING_TRAIN).pick(["value"])[:, 0]
    cut = int(len(values) * 0.9)
    config = result.model.config
    assert config.input_mean[0] == pytest.approx(values[:cut].mean(), rel=1e-5)  # training split only
    assert config.input_std[0] == pytest.approx(values[:cut].std(), rel=1e-5)
    export_run(tmp_path, tmp_path / "m.onnx")
    stepper = Stepper(tmp_path / "m.onnx")
    assert stepper.info.extra["targets"] == ["value"] and stepper.info.input.mean == config.input_mean
    raw = values[:200, None].astype(np.float32)
    predictions = stepper.run(raw)  # raw sensor values in, values in the same units out
    with torch.no_grad():
        want, _ = result.model(torch.from_numpy(raw)[None])
    np.testing.assert_allclose(predictions, want[0].numpy(), rtol=1e-4, atol=1e-3)
    assert (
        abs(float(np.median(predictions[50:-1, 0] - raw[51:, 0]))) < 0.2 * values.std()
    )  # tracks the signal


def test_anomaly_top_score_falls_in_the_labelled_window(anomaly_run):
    run_dir, result = anomaly_run
    test = read_csv(BLEEDING_TEST)
    scores = AnomalyScorer(Stepper(run_dir / "model.onnx")).score(test.pick(["value"]))
    assert scores.shape == (len(test.columns["value"]),) and scores[0] == 0.0
    top = int(np.argmax(scores))
    assert WINDOW[0] - 100 <= top <= WINDOW[1] + 100, top
    residual = json.loads((run_dir / "config.json").read_text())["train"]["metadata"]["anomaly"][
        "residual_std"
    ]
    assert len(residual) == 1 and residual[0] > 0


def test_anomaly_scorer_refuses_models_without_scores(tmp_path):
    train_task("forecast", BLEEDING_TRAIN, tmp_path, ModelConfig(hidden_size=8), steps(10), progress=False)
    export_run(tmp_path, tmp_path / "m.onnx")
    with pytest.raises(ContractError, match="anomaly.residual_std"):
        AnomalyScorer(Stepper(tmp_path / "m.onnx"))


def test_classify_vowels_streams_frame_by_frame(tmp_path):
    config = steps(300, batch_size=16, eval_every=150, learning_rate=1e-2)
    result = train_task(
        "classify", VOWELS_TRAIN, tmp_path, ModelConfig(hidden_size=48), config, progress=False
    )
    classes = result.task.metadata["classes"]
    assert classes == [str(i) for i in range(1, 10)]
    export_run(tmp_path, tmp_path / "m.onnx")
    classifier = StreamingClassifier(Stepper(tmp_path / "m.onnx"))
    cases = read_labelled_sequences(VOWELS_TEST, classes)
    correct = 0
    for frames, label in cases[:120]:
        classifier.reset()
        for frame in frames.numpy():  # a decision is available after every frame
            decided, probabilities = classifier.step(frame)
            assert probabilities.shape == (9,) and probabilities.sum() == pytest.approx(1.0)
        with torch.no_grad():
            torch_label = int(result.model(frames[None])[0][0, -1].argmax())
        assert decided == classes[torch_label]
        correct += decided == classes[label]
    assert correct / 120 > 0.9


def test_classify_from_csv(tmp_path):
    sequences, labels = read_ts(VOWELS_TRAIN)
    path = tmp_path / "vowels.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["series_id", *(f"c{i}" for i in range(12)), "label"])
        for sid, (frames, label) in enumerate(zip(sequences[:90], labels[:90], strict=True)):
            writer.writerows([sid, *row, label] for row in frames.tolist())
    result = train_task(
        "classify",
        path,
        tmp_path / "run",
        ModelConfig(hidden_size=16),
        steps(20, batch_size=8),
        progress=False,
    )
    assert result.task.metadata["columns"] == [f"c{i}" for i in range(12)]
    assert len(result.task.train) + len(result.task.validation) == 90


def test_steplabels_streams_a_label_per_step(tmp_path):
    result = train_task(
        "steplabels",
        BLEEDING_TEST,
        tmp_path,
        ModelConfig(hidden_size=16),
        steps(30),
        data_options={"label_column": "is_anomaly"},
        progress=False,
    )
    assert result.task.metadata["classes"] == ["0", "1"] and result.task.metadata["columns"] == ["value"]
    assert result.task.class_weights[1] > result.task.class_weights[0]  # the rare class weighs more
    export_run(tmp_path, tmp_path / "m.onnx")
    stepper = Stepper(tmp_path / "m.onnx")
    raw = read_csv(BLEEDING_TEST).pick(["value"])[:300]
    with torch.no_grad():
        want, _ = result.model(torch.from_numpy(raw)[None])
    np.testing.assert_allclose(stepper.run(raw), want[0].numpy(), rtol=1e-4, atol=1e-4)


def test_series_batches_are_consecutive_chunks_of_contiguous_streams():
    series = torch.arange(1000)
    batches = SeriesBatches(series, series + 1, batch_size=4, seq_len=10, seed=0)
    first, targets, fresh = batches.next()
    second, _, later = batches.next()
    assert fresh and not later and first.shape == (4, 10)
    assert torch.equal(second[:, 0], first[:, -1] + 1)  # the next chunk continues each stream
    assert torch.equal(targets, first + 1)
    assert len(set(first[:, 0].tolist())) == 4


def test_bad_task_data_is_refused_clearly(tmp_path):
    with pytest.raises(InputError, match=r"no column\(s\) \['pressure'\] \(--columns\); the columns are"):
        train_task(
            "forecast",
            BLEEDING_TRAIN,
            tmp_path,
            None,
            steps(5),
            data_options={"columns": ["pressure"]},
            progress=False,
        )
    with pytest.raises(InputError, match="needs a label column"):
        train_task("steplabels", BLEEDING_TRAIN, tmp_path, None, steps(5), progress=False)
    bad_ts = tmp_path / "bad.ts"
    bad_ts.write_text("@problemName x\n1,2:3,4:a\n")
    with pytest.raises(InputError, match="no @data line"):
        read_ts(bad_ts)
    with pytest.raises(InputError, match="needs at least"):
        train_task(
            "anomaly", BLEEDING_TRAIN, tmp_path, None, steps(5, batch_size=64, seq_len=64), progress=False
        )


def test_resume_continues_exactly(tmp_path, monkeypatch):
    config = steps(40, eval_every=10, checkpoint_every=10)
    straight = train_task(
        "anomaly",
        BLEEDING_TRAIN,
        tmp_path / "a",
        ModelConfig(hidden_size=16, dropout=0.0),
        config,
        progress=False,
    )

    calls = {"n": 0}
    original = train_module.Trainer.train_step

    def killed_at_25(self):
        calls["n"] += 1
        if calls["n"] > 25:
            raise KeyboardInterrupt  # the process dies mid-run
        return original(self)

    monkeypatch.setattr(train_module.Trainer, "train_step", killed_at_25)
    with pytest.raises(KeyboardInterrupt):
        train_task(
            "anomaly", BLEEDING_TRAIN, tmp_path / "b", ModelConfig(hidden_size=16), config, progress=False
        )
    monkeypatch.setattr(train_module.Trainer, "train_step", original)
    resumed = resume_training(tmp_path / "b", progress=False)
    assert resumed.metrics["steps"] == 40
    assert resumed.metrics["history"]["val_loss"] == straight.metrics["history"]["val_loss"]
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_early_stopping_keeps_the_best_model(tmp_path, monkeypatch):
    losses = iter([1.0, 0.5, 0.7, 0.8, 0.9, 1.0])
    monkeypatch.setattr(train_module.Trainer, "evaluate", lambda self: (next(losses), None))
    result = train_task(
        "anomaly",
        BLEEDING_TRAIN,
        tmp_path,
        ModelConfig(hidden_size=8),
        steps(100, eval_every=5, patience=2),
        progress=False,
    )
    assert result.metrics["stopped_early"] and result.metrics["steps"] == 20
    assert result.metrics["best_val_loss"] == 0.5


def test_run_directory_has_curves_and_tensorboard_logs(tmp_path):
    result = CliRunner().invoke(cli, ["train", str(BLEEDING_TRAIN), "--task", "anomaly", "-o", str(tmp_path / "run"), "--steps", "20",
                                      "--eval-every", "10", "--tensorboard", str(tmp_path / "tb"), "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "anomaly" in result.stdout
    png = (tmp_path / "run" / "loss_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["history"]["step"] == [10, 20] and len(metrics["history"]["lr"]) == 2


def test_cli_resume_and_bad_options(tmp_path):
    runner = CliRunner()
    run_dir = tmp_path / "run"
    args = ["train", str(BLEEDING_TRAIN), "--task", "anomaly", "-o", str(run_dir), "--steps", "10", "--quiet"]
    assert runner.invoke(cli, args).exit_code == 0
    result = runner.invoke(cli, ["train", "--resume", str(run_dir), "--quiet"])
    assert result.exit_code == 2 and "has finished its budget (10 steps" in result.stderr  # nothing to do
    result = runner.invoke(cli, ["train", "--resume", str(run_dir), "--steps", "10", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "20 steps" in result.stdout  # --steps on a resume: that many more
    with pytest.raises(InputError, match="has done 20 steps; max_steps 15 is a total"):
        resume_training(run_dir, max_steps=15, progress=False)
    result = runner.invoke(
        cli, ["train", str(BLEEDING_TRAIN), "--task", "steplabels", "-o", str(tmp_path / "x")]
    )
    assert (
        result.exit_code == 2
        and "label column" in result.stderr
        and len(result.stderr.strip().splitlines()) == 1
    )
    result = runner.invoke(cli, ["train", "--task", "forecast"])
    assert result.exit_code == 2 and "give DATA" in result.stderr


@pytest.mark.slow
def test_torchrun_two_processes_stay_in_sync(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text((DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:30_000], encoding="utf-8")
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "edgernn", "train", str(text),
               "-o", str(run_dir), "--steps", "12", "--hidden-size", "16", "--embedding-size", "8", "--batch-size", "4",
               "--seq-len", "16", "--eval-every", "6", "--checkpoint-every", "6", "--quiet"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    digests = metrics["rank_parameter_digests"]
    assert metrics["processes"] == 2 and len(digests) == 2 and digests[0] == digests[1]
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "config.json",
        "loss_curves.png",
        "metrics.json",
        "model.safetensors",
        "resume.safetensors",
        "vocab.json",
    ]
    resumed = subprocess.run([*command[:5], "-m", "edgernn", "train", "--resume", str(run_dir), "--steps", "6", "--quiet"],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 18


def write_sequences_csv(path: Path, cases: int, classes: list[str]) -> None:
    """A classification CSV with text ids and text labels, cases taken from the vowels training set."""
    sequences, labels = read_ts(VOWELS_TRAIN)
    wanted = {str(i + 1): name for i, name in enumerate(classes)}
    per_class = cases // len(classes)
    picked = []
    for number, name in wanted.items():
        picked += [(x, name) for x, label in zip(sequences, labels, strict=True) if label == number][
            :per_class
        ]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["series_id", *(f"c{i}" for i in range(12)), "label"])
        for number, (frames, label) in enumerate(picked):
            writer.writerows([f"utt-{number}", *row, label] for row in frames.tolist())


def test_classify_csv_takes_text_labels_and_validates_on_a_stratified_share(tmp_path):
    path = tmp_path / "speakers.csv"
    write_sequences_csv(path, 40, ["alice", "bob", "carol", "dan"])
    # no task named: series_id and label make it the classification CSV
    result = train_task(None, path, tmp_path / "run", ModelConfig(hidden_size=8), steps(4, eval_every=2),
                        progress=False)  # fmt: skip
    data = result.task
    assert data.task == "classify" and data.metadata["classes"] == ["alice", "bob", "carol", "dan"]
    assert data.split_sizes == (30, 10)  # 10% would be 4 cases: a small set validates on a quarter
    counts = np.bincount([label for _, label in data.validation], minlength=4)
    assert sorted(counts.tolist()) == [2, 2, 3, 3]  # every class in its share
    assert result.metrics["validation_size"] == 10 and result.metrics["train_size"] == 30


def test_a_time_budget_of_a_handful_of_steps_warns(tmp_path):
    config = TrainConfig(budget_minutes=0.002, batch_size=8, seq_len=32, eval_every=100, eval_batch_size=4)
    with pytest.warns(train_module.FewStepsWarning, match="fewer than 100"):
        result = train_task(
            "anomaly", BLEEDING_TRAIN, tmp_path, ModelConfig(hidden_size=8), config, progress=False
        )
    assert result.metrics["steps"] < 100
    assert result.metrics["warnings"] and "fewer than 100" in result.metrics["warnings"][-1]
    assert "--steps budget" in result.metrics["warnings"][-1]
    counted = train_task(
        "anomaly", BLEEDING_TRAIN, tmp_path / "b", ModelConfig(hidden_size=8), steps(5), progress=False
    )
    assert counted.metrics["warnings"] == []  # a step budget the user chose is not a surprise


def test_api_and_cli_share_one_thread_default(tmp_path):
    from edgernn.train import DEFAULT_THREADS, configs_for

    assert TrainConfig().threads == DEFAULT_THREADS == 1
    for task in ("charlm", "forecast", "classify"):
        assert configs_for(task, {}, {}).__getitem__(1).threads == DEFAULT_THREADS
    before = torch.get_num_threads()
    result = train_task(
        "forecast", BLEEDING_TRAIN, tmp_path, ModelConfig(hidden_size=8), steps(2), progress=False
    )
    assert (
        result.metrics["threads"] == 1 and torch.get_num_threads() == before
    )  # the caller's setting is back
