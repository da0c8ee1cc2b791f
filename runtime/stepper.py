"""Step an ONNX recurrent model one input at a time, with its state explicit and in your hands.

One ``Stepper`` loads a model once (one onnxruntime session); any number of ``Stream`` objects share it,
each with its own state::

    stepper = Stepper("model.onnx")
    y = stepper.step(3)                      # default stream, batch size 1
    stream = stepper.new_stream(batch_size=4)
    ys = stream.run(xs)                      # (4, T) tokens -> (4, T, output_size)
    snap = stream.snapshot(); ...; stream.restore(snap)

edgernn models describe themselves (metadata under the ``edgernn`` key, see ``contract``). Models edgernn
did not write need ``state_map`` (state input -> state output) and, where they take extra inputs,
``constants``; e.g. Silero VAD: ``Stepper(path, state_map={"state": "stateN"}, constants={"sr": 16000})``.

Every input is checked before the session runs; on any error the state is left exactly as it was.

Where the parts live: ``inputs`` (converting and checking x and state), ``session`` (the onnxruntime session
and the metadata it carries), ``loading`` (edgernn graphs checked against their metadata), ``foreign``
(models edgernn did not write), ``graph`` (what the streams of one model share), ``binding`` (the IOBinding
step call), ``stream`` (``Stream``), ``pool`` (``StreamPool``), ``chunk`` (chunk graphs for ``run``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import onnxruntime as ort

from edgernn.runtime.binding import steps_from_initial
from edgernn.runtime.chunk import find_chunk, warn_missing_chunk
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.default_stream import DefaultStream
from edgernn.runtime.inputs import DataInput, check_positive_int, onnx_dtype
from edgernn.runtime.integrity import check_graph
from edgernn.runtime.loading import load_graph
from edgernn.runtime.session import (
    ORT_ERRORS,
    ModelSource,
    folding_options,
    folds_weights,
    model_bytes,
    model_label,
    open_session,
    read_info,
)
from edgernn.runtime.stream import Results, Stream

if TYPE_CHECKING:
    from edgernn.runtime.pool import StreamPool

__all__ = [
    "ORT_ERRORS", "DataInput", "ModelSource", "Results", "Stepper", "Stream", "folds_weights", "onnx_dtype",
    "open_session", "read_info",
]  # fmt: skip


class Stepper(DefaultStream):
    """A loaded model (one onnxruntime session) plus a default stream; ``new_stream`` makes more.

    model: path to an .onnx file, or its bytes. ``state_map``/``constants``/``state_shapes`` are for models
    edgernn did not write (see the module docstring). ``chunk_model``: the chunk graph ``run`` feeds long
    sequences through (path or bytes; by default ``model.chunk.onnx`` next to a model path if there is
    one; False for none; see ``edgernn.runtime.chunk``). ``data_shape``: for a foreign model whose data
    input has axes of unknown size, the shape every x must have (``("batch", 512)``; see ``foreign``).
    ``verify_checksum``: check the graph against the checksum its metadata records (on by default: a
    flipped byte in the weights is refused at load; False skips the hash, see ``integrity``). Raises
    InputError for a missing file or bad argument, ContractError for a file that is not a model edgernn
    can run.
    """

    _closes = ("_stream", "_graph")

    def __init__(
        self,
        model: ModelSource,
        *,
        providers: Sequence[str] | None = None,
        threads: int = 1,
        batch_size: int = 1,
        state_map: Mapping[str, str] | None = None,
        constants: Mapping[str, Any] | None = None,
        state_shapes: Mapping[str, Sequence[int | str | None]] | None = None,
        session_options: ort.SessionOptions | None = None,
        chunk_model: ModelSource | bool | None = None,
        data_shape: Sequence[int | str | None] | None = None,
        verify_checksum: bool = True,
    ):
        check_positive_int("batch_size", batch_size)
        opener = partial(open_session, providers=providers, threads=threads, session_options=session_options)
        session = opener(model)
        label = model_label(model)
        if session_options is None and folds_weights(read_info(session, label)):  # only then opened twice
            session = open_session(model, providers=providers, session_options=folding_options(threads))
        self._graph = load_graph(session, state_map, constants, state_shapes, label, data_shape)
        if verify_checksum and self._graph.info is not None:
            check_graph(model_bytes(model), self._graph.info, label)
        chunk = find_chunk(chunk_model, model)
        if chunk is None and chunk_model is None:
            warn_missing_chunk(self._graph.info, model)
        if chunk is not None:
            self._graph.offer_chunk(
                chunk,
                explicit=chunk_model not in (None, True),
                opener=opener,
                step=partial(steps_from_initial, self._graph),
            )
        self._stream = Stream(self._graph, batch_size)

    @property
    def info(self) -> ModelInfo | None:
        """The parsed edgernn metadata, or None for a model edgernn did not write."""
        return self._graph.info

    @property
    def data_input(self) -> DataInput:
        """Name, dtype and shape (batch axis first) of the input each step feeds."""
        return self._graph.data

    @property
    def session(self) -> ort.InferenceSession:
        """The onnxruntime session every stream of this stepper shares."""
        return self._graph.session

    @property
    def batch_size(self) -> int:
        return self._stream.batch_size

    def new_pool(self, capacity: int) -> StreamPool:
        """A pool of up to ``capacity`` streams stepped together in one batched call (see ``StreamPool``)."""
        from edgernn.runtime.pool import StreamPool  # the pool builds on this module

        return StreamPool(self._graph, capacity)

    @property
    def chunk_steps(self) -> int | None:
        """Steps per call of the chunk graph ``run`` uses (loaded and checked now if not yet), or None."""
        chunk = self._graph.chunk()
        return None if chunk is None else chunk.steps

    def new_stream(self, batch_size: int = 1) -> Stream:
        """A new stream with its own state, starting from the initial state; shares this model's session."""
        return Stream(self._graph, batch_size)
