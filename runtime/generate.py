"""Sample text from a character-level token model, one step at a time.

from edgernn.runtime import Stepper, generate
text = generate(Stepper("shakespeare.onnx"), "ROMEO:", max_new_tokens=200, temperature=0.8, seed=0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import InputError
from edgernn.runtime.stepper import Stepper


def encode(info: ModelInfo, text: str) -> np.ndarray:
    """Token ids ``(len(text),)`` int64 of ``text`` under the model's character vocabulary.

    Raises InputError listing every character the vocabulary lacks.
    """
    vocabulary = _vocabulary(info)
    index = {token: i for i, token in reversed(list(enumerate(vocabulary)))}  # first occurrence wins
    unknown = sorted({c for c in text if c not in index})
    if unknown:
        raise InputError(f"text has characters outside the model's vocabulary: {unknown!r}")
    return np.array([index[c] for c in text], dtype=np.int64)


def decode(info: ModelInfo, ids: Sequence[int] | np.ndarray) -> str:
    """The text of token ``ids`` (each in ``[0, vocab_size)``)."""
    vocabulary = _vocabulary(info)
    bad = [int(i) for i in ids if not 0 <= int(i) < len(vocabulary)]
    if bad:
        raise InputError(f"ids: expected values in [0, {len(vocabulary)}), got {bad[:5]}")
    return "".join(vocabulary[int(i)] for i in ids)


def _vocabulary(info: ModelInfo | None) -> tuple[str, ...]:
    if info is None or info.input.kind != "tokens" or info.input.vocabulary is None:
        raise InputError("text needs an edgernn token model with a vocabulary in its metadata")
    return info.input.vocabulary


def generate(
    stepper: Stepper,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = None,
    seed: int | None = None,
) -> str:
    """Continue ``prompt`` with ``max_new_tokens`` sampled characters; returns only the new text.

    Runs on a new stream, so the stepper's own state is untouched. ``temperature`` 0 picks the most
    likely token; ``top_k`` samples among the k most likely; ``seed`` makes sampling repeatable.
    """
    info = stepper.info
    _check_generate_args(info, prompt, max_new_tokens, temperature, top_k)
    stream = stepper.new_stream(batch_size=1)
    logits = stream.run(encode(info, prompt))[-1]  # (vocab_size,)
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(max_new_tokens):
        ids.append(sample(logits, temperature, top_k, rng))
        if i + 1 < max_new_tokens:
            logits = stream.step(ids[-1])
    return decode(info, ids)


def _check_generate_args(
    info: ModelInfo | None, prompt: str, max_new_tokens: int, temperature: float, top_k: int | None
) -> None:
    vocabulary = _vocabulary(info)
    problems = []
    if info.output.kind != "logits" or info.output.size != len(vocabulary):
        problems.append(
            f"model: expected logits over its {len(vocabulary)} tokens, "
            f"got {info.output.size} {info.output.kind}"
        )
    if not isinstance(prompt, str) or not prompt:
        problems.append(f"prompt: expected a non-empty string, got {prompt!r}")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        problems.append(f"max_new_tokens: expected an integer >= 0, got {max_new_tokens!r}")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        problems.append(f"temperature: expected a finite number >= 0, got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        problems.append(f"top_k: expected an integer >= 1 or None, got {top_k!r}")
    if problems:
        raise InputError("generate: " + "; ".join(problems))


def sample(logits: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator) -> int:
    """One token id from ``logits`` ``(vocab_size,)``: greedy at temperature 0, else softmax(logits / T)."""
    if temperature == 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < scaled.size:
        cutoff = np.partition(scaled, -top_k)[-top_k]
        scaled = np.where(scaled >= cutoff, scaled, -np.inf)
    weights = np.exp(scaled - scaled.max())
    return int(rng.choice(scaled.size, p=weights / weights.sum()))
