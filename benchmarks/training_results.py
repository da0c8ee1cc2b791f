"""Train every task on its bundled real data set, export it, and print the README's results table.

Each row gives the metric twice: for the PyTorch model, and for the exported ONNX file streamed through
the torch-free stepper (one step at a time, state carried), so the table shows what ships.

Run:  python benchmarks/training_results.py [--out runs/results] [--charlm-minutes 10] [--only anomaly,classify]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from edgernn.export import export_run
from edgernn.models import ModelConfig
from edgernn.runtime import Stepper
from edgernn.runtime.tasks import AnomalyScorer, StreamingClassifier
from edgernn.tasks import read_csv, read_labelled_sequences
from edgernn.train import TrainConfig, evaluate_series, train_task

DATA = Path(__file__).parents[1] / "examples" / "data"
BLEEDING_TRAIN, BLEEDING_TEST = (
    DATA / "ucr_internalbleeding16_train.csv",
    DATA / "ucr_internalbleeding16_test.csv",
)


def steps(n: int, **settings) -> TrainConfig:
    return TrainConfig(budget_minutes=None, max_steps=n, **settings)


SERIES = {"batch_size": 8, "seq_len": 32, "eval_every": 100, "eval_batch_size": 4, "threads": 1}
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
        steps(
            1000,
            batch_size=16,
            eval_every=100,
            learning_rate=5e-3,
            weight_decay=0.05,
            every_step_weight=0.2,
            input_noise=0.2,
        ),
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


def series_metrics(result, model_path: Path) -> tuple[str, str, str]:
    data, model = result.task, result.model
    inputs, targets = data.validation
    torch_loss, _ = evaluate_series(model, data, inputs, targets, streams=1, seq_len=len(inputs))
    onnx_loss = stream_series_loss(
        Stepper(model_path), inputs.numpy(), targets.numpy(), data.loss, model.config.output_std
    )
    name = "validation loss, nats/char" if data.task == "charlm" else "validation MSE (normalised)"
    if data.task == "steplabels":
        name = "validation loss, nats/step"
    return name, f"{torch_loss:.4f}", f"{onnx_loss:.4f}"


def anomaly_metrics(result, model_path: Path) -> tuple[str, str, str]:
    test = read_csv(BLEEDING_TEST)
    signal = test.pick(["value"])
    labelled = np.flatnonzero(test.columns["is_anomaly"])
    window = (int(labelled[0]), int(labelled[-1]))
    onnx_top = int(np.argmax(AnomalyScorer(Stepper(model_path)).score(signal)))
    residual = np.asarray(result.task.metadata["anomaly"]["residual_std"])
    with torch.no_grad():
        predictions, _ = result.model(torch.from_numpy(signal)[None])
    errors = np.abs(signal[1:, 0] - predictions[0, :-1, 0].numpy()) / residual[0]
    torch_top = int(np.argmax(errors)) + 1

    def hit(top: int) -> str:
        inside = window[0] - 100 <= top <= window[1] + 100
        return f"sample {top} ({'hit' if inside else 'miss'})"

    return f"top test score; window {window[0]}-{window[1]} +-100", hit(torch_top), hit(onnx_top)


def classify_metrics(result, model_path: Path) -> tuple[str, str, str]:
    classes = result.task.metadata["classes"]
    cases = read_labelled_sequences(DATA / "japanese_vowels_test.ts", classes)
    classifier = StreamingClassifier(Stepper(model_path))
    onnx_correct = sum(classifier.classify(frames.numpy())[0] == classes[label] for frames, label in cases)
    with torch.no_grad():
        torch_correct = sum(
            int(result.model(frames[None])[0][0, -1].argmax()) == label for frames, label in cases
        )
    n = len(cases)
    return f"test accuracy ({n} utterances)", f"{torch_correct / n:.2%}", f"{onnx_correct / n:.2%}"


METRICS = {"anomaly": anomaly_metrics, "classify": classify_metrics}


def main(out: Path, charlm_minutes: float, only: list[str]) -> None:
    rows = []
    for task, (dataset, path, model_config, train_config, options) in RUNS.items():
        if only and task not in only:
            continue
        if train_config is None:
            train_config = TrainConfig(
                budget_minutes=charlm_minutes, batch_size=32, seq_len=128, eval_every=500
            )
        started = time.monotonic()
        result = train_task(
            task, path, out / task, model_config, train_config, data_options=options, progress=False
        )
        minutes = (time.monotonic() - started) / 60
        report = export_run(out / task, out / task / "model.onnx")
        name, torch_value, onnx_value = METRICS.get(task, series_metrics)(result, report.path)
        config = result.model.config
        rows.append(
            f"| {dataset} | {task} | {config.cell.upper()} {config.num_layers}x{config.hidden_size} | "
            f"{result.metrics['parameters']:,} | {result.metrics['steps']} steps, {minutes:.1f} min | {name} | "
            f"{torch_value} | {onnx_value} | {report.parity.max_error():.1e} |"
        )
        print(rows[-1], flush=True)
    print()
    print(
        "| dataset | task | model | parameters | training | metric | PyTorch | ONNX stepper | max parity error |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/results"))
    parser.add_argument("--charlm-minutes", type=float, default=10.0)
    parser.add_argument("--only", default="", help="comma-separated tasks")
    args = parser.parse_args()
    main(args.out, args.charlm_minutes, [t for t in args.only.split(",") if t])
