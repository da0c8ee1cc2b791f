"""The triton deploy target: configurations checked field by field with Triton's own protobuf, and the
python-backend flavour served by a real tritonserver (from ``pip install 'edgernn[serve]'``) on loopback.

Without the server or tritonclient these tests skip with one line; under CI=true that is a failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import build_tiny_model  # the tests folder is on sys.path (pytest's rootdir conftest)

from edgernn.cli import cli
from edgernn.export.deploy import deploy
from edgernn.export.triton import config as triton_config
from edgernn.export.triton.server import INSTALL_HINT, TritonServer, pytriton_root
from edgernn.runtime import Stepper, contract
from edgernn.runtime.contract import StackSpec
from edgernn.runtime.errors import InputError

IDLE_TIMEOUT_US = 1_000_000
SMALL_CANDIDATES = 4  # the sensor model: its pool holds 2 x 4 streams


def _need(what: str, available: bool) -> None:
    if available:
        return
    message = f"{what} not installed: {INSTALL_HINT}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must have it: {message}")
    pytest.skip(message)


def _tritonclient_installed() -> bool:
    try:
        import tritonclient.grpc.model_config_pb2  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def need_tritonclient():
    _need("tritonclient", _tritonclient_installed())


def _save(model, directory, name):
    directory.mkdir(parents=True, exist_ok=True)
    return model.save(directory, f"{name}.onnx")


# --- configurations, field by field -------------------------------------------------------------


def _parsed(repo, name):
    return triton_config.parse((repo / name / "config.pbtxt").read_text())


def test_onnxruntime_repository_layout_and_config(tmp_path, need_tritonclient):
    from tritonclient.grpc import model_config_pb2 as pb

    model = build_tiny_model("lstm", "features", input_size=5, hidden_size=6, num_layers=2)
    path = _save(model, tmp_path, "sensor")
    report = deploy(path, "triton", tmp_path / "repo", max_batch_size=32, instances=2)
    repo = tmp_path / "repo"
    assert sorted(p for p, _ in report.files) == ["deploy.json", "sensor/1/model.onnx", "sensor/config.pbtxt"]
    assert (repo / "sensor/1/model.onnx").read_bytes() == path.read_bytes()
    c = _parsed(repo, "sensor")
    assert (c.name, c.backend, c.max_batch_size, c.default_model_filename) == (
        "sensor",
        "onnxruntime",
        32,
        "model.onnx",
    )
    [x] = c.input
    assert (x.name, x.data_type, list(x.dims), x.HasField("reshape")) == ("x", pb.TYPE_FP32, [5], False)
    assert [(o.name, o.data_type, list(o.dims)) for o in c.output] == [
        ("y", pb.TYPE_FP32, [5]),
        ("h_next", pb.TYPE_FP32, [2, 6]),
        ("c_next", pb.TYPE_FP32, [2, 6]),
    ]  # the state outputs are listed so a client can ask for the state back
    s = c.sequence_batching
    assert s.max_sequence_idle_microseconds == 60_000_000
    assert s.WhichOneof("strategy_choice") == "oldest"
    assert (s.oldest.max_candidate_sequences, s.oldest.max_queue_delay_microseconds) == (1024, 0)
    assert list(s.control_input) == []  # Triton resets implicit state itself; the graph takes no controls
    states = [(st.input_name, st.output_name, st.data_type, list(st.dims)) for st in s.state]
    assert states == [("h", "h_next", pb.TYPE_FP32, [2, 6]), ("c", "c_next", pb.TYPE_FP32, [2, 6])]
    for st in s.state:
        [initial] = st.initial_state
        assert (initial.data_type, list(initial.dims), initial.WhichOneof("state_data")) == (
            pb.TYPE_FP32,
            [2, 6],
            "zero_data",
        )
    [group] = c.instance_group
    assert (group.count, group.kind) == (2, pb.ModelInstanceGroup.KIND_CPU)
    threads = {key: value.string_value for key, value in c.parameters.items()}
    assert threads == {"intra_op_thread_count": "1", "inter_op_thread_count": "1"}
    assert any("state fed back as Triton pairs it" in check for check in report.checks)
    assert json.loads((repo / "deploy.json").read_text())["details"]["backend"] == "onnxruntime"


def test_token_input_is_one_id_per_request_reshaped_to_the_graphs_batch_axis(tmp_path, need_tritonclient):
    path = _save(build_tiny_model("gru", "tokens"), tmp_path, "chars")
    deploy(path, "triton", tmp_path / "repo")
    [x] = _parsed(tmp_path / "repo", "chars").input
    assert (list(x.dims), list(x.reshape.shape), x.HasField("reshape")) == ([1], [], True)


def test_python_repository_layout_and_config(tmp_path, need_tritonclient):
    from tritonclient.grpc import model_config_pb2 as pb

    path = _save(build_tiny_model("gru", "tokens"), tmp_path, "chars")
    options = dict(backend="python", model_name="keys", max_batch_size=16, max_candidate_sequences=40)
    report = deploy(
        path, "triton", tmp_path / "repo", idle_timeout_us=5_000, max_queue_delay_us=2_000, **options
    )
    repo = tmp_path / "repo"
    assert sorted(p for p, _ in report.files) == [
        "deploy.json",
        "keys/1/model.onnx",
        "keys/1/model.py",
        "keys/config.pbtxt",
    ]
    c = _parsed(repo, "keys")
    assert (c.name, c.backend, c.max_batch_size) == ("keys", "python", 16)
    assert c.parameters["model_file"].string_value == "model.onnx"
    [x] = c.input
    assert (x.name, x.data_type, list(x.dims), x.HasField("reshape")) == ("x", pb.TYPE_INT64, [1], False)
    assert [(o.name, list(o.dims)) for o in c.output] == [("y", [9]), ("h_next", [2, 6])]
    s = c.sequence_batching
    assert (s.max_sequence_idle_microseconds, s.oldest.max_candidate_sequences) == (5_000, 40)
    assert s.oldest.max_queue_delay_microseconds == 2_000
    assert list(s.state) == []  # the python backend ignores implicit state: model.py keeps it
    controls = {ci.name: ci.control[0] for ci in s.control_input}
    assert list(controls) == ["START", "END", "READY", "CORRID"]
    kinds = pb.ModelSequenceBatching.Control
    for name, kind in (("START", kinds.CONTROL_SEQUENCE_START), ("END", kinds.CONTROL_SEQUENCE_END)):
        assert (controls[name].kind, list(controls[name].int32_false_true)) == (kind, [0, 1])
    assert (controls["READY"].kind, list(controls["READY"].int32_false_true)) == (
        kinds.CONTROL_SEQUENCE_READY,
        [0, 1],
    )
    assert (controls["CORRID"].kind, controls["CORRID"].data_type) == (
        kinds.CONTROL_SEQUENCE_CORRID,
        pb.TYPE_UINT64,
    )
    assert c.instance_group[0].count == 1
    assert any("StreamPool" in check for check in report.checks)


def test_a_state_that_does_not_start_at_zero_gets_an_initial_state_file(tmp_path, need_tritonclient):
    model = build_tiny_model("gru", "tokens")
    info = dataclasses.replace(
        model.info, states=tuple(dataclasses.replace(s, initial=0.25) for s in model.info.states)
    )
    model = build_tiny_model("gru", "tokens", metadata=info.to_json())
    path = _save(model, tmp_path, "warm")
    report = deploy(path, "triton", tmp_path / "repo")
    [state] = _parsed(tmp_path / "repo", "warm").sequence_batching.state
    assert state.initial_state[0].data_file == "h.bin"
    data = np.frombuffer((tmp_path / "repo/warm/initial_state/h.bin").read_bytes(), np.float32)
    np.testing.assert_array_equal(data, np.full(12, 0.25, np.float32))
    assert "warm/initial_state/h.bin" in [p for p, _ in report.files]


def test_state_pairs_must_sort_alike_for_implicit_state():
    """Triton pairs implicit state by sorted name: with 11 stacks, h10 sorts after h1 but h10_next
    before h1_next, so that model is refused for onnxruntime (the python backend keeps its own state)."""
    stacks = [StackSpec("gru", 1, 4) for _ in range(11)]
    common = dict(
        num_layers=1, hidden_size=4, input=contract.InputSpec("tokens", 9, "int64"), edgernn_version="t"
    )
    info = contract.make_info(cell="gru", output=contract.OutputSpec("logits", 9), stacks=stacks, **common)
    with pytest.raises(InputError, match=r"sort differently .*--backend python"):
        triton_config.check_state_pairing(info)
    info10 = contract.make_info(
        cell="gru", output=contract.OutputSpec("logits", 9), stacks=stacks[:10], **common
    )
    triton_config.check_state_pairing(info10)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "tensorrt"}, "--backend 'tensorrt': expected one of onnxruntime, python, c"),
        ({"model_name": "../x"}, "--model-name '../x': expected letters"),
        ({"max_batch_size": 0}, "--max-batch-size: expected a positive integer, got 0"),
        ({"max_queue_delay_us": -1}, "--max-queue-delay-us: expected an integer >= 0, got -1"),
        ({"precision": "int8"}, "--precision: only --backend c takes it"),  # default onnxruntime
        ({"fast_activations": True}, "--fast-activations: not an option of --target triton"),
    ],
)
def test_bad_options_are_refused_and_nothing_is_written(tmp_path, options, message):
    path = _save(build_tiny_model("gru", "tokens"), tmp_path, "chars")
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        deploy(path, "triton", tmp_path / "repo", **options)
    assert not (tmp_path / "repo").exists()


def test_a_model_without_edgernn_metadata_is_refused_in_one_line(tmp_path):
    path = _save(build_tiny_model("gru", "tokens", metadata=None), tmp_path, "plain")
    result = CliRunner().invoke(cli, ["deploy", str(path), "--target", "triton", "-o", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "expected an edgernn model (with edgernn metadata)" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


# --- a real tritonserver ------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["python", "c"])
def served(request, tmp_path_factory):
    """One server, two models of one flavour (the python backend, then the C backend): ``chars`` (GRU,
    tokens) and ``sensor`` (LSTM, features, 4 candidate sequences, idle after 1 s). Always stopped,
    whatever the tests did."""
    _need("tritonserver (nvidia-pytriton)", pytriton_root() is not None and _tritonclient_installed())
    backend = request.param
    root = tmp_path_factory.mktemp(f"triton_{backend}")
    chars = _save(build_tiny_model("gru", "tokens", hidden_size=16), root, "chars")
    sensor = _save(build_tiny_model("lstm", "features", input_size=3, hidden_size=8), root, "sensor")
    deploy(
        chars, "triton", root / "repo_chars", backend=backend, max_batch_size=64, max_candidate_sequences=64
    )
    small = dict(max_candidate_sequences=SMALL_CANDIDATES, idle_timeout_us=IDLE_TIMEOUT_US)
    deploy(sensor, "triton", root / "repo_sensor", backend=backend, max_batch_size=8, **small)
    server = TritonServer([root / "repo_chars", root / "repo_sensor"])
    try:
        server.start()
        yield {"server": server, "chars": chars, "sensor": sensor, "backend": backend}
        process = server.process
        if process is not None and process.poll() is not None:  # died under a test: say why, from its log
            pytest.fail(
                f"tritonserver exited with {process.returncode} during the tests:\n{server.log_tail(80)}"
            )
    finally:
        server.stop()


def test_the_server_loads_repositories_with_deploy_json_at_their_root(served):
    import tritonclient.grpc as grpcclient

    for model in ("chars", "sensor"):
        assert (served[model].parent / f"repo_{model}" / "deploy.json").is_file()
    client = grpcclient.InferenceServerClient(served["server"].grpc_url)
    try:
        assert [client.is_model_ready(m) for m in ("chars", "sensor")] == [True, True]
        index = client.get_model_repository_index(as_json=True)["models"]
    finally:
        client.close()
    assert sorted(m["name"] for m in index) == ["chars", "sensor"]  # deploy.json is no model
    assert "deploy.json" not in served["server"].log_path.read_text()


def _input(x: np.ndarray):
    import tritonclient.grpc as grpcclient

    tensor = grpcclient.InferInput("x", list(x.shape), "INT64" if x.dtype == np.int64 else "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def _request_x(x) -> np.ndarray:
    x = np.asarray(x)
    return x.reshape(1, 1) if x.dtype == np.int64 else x.reshape(1, -1)


async def _sequence(
    client, model: str, corrid: int, xs, *, end: bool = True, start: bool = True
) -> np.ndarray:
    """Step one sequence through the server, one request per step; returns ys (T, O)."""
    import tritonclient.grpc as grpcclient

    ys = []
    for t, x in enumerate(xs):
        result = await client.infer(
            model,
            [_input(_request_x(x))],
            sequence_id=corrid,
            sequence_start=start and t == 0,
            sequence_end=end and t == len(xs) - 1,
            outputs=[grpcclient.InferRequestedOutput("y")],
        )
        ys.append(result.as_numpy("y")[0])
    return np.stack(ys)


def _run(coroutine_factory, url: str):
    """Run ``coroutine_factory(client)`` on a fresh asyncio gRPC client."""
    import tritonclient.grpc.aio as aioclient

    async def main():
        # A channel of its own: gRPC shares connections process-wide, and one that failed while the
        # server was down would answer "connection refused" for its reconnect backoff after a restart.
        client = aioclient.InferenceServerClient(url, channel_args=[("grpc.use_local_subchannel_pool", 1)])
        try:
            return await coroutine_factory(client)
        finally:
            await client.close()

    return asyncio.run(main())


def _reference(path, xs) -> np.ndarray:
    stream = Stepper(path, chunk_model=False).new_stream()
    return np.stack([stream.step(x) for x in xs])


def _tokens(rng, steps: int) -> np.ndarray:
    return rng.integers(0, 9, steps, dtype=np.int64)


def _assert_served(served, got, want, err_msg: str = "") -> None:
    """The python flavour runs the stepper's own graph (1e-5); the C flavour the generated C, held to
    the C target's self-test tolerance (1e-4 + 1e-4 x |want|)."""
    if served["backend"] == "c":
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4, err_msg=err_msg)
    else:
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=err_msg)


def test_64_concurrent_sequences_of_200_steps_each_equal_a_stepper_stream(served):
    rng = np.random.default_rng(1)
    inputs = {corrid: _tokens(rng, 200) for corrid in range(1, 65)}

    async def all_sequences(client):
        ys = await asyncio.gather(*(_sequence(client, "chars", c, xs) for c, xs in inputs.items()))
        return dict(zip(inputs, ys, strict=True))

    got = _run(all_sequences, served["server"].grpc_url)
    for corrid, xs in inputs.items():
        _assert_served(served, got[corrid], _reference(served["chars"], xs))


def test_the_model_reports_triton_statistics_for_each_request(served):
    """What the statistics API, /metrics and perf_analyzer read: every request counted, with its times."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(served["server"].grpc_url)

    def stats():
        return client.get_inference_statistics("sensor").model_stats[0]

    try:
        before = stats()
        xs = np.random.default_rng(9).standard_normal((6, 3)).astype(np.float32)
        _run(lambda aio: _sequence(aio, "sensor", 4242, xs), served["server"].grpc_url)
        after = stats()
    finally:
        client.close()
    counted = after.inference_stats.success.count - before.inference_stats.success.count
    assert counted == len(xs)
    assert after.inference_count - before.inference_count == len(xs)
    assert 1 <= after.execution_count - before.execution_count <= len(xs)
    computed = after.inference_stats.compute_infer.ns - before.inference_stats.compute_infer.ns
    assert computed > 0
    assert after.last_inference > 0


def test_32_sequences_over_one_bidirectional_stream_each_equal_a_stepper_stream(served):
    """A streaming front end's way in: every sequence's requests on one gRPC stream, interleaved, closed
    loop per sequence; the answers matched to their sequence by request ID."""
    import tritonclient.grpc as grpcclient

    rng = np.random.default_rng(7)
    inputs = {corrid: _tokens(rng, 40) for corrid in range(2001, 2033)}

    async def over_one_stream(client):
        outgoing: asyncio.Queue = asyncio.Queue()
        answers = {corrid: asyncio.Queue() for corrid in inputs}

        async def requests():
            while (request := await outgoing.get()) is not None:
                yield request

        async def sequence(corrid, xs):
            ys = []
            for t, x in enumerate(xs):
                outgoing.put_nowait({
                    "model_name": "chars", "inputs": [_input(_request_x(x))], "request_id": str(corrid),
                    "sequence_id": corrid, "sequence_start": t == 0, "sequence_end": t == len(xs) - 1,
                    "outputs": [grpcclient.InferRequestedOutput("y")],
                })  # fmt: skip
                ys.append(await answers[corrid].get())
            return corrid, np.stack(ys)

        async def reader(stream):
            async for result, error in stream:
                assert error is None, error
                answers[int(result.get_response().id)].put_nowait(result.as_numpy("y")[0])

        task = asyncio.create_task(reader(client.stream_infer(requests())))
        try:
            return dict(await asyncio.gather(*(sequence(c, xs) for c, xs in inputs.items())))
        finally:
            outgoing.put_nowait(None)
            task.cancel()

    got = _run(over_one_stream, served["server"].grpc_url)
    for corrid, xs in inputs.items():
        _assert_served(served, got[corrid], _reference(served["chars"], xs))


def test_the_state_comes_back_when_asked_for(served):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    xs = _tokens(np.random.default_rng(2), 3)
    client = grpcclient.InferenceServerClient(served["server"].grpc_url)
    if served["backend"] == "c":  # the C backend answers y alone, and Triton says so
        wanted = [grpcclient.InferRequestedOutput(name) for name in ("y", "h_next")]
        try:
            with pytest.raises(InferenceServerException, match="h_next"):
                client.infer("chars", [_input(_request_x(xs[0]))], sequence_id=900, sequence_start=True,
                             sequence_end=True, outputs=wanted)  # fmt: skip
        finally:
            client.close()
        return
    try:
        for t, x in enumerate(xs):
            wanted = [grpcclient.InferRequestedOutput(name) for name in ("y", "h_next")]
            result = client.infer(
                "chars", [_input(_request_x(x))], sequence_id=900, sequence_start=t == 0, outputs=wanted
            )
        client.infer("chars", [_input(_request_x(xs[0]))], sequence_id=900, sequence_end=True)
    finally:
        client.close()
    stream = Stepper(served["chars"], chunk_model=False).new_stream()
    for x in xs:
        stream.step(x)
    _assert_served(served, result.as_numpy("h_next"), stream.state["h"])


def test_end_frees_the_state_and_a_reused_id_starts_from_the_initial_state(served):
    """The sensor pool holds 8 streams: 20 sequences one after another fit only if END frees each."""
    from tritonclient.utils import InferenceServerException

    rng = np.random.default_rng(3)
    xs = rng.standard_normal((5, 3)).astype(np.float32)
    want = _reference(served["sensor"], xs)

    async def sequences(client):
        runs = [await _sequence(client, "sensor", 77, xs) for _ in range(20)]  # the same ID each time
        with pytest.raises(InferenceServerException, match="START"):
            await _sequence(client, "sensor", 77, xs[:1], start=False)  # ended: Triton wants a START
        return runs

    for ys in _run(sequences, served["server"].grpc_url):
        _assert_served(served, ys, want)


def test_idle_sequences_are_freed_after_the_timeout(served):
    """Three waves of 4 sequences left open (12 > the pool's 8 rows): each wave fits only because the
    one before it was freed after the idle timeout, and the server log says so."""
    from tritonclient.utils import InferenceServerException

    rng = np.random.default_rng(4)
    xs = rng.standard_normal((3, 3)).astype(np.float32)
    want = _reference(served["sensor"], xs)

    async def waves(client):
        results = []
        for wave in range(3):
            ids = [1000 + 10 * wave + k for k in range(SMALL_CANDIDATES)]
            results += await asyncio.gather(*(_sequence(client, "sensor", c, xs, end=False) for c in ids))
            await asyncio.sleep(IDLE_TIMEOUT_US / 1e6 * 1.5)
        with pytest.raises(InferenceServerException, match="START"):  # Triton forgot it too
            await _sequence(client, "sensor", 1000, xs[:1], start=False)
        return results

    for ys in _run(waves, served["server"].grpc_url):
        _assert_served(served, ys, want)
    log = served["server"].log_path.read_text()
    if served["backend"] == "python":
        assert f"freed {SMALL_CANDIDATES} sequence(s) idle for more than 1 s" in log
    else:  # the C backend frees an idle stream when a new sequence needs its slot
        assert log.count("edgernn backend: freed sequence 10") == SMALL_CANDIDATES


def test_bad_requests_get_errors_and_every_other_sequence_goes_on(served):
    from tritonclient.utils import InferenceServerException

    rng = np.random.default_rng(5)
    good = {corrid: rng.standard_normal((12, 3)).astype(np.float32) for corrid in (501, 502, 503)}
    nan = np.full((1, 3), np.nan, np.float32)
    inside = [  # bad steps inside the open sequence 502: each fails, its state stays
        (nan, "finite"),  # a NaN
        (np.zeros((1, 4), np.float32), "shape"),  # Triton checks dims against the config
    ]
    bad_requests = [
        ("sensor", 0, np.zeros((1, 3), np.float32), "correlation ID"),  # no correlation ID at all
        ("chars", 901, np.array([[42]], np.int64), "42"),  # a token outside the vocabulary
    ]

    async def bad(client, model, corrid, x, expected, start):
        with pytest.raises(InferenceServerException, match=expected):
            await client.infer(model, [_input(x)], sequence_id=corrid, sequence_start=start)
        return expected

    async def interrupted(client, xs):
        """Sequence 502: six good steps, the bad ones, then six more going on from the same state (the
        bad ones are sent only once the sequence is open and before it ends)."""
        first = await _sequence(client, "sensor", 502, xs[:6], end=False)
        for x, expected in inside:
            await bad(client, "sensor", 502, x, expected, start=False)
        return np.concatenate([first, await _sequence(client, "sensor", 502, xs[6:], start=False)])

    async def mixed(client):
        sequences = [
            interrupted(client, xs) if c == 502 else _sequence(client, "sensor", c, xs)
            for c, xs in good.items()
        ]
        others = [
            bad(client, model, c, x, expected, model == "chars") for model, c, x, expected in bad_requests
        ]
        return await asyncio.gather(*sequences, *others)

    results = _run(mixed, served["server"].grpc_url)
    for ys, (corrid, xs) in zip(results, good.items(), strict=False):
        _assert_served(served, ys, _reference(served["sensor"], xs), err_msg=str(corrid))


def _grpc_load_client():
    """benchmarks/triton_grpc_client.py, with its C++ load generator built (a skip naming the Debian
    packages without the tools; a failure under CI)."""
    import sys

    benchmarks = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if benchmarks not in sys.path:
        sys.path.insert(0, benchmarks)
    import triton_grpc_client

    try:
        return triton_grpc_client, triton_grpc_client.build()
    except triton_grpc_client.ClientUnavailable as missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must have it: {missing}")
        pytest.skip(str(missing))


def test_the_benchmarks_cpp_load_generator_gets_every_sequences_answers(served):
    """benchmarks/triton_load.py's C++ client: 24 sequences over 2 streams, closed loop; each sequence's
    last answer equals a Stepper stream's, every request timed; an error answer ends it with exit 1."""
    module, executable = _grpc_load_client()
    rng = np.random.default_rng(11)
    xs = rng.integers(0, 9, (24, 30), dtype=np.int64)
    url = served["server"].grpc_url
    size = Stepper(served["chars"], chunk_model=False).info.output.size
    done = module.run(executable, url, "chars", xs, streams=2, first_id=7000, output_size=size)
    assert done.latencies_s.shape == xs.shape and np.all(done.latencies_s > 0)
    assert 0 < done.seconds < 60 and done.cpu_s > 0
    for k, tokens in enumerate(xs):
        _assert_served(served, done.last_ys[k], _reference(served["chars"], tokens)[-1])
    bad = xs.copy()
    bad[3, 5] = 1_000  # out of the vocabulary: the server answers an error
    with pytest.raises(RuntimeError, match=r"exit 1\): request 3: .*(token|1000)"):
        module.run(executable, url, "chars", bad, streams=2, first_id=8000, output_size=size)


def test_a_killed_server_fails_its_clients_and_a_restarted_one_serves_new_sequences(tmp_path):
    _need("tritonserver (nvidia-pytriton)", pytriton_root() is not None and _tritonclient_installed())
    from tritonclient.utils import InferenceServerException

    path = _save(build_tiny_model("gru", "tokens"), tmp_path, "chars")
    deploy(path, "triton", tmp_path / "repo", backend="python")
    server = TritonServer(tmp_path / "repo")
    xs = _tokens(np.random.default_rng(6), 6)
    try:
        server.start()
        _run(lambda c: _sequence(c, "chars", 7, xs[:3], end=False), server.grpc_url)
        server.kill()
        with pytest.raises(InferenceServerException):
            _run(lambda c: _sequence(c, "chars", 7, xs[3:4], start=False), server.grpc_url)
        server.start()  # same port: the open sequence's state is gone with the old process
        with pytest.raises(InferenceServerException, match="START"):
            _run(lambda c: _sequence(c, "chars", 7, xs[3:4], start=False), server.grpc_url)
        got = _run(lambda c: _sequence(c, "chars", 7, xs), server.grpc_url)
    finally:
        server.stop()
    np.testing.assert_allclose(got, _reference(path, xs), atol=1e-5, rtol=0)
    assert not list(Path("/dev/shm").glob(server.shm_prefix + "*"))  # the killed one's regions too


def test_the_deploy_command_writes_a_python_repository(tmp_path, need_tritonclient):
    path = _save(build_tiny_model("gru", "tokens"), tmp_path, "chars")
    args = ["deploy", str(path), "--target", "triton", "--backend", "python", "--model-name", "keys"]
    result = CliRunner().invoke(
        cli,
        [*args, "--max-batch-size", "8", "--instances", "2", "--max-queue-delay-us", "500", "-o", str(tmp_path / "r"),
         "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["details"] == {"backend": "python", "model_name": "keys"}
    assert {f["path"] for f in doc["files"]} >= {"keys/config.pbtxt", "keys/1/model.py", "keys/1/model.onnx"}
    config = _parsed(tmp_path / "r", "keys")
    assert (config.max_batch_size, config.instance_group[0].count) == (8, 2)
    assert config.sequence_batching.oldest.max_queue_delay_microseconds == 500


def test_c_repository_layout_config_and_a_built_backend(tmp_path, need_tritonclient):
    path = _save(build_tiny_model("lstm", "features", input_size=3, hidden_size=8), tmp_path, "sensor")
    args = ["deploy", str(path), "--target", "triton", "--backend", "c", "--max-candidate-sequences", "40"]
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "repo"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["details"]["backend"] == "c" and doc["details"]["streams_per_instance"] == 80
    assert doc["details"]["c_target"]["verified"] is True
    version = tmp_path / "repo" / "sensor" / "1"
    assert sorted(p.name for p in version.iterdir()) == [
        "c_backend.c", "libtriton_edgernn.so", "model.c", "model.h",
    ]  # fmt: skip
    assert any("host self-test" in c and "1000 steps" in c for c in doc["checks"])
    c = _parsed(tmp_path / "repo", "sensor")
    assert (c.backend, list(c.parameters)) == ("edgernn", [])
    assert [(o.name, list(o.dims)) for o in c.output] == [("y", [c.output[0].dims[0]])]  # no state outputs
    controls = [ci.name for ci in c.sequence_batching.control_input]
    assert controls == ["START", "END", "READY", "CORRID"]
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(version / "libtriton_edgernn.so")],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    for entry in ("TRITONBACKEND_Initialize", "TRITONBACKEND_ModelInstanceInitialize",
                  "TRITONBACKEND_ModelInstanceExecute", "TRITONBACKEND_ModelInstanceFinalize"):  # fmt: skip
        assert f" T {entry}\n" in symbols
    if platform.machine() == "x86_64":  # the step for three x86-64 levels, picked at load
        for level in ("vnni", "avx2", "base"):
            assert f" T model_step_{level}\n" in symbols
        assert any("x86-64-v4 + VNNI, x86-64-v3, x86-64" in c for c in doc["checks"])


def test_precision_is_for_the_c_flavour_only(tmp_path):
    path = _save(build_tiny_model("gru", "tokens"), tmp_path, "chars")
    with pytest.raises(InputError, match="--precision: only --backend c takes it"):
        deploy(path, "triton", tmp_path / "repo", backend="python", precision="int8")
    assert not (tmp_path / "repo").exists()
    data = tmp_path / "text.txt"
    data.write_text("abc " * 50)
    with pytest.raises(InputError, match="--data: only --backend c --precision int8 or integer takes it"):
        deploy(path, "triton", tmp_path / "repo", backend="c", data=data)
    with pytest.raises(InputError, match="--tolerance: only --backend c --precision int8 or integer"):
        deploy(path, "triton", tmp_path / "repo", backend="python", tolerance=0.1)
    assert not (tmp_path / "repo").exists()


def test_an_int8_c_flavour_serves_what_the_int8_c_target_computes(tmp_path):
    """--backend c --precision int8: the server's answers are the int8 C target's over a sequence with
    state fed back (the integer products are exact; the float parts may contract to FMA differently at
    the x86-64 level the server picked), and the server log names that level."""
    _need("tritonserver (nvidia-pytriton)", pytriton_root() is not None and _tritonclient_installed())
    from edgernn.export.c.build import build_shared_library
    from edgernn.runtime.native import NativeStepper

    path = _save(build_tiny_model("lstm", "tokens", hidden_size=16), tmp_path, "chars")
    report = deploy(path, "triton", tmp_path / "repo", backend="c", precision="int8")
    assert report.details["c_target"]["precision"] == "int8"
    assert "static const uint8_t" in (tmp_path / "repo" / "chars" / "1" / "model.c").read_text()
    deploy(path, "c", tmp_path / "c", precision="int8")
    native = NativeStepper(build_shared_library(tmp_path / "c", "model", tmp_path / "libmodel.so"))
    xs = _tokens(np.random.default_rng(8), 30)
    want = np.stack([native.step(int(x)) for x in xs])
    server = TritonServer(tmp_path / "repo")
    try:
        server.start()
        got = _run(lambda c: _sequence(c, "chars", 5, xs), server.grpc_url)
        log = server.log_path.read_text()
    finally:
        server.stop()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert "edgernn backend: the model's step built for " in log


def _exported(path: Path, tokens: bool) -> Path:
    """A small edgernn export (integer-only takes the cells export_model writes)."""
    import torch
    from edge_models import VOCAB

    from edgernn.export import export_model
    from edgernn.models import ModelConfig, RecurrentModel

    torch.manual_seed(4)
    if tokens:
        config = ModelConfig(cell="gru", input_size=len(VOCAB), output_size=len(VOCAB), hidden_size=12,
                             num_layers=2, embedding_size=8)  # fmt: skip
        export_model(RecurrentModel(config).eval(), path, vocabulary=VOCAB, chunk_steps=None)
        return path
    config = ModelConfig(
        cell="lstm", input_kind="features", input_size=3, hidden_size=8, num_layers=2, output_size=2,
        output_kind="values", input_mean=(20.0, -3.0, 500.0), input_std=(4.0, 0.5, 80.0),
        output_mean=(1.0, -2.0), output_std=(3.0, 0.2),
    )  # fmt: skip
    export_model(RecurrentModel(config).eval(), path, chunk_steps=None)
    return path


def _bring_your_own(path: Path) -> Path:
    """A bring-your-own model on three features (tests/test_integer_byo.py's TwoRNNs)."""
    import torch
    from test_integer_byo import TwoRNNs

    from edgernn.export import export_module

    torch.manual_seed(3)
    export_module(TwoRNNs().eval(), path, example_input=torch.randn(1, 5, 3))
    return path


def test_an_integer_c_flavour_serves_the_integer_reference(tmp_path):
    """--backend c --precision integer: float requests in, the integer step inside (x quantized at the
    header's scales, y converted back by the C's helper), each sequence's int16 state kept by the
    backend: two interleaved sequences per model equal the integer reference's streams, a NaN request is
    INVALID_ARGUMENT and leaves its sequence's state as it was. Two of edgernn's models and a
    bring-your-own one (an integer program: two RNNs, element-wise layers, a pruned product)."""
    _need("tritonserver (nvidia-pytriton)", pytriton_root() is not None and _tritonclient_installed())
    from tritonclient.utils import InferenceServerException

    from edgernn.export.c.integer_writer import integer_model_for
    from edgernn.runtime.integer_program import IntegerProgram, ProgramStepper
    from edgernn.runtime.integer_ref import IntegerStepper

    paths = {
        "sensor": _exported(tmp_path / "sensor.onnx", False),
        "chars": _exported(tmp_path / "chars.onnx", True),
        "byo": _bring_your_own(tmp_path / "byo.onnx"),
    }
    references = {}
    for name, path in paths.items():
        report = deploy(path, "triton", tmp_path / f"repo_{name}", backend="c", precision="integer",
                        max_candidate_sequences=4)  # fmt: skip
        assert report.details["c_target"]["precision"] == "integer" and report.details["c_target"]["verified"]
        assert any("model.c built once (integer-only)" in c for c in report.checks), report.checks
        assert "MODEL_PRECISION_INTEGER 1" in (tmp_path / f"repo_{name}" / name / "1" / "model.h").read_text()
        integer = integer_model_for(path)[0]
        assert isinstance(integer, IntegerProgram) == (name == "byo")
        references[name] = ProgramStepper(integer) if name == "byo" else IntegerStepper(integer)
    rng = np.random.default_rng(3)
    # features on the integer grid (x / scale rounds to the same int16 in float32 and float64)
    inputs = {
        name: [(rng.integers(-3000, 3000, (20, 3)) * scale).astype(np.float32) for _ in range(2)]
        for name, scale in (
            ("sensor", references["sensor"].model.input_scale),
            ("byo", references["byo"].program.input_scale),
        )
    }
    inputs["chars"] = [_tokens(rng, 20) for _ in range(2)]
    want = {
        (name, k): np.stack([stream.step(x) for x in xs])
        for name in paths
        for k, xs in enumerate(inputs[name])
        for stream in [references[name].new_stream()]
    }

    async def serve(client):
        got = {}
        for name in paths:
            first = await _sequence(client, name, 11, inputs[name][0][:10], end=False)
            other = await _sequence(client, name, 12, inputs[name][1], end=True)  # in between: its own state
            if name != "chars":  # refused, then the sequence goes on from the state it had
                nan = _input(np.array([[np.nan, 0.0, 1.0]], np.float32))
                with pytest.raises(InferenceServerException) as caught:
                    await client.infer(name, [nan], sequence_id=11)
                assert (
                    caught.value.status() == "StatusCode.INVALID_ARGUMENT"
                    and "finite" in caught.value.message()
                )
            rest = await _sequence(client, name, 11, inputs[name][0][10:], start=False)
            got[(name, 0)], got[(name, 1)] = np.concatenate([first, rest]), other
        return got

    server = TritonServer([tmp_path / f"repo_{name}" for name in paths])
    try:
        server.start()
        got = _run(serve, server.grpc_url)
        log = server.log_path.read_text()
    finally:
        server.stop()
    for key, values in want.items():
        # the same int16 y; the C converts in float32 (y_q x the scale as a float), the reference in float64
        np.testing.assert_allclose(got[key], values, rtol=1e-6, atol=0, err_msg=str(key))
    assert "integer-only: no float in a step" in log


def test_a_nan_request_is_invalid_argument_in_both_flavours(served):
    """One error, one status: x not finite is the request's fault (INVALID_ARGUMENT), python or C."""
    from tritonclient.utils import InferenceServerException

    async def nan_step(client):
        await _sequence(client, "sensor", 601, np.zeros((1, 3), np.float32), end=False)
        nan = _input(np.full((1, 3), np.nan, np.float32))
        with pytest.raises(InferenceServerException) as caught:
            await client.infer("sensor", [nan], sequence_id=601, sequence_end=True)
        return caught.value

    error = _run(nan_step, served["server"].grpc_url)
    assert error.status() == "StatusCode.INVALID_ARGUMENT", (error.status(), error.message())
    assert "finite" in error.message()


# --- python -m edgernn.export.triton.server ------------------------------------------------------


def _server_command(*args) -> list[str]:
    return [sys.executable, "-m", "edgernn.export.triton.server", *map(str, args)]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc/*/stat; threads and processes may end meanwhile)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended while we looked
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # the field after the state is the parent's pid
            found.append(int(entry.name))
    return found


def test_the_server_command_stops_tritonserver_on_sigterm(tmp_path):
    _need("tritonserver (nvidia-pytriton)", pytriton_root() is not None and _tritonclient_installed())
    from edgernn.export.triton.server import check_port, free_port

    path = _save(build_tiny_model("gru", "tokens"), tmp_path, "chars")
    deploy(path, "triton", tmp_path / "repo", backend="python")
    port = free_port()
    command = _server_command(tmp_path / "repo", "--grpc-port", port)
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        serving = process.stderr.readline()  # printed once every model is ready
        [tritonserver] = _children(process.pid)
        busy = subprocess.run(command, capture_output=True, text=True, timeout=60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert serving.startswith("serving ") and "Ctrl-C or SIGTERM stops" in serving
    assert busy.returncode == 2
    assert busy.stderr.strip().splitlines() == [
        f"Error: --grpc-port {port}: 127.0.0.1:{port} is in use (Address already in use); stop what listens "
        "there or pick another port"
    ]
    assert not Path(f"/proc/{tritonserver}").exists()  # tritonserver went with it
    check_port(port)  # and the port is free for the next start


def test_the_server_commands_help_names_the_module():
    done = subprocess.run(_server_command("--help"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m edgernn.export.triton.server ")
