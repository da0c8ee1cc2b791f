"""Threads: a Stream, a StreamPool and a NativeStream (the generated C through ctypes, which releases the
GIL) shared between threads serialise their calls (nothing interleaves), and concurrent first ``run()``
calls load the chunk graph once and take the same numeric path."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from native_support import native_pair

from edgernn.runtime import Stepper
from edgernn.runtime.errors import InputError


@pytest.fixture(autouse=True)
def fast_switching():
    """Switch threads every 10 us instead of every 5 ms, so that races show within a short test."""
    saved = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(saved)


def in_threads(count: int, work) -> list:
    """Run ``work(index)`` in ``count`` threads started together; returns their results, re-raising."""
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list = []

    def target(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(index)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return results


def test_two_threads_on_one_stream_equal_the_same_steps_in_one_thread(token_model):
    """Every step feeds the same token, so any order of whole steps gives the same sequence of outputs."""
    steps = 2000
    shared = Stepper(token_model.path).new_stream()
    outputs = in_threads(2, lambda _: [shared.step(4) for _ in range(steps)])
    serial = Stepper(token_model.path).new_stream()
    want = np.stack([serial.step(4) for _ in range(2 * steps)])
    got = np.concatenate([np.stack(o) for o in outputs])
    # the outputs are the serial ones, each exactly once: sort both by the step they belong to
    order = np.lexsort(got.T[::-1])
    np.testing.assert_array_equal(got[order], want[np.lexsort(want.T[::-1])])
    np.testing.assert_array_equal(shared.state["h"], serial.state["h"])


@pytest.fixture(scope="module")
def natives(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("native_threads")
    return {
        f"{cell}-{kind}": native_pair(root, cell, kind)[0]
        for cell, kind in (("gru", "tokens"), ("lstm", "features"))
    }


@pytest.mark.parametrize("key", ["gru-tokens", "lstm-features"])
def test_two_threads_on_one_native_stream_equal_a_serial_order_every_trial(natives, key):
    """Each thread feeds its own varied inputs, so the outputs tell which thread's step ran when: the
    threads' outputs must be those of one serial order of whole steps (found step by step), and the final
    state that order's. Before the stream had a lock, most trials matched no serial order."""
    native = natives[key]
    steps = 300
    for trial in range(5):
        rng = np.random.default_rng(trial)
        if native.info.input.kind == "tokens":
            inputs = rng.integers(0, native.info.input.size, size=(2, steps)).tolist()
        else:
            inputs = list(rng.standard_normal((2, steps, native.info.input.size)).astype(np.float32))
        shared = native.new_stream()
        got = in_threads(2, lambda k, shared=shared, inputs=inputs: [shared.step(x) for x in inputs[k]])
        replay = native.new_stream()
        taken = [0, 0]  # steps of each thread replayed so far
        while taken != [steps, steps]:
            snap = replay.snapshot()
            for k in (0, 1):
                if taken[k] < steps:
                    replay.restore(snap)
                    if np.array_equal(replay.step(inputs[k][taken[k]]), got[k][taken[k]]):
                        taken[k] += 1
                        break
            else:
                raise AssertionError(f"trial {trial}: after {sum(taken)} whole steps no serial order fits")
        for name, value in replay.state.items():
            np.testing.assert_array_equal(shared.state[name], value)


def test_a_pool_stepped_while_another_thread_joins_and_leaves_keeps_every_stream(token_model):
    """Churn streams sit before the stepped ones, so every leave moves a stepped stream's row."""
    stepper = Stepper(token_model.path)
    pool = stepper.new_pool(64)
    churn_ids = [pool.join() for _ in range(16)]
    stable = [pool.join() for _ in range(16)]
    rounds = 400
    stop = threading.Event()

    def churn(_: int) -> int:
        rng = np.random.default_rng(0)
        count = 0
        while not stop.is_set():
            pool.leave(churn_ids.pop(int(rng.integers(len(churn_ids)))))  # the last row moves here
            churn_ids.append(pool.join())
            count += 1
        return count

    tokens = np.random.default_rng(1).integers(0, 9, size=rounds).tolist()  # varied: no fixed point

    def step(_: int) -> None:
        for token in tokens:
            pool.step({i: token for i in stable})
        stop.set()

    results = in_threads(2, lambda k: step(k) if k == 0 else churn(k))
    assert results[1] > 0  # the churn really ran alongside
    reference = stepper.new_stream()
    for token in tokens:
        reference.step(token)
    for stream_id in stable:
        np.testing.assert_allclose(pool.state(stream_id)["h"], reference.state["h"], atol=1e-6)
    for stream_id in churn_ids:
        np.testing.assert_array_equal(pool.state(stream_id)["h"], 0.0)  # never stepped
    assert len(pool) == 32


def test_unknown_ids_from_a_racing_leave_are_input_errors(token_model):
    pool = Stepper(token_model.path).new_pool(8)
    failures: list[BaseException] = []

    def work(k: int) -> None:
        for _ in range(3000):
            try:
                if k == 0:
                    pool.leave(pool.join())
                else:
                    pool.step({i: 2 for i in pool.streams})
            except InputError:
                pass  # a stream listed, then left before the step: refused cleanly
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)

    in_threads(2, work)
    assert not failures


@pytest.fixture(scope="module")
def chunked(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from edgernn.export import export_model
    from edgernn.models import ModelConfig, RecurrentModel

    torch.manual_seed(0)
    config = ModelConfig(
        input_kind="features", input_size=3, output_kind="values", output_size=2, hidden_size=8
    )
    with torch.no_grad():
        model = RecurrentModel(config).eval()
    path = tmp_path_factory.mktemp("chunked") / "model.onnx"
    report = export_model(model, path, chunk_steps=16)
    assert report.chunk_path is not None
    return path


def test_concurrent_first_runs_load_the_chunk_graph_once_and_agree(chunked):
    xs = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
    want = Stepper(chunked).run(xs)
    for _ in range(3):
        stepper = Stepper(chunked)
        streams = [stepper.new_stream() for _ in range(4)]
        results = in_threads(4, lambda k, streams=streams: streams[k].run(xs))
        for got in results:
            np.testing.assert_array_equal(got, want)  # the chunk graph's numbers, bit for bit
        assert stepper.chunk_steps == 16


def test_a_leave_from_another_thread_during_a_pool_step_waits_for_the_step(token_model):
    """The interleaving made certain: the session call of a step lets another thread leave the pool
    (which moves the last stream's row into the freed one) before the step writes its rows back."""
    stepper = Stepper(token_model.path)
    pool = stepper.new_pool(8)
    first = pool.join()
    stable = [pool.join() for _ in range(3)]
    session_call = pool._run
    leaver = threading.Thread(target=pool.leave, args=(first,))

    def call_with_a_leave(*args):
        leaver.start()
        leaver.join(timeout=0.5)  # unguarded: the leave happens now; with the pool's lock it waits
        return session_call(*args)

    pool._run = call_with_a_leave
    pool.step({i: 5 for i in stable})
    pool._run = session_call
    leaver.join(timeout=10)
    reference = stepper.new_stream()
    reference.step(5)
    assert first not in pool and len(pool) == 3
    for stream_id in stable:
        np.testing.assert_allclose(pool.state(stream_id)["h"], reference.state["h"], atol=1e-6)
