"""Next-character suggestions for several users at once, from one loaded model.

Shows the stepper's Python API on a character model: independent streams sharing one session, a
per-keystroke step, top-3 suggestions, snapshot/restore to branch a stream, and generation.

Run:  python examples/keyboard_streams.py [--model out/shakespeare.onnx] [--out out/keyboard] [--steps 300]
--model defaults to out/shakespeare.onnx (written by `make demo`); when that file does not exist, a small
model is trained on the bundled Shakespeare for --steps steps (about 30 s on 2 cores) into OUT/run and
exported to OUT/model.onnx first.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from edgernn.runtime import Stepper, generate

DEFAULT_MODEL = Path("out/shakespeare.onnx")


def ensure_model(path: Path, out: Path, steps: int) -> Path:
    """``path`` if it exists, else a small model trained for ``steps`` steps and exported under ``out``."""
    if path.exists():
        return path
    from edgernn.export import export_run
    from edgernn.models import ModelConfig
    from edgernn.train import TrainConfig, train_charlm

    print(f"{path} not found: training a small model for {steps} steps into {out}", file=sys.stderr)
    text = Path(__file__).parent / "data" / "tinyshakespeare.txt"
    budget = TrainConfig(budget_minutes=None, max_steps=steps, batch_size=32, seq_len=64, eval_every=steps)
    model = ModelConfig(hidden_size=128, embedding_size=32)
    train_charlm(text, out / "run", model, budget, progress=False, overwrite=True)
    return export_run(out / "run", out / "model.onnx").path


def suggestions(logits: np.ndarray, vocabulary: tuple[str, ...], k: int = 3) -> str:
    best = np.argsort(logits)[::-1][:k]
    return " ".join(repr(vocabulary[i]) for i in best)


def main(model_path: Path, out: Path, steps: int) -> None:
    stepper = Stepper(ensure_model(model_path, out, steps))
    vocabulary = stepper.info.input.vocabulary
    index = {ch: i for i, ch in enumerate(vocabulary)}
    typing = {"alice": "To be, or not", "bob": "KING HENRY", "carol": "My lord, I "}
    streams = {user: stepper.new_stream() for user in typing}

    # Keystrokes from three users arrive interleaved; each stream keeps its own state.
    longest = max(len(text) for text in typing.values())
    timings, last_logits = [], {}
    for position in range(longest):
        for user, text in typing.items():
            if position < len(text):
                started = time.perf_counter()
                last_logits[user] = streams[user].step(index[text[position]])  # (vocabulary,)
                timings.append(time.perf_counter() - started)
    for user, text in typing.items():
        print(f"{user:>6} typed {text!r:<18} next: {suggestions(last_logits[user], vocabulary)}")
    print(f"{len(timings)} keystrokes, median {np.median(timings) * 1e6:.0f} us per step")

    # Branch: try two keystrokes from the same state, then keep the second.
    carol = streams["carol"]
    saved = carol.snapshot()
    after_w = suggestions(carol.step(index["w"]), vocabulary)
    carol.restore(saved)
    after_a = suggestions(carol.step(index["a"]), vocabulary)
    print(f" carol: after 'w' next {after_w}; restored, after 'a' next {after_a}")

    print("\n--- generated ---")
    print("ROMEO:" + generate(stepper, "ROMEO:", max_new_tokens=200, temperature=0.8, top_k=20, seed=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a character model (.onnx)")
    parser.add_argument("--out", type=Path, default=Path("out/keyboard"), help="where a new model is trained")
    parser.add_argument("--steps", type=int, default=300, help="training steps when --model does not exist")
    args = parser.parse_args()
    main(args.model, args.out, args.steps)
