"""benchmarks/keyword_loso.py --enroll K: K clips of each word of the held-out speaker train, the others test."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from keyword_loso import enrolled  # noqa: E402

from edgernn.runtime.audio import read_clips  # noqa: E402


def test_enrolment_takes_k_clips_of_each_word_of_the_speaker_and_tests_on_the_rest():
    clips = read_clips(ROOT / "examples" / "data" / "fsdd")  # 5 speakers x 10 words x 5 clips
    enroll, tested = enrolled(clips, "lucas", 2, seed=0)
    assert len(enroll) == 20 and len(tested) == 30 and not set(enroll) & set(tested)
    assert {clips.speakers[i] for i in enroll + tested} == {"lucas"}
    words = [clips.labels[i] for i in enroll]
    assert sorted(words) == sorted([str(d) for d in range(10)] * 2)
    assert enrolled(clips, "lucas", 2, seed=0) == (enroll, tested)
    assert enrolled(clips, "lucas", 2, seed=1)[0] != enroll
    none, everything = enrolled(clips, "lucas", 0, seed=0)
    assert none == [] and everything == sorted(i for i, s in enumerate(clips.speakers) if s == "lucas")
