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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from edgernn.runtime import contract
from edgernn.runtime.chunk import ChunkGraph, find_chunk, load_chunk, try_load_chunk
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ContractError, InputError

if TYPE_CHECKING:
    from edgernn.runtime.pool import StreamPool

# onnxruntime raises its own exception classes (not RuntimeError); which exist depends on the version.
_ORT_ERROR_NAMES = (
    "EPFail", "EngineError", "Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "ModelLoaded",
    "NoModel", "NoSuchFile", "NotFound", "NotImplemented", "RuntimeException",
)  # fmt: skip
ORT_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(_ort_state, name) for name in _ORT_ERROR_NAMES if hasattr(_ort_state, name)
)

_ONNX_DTYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16, "tensor(int8)": np.int8,
    "tensor(uint64)": np.uint64, "tensor(uint32)": np.uint32, "tensor(uint16)": np.uint16,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}  # fmt: skip

ModelSource = str | os.PathLike | bytes
Results = np.ndarray | tuple[np.ndarray, ...]


def onnx_dtype(type_name: str) -> np.dtype | None:
    """numpy dtype of an onnxruntime type string such as ``"tensor(float)"``; None if not a plain tensor."""
    dtype = _ONNX_DTYPES.get(type_name)
    return None if dtype is None else np.dtype(dtype)


# --- inputs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataInput:
    """The graph input a step feeds. ``shape[0]`` is the batch axis; None marks an axis of any size.

    ``vocab_size`` is set for token models: ids must lie in ``[0, vocab_size)``.
    """

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]
    vocab_size: int | None = None

    def validate(self, x: Any, batch_size: int, *, sequence: bool = False) -> tuple[np.ndarray, bool]:
        """Check ``x`` for a stream of ``batch_size``; return it batched, contiguous, in ``dtype``.

        A step takes ``shape`` (``(B,)`` tokens, ``(B, F)`` features); a sequence adds a time axis after
        the batch axis. With ``batch_size == 1`` the batch axis may be left out; the returned flag says so.
        Raises InputError saying what was expected and what was given.
        """
        label = "xs" if sequence else "x"
        array = _as_array(x, label)
        dims = (batch_size, *((None,) if sequence else ()), *self.shape[1:])
        unbatched = batch_size == 1 and array.ndim == len(dims) - 1
        if unbatched:
            array = array[np.newaxis]
        if not _fits(array.shape, dims):
            expected = self._expected_shapes(batch_size, sequence)
            raise InputError(f"{label}: expected {self._noun} of shape {expected}, got {_given(x)}")
        if sequence and array.shape[1] == 0:
            raise InputError(f"{label}: expected at least one step, got shape {array.shape}")
        return self._convert(array, label), unbatched

    @property
    def _noun(self) -> str:
        if self.vocab_size:
            return "token ids"
        return "features" if self.dtype.kind == "f" else "values"

    def _expected_shapes(self, batch_size: int, sequence: bool) -> str:
        labels = [*(["T"] if sequence else []), *("?" if d is None else str(d) for d in self.shape[1:])]
        batched = _shape_text([str(batch_size), *labels])
        if batch_size != 1:
            return f"{batched} (this stream's batch size is {batch_size})"
        return f"{batched} or {_shape_text(labels)}"

    def _convert(self, array: np.ndarray, label: str) -> np.ndarray:
        kind = self.dtype.kind
        if kind == "f":
            return _convert_floats(array, self.dtype, label)
        if kind in "iu":
            return _convert_integers(array, self.dtype, self.vocab_size, label)
        if array.dtype.kind != "b":
            raise InputError(f"{label}: expected booleans, got dtype {array.dtype}")
        return np.ascontiguousarray(array)


def _as_array(x: Any, label: str) -> np.ndarray:
    try:
        return np.asarray(x)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"{label}: expected an array of numbers, got {type(x).__name__} ({exc})") from None


def _fits(shape: tuple[int, ...], dims: Sequence[int | None]) -> bool:
    """Whether ``shape`` matches ``dims``, where None matches any size."""
    return len(shape) == len(dims) and all(d is None or d == n for d, n in zip(dims, shape, strict=True))


def _given(x: Any) -> str:
    array = np.asarray(x)
    return f"shape {array.shape} ({array.dtype})"


def _shape_text(labels: Sequence[str]) -> str:
    return "(" + ", ".join(labels) + ("," if len(labels) == 1 else "") + ")"


def _convert_floats(array: np.ndarray, dtype: np.dtype, label: str) -> np.ndarray:
    if array.dtype.kind != "f":
        raise InputError(f"{label}: expected floating-point values ({dtype}), got dtype {array.dtype}")
    with np.errstate(over="ignore"):  # a float64 too large for float32 becomes inf and is refused below
        converted = np.ascontiguousarray(array, dtype=dtype)
    finite = np.isfinite(converted)
    if not finite.all():
        where = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise InputError(
            f"{label}: expected finite values, got {int((~finite).sum())} NaN/inf value(s), "
            f"the first at index {where}"
        )
    return converted


def _convert_integers(array: np.ndarray, dtype: np.dtype, vocab_size: int | None, label: str) -> np.ndarray:
    what = "token ids" if vocab_size else "integers"
    if array.dtype.kind not in "iu":
        raise InputError(f"{label}: expected integer {what} ({dtype}), got dtype {array.dtype}")
    low, high = (0, vocab_size - 1) if vocab_size else (np.iinfo(dtype).min, np.iinfo(dtype).max)
    if array.size and (array.min() < low or array.max() > high):
        bad = np.unique(array[(array < low) | (array > high)])[:5].tolist()
        expected = f"[0, {vocab_size}) (the vocabulary size)" if vocab_size else f"[{low}, {high}]"
        raise InputError(f"{label}: expected {what} in {expected}, got {bad}")
    return np.ascontiguousarray(array, dtype=dtype)


# --- the shared model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _StateSlot:
    """One state tensor; ``shape`` has None where the stream's batch size goes."""

    input: str
    output: str
    shape: tuple[int | None, ...]
    dtype: np.dtype
    initial: float = 0.0

    def shape_for(self, batch_size: int) -> tuple[int, ...]:
        return tuple(batch_size if d is None else d for d in self.shape)


class _Graph:
    """What every stream of one model shares: the session, resolved names, state layout and constants."""

    def __init__(
        self,
        session: ort.InferenceSession,
        info: ModelInfo | None,
        data: DataInput,
        states: tuple[_StateSlot, ...],
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

    def offer_chunk(self, source: ModelSource, explicit: bool, opener: Callable[[ModelSource], Any]) -> None:
        """A chunk graph to load and check on first use (``chunk()``); for edgernn models only."""
        if self.info is None:
            if explicit:
                raise InputError("chunk_model: only for edgernn models (chunk graphs come from the exporter)")
            return
        self._chunk_loader = partial(
            try_load_chunk,
            source,
            explicit,
            partial(load_chunk, opener, step_info=self.info, step=self._steps),
        )

    def chunk(self) -> ChunkGraph | None:
        """The checked chunk graph ``Stream.run`` feeds long sequences through; None if there is none."""
        if self._chunk_loader is not None:
            loader, self._chunk_loader = self._chunk_loader, None
            self._chunk = loader()
        return self._chunk

    def _steps(self, xs: np.ndarray) -> list[np.ndarray]:
        """xs ``(1, T, ...)`` one step at a time from the initial state: ``[ys (1, T, O), *final states]``."""
        binding = _Binding(self, 1)
        for slot, buffer in zip(self.states, binding.state, strict=True):
            buffer.fill(slot.initial)
        ys = []
        for t in range(xs.shape[1]):
            binding.write_x(xs[:, t])
            ys.append(binding.run()[0].copy())
        return [np.stack(ys, axis=1), *(a.copy() for a in binding.state)]

    def initial_state(self, batch_size: int) -> dict[str, np.ndarray]:
        return {s.input: np.full(s.shape_for(batch_size), s.initial, s.dtype) for s in self.states}

    def result_shapes(self, batch_size: int) -> list[tuple[int, ...]] | None:
        """Shapes of the results for a batch, when the contract fixes them (edgernn models); else None."""
        if self.info is None:
            return None  # a foreign graph's declared output shapes may not hold: let onnxruntime allocate
        return [(batch_size, self.info.output.size)]

    def check_state(self, state: Any, batch_size: int) -> dict[str, np.ndarray]:
        """Validated copies of ``state`` (name -> array); raises InputError listing every problem."""
        if not isinstance(state, Mapping):
            raise InputError(f"state: expected a dict of state name -> array, got {type(state).__name__}")
        expected = [s.input for s in self.states]
        problems = []
        if set(state) != set(expected):
            problems.append(f"expected names {expected}, got {sorted(map(str, state))}")
        checked = {}
        for slot in self.states:
            if slot.input in state:
                checked[slot.input] = _check_state_array(slot, state[slot.input], batch_size, problems)
        if problems:
            raise InputError("invalid state:\n  - " + "\n  - ".join(problems))
        return checked


def _check_state_array(
    slot: _StateSlot, value: Any, batch_size: int, problems: list[str]
) -> np.ndarray | None:
    expected_shape = slot.shape_for(batch_size)
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, OverflowError) as exc:
        problems.append(f"{slot.input}: expected an array, got {type(value).__name__} ({exc})")
        return None
    if array.shape != expected_shape:
        problems.append(f"{slot.input}: expected shape {expected_shape} ({slot.dtype}), got {array.shape}")
        return None
    try:
        if slot.dtype.kind == "f":
            return _convert_floats(array, slot.dtype, slot.input).copy()
        return _convert_integers(array, slot.dtype, None, slot.input).copy()
    except InputError as exc:
        problems.append(str(exc))
        return None


# --- loading -----------------------------------------------------------------------------------------


def open_session(
    model: ModelSource,
    *,
    providers: Sequence[str] | None = None,
    threads: int = 1,
    session_options: ort.SessionOptions | None = None,
) -> ort.InferenceSession:
    """An onnxruntime session tuned for tiny models.

    Raises InputError for a missing file or bad argument, ContractError for a file onnxruntime cannot load.
    """
    _check_positive_int("threads", threads)
    source, label = _model_source(model)
    options = session_options or _default_session_options(threads)
    try:
        return ort.InferenceSession(
            source, sess_options=options, providers=list(providers or ["CPUExecutionProvider"])
        )
    except ORT_ERRORS as exc:
        raise ContractError(f"{label} is not an ONNX model onnxruntime can load: {exc}") from None


def _model_source(model: ModelSource) -> tuple[str | bytes, str]:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model), "the model bytes"
    if not isinstance(model, (str, os.PathLike)):
        raise InputError(f"model: expected a file path or bytes, got {type(model).__name__}")
    path = Path(model)
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise InputError(f"model file {str(path)!r} {problem}; expected an .onnx file")
    return str(path), repr(str(path))


def _default_session_options(threads: int) -> ort.SessionOptions:
    # Tiny recurrent steps are dominated by per-call overhead: more threads only add synchronisation.
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def folds_weights(info: ModelInfo | None) -> bool:
    """True for a model whose weights are stored int8 behind DequantizeLinear (``int8_method="weights"``).

    Such a model is opened with ``session.disable_quant_qdq=1``: onnxruntime then folds each constant
    DequantizeLinear into a float32 weight once, at load, instead of dequantizing at every step (which
    its QDQ handling otherwise keeps, to fuse quantized kernels that a weight-only model does not use).
    """
    return info is not None and (info.quantization or {}).get("method") == "weights"


def _folding_options(threads: int) -> ort.SessionOptions:
    options = _default_session_options(threads)
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    return options


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name}: expected a positive integer, got {value!r}")


def read_info(session: ort.InferenceSession) -> ModelInfo | None:
    """The model's parsed edgernn metadata, or None if edgernn did not write it."""
    text = session.get_modelmeta().custom_metadata_map.get(contract.METADATA_KEY)
    return None if text is None else contract.parse_info(text)


def _edgernn_graph(session: ort.InferenceSession, info: ModelInfo) -> _Graph:
    if info.steps_per_call != 1:
        raise ContractError(
            f"this is a chunk graph ({info.steps_per_call} steps per call), which Stepper.run uses; "
            "open the step model it was exported with (model.onnx for model.chunk.onnx)"
        )
    expected_inputs, expected_outputs = _contract_io(info)
    problems = _io_problems("input", expected_inputs, session.get_inputs())
    problems += _io_problems("output", expected_outputs, session.get_outputs())
    if problems:
        raise ContractError("the graph does not match its edgernn metadata:\n  - " + "\n  - ".join(problems))
    x_dtype, x_shape = expected_inputs[contract.INPUT_NAME]
    vocab_size = info.input.size if info.input.kind == "tokens" else None
    data = DataInput(contract.INPUT_NAME, x_dtype, x_shape, vocab_size)
    states = tuple(
        _StateSlot(s.input, s.output, (None, *s.shape), np.dtype(s.dtype), s.initial) for s in info.states
    )
    return _Graph(session, info, data, states, (contract.OUTPUT_NAME,), {})


def _contract_io(info: ModelInfo) -> tuple[dict, dict]:
    """name -> (dtype, shape with None for the batch axis) of every input and output the contract requires."""
    float32 = np.dtype(np.float32)
    x_shape = (None,) if info.input.kind == "tokens" else (None, info.input.size)
    inputs = {contract.INPUT_NAME: (np.dtype(info.input.dtype), x_shape)}
    outputs = {contract.OUTPUT_NAME: (float32, (None, info.output.size))}
    for s in info.states:
        inputs[s.input] = (np.dtype(s.dtype), (None, *s.shape))
        outputs[s.output] = (np.dtype(s.dtype), (None, *s.shape))
    return inputs, outputs


def _io_problems(kind: str, expected: dict, found_args: Sequence[Any]) -> list[str]:
    found = {arg.name: arg for arg in found_args}
    problems = []
    if sorted(found) != sorted(expected):
        problems.append(f"{kind}s: expected {sorted(expected)}, found {sorted(found)}")
    for name, (dtype, shape) in expected.items():
        if name in found:
            problems += _arg_problems(f"{kind} {name!r}", dtype, shape, found[name])
    return problems


def _arg_problems(where: str, dtype: np.dtype, shape: tuple[int | None, ...], arg: Any) -> list[str]:
    problems = []
    if onnx_dtype(arg.type) != dtype:
        problems.append(f"{where}: expected dtype {dtype}, found {arg.type}")
    expected_text = _shape_text(["batch" if d is None else str(d) for d in shape])
    if len(arg.shape) != len(shape):
        return [*problems, f"{where}: expected shape {expected_text}, found {arg.shape}"]
    if isinstance(arg.shape[0], int):
        problems.append(f"{where}: expected a dynamic batch axis first, found fixed size {arg.shape[0]}")
    if any(isinstance(f, int) and f != d for d, f in zip(shape[1:], arg.shape[1:], strict=True)):
        problems.append(f"{where}: expected shape {expected_text}, found {arg.shape}")
    return problems


def _foreign_graph(
    session: ort.InferenceSession,
    state_map: Mapping[str, str],
    constants: Mapping[str, Any],
    state_shapes: Mapping[str, Sequence[int | str | None]],
) -> _Graph:
    inputs = {arg.name: arg for arg in session.get_inputs()}
    outputs = {arg.name: arg for arg in session.get_outputs()}
    _check_foreign_arguments(inputs, outputs, state_map, constants, state_shapes)
    data_names = [n for n in inputs if n not in state_map and n not in constants]
    if len(data_names) != 1:
        raise ContractError(
            f"expected exactly one data input besides the state inputs {sorted(state_map)} and constants "
            f"{sorted(constants)}, found {data_names}; feed the others through constants={{name: value}}"
        )
    result_names = tuple(n for n in outputs if n not in state_map.values())
    if not result_names:
        raise ContractError(f"every output is a state output ({sorted(outputs)}); a step needs a result")
    states = tuple(
        _foreign_slot(inputs[name], output, state_shapes.get(name)) for name, output in state_map.items()
    )
    fed = {name: _constant(inputs[name], value) for name, value in constants.items()}
    return _Graph(session, None, _foreign_data_input(inputs[data_names[0]]), states, result_names, fed)


def _check_foreign_arguments(
    inputs: dict, outputs: dict, state_map: Mapping, constants: Mapping, state_shapes: Mapping
) -> None:
    problems = [f"state_map: {n!r} is not an input of the model" for n in state_map if n not in inputs]
    problems += [
        f"state_map: {n!r} is not an output of the model" for n in state_map.values() if n not in outputs
    ]
    problems += [f"constants: {n!r} is not an input of the model" for n in constants if n not in inputs]
    problems += [f"constants: {n!r} is a state input" for n in constants if n in state_map]
    problems += [f"state_shapes: {n!r} is not in state_map" for n in state_shapes if n not in state_map]
    if len(set(state_map.values())) != len(state_map):
        problems.append(f"state_map: two state inputs share one output ({dict(state_map)})")
    if problems:
        found = f"(inputs: {sorted(inputs)}, outputs: {sorted(outputs)})"
        raise InputError("invalid arguments for this model " + found + ":\n  - " + "\n  - ".join(problems))


def _foreign_data_input(arg: Any) -> DataInput:
    dtype = onnx_dtype(arg.type)
    if dtype is None:
        raise ContractError(
            f"data input {arg.name!r} has type {arg.type}; edgernn feeds numeric tensors only"
        )
    if not arg.shape:
        raise ContractError(
            f"data input {arg.name!r} declares no shape; edgernn needs its rank (batch axis first)"
        )
    dims = tuple(d if isinstance(d, int) else None for d in arg.shape[1:])
    return DataInput(arg.name, dtype, (None, *dims))


def _foreign_slot(arg: Any, output: str, override: Sequence[int | str | None] | None) -> _StateSlot:
    dtype = onnx_dtype(arg.type)
    if dtype is None or dtype.kind not in "fiu":
        raise ContractError(f"state input {arg.name!r} has type {arg.type}; edgernn keeps numeric state only")
    if override is not None:
        return _StateSlot(arg.name, output, _override_shape(arg.name, override), dtype)
    if not arg.shape:
        raise ContractError(
            f"state input {arg.name!r} declares no shape; pass state_shapes={{{arg.name!r}: (...)}} "
            f"with {contract.BATCH_AXIS_NAME!r} where the batch size goes"
        )
    return _StateSlot(arg.name, output, tuple(d if isinstance(d, int) else None for d in arg.shape), dtype)


def _override_shape(name: str, shape: Sequence[int | str | None]) -> tuple[int | None, ...]:
    dims = []
    for d in shape:
        if d is None or d == contract.BATCH_AXIS_NAME:
            dims.append(None)
        elif isinstance(d, int) and not isinstance(d, bool) and d > 0:
            dims.append(d)
        else:
            raise InputError(
                f"state_shapes[{name!r}]: expected positive integers, with {contract.BATCH_AXIS_NAME!r} "
                f"where the batch size goes, got {shape!r}"
            )
    return tuple(dims)


def _constant(arg: Any, value: Any) -> np.ndarray:
    label = f"constants[{arg.name!r}]"
    dtype = onnx_dtype(arg.type)
    array = _as_array(value, label)
    accepted = "iufb" if dtype is not None and dtype.kind == "f" else "iub"  # never float -> int silently
    if dtype is None or array.dtype.kind not in accepted:
        raise InputError(f"{label}: expected a value of type {arg.type}, got dtype {array.dtype}")
    if arg.shape and array.ndim != len(arg.shape):
        raise InputError(f"{label}: expected shape {arg.shape}, got {array.shape}")
    return np.ascontiguousarray(array, dtype=dtype)


def _load_graph(
    session: ort.InferenceSession,
    state_map: Mapping[str, str] | None,
    constants: Mapping[str, Any] | None,
    state_shapes: Mapping[str, Sequence[int | str | None]] | None,
) -> _Graph:
    info = read_info(session)
    if info is not None:
        _refuse_foreign_arguments(state_map=state_map, constants=constants, state_shapes=state_shapes)
        return _edgernn_graph(session, info)
    if not state_map:
        raise _state_map_needed(session)
    return _foreign_graph(session, state_map, constants or {}, state_shapes or {})


def _refuse_foreign_arguments(**arguments: object) -> None:
    given = [name for name, value in arguments.items() if value]
    if given:
        raise InputError(
            f"{', '.join(given)}: only for models without edgernn metadata; this one describes itself"
        )


def _state_map_needed(session: ort.InferenceSession) -> ContractError:
    inputs = [arg.name for arg in session.get_inputs()]
    outputs = [arg.name for arg in session.get_outputs()]
    return ContractError(
        "this model has no edgernn metadata, so edgernn cannot tell which inputs carry state; pass "
        "state_map={state input: state output} (and constants={input: value} for other fixed inputs), "
        f"e.g. Stepper(path, state_map={{'state': 'stateN'}}, constants={{'sr': 16000}}). "
        f"Inputs: {inputs}; outputs: {outputs}"
    )


# --- the fast path: one pre-bound call per stream ----------------------------------------------------


def _ort_value(array: np.ndarray) -> ort.OrtValue:
    return ort.OrtValue.ortvalue_from_numpy(array)  # on CPU it wraps the array's memory: no copy


class _Binding:
    """One stream's step, bound once: why a step costs little more than the graph itself.

    x, y and the state live in numpy buffers bound to the session with IOBinding, so a step copies x in,
    runs, and copies y out: no feed dict, no output allocation, no name lookup. The state has two buffer
    sets (ping-pong): a step reads one and writes the other, then they swap; a step that fails swaps
    nothing, so the state is exactly as it was. Buffers are allocated here, never in the hot path.
    """

    def __init__(self, graph: _Graph, batch_size: int):
        self.graph, self.batch_size = graph, batch_size
        self.x = _data_buffer(graph.data, batch_size)  # None: the data input has axes of unknown size
        self.x_unbatched_shape = self.x.shape[1:] if self.x is not None and batch_size == 1 else None
        shapes = graph.result_shapes(batch_size)
        self.results = None if shapes is None else [np.zeros(s, np.float32) for s in shapes]
        self.state_sets = [[np.zeros(s.shape_for(batch_size), s.dtype) for s in graph.states] for _ in "ab"]
        self.current = 0  # the state lives in state_sets[current]
        self._finite_probe = _FiniteProbe(self.x) if self.x is not None and self.x.dtype.kind == "f" else None
        self._bindings = [self._bind(k) for k in (0, 1)]
        self._run_options = ort.RunOptions()
        session = graph.session
        # The pybind session's own call skips the Python wrapper's per-call checks; keep the public call
        # as the fallback should a future onnxruntime rename its internals.
        inner = getattr(session, "_sess", None)
        if inner is not None and all(hasattr(b, "_iobinding") for b in self._bindings):
            self._calls = [
                partial(inner.run_with_iobinding, b._iobinding, self._run_options) for b in self._bindings
            ]
        else:
            self._calls = [partial(session.run_with_iobinding, b, self._run_options) for b in self._bindings]

    @property
    def state(self) -> list[np.ndarray]:
        """The current state buffers, one per state slot (the live arrays: copy before handing out)."""
        return self.state_sets[self.current]

    def _bind(self, parity: int) -> ort.IOBinding:
        graph = self.graph
        binding = graph.session.io_binding()
        for name, value in graph.constants.items():
            binding.bind_ortvalue_input(name, _ort_value(value))
        if self.x is not None:
            binding.bind_ortvalue_input(graph.data.name, _ort_value(self.x))
        for index, name in enumerate(graph.result_names):
            if self.results is None:
                binding.bind_output(name, "cpu")
            else:
                binding.bind_ortvalue_output(name, _ort_value(self.results[index]))
        for slot, read, write in zip(
            graph.states, self.state_sets[parity], self.state_sets[1 - parity], strict=True
        ):
            binding.bind_ortvalue_input(slot.input, _ort_value(read))
            binding.bind_ortvalue_output(slot.output, _ort_value(write))
        return binding

    def write_x(self, x: Any) -> bool:
        """Check one step's x and copy it into the bound buffer; returns whether x came unbatched.

        The common cases (an array of the right dtype and shape, a Python int token) take a short path;
        anything else, and anything that fails the short path's checks, goes through ``DataInput.validate``
        for the full conversion rules and the error message.
        """
        buffer = self.x
        if buffer is None:
            array, unbatched = self.graph.data.validate(x, self.batch_size)
            self._bindings[self.current].bind_cpu_input(self.graph.data.name, array)
            return unbatched
        if type(x) is np.ndarray and x.dtype == buffer.dtype:
            if x.shape == buffer.shape:
                buffer[...] = x
                if self._acceptable():
                    return False
            elif x.shape == self.x_unbatched_shape:
                buffer[0] = x
                if self._acceptable():
                    return True
        elif type(x) is int and self.x_unbatched_shape == () and self._token_ok(x):
            buffer[0] = x
            return True
        array, unbatched = self.graph.data.validate(x, self.batch_size)
        buffer[...] = array
        return unbatched

    def _token_ok(self, token: int) -> bool:
        vocab_size = self.graph.data.vocab_size
        return vocab_size is not None and 0 <= token < vocab_size

    def _acceptable(self) -> bool:
        """Whether the buffer, already in the right dtype, holds values the full checks would accept."""
        if self._finite_probe is not None:
            return self._finite_probe.all_finite()
        vocab_size = self.graph.data.vocab_size
        if vocab_size is None:
            return True  # any value of an integer or boolean dtype is a valid value for a foreign model
        flat = self.x.reshape(-1)
        if flat.size == 1:  # one token: a Python comparison beats two numpy reductions
            return 0 <= int(flat[0]) < vocab_size
        return bool(flat.min() >= 0 and flat.max() < vocab_size)

    def run(self) -> list[np.ndarray]:
        """One step from the current state; returns the results (live buffers for edgernn models)."""
        try:
            self._calls[self.current]()
        except (*ORT_ERRORS, RuntimeError) as exc:  # run_with_iobinding reports failures as RuntimeError
            shape = None if self.x is None else self.x.shape
            raise InputError(f"onnxruntime could not run a step with x of shape {shape}: {exc}") from None
        binding = self._bindings[self.current]
        self.current ^= 1
        if self.results is not None:
            return self.results
        return [np.array(v.numpy()) for v in binding.get_outputs()[: self.graph.result_count]]

    def load_state(self, arrays: Sequence[np.ndarray]) -> None:
        """Copy validated arrays (one per state slot, right shapes and dtypes) into the current state."""
        for buffer, array in zip(self.state, arrays, strict=True):
            np.copyto(buffer, array)


def _data_buffer(data: DataInput, batch_size: int) -> np.ndarray | None:
    if any(d is None for d in data.shape[1:]):
        return None
    return np.zeros((batch_size, *data.shape[1:]), data.dtype)


class _FiniteProbe:
    """Tells whether a float buffer is all finite with one dot product: 0 * x is 0 for every finite x and
    NaN for NaN and +-inf, and a NaN makes the sum NaN (one BLAS call, about half of ``isfinite().all()``).
    """

    def __init__(self, buffer: np.ndarray):
        self.flat = buffer.reshape(-1)  # a view: always sees the buffer's current values
        self.zeros = np.zeros_like(self.flat)

    def all_finite(self) -> bool:
        return self.flat.dot(self.zeros) == 0


# --- streams -----------------------------------------------------------------------------------------


def _format(results: Sequence[np.ndarray], unbatched: bool) -> Results:
    if unbatched:
        results = [r[0] for r in results]
    return results[0] if len(results) == 1 else tuple(results)


class Stream:
    """One independent stream (of ``batch_size`` sequences) over a shared model, with its own state.

    Made by ``Stepper.new_stream``. State: name -> float32 array, ``(batch, num_layers, hidden_size)`` for
    edgernn models.
    """

    def __init__(self, graph: _Graph, batch_size: int):
        _check_positive_int("batch_size", batch_size)
        self._graph = graph
        self.batch_size = batch_size
        self._binding = _Binding(graph, batch_size)
        self.reset()

    @property
    def info(self) -> ModelInfo | None:
        return self._graph.info

    def step(self, x: Any) -> Results:
        """Feed one step and advance the state.

        x: token ids ``(B,)`` int or features ``(B, F)`` float (converted to float32); with batch size 1
        also an unbatched int / ``(F,)``. Returns y ``(B, output_size)`` float32, ``(output_size,)`` for an
        unbatched x (for foreign models with several outputs, a tuple in graph order). y is a new array.
        """
        binding = self._binding
        unbatched = binding.write_x(x)
        results = binding.run()
        if binding.results is not None and len(results) == 1:  # the common case, kept short
            return results[0][0].copy() if unbatched else results[0].copy()
        return _format([r.copy() for r in results], unbatched)

    def run(self, xs: Any) -> Results:
        """Feed a sequence, carrying state: the same as calling ``step`` on each element in turn.

        xs: ``(B, T)`` tokens or ``(B, T, F)`` features; with batch size 1 also ``(T,)`` / ``(T, F)``.
        Returns ys ``(B, T, output_size)`` or ``(T, output_size)``. The state only moves if every step ran.
        """
        xs, unbatched = self._graph.data.validate(xs, self.batch_size, sequence=True)
        before = [a.copy() for a in self._binding.state]
        try:
            outputs = self._run_chunks(xs) if xs.shape[1] > 1 else self._run_steps(xs)
        except InputError:
            self._binding.load_state(before)
            raise
        return _format(outputs, unbatched)

    def _run_chunks(self, xs: np.ndarray) -> list[np.ndarray]:
        """Whole chunks through the chunk graph (if the model has one), the remaining steps one by one."""
        chunk = self._graph.chunk()
        whole = 0 if chunk is None else xs.shape[1] // chunk.steps * chunk.steps
        if whole == 0:
            return self._run_steps(xs)
        try:
            ys = chunk.run(xs[:, :whole], self._binding.state)
        except ORT_ERRORS as exc:
            raise InputError(
                f"onnxruntime could not run a chunk with xs of shape {xs.shape}: {exc}"
            ) from None
        if whole == xs.shape[1]:
            return [ys]
        return [np.concatenate([ys, self._run_steps(xs[:, whole:])[0]], axis=1)]

    def _run_steps(self, xs: np.ndarray) -> list[np.ndarray]:
        binding = self._binding
        steps = xs.shape[1]
        collected: list[list[np.ndarray]] = []
        for t in range(steps):
            binding.write_x(xs[:, t])
            collected.append([r.copy() for r in binding.run()])
        return [np.stack(outputs, axis=1) for outputs in zip(*collected, strict=True)]

    def reset(self) -> None:
        """Set every state tensor to its initial value (zeros unless the metadata says otherwise)."""
        for slot, buffer in zip(self._graph.states, self._binding.state, strict=True):
            buffer.fill(slot.initial)

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the current state, name -> array. Assigning a dict validates it and copies it in."""
        return {slot.input: a.copy() for slot, a in zip(self._graph.states, self._binding.state, strict=True)}

    @state.setter
    def state(self, value: Mapping[str, Any]) -> None:
        checked = self._graph.check_state(value, self.batch_size)
        self._binding.load_state([checked[slot.input] for slot in self._graph.states])

    def snapshot(self) -> dict[str, np.ndarray]:
        """A copy of the state to ``restore`` later (into this stream or another of the same batch size)."""
        return self.state

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Go back to a ``snapshot``; it is validated (names, shapes, dtypes, finite) and copied."""
        self.state = snapshot


class Stepper:
    """A loaded model (one onnxruntime session) plus a default stream; ``new_stream`` makes more.

    model: path to an .onnx file, or its bytes. ``state_map``/``constants``/``state_shapes`` are for models
    edgernn did not write (see the module docstring). ``chunk_model``: the chunk graph ``run`` feeds long
    sequences through (path or bytes; by default ``model.chunk.onnx`` next to a model path if there is
    one; False for none; see ``edgernn.runtime.chunk``). Raises InputError for a missing file or bad
    argument, ContractError for a file that is not a model edgernn can run.
    """

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
    ):
        _check_positive_int("batch_size", batch_size)
        opener = partial(open_session, providers=providers, threads=threads, session_options=session_options)
        session = opener(model)
        if session_options is None and folds_weights(read_info(session)):  # only then is it opened twice
            session = open_session(model, providers=providers, session_options=_folding_options(threads))
        self._graph = _load_graph(session, state_map, constants, state_shapes)
        chunk = find_chunk(chunk_model, model)
        if chunk is not None:
            self._graph.offer_chunk(chunk, explicit=chunk_model not in (None, True), opener=opener)
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

    def step(self, x: Any) -> Results:
        """``Stream.step`` on the default stream."""
        return self._stream.step(x)

    def run(self, xs: Any) -> Results:
        """``Stream.run`` on the default stream."""
        return self._stream.run(xs)

    def reset(self) -> None:
        self._stream.reset()

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the default stream's state; assign a dict to replace it (validated)."""
        return self._stream.state

    @state.setter
    def state(self, value: Mapping[str, Any]) -> None:
        self._stream.state = value

    def snapshot(self) -> dict[str, np.ndarray]:
        return self._stream.snapshot()

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        self._stream.restore(snapshot)
