"""The stepper: one session, many streams, explicit state, and every bad input refused before it runs."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from edgernn.runtime import Stepper, contract
from edgernn.runtime.bench import LatencyStats, bench_stepper, measure
from edgernn.runtime.describe import describe
from edgernn.runtime.errors import ContractError, InputError
from edgernn.runtime.generate import decode, encode, generate

RNG = np.random.default_rng(0)


def assert_state_equal(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def assert_state_close(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


def feature_xs(batch: int, steps: int, size: int = 4) -> np.ndarray:
    return RNG.standard_normal((batch, steps, size)).astype(np.float32)


def token_xs(batch: int, steps: int, vocab_size: int = 9) -> np.ndarray:
    return RNG.integers(0, vocab_size, size=(batch, steps))


# --- values: the stepper computes what the graph's numpy reference computes ---------------------------


def test_token_step_matches_the_reference(token_model):
    stepper = Stepper(token_model.path)
    state = token_model.initial_state(1)
    for token in (3, 0, 8, 8):
        want, state = token_model.step(np.array([token]), state)
        got = stepper.step(token)
        assert got.shape == (9,) and got.dtype == np.float32
        np.testing.assert_allclose(got, want[0], rtol=1e-5, atol=1e-6)
    assert_state_close(stepper.state, state)


def test_feature_step_matches_the_reference_and_converts_float64(feature_model):
    stepper = Stepper(feature_model.path)
    state = feature_model.initial_state(1)
    for x in RNG.standard_normal((5, 4)):  # float64 rows: converted to float32
        want, state = feature_model.step(x[None].astype(np.float32), state)
        np.testing.assert_allclose(stepper.step(x), want[0], rtol=1e-5, atol=1e-6)
    assert sorted(stepper.state) == ["c", "h"]
    assert_state_close(stepper.state, state)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_run_equals_stepping_one_at_a_time(token_model, feature_model, batch_size):
    for model, xs in ((token_model, token_xs(batch_size, 7)), (feature_model, feature_xs(batch_size, 7))):
        stepper = Stepper(model.path)
        whole, stepped = stepper.new_stream(batch_size), stepper.new_stream(batch_size)
        ys = whole.run(xs)
        one_at_a_time = np.stack([stepped.step(xs[:, t]) for t in range(xs.shape[1])], axis=1)
        assert ys.shape == (batch_size, 7, model.info.output.size)
        np.testing.assert_array_equal(ys, one_at_a_time)
        assert_state_equal(whole.state, stepped.state)
        want, want_state = model.run(xs, model.initial_state(batch_size))
        np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-5)
        assert_state_close(whole.state, want_state)


def test_unbatched_run_returns_time_by_output(token_model):
    stepper = Stepper(token_model.path)
    ys = stepper.run([1, 2, 3, 4])
    assert ys.shape == (4, 9)
    fresh = Stepper(token_model.path)
    np.testing.assert_array_equal(ys, fresh.run(np.array([[1, 2, 3, 4]]))[0])


def test_reset_returns_to_the_initial_state(feature_model):
    stepper = Stepper(feature_model.path)
    first = stepper.run(feature_xs(1, 3)[0])
    assert np.abs(stepper.state["h"]).max() > 0
    stepper.reset()
    assert_state_equal(stepper.state, feature_model.initial_state(1))
    stepper.run(feature_xs(1, 3)[0])
    stepper.reset()
    replay = Stepper(feature_model.path)
    xs = feature_xs(1, 3)[0]
    np.testing.assert_array_equal(stepper.run(xs), replay.run(xs))
    assert first.shape == (3, 4)


def test_snapshot_restore_mid_sequence_equals_never_stopping(feature_model):
    xs = feature_xs(2, 10)
    stepper = Stepper(feature_model.path)
    straight = stepper.new_stream(2)
    want = straight.run(xs)

    stream = stepper.new_stream(2)
    first_half = stream.run(xs[:, :5])
    snap = stream.snapshot()
    stream.run(feature_xs(2, 4))  # wander off
    stream.restore(snap)
    second_half = stream.run(xs[:, 5:])
    np.testing.assert_array_equal(np.concatenate([first_half, second_half], axis=1), want)
    assert_state_equal(stream.state, straight.state)


def test_snapshot_and_state_are_copies(token_model):
    stepper = Stepper(token_model.path)
    stepper.step(2)
    snap = stepper.snapshot()
    before = snap["h"].copy()
    stepper.state["h"][:] = 100.0  # mutating a copy changes nothing
    stepper.step(5)
    np.testing.assert_array_equal(snap["h"], before)
    assert np.abs(stepper.state["h"]).max() <= 1.0  # tanh state never reached 100


def test_state_setter_starts_from_the_given_state(token_model):
    stepper = Stepper(token_model.path, batch_size=2)
    start = {"h": RNG.uniform(-1, 1, size=(2, 2, 6))}  # float64 is converted to float32
    stepper.state = start
    assert stepper.state["h"].dtype == np.float32
    want, want_state = token_model.step(np.array([4, 7]), {"h": start["h"].astype(np.float32)})
    np.testing.assert_allclose(stepper.step([4, 7]), want, rtol=1e-5, atol=1e-6)
    assert_state_close(stepper.state, want_state)


def test_interleaved_streams_equal_each_stream_alone(token_model):
    stepper = Stepper(token_model.path)
    xs_a, xs_b = token_xs(1, 6)[0], token_xs(1, 6)[0]
    a, b = stepper.new_stream(), stepper.new_stream()
    interleaved_a, interleaved_b = [], []
    for x_a, x_b in zip(xs_a, xs_b, strict=True):
        interleaved_a.append(a.step(x_a))
        interleaved_b.append(b.step(x_b))
    np.testing.assert_array_equal(np.stack(interleaved_a), stepper.new_stream().run(xs_a))
    np.testing.assert_array_equal(np.stack(interleaved_b), stepper.new_stream().run(xs_b))
    assert np.abs(stepper.state["h"]).max() == 0  # the default stream never moved


def test_batch_of_three_equals_three_streams_of_one(feature_model):
    stepper = Stepper(feature_model.path)
    xs = feature_xs(3, 6)
    batched = stepper.new_stream(batch_size=3)
    ys = batched.run(xs)
    for i in range(3):
        single = stepper.new_stream()
        np.testing.assert_allclose(ys[i], single.run(xs[i]), rtol=1e-5, atol=1e-6)
        for name, value in single.state.items():
            np.testing.assert_allclose(batched.state[name][i], value[0], rtol=1e-5, atol=1e-6)


def test_model_bytes_load_like_a_file(token_model):
    from_bytes = Stepper(token_model.proto.SerializeToString())
    np.testing.assert_array_equal(from_bytes.run([1, 2]), Stepper(token_model.path).run([1, 2]))


def test_session_defaults_for_tiny_models(token_model):
    stepper = Stepper(token_model.path)
    options = stepper.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert stepper.session.get_providers() == ["CPUExecutionProvider"]
    assert stepper.info.cell == "gru" and stepper.batch_size == 1
    assert stepper.new_stream().info is stepper.info
    assert Stepper(token_model.path, threads=2).session.get_session_options().intra_op_num_threads == 2


# --- models edgernn did not write ---------------------------------------------------------------------


def foreign_stepper(foreign_model, **kwargs) -> Stepper:
    return Stepper(foreign_model.path, state_map={"state": "stateN"}, constants={"sr": 16000}, **kwargs)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_foreign_model_with_state_map_and_constants(foreign_model, batch_size):
    stream = foreign_stepper(foreign_model).new_stream(batch_size)
    assert stream.state["state"].shape == (2, batch_size, 16)  # batch is not first: taken from the graph
    state = np.zeros((2, batch_size, 16), np.float32)
    for x in RNG.standard_normal((4, batch_size, 64)).astype(np.float32):
        want, state = foreign_model.step(x, state, 16000)
        np.testing.assert_allclose(stream.step(x), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stream.state["state"], state, rtol=1e-5, atol=1e-6)


def test_foreign_model_unbatched_step_and_run(foreign_model):
    stepper = foreign_stepper(foreign_model)
    xs = RNG.standard_normal((5, 64)).astype(np.float32)
    ys = stepper.run(xs)
    assert ys.shape == (5, 1)
    other = foreign_stepper(foreign_model)
    np.testing.assert_array_equal(ys, np.stack([other.step(x) for x in xs]))
    assert other.step(xs[0]).shape == (1,)


def test_state_shapes_override_with_batch_marker(foreign_model):
    stepper = foreign_stepper(foreign_model, state_shapes={"state": (2, "batch", 16)})
    assert stepper.new_stream(4).state["state"].shape == (2, 4, 16)
    x = RNG.standard_normal((1, 64)).astype(np.float32)
    want, _ = foreign_model.step(x, np.zeros((2, 1, 16), np.float32), 16000)
    np.testing.assert_allclose(stepper.step(x), want, rtol=1e-5, atol=1e-6)


def test_foreign_model_without_state_map_explains_how_to_pass_one(foreign_model):
    with pytest.raises(ContractError) as err:
        Stepper(foreign_model.path)
    message = str(err.value)
    assert "no edgernn metadata" in message and "state_map=" in message
    assert "Inputs: ['input', 'state', 'sr']; outputs: ['output', 'stateN']" in message


def test_foreign_model_without_its_constant_names_the_extra_input(foreign_model):
    with pytest.raises(ContractError, match=r"exactly one data input .* found \['input', 'sr'\]"):
        Stepper(foreign_model.path, state_map={"state": "stateN"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"state_map": {"hidden": "stateN"}}, "state_map: 'hidden' is not an input of the model"),
        ({"state_map": {"state": "next"}}, "state_map: 'next' is not an output of the model"),
        ({"constants": {"sr": 16000, "rate": 1}}, "constants: 'rate' is not an input of the model"),
        (
            {"constants": {"sr": "16k"}},
            "constants['sr']: expected a value of type tensor(int64), got dtype <U3",
        ),
        ({"constants": {"sr": 16000}, "state_shapes": {"st": (2, 1, 16)}}, "state_shapes: 'st' is not in"),
        ({"constants": {"sr": 16000}, "state_shapes": {"state": (2, -1, 16)}}, "expected positive integers"),
    ],
)
def test_foreign_model_bad_arguments(foreign_model, kwargs, message):
    kwargs = {"state_map": {"state": "stateN"}, **kwargs}
    with pytest.raises(InputError) as err:
        Stepper(foreign_model.path, **kwargs)
    assert message in str(err.value)


def test_foreign_model_with_several_results_returns_a_tuple_in_graph_order(two_output_model_path):
    stepper = Stepper(two_output_model_path, state_map={"total": "total_next"})
    double, negative = stepper.step([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(double, [2.0, 4.0, 6.0])
    np.testing.assert_array_equal(negative, [-1.0, -2.0, -3.0])
    doubles, negatives = stepper.new_stream(batch_size=2).run(np.ones((2, 4, 3)))
    assert doubles.shape == negatives.shape == (2, 4, 3)
    np.testing.assert_array_equal(negatives[:, :, 0], [[-1, -2, -3, -4]] * 2)
    np.testing.assert_array_equal(stepper.state["total"], [[1.0, 2.0, 3.0]])


def test_edgernn_model_refuses_foreign_arguments(token_model):
    with pytest.raises(InputError, match="state_map: only for models without edgernn metadata"):
        Stepper(token_model.path, state_map={"h": "h_next"})


def test_onnxruntime_failure_is_an_input_error_and_keeps_state(foreign_model):
    # A wrong override passes our checks (the graph declares no fixed size there) but not onnxruntime.
    stepper = foreign_stepper(foreign_model, state_shapes={"state": (2, 1, 8)})
    before = stepper.snapshot()
    with pytest.raises(InputError, match="onnxruntime could not run a step"):
        stepper.step(np.zeros(64, np.float32))
    assert_state_equal(stepper.state, before)


# --- refusals: the right error, a message naming expected and given, the state untouched --------------


def advanced(stepper: Stepper, xs) -> Stepper:
    stepper.run(xs)
    assert np.abs(stepper.state["h"]).max() > 0
    return stepper


@pytest.mark.parametrize(
    ("x", "message"),
    [
        ([1, 2], "x: expected token ids of shape (1,) or (), got shape (2,) (int64)"),
        ([[1]], "x: expected token ids of shape (1,) or (), got shape (1, 1)"),
        (3.0, "x: expected integer token ids (int64), got dtype float64"),
        (np.array([2], np.float32), "x: expected integer token ids (int64), got dtype float32"),
        (True, "x: expected integer token ids (int64), got dtype bool"),
        ("a", "x: expected integer token ids (int64), got dtype <U1"),
        (None, "x: expected integer token ids (int64), got dtype object"),
        (9, "x: expected token ids in [0, 9) (the vocabulary size), got [9]"),
        (np.array([-1], np.int8), "x: expected token ids in [0, 9) (the vocabulary size), got [-1]"),
        ([[1, 2], [3]], "x: expected an array of numbers, got list"),
    ],
)
def test_bad_token_inputs_are_refused_and_state_kept(token_model, x, message):
    stepper = advanced(Stepper(token_model.path), [1, 2, 3])
    before = stepper.snapshot()
    with pytest.raises(InputError) as err:
        stepper.step(x)
    assert message in str(err.value)
    assert_state_equal(stepper.state, before)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros(3), "x: expected features of shape (2, 4) (this stream's batch size is 2), got shape (3,)"),
        (np.zeros(4), "x: expected features of shape (2, 4) (this stream's batch size is 2), got shape (4,)"),
        (
            np.zeros((3, 4)),
            "x: expected features of shape (2, 4) (this stream's batch size is 2), got shape (3, 4)",
        ),
        (np.zeros((2, 4), bool), "x: expected numbers (float32), got dtype bool"),
        (np.zeros((2, 4), complex), "x: expected numbers (float32), got dtype complex128"),
        (np.full((2, 4), None), "x: expected numbers (float32), got dtype object"),
        (np.full((2, 4), "1.0"), "x: expected numbers (float32), got dtype <U3"),
        (np.array([[0, 0, np.nan, 0], [0] * 4]), "got 1 NaN/inf value(s), the first at index (0, 2)"),
        (np.array([[0] * 4, [0, np.inf, -np.inf, 0]]), "got 2 NaN/inf value(s), the first at index (1, 1)"),
        (np.full((2, 4), 1e300), "x: expected finite values, got 8 NaN/inf value(s)"),  # inf as float32
    ],
)
def test_bad_feature_inputs_are_refused_and_state_kept(feature_model, x, message):
    stream = advanced(Stepper(feature_model.path).new_stream(2), feature_xs(2, 3))
    before = stream.snapshot()
    with pytest.raises(InputError) as err:
        stream.step(x)
    assert message in str(err.value)
    assert_state_equal(stream.state, before)


def test_every_form_of_x_steps_as_the_reference_on_the_short_path_and_off_it(feature_model):
    """The short path (an x already float32 of the input's shape, batched or not) and the general one
    (anything converted) alternate through the two buffer sets; every step equals the reference."""
    stepper = Stepper(feature_model.path)
    state = feature_model.initial_state(1)
    rows = RNG.standard_normal((12, 4))
    forms = (
        lambda r: r.astype(np.float32), lambda r: r[None].astype(np.float32), lambda r: r.tolist(),
        lambda r: (r * 10).astype(np.int64), lambda r: r, lambda r: np.asfortranarray(r[None]).astype(np.float32),
    )  # fmt: skip
    for k, row in enumerate(rows):
        x = forms[k % len(forms)](row)
        want, state = feature_model.step(np.asarray(x, np.float32).reshape(1, 4), state)
        got = stepper.step(x)
        np.testing.assert_allclose(got.reshape(1, -1), want, rtol=1e-5, atol=1e-6)
        if isinstance(x, np.ndarray):
            x[...] = 7  # the caller's array is the caller's: the stream kept a copy of nothing
    assert_state_close(stepper.state, state)


@pytest.mark.parametrize("batched", [False, True])
def test_a_non_finite_float32_x_on_the_short_path_is_refused_with_its_own_message(feature_model, batched):
    """A float32 x of the right shape is checked for NaN and inf with the step's results (one probe):
    refused with the message a float64 x gets, the state never moved."""
    stepper = advanced(Stepper(feature_model.path), feature_xs(1, 3)[0])
    reference = Stepper(feature_model.path)
    reference.restore(stepper.snapshot())
    before = stepper.snapshot()
    for bad in ([0, 0, np.nan, 0], [np.inf, 0, 0, 0], [0, 0, 0, -np.inf]):
        x = np.array(bad, np.float32)
        with pytest.raises(InputError) as err:
            stepper.step(x[None] if batched else x)
        where = bad.index(next(v for v in bad if not np.isfinite(v)))
        assert str(err.value) == (
            f"x: expected finite values, got 1 NaN/inf value(s), the first at index (0, {where})"
        )
        assert_state_equal(stepper.snapshot(), before)
    good = np.ones(4, np.float32)
    np.testing.assert_array_equal(stepper.step(good), reference.step(good))  # nothing of the NaN stayed


def test_a_step_that_comes_out_non_finite_on_the_short_path_keeps_the_state(tmp_path):
    """An edgernn feature model whose state grows tenfold a step: restored near float32's top, the next
    step overflows; the short path hands it to the full one, which says so and moves nothing."""
    from onnx import TensorProto, helper, numpy_helper

    info = contract.make_info(
        cell="gru", num_layers=1, hidden_size=3,
        input=contract.InputSpec(kind="features", size=3, dtype="float32"),
        output=contract.OutputSpec(kind="values", size=3), edgernn_version="test",
    )  # fmt: skip
    nodes = [
        helper.make_node("Mul", ["h", "ten"], ["h_next"]),
        helper.make_node("Add", ["x", "bias"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "grow",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", 1, 3]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("h_next", TensorProto.FLOAT, ["batch", 1, 3]),
        ],
        [
            numpy_helper.from_array(np.array(10.0, np.float32), "ten"),
            numpy_helper.from_array(np.ones(3, np.float32), "bias"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", contract.OPSET)])
    proto.ir_version = contract.IR_VERSION
    helper.set_model_props(proto, {contract.METADATA_KEY: info.to_json()})
    path = tmp_path / "grow.onnx"
    path.write_bytes(proto.SerializeToString())
    stepper = Stepper(path)
    stepper.restore({"h": np.full((1, 1, 3), 1e38, np.float32)})
    before = stepper.snapshot()
    for x in (np.zeros(3, np.float32), np.zeros((1, 3), np.float32), [0.0, 0.0, 0.0]):
        with pytest.raises(InputError, match="came out NaN or infinite"):
            stepper.step(x)
        assert_state_equal(stepper.snapshot(), before)
    stepper.restore({"h": np.full((1, 1, 3), 2.0, np.float32)})
    np.testing.assert_array_equal(stepper.step(np.full(3, 0.5, np.float32)), [1.5, 1.5, 1.5])
    np.testing.assert_array_equal(stepper.state["h"], np.full((1, 1, 3), 20.0, np.float32))


@pytest.mark.parametrize(
    ("xs", "message"),
    [
        (np.zeros((2, 3)), "xs: expected features of shape (1, T, 4) or (T, 4), got shape (2, 3)"),
        (np.zeros((1, 0, 4)), "xs: expected at least one step, got shape (1, 0, 4)"),
        (np.zeros(4), "xs: expected features of shape (1, T, 4) or (T, 4), got shape (4,)"),
    ],
)
def test_bad_sequences_are_refused_and_state_kept(feature_model, xs, message):
    stepper = advanced(Stepper(feature_model.path), feature_xs(1, 3)[0])
    before = stepper.snapshot()
    with pytest.raises(InputError) as err:
        stepper.run(xs)
    assert message in str(err.value)
    assert_state_equal(stepper.state, before)


def test_nan_late_in_a_sequence_refuses_the_whole_run(feature_model):
    stepper = advanced(Stepper(feature_model.path), feature_xs(1, 3)[0])
    before = stepper.snapshot()
    xs = feature_xs(1, 6)[0]
    xs[4, 1] = np.nan
    with pytest.raises(InputError, match=r"the first at index \(0, 4, 1\)"):
        stepper.run(xs)
    assert_state_equal(stepper.state, before)


def test_unbatched_input_is_refused_for_a_larger_batch(token_model):
    stream = Stepper(token_model.path).new_stream(batch_size=3)
    with pytest.raises(
        InputError, match=r"expected token ids of shape \(3,\) \(this stream's batch size is 3\)"
    ):
        stream.step(4)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"h": np.zeros((1, 2, 5))}, "invalid state:\n  - expected names ['h', 'c'], got ['h']"),
        (
            {"h": np.zeros((1, 2, 5)), "c": np.zeros((1, 2, 5)), "z": 0},
            "expected names ['h', 'c'], got ['c', 'h', 'z']",
        ),
        (
            {"h": np.zeros((1, 2, 5)), "c": np.zeros((2, 5))},
            "c: expected shape (1, 2, 5) (float32), got (2, 5)",
        ),
        (
            {"h": np.zeros((1, 2, 5), np.int64), "c": np.zeros((1, 2, 5))},
            "h: expected floating-point values (float32), got dtype int64",
        ),
        (
            {"h": np.zeros((1, 2, 5)), "c": np.full((1, 2, 5), np.nan)},
            "c: expected finite values, got 10 NaN/inf value(s)",
        ),
        ([np.zeros((1, 2, 5))], "state: expected a dict of state name -> array, got list"),
    ],
)
def test_bad_state_on_restore_is_refused_and_state_kept(feature_model, state, message):
    stepper = advanced(Stepper(feature_model.path), feature_xs(1, 3)[0])
    before = stepper.snapshot()
    with pytest.raises(InputError) as err:
        stepper.restore(state)
    assert message in str(err.value)
    with pytest.raises(InputError):
        stepper.state = state
    assert_state_equal(stepper.state, before)


def test_every_state_problem_is_listed_at_once(feature_model):
    stepper = Stepper(feature_model.path)
    with pytest.raises(InputError) as err:
        stepper.restore({"h": np.zeros(3), "c": np.full((1, 2, 5), np.inf)})
    message = str(err.value)
    assert "h: expected shape (1, 2, 5) (float32), got (3,)" in message
    assert "c: expected finite values" in message


def test_restore_into_a_stream_of_another_batch_size_is_refused(token_model):
    stepper = Stepper(token_model.path)
    snap = stepper.new_stream(batch_size=2).snapshot()
    with pytest.raises(InputError, match=r"h: expected shape \(1, 2, 6\) \(float32\), got \(2, 2, 6\)"):
        stepper.restore(snap)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_batch_size_must_be_a_positive_integer(token_model, value):
    with pytest.raises(InputError, match=f"batch_size: expected a positive integer, got {value!r}"):
        Stepper(token_model.path).new_stream(batch_size=value)


# --- files and metadata -------------------------------------------------------------------------------


def test_missing_file_is_an_input_error(tmp_path):
    path = tmp_path / "nope.onnx"
    with pytest.raises(InputError, match=f"model file '{path}' does not exist; expected an .onnx file"):
        Stepper(path)


def test_directory_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        Stepper(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not an onnx model", b"\x08\x07\x12\x03abc\xff\xff"])
def test_corrupt_file_is_a_contract_error(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ContractError, match="is not an ONNX model onnxruntime can load"):
        Stepper(path)


def test_model_argument_of_the_wrong_type(token_model):
    with pytest.raises(InputError, match="model: expected a file path or bytes, got int"):
        Stepper(42)


def test_unknown_schema_version_in_a_file_is_refused(tmp_path, tiny_model_builder):
    doc = json.loads(tiny_model_builder().info.to_json())
    doc["schema_version"] = 99
    path = tiny_model_builder(metadata=json.dumps(doc)).save(tmp_path)
    with pytest.raises(ContractError, match=r"schema_version 99 is not supported; .* reads version\(s\) 1"):
        Stepper(path)


def test_corrupt_metadata_in_a_file_is_refused(tmp_path, tiny_model_builder):
    path = tiny_model_builder(metadata="{cell: gru").save(tmp_path)
    with pytest.raises(ContractError, match="edgernn metadata: the document is not valid JSON"):
        Stepper(path)


def test_metadata_that_does_not_match_the_graph_names_expected_and_found(tmp_path, tiny_model_builder):
    lstm_info = tiny_model_builder("lstm", "features", input_size=5, hidden_size=6).info
    path = tiny_model_builder("gru", "features", input_size=4, metadata=lstm_info.to_json()).save(tmp_path)
    with pytest.raises(ContractError) as err:
        Stepper(path)
    message = str(err.value)
    assert "the graph does not match its edgernn metadata" in message
    assert "inputs: expected ['c', 'h', 'x'], found ['h', 'x']" in message
    assert "outputs: expected ['c_next', 'h_next', 'y'], found ['h_next', 'y']" in message
    assert "input 'x': expected shape (batch, 5), found ['batch', 4]" in message
    assert "output 'y': expected shape (batch, 5), found ['batch', 4]" in message


def test_token_metadata_on_a_feature_graph_names_the_dtype(tmp_path, tiny_model_builder):
    token_info = tiny_model_builder("gru", "tokens", input_size=4).info
    path = tiny_model_builder("gru", "features", input_size=4, metadata=token_info.to_json()).save(tmp_path)
    with pytest.raises(ContractError) as err:
        Stepper(path)
    message = str(err.value)
    assert "input 'x': expected dtype int64, found tensor(float)" in message
    assert "input 'x': expected shape (batch,), found ['batch', 4]" in message


# --- generate -----------------------------------------------------------------------------------------


def greedy_reference(model, prompt: str, count: int) -> str:
    vocabulary = model.info.input.vocabulary
    ids = np.array([[vocabulary.index(c) for c in prompt]])
    logits, state = model.run(ids, model.initial_state(1))
    logits, out = logits[0, -1], []
    for _ in range(count):
        out.append(int(np.argmax(logits)))
        y, state = model.step(np.array([out[-1]]), state)
        logits = y[0]
    return "".join(vocabulary[i] for i in out)


def test_generate_is_repeatable_with_a_seed_and_stays_in_the_vocabulary(token_model):
    stepper = Stepper(token_model.path)
    text = generate(stepper, "abc", max_new_tokens=40, temperature=1.0, seed=7)
    assert text == generate(stepper, "abc", max_new_tokens=40, temperature=1.0, seed=7)
    assert len(text) == 40
    assert set(text) <= set(token_model.info.input.vocabulary)
    others = {generate(stepper, "abc", max_new_tokens=40, temperature=1.0, seed=s) for s in range(5)}
    assert len(others) > 1  # sampling, not a constant


def test_greedy_generation_follows_the_reference(token_model):
    stepper = Stepper(token_model.path)
    want = greedy_reference(token_model, "hag", 25)
    assert generate(stepper, "hag", max_new_tokens=25, temperature=0) == want
    assert generate(stepper, "hag", max_new_tokens=25, temperature=5.0, top_k=1, seed=3) == want


def test_generate_leaves_the_default_stream_alone(token_model):
    stepper = advanced(Stepper(token_model.path), [4, 5])
    before = stepper.snapshot()
    generate(stepper, "bad cafe", max_new_tokens=10, seed=0)
    assert_state_equal(stepper.state, before)


def test_generate_zero_tokens_is_empty(token_model):
    assert generate(Stepper(token_model.path), "a", max_new_tokens=0) == ""


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": "abz!"}, "text has characters outside the model's vocabulary: ['!', 'z']"),
        ({"prompt": ""}, "prompt: expected a non-empty string, got ''"),
        ({"temperature": -0.1}, "temperature: expected a finite number >= 0, got -0.1"),
        ({"top_k": 0}, "top_k: expected an integer >= 1 or None, got 0"),
        ({"max_new_tokens": -1}, "max_new_tokens: expected an integer >= 0, got -1"),
    ],
)
def test_generate_refuses_bad_arguments(token_model, kwargs, message):
    kwargs = {"prompt": "abc", **kwargs}
    with pytest.raises(InputError) as err:
        generate(Stepper(token_model.path), **kwargs)
    assert message in str(err.value)


def test_generate_needs_a_token_model_with_a_vocabulary(feature_model):
    with pytest.raises(InputError, match="needs an edgernn token model with a vocabulary"):
        generate(Stepper(feature_model.path), "abc")


def test_encode_decode_round_trip(token_model):
    ids = encode(token_model.info, "hah bad")
    assert ids.dtype == np.int64
    assert ids.tolist() == [7, 0, 7, 8, 1, 0, 3]
    assert decode(token_model.info, ids) == "hah bad"
    with pytest.raises(InputError, match=r"ids: expected values in \[0, 9\), got \[9\]"):
        decode(token_model.info, [1, 9])


# --- bench and describe -------------------------------------------------------------------------------


def test_measure_times_every_call_after_warmup():
    calls = []
    stats = measure(lambda: calls.append(1), steps=50, warmup=7)
    assert len(calls) == 57
    assert (stats.steps, stats.warmup) == (50, 7)
    assert 0 < stats.p50_us <= stats.p90_us <= stats.p99_us <= stats.max_us
    assert stats.steps_per_s == pytest.approx(1e6 / stats.mean_us, rel=1e-6)
    assert set(stats.to_dict()) == {
        "steps", "warmup", "p50_us", "p90_us", "p99_us", "max_us", "mean_us", "steps_per_s"
    }  # fmt: skip


@pytest.mark.parametrize("batch_size", [1, 4])
def test_bench_stepper_uses_its_own_stream(token_model, feature_model, batch_size):
    for model in (token_model, feature_model):
        stepper = Stepper(model.path)
        stats = bench_stepper(stepper, steps=30, warmup=5, batch_size=batch_size)
        assert isinstance(stats, LatencyStats) and stats.steps == 30 and stats.warmup == 5
        assert stats.max_us >= stats.p50_us > 0
        assert np.abs(stepper.state["h"]).max() == 0


def test_measure_refuses_no_steps():
    with pytest.raises(InputError, match="expected steps >= 1"):
        measure(lambda: None, steps=0, warmup=0)


def test_describe_an_edgernn_model(feature_model):
    doc = describe(feature_model.path)
    assert doc["path"] == str(feature_model.path)
    assert doc["size_bytes"] == feature_model.path.stat().st_size
    assert doc["inputs"] == [
        {"name": "x", "dtype": "float32", "shape": ["batch", 4]},
        {"name": "h", "dtype": "float32", "shape": ["batch", 2, 5]},
        {"name": "c", "dtype": "float32", "shape": ["batch", 2, 5]},
    ]
    assert [o["name"] for o in doc["outputs"]] == ["y", "h_next", "c_next"]
    assert doc["edgernn"] == json.loads(feature_model.info.to_json())
    assert doc["opset"] == contract.OPSET
    assert doc["metadata_keys"] == [contract.METADATA_KEY]
    assert doc["graph_name"] == "tiny" and doc["version"] is None
    json.dumps(doc)  # JSON-ready


def test_describe_a_foreign_model(foreign_model):
    doc = describe(foreign_model.path)
    assert doc["edgernn"] is None and doc["opset"] is None and doc["metadata_keys"] == []
    assert doc["inputs"][1] == {"name": "state", "dtype": "float32", "shape": [2, "batch", 16]}
    assert doc["inputs"][2] == {"name": "sr", "dtype": "int64", "shape": []}


def test_describe_a_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        describe(tmp_path / "missing.onnx")


# --- real exports (need torch and the exporter) -------------------------------------------------------


@pytest.fixture(scope="module", params=[("gru", "tokens"), ("lstm", "features")], ids=["gru", "lstm"])
def exported(request, tmp_path_factory):
    pytest.importorskip("torch")
    from edgernn.export import export_model
    from edgernn.models import ModelConfig, RecurrentModel

    cell, input_kind = request.param
    vocabulary = list("abcdefg") if input_kind == "tokens" else None
    config = ModelConfig(
        cell=cell,
        input_kind=input_kind,
        input_size=7 if vocabulary else 3,
        hidden_size=12,
        num_layers=2,
        output_size=7 if vocabulary else 2,
        output_kind="logits" if vocabulary else "values",
        embedding_size=8,
    )
    path = tmp_path_factory.mktemp("exported") / f"{cell}.onnx"
    export_model(RecurrentModel(config), path, vocabulary=vocabulary)
    return Stepper(path)


def exported_xs(stepper: Stepper, batch: int, steps: int) -> np.ndarray:
    if stepper.info.input.kind == "tokens":
        return token_xs(batch, steps, stepper.info.input.size)
    return feature_xs(batch, steps, stepper.info.input.size)


def test_exported_run_equals_stepping(exported):
    xs = exported_xs(exported, 2, 12)
    whole, stepped = exported.new_stream(2), exported.new_stream(2)
    ys = whole.run(xs)
    np.testing.assert_array_equal(ys, np.stack([stepped.step(xs[:, t]) for t in range(12)], axis=1))
    assert_state_equal(whole.state, stepped.state)
    assert ys.shape == (2, 12, exported.info.output.size)


def test_exported_snapshot_restore_mid_sequence(exported):
    xs = exported_xs(exported, 1, 10)[0]
    want = exported.new_stream().run(xs)
    stream = exported.new_stream()
    head = stream.run(xs[:4])
    snap = stream.snapshot()
    stream.run(exported_xs(exported, 1, 3)[0])
    stream.restore(snap)
    np.testing.assert_array_equal(np.concatenate([head, stream.run(xs[4:])]), want)


def test_exported_interleaved_streams(exported):
    xs_a, xs_b = exported_xs(exported, 1, 8)[0], exported_xs(exported, 1, 8)[0]
    a, b = exported.new_stream(), exported.new_stream()
    ys_a, ys_b = [], []
    for x_a, x_b in zip(xs_a, xs_b, strict=True):
        ys_a.append(a.step(x_a))
        ys_b.append(b.step(x_b))
    np.testing.assert_array_equal(np.stack(ys_a), exported.new_stream().run(xs_a))
    np.testing.assert_array_equal(np.stack(ys_b), exported.new_stream().run(xs_b))


def test_exported_batch_of_three_equals_three_streams(exported):
    xs = exported_xs(exported, 3, 9)
    batched = exported.new_stream(3)
    ys = batched.run(xs)
    for i in range(3):
        single = exported.new_stream()
        np.testing.assert_allclose(ys[i], single.run(xs[i]), rtol=1e-5, atol=1e-5)
        for name, value in single.state.items():
            np.testing.assert_allclose(batched.state[name][i], value[0], rtol=1e-5, atol=1e-5)
