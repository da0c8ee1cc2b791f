"""A keyword model in the integer C precision: the integer log-mel front end (``QLogMel``) against numpy's
FFT-based float front end on the bundled clips, at full scale, in digital silence and in -60 dBFS noise; a
trained keyword model deployed ``--precision integer`` (its gates on the clips), replayed bit for bit on the
host, the emulated Cortex-M0+ and rv32imc, with no float helper linked; a front end in another pattern
refused by name."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from device_support import require_device

from edgernn.audio import dft_matrix, frames_of, hann, mel_filterbank
from edgernn.cli import cli
from edgernn.export.c.devices.bench import self_test_on
from edgernn.export.c.devices.build import build
from edgernn.export.c.fft import recognise
from edgernn.export.c.integer_front_end import log_mel_op, match_log_mel
from edgernn.runtime.audio import FrontEnd, read_bundle
from edgernn.runtime.errors import ContractError
from edgernn.runtime.integer_front_end import q_log_mel, q_spectrum

FSDD = Path(__file__).resolve().parent.parent / "examples" / "data" / "fsdd"
S_OUT = 2 * 14.0 / 32767  # a log-mel output's scale: |log(1e-6)| < 14
FLOAT_HELPER = re.compile(
    r"__aeabi_[fd]\w*|__aeabi_[iul]+2[fd]|__(add|sub|mul|div|neg|cmp|eq|ne|lt|le|gt|ge|unord)[sd]f[23]"
    r"|__(float|fix|fixuns|extend|trunc)\w*[sd]f\w*"
)


def _op(fe: FrontEnd):
    layout = recognise(dft_matrix(fe))  # the window as the lowering recovers it from the graph's matrix
    bands = mel_filterbank(fe).astype(np.float64)
    return log_mel_op(None, None, layout.window.astype(np.float64), fe.fft, bands, 1e-6, 2.0**-15, S_OUT)


def _float_log_mel(frames: np.ndarray, fe: FrontEnd) -> np.ndarray:
    power = np.abs(np.fft.rfft(frames * hann(fe.frame), n=fe.fft)) ** 2
    return np.log(power @ mel_filterbank(fe).astype(np.float64) + 1e-6)


def _pcm(frames: np.ndarray) -> np.ndarray:
    return np.clip(np.round(frames * 32768), -32768, 32767).astype(np.int64)


def test_the_integer_log_mel_follows_numpy_fft_front_end_on_the_clips():
    """Every 5th clip of two speakers at 8 kHz: within 0.0025 of numpy's float64 front end (measured over
    all 250 bundled clips: 0.0021 at most, 2.5 steps of the output's int16 scale; docs/c.md)."""
    fe = FrontEnd()
    op = _op(fe)
    worst = 0.0
    for name in ("george", "lucas"):
        for clip in read_bundle(FSDD / f"{name}.npz").audio[::5]:
            frames = frames_of(clip.astype(np.float64) / 32768, fe)
            got = q_log_mel(op, _pcm(frames)) * S_OUT
            worst = max(worst, float(np.abs(got - _float_log_mel(frames, fe)).max()))
    assert 0 < worst < 0.0025, worst


@pytest.mark.parametrize("rate, loud_error", [(8000, 0.003), (16000, 0.015)])
def test_full_scale_silence_and_quiet_noise_neither_overflow_nor_lose_the_floor(rate, loud_error):
    """Loud frames (measured: 0.0023 at 8 kHz, 0.0138 at 16 kHz, in bands 100 dB below the frame's peak,
    at the floor: the FFT's rounding there) and -60 dBFS noise (0.0009) against float64."""
    fe = FrontEnd.for_rate(rate)
    op = _op(fe)
    silence = q_log_mel(op, np.zeros((1, fe.frame), np.int64)) * S_OUT
    assert np.abs(silence - np.log(1e-6)).max() < S_OUT  # the floor's log in every band, not garbage
    n = np.arange(fe.frame)
    rng = np.random.default_rng(0)
    loud = np.stack([
        np.full(fe.frame, 32767), np.where(n % 2, 32767, -32768), np.where((n // 2) % 2, 32767, -32768),
        np.round(32767 * np.sin(2 * np.pi * 1000 * n / rate)), rng.choice([-32768, 32767], fe.frame),
    ]).astype(np.int64)  # fmt: skip
    re_, im_ = q_spectrum(op, loud)
    assert np.abs(re_).max() < 2**31 and np.abs(im_).max() < 2**31  # the FFT's int32
    got = q_log_mel(op, loud) * S_OUT
    want = _float_log_mel(loud / 32768.0, fe)
    assert np.abs(got - want).max() < loud_error and want.max() > 8  # no wrap-around at full scale
    noise = np.round(rng.normal(0, 32768 * 10 ** (-60 / 20), (8, fe.frame))).astype(np.int64)  # -60 dBFS
    got = q_log_mel(op, noise) * S_OUT
    want = _float_log_mel(noise / 32768.0, fe)
    assert np.abs(got - want).max() < 0.002 and want.min() < -6


# --- a trained keyword model, deployed ----------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> Path:
    """A keyword model trained for a few steps on the bundled clips, deployed --precision integer with
    its gates (clip accuracy within 1 point of float32) on george's clips."""
    if shutil.which("cc") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the C target needs a C compiler (Debian package gcc)", pytrace=False)
        pytest.skip("no C compiler: install the Debian package gcc")
    from edgernn.export import export_run
    from edgernn.models import ModelConfig
    from edgernn.train import TrainConfig, train_task

    base = tmp_path_factory.mktemp("integer_keyword")
    config = TrainConfig(budget_minutes=None, max_steps=4, batch_size=8, eval_every=4, warmup_steps=0)
    options = {"augment": False}
    train_task(
        None, FSDD, base / "run", ModelConfig(hidden_size=16), config, data_options=options, progress=False
    )
    export_run(base / "run", base / "digits.onnx")
    out = base / "c"
    done = CliRunner().invoke(
        cli,
        ["deploy", str(base / "digits.onnx"), "--target", "c", "--precision", "integer", "-o", str(out),
         "--data", str(FSDD / "george.npz")],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "bit for bit" in done.output and "integer task metric: accuracy" in done.output
    return base


def test_the_host_replays_it_bit_for_bit_and_its_step_has_no_float(deployed):
    source = (deployed / "c" / "model.c").read_text()
    step_part = source.split("#ifndef EDGERNN_NO_FLOAT")[0]
    assert "float" not in step_part and "double" not in step_part and "#include <math.h>" not in source
    assert "log-mel:" in step_part and "q_log2(" in step_part


def test_the_cortex_m0plus_replays_it_bit_for_bit_and_links_no_float_helper(deployed, tmp_path):
    device = require_device("cortex-m0plus")
    out = deployed / "c"
    passed, error, output = self_test_on(device, out, tmp_path)
    assert passed and error == 0.0, output[-2000:]
    (tmp_path / "step_only.c").write_text(
        '#include "model.h"\nint main(void)\n{\n    model_state st; int16_t y[MODEL_OUTPUT_SIZE];\n'
        "    int16_t x[MODEL_INPUT_SIZE] = {0};\n    model_reset(&st);\n    x[3] = 1000;\n"
        "    return model_step(&st, x, y) == MODEL_OK && y[0] == 12345;\n}\n"
    )
    program = build(device, [tmp_path / "step_only.c", out / "model.c"], tmp_path / "step.elf",
                    include=(out,), defines=("EDGERNN_NO_FLOAT",))  # fmt: skip
    nm = device.compiler.replace("gcc", "nm")
    symbols = subprocess.run([nm, str(program.elf)], check=True, capture_output=True, text=True).stdout
    names = [line.split()[-1] for line in symbols.splitlines() if line.strip()]
    assert {n for n in names if FLOAT_HELPER.fullmatch(n)} == set()
    assert "__aeabi_lmul" in names  # the FFT's and the power's int64 products: an integer helper


def test_rv32imc_replays_it_bit_for_bit(deployed, tmp_path):
    device = require_device("rv32imc")
    passed, error, output = self_test_on(device, deployed / "c", tmp_path)
    assert passed and error == 0.0, output[-2000:]


def test_a_front_end_in_another_pattern_is_refused_by_name(deployed):
    from edgernn.export.c.generate import load_model, read_info
    from edgernn.export.c.lower import lower

    proto, _ = load_model(deployed / "digits.onnx")
    program = lower(proto, read_info(proto))
    at = next(i for i, op in enumerate(program.ops) if type(op).__name__ == "RealFFT")
    chain, fft, product, add, log = match_log_mel(program.ops, at)
    assert len(chain) == 4 and log.op == "Log"
    add.op = "Sub"
    with pytest.raises(ContractError, match=r"without \+ a floor; the integer front end takes a real FFT"):
        match_log_mel(program.ops, at)
    add.op, fft.power = "Add", False
    with pytest.raises(ContractError, match="spectrum is read as it is .* float32 or int8"):
        match_log_mel(program.ops, at)


def test_bench_counts_the_integer_log_mel_apart_on_the_cortex_m0plus(deployed):
    """bench --device: the integer step's log-mel between the front end's marks, the rest apart."""
    require_device("cortex-m0plus")
    done = CliRunner().invoke(
        cli,
        ["bench", str(deployed / "digits.onnx"), "--device", "cortex-m0plus", "--precision", "integer",
         "--data", str(FSDD / "george.npz"), "--steps", "2", "--json"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    (result,) = json.loads(done.stdout)["results"]
    front_end, rest = result["front_end"]["instructions"], result["rest"]["instructions"]
    assert front_end > 0 and rest > 0  # measured: 148,429 and 74,327 for the GRU 1x32 of the bench
    assert front_end + rest == pytest.approx(result["instructions"]["median"], rel=0.01)
