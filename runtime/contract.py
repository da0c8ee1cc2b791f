"""The edgernn ONNX contract: tensor names, dtypes, state layout and the metadata schema.

This module is the single source of truth; the exporter writes what it describes and the stepper reads it.

A model is a **single-step graph with explicit state**:

====================  ==========================  ========  =======================================
tensor                shape                       dtype     meaning
====================  ==========================  ========  =======================================
input  ``x``          ``(batch,)``                int64     token ids (``input.kind == "tokens"``)
input  ``x``          ``(batch, input_size)``     float32   raw feature values (``"features"``)
input  ``h``          ``(batch, layers, hidden)`` float32   hidden state before the step
input  ``c``          ``(batch, layers, hidden)`` float32   LSTM cell state before the step
output ``y``          ``(batch, output_size)``    float32   logits or values for this step
output ``h_next``     ``(batch, layers, hidden)`` float32   hidden state after the step
output ``c_next``     ``(batch, layers, hidden)`` float32   LSTM cell state after the step
====================  ==========================  ========  =======================================

``batch`` is the only dynamic axis and it is always the **first** axis of every tensor, states included.
PyTorch and the ONNX RNN ops keep state as ``(layers, batch, hidden)``; edgernn does not, because
serving systems (Triton's sequence batcher with implicit state, any dynamic batcher) batch along the first
axis, and a batch-first state lets independent streams be stacked and split with one index.

The metadata is one JSON document stored in the model's ``metadata_props`` under the key ``edgernn``.
Its ``states`` list pairs every state input with its state output explicitly; nothing relies on naming.
Normalisation of features (and de-normalisation of regression outputs) is computed inside the graph and
recorded in the metadata, so any runtime that feeds raw values gets values in the user's units back.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from edgernn.runtime.errors import ContractError
from edgernn.runtime.untrusted import parse_json

SCHEMA_VERSION = 2  # 2 adds graph_sha256, chunk_steps, step_graph_sha256 (all optional)
# 3: a keyword model's ``front_end`` and its ``audio`` state. Only such files carry it, so a runtime that
# predates the front end refuses them by version instead of stepping them without their audio state.
FRONT_END_SCHEMA_VERSION = 3
KNOWN_SCHEMA_VERSIONS = (1, 2, 3)
METADATA_KEY = "edgernn"

INPUT_NAME = "x"
OUTPUT_NAME = "y"
# A keyword model's front end keeps the samples its next frame shares with this one, then its running
# mean per band if it has one: ``(batch, 1, frame - hop [+ mels])``, after the recurrent states
# (``front_end`` in the metadata).
AUDIO_STATE = ("audio", "audio_next")
BATCH_AXIS_NAME = "batch"

CELLS = ("gru", "lstm", "rnn_tanh", "rnn_relu")
INPUT_KINDS = ("tokens", "features")
OUTPUT_KINDS = ("logits", "values")
QUANTIZATION_MODES = ("int8", "fp16", "int4")

# Edge runtimes lag behind desktop onnxruntime: keep the opset and IR version low.
OPSET = 17
IR_VERSION = 8

# Parity tolerances every export is held to (float32 model against float32 PyTorch).
ONE_STEP_ATOL = 1e-5
ONE_STEP_RTOL = 1e-5
CLOSED_LOOP_ATOL = 1e-4
CLOSED_LOOP_RTOL = 1e-4
CLOSED_LOOP_STEPS = 1000

# Bounds on what metadata may declare: a file's few hundred bytes of JSON decide what the runtime
# allocates, so each size is bounded far above any model edgernn trains (hidden sizes of 64 to 1024),
# and the document itself is bounded before it is parsed.
MAX_METADATA_BYTES = 8 << 20  # a 65,536-entry vocabulary is about 0.5 MiB of JSON
MAX_HIDDEN_SIZE = 1 << 16
MAX_LAYERS = 64
MAX_SIZE = 1 << 20  # vocabulary size, feature count, output size
MAX_STATES = 64  # state tensors (two per stack for LSTMs)

# Bounds on what a graph may allocate by itself, checked before a session is opened
# (``edgernn.runtime.graph_bounds``): one stored tensor (a 65,536 x 1,024 output layer is 2**26 weights),
# and all the tensors its nodes make from constant shapes (ConstantOfShape, Expand, Tile, Range...), which
# edgernn's own graphs never do: 64 MiB of float32.
MAX_TENSOR_ELEMENTS = 1 << 26
MAX_GENERATED_ELEMENTS = 1 << 24


def state_names(cell: str, stack: int | None = None) -> tuple[tuple[str, str], ...]:
    """(input name, output name) for each state tensor of ``cell``, in graph order.

    ``stack`` numbers the recurrent stacks of a model that has several: ``h0``/``h0_next``, ``c0``...
    """
    tag = "" if stack is None else str(stack)
    kinds = ("h", "c") if cell == "lstm" else ("h",)
    return tuple((f"{kind}{tag}", f"{kind}{tag}_next") for kind in kinds)


@dataclass(frozen=True)
class StateSpec:
    """One state tensor: fed in as ``input``, read back as ``output``; shape excludes the batch axis."""

    input: str
    output: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    initial: float = 0.0


@dataclass(frozen=True)
class InputSpec:
    """What ``x`` carries. ``size`` is the vocabulary size for tokens, the feature count for features."""

    kind: str
    size: int
    dtype: str
    vocabulary: tuple[str, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class OutputSpec:
    """What ``y`` carries: ``logits`` over the vocabulary or classes, or regression ``values``."""

    kind: str
    size: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class StackSpec:
    """One recurrent stack of a model that has several (a model exported with ``export_module``)."""

    cell: str
    num_layers: int
    hidden_size: int


@dataclass(frozen=True)
class ModelInfo:
    """The parsed, validated ``edgernn`` metadata document of a model."""

    cell: str
    num_layers: int
    hidden_size: int
    input: InputSpec
    output: OutputSpec
    states: tuple[StateSpec, ...]
    opset: int = OPSET
    edgernn_version: str = "unknown"
    schema_version: int = SCHEMA_VERSION
    steps_per_call: int = 1
    quantization: dict[str, Any] | None = None  # absent for float32 models; see _read_quantization
    stacks: tuple[StackSpec, ...] = ()  # absent for one recurrent stack; see _read_stacks
    # Schema 2, each optional (absent in version 1 files): SHA-256 of the serialized graph (see
    # ``edgernn.runtime.integrity``); a step model's chunk graph steps (it was exported with one beside it);
    # a chunk graph's step model's graph_sha256.
    graph_sha256: str | None = None
    chunk_steps: int | None = None
    step_graph_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        doc = asdict(self)
        doc.update(doc.pop("extra"))
        if doc["quantization"] is None:
            del doc["quantization"]  # float32 models write exactly what they always wrote
        if not doc["stacks"]:
            del doc["stacks"]
        for key in _OPTIONAL_KEYS:
            if doc[key] is None:
                del doc[key]
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))

    @property
    def input_name(self) -> str:
        return INPUT_NAME

    @property
    def output_name(self) -> str:
        return OUTPUT_NAME

    @property
    def state_map(self) -> dict[str, str]:
        """State input name -> state output name."""
        return {s.input: s.output for s in self.states}


def unsealed(info: ModelInfo) -> ModelInfo:
    """``info`` without what describes one particular graph (its checksum, its chunk pairing): for a new
    graph made from a model, such as a quantized or a benchmark copy."""
    return replace(info, graph_sha256=None, chunk_steps=None, step_graph_sha256=None)


def make_info(
    *,
    cell: str,
    num_layers: int,
    hidden_size: int,
    input: InputSpec,
    output: OutputSpec,
    edgernn_version: str,
    extra: dict[str, Any] | None = None,
    stacks: tuple[StackSpec, ...] = (),
) -> ModelInfo:
    """Build the metadata for a model of this shape, with the contract's state names and layout.

    ``extra`` adds task fields (``task``, ``classes``, ``columns``...); it may not replace contract fields.
    ``stacks`` lists every recurrent stack of a model with two or more (the first is ``cell``,
    ``num_layers``, ``hidden_size``); each stack then has its own numbered states.
    """
    clash = sorted(set(extra or {}) & _KNOWN_KEYS)
    if clash:
        raise ContractError(f"extra metadata may not replace contract fields: {clash}")
    states = tuple(
        StateSpec(input=i, output=o, shape=shape)
        for i, o, shape in _expected_states(cell, num_layers, hidden_size, stacks, _audio_overlap(extra))
    )
    info = ModelInfo(
        cell=cell,
        num_layers=num_layers,
        hidden_size=hidden_size,
        input=input,
        output=output,
        states=states,
        edgernn_version=edgernn_version,
        stacks=tuple(stacks),
        extra=dict(extra or {}),
        schema_version=FRONT_END_SCHEMA_VERSION if extra and "front_end" in extra else SCHEMA_VERSION,
    )
    return parse_info(info.to_json())  # the writer is held to the reader's rules


# --- parsing untrusted metadata -------------------------------------------------------------------


class _Reader:
    """Reads fields out of an untrusted JSON object, collecting every problem instead of stopping."""

    def __init__(self, problems: list[str]):
        self.problems = problems

    def get(self, obj: Any, key: str, kind: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
        if not isinstance(obj, dict):
            self.problems.append(f"{where}: expected an object, got {type(obj).__name__}")
            return None
        if key not in obj:
            if default is ...:
                self.problems.append(f"{where}.{key}: missing")
            return None if default is ... else default
        value = obj[key]
        if value is None and default is None:
            return None
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            self.problems.append(f"{where}.{key}: expected {_kind_name(kind)}, got {value!r:.60}")
            return None
        return value

    def positive_int(self, obj: Any, key: str, where: str, limit: int = MAX_SIZE) -> int | None:
        value = self.get(obj, key, int, where)
        if value is not None and value < 1:
            self.problems.append(f"{where}.{key}: expected a positive integer, got {value!r:.40}")
            return None
        if value is not None and value > limit:
            self.problems.append(
                f"{where}.{key}: expected at most {limit} (edgernn's bound), got {value!r:.40}"
            )
            return None
        return value

    def choice(self, obj: Any, key: str, choices: tuple[str, ...], where: str) -> str | None:
        value = self.get(obj, key, str, where)
        if value is not None and value not in choices:
            self.problems.append(f"{where}.{key}: expected one of {', '.join(choices)}, got {value!r}")
            return None
        return value

    def floats(self, obj: Any, key: str, length: int | None, where: str) -> tuple[float, ...] | None:
        value = self.get(obj, key, list, where, default=None)
        if value is None:
            return None
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            self.problems.append(f"{where}.{key}: expected a list of numbers")
            return None
        if not all(math.isfinite(v) for v in value):
            self.problems.append(f"{where}.{key}: expected finite numbers")
            return None
        if length is not None and len(value) != length:
            self.problems.append(f"{where}.{key}: expected {length} values, got {len(value)}")
            return None
        return tuple(float(v) for v in value)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {int: "an integer", str: "a string", list: "a list", dict: "an object", float: "a number"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def parse_info(text: str) -> ModelInfo:
    """Parse and validate an ``edgernn`` metadata document (JSON text from an untrusted file).

    Raises ContractError listing every problem found; unknown schema versions are refused.
    """
    if not isinstance(text, (str, bytes)):
        raise ContractError(f"edgernn metadata: expected JSON text, got {type(text).__name__}")
    doc = parse_json(
        text, "edgernn metadata", "the document", max_bytes=MAX_METADATA_BYTES, error=ContractError
    )
    if not isinstance(doc, dict):
        raise ContractError(f"edgernn metadata: expected a JSON object, got {type(doc).__name__}")
    version = doc.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version not in KNOWN_SCHEMA_VERSIONS:
        # integers only: true == 1 and 1.0 == 1 in Python, but neither is a version edgernn wrote
        known = ", ".join(str(v) for v in KNOWN_SCHEMA_VERSIONS)
        raise ContractError(
            f"edgernn metadata schema_version {version!r:.60} is not supported; this edgernn reads version(s) {known}"
        )
    problems: list[str] = []
    info = _read_info(doc, _Reader(problems))
    if problems:
        shown = [p if len(p) <= 300 else p[:300] + "..." for p in problems[:10]]
        more = [f"... and {len(problems) - 10} more"] if len(problems) > 10 else []
        raise ContractError("invalid edgernn metadata:\n  - " + "\n  - ".join([*shown, *more]))
    assert info is not None
    return info


_KNOWN_KEYS = {
    "schema_version", "edgernn_version", "opset", "cell", "num_layers", "hidden_size",
    "input", "output", "states", "steps_per_call", "quantization", "stacks",
    "graph_sha256", "chunk_steps", "step_graph_sha256",
}  # fmt: skip
_OPTIONAL_KEYS = ("graph_sha256", "chunk_steps", "step_graph_sha256")


def _read_info(doc: dict, r: _Reader) -> ModelInfo | None:
    cell = r.choice(doc, "cell", CELLS, "metadata")
    num_layers = r.positive_int(doc, "num_layers", "metadata", MAX_LAYERS)
    hidden_size = r.positive_int(doc, "hidden_size", "metadata", MAX_HIDDEN_SIZE)
    opset = r.positive_int(doc, "opset", "metadata")
    steps = r.positive_int(doc, "steps_per_call", "metadata")
    version = r.get(doc, "edgernn_version", str, "metadata")
    input_spec = _read_input(r.get(doc, "input", dict, "metadata"), r)
    output_spec = _read_output(r.get(doc, "output", dict, "metadata"), r)
    states = _read_states(r.get(doc, "states", list, "metadata"), r)
    quantization = _read_quantization(r.get(doc, "quantization", dict, "metadata", default=None), r)
    stacks = _read_stacks(r.get(doc, "stacks", list, "metadata", default=None), r)
    digests = {key: _read_digest(doc, key, r) for key in ("graph_sha256", "step_graph_sha256")}
    chunk_steps = None
    if doc.get("chunk_steps") is not None:
        chunk_steps = r.positive_int(doc, "chunk_steps", "metadata", 1 << 16)
    overlap = _read_front_end(doc, input_spec, r)
    if cell and num_layers and hidden_size and states is not None and stacks is not None:
        _check_stacks(StackSpec(cell, num_layers, hidden_size), stacks, r)
        _check_states(cell, num_layers, hidden_size, stacks, states, r, overlap)
    if r.problems:
        return None
    extra = {k: v for k, v in doc.items() if k not in _KNOWN_KEYS}
    return ModelInfo(
        cell=cell,
        num_layers=num_layers,
        hidden_size=hidden_size,
        input=input_spec,
        output=output_spec,
        states=states,
        opset=opset,
        edgernn_version=version,
        schema_version=doc["schema_version"],
        steps_per_call=steps,
        quantization=quantization,
        stacks=stacks,
        chunk_steps=chunk_steps,
        extra=extra,
        **digests,
    )


def _read_digest(doc: dict, key: str, r: _Reader) -> str | None:
    value = r.get(doc, key, str, "metadata", default=None)
    if value is not None and (len(value) != 64 or set(value) - set("0123456789abcdef")):
        r.problems.append(f"metadata.{key}: expected 64 lowercase hex digits, got {value!r:.80}")
        return None
    return value


def _read_input(obj: dict | None, r: _Reader) -> InputSpec | None:
    if obj is None:
        return None
    kind = r.choice(obj, "kind", INPUT_KINDS, "input")
    size = r.positive_int(obj, "size", "input")
    dtype = r.choice(obj, "dtype", ("int64",) if kind == "tokens" else ("float32",), "input")
    vocabulary = r.get(obj, "vocabulary", list, "input", default=None)
    if vocabulary is not None:
        if not all(isinstance(t, str) for t in vocabulary):
            r.problems.append("input.vocabulary: expected a list of strings")
        elif size is not None and len(vocabulary) != size:
            r.problems.append(f"input.vocabulary: expected {size} entries, got {len(vocabulary)}")
        vocabulary = tuple(vocabulary)
    mean = r.floats(obj, "mean", size, "input")
    std = r.floats(obj, "std", size, "input")
    if std is not None and any(s <= 0 for s in std):
        r.problems.append("input.std: expected positive numbers")
    return InputSpec(kind=kind, size=size, dtype=dtype, vocabulary=vocabulary, mean=mean, std=std)


def _read_output(obj: dict | None, r: _Reader) -> OutputSpec | None:
    if obj is None:
        return None
    kind = r.choice(obj, "kind", OUTPUT_KINDS, "output")
    size = r.positive_int(obj, "size", "output")
    mean = r.floats(obj, "mean", size, "output")
    std = r.floats(obj, "std", size, "output")
    return OutputSpec(kind=kind, size=size, mean=mean, std=std)


def _read_quantization(obj: dict | None, r: _Reader) -> dict[str, Any] | None:
    """Optional: how the weights were quantized. State inputs and outputs stay float32 whatever the mode."""
    if obj is None:
        return None
    r.choice(obj, "mode", QUANTIZATION_MODES, "quantization")
    r.choice(obj, "state_dtype", ("float32",), "quantization")
    return dict(obj)


def _read_states(items: list | None, r: _Reader) -> tuple[StateSpec, ...] | None:
    if items is None:
        return None
    if len(items) > MAX_STATES:
        r.problems.append(f"states: expected at most {MAX_STATES} state tensors, got {len(items)}")
        return None
    states = []
    for i, item in enumerate(items):
        where = f"states[{i}]"
        name_in = r.get(item, "input", str, where)
        name_out = r.get(item, "output", str, where)
        shape = r.get(item, "shape", list, where)
        dtype = r.choice(item, "dtype", ("float32",), where)
        initial = r.get(item, "initial", (int, float), where)
        if shape is not None and not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
        ):
            r.problems.append(f"{where}.shape: expected positive integers, got {shape!r:.60}")
        if initial is not None and not math.isfinite(initial):
            r.problems.append(f"{where}.initial: expected a finite number, got {initial}")
        if None not in (name_in, name_out, shape, dtype, initial):
            states.append(StateSpec(name_in, name_out, tuple(shape), dtype, float(initial)))
    return tuple(states)


def _read_stacks(items: list | None, r: _Reader) -> tuple[StackSpec, ...] | None:
    """Optional: the recurrent stacks of a model with several; None if any entry is invalid."""
    stacks = []
    if items is not None and len(items) > MAX_STATES // 2:
        r.problems.append(f"stacks: expected at most {MAX_STATES // 2}, got {len(items)}")
        return None
    for i, item in enumerate(items or ()):
        where = f"stacks[{i}]"
        fields = (
            r.choice(item, "cell", CELLS, where),
            r.positive_int(item, "num_layers", where, MAX_LAYERS),
            r.positive_int(item, "hidden_size", where, MAX_HIDDEN_SIZE),
        )
        if None in fields:
            return None
        stacks.append(StackSpec(*fields))
    return tuple(stacks)


def _check_stacks(first: StackSpec, stacks: tuple[StackSpec, ...], r: _Reader) -> None:
    if len(stacks) == 1:
        r.problems.append("stacks: expected two or more (one stack is described by cell alone), got 1")
    elif stacks and stacks[0] != first:
        r.problems.append(
            f"stacks[0]: expected the model's own cell, layers and size {first}, got {stacks[0]}"
        )


def _expected_states(
    cell: str, layers: int, hidden: int, stacks: tuple[StackSpec, ...], audio_overlap: int | None = None
) -> list[tuple[str, str, tuple[int, int]]]:
    audio = [] if audio_overlap is None else [(*AUDIO_STATE, (1, audio_overlap))]
    if not stacks:
        return [(i, o, (layers, hidden)) for i, o in state_names(cell)] + audio
    return [
        (i, o, (s.num_layers, s.hidden_size))
        for index, s in enumerate(stacks)
        for i, o in state_names(s.cell, index)
    ] + audio


def _audio_overlap(extra: dict[str, Any] | None) -> int | None:
    """A keyword model's ``audio`` state size (its front end's frame less its hop, then the bands of its
    running mean if it has one); None without one."""
    if not extra or "front_end" not in extra:
        return None
    from edgernn.runtime.audio import FrontEnd

    return FrontEnd.from_metadata(extra["front_end"]).state_size


def _read_front_end(doc: dict, input_spec: InputSpec | None, r: _Reader) -> int | None:
    """A keyword model's ``front_end`` (optional): valid, its hop the input's size; the overlap, or None."""
    if "front_end" not in doc:
        if doc.get("schema_version") == FRONT_END_SCHEMA_VERSION:
            r.problems.append(f"schema_version {FRONT_END_SCHEMA_VERSION}: expected a front_end, found none")
        return None
    if doc.get("schema_version") != FRONT_END_SCHEMA_VERSION:
        version = doc.get("schema_version")
        r.problems.append(
            f"front_end: expected schema_version {FRONT_END_SCHEMA_VERSION}, got {version!r:.60}"
        )
        return None
    try:
        overlap = _audio_overlap(doc)
    except ContractError as exc:
        r.problems.append(str(exc))
        return None
    hop = doc["front_end"]["hop"]
    if input_spec is not None and (input_spec.kind != "features" or input_spec.size != hop):
        r.problems.append(
            f"front_end: expected features input of its hop ({hop} samples), got {input_spec.kind} of {input_spec.size}"
        )
    return overlap


def _check_states(
    cell: str,
    layers: int,
    hidden: int,
    stacks: tuple[StackSpec, ...],
    states: tuple[StateSpec, ...],
    r: _Reader,
    audio_overlap: int | None = None,
) -> None:
    expected = _expected_states(cell, layers, hidden, stacks, audio_overlap)
    given = [(s.input, s.output, s.shape) for s in states]
    if given != expected:
        model = (
            f"a model with {len(stacks)} recurrent stacks"
            if stacks
            else f"a {cell} model with {layers} layer(s) of {hidden}"
        )
        r.problems.append(f"states: {model} expects {expected!s:.120}, got {given!s:.120}")
