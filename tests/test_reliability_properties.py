"""Property-based tests (hypothesis): random sequences of every operation of a Stream and a StreamPool,
bad inputs among them, checked after each against a reference model of the state.

The reference is the hand-built model's numpy maths (``TinyModel.step``) driven only by the valid
operations: whatever the sequence, each stream's state equals the reference's, every bad input raised
InputError and moved nothing, and every output equals the reference's output.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_tiny_model
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from edgernn.runtime import Stepper
from edgernn.runtime.errors import InputError

ATOL = 1e-5
SETTINGS = settings(
    max_examples=40, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

TOKENS = st.integers(0, 8)
BAD_TOKENS = st.sampled_from(
    [9, -1, 2**40, 1.5, True, "a", None, [1, 2], np.array([1, 2]), np.array([0.0]), np.array([[1]]), object()]
)
BAD_FEATURES = st.sampled_from(
    [np.zeros(3), np.zeros(5), np.array([np.nan, 0, 0, 0]), np.array([np.inf] * 4), np.zeros(4, bool),
     np.zeros(4, complex), ["a"] * 4, [None] * 4, np.full(4, 1e300), np.zeros((2, 4))]
)  # fmt: skip


class StreamAndPool(RuleBasedStateMachine):
    """One stream and one pool of a model, and the reference state of each."""

    model = None  # a TinyModel, set by the test
    capacity = 4

    @initialize()
    def load(self) -> None:
        self.stepper = Stepper(self.model.path)
        self.stream = self.stepper.new_stream()
        self.reference = self.model.initial_state()
        self.snapshots: list[tuple[dict, dict]] = []
        self.pool = self.stepper.new_pool(self.capacity)
        self.pool_reference: dict[int, dict] = {}

    # -- inputs of this model --

    def valid_x(self, data) -> object:
        if self.model.info.input.kind == "tokens":
            return data.draw(TOKENS)
        size = self.model.info.input.size
        kind = data.draw(st.sampled_from(["float32", "float64", "int", "list"]))
        values = data.draw(st.lists(st.integers(-5, 5), min_size=size, max_size=size))
        if kind == "int":
            return np.array(values, np.int32)  # integer readings are features too
        if kind == "list":
            return [float(v) / 2 for v in values]
        return np.array(values, kind) / 2

    def bad_x(self, data) -> object:
        return data.draw(BAD_TOKENS if self.model.info.input.kind == "tokens" else BAD_FEATURES)

    def reference_step(self, state: dict, x) -> tuple[np.ndarray, dict]:
        batch = np.array([x], np.int64 if self.model.info.input.kind == "tokens" else np.float32)
        y, state = self.model.step(batch, state)
        return y[0], state

    # -- the stream --

    @rule(data=st.data())
    def step(self, data) -> None:
        x = self.valid_x(data)
        y = self.stream.step(x)
        want, self.reference = self.reference_step(self.reference, x)
        np.testing.assert_allclose(y, want, atol=ATOL)

    @rule(data=st.data(), length=st.integers(1, 12))
    def run(self, data, length) -> None:
        xs = [self.valid_x(data) for _ in range(length)]
        if self.model.info.input.kind != "tokens":
            xs = np.array(xs, np.float32)
        ys = self.stream.run(xs)
        for x, y in zip(xs, ys, strict=True):
            want, self.reference = self.reference_step(self.reference, x)
            np.testing.assert_allclose(y, want, atol=ATOL)

    @rule(data=st.data())
    def bad_step(self, data) -> None:
        with pytest.raises(InputError):
            self.stream.step(self.bad_x(data))

    @rule(data=st.data())
    def bad_run(self, data) -> None:
        with pytest.raises(InputError):
            self.stream.run([self.valid_x(data), self.bad_x(data)])

    @rule()
    def reset(self) -> None:
        self.stream.reset()
        self.reference = self.model.initial_state()

    @rule()
    def snapshot(self) -> None:
        self.snapshots.append((self.stream.snapshot(), {k: v.copy() for k, v in self.reference.items()}))

    @precondition(lambda self: self.snapshots)
    @rule(data=st.data())
    def restore(self, data) -> None:
        snap, reference = data.draw(st.sampled_from(self.snapshots))
        self.stream.restore(snap)
        self.reference = {k: v.copy() for k, v in reference.items()}

    @rule(bad=st.sampled_from(["nan", "shape", "names", "type", "huge-ok"]))
    def bad_restore(self, bad) -> None:
        snap = self.stream.snapshot()
        name = next(iter(snap))
        if bad == "huge-ok":  # finite: accepted, then its steps may overflow, which must raise cleanly
            return
        broken = {
            "nan": {**snap, name: np.full_like(snap[name], np.nan)},
            "shape": {**snap, name: snap[name][..., :1]},
            "names": {"zz": snap[name]},
            "type": [1, 2],
        }[bad]
        with pytest.raises(InputError):
            self.stream.restore(broken)

    # -- the pool --

    @precondition(lambda self: len(self.pool) < self.capacity)
    @rule()
    def join(self) -> None:
        stream_id = self.pool.join()
        assert stream_id not in self.pool_reference
        self.pool_reference[stream_id] = self.model.initial_state()

    @precondition(lambda self: len(self.pool) == self.capacity)
    @rule()
    def join_full(self) -> None:
        with pytest.raises(InputError, match="the pool is full"):
            self.pool.join()

    @precondition(lambda self: self.pool_reference)
    @rule(data=st.data())
    def leave(self, data) -> None:
        stream_id = data.draw(st.sampled_from(sorted(self.pool_reference)))
        self.pool.leave(stream_id)
        del self.pool_reference[stream_id]

    @precondition(lambda self: self.pool_reference)
    @rule(data=st.data())
    def pool_step(self, data) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.pool_reference)), min_size=1, unique=True))
        xs = {i: self.valid_x(data) for i in ids}
        ys = self.pool.step(xs)
        for i, x in xs.items():
            want, self.pool_reference[i] = self.reference_step(self.pool_reference[i], x)
            np.testing.assert_allclose(ys[i], want, atol=ATOL)

    @precondition(lambda self: self.pool_reference)
    @rule(data=st.data())
    def pool_bad_step(self, data) -> None:
        ids = sorted(self.pool_reference)
        xs = {i: self.valid_x(data) for i in ids}
        victim = data.draw(st.sampled_from([*ids, "id"]))
        if victim == "id":
            xs[data.draw(st.sampled_from([-1, 10**6, "a", 2.5, None]))] = self.valid_x(
                data
            )  # True: test_reliability_api
        else:
            xs[victim] = self.bad_x(data)
        with pytest.raises(InputError):
            self.pool.step(xs)

    @precondition(lambda self: self.pool_reference)
    @rule(data=st.data())
    def pool_reset(self, data) -> None:
        stream_id = data.draw(st.sampled_from(sorted(self.pool_reference)))
        self.pool.reset(stream_id)
        self.pool_reference[stream_id] = self.model.initial_state()

    @precondition(lambda self: self.pool_reference and self.snapshots)
    @rule(data=st.data())
    def pool_restore(self, data) -> None:
        stream_id = data.draw(st.sampled_from(sorted(self.pool_reference)))
        snap, reference = data.draw(st.sampled_from(self.snapshots))
        self.pool.restore(stream_id, snap)  # a Stream's snapshot of batch size 1 fits a pool stream
        self.pool_reference[stream_id] = {k: v.copy() for k, v in reference.items()}

    @precondition(lambda self: self.pool_reference)
    @rule(data=st.data())
    def pool_state_is_a_copy(self, data) -> None:
        stream_id = data.draw(st.sampled_from(sorted(self.pool_reference)))
        for array in self.pool.state(stream_id).values():
            array[...] = 123.0  # must not reach the pool (the invariant checks)

    @invariant()
    def states_match_the_reference(self) -> None:
        if not hasattr(self, "stream"):
            return
        for name, array in self.stream.state.items():
            np.testing.assert_allclose(array, self.reference[name], atol=ATOL)
        assert sorted(self.pool.streams) == sorted(self.pool_reference)
        for stream_id, reference in self.pool_reference.items():
            for name, array in self.pool.state(stream_id).items():
                np.testing.assert_allclose(array, reference[name], atol=ATOL)


@pytest.mark.parametrize(
    "build",
    [
        dict(cell="gru", input_kind="tokens"),
        dict(cell="lstm", input_kind="features", input_size=4, hidden_size=5, seed=2),
    ],
    ids=["tokens-gru", "features-lstm"],
)
def test_random_operation_sequences_match_the_reference(tmp_path, build):
    model = build_tiny_model(**build)
    model.save(tmp_path)
    machine = type("Machine", (StreamAndPool,), {"model": model})
    run_state_machine_as_test(machine, settings=SETTINGS)
