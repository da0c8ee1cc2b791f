"""The ``integer`` precision's model and its reference step in numpy: what the generated C computes, bit for bit.

``IntegerModel`` holds the integer parameters (made from a float32 model and its data by
``edgernn.export.integer_calibration``); ``q_step`` runs one step of a batch with the kernels of
``edgernn.runtime.integer_ops``; ``IntegerStepper`` wraps it in the Stream API of ``Stepper`` (float in and
out, quantized and dequantized at the edges) so that the quality gates judge it as they judge any stepper.

A step, in integers only:

- input: tokens index an int16 embedding table (one scale); features arrive as int16 at one scale per
  feature (``input_scale``), the model's input normalisation folded into the first product's weights and
  bias (x_q * input_scale is the raw feature);
- each layer: two products (int8 weights, one scale per row, int32 accumulators, int32 bias), each
  requantized per row by an integer multiplier and shift to Q3.12 (to the state's scale for relu RNN),
  then the cell in integers (``integer_ops``): int16 Q0.15 gates and hidden state, int16 cell state;
- head: an int8 product requantized to int16 y at one scale (``output_scale``), the output
  normalisation folded in: y = y_q * output_scale in the model's units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgernn.runtime import integer_ops as ops
from edgernn.runtime.errors import ContractError, InputError


@dataclass
class Product:
    """``requantize(bias + weight @ x)`` per row: weight (N, K) int8, bias (N,) int32, multiplier (N,)
    int32, shift (N,) in [1, 62]."""

    weight: np.ndarray
    bias: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ops.q_product(x, self.weight, self.bias, self.multiplier, self.shift)


@dataclass
class Layer:
    ih: Product
    hh: Product
    state_scale: float  # the hidden state's value per unit: 2^-15, or calibrated for relu RNN
    c_frac: int = 0  # LSTM: fraction bits of the cell state


@dataclass
class IntegerModel:
    """The integer parameters of one model (see the module docstring). Shapes: embedding (V, E) int16;
    input_scale (F,) float64 (features); head: Product (O, H)."""

    cell: str
    input_kind: str
    input_size: int
    hidden_size: int
    layers: list[Layer]
    head: Product
    output_scale: float
    input_scale: np.ndarray | None = None
    embedding: np.ndarray | None = None
    embedding_scale: float = 0.0
    state_names: tuple[str, ...] = ("h",)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def output_size(self) -> int:
        return int(self.head.weight.shape[0])


def quantize_multiplier(ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per value of ``ratio`` > 0: (multiplier, shift) with ratio ~= multiplier / 2^shift, multiplier in
    [2^30, 2^31) and shift in [1, 62] (a ratio below 2^-32 keeps shift 62 and a smaller multiplier;
    a ratio of 0 gives multiplier 0). ContractError for a ratio of 2^30 or more."""
    ratio = np.asarray(ratio, np.float64).reshape(-1)
    multipliers, shifts = np.zeros(ratio.size, np.int64), np.ones(ratio.size, np.int64)
    for i, r in enumerate(ratio):
        if not math.isfinite(r) or r < 0:
            raise ContractError(f"integer: a scale ratio of {r} cannot be an integer multiplier")
        if r == 0:
            continue
        mantissa, exponent = math.frexp(r)
        m = round(mantissa * 2**31)
        if m == 2**31:
            m, exponent = 2**30, exponent + 1
        shift = 31 - exponent
        if shift > 62:
            m, shift = round(r * 2**62), 62
        if shift < 1:
            raise ContractError(f"integer: a scale ratio of {r:.3g} is past what an int32 multiplier holds")
        multipliers[i], shifts[i] = m, shift
    return multipliers, shifts


def q_step(
    model: IntegerModel, x: np.ndarray, states: list[np.ndarray]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """One step of a batch: x (B,) token ids or (B, F) int16 features; states: h (B, L, H) int16 [and c]
    -> y (B, O) int16 and the next states. int64 arrays holding the C's values."""
    if model.input_kind == "tokens":
        layer_in = model.embedding[np.asarray(x, np.int64)]  # (B, E)
    else:
        layer_in = np.asarray(x, np.int64)  # (B, F)
    h_all, c_all = states[0], states[1] if len(states) > 1 else None
    h_next, c_next = np.empty_like(h_all), None if c_all is None else np.empty_like(c_all)
    for index, layer in enumerate(model.layers):
        h = h_all[:, index]
        gi, gh = layer.ih(layer_in), layer.hh(h)
        if model.cell == "gru":
            h_new = ops.q_gru_cell(gi, gh, h)
        elif model.cell == "lstm":
            h_new, c_next[:, index] = ops.q_lstm_cell(gi, gh, h, c_all[:, index], layer.c_frac)
        elif model.cell == "rnn_tanh":
            h_new = ops.q_rnn_tanh_cell(gi, gh)
        else:
            h_new = ops.q_rnn_relu_cell(gi, gh)
        h_next[:, index] = h_new
        layer_in = h_new
    y = ops.q_sat16(model.head(layer_in))
    return y, [h_next] if c_next is None else [h_next, c_next]


def quantize_product(
    weight: np.ndarray, bias: np.ndarray, out_scale: float, where: str, bias_limit: int = 2**31 - 1
) -> Product:
    """weight (N, K) and bias (N,) already in units of the input's integers, int8 with one scale per row
    and requantized to ``out_scale``; ContractError naming ``where`` for a bias of ``bias_limit`` or more
    at its scale or an int32 accumulator that could overflow."""
    row_scale = np.abs(weight).max(axis=1) / 127.0
    row_scale = np.where(row_scale > 0, row_scale, 1.0)
    w_q = np.clip(np.round(weight / row_scale[:, None]), -127, 127).astype(np.int64)
    b_q = np.round(bias / row_scale)
    if not np.abs(b_q).max(initial=0) < bias_limit:
        raise ContractError(f"--precision integer: {where} has a bias past what int32 holds at its scale")
    b_q = b_q.astype(np.int64)
    bound = ops.accumulator_bound(w_q, b_q)
    if bound > ops.ACC_LIMIT:
        raise ContractError(
            f"--precision integer: {where} could reach {bound:,} in its int32 accumulator (an input of "
            f"{weight.shape[1]} int16 values); deploy it as int8"
        )
    multiplier, shift = quantize_multiplier(row_scale / out_scale)
    return Product(w_q, b_q, multiplier, shift)


def state_scales(model: IntegerModel) -> list[np.ndarray]:
    """Per state tensor, the value of one unit per layer: (L, 1)."""
    h = np.array([[layer.state_scale] for layer in model.layers])
    if model.cell != "lstm":
        return [h]
    return [h, np.array([[2.0**-layer.c_frac] for layer in model.layers])]


def quantize_values(value: Any, scale: np.ndarray | float) -> np.ndarray:
    """Floats -> int16 values at ``scale`` (the value of one unit): rounded half away from zero, saturated,
    NaN to 0, as int64 (the C's ``NAME_quantize_input`` in float)."""
    scaled = np.nan_to_num(np.asarray(value, np.float64) / scale, nan=0.0)
    return ops.q_sat16(np.trunc(scaled + np.copysign(0.5, scaled)).clip(-1e9, 1e9)).astype(np.int64)


def quantize_input(model: Any, x: np.ndarray) -> np.ndarray:
    """Raw float features (B, F) -> int16 at ``input_scale`` (``quantize_values``) of an ``IntegerModel`` or
    an ``IntegerProgram``; token ids are checked and pass unchanged."""
    if model.input_kind == "tokens":
        tokens = np.asarray(x, np.int64)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= model.input_size):
            raise InputError(
                f"token ids must be in [0, {model.input_size}), got {tokens.min()}..{tokens.max()}"
            )
        return tokens
    return quantize_values(x, model.input_scale)


class QuantizedStream:
    """A batch of streams through an integer step with the Stream API (float32 in and out), for either
    integer form: a subclass names the form (``_form``: an ``IntegerModel`` or an ``IntegerProgram``), its
    step (``_q``, ``q_step`` or ``q_run``), its zero state and the state's floats."""

    _q: Any

    def __init__(self, stepper: Any, batch_size: int):
        self._stepper, self.batch_size = stepper, batch_size
        self.reset()

    @property
    def info(self):
        return self._stepper.info

    @property
    def _form(self) -> Any:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def _unbatched(self, x: np.ndarray, sequence: bool) -> bool:
        rank = (0 if self._form.input_kind == "tokens" else 1) + int(sequence)
        if x.ndim == rank and self.batch_size == 1:
            return True
        if x.ndim != rank + 1 or x.shape[0] != self.batch_size:
            raise InputError(f"expected a batch of {self.batch_size} inputs, got shape {x.shape}")
        return False

    def step(self, x: Any) -> np.ndarray:
        """x: (B,) token ids or (B, F) raw features (unbatched with batch size 1) -> y float32."""
        x = np.asarray(x)
        unbatched = self._unbatched(x, sequence=False)
        form = self._form
        xq = quantize_input(form, x[None] if unbatched else x)
        y, self.q_state = self._q(form, xq, self.q_state)
        y = (y * form.output_scale).astype(np.float32)
        return y[0] if unbatched else y

    def run(self, xs: Any) -> np.ndarray:
        """xs: (B, T) or (B, T, F) (unbatched with batch size 1) -> ys (B, T, O) float32."""
        xs = np.asarray(xs)
        unbatched = self._unbatched(xs, sequence=True)
        batched = xs[None] if unbatched else xs
        ys = np.stack([self.step(batched[:, t]) for t in range(batched.shape[1])], axis=1)
        return ys[0] if unbatched else ys

    def _check_state(self, value: Mapping[str, Any]) -> None:
        names = self._form.state_names
        missing = sorted(set(names) - set(value))
        if missing:
            raise InputError(f"state: expected tensors {list(names)}, missing {missing}")


class IntegerStream(QuantizedStream):
    """A batch of streams through ``q_step`` with the Stream API (float32 in and out)."""

    _q = staticmethod(q_step)

    @property
    def _form(self) -> IntegerModel:
        return self._stepper.model

    def reset(self) -> None:
        model = self._stepper.model
        shape = (self.batch_size, model.num_layers, model.hidden_size)
        self.q_state = [np.zeros(shape, np.int64) for _ in model.state_names]

    @property
    def state(self) -> dict[str, np.ndarray]:
        scales = state_scales(self._stepper.model)
        names = self._stepper.model.state_names
        return {n: (q * s).astype(np.float32) for n, q, s in zip(names, self.q_state, scales, strict=True)}

    @state.setter
    def state(self, value: Mapping[str, Any]) -> None:
        model = self._stepper.model
        self._check_state(value)
        scales = state_scales(model)
        self.q_state = [quantize_values(value[n], s) for n, s in zip(model.state_names, scales, strict=True)]


class IntegerStepper:
    """The integer reference with the Stepper's Stream API: ``new_stream(batch_size)``."""

    def __init__(self, model: IntegerModel, info: Any = None):
        self.model, self.info = model, info

    def new_stream(self, batch_size: int = 1) -> IntegerStream:
        return IntegerStream(self, batch_size)
