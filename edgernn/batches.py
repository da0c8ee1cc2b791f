"""Training batches: consecutive chunks of contiguous streams over a series, or padded sequences."""

from __future__ import annotations

import math

import torch
from torch import nn

from edgernn.runtime.errors import InputError


def series_steps_needed(batch_size: int, seq_len: int, world: int = 1) -> int:
    """The fewest training steps ``SeriesBatches`` takes: every stream two chunks long, plus one chunk of
    room for the epochs' shifting offset."""
    return 2 * seq_len * batch_size * world + seq_len


class SeriesBatches:
    """Consecutive ``(B, T)`` chunks of ``B`` contiguous streams over one long series, epoch after epoch.

    Each epoch starts at a different offset (from the seed), so chunk boundaries move between epochs.
    With data-parallel training, rank ``r`` of ``w`` reads streams ``r*B .. (r+1)*B`` of ``w*B``.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        seq_len: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
    ):
        self.inputs, self.targets = inputs, targets
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.rank, self.world = rank, world
        self.stream_len = (len(inputs) - seq_len) // (batch_size * world)
        if len(inputs) < series_steps_needed(batch_size, seq_len, world):
            raise InputError(
                f"the training series has {len(inputs)} steps; batch_size {batch_size} x {world} process(es) "
                f"of seq_len {seq_len} needs at least {series_steps_needed(batch_size, seq_len, world)}"
            )
        self.chunks_per_epoch = self.stream_len // seq_len
        self.epoch, self.chunk = 0, 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Inputs ``(B, T, ...)``, targets ``(B, T, ...)``, and whether this chunk starts a new stream."""
        if self.chunk == self.chunks_per_epoch:
            self.epoch, self.chunk = self.epoch + 1, 0
        offset = int(
            torch.randint(
                0, self.seq_len, (1,), generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
            )
        )
        first = self.rank * self.batch_size
        starts = (
            offset + (first + torch.arange(self.batch_size)) * self.stream_len + self.chunk * self.seq_len
        )
        index = starts[:, None] + torch.arange(self.seq_len)  # (B, T)
        fresh = self.chunk == 0
        self.chunk += 1
        return self.inputs[index], self.targets[index], fresh


class SequenceBatches:
    """Shuffled batches of variable-length sequences, zero-padded: ``(B, T_max, F)``, lengths, labels."""

    def __init__(self, cases: list, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.cases, self.batch_size, self.seed = cases, batch_size, seed
        self.rank, self.world = rank, world
        self.per_rank = max(1, len(cases) // world)
        self.chunks_per_epoch = max(1, math.ceil(self.per_rank / batch_size))
        self.epoch, self.chunk = 0, 0

    def next(self):
        if self.chunk == self.chunks_per_epoch:
            self.epoch, self.chunk = self.epoch + 1, 0
        if hasattr(self.cases, "set_epoch"):  # cases drawn afresh every epoch (edgernn.keyword.Redrawn)
            self.cases.set_epoch(self.epoch)
        order = torch.randperm(
            len(self.cases), generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        )
        mine = order[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]
        picked = mine[self.chunk * self.batch_size : (self.chunk + 1) * self.batch_size]
        self.chunk += 1
        inputs, targets = pad_sequences([self.cases[int(i)] for i in picked])
        return inputs, targets, True


IGNORE = -100  # a step's label no loss judges (cross_entropy's ignore_index)


class StepLabels(int):
    """A sequence's class (the label its last step is judged by) that also says what every step is:
    ``spans``, ``((first step, class), ...)`` in order, each class holding until the next span starts
    (``IGNORE``: steps no loss judges). A plain int label is its class at every step."""

    spans: tuple[tuple[int, int], ...]

    def __new__(cls, label: int, spans) -> StepLabels:
        made = super().__new__(cls, label)
        made.spans = tuple((int(first), int(c)) for first, c in spans)
        return made

    def __reduce__(self):
        return StepLabels, (int(self), self.spans)

    def steps(self, length: int) -> torch.Tensor:
        """The label of each of ``length`` steps, int64 ``(length,)``."""
        out = torch.full((length,), int(self), dtype=torch.long)
        for (first, label), (end, _) in zip(self.spans, [*self.spans[1:], (length, 0)], strict=True):
            out[max(0, first) : max(0, end)] = label
        return out


def pad_sequences(cases: list) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Zero-padded inputs ``(B, T_max, F)`` and (lengths ``(B,)``, labels ``(B,)``, each step's label
    ``(B, T_max)``: ``IGNORE`` past a sequence's end)."""
    lengths = torch.tensor([len(x) for x, _ in cases])
    inputs = nn.utils.rnn.pad_sequence([x for x, _ in cases], batch_first=True)
    labels = torch.tensor([int(label) for _, label in cases])
    steps = torch.full(inputs.shape[:2], IGNORE, dtype=torch.long)
    for i, (x, label) in enumerate(cases):
        steps[i, : len(x)] = label.steps(len(x)) if isinstance(label, StepLabels) else int(label)
    return inputs, (lengths, labels, steps)
