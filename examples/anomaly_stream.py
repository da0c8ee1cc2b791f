"""Sensor anomaly detection streamed sample by sample, with a plot.

Trains a small GRU forecaster on the clean InternalBleeding16 series (UCR anomaly archive no. 135),
exports it, then feeds the test series to the torch-free stepper one sample at a time, as a sensor loop
would. Each sample's score is its normalised prediction error. Writes a PNG of signal, score and the
labelled anomaly window, and says where the top score falls.

Run:  python examples/anomaly_stream.py [--steps 400] [--out out/anomaly]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edgernn.export import export_run
from edgernn.models import ModelConfig
from edgernn.runtime import Stepper
from edgernn.runtime.tasks import AnomalyScorer
from edgernn.tasks import read_csv
from edgernn.train import TrainConfig, train_task

DATA = Path(__file__).parent / "data"


def plot(path: Path, signal: np.ndarray, scores: np.ndarray, window: tuple[int, int], top: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_signal, ax_score) = plt.subplots(2, 1, figsize=(11, 5), sharex=True, dpi=100)
    for ax in (ax_signal, ax_score):
        ax.axvspan(*window, color="tab:red", alpha=0.25, label="labelled anomaly")
    ax_signal.plot(signal, lw=0.6, color="tab:blue")
    ax_signal.set_ylabel("sensor value")
    ax_score.plot(scores, lw=0.6, color="tab:green")
    ax_score.axvline(top, color="black", ls="--", lw=0.8, label=f"top score (sample {top})")
    ax_score.set_ylabel("anomaly score")
    ax_score.set_xlabel("sample")
    ax_score.legend(loc="upper left")
    fig.suptitle("InternalBleeding16: streaming anomaly score from the edgernn stepper")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def main(steps: int, out: Path) -> None:
    config = TrainConfig(
        budget_minutes=None, max_steps=steps, batch_size=8, seq_len=32, eval_every=100, eval_batch_size=4
    )
    train_task(
        "anomaly",
        DATA / "ucr_internalbleeding16_train.csv",
        out,
        ModelConfig(hidden_size=32),
        config,
        progress=False,
        overwrite=True,
    )
    export_run(out, out / "model.onnx")

    test = read_csv(DATA / "ucr_internalbleeding16_test.csv")
    signal, labels = test.pick(["value"])[:, 0], test.columns["is_anomaly"]
    scorer = AnomalyScorer(Stepper(out / "model.onnx"))
    scores = np.array([scorer.step([value]) for value in signal])  # one sample at a time

    labelled = np.flatnonzero(labels)
    window = (int(labelled[0]), int(labelled[-1]))
    top = int(np.argmax(scores))
    inside = window[0] - 100 <= top <= window[1] + 100
    plot(out / "anomaly.png", signal, scores, window, top)
    print(f"streamed {len(signal)} samples; labelled window {window[0]}-{window[1]}")
    print(
        f"top score {scores[top]:.1f} at sample {top}: {'inside' if inside else 'outside'} the window +-100"
    )
    print(f"plot: {out / 'anomaly.png'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="training steps")
    parser.add_argument("--out", type=Path, default=Path("out/anomaly"), help="run directory")
    args = parser.parse_args()
    main(args.steps, args.out)
