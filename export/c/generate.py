"""``generate_sources``: an edgernn ONNX step graph -> NAME.h and NAME.c (see ``edgernn.export.c``)."""

from __future__ import annotations

import keyword
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgernn import __version__
from edgernn.export.c.bounds import MAX_SCRATCH_BYTES, MAX_STATE_BYTES, check_size, size_option
from edgernn.export.c.check import check_graph, check_strings, check_vocabulary
from edgernn.export.c.emit import emit, metadata_json
from edgernn.export.c.lower import lower
from edgernn.runtime import contract
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ContractError, InputError

PRECISIONS = ("float32", "int8")
_C_KEYWORDS = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else", "enum",
    "extern", "float", "for", "goto", "if", "inline", "int", "long", "register", "restrict", "return",
    "short", "signed", "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void",
    "volatile", "while", "main",
}  # fmt: skip
_FOLDED_QUANTIZATION = {"weights"}  # int8 methods whose file computes in float32 (weights rounded only)

ModelSource = str | os.PathLike | bytes | onnx.ModelProto


@dataclass
class CSources:
    """The generated model: ``files`` (NAME.h, NAME.c -> text), what it takes, and the graph it computes.

    ``reference_model``: the ONNX graph whose numbers the C reproduces, as bytes: the input file itself
    for float32; for int8, the same graph with every weight replaced by its int8 rounding (the golden
    vectors and the self-test come from it). ``scratch_bytes``: the stack a step uses for its buffers.
    """

    name: str
    files: dict[str, str]
    flash_bytes: int
    ram_bytes: int
    info: ModelInfo
    precision: str
    fast_activations: bool
    scratch_bytes: int
    state_floats: int
    reference_model: bytes = field(repr=False, default=b"")
    source_model: bytes = field(repr=False, default=b"")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise InputError(
            f"--name {name!r}: expected a C identifier (letters, digits, _; not starting with a digit)"
        )
    if name in _C_KEYWORDS or keyword.iskeyword(name) or name.startswith("__"):
        raise InputError(f"--name {name!r}: a C keyword or reserved name; choose another")
    return name


def load_model(model: ModelSource) -> tuple[onnx.ModelProto, bytes]:
    """The ONNX model and its bytes; InputError for a missing file, ContractError for one onnx cannot read."""
    if isinstance(model, onnx.ModelProto):
        return model, model.SerializeToString()
    if isinstance(model, (bytes, bytearray)):
        content = bytes(model)
    else:
        path = Path(model)
        if not path.is_file():
            raise InputError(f"model {str(path)!r}: expected an ONNX file, found none")
        content = path.read_bytes()
    try:
        return onnx.load_model_from_string(content), content
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ContractError(f"not an ONNX model onnx can read: {type(exc).__name__}: {exc}") from None


def read_info(proto: onnx.ModelProto) -> ModelInfo:
    props = {p.key: p.value for p in proto.metadata_props}
    if contract.METADATA_KEY not in props:
        raise ContractError(
            "the C target takes edgernn models (their metadata says what the state is); this file has no "
            "edgernn metadata"
        )
    info = contract.parse_info(props[contract.METADATA_KEY])
    if info.steps_per_call != 1:
        raise ContractError(
            f"this is a chunk graph ({info.steps_per_call} steps per call); deploy the step model it was "
            "exported with (model.onnx for model.chunk.onnx)"
        )
    return info


def _check_quantization(info: ModelInfo, precision: str) -> None:
    q = info.quantization
    if q is None:
        return
    mode, method = q.get("mode"), q.get("method")
    if mode == "int4" or (mode == "int8" and method not in _FOLDED_QUANTIZATION):
        raise ContractError(
            f"this file is quantized {mode}"
            f"{f' ({method})' if method else ''}: it computes in {'int4' if mode == 'int4' else 'int8'} at every "
            "step, which the C target does not reproduce; deploy the float32 file with --precision int8 "
            "(int8 weights, per-output scales) or an int8 'weights' / fp16 file"
        )
    if precision == "int8":
        raise ContractError(
            f"--precision int8 quantizes a float32 file; this one is already quantized ({mode}); deploy "
            "the float32 file with --precision int8, or this one as float32"
        )


def _check_io(proto: onnx.ModelProto, info: ModelInfo) -> None:
    inputs = sorted(
        i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}
    )
    outputs = sorted(o.name for o in proto.graph.output)
    want_in = sorted([contract.INPUT_NAME, *(s.input for s in info.states)])
    want_out = sorted([contract.OUTPUT_NAME, *(s.output for s in info.states)])
    if inputs != want_in or outputs != want_out:
        raise ContractError(
            f"the graph's inputs {inputs} and outputs {outputs} do not match its metadata "
            f"(expected {want_in} and {want_out})"
        )


def generate_sources(
    model: ModelSource,
    *,
    name: str = "model",
    precision: str = "float32",
    fast_activations: bool = False,
    max_state_bytes: int | None = None,
    max_scratch_bytes: int | None = None,
) -> CSources:
    """NAME.h and NAME.c computing one step of ``model`` (an edgernn ONNX file: path, bytes or proto).

    precision: ``float32`` (the graph's own weights), or ``int8`` (every matrix and the embedding table
    as int8 with one float scale per output / per token; products in integers, their inputs quantized
    to int8 once per step; from a float32 file).
    fast_activations: tanh and sigmoid as a cheaper rational function (see activations.FAST_TANH_*) instead of
    the default ones (activations.TANH_MAX_ABS_ERROR...); neither calls libm.
    max_state_bytes, max_scratch_bytes: the largest state struct and the largest scratch a step keeps on
    the stack that are accepted (default ``bounds.MAX_STATE_BYTES``, ``bounds.MAX_SCRATCH_BYTES``).
    Raises ContractError for a graph the C target cannot reproduce, naming the op or the reason.
    """
    check_name(name)
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    max_state = size_option(max_state_bytes, MAX_STATE_BYTES, "--max-state-bytes")
    max_scratch = size_option(max_scratch_bytes, MAX_SCRATCH_BYTES, "--max-scratch-bytes")
    proto, content = load_model(model)
    info = read_info(proto)
    _check_quantization(info, precision)
    _check_io(proto, info)
    check_strings(info)
    check_graph(proto, info)
    state_bytes = 4 * sum(int(np.prod(s.shape)) for s in info.states)
    check_size("the state", state_bytes, max_state, "--max-state-bytes")
    program = lower(proto, info)
    check_vocabulary(program)
    c_target = {
        "precision": precision,
        "fast_activations": bool(fast_activations),
        "generator": f"edgernn {__version__}",
    }
    if precision == "int8":
        c_target["weights"] = (
            "int8, one float scale per output (embedding: per token); each product's input quantized to int8 "
            "per step (one scale from its max |x|), int32 accumulation"
        )
    metadata = metadata_json(info.to_json(), {"c_target": c_target})
    notes = {"precision": precision}
    emitted = emit(program, name, precision, bool(fast_activations), metadata, notes)
    check_size("a step's scratch on the stack", emitted.scratch_bytes, max_scratch, "--max-scratch-bytes")
    reference = content
    if precision == "int8":
        reference = _reference_with(proto, emitted.replaced, emitted.quantized_inputs, not fast_activations)
    return CSources(
        name=name,
        files={f"{name}.h": emitted.header, f"{name}.c": emitted.source},
        flash_bytes=emitted.flash_bytes,
        ram_bytes=emitted.ram_bytes,
        info=contract.parse_info(metadata),
        precision=precision,
        fast_activations=bool(fast_activations),
        scratch_bytes=emitted.scratch_bytes,
        state_floats=program.state_floats,
        reference_model=reference,
        source_model=content,
    )


def _reference_with(proto: onnx.ModelProto, replaced: dict, quantized_inputs=(), tables=False) -> bytes:
    """``proto`` with the named initializers replaced (their int8 rounding, as float32), and the input
    of each int8 product quantized as the C quantizes it: ``peak = max(max|x|, 1e-30)`` per row,
    ``x' = Round(x * (127 / peak)) * (peak / 127)`` (Round: half to even, as the C); ``tables``: its
    sigmoid and tanh the int8 C's table interpolation (``activations.with_table_activations``)."""
    copy = onnx.ModelProto.FromString(proto.SerializeToString())
    _quantize_inputs(copy, quantized_inputs)
    if tables:
        from edgernn.export.c.activations import with_table_activations

        with_table_activations(copy)
    found = set()
    for init in copy.graph.initializer:
        if init.name in replaced:
            init.CopyFrom(numpy_helper.from_array(replaced[init.name], init.name))
            found.add(init.name)
    missing = sorted(set(replaced) - found)
    if missing:
        raise ContractError(f"int8: weights {missing} are not initializers of the graph")
    for prop in copy.metadata_props:  # another graph: the source's checksum does not describe it
        if prop.key == contract.METADATA_KEY:
            prop.value = contract.unsealed(contract.parse_info(prop.value)).to_json()
    return copy.SerializeToString()


def _quantize_inputs(proto: onnx.ModelProto, quantized_inputs) -> None:
    from onnx import helper

    if not quantized_inputs:
        return
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
    graph = proto.graph
    pairs = set(quantized_inputs)
    consts = {
        "edgernn_q_127": np.array(127.0, np.float32),
        "edgernn_q_tiny": np.array(1e-30, np.float32),
    }
    if opset >= 18:
        consts["edgernn_q_axes"] = np.array([-1], np.int64)
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    made: dict[str, str] = {}
    nodes = []
    for node in graph.node:
        if (
            node.op_type in ("MatMul", "Gemm")
            and len(node.input) > 1
            and (node.input[0], node.input[1]) in pairs
        ):
            x = node.input[0]
            if x not in made:
                p = f"edgernn_q{len(made)}_{x}"
                if opset >= 18:
                    reduce = helper.make_node(
                        "ReduceMax", [p + "_abs", "edgernn_q_axes"], [p + "_max"], keepdims=1
                    )
                else:
                    reduce = helper.make_node("ReduceMax", [p + "_abs"], [p + "_max"], axes=[-1], keepdims=1)
                nodes += [
                    helper.make_node("Abs", [x], [p + "_abs"]),
                    reduce,
                    helper.make_node("Max", [p + "_max", "edgernn_q_tiny"], [p + "_peak"]),
                    helper.make_node("Div", ["edgernn_q_127", p + "_peak"], [p + "_inv"]),
                    helper.make_node("Mul", [x, p + "_inv"], [p + "_scaled"]),
                    helper.make_node("Round", [p + "_scaled"], [p + "_int"]),
                    helper.make_node("Div", [p + "_peak", "edgernn_q_127"], [p + "_step"]),
                    helper.make_node("Mul", [p + "_int", p + "_step"], [p + "_q"]),
                ]
                made[x] = p + "_q"
            node.input[0] = made[x]
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
