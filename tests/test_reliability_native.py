"""NativeStepper (the generated C through ctypes) and the onnxruntime Stepper follow one set of input rules
(``edgernn.runtime.inputs``): the same x and state accepted, the same refused with the same message, the
same allocation bound; and a closed stepper says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from native_support import native_pair

from edgernn.runtime import Stepper
from edgernn.runtime.errors import InputError
from edgernn.runtime.native import NativeStepper

KINDS = (("gru", "tokens"), ("lstm", "features"))


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("native_rules")


@pytest.fixture(scope="module")
def pairs(roots) -> dict[str, tuple[NativeStepper, Stepper]]:
    return {kind: native_pair(roots, cell, kind) for cell, kind in KINDS}


def _outcome(call) -> tuple[str, object]:
    try:
        return "ok", call()
    except InputError as exc:
        return "InputError", str(exc)


def _same(native_call, stepper_call) -> tuple[str, object]:
    """Both runtimes give the same outcome: equal results (float32 tolerance), or the same message."""
    a, b = _outcome(native_call), _outcome(stepper_call)
    assert a[0] == b[0], (a, b)
    if a[0] == "ok" and a[1] is not None:
        np.testing.assert_allclose(a[1], b[1], rtol=1e-4, atol=1e-5)
    else:
        assert a[1] == b[1]
    return a


TOKENS = [
    3, np.int64(3), [3], np.array([3], np.int32), np.array(3, np.uint8), np.array([3], np.uint64),
    9, -1, [2, 9], 2.5, np.array([3.0]), True, [True], np.array([True]), "a", None, [[1]], [1, 2], [],
    10**30, object(),
]  # fmt: skip
FEATURES = [
    [1, 2, 3, 4, 5], np.arange(5), np.arange(5, dtype=np.int16), np.arange(5, dtype=np.uint8),
    [0.5, -1.0, 2.0, 0.0, 1.0], np.linspace(-1, 1, 5), np.linspace(-1, 1, 5).astype(np.float16),
    np.ones((1, 5), np.float32), [1e39, 0.0, 0.0, 0.0, 0.0], [0.0, np.nan, 0.0, 0.0, 0.0],
    np.array([np.inf, 0, 0, 0, 0], np.float32), np.ones(5, bool), [0, True, 0, 0, 0], np.ones(5, complex),
    np.ones(4, np.float32), np.ones((2, 5), np.float32), "abcde", None, [[1, 2], [3]],
]  # fmt: skip


@pytest.mark.parametrize("kind", ["tokens", "features"])
def test_a_step_accepts_and_refuses_what_the_onnxruntime_stepper_does(pairs, kind):
    native, stepper = pairs[kind]
    a, b = native.new_stream(), stepper.new_stream()
    outcomes = []
    for x in TOKENS if kind == "tokens" else FEATURES:
        outcomes.append(_same(lambda a=a, x=x: a.step(x), lambda b=b, x=x: b.step(x))[0])
        for name, value in b.state.items():  # a refused step moved neither state
            np.testing.assert_allclose(a.state[name], value, rtol=1e-4, atol=1e-5)
    assert "ok" in outcomes and "InputError" in outcomes
    if kind == "features":  # integer readings, which the C stepper refused before: converted to float32
        assert outcomes[:4] == ["ok"] * 4


@pytest.mark.parametrize("kind", ["tokens", "features"])
def test_a_sequence_and_a_batch_follow_the_same_rules(pairs, kind):
    native, stepper = pairs[kind]
    rng = np.random.default_rng(0)
    if kind == "tokens":
        good = [rng.integers(0, 9, size=(2, 6)), rng.integers(0, 9, size=(2, 6)).astype(np.int8).tolist()]
        bad = [np.full((2, 6), 9), rng.random((2, 6)), np.zeros((2, 0), np.int64), np.zeros((3, 6), np.int64)]
    else:
        good = [rng.integers(-3, 3, size=(2, 6, 5)), rng.standard_normal((2, 6, 5))]
        bad = [np.full((2, 6, 5), 1e39), np.zeros((2, 6, 5), bool), np.zeros((2, 6, 4), np.float32)]
    a, b = native.new_stream(2), stepper.new_stream(2)
    for xs in [*good, *bad]:
        _same(lambda a=a, xs=xs: a.run(xs), lambda b=b, xs=xs: b.run(xs))
        if np.shape(xs)[1] == 0:
            continue
        _same(
            lambda a=a, xs=xs: a.step(np.asarray(xs)[:, 0]), lambda b=b, xs=xs: b.step(np.asarray(xs)[:, 0])
        )
        for name, value in b.state.items():
            np.testing.assert_allclose(a.state[name], value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["tokens", "features"])
def test_a_restored_state_follows_the_same_rules(pairs, kind):
    """float64 beyond float32's range (1e39) was accepted by the C stepper and turned its state to inf."""
    native, stepper = pairs[kind]
    a, b = native.new_stream(), stepper.new_stream()
    a.step(1 if kind == "tokens" else np.ones(5, np.float32))
    kept = a.state
    names = list(kept)
    shape = kept[names[0]].shape
    snapshots = [
        {n: np.full(shape, 1e39) for n in names},
        {n: np.full(shape, np.nan, np.float32) for n in names},
        {n: np.zeros(shape, np.int64) for n in names},
        {n: np.zeros(shape, bool) for n in names},
        {n: np.zeros((2, *shape[1:])) for n in names},
        {n: [[[0.0, True]]] for n in names},
        {},
        {**{n: np.zeros(shape) for n in names}, "extra": np.zeros(shape)},
        [np.zeros(shape)],
        {n: "zeros" for n in names},
    ]
    for snapshot in snapshots:
        outcome = _same(lambda s=snapshot: a.restore(s), lambda s=snapshot: b.restore(s))
        assert outcome[0] == "InputError"
        for name, value in kept.items():
            np.testing.assert_array_equal(a.state[name], value)
    good = {n: np.full(shape, 0.25) for n in names}  # float64 in range: converted
    _same(lambda: a.restore(good), lambda: b.restore(good))
    assert all(v.dtype == np.float32 for v in a.state.values())
    np.testing.assert_allclose(
        a.step(2 if kind == "tokens" else np.ones(5)),
        b.step(2 if kind == "tokens" else np.ones(5)),
        rtol=1e-4,
        atol=1e-5,
    )


def test_the_native_stepper_has_the_stepper_s_allocation_bound(pairs):
    """new_stream(10**7) asked the allocator for 2.42 GiB (a MemoryError) where the Stepper refuses."""
    for native, stepper in pairs.values():
        for runtime in (native, stepper):
            with pytest.raises(InputError, match=r"batch_size 10000000: expected at most \d+ .*256\.0 MiB"):
                runtime.new_stream(10**7)
            for bad in (0, -1, True, 2.0):
                with pytest.raises(InputError, match="batch_size: expected a positive integer"):
                    runtime.new_stream(bad)
        assert native.new_stream(1000).batch_size == 1000


def test_a_closed_stepper_says_so_and_its_streams_keep_working(pairs, roots):
    """step after close() was an AttributeError ('NoneType' object has no attribute 'step')."""
    for (cell, kind), (native, _) in zip(KINDS, pairs.values(), strict=True):
        size = native.info.output.size
        for runtime in (NativeStepper(native.path, name="model"), Stepper(roots / f"{cell}-{kind}.onnx")):
            x = 1 if runtime.info.input.kind == "tokens" else np.ones(5, np.float32)
            stream = runtime.new_stream()
            runtime.step(x)
            runtime.close()
            name = type(runtime).__name__
            for call in (
                lambda r=runtime, x=x: r.step(x), lambda r=runtime, x=x: r.run([x]), lambda r=runtime: r.state,
                lambda r=runtime: r.new_stream(), lambda r=runtime: r.reset(), lambda r=runtime: r.info,
            ):  # fmt: skip
                with pytest.raises(InputError, match=f"this {name} is closed"):
                    call()
            runtime.close()  # twice: nothing to do
            assert stream.step(x).shape == (size,)
    with NativeStepper(pairs["tokens"][0].path, name="model") as scoped:
        scoped.step(1)
    with pytest.raises(InputError, match="is closed"):
        scoped.step(1)
