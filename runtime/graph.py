"""The shared model: what every stream of one loaded model shares (session, names, state layout).

``Graph`` is built by ``edgernn.runtime.loading`` (edgernn models) or ``edgernn.runtime.foreign`` (models
edgernn did not write); streams (``edgernn.runtime.stream``) and pools (``edgernn.runtime.pool``) step it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import onnxruntime as ort

from edgernn.runtime.chunk import ChunkGraph, load_chunk, try_load_chunk
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ContractError, InputError
from edgernn.runtime.inputs import (
    MAX_STREAM_BYTES,
    DataInput,
    StateSlot,
    check_state,
    check_stream_bytes,
    mib,
)
from edgernn.runtime.session import ModelSource

__all__ = ["MAX_STREAM_BYTES", "Graph", "StateSlot"]


def _row_bytes(info: ModelInfo | None, states: tuple[StateSlot, ...]) -> int:
    """Bytes of state (and, for edgernn models, results) one batch row takes."""
    return sum(s.row_bytes for s in states) + (0 if info is None else 4 * info.output.size)


class Graph:
    """What every stream of one model shares: the session, resolved names, state layout and constants."""

    def __init__(
        self,
        session: ort.InferenceSession,
        info: ModelInfo | None,
        data: DataInput,
        states: tuple[StateSlot, ...],
        result_names: tuple[str, ...],
        constants: dict[str, np.ndarray],
    ):
        self.session, self.info, self.data, self.states = session, info, data, states
        self.constants = constants
        self.result_names = result_names
        self.output_names = [*result_names, *(s.output for s in states)]
        self.result_count = len(result_names)
        self._chunk: ChunkGraph | None = None
        self._chunk_loader: Callable[[], ChunkGraph | None] | None = None
        self._chunk_lock = threading.Lock()
        self.row_bytes = _row_bytes(info, states)
        if 2 * self.row_bytes > MAX_STREAM_BYTES:
            raise ContractError(
                f"the model's state needs {mib(2 * self.row_bytes)} per stream, more than the "
                f"{mib(MAX_STREAM_BYTES)} edgernn allocates for one; its metadata or state shapes are not "
                "those of a model edgernn can step"
            )

    def check_allocation(self, batch_size: int, what: str = "batch_size") -> None:
        """Refuse (InputError) a batch whose state and result buffers (two sets) would pass the bound."""
        check_stream_bytes(2 * self.row_bytes, batch_size, what)

    def offer_chunk(
        self,
        source: ModelSource,
        explicit: bool,
        opener: Callable[[ModelSource], Any],
        step: Callable[[np.ndarray], list[np.ndarray]],
    ) -> None:
        """A chunk graph to load and check on first use (``chunk()``); for edgernn models only.

        ``step(xs)``: the probe through the step graph that the chunk graph must reproduce."""
        if self.info is None:
            if explicit:
                raise InputError("chunk_model: only for edgernn models (chunk graphs come from the exporter)")
            return
        self._chunk_loader = partial(
            try_load_chunk,
            source,
            explicit,
            partial(load_chunk, opener, step_info=self.info, step=step),
        )

    def chunk(self) -> ChunkGraph | None:
        """The checked chunk graph ``Stream.run`` feeds long sequences through; None if there is none."""
        if self._chunk_loader is not None:
            with self._chunk_lock:  # concurrent first calls: one loads and checks, the others wait for it
                if self._chunk_loader is not None:
                    self._chunk = self._chunk_loader()
                    self._chunk_loader = None
        return self._chunk

    def initial_state(self, batch_size: int) -> dict[str, np.ndarray]:
        return {s.input: np.full(s.shape_for(batch_size), s.initial, s.dtype) for s in self.states}

    def result_shapes(self, batch_size: int) -> list[tuple[int, ...]] | None:
        """Shapes of the results for a batch, when the contract fixes them (edgernn models); else None."""
        if self.info is None:
            return None  # a foreign graph's declared output shapes may not hold: let onnxruntime allocate
        return [(batch_size, self.info.output.size)]

    def check_state(self, state: Any, batch_size: int) -> dict[str, np.ndarray]:
        """Validated copies of ``state`` (name -> array); raises InputError listing every problem."""
        return check_state(state, self.states, batch_size)
