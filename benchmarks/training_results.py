"""Train every task on its bundled real data set, export it, and print the README's results table.

Each row gives the metric twice: for the PyTorch model, and for the exported ONNX file streamed through
the torch-free stepper (one step at a time, state carried), so the table shows what ships. Each task is
trained once per seed (``--seeds``; the 10-minute character model only with ``--charlm-seeds``), and the
row gives the metric's mean over the seeds with its min-max; the max parity error is over every seed.
``classify-small`` is 4 speakers x 10 utterances (40 cases) of the same data: the small-data case.

Run:  python benchmarks/training_results.py [--out runs/results] [--charlm-minutes 10] [--seeds 0,1,2]
          [--charlm-seeds 0] [--only anomaly,classify,classify-small]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from edgernn.export import export_run
from edgernn.models import ModelConfig
from edgernn.runtime import Stepper
from edgernn.runtime.tasks import AnomalyScorer, StreamingClassifier
from edgernn.tasks import read_csv, read_ts
from edgernn.train import TrainConfig, evaluate_series, train_task

sys.path.insert(0, str(Path(__file__).parent))
from model_selection import SPEAKERS, write_small_set  # noqa: E402  (a sibling script)

DATA = Path(__file__).parents[1] / "examples" / "data"
BLEEDING_TRAIN, BLEEDING_TEST = (
    DATA / "ucr_internalbleeding16_train.csv",
    DATA / "ucr_internalbleeding16_test.csv",
)


def steps(n: int, **settings) -> TrainConfig:
    return TrainConfig(budget_minutes=None, max_steps=n, **settings)


SERIES = {"batch_size": 8, "seq_len": 32, "eval_every": 100, "eval_batch_size": 4}
CLASSIFY = {"batch_size": 16, "eval_every": 100, "learning_rate": 5e-3, "weight_decay": 0.05,
            "every_step_weight": 0.2, "input_noise": 0.2}  # fmt: skip
RUNS = {
    "charlm": (
        "tinyshakespeare",
        DATA / "tinyshakespeare.txt",
        ModelConfig(cell="gru", hidden_size=256, num_layers=2, dropout=0.25, embedding_size=64),
        None,
        {},
    ),
    "forecast": (
        "InternalBleeding16 (train)",
        BLEEDING_TRAIN,
        ModelConfig(hidden_size=64),
        steps(400, **SERIES),
        {},
    ),
    "anomaly": ("InternalBleeding16", BLEEDING_TRAIN, ModelConfig(hidden_size=32), steps(400, **SERIES), {}),
    "classify": (
        "JapaneseVowels",
        DATA / "japanese_vowels_train.ts",
        ModelConfig(hidden_size=64, num_layers=2, dropout=0.2),
        steps(1000, **CLASSIFY),
        {},
    ),
    "classify-small": (
        "JapaneseVowels, 4 speakers x 10",
        None,  # written by model_selection.write_small_set
        ModelConfig(hidden_size=64, num_layers=2, dropout=0.2),
        steps(400, **{**CLASSIFY, "eval_every": 25}),
        {},
    ),
    "steplabels": (
        "InternalBleeding16 (test, is_anomaly)",
        BLEEDING_TEST,
        ModelConfig(hidden_size=32),
        steps(300, **SERIES),
        {"label_column": "is_anomaly"},
    ),
}


# --- metrics: PyTorch and stepper side by side ---------------------------------------------------------


def stream_series_loss(
    stepper: Stepper, inputs: np.ndarray, targets: np.ndarray, loss: str, output_std
) -> float:
    """The validation loss of a series streamed through the stepper as one stream."""
    predictions = stepper.new_stream().run(inputs)  # (T, outputs)
    if loss == "mse":
        scale = np.asarray(output_std)
        return float(np.mean(((predictions - targets) / scale) ** 2))
    logits = predictions.astype(np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_z - logits[np.arange(len(targets)), targets]))


def series_metrics(result, model_path: Path) -> tuple[str, float, float]:
    data, model = result.task, result.model
    inputs, targets = data.validation
    torch_loss, _ = evaluate_series(model, data, inputs, targets, streams=1, seq_len=len(inputs))
    onnx_loss = stream_series_loss(
        Stepper(model_path), inputs.numpy(), targets.numpy(), data.loss, model.config.output_std
    )
    name = "validation loss, nats/char" if data.task == "charlm" else "validation MSE (normalised)"
    if data.task == "steplabels":
        name = "validation loss, nats/step"
    return name, torch_loss, onnx_loss


def anomaly_metrics(result, model_path: Path) -> tuple[str, float, float]:
    test = read_csv(BLEEDING_TEST)
    signal = test.pick(["value"])
    onnx_top = int(np.argmax(AnomalyScorer(Stepper(model_path)).score(signal)))
    residual = np.asarray(result.task.metadata["anomaly"]["residual_std"])
    with torch.no_grad():
        predictions, _ = result.model(torch.from_numpy(signal)[None])
    errors = np.abs(signal[1:, 0] - predictions[0, :-1, 0].numpy()) / residual[0]
    window = anomaly_window()
    return f"top test score; window {window[0]}-{window[1]} +-100", int(np.argmax(errors)) + 1, onnx_top


def anomaly_window() -> tuple[int, int]:
    labelled = np.flatnonzero(read_csv(BLEEDING_TEST).columns["is_anomaly"])
    return int(labelled[0]), int(labelled[-1])


def classify_metrics(
    result, model_path: Path, speakers: tuple[str, ...] | None = None
) -> tuple[str, float, float]:
    classes = result.task.metadata["classes"]
    sequences, labels = read_ts(DATA / "japanese_vowels_test.ts")
    cases = [(torch.from_numpy(x), label) for x, label in zip(sequences, labels, strict=True)
             if speakers is None or label in speakers]  # fmt: skip
    classifier = StreamingClassifier(Stepper(model_path))
    onnx_correct = sum(classifier.classify(frames.numpy())[0] == label for frames, label in cases)
    with torch.no_grad():
        torch_correct = sum(
            classes[int(result.model(frames[None])[0][0, -1].argmax())] == label for frames, label in cases
        )
    n = len(cases)
    return f"test accuracy ({n} utterances)", torch_correct / n, onnx_correct / n


METRICS = {
    "anomaly": anomaly_metrics,
    "classify": classify_metrics,
    "classify-small": lambda result, path: classify_metrics(result, path, SPEAKERS),
}


def spread(task: str, values: list[float]) -> str:
    """The metric over seeds: mean and min-max (anomaly: hits of the labelled window, and the samples)."""
    if task == "anomaly":
        window = anomaly_window()
        hits = sum(window[0] - 100 <= v <= window[1] + 100 for v in values)
        where = f"sample {values[0]}" if len(set(values)) == 1 else f"samples {min(values)}-{max(values)}"
        return f"{where} ({hits}/{len(values)} hit)"
    a = np.array(values)
    text = (lambda x: f"{x:.2%}") if task.startswith("classify") else (lambda x: f"{x:.4f}")
    return text(a.mean()) if len(a) == 1 else f"{text(a.mean())} ({text(a.min())}-{text(a.max())})"


def train_seeds(task: str, out: Path, seeds: list[int], charlm_minutes: float) -> str:
    """Train ``task`` once per seed; the table row."""
    dataset, path, model_config, train_config, options = RUNS[task]
    if train_config is None:
        train_config = TrainConfig(budget_minutes=charlm_minutes, batch_size=32, seq_len=128, eval_every=500)
    if path is None:
        path = write_small_set(out / "vowels_4x10.ts")
    torch_values, onnx_values, parity, steps_done, minutes = [], [], [], [], []
    for seed in seeds:
        started = time.monotonic()
        run_dir = out / task / f"seed{seed}"
        config = replace(train_config, seed=seed)
        result = train_task(task.split("-")[0], path, run_dir, model_config, config,
                            data_options=options, progress=False, overwrite=True)  # fmt: skip
        minutes.append((time.monotonic() - started) / 60)
        report = export_run(run_dir, run_dir / "model.onnx")
        name, torch_value, onnx_value = METRICS.get(task, series_metrics)(result, report.path)
        torch_values.append(torch_value)
        onnx_values.append(onnx_value)
        parity.append(report.parity.max_error())
        steps_done.append(result.metrics["steps"])
    config = result.model.config
    seeds_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {','.join(map(str, seeds))}"
    return (
        f"| {dataset} | {task} | {config.cell.upper()} {config.num_layers}x{config.hidden_size} | "
        f"{result.metrics['parameters']:,} | {max(steps_done)} steps, {np.mean(minutes):.1f} min | {seeds_text} | {name} | "
        f"{spread(task, torch_values)} | {spread(task, onnx_values)} | {max(parity):.1e} |"
    )


def main(
    out: Path, charlm_minutes: float, only: list[str], seeds: list[int], charlm_seeds: list[int]
) -> None:
    rows = []
    for task in RUNS:
        if only and task not in only:
            continue
        rows.append(train_seeds(task, out, charlm_seeds if task == "charlm" else seeds, charlm_minutes))
        print(rows[-1], flush=True)
    print()
    print(
        "| dataset | task | model | parameters | training (each) | seeds | metric | PyTorch, mean (min-max) | "
        "ONNX stepper, mean (min-max) | max parity error |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/results"))
    parser.add_argument("--charlm-minutes", type=float, default=10.0)
    parser.add_argument("--only", default="", help="comma-separated tasks (and classify-small)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds of every task but charlm")
    parser.add_argument("--charlm-seeds", default="0", help="comma-separated seeds of the character model")
    args = parser.parse_args()
    seeds = [int(x) for x in args.seeds.split(",")]
    charlm_seeds = [int(x) for x in args.charlm_seeds.split(",")]
    main(args.out, args.charlm_minutes, [t for t in args.only.split(",") if t], seeds, charlm_seeds)
