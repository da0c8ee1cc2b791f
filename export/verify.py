"""Every export verifies itself: onnx.checker, then onnxruntime against PyTorch.

Checks (float32 against float32, elementwise |ort - torch| <= atol * scale + rtol * |torch|, where scale is
each output's training std for ``y`` of a regression model, the step's largest |logit| (at least 1) for
logits, and 1 for states: the tolerance follows the scale the model computes in, not the user's units;
see ``edgernn.runtime.tolerance``):

- ``one_step``: batch 1, a random non-zero state, one step; y and every next state.
- ``closed_loop``: batch 3 (not the export's batch 1), ``CLOSED_LOOP_STEPS`` steps from the initial
  state with onnxruntime's own state fed back, compared at every step with PyTorch running the whole
  sequence through nn.GRU/nn.LSTM/nn.RNN (an independent implementation of the same math).
- ``after_reset``: the state put back to its initial value after the closed loop, then 64 new steps.

Every mismatch is collected; one ParityError lists them all. ``verify_export`` checks a RecurrentModel;
``verify_against`` checks any step graph against a ``Reference`` (how ``export_module`` checks your own).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import onnx
import onnxruntime as ort
import torch

from edgernn.models import RecurrentModel
from edgernn.runtime import contract, tolerance
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ParityError

BATCH_FOR_LOOP = 3
STEPS_AFTER_RESET = 64

States = tuple[np.ndarray, ...]
Reference = Callable[[np.ndarray, States | None], tuple[np.ndarray, States]]
"""The PyTorch side of the checks: ``(xs, state) -> (ys, final state)`` over a whole sequence.

xs: ``(B, T)`` int64 tokens or ``(B, T, F)`` float32 features; state: one array per contract state,
``(B, num_layers, hidden_size)`` float32, or None for the model's own initial state. Returns ys
``(B, T, output_size)`` and the final state in the same layout, float64.
"""


@dataclass
class ParityReport:
    """Largest error of each check, per compared tensor, and the tolerances used.

    Errors of ``y`` are on the scale the model computes in: divided by each output's training std for a
    regression model (``edgernn.runtime.tolerance``), so they compare with ``atol`` whatever the user's
    units; errors of logits are divided by their step's largest |logit| (at least 1). ``y_scale``: the
    std per output (ones for logits and outputs without statistics).
    """

    errors: dict[str, dict[str, float]] = field(default_factory=dict)
    closed_loop_steps: int = contract.CLOSED_LOOP_STEPS
    tolerances: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {
            "one_step": (contract.ONE_STEP_ATOL, contract.ONE_STEP_RTOL),
            "closed_loop": (contract.CLOSED_LOOP_ATOL, contract.CLOSED_LOOP_RTOL),
            "after_reset": (contract.CLOSED_LOOP_ATOL, contract.CLOSED_LOOP_RTOL),
        }
    )
    y_scale: tuple[float, ...] = ()
    logits: bool = False  # y's errors are relative to each step's largest |logit| (at least 1)

    def max_error(self) -> float:
        return max((e for check in self.errors.values() for e in check.values()), default=0.0)


class _Checker:
    """Compares onnxruntime with PyTorch, tensor by tensor, and collects every mismatch.

    ``y`` is judged as ``|ort - torch| <= atol * std + rtol * |torch|`` with std each output's training
    std (``edgernn.runtime.tolerance``): float32 rounding of values in the thousands passes, a real error
    in values near 1e-4 does not. Logits are judged against their step's largest |logit| (at least 1):
    the rounding of a logit near zero beside logits in the tens passes. States are on the model's scale
    already (scale 1).
    """

    def __init__(self, info: ModelInfo) -> None:
        self.mismatches: list[str] = []
        self.info = info
        self.y_scale = tolerance.output_scale(info)
        self.report = ParityReport(
            y_scale=tuple(float(s) for s in self.y_scale), logits=info.output.kind == "logits"
        )

    def compare(
        self, check: str, tensor: str, got: np.ndarray, want: np.ndarray, time_axis: int | None = None
    ) -> None:
        atol, rtol = self.report.tolerances[check]
        if got.shape != want.shape:
            self.mismatches.append(f"{check}: {tensor} has shape {got.shape}, PyTorch gives {want.shape}")
            return
        is_y = tensor == contract.OUTPUT_NAME
        scale = tolerance.step_scale(self.info, want) if is_y else 1.0
        worst = tolerance.largest(tolerance.scaled_error(got, want, scale))
        errors = self.report.errors.setdefault(check, {})
        errors[tensor] = max(errors.get(tensor, 0.0), worst)
        bad = ~tolerance.within(got, want, atol, rtol, scale)
        if bad.any():
            where = ""
            if time_axis is not None:
                step = int(
                    np.argmax(np.moveaxis(bad, time_axis, 0).reshape(bad.shape[time_axis], -1).any(axis=1))
                )
                where = f" (first at step {step})"
            self.mismatches.append(
                f"{check}: {tensor}{where} {_difference(got, want, worst, atol, rtol, self._unit(is_y))}"
            )

    def _unit(self, is_y: bool) -> tuple[str, str] | None:
        """What y's errors are divided by, in words and in the tolerance's formula; None for states."""
        if not is_y:
            return None
        if self.info.output.kind == "logits":
            return "its step's largest |logit| (at least 1)", "max(1, largest |logit|)"
        return "its training std", "std"


def _difference(
    got: np.ndarray, want: np.ndarray, worst: float, atol: float, rtol: float, unit: tuple[str, str] | None
) -> str:
    """How far apart, in the user's units and (for y) on the model's scale, against the tolerance."""
    absolute = tolerance.largest(tolerance.scaled_error(got, want))
    if unit is None:
        return f"differs from PyTorch by {absolute:.3g} (atol {atol:g}, rtol {rtol:g})"
    words, formula = unit
    return (
        f"differs from PyTorch by {absolute:.3g}, {worst:.3g} in units of {words} "
        f"(atol {atol:g} x {formula}, rtol {rtol:g})"
    )


def _random_inputs(info: ModelInfo, batch: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    spec = info.input
    if spec.kind == "tokens":
        return rng.integers(0, spec.size, size=(batch, steps), dtype=np.int64)
    x = rng.standard_normal((batch, steps, spec.size)).astype(np.float32)
    if spec.mean is not None:  # raw values on the scale the model was trained on
        x = x * np.float32(spec.std) + np.float32(spec.mean)
    return x.astype(np.float32)


def _torch_run(model: RecurrentModel, xs: np.ndarray, state: States | None) -> tuple[np.ndarray, States]:
    with torch.no_grad():
        torch_state = None if state is None else tuple(torch.from_numpy(s) for s in state)
        y, next_state = model(torch.from_numpy(xs), torch_state)
    return y.numpy().astype(np.float64), tuple(s.numpy().astype(np.float64) for s in next_state)


class _OrtStream:
    """A plain onnxruntime loop over the contract's names: independent of edgernn's stepper."""

    def __init__(self, session: ort.InferenceSession, info: ModelInfo, batch: int):
        self.session, self.info, self.batch = session, info, batch
        self.output_names = [contract.OUTPUT_NAME, *(s.output for s in info.states)]
        self.reset()

    def reset(self) -> None:
        self.state = {
            s.input: np.full((self.batch, *s.shape), s.initial, np.float32) for s in self.info.states
        }

    def step(self, x: np.ndarray) -> list[np.ndarray]:
        outputs = self.session.run(self.output_names, {contract.INPUT_NAME: x, **self.state})
        self.state = {s.input: out for s, out in zip(self.info.states, outputs[1:], strict=True)}
        return outputs


def verify_export(
    model: RecurrentModel, proto: onnx.ModelProto, info: ModelInfo, seed: int = 0
) -> ParityReport:
    """Run every check; raise ParityError listing all mismatches, else return the measured errors."""
    return verify_against(partial(_torch_run, model.eval()), proto, info, seed)


def verify_against(
    reference: Reference, proto: onnx.ModelProto, info: ModelInfo, seed: int = 0
) -> ParityReport:
    """Check the step graph ``proto`` against ``reference``; raise ParityError listing all mismatches."""
    checker = _Checker(info)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ParityError([f"onnx.checker: {exc}"]) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    _check_one_step(checker, reference, session, info, rng)
    _check_closed_loop(checker, reference, session, info, rng)
    if checker.mismatches:
        raise ParityError(checker.mismatches, checker.report)
    return checker.report


def _check_one_step(
    checker: _Checker, reference: Reference, session, info: ModelInfo, rng: np.random.Generator
) -> None:
    stream = _OrtStream(session, info, batch=1)
    stream.state = {
        s.input: (0.5 * rng.standard_normal((1, *s.shape))).astype(np.float32) for s in info.states
    }
    start = tuple(stream.state[s.input] for s in info.states)
    xs = _random_inputs(info, 1, 1, rng)
    y_want, state_want = reference(xs, start)
    y, *states = stream.step(xs[:, 0])
    checker.compare("one_step", contract.OUTPUT_NAME, y, y_want[:, 0])
    for spec, got, want in zip(info.states, states, state_want, strict=True):
        checker.compare("one_step", spec.output, got, want)


def _check_closed_loop(
    checker: _Checker, reference: Reference, session, info: ModelInfo, rng: np.random.Generator
) -> None:
    stream = _OrtStream(session, info, batch=BATCH_FOR_LOOP)
    for check, steps in (("closed_loop", contract.CLOSED_LOOP_STEPS), ("after_reset", STEPS_AFTER_RESET)):
        stream.reset()
        xs = _random_inputs(info, BATCH_FOR_LOOP, steps, rng)
        ys_want, state_want = reference(xs, None)
        ys = np.stack([stream.step(xs[:, t])[0] for t in range(steps)], axis=1)  # (B, T, O)
        checker.compare(check, contract.OUTPUT_NAME, ys, ys_want, time_axis=1)
        for spec, want in zip(info.states, state_want, strict=True):
            checker.compare(check, f"{spec.output} (final)", stream.state[spec.input], want)
