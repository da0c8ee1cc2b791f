"""Per-step latency of a stepper, measured call by call (numbers only: no pass/fail here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import cycle
from typing import Any

import numpy as np

from edgernn.runtime.errors import InputError
from edgernn.runtime.inputs import DataInput
from edgernn.runtime.stepper import Stepper

# Inputs are drawn once and cycled, so the timed loop measures the step, not the random generator.
_INPUT_POOL_SIZE = 256
_INPUT_POOL_BYTES = 64 << 20  # fewer inputs to cycle through for very large batches


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
    stream = stepper.new_stream(batch_size)  # refuses a batch past the allocation bound first
    rng = np.random.default_rng(seed)
    data = stepper.data_input
    row_bytes = data.dtype.itemsize * int(np.prod([d or 1 for d in data.shape[1:]]))
    count = max(1, min(_INPUT_POOL_SIZE, _INPUT_POOL_BYTES // (row_bytes * batch_size)))
    inputs = cycle([random_input(data, batch_size, rng) for _ in range(count)])
    return lambda: stream.step(next(inputs))


def random_input(data: DataInput, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """One batched step input for ``data``: ``(batch_size, ...)`` in its dtype."""
    if any(d is None for d in data.shape[1:]):
        raise InputError(
            f"cannot make random inputs for {data.name!r}: its shape {data.shape} has unknown sizes; "
            "declare it: Stepper(..., data_shape=('batch', N)), or --data-shape batch,N"
        )
    shape = (batch_size, *data.shape[1:])
    if data.dtype.kind in "iu":
        high = data.vocab_size or 2  # foreign integer inputs: 0/1 is always in range
        return rng.integers(0, high, size=shape).astype(data.dtype)
    if data.dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.standard_normal(shape).astype(data.dtype)


# --- the fast paths, paced stepping and cold start ------------------------------------------------------


def time_calls(fn: Callable[[], object], steps: int, warmup: int) -> np.ndarray:
    """``warmup`` untimed calls, then the duration of each of ``steps`` calls in microseconds (float64)."""
    _check_counts(steps, warmup)
    for _ in range(warmup):
        fn()
    return _time_calls(fn, steps) / 1000.0


def stats_of(timings_us: np.ndarray, warmup: int = 0, per_call: int = 1) -> LatencyStats:
    """LatencyStats of timed calls (microseconds), each call counted as ``per_call`` steps: a chunk of T
    steps or a pool of N streams is reported per step (call time / ``per_call``)."""
    return _stats((np.asarray(timings_us) * (1000.0 / per_call)).astype(np.int64), warmup)


def step_call(stepper: Stepper, batch_size: int = 1, seed: int = 0) -> Callable[[], object]:
    """One ``step`` of a new stream per call, state fed back, realistic inputs cycled (what ``bench_stepper``
    times)."""
    return _step_call(stepper, batch_size, seed)


def run_call(stepper: Stepper, steps: int, seed: int = 0) -> Callable[[], object]:
    """One ``run`` of ``steps`` steps on a new stream of batch size 1 per call, state carried."""
    stream = stepper.new_stream()
    rng = np.random.default_rng(seed)
    pool = [np.stack([random_input(stepper.data_input, 1, rng)[0] for _ in range(steps)]) for _ in range(8)]
    inputs = cycle(pool)
    return lambda: stream.run(next(inputs))


def pool_call(stepper: Stepper, streams: int, seed: int = 0) -> Callable[[], object]:
    """One ``StreamPool.step`` of ``streams`` streams per call, each with its own input."""
    pool = stepper.new_pool(streams)
    ids = [pool.join() for _ in range(streams)]
    rng = np.random.default_rng(seed)
    batches = [random_input(stepper.data_input, streams, rng) for _ in range(8)]
    inputs = cycle([dict(zip(ids, batch, strict=True)) for batch in batches])
    return lambda: pool.step(next(inputs))


def silent_call(stepper: Stepper, silence_steps: int) -> Callable[[], object]:
    """One step of zero input per call, on a new stream that first had ``silence_steps`` of them: a state
    left to decay, as in silence between words or a sensor at rest."""
    stream = stepper.new_stream()
    zero = np.zeros((1, *stepper.data_input.shape[1:]), stepper.data_input.dtype)
    for _ in range(silence_steps):
        stream.step(zero)
    return lambda: stream.step(zero)


@dataclass(frozen=True)
class PacedStats:
    """Stepping at a fixed rate: ``latency`` of each step, and the deadlines missed.

    Step k is due at ``start + k / rate_hz`` and must finish before step k + 1 is due; ``late_steps``
    started late (the previous one ran over), ``missed_deadlines`` finished after the next step was due.
    """

    rate_hz: float
    latency: LatencyStats
    missed_deadlines: int
    late_steps: int
    worst_overrun_us: float  # how far past its deadline the worst step finished (0 if none did)
    start_delay_p99_us: float  # how late after its due time a step started, p99

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["latency"] = self.latency.to_dict()
        return doc


def bench_paced(
    stepper: Stepper, rate_hz: float, steps: int = 2000, warmup: int = 50, batch_size: int = 1, seed: int = 0
) -> PacedStats:
    """Step at ``rate_hz`` as a sensor loop or an audio callback does: wait for each tick (sleep, then
    spin for the last stretch), step, record the latency and whether the deadline (the next tick) held."""
    if not isinstance(rate_hz, (int, float)) or not 0 < rate_hz < 1e6:
        raise InputError(f"rate_hz: expected a rate between 0 and 1e6 steps per second, got {rate_hz!r}")
    _check_counts(steps, warmup)
    call = _step_call(stepper, batch_size, seed)
    for _ in range(warmup):
        call()
    period_ns = int(1e9 / rate_hz)
    starts, ends = np.empty(steps, np.int64), np.empty(steps, np.int64)
    first = time.perf_counter_ns() + period_ns
    for k in range(steps):
        _wait_until(first + k * period_ns)
        starts[k] = time.perf_counter_ns()
        call()
        ends[k] = time.perf_counter_ns()
    due = first + np.arange(steps, dtype=np.int64) * period_ns
    overrun = ends - (due + period_ns)
    delay_us = (starts - due) / 1000.0
    return PacedStats(
        rate_hz=float(rate_hz),
        latency=_stats(ends - starts, warmup),
        missed_deadlines=int((overrun > 0).sum()),
        late_steps=int((delay_us > period_ns / 2000.0).sum()),  # started over half a period late
        worst_overrun_us=float(max(overrun.max(), 0) / 1000.0),
        start_delay_p99_us=float(np.percentile(delay_us, 99)),
    )


_SPIN_NS = 200_000  # sleep() wakes up to ~0.1 ms late: sleep until 0.2 ms before the tick, then spin


def _wait_until(deadline_ns: int) -> None:
    remaining = deadline_ns - time.perf_counter_ns()
    if remaining > _SPIN_NS:
        time.sleep((remaining - _SPIN_NS) / 1e9)
    while time.perf_counter_ns() < deadline_ns:
        pass


@dataclass(frozen=True)
class ColdStart:
    """A fresh interpreter: ``import edgernn.runtime``, load the model, first step; median of the runs."""

    import_s: float
    load_s: float
    first_step_s: float
    total_s: float
    peak_rss_mb: float
    torch_imported: bool
    onnx_imported: bool
    runs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_COLD_START = """
import json, resource, sys, time
start = time.perf_counter()
import numpy as np
from edgernn.runtime import Stepper
imported = time.perf_counter()
stepper = Stepper(sys.argv[1], **json.loads(sys.argv[2]))
loaded = time.perf_counter()
data = stepper.data_input
stepper.step(np.zeros((1, *data.shape[1:]), data.dtype))
stepped = time.perf_counter()
try:  # this process's own peak: ru_maxrss would also count the parent's pages from before the exec
    with open("/proc/self/status") as status:
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
print(json.dumps({
    "import_s": imported - start, "load_s": loaded - imported, "first_step_s": stepped - loaded,
    "total_s": stepped - start, "peak_rss_mb": peak_kb / 1024,
    "torch_imported": "torch" in sys.modules, "onnx_imported": "onnx" in sys.modules,
}))
"""


def measure_cold_start(
    model: str | os.PathLike, runs: int = 3, stepper_options: dict[str, Any] | None = None
) -> ColdStart:
    """Cold start of the runtime in ``runs`` fresh interpreters: the median of each figure, the peak resident
    memory from /proc (Linux; elsewhere the child's ru_maxrss read as KB). ``stepper_options``: keyword
    arguments for ``Stepper`` (JSON-able: ``state_map``, ``constants``...). Raises InputError if a child fails."""
    results = []
    options = json.dumps(stepper_options or {})
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", _COLD_START, str(model), options],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise InputError(f"cold start of {model}: the child process failed: {done.stderr.strip()[-300:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    median = {
        key: float(np.median([r[key] for r in results])) for key in results[0] if key.endswith(("_s", "_mb"))
    }
    return ColdStart(
        **median,
        torch_imported=any(r["torch_imported"] for r in results),
        onnx_imported=any(r["onnx_imported"] for r in results),
        runs=runs,
    )
