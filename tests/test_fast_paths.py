"""The fast paths: chunk graphs, denormal-safe state, stream pools, and the benchmark that measures them.

Numbers only here, never timings: speed claims live in ``edgernn bench`` and benchmarks/stepper_bench.py.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from edgernn.export import export_model
from edgernn.models import ModelConfig, RecurrentModel
from edgernn.runtime import Stepper
from edgernn.runtime.chunk import chunk_path
from edgernn.runtime.errors import ContractError, InputError

DENORMAL_LIMIT = np.finfo(np.float32).tiny  # 1.18e-38: below it (and not 0), a float32 is denormal


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Exports check against PyTorch; on a busy machine its spinning thread pool turns 0.03 s into seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def feature_model(cell: str, hidden_size: int = 16, seed: int = 0, **config) -> RecurrentModel:
    torch.manual_seed(seed)
    settings = dict(
        cell=cell, input_kind="features", input_size=4, hidden_size=hidden_size, num_layers=2, output_size=3,
        output_kind="values", input_mean=(1.0, -2.0, 0.5, 10.0), input_std=(0.5, 2.0, 1.0, 4.0),
    )  # fmt: skip
    return RecurrentModel(ModelConfig(**{**settings, **config})).eval()


def token_model(cell: str = "gru", seed: int = 0) -> RecurrentModel:
    torch.manual_seed(seed)
    config = ModelConfig(
        cell=cell, input_size=11, hidden_size=16, num_layers=2, output_size=11, embedding_size=8
    )
    return RecurrentModel(config).eval()


def torch_run(model: RecurrentModel, xs: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    with torch.no_grad():
        ys, state = model(torch.from_numpy(xs))
    return ys.numpy(), tuple(s.numpy() for s in state)


def stepped(stepper: Stepper, xs: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """xs (B, T, ...) through a new stream one step at a time: the reference for the chunk graph."""
    stream = stepper.new_stream(xs.shape[0])
    ys = np.stack([stream.step(xs[:, t]) for t in range(xs.shape[1])], axis=1)
    return ys, stream.state


def features(batch: int, steps: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, steps, 4)) * 3 + 1).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """A GRU and an LSTM feature model and a GRU token model, exported with their chunk graphs."""
    root = tmp_path_factory.mktemp("fast_paths")
    models = {
        "gru": feature_model("gru"),
        "lstm": feature_model("lstm", seed=1),
        "tokens": token_model(),
        "rnn_tanh": feature_model("rnn_tanh", seed=2),
        "rnn_relu": feature_model("rnn_relu", seed=3, num_layers=1),
    }
    reports = {name: export_model(m, root / f"{name}.onnx") for name, m in models.items()}
    return {name: (models[name], reports[name]) for name in models}


# --- chunk graphs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gru", "lstm", "tokens", "rnn_tanh", "rnn_relu"])
def test_the_exporter_writes_a_verified_chunk_graph_next_to_the_model(exported, name):
    model, report = exported[name]
    assert report.chunk_path == chunk_path(report.path) and report.chunk_path.is_file()
    assert set(report.chunk_parity.errors) == {"chunk_one_call", "chunk_closed_loop", "chunk_after_reset"}
    assert report.chunk_parity.max_error() < 1e-4
    proto = onnx.load(str(report.chunk_path))
    ops = [node.op_type for node in proto.graph.node]
    recurrent = [
        op for op in ops if op in {"GRU", "LSTM", "RNN"}
    ]  # one ONNX RNN op per layer, in PyTorch's gates
    assert (
        recurrent == [{"gru": "GRU", "lstm": "LSTM"}.get(model.config.cell, "RNN")] * model.config.num_layers
    )
    assert not set(ops) & {"If", "Loop", "Scan"}
    assert proto.ir_version <= 10 and all(o.version <= 18 for o in proto.opset_import)
    x = proto.graph.input[0].type.tensor_type.shape.dim
    assert x[0].dim_param == "batch" and x[1].dim_value == 32


@pytest.mark.parametrize("name", ["gru", "lstm", "tokens", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("batch", [1, 3])
def test_run_through_the_chunk_graph_equals_stepping_and_pytorch(exported, name, batch):
    model, report = exported[name]
    stepper = Stepper(report.path)
    assert stepper.chunk_steps == 32
    if name == "tokens":
        xs = np.random.default_rng(2).integers(0, 11, size=(batch, 70))
    else:
        xs = features(batch, 70)  # two whole chunks, then 6 single steps
    stream = stepper.new_stream(batch)
    ys = stream.run(xs)
    ys_stepped, state_stepped = stepped(stepper, xs)
    np.testing.assert_allclose(ys, ys_stepped, rtol=1e-5, atol=1e-5)
    for name_, value in state_stepped.items():
        np.testing.assert_allclose(stream.state[name_], value, rtol=1e-5, atol=1e-6)
    ys_torch, state_torch = torch_run(model, xs)
    np.testing.assert_allclose(ys, ys_torch, rtol=1e-4, atol=1e-4)
    for spec, value in zip(stepper.info.states, state_torch, strict=True):
        np.testing.assert_allclose(stream.state[spec.input], value, rtol=1e-4, atol=1e-5)


def test_a_chunk_graph_from_other_weights_is_ignored_with_a_warning(exported, tmp_path):
    _, report = exported["gru"]
    path = export_model(feature_model("gru", seed=7), tmp_path / "other.onnx", chunk_steps=None).path
    shutil.copy(report.chunk_path, chunk_path(path))  # same shapes, other weights
    stepper = Stepper(path)
    xs = features(1, 40)
    with pytest.warns(UserWarning, match="not exported from the same weights"):
        ys = stepper.run(xs[0])
    assert stepper.chunk_steps is None
    np.testing.assert_array_equal(ys, stepped(Stepper(path, chunk_model=False), xs)[0][0])
    with pytest.raises(ContractError, match="not exported from the same weights"):
        Stepper(path, chunk_model=report.chunk_path).run(xs[0])


def test_a_chunk_graph_of_another_model_shape_is_refused(exported):
    _, gru = exported["gru"]
    _, lstm = exported["lstm"]
    with pytest.raises(ContractError, match="does not describe this step model"):
        _ = Stepper(gru.path, chunk_model=lstm.chunk_path).chunk_steps


def test_a_chunk_graph_is_not_a_step_model(exported):
    _, report = exported["gru"]
    with pytest.raises(ContractError, match="this is a chunk graph .32 steps per call."):
        Stepper(report.chunk_path)


def test_exporting_without_a_chunk_graph_removes_a_stale_one(exported, tmp_path):
    _, report = exported["gru"]
    path = tmp_path / "model.onnx"
    shutil.copy(report.chunk_path, chunk_path(path))
    assert export_model(feature_model("gru", seed=3), path, chunk_steps=None).chunk_path is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert Stepper(path).chunk_steps is None


def test_run_state_and_results_do_not_depend_on_where_chunks_start(exported):
    _, report = exported["lstm"]
    stepper = Stepper(report.path)
    xs = features(2, 100, seed=4)
    whole = stepper.new_stream(2).run(xs)
    pieces = stepper.new_stream(2)
    parts = [pieces.run(xs[:, a:b]) for a, b in ((0, 5), (5, 45), (45, 100))]  # chunks start mid-way
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=1e-5, atol=1e-5)


# --- denormal-safe state -----------------------------------------------------------------------------------


def decaying_model(cell: str) -> RecurrentModel:
    """A model whose state decays towards zero on zero input, slowly, and sticks in denormals in PyTorch."""
    model = feature_model(cell, hidden_size=16, seed=0)
    hidden = model.config.hidden_size
    with torch.no_grad():
        for name, parameter in model.rnn.named_parameters():
            if name.startswith("bias"):
                parameter.zero_()
                if name.startswith("bias_hh"):
                    parameter[hidden : 2 * hidden] = 2.0  # GRU z / LSTM f: keep most of the old state
            else:
                parameter.mul_(0.5)
    return model


def denormals(array: np.ndarray) -> int:
    return int(((array != 0) & (np.abs(array) < DENORMAL_LIMIT)).sum())


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_after_10000_silent_steps_the_state_is_flushed_and_matches_pytorch(tmp_path, cell):
    model = decaying_model(cell)
    path = export_model(model, tmp_path / "decay.onnx").path
    mean = np.float32(model.config.input_mean)
    xs = np.broadcast_to(mean, (1, 10_050, 4)).copy()  # raw input equal to the mean: zero after normalising
    xs[:, :50] = features(1, 50)
    ys_torch, state_torch = torch_run(model, xs)
    assert all(denormals(s) > 0 for s in state_torch)  # PyTorch's state is stuck in denormals
    stepper = Stepper(path)
    ys = stepper.run(xs[0])  # through the chunk graph
    stream = stepper.new_stream()
    ys_stepped = np.stack([stream.step(x) for x in xs[0]])  # and step by step
    for got, state in ((ys, stepper.state), (ys_stepped, stream.state)):
        np.testing.assert_allclose(got, ys_torch[0], rtol=1e-4, atol=1e-5)
        for spec, want in zip(stepper.info.states, state_torch, strict=True):
            assert denormals(state[spec.input]) == 0
            np.testing.assert_allclose(state[spec.input], want, rtol=1e-4, atol=1e-30)


# --- stream pools (runtime only: hand-built models from conftest) -------------------------------------------


def test_pool_streams_join_leave_and_reset_alone(feature_model):
    stepper = Stepper(feature_model.path)
    pool = stepper.new_pool(capacity=3)
    a, b = pool.join(), pool.join()
    assert pool.streams == [a, b] and len(pool) == 2 and a in pool
    x = np.ones(4, np.float32)
    pool.step({a: x, b: x})
    before_b = pool.state(b)
    pool.reset(a)
    np.testing.assert_array_equal(pool.state(a)["h"], np.zeros((1, 2, 5), np.float32))
    np.testing.assert_array_equal(pool.state(b)["c"], before_b["c"])  # b untouched
    c = pool.join()
    pool.leave(a)  # c moves into a's row
    assert pool.streams == [c, b] and a not in pool
    np.testing.assert_array_equal(pool.state(b)["h"], before_b["h"])
    assert pool.join() not in (a, b, c)  # ids are never reused
    with pytest.raises(InputError, match="the pool is full: 3 streams"):
        pool.join()
    with pytest.raises(InputError, match=f"unknown stream id {a}"):
        pool.reset(a)


def test_pool_steps_equal_independent_streams(token_model):
    stepper = Stepper(token_model.path)
    pool = stepper.new_pool(capacity=8)
    rng = np.random.default_rng(5)
    streams, ids = {}, []
    for t in range(30):
        if t % 4 == 0 and len(ids) < 8:  # join now and then
            ids.append(pool.join())
            streams[ids[-1]] = stepper.new_stream()
        if t % 7 == 6:  # leave now and then
            gone = ids.pop(int(rng.integers(len(ids))))
            pool.leave(gone)
            del streams[gone]
        if t == 20:
            pool.reset(ids[0])
            streams[ids[0]].reset()
        stepping = [i for i in ids if rng.random() < 0.7]  # some streams sit a step out
        xs = {i: int(rng.integers(0, 9)) for i in stepping}
        ys = pool.step(xs)
        assert sorted(ys) == sorted(stepping)
        for i in stepping:
            np.testing.assert_allclose(ys[i], streams[i].step(xs[i]), rtol=1e-5, atol=1e-6)
        for i in ids:
            np.testing.assert_allclose(pool.state(i)["h"], streams[i].state["h"], rtol=1e-5, atol=1e-6)


GOOD = np.ones(4)


@pytest.mark.parametrize(
    ("make_xs", "message"),
    [
        (lambda a, b: {a: GOOD, 99: GOOD}, "unknown stream id(s) [99]"),
        (lambda a, b: "ab", "xs: expected a dict of stream id -> x, got str"),
        (lambda a, b: {a: GOOD, b: np.array([0, 0, np.nan, 0])}, "stream {b}: x: expected finite values"),
        (lambda a, b: {a: np.zeros(3), b: GOOD}, "stream {a}: x: expected features of shape (1, 4) or (4,)"),
    ],
)
def test_pool_errors_leave_every_state_as_it_was(feature_model, make_xs, message):
    pool = Stepper(feature_model.path).new_pool(4)
    a, b = pool.join(), pool.join()
    pool.step({a: GOOD, b: -GOOD})
    before = {i: pool.state(i) for i in (a, b)}
    with pytest.raises(InputError) as err:
        pool.step(make_xs(a, b))
    assert message.format(a=a, b=b) in str(err.value)
    for i in (a, b):
        for name, value in before[i].items():
            np.testing.assert_array_equal(pool.state(i)[name], value)


def test_pool_restore_and_foreign_models(feature_model, foreign_model):
    stepper = Stepper(feature_model.path)
    stream = stepper.new_stream()
    stream.step(np.ones(4))
    pool = stepper.new_pool(2)
    a = pool.join()
    pool.restore(a, stream.snapshot())
    np.testing.assert_allclose(pool.step({a: np.ones(4)})[a], stream.step(np.ones(4)), rtol=1e-6)
    with pytest.raises(InputError, match="invalid state"):
        pool.restore(a, {"h": np.zeros((1, 2, 5))})
    vad = Stepper(foreign_model.path, state_map={"state": "stateN"}, constants={"sr": 16000})
    pool, single = vad.new_pool(3), vad.new_stream()
    ids = [pool.join() for _ in range(3)]
    x = np.random.default_rng(0).standard_normal(64).astype(np.float32)
    for _ in range(3):
        ys = pool.step({i: x for i in ids})
        want = single.step(x)
    assert pool.state(ids[1])["state"].shape == (2, 1, 16)  # the batch axis is the graph's second
    for i in ids:
        np.testing.assert_allclose(ys[i], want, rtol=1e-5, atol=1e-6)


# --- the benchmark: it runs and reports what it says (never how fast) ----------------------------------------


def run_cli(*args):
    from click.testing import CliRunner

    from edgernn.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def test_bench_json_has_every_path_and_ratio(exported, tmp_path):
    _, report = exported["gru"]
    plot = tmp_path / "latency.png"
    result = run_cli(
        "bench", report.path, "--steps", "60", "--warmup", "5", "--paced", "2000", "--plot", plot, "--json"
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    for path in ("baseline_onnx", "baseline_torch", "floor", "stepper"):
        assert doc[path]["steps"] == 60 and 0 < doc[path]["p50_us"] <= doc[path]["p99_us"]
    assert {"stepper_vs_baseline_onnx", "stepper_vs_baseline_torch", "stepper_vs_floor"} <= set(doc["ratios"])
    assert doc["run"]["steps_per_call"] == 32 and doc["pool"]["streams"] == 256
    assert set(doc["silence"]["stepper"]) == {
        "normal_p50_us",
        "normal_p99_us",
        "silent_p50_us",
        "silent_p99_us",
    }
    paced = doc["paced"]
    assert paced["rate_hz"] == 2000 and paced["latency"]["steps"] == 60
    assert 0 <= paced["missed_deadlines"] <= 60 and paced["worst_overrun_us"] >= 0
    cold = doc["cold_start"]
    assert cold["torch_imported"] is False and cold["onnx_imported"] is False
    assert 0 < cold["import_s"] < cold["total_s"] and cold["peak_rss_mb"] > 10
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_table_and_its_limits(exported):
    _, report = exported["tokens"]
    result = run_cli("bench", report.path, "--steps", "40", "--warmup", "5")
    assert result.exit_code == 0, result.output
    for text in (
        "baseline_onnx",
        "baseline_torch",
        "floor",
        "stepper p50 =",
        "pool of 256 streams",
        "cold start",
    ):
        assert text in result.stdout
    assert "after silence" not in result.stdout  # silence is zero features: not for token models
    result = run_cli("bench", "--no-baselines")  # several models, --paced and --plot work (test_cli)
    assert result.exit_code == 2 and "give MODEL" in result.output


def test_bench_reference_models_side_by_side(tmp_path):
    from edgernn.benchmark import BenchSettings, bench_reference

    settings = BenchSettings(steps=30, warmup=3, pool_streams=8, silence_steps=200, cold_start=False)
    shape = {"num_layers": 2, "hidden_size": 16, "input_size": 4, "output_size": 4}
    results = bench_reference(settings, tmp_path, shape)
    assert [r.label for r in results] == ["GRU 2x16, 4 features", "LSTM 2x16, 4 features"]
    for result in results:
        assert set(result.paths) - {"c"} == {"baseline_onnx", "baseline_torch", "floor", "stepper"}
        assert "c" in result.paths or any(note.startswith("no c path") for note in result.notes)
        assert set(result.silence) == {"stepper", "baseline_onnx", "baseline_torch"}
        doc = result.to_dict()
        assert doc["ratios"]["silent_p99_vs_normal_p99"] > 0 and doc["run"]["steps_per_call"] == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gru-2x16-decaying.onnx", "gru-2x16.chunk.onnx", "gru-2x16.onnx",
        "lstm-2x16-decaying.onnx", "lstm-2x16.chunk.onnx", "lstm-2x16.onnx",
    ]  # fmt: skip


def test_runtime_bench_helpers_without_torch(token_model):
    from edgernn.runtime.bench import bench_paced, measure_cold_start

    paced = bench_paced(Stepper(token_model.path), rate_hz=5000, steps=40, warmup=2)
    assert paced.latency.steps == 40 and paced.late_steps <= 40
    cold = measure_cold_start(token_model.path, runs=1)
    assert cold.runs == 1 and not cold.torch_imported and cold.first_step_s > 0
    with pytest.raises(InputError, match="rate_hz"):
        bench_paced(Stepper(token_model.path), rate_hz=0)


def test_bench_a_foreign_model_given_its_state_by_flags(foreign_model):
    args = ["bench", foreign_model.path, "--state", "state=stateN", "--constant", "sr=16000"]
    result = run_cli(*args, "--steps", "30", "--warmup", "3", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["stepper"]["steps"] == 30 and "baseline_onnx" not in doc
    assert doc["notes"] == ["no floor or baselines: the model has no edgernn metadata"]
    assert doc["cold_start"]["torch_imported"] is False
    result = run_cli("bench", foreign_model.path, "--constant", "sr")
    assert result.exit_code == 2 and "--constant" in result.output
