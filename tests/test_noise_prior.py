"""benchmarks/noise_prior.py chooses the search recipe's input noise on the training file alone: its
draws and folds split that file's cases, never the test file's, and hold nothing out twice."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from model_selection import write_ts  # noqa: E402
from noise_prior import SUBSETS, parts  # noqa: E402

from edgernn.tasks import read_ts  # noqa: E402


def _cases():
    sequences, labels = read_ts(ROOT / "examples" / "data" / "japanese_vowels_train.ts")
    return list(zip(sequences, labels, strict=True))


def test_small_draws_train_on_ten_of_each_speaker_and_test_on_his_other_training_utterances():
    cases = _cases()
    for draw, speakers in enumerate(SUBSETS):
        train, test = parts("small", draw, 0, cases)
        assert Counter(label for _, label in train) == dict.fromkeys(speakers, 10)
        assert Counter(label for _, label in test) == dict.fromkeys(speakers, 20)
        assert not {id(x) for x, _ in train} & {id(x) for x, _ in test}
        assert parts("small", draw, 5, cases)[0] == train  # the draw does not move with the seed


def test_full_folds_partition_the_training_file():
    cases = _cases()
    for seed in (0, 1):
        held = []
        for fold in range(3):
            train, test = parts("full", fold, seed, cases)
            assert len(train) == 180 and len(test) == 90
            assert not {id(x) for x, _ in train} & {id(x) for x, _ in test}
            held += [id(x) for x, _ in test]
        assert sorted(held) == sorted(id(x) for x, _ in cases)  # every case held out once
    assert [id(x) for x, _ in parts("full", 0, 0, cases)[1]] != [
        id(x) for x, _ in parts("full", 0, 1, cases)[1]
    ]


def test_a_written_part_reads_back_as_written(tmp_path):
    train, _ = parts("small", 1, 0, _cases())
    sequences, labels = read_ts(write_ts(tmp_path / "part.ts", train, "part"))
    assert labels == [label for _, label in train]
    assert all(s.shape == x.shape and abs(s - x).max() < 1e-4 * (1 + abs(x).max()) for s, (x, _) in
               zip(sequences, train, strict=True))  # fmt: skip
