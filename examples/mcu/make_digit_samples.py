"""Write a C header of spoken digits for spoken_digits.c, and the same audio as a WAV file.

The clips are one speaker's recordings from a bundle of the Free Spoken Digit Dataset subset in
examples/data/fsdd (CC BY-SA 4.0; its README says what and whence), the speaker the example's model is
not trained on: the DIGITS in order, each clip's first take, joined by GAP_S seconds of quiet white noise
(-60 dBFS, seeded), after a LEAD_S lead-in. The header holds the 16-bit samples as they are and where
each word is. Run:
  python make_digit_samples.py BUNDLE.npz HEADER.h AUDIO.wav [DIGITS]   (DIGITS default 314159)
"""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import numpy as np

from edgernn.runtime.audio import read_bundle

LEAD_S, GAP_S, NOISE_DBFS, SEED = 0.5, 0.8, -60.0, 7


def main(bundle: str, header: str, audio: str, digits: str = "314159") -> None:
    clips = read_bundle(Path(bundle))
    rate = int(clips.rate)
    rng = np.random.default_rng(SEED)
    level = 32768.0 * 10.0 ** (NOISE_DBFS / 20.0)

    def gap(seconds: float) -> np.ndarray:
        return np.clip(np.rint(rng.normal(0.0, level, int(seconds * rate))), -32768, 32767).astype(np.int16)

    parts, words, at = [gap(LEAD_S)], [], int(LEAD_S * rate)
    for digit in digits:
        index = next(i for i, label in enumerate(clips.labels) if str(label) == digit)
        clip = np.asarray(clips.audio[index], np.int16)
        words.append((digit, clips.names[index], at, at + len(clip)))
        parts += [clip, gap(GAP_S)]
        at += len(clip) + len(parts[-1])
    samples = np.concatenate(parts)
    with wave.open(audio, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())
    speaker = clips.speakers[0] if len(clips.speakers) else Path(bundle).stem
    lines = [
        f"/* {len(words)} spoken digits by {speaker} from {Path(bundle).name} (Free Spoken Digit Dataset, CC BY-SA",
        f" * 4.0), {LEAD_S:g} s lead-in and {GAP_S:g} s gaps of white noise at {NOISE_DBFS:g} dBFS. Written by",
        " * make_digit_samples.py. */",
        "#ifndef DIGIT_SAMPLES_H",
        "#define DIGIT_SAMPLES_H",
        "",
        "#include <stdint.h>",
        "",
        f"#define DIGIT_SAMPLE_RATE {rate}",
        f"#define DIGIT_SAMPLES_COUNT {len(samples)}",
        f"#define DIGIT_WORDS {len(words)}",
        "",
        "static const char *const digit_words[DIGIT_WORDS] = {"
        + ", ".join(f'"{d}"' for d, _, _, _ in words)
        + "};",
        "static const long digit_word_span[DIGIT_WORDS][2] = {"
        + ", ".join(f"{{{a}, {b}}}" for _, _, a, b in words)
        + "}; /* first and end sample */",
        "",
        "static const int16_t digit_samples[DIGIT_SAMPLES_COUNT] = {",
    ]
    for start in range(0, len(samples), 16):
        lines.append("    " + ", ".join(str(int(v)) for v in samples[start : start + 16]) + ",")
    lines += ["};", "", "#endif", ""]
    Path(header).write_text("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    main(*sys.argv[1:])
