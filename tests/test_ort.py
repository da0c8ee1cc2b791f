"""The ``ort`` deploy target: ORT format files the Stepper opens, equal to the ONNX file over 1000 steps with
state fed back (float32 with its chunk graph, int8, fp16, bring-your-own), the reduced-build config, the
format version read from the file, a static batch of 1 with the mobile-usability verdict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from edge_models import export_byo, export_char

from edgernn.export.deploy import deploy
from edgernn.export.ort_format import CONFIG_NAME, OLDEST_RELEASE, ort_format_version
from edgernn.runtime import Stepper
from edgernn.runtime.chunk import probe_input
from edgernn.runtime.errors import InputError, ParityError

STEPS = 1000


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ort_models")
    return {
        "float32": export_char(root / "char.onnx", num_layers=2),
        "int8": export_char(root / "char-int8.onnx", "int8", "weights"),
        "fp16": export_char(root / "char-fp16.onnx", "fp16"),
        "byo": export_byo(root / "sensor.onnx"),
    }


def stepped(stepper: Stepper, xs: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return np.stack([stepper.step(x) for x in xs]), stepper.state


def assert_same(onnx_path: Path, ort_path: Path) -> None:
    """1000 steps, state fed back: the .ort's outputs and final state equal the .onnx's (within 1e-6)."""
    want_stepper = Stepper(onnx_path, chunk_model=False)
    xs = probe_input(want_stepper.info, STEPS)[0]
    want, want_state = stepped(want_stepper, xs)
    got, got_state = stepped(Stepper(ort_path, chunk_model=False), xs)
    assert got.shape == want.shape == (STEPS, want_stepper.info.output.size)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    for name in want_state:
        np.testing.assert_allclose(got_state[name], want_state[name], rtol=0, atol=1e-6)


def test_float32_model_and_its_chunk_graph_become_verified_ort_files(models, tmp_path):
    report = deploy(models["float32"], "ort", tmp_path / "ort")
    out = tmp_path / "ort"
    assert sorted(p for p, _ in report.files) == sorted(
        ["char.ort", "char.chunk.ort", CONFIG_NAME, "deploy.json"]
    )
    assert_same(models["float32"], out / "char.ort")
    stepper = Stepper(out / "char.ort")  # finds char.chunk.ort beside it
    assert stepper.chunk_steps is not None and stepper.info.extra["task"] == "charlm"
    reference = Stepper(models["float32"])
    xs = probe_input(reference.info, STEPS)[0]
    np.testing.assert_allclose(stepper.run(xs), reference.run(xs), rtol=0, atol=1e-6)
    np.testing.assert_allclose(stepper.state["h"], reference.state["h"], rtol=0, atol=1e-6)
    assert len(report.checks) == 2 and all("1000 steps" in c for c in report.checks)


def test_report_records_the_format_version_read_from_the_file(models, tmp_path):
    report = deploy(models["float32"], "ort", tmp_path / "ort")
    version = ort_format_version(tmp_path / "ort" / "char.ort")
    assert version == "6" and report.details["ort_format_version"] == version
    assert report.details["oldest_onnxruntime"] == OLDEST_RELEASE[version] == "1.16.0"
    assert report.details["optimization_style"] == "runtime"
    assert report.details["saved_runtime_optimizations"] == []
    manifest = json.loads((tmp_path / "ort" / "deploy.json").read_text())
    assert manifest["details"]["ort_format_version"] == "6" and manifest["target"] == "ort"
    assert any("oldest onnxruntime that loads it: 1.16.0" in note for note in report.notes)


def test_operator_config_has_type_reduction_and_the_build_command_uses_it(models, tmp_path):
    report = deploy(models["float32"], "ort", tmp_path / "ort")
    config = (tmp_path / "ort" / CONFIG_NAME).read_text()
    assert "GRU" in config  # the chunk graph's op: the config covers both graphs
    assert "Gemm" in config and '{"inputs": {"0": ["float"]}}' in config  # per-operator types
    build = next(note for note in report.notes if "build.sh" in note)
    for flag in (
        "--minimal_build",
        "--include_ops_by_config",
        CONFIG_NAME,
        "--enable_reduced_operator_type_support",
    ):
        assert flag in build


@pytest.mark.parametrize("kind", ["int8", "fp16", "byo"])
def test_quantized_and_bring_your_own_files_step_equal_to_the_onnx(models, tmp_path, kind):
    report = deploy(models[kind], "ort", tmp_path / "ort")
    ort_file = tmp_path / "ort" / (models[kind].stem + ".ort")
    assert ort_file.is_file() and not (tmp_path / "ort" / (models[kind].stem + ".chunk.ort")).exists()
    assert_same(models[kind], ort_file)
    assert report.details["largest_error"][ort_file.name] <= 1e-6


def test_int8_weights_ort_file_opens_with_the_folding_option(models, tmp_path):
    report = deploy(models["int8"], "ort", tmp_path / "ort")
    stepper = Stepper(tmp_path / "ort" / "char-int8.ort")
    options = stepper.session.get_session_options()
    assert options.get_session_config_entry("session.disable_quant_qdq") == "1"
    assert any("DequantizeLinear" in note for note in report.notes)
    # read from the file: older releases load this saved optimisation only with the folding option
    assert report.details["saved_runtime_optimizations"] == [
        "QDQSelectorActionTransformer.DQMatMulToMatMulNBits"
    ]
    assert any("session.disable_quant_qdq=1" in note for note in report.notes)


def test_static_batch_copy_is_fixed_at_one_and_checked_for_mobile(models, tmp_path):
    report = deploy(models["float32"], "ort", tmp_path / "ort", static_batch=True)
    static = tmp_path / "ort" / "char.batch1.ort"
    session = ort.InferenceSession(str(static), providers=["CPUExecutionProvider"])
    assert {i.name: i.shape[0] for i in session.get_inputs()} == {"x": 1, "h": 1}
    assert "char.batch1.ort" in report.details["largest_error"]
    verdicts = [n for n in report.notes if n.startswith("mobile usability:")]
    assert [v.split(" as is")[0].split("with ")[1] for v in verdicts] == [
        "NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram",
    ]  # fmt: skip
    assert isinstance(report.details["mobile_usability"]["try_nnapi_or_coreml"], bool)


def test_fixed_style_for_a_platform(models, tmp_path):
    report = deploy(
        models["float32"], "ort", tmp_path / "ort", optimization_style="fixed", target_platform="arm"
    )
    assert report.details["optimization_style"] == "fixed" and report.details["target_platform"] == "arm"
    assert_same(models["float32"], tmp_path / "ort" / "char.ort")
    assert "--minimal_build extended" not in next(n for n in report.notes if "build.sh" in n)


def test_a_file_that_differs_from_the_onnx_is_refused_and_nothing_is_written(models, tmp_path):
    # fixed style on amd64 fuses int8 weights into integer kernels: no longer the verified arithmetic
    with pytest.raises(ParityError, match="largest error"):
        deploy(models["int8"], "ort", tmp_path / "ort", optimization_style="fixed", target_platform="amd64")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "options, match",
    [
        ({"optimization_style": "fixed"}, "--target-platform"),
        ({"optimization_style": "runtime", "target_platform": "arm"}, "fixed only"),
        ({"optimization_style": "fast"}, "runtime, fixed"),
        ({"target_platform": "x86"}, "arm, amd64"),
    ],
)
def test_bad_style_options_are_refused(models, tmp_path, options, match):
    with pytest.raises(InputError, match=match):
        deploy(models["float32"], "ort", tmp_path / "ort", **options)
    assert list(tmp_path.iterdir()) == []
