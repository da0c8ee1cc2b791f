"""Make the ``integer`` precision's parameters from an edgernn float32 step graph and real data, and judge them.

``float_parameters`` reads the weights of edgernn's own cells from the graph by their initializer names and
proves they are the graph (a numpy float step of those weights must equal onnxruntime's on random inputs
and states); a bring-your-own graph (``is_own_model`` false) is deployed as an ``IntegerProgram`` instead
(``edgernn.export.c.integer_program``). ``calibrate`` runs
the float32 stepper over the data to find the ranges (inputs, outputs, the relu RNN state, the LSTM cell
state) and ``integer_model`` turns weights and ranges into an ``IntegerModel``. ``check_integer`` runs the
quality gates of quantized exports (``edgernn.export.quality``) on the integer reference with the integer
precision's tolerances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from edgernn.export import quality
from edgernn.runtime import Stepper
from edgernn.runtime import integer_ops as ops
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ContractError
from edgernn.runtime.integer_program import IntegerProgram, ProgramStepper
from edgernn.runtime.integer_ref import IntegerModel, IntegerStepper, Layer, quantize_product

GATES = {"gru": 3, "lstm": 4, "rnn_tanh": 1, "rnn_relu": 1}
HEADROOM = 2.0  # calibrated ranges (inputs, outputs, relu state, cell state) are doubled
CALIBRATION_STREAMS = 8
CALIBRATION_STEPS = 400
# The task-metric tolerances of the integer precision (the gates): nats per character, accuracy
# points, and RMSE (an MSE within 10% is an RMSE within sqrt(1.1) - 1).
METRIC_TOLERANCE = {"loss": 0.05, "accuracy": -1.0}
RMSE_FRACTION = math.sqrt(1.1) - 1.0


@dataclass
class FloatLayer:
    w_ih: np.ndarray  # (G*H, K)
    b_ih: np.ndarray  # (G*H,)
    w_hh: np.ndarray  # (G*H, H)
    b_hh: np.ndarray  # (G*H,) (zeros where the graph adds both biases to the input product)


@dataclass
class FloatModel:
    cell: str
    layers: list[FloatLayer]
    head_w: np.ndarray  # (O, H), the output normalisation folded in
    head_b: np.ndarray  # (O,)
    embedding: np.ndarray | None = None  # (V, E)
    input_mean: np.ndarray | None = None
    input_std: np.ndarray | None = None


OWN_INITIALIZERS = ("l0.ih.weight_t", "l0.hh.weight_t", "head.weight_t")


def is_own_model(proto: onnx.ModelProto) -> bool:
    """Whether ``proto`` is a graph edgernn's export_model wrote (its cells' weights by name); any other
    (a bring-your-own graph) is deployed as an ``IntegerProgram`` (``export.c.integer_program``)."""
    names = {t.name for t in proto.graph.initializer}
    return all(name in names for name in OWN_INITIALIZERS)


def check_integer_graph(info: ModelInfo) -> None:
    """What no integer form takes, whichever the graph: a state not starting at 0. (A keyword model's front
    end is an integer program's: ``export.c.integer_front_end``; the cells' form refuses it.)"""
    nonzero = [s.input for s in info.states if s.initial != 0]
    if nonzero:
        raise ContractError(f"--precision integer starts every state at 0; {nonzero} start elsewhere")


def integer_stepper(model: IntegerModel | IntegerProgram, info: ModelInfo):
    """The Stream API over ``model`` (an edgernn cell model or a bring-your-own program)."""
    if isinstance(model, IntegerProgram):
        return ProgramStepper(model, info)
    return IntegerStepper(model, info)


def _need(weights: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in weights:
        raise ContractError(
            f"--precision integer takes the cells edgernn exports (export_model); this graph has no "
            f"initializer {name!r}"
        )
    return weights[name].astype(np.float64)


def float_parameters(proto: onnx.ModelProto, info: ModelInfo) -> FloatModel:
    """The float weights of the graph's cells, in PyTorch's layout, checked against the graph itself."""
    if info.cell not in GATES:
        raise ContractError(f"--precision integer: cell {info.cell!r} is not supported ({', '.join(GATES)})")
    check_integer_graph(info)
    if "front_end" in info.extra:
        raise ContractError(
            "--precision integer: a keyword model's audio front end (window, DFT, mel filterbank, log) is "
            "no cell's weights; deploy writes it as an integer program, or deploy it as float32 or int8"
        )
    weights = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    layers = []
    for index in range(info.num_layers):
        w_ih, w_hh = _need(weights, f"l{index}.ih.weight_t").T, _need(weights, f"l{index}.hh.weight_t").T
        b_ih = _need(weights, f"l{index}.ih.bias")
        b_hh = weights.get(f"l{index}.hh.bias", np.zeros_like(b_ih)).astype(np.float64)
        layers.append(FloatLayer(w_ih, b_ih, w_hh, b_hh))
    head_w, head_b = _need(weights, "head.weight_t").T, _need(weights, "head.bias")
    if "output.std" in weights:
        std, mean = _need(weights, "output.std"), _need(weights, "output.mean")
        head_w, head_b = head_w * std[:, None], head_b * std + mean
    model = FloatModel(info.cell, layers, head_w, head_b)
    if info.input.kind == "tokens":
        model.embedding = _need(weights, "embedding.weight")
    elif "input.mean" in weights:
        model.input_mean, model.input_std = _need(weights, "input.mean"), _need(weights, "input.std")
    _check_against_graph(proto, info, model)
    return model


def float_step(model: FloatModel, x: np.ndarray, states: list[np.ndarray]) -> tuple[np.ndarray, list]:
    """PyTorch's cells in float64: x (B,) tokens or (B, F); states (B, L, H) -> y (B, O), next states."""
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    if model.embedding is not None:
        layer_in = model.embedding[x]
    else:
        layer_in = np.asarray(x, np.float64)
        if model.input_mean is not None:
            layer_in = (layer_in - model.input_mean) / model.input_std
    h_next, c_next = np.empty_like(states[0]), np.empty_like(states[-1])
    for index, layer in enumerate(model.layers):
        h = states[0][:, index]
        gi, gh = layer_in @ layer.w_ih.T + layer.b_ih, h @ layer.w_hh.T + layer.b_hh
        size = h.shape[-1]
        if model.cell == "gru":
            r, z = (
                sigmoid(gi[:, :size] + gh[:, :size]),
                sigmoid(gi[:, size : 2 * size] + gh[:, size : 2 * size]),
            )
            n = np.tanh(gi[:, 2 * size :] + r * gh[:, 2 * size :])
            h_new = n + z * (h - n)
        elif model.cell == "lstm":
            i, f, g, o = (
                gi[:, k * size : (k + 1) * size] + gh[:, k * size : (k + 1) * size] for k in range(4)
            )
            c_next[:, index] = sigmoid(f) * states[1][:, index] + sigmoid(i) * np.tanh(g)
            h_new = sigmoid(o) * np.tanh(c_next[:, index])
        else:
            h_new = np.tanh(gi + gh) if model.cell == "rnn_tanh" else np.maximum(gi + gh, 0.0)
        h_next[:, index] = layer_in = h_new
    y = layer_in @ model.head_w.T + model.head_b
    return y, [h_next] if model.cell != "lstm" else [h_next, c_next]


def _check_against_graph(proto: onnx.ModelProto, info: ModelInfo, model: FloatModel) -> None:
    rng = np.random.default_rng(0)
    batch = 4
    if info.input.kind == "tokens":
        x = rng.integers(0, info.input.size, batch)
    else:
        x = rng.standard_normal((batch, info.input.size)).astype(np.float32)
        if model.input_mean is not None:
            x = (x * model.input_std + model.input_mean).astype(np.float32)
    states = [rng.uniform(-0.9, 0.9, (batch, *s.shape)).astype(np.float32) for s in info.states]
    stream = Stepper(proto.SerializeToString(), chunk_model=False).new_stream(batch)
    stream.state = {s.input: v for s, v in zip(info.states, states, strict=True)}
    want = stream.step(x)
    got, _ = float_step(model, x, [s.astype(np.float64) for s in states])
    error = float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max())))
    if not error < 1e-4:
        raise ContractError(
            f"--precision integer takes edgernn's own {info.cell} graph; this one computes something else "
            f"(its weights as a {info.cell} differ from the graph by {error:.3g}): deploy it as float32 or int8"
        )


@dataclass
class Ranges:
    """The largest magnitudes seen on the calibration data: per feature, per output, per layer."""

    inputs: np.ndarray | None
    outputs: np.ndarray
    hidden: np.ndarray  # (L,)
    cell: np.ndarray | None  # (L,) LSTM


def calibrate(proto_bytes: bytes, info: ModelInfo, calibration: np.ndarray) -> Ranges:
    """Run the float32 stepper over ``calibration`` (real inputs in time order) from the initial state."""
    series = quality._tile(np.asarray(calibration), CALIBRATION_STEPS, CALIBRATION_STREAMS)
    stream = Stepper(proto_bytes, chunk_model=False).new_stream(CALIBRATION_STREAMS)
    peaks = {s.input: np.zeros(info.num_layers) for s in info.states}
    y_peak = np.zeros(info.output.size)
    for t in range(series.shape[1]):
        y_peak = np.maximum(y_peak, np.abs(stream.step(series[:, t])).max(axis=0))
        for name, value in stream.state.items():
            peaks[name] = np.maximum(peaks[name], np.abs(value).max(axis=(0, 2)))
    inputs = None if info.input.kind == "tokens" else np.abs(series).reshape(-1, info.input.size).max(axis=0)
    names = [s.input for s in info.states]
    return Ranges(inputs, y_peak, peaks[names[0]], peaks[names[1]] if len(names) > 1 else None)


def _scale(peak: np.ndarray | float) -> np.ndarray:
    """An int16 scale that holds HEADROOM times ``peak``."""
    return np.maximum(HEADROOM * np.asarray(peak, np.float64), 1e-6) / ops.INT16_MAX


def integer_model(model: FloatModel, ranges: Ranges, info: ModelInfo) -> IntegerModel:
    """The IntegerModel of ``model`` with scales from ``ranges``."""
    gate = 2.0**-ops.GATE_FRAC
    details: dict = {"gates": "int16 Q3.12", "activations": "int16 Q0.15"}
    result = IntegerModel(
        cell=info.cell, input_kind=info.input.kind, input_size=info.input.size,
        hidden_size=info.hidden_size, layers=[], head=None, output_scale=0.0,  # type: ignore[arg-type]
        state_names=tuple(s.input for s in info.states),
    )  # fmt: skip
    if model.embedding is not None:
        result.embedding_scale = float(_scale(np.abs(model.embedding).max() / HEADROOM))
        result.embedding = np.round(model.embedding / result.embedding_scale).astype(np.int64)
        in_scale: np.ndarray | float = result.embedding_scale
        first_w, first_b = model.layers[0].w_ih, model.layers[0].b_ih
    else:
        result.input_scale = _scale(ranges.inputs)
        first_w, first_b = model.layers[0].w_ih, model.layers[0].b_ih
        if model.input_mean is not None:  # (x - mean) / std @ W^T: the normalisation folded in
            first_w = first_w / model.input_std[None, :]
            first_b = first_b - first_w @ model.input_mean
        in_scale = result.input_scale
    for index, layer in enumerate(model.layers):
        w_ih, b_ih = (first_w, first_b) if index == 0 else (layer.w_ih, layer.b_ih)
        relu = info.cell == "rnn_relu"
        state_scale = float(_scale(ranges.hidden[index])) if relu else 2.0**-ops.ACT_FRAC
        out_scale = state_scale if relu else gate
        where = f"layer {index}"
        ih = quantize_product(w_ih * in_scale, b_ih, out_scale, f"{where}'s input product")
        hh = quantize_product(layer.w_hh * state_scale, layer.b_hh, out_scale, f"{where}'s state product")
        c_frac = 0
        if info.cell == "lstm":
            c_frac = _cell_frac(float(ranges.cell[index]))
        result.layers.append(Layer(ih, hh, state_scale, c_frac))
        in_scale = state_scale
    result.output_scale = float(_scale(ranges.outputs.max(initial=0.0)))
    result.head = quantize_product(model.head_w * in_scale, model.head_b, result.output_scale, "the head")
    if info.cell == "lstm":
        details["cell_state"] = [f"int16 Q{15 - layer.c_frac}.{layer.c_frac}" for layer in result.layers]
    result.details = details
    return result


def _cell_frac(peak: float) -> int:
    """Fraction bits of the LSTM cell state: the most that hold HEADROOM times ``peak`` (0 to 15)."""
    whole = max(0, math.ceil(math.log2(max(HEADROOM * peak, 1e-9))))
    return int(min(15, max(0, 15 - whole)))


def metric_tolerance(metric: str, fp32_value: float) -> float:
    if metric == "rmse":
        return RMSE_FRACTION * fp32_value
    return METRIC_TOLERANCE[metric]


def check_integer(
    proto_bytes: bytes,
    model: IntegerModel | IntegerProgram,
    info: ModelInfo,
    series: np.ndarray,
    data: quality.EvaluationData | None,
    tolerance: float | None = None,
) -> quality.QualityReport:
    """The quality gates (one step, closed loop, the task metric on ``data``) of the integer reference
    against the float32 stepper, with the integer precision's default tolerances."""
    fp32 = Stepper(proto_bytes, chunk_model=False)
    if tolerance is None and data is not None:
        tolerance = metric_tolerance(data.metric, quality.evaluate(fp32, data))
    return quality.check_steppers(fp32, integer_stepper(model, info), info, series, data, tolerance)


WINDOW_MARGIN = 100  # rows either side of the labelled anomaly that still count as finding it


def anomaly_window(
    proto_bytes: bytes, model: IntegerModel | IntegerProgram, info: ModelInfo, data_path
) -> dict | None:
    """An anomaly model judged on a CSV with a label column (``is_anomaly``, ``label``...): the row of the top
    anomaly score (``edgernn.runtime.tasks.AnomalyScorer`` over the whole file, from the initial state) for
    float32 and for the integer reference, and whether each is within WINDOW_MARGIN rows of the labelled
    rows. None for another task, or a file without a label column or a labelled row."""
    from edgernn.csv_table import DEFAULT_MISSING, LABEL_COLUMNS, read_csv
    from edgernn.runtime.tasks import AnomalyScorer, metadata_strings

    if info.extra.get("task") != "anomaly":
        return None
    table = read_csv(data_path)
    label = next((c for c in table.names if c.lower() in LABEL_COLUMNS), None)
    if label is None:
        return None
    columns = metadata_strings(info, "columns", info.input.size)
    table, _ = table.resolve_missing(columns, DEFAULT_MISSING)
    rows = np.flatnonzero(np.array(table.labels(label)) == "1")
    if rows.size == 0:
        return None
    window = [int(rows[0]) - WINDOW_MARGIN, int(rows[-1]) + WINDOW_MARGIN]
    xs = table.pick(columns)
    streams = {
        "float32": Stepper(proto_bytes, chunk_model=False).new_stream(),
        "integer": integer_stepper(model, info).new_stream(),
    }
    top = {name: int(np.argmax(AnomalyScorer(stream).score(xs))) for name, stream in streams.items()}
    found = {name: window[0] <= row <= window[1] for name, row in top.items()}
    return {"label_column": label, "window": window, "top_row": top, "found": found}


def anomaly_failure(result: dict | None) -> str | None:
    """The gate: float32 finds the anomaly in its window and the integer reference does not."""
    if result is None or not result["found"]["float32"] or result["found"]["integer"]:
        return None
    low, high = result["window"]
    return (
        f"anomaly window: the integer top score is at row {result['top_row']['integer']}, outside rows "
        f"{low}-{high} (the labelled anomaly +-{WINDOW_MARGIN}), where float32's is (row "
        f"{result['top_row']['float32']})"
    )
