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

import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import cycle
from pathlib import Path
from typing import Any

import numpy as np

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
from edgernn.runtime.contract import METADATA_KEY, ModelInfo, parse_info, unsealed
from edgernn.runtime.errors import EdgeRNNError, InputError

PATHS = ("baseline_onnx", "baseline_torch", "floor", "stepper", "c")
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


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_model_from_onnx(path: str | os.PathLike):
    """Rebuild the RecurrentModel of an edgernn float32 step model from its weights (same maths: the
    combined biases go into ``bias_ih``). Raises KeyError or ValueError when the graph is not one the
    exporter wrote (quantized, or exported from your own module)."""
    import onnx
    import torch
    from onnx import numpy_helper

    from edgernn.models import ModelConfig, RecurrentModel

    proto = onnx.load(str(path))
    weights = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    info = _read_info(proto)
    config = _config_from(info, weights, ModelConfig)
    model = RecurrentModel(config).eval()
    state = {name: torch.from_numpy(np.array(value)) for name, value in _torch_weights(info, weights).items()}
    model.load_state_dict({**model.state_dict(), **state})
    return model


def _config_from(info: ModelInfo, weights: dict[str, np.ndarray], config_class):
    embedding = weights.get("embedding.weight")
    return config_class(
        cell=info.cell,
        input_kind=info.input.kind,
        input_size=info.input.size,
        hidden_size=info.hidden_size,
        num_layers=info.num_layers,
        output_size=info.output.size,
        output_kind=info.output.kind,
        embedding_size=embedding.shape[1] if embedding is not None else 32,
        input_mean=info.input.mean,
        input_std=info.input.std,
        output_mean=info.output.mean,
        output_std=info.output.std,
    )


def _torch_weights(info: ModelInfo, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    state = {"head.weight": weights["head.weight_t"].T, "head.bias": weights["head.bias"]}
    if info.input.kind == "tokens":
        state["embedding.weight"] = weights["embedding.weight"]
    for layer in range(info.num_layers):
        state[f"rnn.weight_ih_l{layer}"] = weights[f"l{layer}.ih.weight_t"].T
        state[f"rnn.weight_hh_l{layer}"] = weights[f"l{layer}.hh.weight_t"].T
        state[f"rnn.bias_ih_l{layer}"] = weights[f"l{layer}.ih.bias"]
        hh_bias = weights.get(f"l{layer}.hh.bias")  # only GRU keeps b_hh apart (r scales its n part)
        state[f"rnn.bias_hh_l{layer}"] = (
            np.zeros_like(weights[f"l{layer}.ih.bias"]) if hh_bias is None else hh_bias
        )
    for name in ("input.mean", "input.std", "output.mean", "output.std"):
        if name in weights:
            state[name.replace(".", "_")] = weights[name]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def _plain_module(model):
    """What a user writes around the same weights: embedding or features -> nn.GRU/LSTM/RNN -> head, one
    step per call, state in PyTorch's own ``(layers, batch, hidden)``."""
    from torch import nn

    class PlainStep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x, *state):
            features = self.model._embed(x.unsqueeze(1))  # (B, 1, E)
            out, new = self.model.rnn(features, state if len(state) == 2 else state[0])
            y = self.model.head(out[:, 0])
            if self.model.output_mean is not None:
                y = y * self.model.output_std + self.model.output_mean
            return (y, *new) if isinstance(new, tuple) else (y, new)

    return PlainStep().eval()


def _state_names(info: ModelInfo) -> list[str]:
    return [s.input for s in info.states]


def _baseline_onnx(
    plain, info: ModelInfo, threads: int, inputs: Iterator[np.ndarray]
) -> Callable[[], object]:
    import onnxruntime as ort
    import torch

    names = _state_names(info)
    example_x = torch.from_numpy(next(inputs))
    state = [np.zeros((info.num_layers, 1, info.hidden_size), np.float32) for _ in names]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        torch.onnx.export(
            plain,
            (example_x, *(torch.from_numpy(s) for s in state)),
            buffer,
            input_names=["x", *names],
            output_names=["y", *(f"{n}_next" for n in names)],
            opset_version=17,
            dynamo=False,
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = dict(zip(names, state, strict=True))

    def step() -> object:
        feed["x"] = next(inputs)
        outputs = session.run(None, feed)
        feed.update(zip(names, outputs[1:], strict=True))
        return outputs[0]

    return step


def _baseline_torch(plain, info: ModelInfo, inputs: Iterator[np.ndarray]) -> Callable[[], object]:
    import torch

    tensors = cycle([torch.from_numpy(next(inputs)) for _ in range(64)])
    state = [torch.zeros(info.num_layers, 1, info.hidden_size) for _ in info.states]

    def step() -> object:
        nonlocal state
        with torch.inference_mode():
            y, *state = plain(next(tensors), *state)
        return y

    return step


def floor_model(path: str | os.PathLike) -> bytes:
    """An edgernn model with the same inputs, outputs and metadata as the one at ``path`` that does no
    work: the states pass through, y is x itself when the shapes allow, else one tiny op (MatMul with a
    zero matrix, or a Gather from one). Needs onnx."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(path), load_external_data=False)
    info = _read_info(proto)
    nodes, initializers = [], []
    for spec in info.states:
        nodes.append(helper.make_node("Identity", [spec.input], [spec.output]))
    size = info.output.size
    if info.input.kind == "tokens":
        initializers.append(numpy_helper.from_array(np.zeros((info.input.size, size), np.float32), "zeros"))
        nodes.append(helper.make_node("Gather", ["zeros", "x"], ["y"], axis=0))
    elif info.input.size == size:
        nodes.append(helper.make_node("Identity", ["x"], ["y"]))
    else:
        initializers.append(numpy_helper.from_array(np.zeros((info.input.size, size), np.float32), "zeros"))
        nodes.append(helper.make_node("MatMul", ["x", "zeros"], ["y"]))
    graph = helper.make_graph(nodes, "floor", proto.graph.input, proto.graph.output, initializers)
    floor = helper.make_model(graph, opset_imports=proto.opset_import, ir_version=proto.ir_version)
    props = {p.key: p.value for p in proto.metadata_props}
    props[METADATA_KEY] = unsealed(info).to_json()  # another graph: the checksum is not its own
    helper.set_model_props(floor, props)
    return floor.SerializeToString()


def _read_info(proto) -> ModelInfo:
    """The edgernn metadata of an onnx ModelProto; KeyError if it has none."""
    return parse_info({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])


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
    plain = _plain_or_note(path, torch_model, notes)
    if plain is not None:
        calls["baseline_onnx"] = _baseline_onnx(
            plain, stepper.info, settings.threads, _inputs(stepper, settings.seed)
        )
        calls["baseline_torch"] = _baseline_torch(plain, stepper.info, _inputs(stepper, settings.seed))
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


# --- showing ----------------------------------------------------------------------------------------------


def format_bench(results: list[ModelBench], settings: BenchSettings) -> str:
    """The text report: per model, a table of the paths, the ratios, then the fast paths and cold start."""
    blocks = [
        f"{settings.steps} timed steps per path after {settings.warmup} warm-up, batch 1, "
        f"{settings.threads} thread(s), interleaved in {settings.rounds} rounds; mean steps/s = timed steps "
        "over their total time, the other columns percentiles"
    ]
    blocks += [_format_model(result) for result in results]
    return "\n\n".join(blocks)


def _format_model(result: ModelBench) -> str:
    lines = [f"{result.label}  ({result.size_bytes / 1024:.0f} KiB)"]
    lines.append(f"{'path':<16}{'p50 us':>9}{'p90 us':>9}{'p99 us':>9}{'max us':>10}{'mean steps/s':>14}")
    for name in PATHS:
        if name in result.paths:
            s = result.paths[name]
            lines.append(
                f"{name:<16}{s.p50_us:>9.1f}{s.p90_us:>9.1f}{s.p99_us:>9.1f}{s.max_us:>10.1f}{s.steps_per_s:>14,.0f}"
            )
    lines += _format_ratios(result)
    lines += _format_fast_paths(result)
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


def _format_ratios(result: ModelBench) -> list[str]:
    ratios = result.ratios()
    against = [f"{ratios[f'stepper_vs_{n}']:.2f}x {n}" for n in PATHS[:3] if f"stepper_vs_{n}" in ratios]
    lines = [f"stepper p50 = {', '.join(against)}" if against else "stepper p50: nothing to compare with"]
    lines.append(f"stepper p99 = {ratios['stepper_p99_vs_p50']:.2f}x its p50")
    if "c_vs_baseline_onnx" in ratios:
        lines.append(
            f"c p50 = {ratios['c_vs_baseline_onnx']:.2f}x baseline_onnx, {ratios['c_vs_stepper']:.2f}x stepper"
        )
    return lines


def _format_fast_paths(result: ModelBench) -> list[str]:
    lines = []
    step = (result.step_beside or result.paths["stepper"]).p50_us
    if result.run is not None:
        lines.append(
            f"run, {result.chunk_steps} steps per call: {result.run.p50_us:.1f} us per step p50 "
            f"= {result.run.p50_us / step:.2f}x a step"
        )
    if result.pool is not None:
        lines.append(
            f"pool of {result.pool_streams} streams: {result.pool.p50_us:.2f} us per stream-step p50 "
            f"= {result.pool.p50_us / step:.3f}x a step"
        )
    for name, doc in result.silence.items():
        lines.append(
            f"after {result.silence_steps:,} silent steps, {name}: p99 {doc['silent_p99_us']:.1f} us against {doc['normal_p99_us']:.1f} us "
            f"fresh = {doc['silent_p99_us'] / doc['normal_p99_us']:.2f}x (p50 {doc['silent_p50_us']:.1f} / "
            f"{doc['normal_p50_us']:.1f} us)"
        )
    if result.paced is not None:
        lines.append(_format_paced(result.paced))
    if result.cold_start is not None:
        c = result.cold_start
        lines.append(
            f"cold start (fresh interpreter, median of {c.runs}): import {c.import_s:.3f} s + load {c.load_s:.3f} s "
            f"+ first step {c.first_step_s * 1000:.1f} ms = {c.total_s:.3f} s, peak RSS {c.peak_rss_mb:.0f} MB, "
            f"torch {'imported' if c.torch_imported else 'never imported'}"
        )
    return lines


def _format_paced(paced: PacedStats) -> str:
    s, steps = paced.latency, paced.latency.steps
    return (
        f"paced at {paced.rate_hz:g} Hz: {steps} steps, latency p50 {s.p50_us:.1f} / p99 {s.p99_us:.1f} / "
        f"max {s.max_us:.1f} us, deadline misses {paced.missed_deadlines} ({100 * paced.missed_deadlines / steps:.2f}%), "
        f"worst overrun {paced.worst_overrun_us:.1f} us, start delay p99 {paced.start_delay_p99_us:.1f} us"
    )


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
    lines += [f"paced, {Path(d['model']).name}: {_paced_text(d['paced'])}" for d in docs if "paced" in d]
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


def _paced_text(doc: dict[str, Any]) -> str:
    latency, steps = doc["latency"], doc["latency"]["steps"]
    return (
        f"{doc['rate_hz']:g} Hz, {steps} steps: latency p50 {latency['p50_us']:.1f} / p99 {latency['p99_us']:.1f} us, "
        f"deadline misses {doc['missed_deadlines']} ({100 * doc['missed_deadlines'] / steps:.2f}%)"
    )


def format_side_by_side(docs: list[dict[str, Any]]) -> str:
    """One row per model; with several, the file size and p50 against the first model too. steps/s is
    the mean rate (timed steps over their total time); the other columns are percentiles."""
    several = len(docs) > 1
    name = max(len(Path(d["model"]).name) for d in docs) + 2 if several else 10
    head = f"{'model' if several else 'path':<{name}}" + ("" if not several else f"{'KiB':>9}")
    lines = [
        head
        + f"{'p50 us':>10}{'p90 us':>10}{'p99 us':>10}{'max us':>10}{'mean steps/s':>14}"
        + ("  p50 vs first" if several else "")
    ]
    first = docs[0]["stepper"]["p50_us"]
    for d in docs:
        s = d["stepper"]
        label = Path(d["model"]).name if several else "stepper"
        size = f"{d['size_bytes'] / 1024:>9.0f}" if several else ""
        tail = f"  {s['p50_us'] / first:.2f}x" if several else ""
        lines.append(
            f"{label:<{name}}{size}{s['p50_us']:>10.1f}{s['p90_us']:>10.1f}{s['p99_us']:>10.1f}{s['max_us']:>10.1f}{s['steps_per_s']:>14,.0f}{tail}"
        )
    return "\n".join(lines)
