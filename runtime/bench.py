"""Per-step latency of a stepper, measured call by call (numbers only: no pass/fail here)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import cycle

import numpy as np

from edgernn.runtime.errors import InputError
from edgernn.runtime.stepper import DataInput, Stepper

# Inputs are drawn once and cycled, so the timed loop measures the step, not the random generator.
_INPUT_POOL_SIZE = 256


@dataclass(frozen=True)
class LatencyStats:
    """Latency of ``steps`` timed calls after ``warmup`` untimed ones; times in microseconds."""

    steps: int
    warmup: int
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    mean_us: float
    steps_per_s: float

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


def measure(fn: Callable[[], object], steps: int, warmup: int) -> LatencyStats:
    """Call ``fn`` ``warmup`` times, then time each of ``steps`` calls with ``time.perf_counter_ns``."""
    _check_counts(steps, warmup)
    for _ in range(warmup):
        fn()
    return _stats(_time_calls(fn, steps), warmup)


def _check_counts(steps: int, warmup: int) -> None:
    if not isinstance(steps, int) or steps < 1 or not isinstance(warmup, int) or warmup < 0:
        raise InputError(
            f"measure: expected steps >= 1 and warmup >= 0, got steps={steps!r}, warmup={warmup!r}"
        )


def _time_calls(fn: Callable[[], object], calls: int) -> np.ndarray:
    elapsed_ns = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        start = time.perf_counter_ns()
        fn()
        elapsed_ns[i] = time.perf_counter_ns() - start
    return elapsed_ns


def _stats(elapsed_ns: np.ndarray, warmup: int) -> LatencyStats:
    elapsed_us = elapsed_ns / 1000.0
    p50, p90, p99 = np.percentile(elapsed_us, [50, 90, 99])
    return LatencyStats(
        steps=len(elapsed_ns),
        warmup=warmup,
        p50_us=float(p50),
        p90_us=float(p90),
        p99_us=float(p99),
        max_us=float(elapsed_us.max()),
        mean_us=float(elapsed_us.mean()),
        steps_per_s=float(len(elapsed_ns) / (elapsed_ns.sum() / 1e9)),
    )


def bench_stepper(
    stepper: Stepper, steps: int = 2000, warmup: int = 200, batch_size: int = 1, seed: int = 0
) -> LatencyStats:
    """Latency of ``step`` on a new stream of ``batch_size``, state fed back, with random realistic inputs:
    token ids uniform over the vocabulary, features standard normal.
    """
    return measure(_step_call(stepper, batch_size, seed), steps, warmup)


def bench_side_by_side(
    steppers: Sequence[Stepper],
    steps: int = 2000,
    warmup: int = 200,
    batch_size: int = 1,
    rounds: int = 5,
    seed: int = 0,
) -> list[LatencyStats]:
    """``bench_stepper`` for several models at once, ``steps`` timed calls each split into ``rounds``
    interleaved rounds: whatever slows the machine for a while (another process, a clock change) slows
    every model alike, so their ratios hold."""
    _check_counts(steps, warmup)
    calls = [_step_call(stepper, batch_size, seed) for stepper in steppers]
    for call in calls:
        for _ in range(warmup):
            call()
    timings: list[list[np.ndarray]] = [[] for _ in calls]
    for part in np.array_split(np.arange(steps), max(1, min(rounds, steps))):
        for call, timing in zip(calls, timings, strict=True):
            timing.append(_time_calls(call, len(part)))
    return [_stats(np.concatenate(timing), warmup) for timing in timings]


def _step_call(stepper: Stepper, batch_size: int, seed: int) -> Callable[[], object]:
    """One step of a new stream, state fed back, inputs cycled from a pool drawn once."""
    stream = stepper.new_stream(batch_size)
    rng = np.random.default_rng(seed)
    inputs = cycle([random_input(stepper.data_input, batch_size, rng) for _ in range(_INPUT_POOL_SIZE)])
    return lambda: stream.step(next(inputs))


def random_input(data: DataInput, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """One batched step input for ``data``: ``(batch_size, ...)`` in its dtype."""
    if any(d is None for d in data.shape[1:]):
        raise InputError(
            f"cannot make random inputs for {data.name!r}: its shape {data.shape} has unknown sizes"
        )
    shape = (batch_size, *data.shape[1:])
    if data.dtype.kind in "iu":
        high = data.vocab_size or 2  # foreign integer inputs: 0/1 is always in range
        return rng.integers(0, high, size=shape).astype(data.dtype)
    if data.dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.standard_normal(shape).astype(data.dtype)
