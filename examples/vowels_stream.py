"""Speaker classification streamed frame by frame (UEA Japanese Vowels).

Trains a small GRU classifier on the training utterances, exports it, then streams every test utterance
through the torch-free stepper one frame at a time. The class is available after every frame, so the
example reports both the final accuracy and how accurate an early decision is after k frames.

Run:  python examples/vowels_stream.py [--steps 1000] [--out out/vowels]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgernn.export import export_run
from edgernn.models import ModelConfig
from edgernn.runtime import Stepper
from edgernn.runtime.tasks import StreamingClassifier
from edgernn.tasks import read_ts
from edgernn.train import TrainConfig, train_task

DATA = Path(__file__).parent / "data"
EARLY_FRAMES = (3, 5, 7)


def main(steps: int, out: Path) -> None:
    config = TrainConfig(
        budget_minutes=None,
        max_steps=steps,
        batch_size=16,
        eval_every=100,
        learning_rate=5e-3,
        weight_decay=0.05,
        every_step_weight=0.2,
        input_noise=0.2,
    )
    model = ModelConfig(hidden_size=64, num_layers=2, dropout=0.2)
    train_task(
        "classify", DATA / "japanese_vowels_train.ts", out, model, config, progress=False, overwrite=True
    )
    export_run(out, out / "model.onnx")

    classifier = StreamingClassifier(Stepper(out / "model.onnx"))
    utterances, speakers = read_ts(DATA / "japanese_vowels_test.ts")
    final_correct, early_correct = 0, dict.fromkeys(EARLY_FRAMES, 0)
    for frames, speaker in zip(utterances, speakers, strict=True):
        classifier.reset()
        for index, frame in enumerate(frames, start=1):  # one 12-coefficient frame at a time
            decision, _ = classifier.step(frame)
            if index in early_correct:
                early_correct[index] += decision == speaker
        final_correct += decision == speaker
    total = len(utterances)
    print(f"{total} test utterances streamed frame by frame")
    print(f"accuracy after the last frame: {final_correct / total:.4f}")
    for frames_seen, correct in early_correct.items():
        print(f"accuracy deciding after {frames_seen} frames: {correct / total:.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps")
    parser.add_argument("--out", type=Path, default=Path("out/vowels"), help="run directory")
    args = parser.parse_args()
    main(args.steps, args.out)
