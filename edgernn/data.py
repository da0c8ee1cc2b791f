"""Text data for character-level language models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgernn.runtime.errors import InputError

if TYPE_CHECKING:  # the readers serve torch-free commands (edgernn eval); training imports torch itself
    import torch


def read_text(path: str | os.PathLike) -> str:
    """Read a UTF-8 text file; refuse files that are missing, not text or too short to learn from."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; expected a UTF-8 text file") from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: expected UTF-8 text, found undecodable bytes at offset {exc.start}"
        ) from None
    if len(text) < 1000:
        raise InputError(f"{path}: expected at least 1000 characters of text, found {len(text)}")
    return text


def build_vocabulary(text: str) -> list[str]:
    """The sorted distinct characters of ``text``; index = token id."""
    return sorted(set(text))


def encode(text: str, vocabulary: list[str]) -> np.ndarray:
    """Characters -> int64 ids ``(len(text),)``; unknown characters are an InputError."""
    index = {ch: i for i, ch in enumerate(vocabulary)}
    unknown = sorted(set(text) - index.keys())
    if unknown:
        raise InputError(f"characters not in the vocabulary: {''.join(unknown)!r}")
    return np.fromiter((index[ch] for ch in text), dtype=np.int64, count=len(text))


def split_train_validation(
    ids: np.ndarray, validation_fraction: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """First (1 - fraction) for training, the rest for validation: the common tinyshakespeare split."""
    cut = int(len(ids) * (1.0 - validation_fraction))
    return ids[:cut], ids[cut:]


def sample_windows(ids: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator):
    """Random windows: inputs ``(B, T)`` and next-character targets ``(B, T)``, both int64."""
    import torch

    starts = torch.randint(0, len(ids) - seq_len - 1, (batch_size,), generator=generator)
    offsets = torch.arange(seq_len + 1)
    windows = ids[starts[:, None] + offsets]  # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]


def stream_chunks(ids: torch.Tensor, batch_size: int, seq_len: int):
    """Cut ``ids`` into ``batch_size`` contiguous streams and yield consecutive ``(B, T)`` chunks.

    Carrying state from one chunk to the next measures what a streaming stepper sees.
    """
    length = (len(ids) - 1) // batch_size
    if length < 2:
        raise InputError(f"expected at least {2 * batch_size + 1} tokens to evaluate, found {len(ids)}")
    inputs = ids[: length * batch_size].view(batch_size, length)  # (B, N)
    targets = ids[1 : length * batch_size + 1].view(batch_size, length)
    for start in range(0, length, seq_len):
        yield inputs[:, start : start + seq_len], targets[:, start : start + seq_len]
