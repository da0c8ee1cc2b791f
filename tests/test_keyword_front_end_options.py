"""`edgernn train --mels / --running-ms`: the keyword front end chosen on the command line, kept by the run,
rebuilt by a resume, and refused where it does not apply."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from edgernn.audio import log_mel, running_normalise
from edgernn.cli import cli
from edgernn.runtime import Stepper
from edgernn.runtime.audio import FrontEnd, hops_of, read_bundle

ROOT = Path(__file__).resolve().parent.parent
LUCAS = ROOT / "examples" / "data" / "fsdd" / "lucas.npz"
VOWELS = ROOT / "examples" / "data" / "japanese_vowels_train.ts"
TINY = ["--steps", "2", "--hidden-size", "8", "--batch-size", "8", "--no-augment", "--quiet"]


@pytest.fixture(scope="module")
def run20(tmp_path_factory) -> Path:
    """A keyword run with 20 mel bands and a 500 ms running normalisation, trained 2 steps, resumed 1."""
    base = tmp_path_factory.mktemp("mels")
    runner = CliRunner()
    made = runner.invoke(
        cli, ["train", str(LUCAS), "-o", str(base / "run"), "--mels", "20", "--running-ms", "500", *TINY]
    )
    assert made.exit_code == 0, made.output
    resumed = runner.invoke(cli, ["train", "--resume", str(base / "run"), "--steps", "1", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    exported = runner.invoke(cli, ["export", str(base / "run"), "-o", str(base / "m.onnx")])
    assert exported.exit_code == 0, exported.output
    return base


def test_the_chosen_front_end_is_the_exported_models_and_survives_a_resume(run20):
    state = json.loads((run20 / "run" / "metrics.json").read_text())
    assert state["steps"] == 3  # 2 steps, then 1 more on the same data and front end
    info = Stepper(run20 / "m.onnx").info
    fe = info.extra["front_end"]
    assert fe["mels"] == 20 and fe["running_ms"] == 500.0 and len(fe["running_start"]) == 20
    assert info.input.size == 80
    assert [(s.input, s.shape) for s in info.states] == [("h", (1, 8)), ("audio", (1, 120 + 20))]


def test_the_exported_front_end_with_20_bands_streams_its_numpy_reference(run20):
    """The graph's log-mel and running mean, hop by hop, against the FFT reference, through a model
    whose recurrent part is cut off: the front end's frames are read from the running mean's state."""
    stepper = Stepper(run20 / "m.onnx")
    fe = FrontEnd.from_metadata(stepper.info.extra["front_end"])
    clip = read_bundle(LUCAS).audio[0].astype(np.float32) / 32768
    want = running_normalise(log_mel(clip, fe), fe)  # (T, 20): frame less its mean, the mean in the state
    stream = stepper.new_stream()
    means = []
    for hop in hops_of(read_bundle(LUCAS).audio[0], fe.hop):
        stream.step(hop)
        means.append(stream.state["audio"][0, 0, fe.overlap :].copy())
    centred = log_mel(clip, fe) - np.asarray(fe.running_start, np.float32)
    assert len(means) == len(want)
    np.testing.assert_allclose(centred - np.array(means), want, atol=2e-3)


def test_bands_beyond_half_the_dft_are_refused_in_one_line_and_nothing_is_written(tmp_path):
    result = CliRunner().invoke(
        cli, ["train", str(LUCAS), "-o", str(tmp_path / "run"), "--mels", "200", *TINY]
    )
    assert result.exit_code == 2
    assert (
        result.output.strip()
        .splitlines()[-1]
        .endswith("mels 200: expected 1 to 128 (half the 256-point DFT)")
    )
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_front_end_options_for_a_task_without_one_are_refused(tmp_path):
    result = CliRunner().invoke(
        cli, ["train", str(VOWELS), "-o", str(tmp_path / "run"), "--mels", "20", "--steps", "1"]
    )
    assert result.exit_code == 2
    assert "--mels: the keyword task's front end; the classify task has none" in result.output
    assert not (tmp_path / "run").exists()


def test_a_resume_refuses_new_data_options(run20):
    result = CliRunner().invoke(
        cli, ["train", "--resume", str(run20 / "run"), "--mels", "32", "--no-augment"]
    )
    assert result.exit_code == 2
    assert (
        "--resume continues the run on its own data and front end: drop --no-augment, --mels" in result.output
    )


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mels": "20"}, "data_options.mels: expected int, got '20'"),
        ({"mels": True}, "data_options.mels: expected int, got True"),
        ({"frames": 3}, "data_options: unknown option 'frames'"),
        ([1, 2], "data_options: expected a mapping, got list"),
    ],
)
def test_a_resume_state_with_lying_data_options_is_refused_and_left_as_it_was(
    run20, tmp_path, options, message
):
    run = tmp_path / "run"
    run.mkdir()
    for item in (run20 / "run").iterdir():
        (run / item.name).write_bytes(item.read_bytes())
    resume = run / "resume.safetensors"
    from safetensors import safe_open

    with safe_open(str(resume), framework="pt") as f:
        metadata = f.metadata()
    state = json.loads(metadata["state"])
    state["setup"]["data_options"] = options
    save_file(load_file(str(resume)), str(resume), metadata={**metadata, "state": json.dumps(state)})
    before = resume.read_bytes()
    result = CliRunner().invoke(cli, ["train", "--resume", str(run), "--steps", "1"])
    assert result.exit_code == 2, result.output
    assert str(resume) in result.output and message in result.output
    assert "Traceback" not in result.output and resume.read_bytes() == before


def test_a_20_band_model_deploys_to_integer_c_whose_self_test_passes(run20, tmp_path):
    """The integer front end (and the running mean in the state) sized by the graph's 20 bands."""
    if shutil.which("cc") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the C target needs a C compiler (Debian package gcc)", pytrace=False)
        pytest.skip("no C compiler: install the Debian package gcc")
    out = tmp_path / "c"
    args = ["deploy", str(run20 / "m.onnx"), "--target", "c", "-o", str(out), "--name", "kws"]
    result = CliRunner().invoke(cli, [*args, "--precision", "integer", "--data", str(LUCAS), "--force"])
    assert result.exit_code == 0, result.output
    assert "host self-test" in result.output and "equal the integer reference bit for bit" in result.output
    assert re.search(r"#define KWS_INPUT_SIZE\s+80\n", (out / "kws.h").read_text())
