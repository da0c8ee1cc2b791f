"""Parity on the scale the model computes in: the one rule every check that compares outputs follows.

A regression model de-normalises inside its graph (``y = y_n * std + mean``), so ``y`` is in the user's
units. Float32 rounding of ``y`` grows with those units: an absolute tolerance in them refuses a forecaster
of values in the thousands for rounding alone, and waves through real errors of a model whose values are
near 1e-4. So every check allows, per element,

    |got - want| <= atol * scale + rtol * |want|

where ``scale`` is each output's training std (``output.std`` of the metadata) for ``y`` of a regression
model, and 1 for outputs without statistics and for states (the states are on the model's own scale
already). Logits are judged as the vector they are (``step_scale``): each step's scale is the largest
|logit| of that step, at least 1. A trained classifier's logits reach tens; the float32 rounding of every
one of them, the one near zero beside them included, grows with the weights that make them, while
softmax and argmax read only their differences. Errors are reported divided by the scale: the error on
the scale the model computes in, comparable with ``atol`` whatever the units.
"""

from __future__ import annotations

import numpy as np

from edgernn.runtime.contract import ModelInfo


def output_scale(info: ModelInfo) -> np.ndarray:
    """One unit of each output on the model's scale: ``(output_size,)`` float64, the training std of each
    regression output, else ones (also where metadata from elsewhere gives a std that is not a positive
    number)."""
    std = info.output.std if info.output.kind == "values" else None
    if std is None or len(std) != info.output.size:
        return np.ones(info.output.size, np.float64)
    scale = np.asarray(std, np.float64)
    return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)


def step_scale(info: ModelInfo, want: np.ndarray) -> np.ndarray:
    """The scale ``y`` is judged on, broadcasting against ``want`` (outputs on its last axis): each output's
    training std for a regression model (``output_scale``); for logits, each step's largest |logit|, at
    least 1 (NaN where the step has a NaN: such a step never passes)."""
    if info.output.kind != "logits":
        return output_scale(info)
    magnitude = np.max(np.abs(np.asarray(want, np.float64)), axis=-1, keepdims=True)
    return np.maximum(magnitude, 1.0)  # NaN stays NaN


def scaled_error(got: np.ndarray, want: np.ndarray, scale: np.ndarray | float = 1.0) -> np.ndarray:
    """``|got - want| / scale`` elementwise, float64; ``scale`` broadcasts along the last axis (outputs).
    NaN where either side is NaN."""
    return np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)) / scale


def within(
    got: np.ndarray, want: np.ndarray, atol: float, rtol: float, scale: np.ndarray | float = 1.0
) -> np.ndarray:
    """Elementwise ``|got - want| <= atol * scale + rtol * |want|`` (bool; False for NaN or inf)."""
    want = np.asarray(want, np.float64)
    error = np.abs(np.asarray(got, np.float64) - want)
    return error <= atol * np.asarray(scale, np.float64) + rtol * np.abs(want)


def largest(errors: np.ndarray) -> float:
    """The largest of ``errors`` as a float: 0 for none, inf when any is NaN or inf."""
    if errors.size == 0:
        return 0.0
    worst = float(np.max(errors))
    return worst if np.isfinite(worst) else float("inf")
