"""A spoken-digit model adapted to one speaker's voice with a few of his recordings.

Trains a keyword model on four speakers of the bundled Free Spoken Digit Dataset subset, then writes
three recordings of each word of the fifth speaker as WAV files beside the four speakers' clip bundles
(as a user would record them) and trains the model on from its weights with them weighed more
(``edgernn train DIR --init-from BASE --wav-repeat N``). Both models, exported, hear the fifth speaker's
other recordings through the stepper; the example prints how many of them each gets right.

Run:  python examples/adapt_to_a_voice.py [--speaker lucas] [--base-steps 1500] [--steps 300] [--out out/adapt]
"""

from __future__ import annotations

import argparse
import shutil
import wave
from pathlib import Path

import numpy as np

from edgernn.export import export_run
from edgernn.models import ModelConfig
from edgernn.runtime import Stepper
from edgernn.runtime.audio import read_bundle
from edgernn.runtime.keyword import KeywordModel, classify_clips
from edgernn.train import TrainConfig, train_task

DATA = Path(__file__).parent / "data" / "fsdd"
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "yweweler")
RECORDINGS = 3  # of each word, the speaker's own


def main(speaker: str, base_steps: int, steps: int, repeat: int, out: Path) -> None:
    others = out / "others"  # the four other speakers' bundles: what the model first learns from
    others.mkdir(parents=True, exist_ok=True)
    for name in SPEAKERS:
        if name != speaker:
            shutil.copy(DATA / f"{name}.npz", others / f"{name}.npz")
    config = TrainConfig(budget_minutes=None, max_steps=base_steps, threads=1)
    train_task(
        "keyword", others, out / "base", ModelConfig(hidden_size=64), config, progress=False, overwrite=True
    )
    export_run(out / "base", out / "base.onnx")

    his = read_bundle(DATA / f"{speaker}.npz")
    mine = out / "mine"  # the bundles again, and his recordings as WAV files: {word}_{speaker}_{take}.wav
    shutil.copytree(others, mine, dirs_exist_ok=True)
    tested, counts = [], {}
    for i, (word, audio) in enumerate(zip(his.labels, his.audio, strict=True)):
        counts[word] = counts.get(word, 0) + 1
        if counts[word] > RECORDINGS:
            tested.append(i)
            continue
        with wave.open(str(mine / f"{word}_{speaker}_{counts[word]}.wav"), "wb") as f:
            f.setnchannels(1), f.setsampwidth(2), f.setframerate(his.rate), f.writeframes(audio.tobytes())
    adapt = TrainConfig(budget_minutes=None, max_steps=steps, learning_rate=1e-3, threads=1)
    train_task("keyword", mine, out / "adapted", None, adapt, data_options={"wav_repeat": repeat},
               progress=False, overwrite=True, init_from=out / "base")  # fmt: skip
    export_run(out / "adapted", out / "adapted.onnx")

    test = his.subset(tested)
    print(f"{speaker}: {len(list(mine.glob('*.wav')))} recordings to adapt to, {len(test)} others to hear")
    for name in ("base", "adapted"):
        stepper = Stepper(out / f"{name}.onnx")
        classes = KeywordModel.of(stepper.info).classes
        heard = [classes[i] for i in classify_clips(stepper, test)]
        right = int(np.sum([a == b for a, b in zip(heard, test.labels, strict=True)]))
        print(f"{name:>8}: {right} of {len(test)} right ({100 * right / len(test):.1f}%)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speaker", choices=SPEAKERS, default="lucas", help="the speaker to adapt to")
    parser.add_argument("--base-steps", type=int, default=1500, help="training steps on the other four")
    parser.add_argument("--steps", type=int, default=300, help="training steps adapting to the speaker")
    parser.add_argument("--wav-repeat", type=int, default=4, help="how many times each recording counts")
    parser.add_argument("--out", type=Path, default=Path("out/adapt"), help="where the runs and data go")
    args = parser.parse_args()
    main(args.speaker, args.base_steps, args.steps, args.wav_repeat, args.out)
