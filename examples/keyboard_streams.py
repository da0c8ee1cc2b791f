"""Next-character suggestions for several users at once, from one loaded model.

Shows the stepper's Python API on a character model: independent streams sharing one session, a
per-keystroke step, top-3 suggestions, snapshot/restore to branch a stream, and generation.

Run:  python examples/keyboard_streams.py [MODEL.onnx]
MODEL defaults to out/shakespeare.onnx (written by `make demo`); without it, a small model is trained on
the bundled Shakespeare for about 20 seconds and exported first.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from edgernn.runtime import Stepper, generate

DEFAULT_MODEL = Path("out/shakespeare.onnx")


def ensure_model(path: Path) -> Path:
    if path.exists():
        return path
    from edgernn.export import export_run
    from edgernn.models import ModelConfig
    from edgernn.train import TrainConfig, train_charlm

    print(f"{path} not found: training a small model for ~20 s", file=sys.stderr)
    text = Path(__file__).parent / "data" / "tinyshakespeare.txt"
    run_dir = path.with_suffix("")
    train_charlm(
        text, run_dir, ModelConfig(hidden_size=128), TrainConfig(budget_minutes=0.33), progress=False
    )
    export_run(run_dir, path)
    return path


def suggestions(logits: np.ndarray, vocabulary: tuple[str, ...], k: int = 3) -> str:
    best = np.argsort(logits)[::-1][:k]
    return " ".join(repr(vocabulary[i]) for i in best)


def main(model_path: Path) -> None:
    stepper = Stepper(ensure_model(model_path))
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
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MODEL)
