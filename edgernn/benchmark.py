"""The stepper against what a user would otherwise write, measured side by side in one run.

For a model (an edgernn ``.onnx`` file, or the reference GRU and LSTM built here) ``bench_model`` times,
interleaved in rounds so that whatever slows the machine for a while slows every path alike:

- ``baseline_onnx``: ``torch.onnx.export`` of the same weights as a plain ``nn.GRU``/``nn.LSTM`` model
  (state in PyTorch's ``(layers, batch, hidden)``), run with ``session.run`` and a numpy dict, state fed
  back: what a user writes by hand;
- ``baseline_torch``: PyTorch eager, one step at a time, state fed back, ``inference_mode``;
- ``floor``: an identity model with the same inputs and outputs through the stepper's own call path;
- ``stepper``: ``Stepper.step``;
- ``c``: the C that ``edgernn deploy --target c`` generates, compiled here with ``-O3 -march=native`` and
  timed in C step by step (a benchmark program run once per round; needs a C compiler);

and, for an edgernn model, ``run`` (per step, through the chunk graph), ``pool`` (per stream-step of one
``StreamPool.step`` over N streams), steps after 10,000 steps of silence, optionally a paced loop, and
the cold start of a fresh interpreter. Baselines need torch and onnx (imported here, lazily); without
them, or for a model whose weights cannot be read back (quantized, foreign), they are left out with a
note. Timings only: nothing here passes or fails.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import cycle
from pathlib import Path
from typing import Any

import numpy as np

from edgernn.bench_baselines import (
    _baseline_onnx,
    _baseline_torch,
    _plain_module,
    _torch_threads,
    floor_model,
    torch_model_from_onnx,
)
from edgernn.bench_format import PATHS, format_bench, format_side_by_side, paced_text
from edgernn.bench_plot import check_plot_path, plot_latency, plot_side_by_side
from edgernn.runtime import Stepper
from edgernn.runtime.bench import (
    ColdStart,
    LatencyStats,
    PacedStats,
    bench_paced,
    measure_cold_start,
    pool_call,
    random_input,
    run_call,
    silent_call,
    stats_of,
    step_call,
    time_calls,
)
from edgernn.runtime.errors import EdgeRNNError, InputError

REFERENCE_CELLS = ("gru", "lstm")
REFERENCE_SHAPE = {"num_layers": 2, "hidden_size": 128, "input_size": 32, "output_size": 32}
SILENCE_STEPS = 10_000


@dataclass
class BenchSettings:
    """How long and how: ``steps`` timed calls per path after ``warmup``, split into ``rounds``."""

    steps: int = 5000
    warmup: int = 500
    rounds: int = 5
    threads: int = 1
    pool_streams: int = 256
    silence_steps: int = SILENCE_STEPS
    paced_hz: float | None = None
    cold_start: bool = True
    c_path: bool = True  # the generated C, compiled natively, where a C compiler is found
    seed: int = 0
    stepper_options: dict[str, Any] = field(default_factory=dict)  # for models edgernn did not write


@dataclass
class ModelBench:
    """Every measurement of one model; ``timings_us`` keeps the raw per-call times (for plots)."""

    label: str
    path: Path
    size_bytes: int
    pool_streams: int
    silence_steps: int
    paths: dict[str, LatencyStats] = field(default_factory=dict)
    timings_us: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    step_beside: LatencyStats | None = None  # plain steps, interleaved with run and pool
    run: LatencyStats | None = None  # per step of Stepper.run through the chunk graph
    chunk_steps: int | None = None
    pool: LatencyStats | None = None  # per stream-step of a pool step
    silence: dict[str, dict[str, float]] = field(default_factory=dict)  # path -> normal / silent p50, p99
    paced: PacedStats | None = None
    cold_start: ColdStart | None = None
    notes: list[str] = field(default_factory=list)

    def ratios(self) -> dict[str, float]:
        """p50 against p50 (and the stepper's own p99 against its p50), for the paths measured."""
        stepper = self.paths["stepper"].p50_us
        ratios = {
            f"stepper_vs_{name}": stepper / self.paths[name].p50_us
            for name in PATHS[:3]
            if name in self.paths
        }
        ratios["stepper_p99_vs_p50"] = self.paths["stepper"].p99_us / stepper
        if "front_end" in self.paths and "floor" in self.paths and stepper > self.paths["floor"].p50_us:
            floor = self.paths["floor"].p50_us  # the front end's share of the step, the call path's cost off
            ratios["front_end_share"] = (self.paths["front_end"].p50_us - floor) / (stepper - floor)
        if "c" in self.paths:
            ratios["c_vs_stepper"] = self.paths["c"].p50_us / stepper
            if "baseline_onnx" in self.paths:
                ratios["c_vs_baseline_onnx"] = self.paths["c"].p50_us / self.paths["baseline_onnx"].p50_us
        beside = self.step_beside.p50_us if self.step_beside is not None else stepper
        if self.run is not None:
            ratios["run_step_vs_step"] = self.run.p50_us / beside
        if self.pool is not None:
            ratios["pool_stream_step_vs_step"] = self.pool.p50_us / beside
        if "stepper" in self.silence:
            ratios["silent_p99_vs_normal_p99"] = (
                self.silence["stepper"]["silent_p99_us"] / self.silence["stepper"]["normal_p99_us"]
            )
        return ratios

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"model": self.label, "path": str(self.path), "size_bytes": self.size_bytes}
        doc.update({name: stats.to_dict() for name, stats in self.paths.items()})
        doc["ratios"] = self.ratios()
        doc["run"] = None if self.run is None else {**self.run.to_dict(), "steps_per_call": self.chunk_steps}
        doc["pool"] = None if self.pool is None else {**self.pool.to_dict(), "streams": self.pool_streams}
        doc["step_beside_fast_paths"] = None if self.step_beside is None else self.step_beside.to_dict()
        doc["silence"] = self.silence or None
        doc["silence_steps"] = self.silence_steps
        doc["paced"] = None if self.paced is None else self.paced.to_dict()
        doc["cold_start"] = None if self.cold_start is None else self.cold_start.to_dict()
        doc["notes"] = self.notes
        return doc


# --- building the paths ------------------------------------------------------------------------------


def _inputs(stepper: Stepper, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    return cycle([random_input(stepper.data_input, 1, rng) for _ in range(256)])


# --- measuring ---------------------------------------------------------------------------------------


def bench_model(
    path: str | os.PathLike, settings: BenchSettings, *, label: str | None = None, torch_model=None
) -> ModelBench:
    """Measure the stepper on the model at ``path`` beside the floor and the baselines (see the module
    docstring). ``torch_model``: the RecurrentModel with the same weights, when the caller has it (else it
    is read back from the file)."""
    path = Path(path)
    result = ModelBench(
        label or str(path), path, path.stat().st_size, settings.pool_streams, settings.silence_steps
    )
    stepper = Stepper(path, threads=settings.threads, **settings.stepper_options)
    calls = {"stepper": step_call(stepper, 1, settings.seed)}
    calls.update(_comparisons(path, stepper, settings, torch_model, result.notes))
    with tempfile.TemporaryDirectory(prefix="edgernn-bench-c-") as scratch:
        native = _c_path(path, stepper, settings, Path(scratch), result.notes)
        with _maybe_torch_threads(settings.threads, "baseline_torch" in calls):
            timings = _interleaved(calls, settings, batched=native)
    for name in PATHS:
        if name in timings:
            result.timings_us[name] = timings[name]
            result.paths[name] = stats_of(timings[name], settings.warmup)
    if stepper.info is not None:
        _fast_paths(result, stepper, settings)
    if settings.paced_hz:
        result.paced = bench_paced(stepper, settings.paced_hz, steps=settings.steps, seed=settings.seed)
    if settings.cold_start:
        result.cold_start = measure_cold_start(path, stepper_options=settings.stepper_options)
    return result


@contextmanager
def _maybe_torch_threads(threads: int, needed: bool) -> Iterator[None]:
    if not needed:
        yield
        return
    with _torch_threads(threads):
        yield


def _comparisons(
    path: Path, stepper: Stepper, settings: BenchSettings, torch_model, notes: list[str]
) -> dict[str, Callable[[], object]]:
    calls: dict[str, Callable[[], object]] = {}
    if stepper.info is None:
        notes.append("no floor or baselines: the model has no edgernn metadata")
        return calls
    try:
        calls["floor"] = step_call(Stepper(floor_model(path), threads=settings.threads), 1, settings.seed)
    except ImportError:
        notes.append("no floor: building it needs onnx (pip install 'edgernn[train]')")
    if stepper.info.extra.get("front_end") is not None:
        return _front_end_paths(path, settings, calls, notes)
    plain = _plain_or_note(path, torch_model, notes)
    if plain is not None:
        calls["baseline_onnx"] = _baseline_onnx(
            plain, stepper.info, settings.threads, _inputs(stepper, settings.seed)
        )
        calls["baseline_torch"] = _baseline_torch(plain, stepper.info, _inputs(stepper, settings.seed))
    return calls


def _front_end_paths(
    path: Path, settings: BenchSettings, calls: dict[str, Callable[[], object]], notes: list[str]
) -> dict[str, Callable[[], object]]:
    """A model with a front end in its step (a keyword model): its front end alone as a path of its own
    (``edgernn.bench_front_end``); no baselines (its PyTorch module reads log-mel frames, the step raw
    samples)."""
    from edgernn.bench_front_end import front_end_model

    notes.append(
        "no baselines: the step takes raw samples and computes its front end, the PyTorch module reads log-mel "
        "frames; front_end: the front end's nodes alone, through the same call path (the floor's cost in it too)"
    )
    alone = front_end_model(path)
    if alone is not None:
        calls["front_end"] = step_call(Stepper(alone, threads=settings.threads), 1, settings.seed)
    return calls


def _plain_or_note(path: Path, torch_model, notes: list[str]):
    try:
        import torch  # noqa: F401
    except ImportError:
        notes.append("no baselines: they need torch (pip install 'edgernn[train]')")
        return None
    if torch_model is None:
        try:
            torch_model = torch_model_from_onnx(path)
        except (KeyError, ValueError) as exc:
            notes.append(
                f"no baselines: the weights cannot be read back from {path.name} ({exc}); pass --run"
            )
            return None
    return _plain_module(torch_model.eval())


def _interleaved(
    calls: dict[str, Callable[[], object]],
    settings: BenchSettings,
    counts: dict[str, int] | None = None,
    batched: dict[str, Callable[[int], np.ndarray]] | None = None,
) -> dict[str, np.ndarray]:
    """Warm every call up, then time them in ``settings.rounds`` interleaved rounds; ``counts``: timed
    calls per name (default ``settings.steps``), warm-up scaled alike. ``batched``: paths that time a
    round's N steps themselves (returning N times; they warm up on their own). Per call, microseconds."""
    batched = batched or {}
    counts = counts or dict.fromkeys([*calls, *batched], settings.steps)
    for name, call in calls.items():
        time_calls(call, 1, max(1, settings.warmup * counts[name] // settings.steps))
    timings: dict[str, list[np.ndarray]] = {name: [] for name in [*calls, *batched]}
    for round_index in range(max(1, settings.rounds)):
        for name in timings:
            share = np.array_split(np.arange(counts[name]), max(1, settings.rounds))[round_index]
            if len(share) and name in calls:
                timings[name].append(time_calls(calls[name], len(share), 0))
            elif len(share):
                timings[name].append(batched[name](len(share)))
    return {name: np.concatenate(parts) for name, parts in timings.items()}


def _c_path(
    path: Path, stepper: Stepper, settings: BenchSettings, scratch: Path, notes: list[str]
) -> dict[str, Callable[[int], np.ndarray]]:
    """The ``c`` path: the model's generated C built with ``-O3 -march=native`` and a step benchmark
    timed in C. Left out with a note when there is no C compiler or the model cannot be generated."""
    if not settings.c_path or stepper.info is None:
        return {}
    try:
        from edgernn.export.c.targets import CStepBench, ToolchainError
    except ImportError as exc:
        notes.append(f"no c path: the C generator needs the export extra ({exc})")
        return {}
    try:
        bench = CStepBench.build(path, scratch, warmup=settings.warmup)
    except ToolchainError as exc:
        notes.append(f"no c path: {exc}")
        return {}
    except EdgeRNNError as exc:
        notes.append(f"no c path: the C generator refused the model ({' '.join(str(exc).split())[:200]})")
        return {}
    return {"c": bench.time_steps}


def _fast_paths(result: ModelBench, stepper: Stepper, settings: BenchSettings) -> None:
    """Stepper.run per step (chunk graph) and the pool per stream-step, interleaved with plain steps so
    their ratios to a step hold, each with as many calls as ``settings.steps`` steps take (at least 20);
    then silence."""
    steps = result.chunk_steps = stepper.chunk_steps
    calls = {"step": step_call(stepper, 1, settings.seed)}
    if steps is not None:
        calls["run"] = run_call(stepper, steps, settings.seed)
    else:
        result.notes.append("no chunk graph next to the model: run() steps one at a time")
    calls["pool"] = pool_call(stepper, settings.pool_streams, settings.seed)
    per_call = {"step": 1, "run": steps or 1, "pool": settings.pool_streams}
    counts = {name: max(20, settings.steps // per_call[name]) for name in calls}
    timings = _interleaved(calls, settings, counts)
    stats = {name: stats_of(timings[name], 0, per_call[name]) for name in calls}
    result.step_beside, result.run, result.pool = stats["step"], stats.get("run"), stats["pool"]
    if stepper.info.input.kind == "features":
        result.silence["stepper"] = _silence(stepper, settings)


def _silence(stepper: Stepper, settings: BenchSettings) -> dict[str, float]:
    """p50/p99 of zero-input steps on a fresh stream, and after ``silence_steps`` of them, side by side."""
    calls = {
        "normal": step_call(stepper, 1, settings.seed),
        "silent": silent_call(stepper, settings.silence_steps),
    }
    timings = _interleaved(calls, settings)
    doc = {}
    for name, values in timings.items():
        stats = stats_of(values, settings.warmup)
        doc[f"{name}_p50_us"], doc[f"{name}_p99_us"] = stats.p50_us, stats.p99_us
    return doc


# --- the reference models --------------------------------------------------------------------------------


def reference_models(
    directory: str | os.PathLike, seed: int = 0, shape: dict[str, int] | None = None
) -> list[tuple[str, Path, Any]]:
    """The GRU and LSTM of the README's table (``REFERENCE_SHAPE``: 2 layers of 128, 32 features in, 32
    values out; PyTorch's own initialisation with ``seed``), exported with their chunk graphs into
    ``directory``. Returns (label, path, torch model) for each."""
    import torch

    from edgernn.export import export_model
    from edgernn.models import ModelConfig, RecurrentModel

    shape = shape or REFERENCE_SHAPE
    made = []
    for cell in REFERENCE_CELLS:
        torch.manual_seed(seed)
        config = ModelConfig(cell=cell, input_kind="features", output_kind="values", **shape)
        model = RecurrentModel(config).eval()
        size = f"{shape['num_layers']}x{shape['hidden_size']}"
        path = Path(directory) / f"{cell}-{size}.onnx"
        with _torch_threads(1):
            export_model(model, path)
        made.append((f"{cell.upper()} {size}, {shape['input_size']} features", path, model))
    return made


def decaying_copy(model):
    """The same model, biases zeroed but for a keep-gate bias (GRU z, LSTM f) of 2 and weights halved: its
    state decays slowly on zero input and, unflushed, sticks in denormal floats."""
    import copy

    import torch

    decaying = copy.deepcopy(model)
    hidden = decaying.config.hidden_size
    with torch.no_grad():
        for name, parameter in decaying.rnn.named_parameters():
            if name.startswith("bias"):
                parameter.zero_()
                if name.startswith("bias_hh"):
                    parameter[hidden : 2 * hidden] = 2.0
            else:
                parameter.mul_(0.5)
    return decaying.eval()


def bench_reference(
    settings: BenchSettings, directory: str | os.PathLike | None = None, shape: dict[str, int] | None = None
) -> list[ModelBench]:
    """``bench_model`` on the reference GRU and LSTM, then the silence check on their decaying copies with
    the baselines beside the stepper (the baselines never flush their state). ``directory`` keeps the
    exported models (default: a temporary directory)."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(directory or scratch)
        results = []
        for label, path, model in reference_models(root, settings.seed, shape):
            result = bench_model(path, settings, label=label, torch_model=model)
            result.silence = _silence_with_baselines(root, path.stem, model, settings)
            result.notes.append(
                "silence: on a decaying copy (biases 0 but the keep gate's 2, weights halved), whose state "
                "sinks into denormals in PyTorch; the baselines never flush theirs"
            )
            results.append(result)
        return results


def _silence_with_baselines(
    root: Path, stem: str, model, settings: BenchSettings
) -> dict[str, dict[str, float]]:
    """Each path on the decaying copy: fresh with realistic inputs, and after ``silence_steps`` zero inputs."""
    from edgernn.export import export_model

    decaying = decaying_copy(model)
    path = root / f"{stem}-decaying.onnx"
    with _torch_threads(1):
        export_model(decaying, path, chunk_steps=None)
    stepper = Stepper(path, threads=settings.threads)
    info, plain = stepper.info, _plain_module(decaying)
    silence = cycle([np.zeros((1, decaying.config.input_size), np.float32)])
    paths = {
        "stepper": (step_call(stepper, 1, settings.seed), silent_call(stepper, settings.silence_steps)),
        "baseline_onnx": (
            _baseline_onnx(plain, info, settings.threads, _inputs(stepper, settings.seed)),
            _baseline_onnx(plain, info, settings.threads, silence),
        ),
        "baseline_torch": (
            _baseline_torch(plain, info, _inputs(stepper, settings.seed)),
            _baseline_torch(plain, info, silence),
        ),
    }
    doc = {}
    with _torch_threads(settings.threads):
        for name, (normal, silent) in paths.items():
            if name != "stepper":
                time_calls(silent, 1, settings.silence_steps)  # the baselines' state decays too
            timings = _interleaved({"normal": normal, "silent": silent}, settings)
            doc[name] = {}
            for kind, values in timings.items():
                stats = stats_of(values, settings.warmup)
                doc[name].update({f"{kind}_p50_us": stats.p50_us, f"{kind}_p99_us": stats.p99_us})
    return doc


def _check_run_matches(
    model: str | os.PathLike, run_dir: str | os.PathLike, torch_model, options: dict
) -> None:
    """Refuse a run directory whose model is not the one in ``model`` (another task, size or cell)."""
    info = Stepper(model, **options).info
    config = torch_model.config
    if info is None:
        raise InputError(f"--run: {model} has no edgernn metadata, so it has no run directory to compare")
    wanted = (
        info.cell,
        info.num_layers,
        info.hidden_size,
        info.input.kind,
        info.input.size,
        info.output.size,
    )
    given = (
        config.cell, config.num_layers, config.hidden_size, config.input_kind, config.input_size,
        config.output_size,
    )  # fmt: skip
    if wanted != given or info.stacks:
        names = "(cell, layers, hidden size, input kind, input size, output size)"
        raise InputError(f"--run: {run_dir} holds a model {given} that is not {model}'s {wanted} {names}")


def compare(
    model: str | os.PathLike | None,
    settings: BenchSettings,
    *,
    run_dir: str | os.PathLike | None = None,
    plot: str | os.PathLike | None = None,
    as_json: bool = False,
) -> str:
    """What ``edgernn bench`` prints for one model, or for the reference models when ``model`` is None:
    the text report, or JSON (one model: its document; the reference: ``{"models": [...]}``)."""
    if plot is not None:
        check_plot_path(
            plot
        )  # before measuring: a path that cannot be written is one line, not a minute lost
    if model is None:
        results = bench_reference(settings)
    else:
        torch_model = None
        if run_dir is not None:
            from edgernn.checkpoint import load_checkpoint

            torch_model = load_checkpoint(run_dir).model
            _check_run_matches(model, run_dir, torch_model, settings.stepper_options)
        results = [bench_model(model, settings, torch_model=torch_model)]
    if plot is not None:
        plot_latency(results, plot)
    if as_json:
        context = {"batch_size": 1, "threads": settings.threads, "rounds": settings.rounds}
        docs = [result.to_dict() for result in results]
        doc = {**docs[0], **context} if model is not None else {**context, "models": docs}
        return json.dumps(doc, indent=2)
    return format_bench(results, settings) + (f"\n\nwrote {plot}" if plot is not None else "")


# --- several models side by side (edgernn bench A.onnx B.onnx, --no-baselines, --batch-size) -----------


def compare_steppers(
    models: list[str | os.PathLike],
    settings: BenchSettings,
    *,
    batch_size: int = 1,
    plot: str | os.PathLike | None = None,
    as_json: bool = False,
) -> str:
    """What ``edgernn bench`` prints for models stepped side by side (e.g. float32 next to int8): each
    stepper's step latency at ``batch_size``, interleaved in ``settings.rounds`` rounds so the ratios
    hold, the file sizes, optionally a paced loop per model, and a plot with every model on one pair of
    axes. Text table, or JSON (one model: its document; several: ``{"models": [...]}``)."""
    if plot is not None:
        check_plot_path(plot)
    paths = [Path(m) for m in models]
    steppers = [Stepper(path, threads=settings.threads, **settings.stepper_options) for path in paths]
    names = _unique_names(paths)
    calls = {name: step_call(s, batch_size, settings.seed) for name, s in zip(names, steppers, strict=True)}
    timings = _interleaved(calls, settings)
    docs = []
    for name, path, stepper in zip(names, paths, steppers, strict=True):
        doc = {"model": str(path), "size_bytes": path.stat().st_size}
        doc["stepper"] = stats_of(timings[name], settings.warmup).to_dict()
        if settings.paced_hz:
            paced = bench_paced(stepper, settings.paced_hz, steps=settings.steps, batch_size=batch_size)
            doc["paced"] = paced.to_dict()
        docs.append(doc)
    if plot is not None:
        plot_side_by_side(timings, plot, batch_size)
    context = {"batch_size": batch_size, "threads": settings.threads, "rounds": settings.rounds}
    if as_json:
        return json.dumps({**docs[0], **context} if len(docs) == 1 else {**context, "models": docs}, indent=2)
    head = (
        f"{', '.join(map(str, paths))}: {settings.steps} steps after {settings.warmup} warm-up, "
        f"batch {batch_size}, {settings.threads} thread(s), interleaved in {settings.rounds} rounds"
    )
    lines = [head, format_side_by_side(docs)]
    lines += [f"paced, {Path(d['model']).name}: {paced_text(d['paced'])}" for d in docs if "paced" in d]
    if plot is not None:
        lines.append(f"wrote {plot}")
    return "\n".join(lines)


def _unique_names(paths: list[Path]) -> list[str]:
    """File names, or paths where names repeat, numbered where paths repeat too."""
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    if len(set(names)) < len(names):
        names = [f"{name} ({i + 1})" for i, name in enumerate(names)]
    return names
