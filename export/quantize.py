"""Quantize a verified float32 step graph with onnxruntime's own tools, then prove it really shrank.

Modes (the graph's inputs and outputs, states included, stay float32 in every mode):

- ``int8``: every weight matrix, the recurrent ``W_hh`` included, stored as int8 (embedding table uint8).
  How the step computes depends on ``int8_method``:

  - ``"weights"``: each matrix is ``DequantizeLinear(int8, scale, zero point)`` feeding the float MatMul.
    The stepper opens such a file with ``session.disable_quant_qdq=1``, so onnxruntime folds every
    DequantizeLinear into a float32 constant once, at load: the step runs at float32 speed with float32
    arithmetic (only the weights are rounded). Weights quantized by onnxruntime's ``quantize_data``.
  - ``"dynamic"``: ``quantize_dynamic``: each MatMul's input is quantized to uint8 at every step from its
    own range (``DynamicQuantizeLinear`` + ``MatMulInteger``, standard ONNX ops): int8 arithmetic, faster
    than float32 once the weights no longer fit in the cache, slower below (more nodes per step).
  - ``"auto"`` (default): ``"weights"`` when the float32 weights total less than ``AUTO_DYNAMIC_BYTES``
    (a step is then bound by node dispatch, not by reading weights), else ``"dynamic"``.
  - ``"static"``: ``quantize_static`` in QDQ format, activation ranges calibrated on the states the
    float32 model reaches on real inputs (zero states calibrate the recurrent input far too narrowly).
- ``fp16``: ``onnxruntime.transformers.float16``: weights stored as float16, computed in float32 (the CPU
  provider has no fast float16 kernels on x86): half the file, float32's speed and nearly its numbers.
- ``int4``: ``MatMulNBitsQuantizer``: MatMul weights as 4-bit blocks of 16 (``MatMulNBits``, an
  onnxruntime contrib op; ``accuracy_level`` 4 computes with int8 activations), the embedding table as
  uint8. Blocks of 32 are 20% smaller but sat at the +0.02 nats tolerance on a well-trained GRU.

The LSTM cell state is unbounded: it never passes through a quantizer (MatMul inputs only are quantized)
and this is checked on the graph, not assumed.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.quant_utils import quantize_data
from onnxruntime.transformers.float16 import convert_tensor_float_to_float16

from edgernn.runtime import Stepper, contract
from edgernn.runtime.audio import FRONT_END_PREFIX
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import InputError, QuantizationError

MODES = ("none", *contract.QUANTIZATION_MODES)
INT8_METHODS = ("auto", "weights", "dynamic", "static")
AUTO_DYNAMIC_BYTES = 512 * 1024
"""``int8_method="auto"`` computes in int8 (``"dynamic"``) from this many bytes of float32 weights on; below,
it stores int8 weights and computes in float32 (``"weights"``). See benchmarks/QUANTIZATION_NOTES.md."""
MAX_IR_VERSION = 10
MAX_OPSET = 18
_QUANTIZE_OPS = {"QuantizeLinear", "DynamicQuantizeLinear"}
_CELL_STATE_PATH_OPS = {"Gather", "Reshape", "Split", "Unsqueeze", "Concat", "Mul", "Add"}  # c to c_next


@dataclass(frozen=True)
class QuantizeConfig:
    """How to quantize an export, and how strictly to judge it (see ``edgernn.export.quality``).

    ``tolerance``: the metric change allowed, signed (None = the metric's default: +0.02 nats for a loss,
    -1 point of accuracy); ``force`` writes a model that fails the metric or drift check anyway.
    """

    mode: str = "int8"
    int8_method: str = "auto"
    per_channel: bool = False
    int4_block_size: int = 16
    tolerance: float | None = None
    force: bool = False
    calibration_streams: int = 16
    calibration_steps: int = 128

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.int8_method not in INT8_METHODS:
            problems.append(f"int8_method must be one of {', '.join(INT8_METHODS)}, got {self.int8_method!r}")
        if self.int4_block_size not in (16, 32, 64, 128):
            problems.append(f"int4_block_size must be 16, 32, 64 or 128, got {self.int4_block_size!r}")
        if self.calibration_streams < 1 or self.calibration_steps < 1:
            problems.append("calibration_streams and calibration_steps must be positive")
        if problems:
            raise InputError("invalid quantization config: " + "; ".join(problems))


def quantize_step_model(
    proto: onnx.ModelProto, info: ModelInfo, config: QuantizeConfig, calibration: np.ndarray
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Quantize a float32 step graph; returns the new graph and its ``quantization`` metadata (no checks).

    calibration: real inputs in time order, ``(N,)`` int64 tokens or ``(N, F)`` float32 features; only
    static int8 reads them. Raises QuantizationError when a weight matrix stayed float32, the LSTM cell
    state reaches a quantizer, or the file did not shrink.
    """
    quantizers = {"int8": _int8, "fp16": _fp16, "int4": _int4}
    quantized, described = quantizers[config.mode](_copy(proto), info, config, calibration)
    _compact(quantized.graph)
    _drop_seal(quantized)
    summary = {
        "mode": config.mode,
        **described,
        **_weights_summary(proto, quantized),
        "state_dtype": "float32",
        "onnxruntime": onnxruntime.__version__,
    }
    if info.cell == "lstm":
        summary["cell_state"] = "float32, never quantized (unbounded)"
    _check_structure(proto, quantized, info)
    return quantized, summary


def _drop_seal(proto: onnx.ModelProto) -> None:
    """A quantized graph is a new graph: the float32 graph's checksum and chunk pairing (schema 2) do not
    describe it. The exporter seals the file it writes again (``edgernn.export.exporter.seal``)."""
    for prop in proto.metadata_props:
        if prop.key == contract.METADATA_KEY:
            prop.value = contract.unsealed(contract.parse_info(prop.value)).to_json()


def _compact(graph: onnx.GraphProto) -> None:
    """Drop what only labels the graph: node names, inferred shapes, long intermediate tensor names.

    Inputs, outputs and weights keep their names (the contract and ``edgernn inspect`` read them); the
    tensors passed between nodes become ``t0``, ``t1``... At hidden 64 this is ~3% of an int8 file.
    """
    keep = {v.name for v in (*graph.input, *graph.output)} | {init.name for init in graph.initializer}
    short: dict[str, str] = {}
    for node in graph.node:
        node.name = ""
        for index, name in enumerate(node.output):
            if name and name not in keep:
                node.output[index] = short.setdefault(name, f"t{len(short)}")
        for index, name in enumerate(node.input):
            node.input[index] = short.get(name, name)
    del graph.value_info[:]  # onnxruntime infers the shapes at load


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    # onnxruntime's quantizers modify the model they are given (quantize_static even moves its weights
    # to external data): each gets its own copy.
    return onnx.ModelProto.FromString(proto.SerializeToString())


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """The quantizers log advice ("consider pre-processing") at WARNING on the root logger."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _through_file(quantize, proto: onnx.ModelProto, **kwargs) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory() as tmp, _quiet_logs():
        out = Path(tmp) / "quantized.onnx"
        quantize(proto, out, **kwargs)
        return onnx.load(str(out))


# --- modes ---------------------------------------------------------------------------------------------


def _int8(proto, info, config, calibration) -> tuple[onnx.ModelProto, dict]:
    channels = "per output channel" if config.per_channel else "per tensor"
    method = config.int8_method
    front_end = [n.name for n in proto.graph.node if n.name.startswith(FRONT_END_PREFIX)]
    if method == "auto":  # the trained weights: a keyword model's front-end matrices are constants
        weights = {k: a for k, a in _initializers(proto).items() if not k.startswith(FRONT_END_PREFIX)}
        weight_bytes = sum(a.nbytes for a in weights.values() if a.ndim == 2)
        method = "weights" if weight_bytes < AUTO_DYNAMIC_BYTES else "dynamic"
    if method == "weights":
        return _int8_weights(proto, config.per_channel), {
            "method": "weights",
            "tool": "quantize_data",
            "weights": f"int8 {channels} (embedding uint8), biases int8, float32 after load",
            "activations": "float32",
            "calibration": None,
        }
    common = {  # a front end's DFT of raw samples needs more than 8 bits of input: it stays float32
        "op_types_to_quantize": ["MatMul", "Gather"],
        "nodes_to_exclude": front_end,
        "per_channel": config.per_channel,
        "weight_type": QuantType.QInt8,
        "extra_options": {"MatMulConstBOnly": True},
    }
    if method == "dynamic":
        quantized = _through_file(quantize_dynamic, proto, **common)
        return quantized, {
            "method": "dynamic",
            "tool": "quantize_dynamic",
            "weights": f"int8 {channels}, embedding uint8",
            "activations": "uint8, range measured every step",
            "calibration": None,
        }
    reader = StateAwareReader(proto, info, calibration, config.calibration_streams, config.calibration_steps)
    quantized = _through_file(
        quantize_static,
        proto,
        calibration_data_reader=reader,
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        calibrate_method=CalibrationMethod.MinMax,
        **common,
    )
    return quantized, {
        "method": "static",
        "tool": "quantize_static (QDQ)",
        "weights": f"int8 {channels}, embedding uint8",
        "activations": "uint8, calibrated range",
        "calibration": reader.summary,
    }


def _int8_weights(proto: onnx.ModelProto, per_channel: bool) -> onnx.ModelProto:
    """Every weight matrix (2-D float32 initializer) and bias as int8 (embedding uint8) behind a
    DequantizeLinear whose output keeps the tensor's name, so the rest of the graph is untouched.

    Biases are quantized too (per tensor, symmetric): they are folded back to float32 at load like the
    matrices, so only their rounding is kept, and the task-metric check sees it.
    """
    graph, dequantize = proto.graph, []
    for init in list(graph.initializer):
        value = numpy_helper.to_array(init)
        matrix = value.ndim == 2
        if value.dtype != np.float32 or not (matrix or init.name.endswith(".bias")):
            continue
        embedding = init.name == "embedding.weight"  # (vocabulary, E): per channel, one scale per token
        qtype = onnx.TensorProto.UINT8 if embedding else onnx.TensorProto.INT8
        axis = 0 if embedding else 1  # weight_t is (in, out): one scale per output column
        if per_channel and matrix:
            columns = [quantize_data(np.take(value, i, axis=axis), qtype, symmetric=not embedding)
                       for i in range(value.shape[axis])]  # fmt: skip
            zero = np.array([c[0] for c in columns]).reshape(-1)
            scale = np.array([c[1] for c in columns], dtype=np.float32).reshape(-1)
            values = np.stack([c[2] for c in columns], axis=axis)
            attrs = {"axis": axis}
        else:
            zero, scale, values = quantize_data(value.ravel(), qtype, symmetric=not embedding)
            zero, scale = np.asarray(zero).reshape(()), np.asarray(scale, dtype=np.float32).reshape(())
            values, attrs = np.asarray(values).reshape(value.shape), {}
        name, inputs = init.name, [f"{init.name}_quantized", f"{init.name}_scale"]
        graph.initializer.remove(init)
        graph.initializer.extend(
            [numpy_helper.from_array(values, inputs[0]), numpy_helper.from_array(scale, inputs[1])]
        )
        if np.any(zero):  # a zero point of 0 (symmetric int8) is DequantizeLinear's default: not stored
            inputs.append(f"{name}_zero_point")
            graph.initializer.append(numpy_helper.from_array(zero.astype(values.dtype), inputs[2]))
        dequantize.append(helper.make_node("DequantizeLinear", inputs, [name], **attrs))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(dequantize + nodes)
    return proto


def _fp16(proto, info, config, calibration) -> tuple[onnx.ModelProto, dict]:
    # Weights only: each float32 initializer is stored as float16 by onnxruntime's converter (which clamps
    # what float16 cannot hold) and Cast back to float32 under its own name; onnxruntime folds the Casts at
    # load, so the arithmetic, the inputs, the outputs and the state stay float32. (The converter's
    # whole-model mode, even with keep_io_types, rounds the state to float16 and back at every step.)
    graph, casts = proto.graph, []
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            name = init.name
            init.CopyFrom(convert_tensor_float_to_float16(init))
            init.name = f"{name}_fp16"
            casts.append(
                helper.make_node("Cast", [init.name], [name], to=onnx.TensorProto.FLOAT, name=f"{name}_cast")
            )
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return proto, {
        "method": "weights",
        "tool": "convert_tensor_float_to_float16",
        "weights": "float16, cast to float32 at load",
        "activations": "float32",
        "calibration": None,
    }


def _int4(proto, info, config, calibration) -> tuple[onnx.ModelProto, dict]:
    # MatMulNBits quantizes MatMul weights only; the embedding table (a Gather) goes to uint8 through
    # quantize_dynamic first: 4-bit Gather needs opset 21, past what edge runtimes take.
    embedded = _through_file(quantize_dynamic, proto, op_types_to_quantize=["Gather"])
    quantizer = _matmul_nbits_quantizer()(
        embedded,
        bits=4,
        block_size=config.int4_block_size,
        is_symmetric=False,
        accuracy_level=4,
        op_types_to_quantize=("MatMul",),
    )
    with _quiet_logs():
        quantizer.process()
    return quantizer.model.model, {
        "method": "matmul_nbits",
        "tool": "MatMulNBitsQuantizer",
        "weights": f"int4 blocks of {config.int4_block_size}, embedding uint8",
        "activations": "int8 inside MatMulNBits (an onnxruntime contrib op)",
        "calibration": None,
    }


def _matmul_nbits_quantizer():
    """The class, imported without the ``logging.basicConfig(level=INFO)`` its module runs on import."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    root.handlers[:] = handlers
    root.setLevel(level)
    return MatMulNBitsQuantizer


# --- calibration ---------------------------------------------------------------------------------------


class StateAwareReader(CalibrationDataReader):
    """Calibration feeds ``{x, h[, c]}`` whose states are the ones the float32 model reaches on real inputs.

    ``streams`` contiguous slices of ``inputs`` run through the float32 model for ``steps`` steps each,
    state carried; every step's input and the state before it become one calibration batch.
    """

    def __init__(self, proto: onnx.ModelProto, info: ModelInfo, inputs: np.ndarray, streams: int, steps: int):
        xs = _contiguous_streams(inputs, streams, steps)  # (S, T[, F])
        stream = Stepper(proto.SerializeToString()).new_stream(batch_size=xs.shape[0])
        self.feeds = []
        for t in range(xs.shape[1]):
            self.feeds.append({contract.INPUT_NAME: xs[:, t], **stream.state})
            stream.step(xs[:, t])
        self.summary = _calibration_summary(self.feeds, info, xs.shape)
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iterator, None)

    def rewind(self) -> None:
        self._iterator = iter(self.feeds)


def _contiguous_streams(inputs: np.ndarray, streams: int, steps: int) -> np.ndarray:
    """``streams`` evenly spaced slices of ``steps`` consecutive inputs: ``(S, T)`` or ``(S, T, F)``."""
    steps = min(steps, len(inputs))
    starts = np.linspace(0, len(inputs) - steps, num=streams).astype(int)
    return np.stack([inputs[s : s + steps] for s in starts])


def _calibration_summary(feeds: list[dict], info: ModelInfo, shape: tuple[int, ...]) -> dict[str, Any]:
    ranges = {}
    for spec in info.states:
        values = np.stack([feed[spec.input] for feed in feeds])
        ranges[spec.input] = [round(float(values.min()), 4), round(float(values.max()), 4)]
    return {
        "inputs": "training split",
        "streams": int(shape[0]),
        "steps": int(shape[1]),
        "samples": int(shape[0] * shape[1]),
        "states": "float32 model rolled forward on them (not zeros)",
        "state_ranges": ranges,
    }


# --- structure checks ----------------------------------------------------------------------------------


def _initializers(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}


def _still_float32(fp32: onnx.ModelProto, quantized: onnx.ModelProto, min_ndim: int) -> list[str]:
    """Float32 tensors of the original (with ``min_ndim`` dims or more) left as they were.

    The quantizers replace a weight they quantize with new tensors under new names (``..._quantized``,
    ``..._Q4``) or change its dtype (fp16), so an original name still holding float32 was left alone.
    """
    left = {name for name, a in _initializers(quantized).items() if a.dtype == np.float32}
    return [
        name for name, a in _initializers(fp32).items() if a.ndim >= min_ndim and a.size > 1 and name in left
    ]


def _weights_summary(fp32: onnx.ModelProto, quantized: onnx.ModelProto) -> dict[str, Any]:
    """Which weights were quantized (every matrix, and the biases in some modes), which stayed float32."""
    left = _still_float32(fp32, quantized, min_ndim=1)
    weights = [
        n for n, a in _initializers(fp32).items() if a.dtype == np.float32 and a.ndim >= 1 and a.size > 1
    ]
    return {"quantized": [n for n in weights if n not in left], "float32": left}


def _check_structure(fp32: onnx.ModelProto, quantized: onnx.ModelProto, info: ModelInfo) -> None:
    left = [name for name in _still_float32(fp32, quantized, 2) if not name.startswith(FRONT_END_PREFIX)]
    problems = [f"weight matrix {name!r} is still float32" for name in left]  # a front end may keep its own
    compacted = _copy(fp32)
    _compact(compacted.graph)  # a quantizer that did nothing must not pass for the names it shortened
    fp32_bytes, quantized_bytes = compacted.ByteSize(), quantized.ByteSize()
    if quantized_bytes >= fp32_bytes:
        problems.append(f"the file did not shrink: {quantized_bytes:,} bytes, float32 {fp32_bytes:,}")
    problems += [
        f"the LSTM cell state {name!r} reaches a quantizer" for name in _quantized_cell_state(quantized, info)
    ]
    problems += _version_problems(quantized)
    if problems:
        raise QuantizationError(problems)


def _quantized_cell_state(proto: onnx.ModelProto, info: ModelInfo) -> list[str]:
    """Tensors of the cell-state path (``c`` through Reshape/Split/Mul/Add to ``c_next``) fed to a quantizer."""
    path = {s.input for s in info.states if s.input.rstrip("0123456789") == "c"}  # c, or c0, c1... per stack
    grew = bool(path)
    while grew:  # the path ends at Tanh: tanh(c) belongs to h
        before = len(path)
        for node in proto.graph.node:
            if node.op_type in _CELL_STATE_PATH_OPS and path & set(node.input):
                path.update(node.output)
        grew = len(path) > before
    fed = {name for node in proto.graph.node if node.op_type in _QUANTIZE_OPS for name in node.input}
    return sorted(fed & path)


def _version_problems(proto: onnx.ModelProto) -> list[str]:
    problems = []
    if proto.ir_version > MAX_IR_VERSION:
        problems.append(f"IR version {proto.ir_version} is past {MAX_IR_VERSION}")
    default = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    if any(v > MAX_OPSET for v in default):
        problems.append(f"opset {default} is past {MAX_OPSET}")
    return problems
