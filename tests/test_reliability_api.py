"""Hardening of the runtime API, case by case: each test reproduces a way state or the contract was lost.

Pool snapshots that were views, metadata that made the runtime allocate gigabytes, untrusted bytes that
escaped the error family, one validation rule for streams and pools, non-finite steps, foreign models'
data shape, the graph checksum and the step/chunk pair.
"""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import onnx
import pytest
from reliability_support import symbolic_model, token_doc, with_invalid_utf8

from edgernn.runtime import Stepper, contract
from edgernn.runtime.errors import ContractError, InputError


def assert_state_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


# --- 1. StreamPool.state() is a copy ------------------------------------------------------------------


def test_pool_snapshot_step_restore_goes_back(token_model):
    pool = Stepper(token_model.path).new_pool(4)
    a, b = pool.join(), pool.join()
    pool.step({a: 1, b: 2})
    snap = pool.state(a)
    kept = {k: v.copy() for k, v in snap.items()}
    pool.step({a: 3, b: 4})
    assert_state_equal(snap, kept)  # the snapshot did not move with the pool
    pool.restore(a, snap)
    assert_state_equal(pool.state(a), kept)


def test_writing_into_a_pool_state_does_not_write_into_the_pool(token_model):
    pool = Stepper(token_model.path).new_pool(2)
    a = pool.join()
    pool.step({a: 5})
    before = {k: v.copy() for k, v in pool.state(a).items()}
    pool.state(a)["h"][...] = 99.0
    assert_state_equal(pool.state(a), before)


# --- 2. metadata cannot make the runtime allocate gigabytes --------------------------------------------


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (token_doc(hidden_size=2**27), "hidden_size: expected at most 65536"),
        (token_doc(num_layers=10**6), "num_layers: expected at most 64"),
        (
            {**token_doc(), "input": {"kind": "tokens", "size": 10**7, "dtype": "int64"}},
            "size: expected at most",
        ),
        ({**token_doc(), "states": [token_doc()["states"][0]] * 10**4}, "at most 64 state tensors"),
    ],
)
def test_sizes_past_the_bounds_are_refused_fast_with_a_short_message(tmp_path, doc, message):
    path = tmp_path / "big.onnx"
    path.write_bytes(symbolic_model(doc))
    started = time.perf_counter()
    with pytest.raises(ContractError) as err:
        Stepper(path)
    assert time.perf_counter() - started < 5
    assert message in str(err.value) and len(str(err.value)) < 1500


def test_a_ten_million_entry_vocabulary_is_refused_before_it_is_parsed(tmp_path):
    doc = {
        **token_doc(),
        "input": {"kind": "tokens", "size": 10**7, "dtype": "int64", "vocabulary": ["a"] * 10**7},
    }
    path = tmp_path / "vocab.onnx"
    path.write_bytes(symbolic_model(doc))
    with pytest.raises(ContractError, match="more than the 8,388,608 edgernn reads") as err:
        Stepper(path)
    assert len(str(err.value)) < 300


def test_metadata_sizes_must_match_the_graphs_fixed_shapes(tmp_path):
    path = tmp_path / "symbolic.onnx"
    path.write_bytes(symbolic_model(token_doc(hidden_size=1000)))  # in bounds; the graph says "hidden"
    with pytest.raises(ContractError, match=r"input 'h': expected shape \(batch, 1, 1000\), found \['batch'"):
        Stepper(path)
    path.write_bytes(symbolic_model(token_doc(hidden_size=4), state_dims=["batch", 1, 4]))
    assert Stepper(path).step(3).shape == (9,)


def test_a_batch_past_the_allocation_bound_is_refused(token_model):
    stepper = Stepper(token_model.path)
    with pytest.raises(InputError, match=r"batch_size 10000000: expected at most \d+ for this model"):
        stepper.new_stream(10_000_000)
    with pytest.raises(InputError, match="capacity 10000000: expected at most"):
        stepper.new_pool(10_000_000)


# --- 3. untrusted bytes stay inside the error family --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "RecursionError"),
        ('{"schema_version": 1, "hidden_size": ' + "9" * 5000 + "}", "ValueError"),
        ('{"schema_version": 1, "hidden_size": NaN}', "NaN is not a JSON number"),
    ],
)
def test_hostile_metadata_json_is_a_contract_error(text, message):
    with pytest.raises(ContractError, match=message) as err:
        contract.parse_info(text)
    assert len(str(err.value)) < 400


@pytest.mark.parametrize("key", ["note", "edgernn"])
def test_invalid_utf8_in_the_metadata_is_a_contract_error_naming_the_file(tmp_path, token_model, key):
    path = tmp_path / "utf8.onnx"
    path.write_bytes(with_invalid_utf8(token_model.proto, key))
    with pytest.raises(ContractError, match=rf"{path}: its metadata cannot be read \(UnicodeDecodeError"):
        Stepper(path)


# --- 6 and issue 12 item 12: one validation rule for streams and pools ---------------------------------


@pytest.mark.parametrize(
    "readings", [[21, 49, 0, 7], np.array([21, 49, 0, 7], np.int16), np.arange(4, dtype=np.uint8)]
)
def test_integer_readings_are_features_cast_to_float32(feature_model, readings):
    stepper = Stepper(feature_model.path)
    want = Stepper(feature_model.path).step(np.asarray(readings, np.float32))
    np.testing.assert_array_equal(stepper.step(readings), want)
    pool = Stepper(feature_model.path).new_pool(2)
    a = pool.join()
    np.testing.assert_array_equal(pool.step({a: readings})[a], want)


@pytest.mark.parametrize(
    "bad",
    [np.array([True, False, True, False]), np.zeros(4, complex), np.array(["1", "2", "3", "4"]), [None] * 4],
)
def test_bool_complex_text_and_objects_are_refused_for_features_alike(feature_model, bad):
    stepper = Stepper(feature_model.path)
    with pytest.raises(InputError, match="expected numbers"):
        stepper.step(bad)
    pool = stepper.new_pool(2)
    a, b = pool.join(), pool.join()
    before = pool.state(a)
    with pytest.raises(InputError, match=f"stream {b}: x: expected numbers"):
        pool.step({a: np.zeros(4, np.float32), b: bad})
    assert_state_equal(pool.state(a), before)


def test_a_bool_token_among_ints_is_refused_by_the_pool_as_by_a_stream(token_model):
    stepper = Stepper(token_model.path)
    with pytest.raises(InputError):
        stepper.step(True)
    pool = stepper.new_pool(3)
    a, b = pool.join(), pool.join()
    with pytest.raises(InputError, match=f"stream {b}: x: expected integer token ids"):
        pool.step({a: 3, b: True})
    with pytest.raises(InputError, match=f"stream {b}: x: expected integer token ids"):
        pool.step({a: 3, b: 2.0})


@pytest.mark.parametrize("alias", [True, 1.0, np.float64(1.0)])
def test_bool_and_float_stream_ids_do_not_alias_int_ids(token_model, alias):
    pool = Stepper(token_model.path).new_pool(3)
    pool.join(), pool.join()
    before = pool.state(1)
    with pytest.raises(InputError, match="expected int stream ids"):
        pool.step({alias: 3})
    for call in (pool.state, pool.reset, pool.leave):
        with pytest.raises(InputError, match="unknown stream id"):
            call(alias)
    assert_state_equal(pool.state(1), before)
    assert pool.step({np.int64(1): 3}).keys() == {1}  # numpy ints are ints


# --- 7. non-finite results -------------------------------------------------------------------------------


def huge_state(stepper_or_stream) -> dict:
    return {k: np.full_like(v, 3e38) for k, v in stepper_or_stream.snapshot().items()}


def test_a_step_that_comes_out_non_finite_raises_and_keeps_the_state(two_output_model_path):
    stepper = Stepper(two_output_model_path, state_map={"total": "total_next"})
    stepper.restore(huge_state(stepper))  # finite, but twice it is not (the "double" output)
    before = stepper.snapshot()
    for x in (np.zeros(3, np.float32), np.full(3, 3e38, np.float32)):
        with pytest.raises(InputError, match="came out NaN or infinite"):
            stepper.step(x)
        assert_state_equal(stepper.snapshot(), before)
    stepper.restore(stepper.snapshot())  # the stream's own snapshot can always be restored
    stepper.reset()
    assert np.isfinite(stepper.step(np.ones(3, np.float32))[0]).all()


def test_non_finite_steps_raise_in_run_and_in_the_pool(tmp_path):
    doc = token_doc(hidden_size=3)
    proto = onnx.load_from_string(symbolic_model(doc, state_dims=["batch", 1, 3]))
    # h_next = h * 10: a huge restored state overflows on the next step
    ten = onnx.numpy_helper.from_array(np.array(10.0, np.float32), "ten")
    proto.graph.initializer.append(ten)
    proto.graph.node[1].CopyFrom(onnx.helper.make_node("Mul", ["h", "ten"], ["h_next"]))
    path = tmp_path / "grow.onnx"
    path.write_bytes(proto.SerializeToString())
    stepper = Stepper(path)
    stepper.restore({"h": np.full((1, 1, 3), 1e37, np.float32)})
    before = stepper.snapshot()
    with pytest.raises(InputError, match="NaN or infinite"):
        stepper.run([1, 2, 3])
    assert_state_equal(stepper.snapshot(), before)
    pool = stepper.new_pool(2)
    a, b = pool.join(), pool.join()
    pool.restore(b, {"h": np.full((1, 1, 3), 1e38, np.float32)})
    before = pool.state(b)
    with pytest.raises(InputError, match="no stream's state moved"):
        pool.step({a: 1, b: 1})
    assert_state_equal(pool.state(b), before)


# --- 9. foreign models: the declared data shape -----------------------------------------------------------


def unknown_length_model(foreign_model) -> bytes:
    proto = onnx.ModelProto()
    proto.CopyFrom(foreign_model.proto)
    dim = proto.graph.input[0].type.tensor_type.shape.dim[1]
    dim.Clear()  # input: [batch, ?], as Silero VAD's
    return proto.SerializeToString()


def test_a_declared_data_shape_refuses_chunks_of_another_length(foreign_model, tmp_path):
    path = tmp_path / "vad.onnx"
    path.write_bytes(unknown_length_model(foreign_model))
    options = {"state_map": foreign_model.state_map, "constants": {"sr": 16000}}
    with pytest.warns(UserWarning, match=r"axes of unknown size \[batch, \?\].*data_shape="):
        Stepper(path, **options)
    stepper = Stepper(path, data_shape=("batch", 64), **options)
    before = stepper.snapshot()
    with pytest.raises(
        InputError, match=r"x: expected features of shape \(1, 64\) or \(64,\), got shape \(32,\)"
    ):
        stepper.step(np.zeros(32, np.float32))
    assert_state_equal(stepper.snapshot(), before)
    y = stepper.step(np.ones(64, np.float32))
    want, _ = foreign_model.step(np.ones((1, 64), np.float32), np.zeros((2, 1, 16), np.float32), 16000)
    np.testing.assert_allclose(y, want[0], atol=1e-6)
    with pytest.raises(InputError, match="data_shape: expected a shape for 'input'"):
        Stepper(path, data_shape=("batch", 64, 2), **options)
    with pytest.raises(InputError, match="data_shape: only for models without edgernn metadata"):
        Stepper(foreign_model.path.with_name("token_gru.onnx"), data_shape=("batch",))


def test_a_failed_foreign_step_names_the_shape_given_and_onnxruntime_stays_quiet(
    foreign_model, tmp_path, capfd
):
    path = tmp_path / "vad.onnx"
    path.write_bytes(unknown_length_model(foreign_model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stepper = Stepper(path, state_map=foreign_model.state_map, constants={"sr": 16000})
    capfd.readouterr()
    with pytest.raises(InputError, match=r"could not run a step with x of shape \(1, 32\)"):
        stepper.step(np.zeros(32, np.float32))
    assert capfd.readouterr().err == ""  # onnxruntime's own error lines no longer reach stderr


def test_bench_works_on_a_foreign_model_with_a_declared_shape(foreign_model, tmp_path):
    from edgernn.runtime import bench_stepper

    path = tmp_path / "vad.onnx"
    path.write_bytes(unknown_length_model(foreign_model))
    stepper = Stepper(
        path, state_map=foreign_model.state_map, constants={"sr": 16000}, data_shape=["batch", 64]
    )
    stats = bench_stepper(stepper, steps=50, warmup=5)
    assert stats.steps == 50 and stats.p50_us > 0


# --- 10. the graph checksum, and the step/chunk pair -------------------------------------------------------


def sealed(token_model, tmp_path):
    from edgernn.export.exporter import seal

    proto = onnx.ModelProto()
    proto.CopyFrom(token_model.proto)
    content, info = seal(proto, token_model.info)
    path = tmp_path / "sealed.onnx"
    path.write_bytes(content)
    return path, content, info


def test_a_flipped_weight_byte_is_refused_at_load(token_model, tmp_path):
    path, content, info = sealed(token_model, tmp_path)
    assert info.graph_sha256 and info.schema_version == 2
    assert Stepper(path).step(3).shape == (9,)
    weights = token_model.weights["V"].tobytes()
    at = content.find(weights) + 5
    path.write_bytes(content[:at] + bytes([content[at] ^ 0x10]) + content[at + 1 :])
    with pytest.raises(ContractError, match="does not match the checksum in its metadata"):
        Stepper(path)
    Stepper(path, verify_checksum=False)  # the documented switch skips the hash


def test_version_1_files_without_a_checksum_still_load(token_model):
    text = {p.key: p.value for p in token_model.proto.metadata_props}[contract.METADATA_KEY]
    doc = json.loads(text)
    doc["schema_version"] = 1
    assert contract.parse_info(json.dumps(doc)).graph_sha256 is None
    assert Stepper(token_model.path).info.graph_sha256 is None
