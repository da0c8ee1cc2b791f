"""Keyword models on the device: the real FFT the C target writes for a windowed DFT matrix (recognised
from its values, against the dense product), the sparse mel product, the file's own logarithm, the
front end's marks and its cost apart in `bench --device`, inspect's front-end constants, and the
spoken-digit example on the emulated Cortex-M4 against `edgernn stream` on the host."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from device_support import require_device, require_mcu_examples

from edgernn.audio import dft_matrix, stacked_filterbank
from edgernn.cli import cli
from edgernn.export.c import fft, sparse
from edgernn.export.c.mathf import LOG_MAX_ULP, log_helper
from edgernn.runtime.audio import FrontEnd

ROOT = Path(__file__).resolve().parents[1]
FSDD = ROOT / "examples" / "data" / "fsdd"


def _need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        message = f"{tool} not found: install the Debian package {package}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


# --- recognising the DFT, and the FFT's arithmetic ------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000])
def test_the_graphs_dft_matrix_is_recognised_and_the_fft_matches_the_dense_product(rate):
    fe = FrontEnd.for_rate(rate)
    matrix = dft_matrix(fe)
    layout = fft.recognise(matrix)
    assert (layout.fft, layout.frame, layout.imag_sign) == (fe.fft, fe.frame, -1.0)
    np.testing.assert_array_equal(layout.window, matrix[:, 0])
    rng = np.random.default_rng(rate)
    for scale in (1.0, 1e-3):
        x = rng.uniform(-scale, scale, fe.frame).astype(np.float32)
        exact = x.astype(np.float64) @ matrix.astype(np.float64)
        dense = x @ matrix
        fast = fft.simulate(layout, x)
        peak = np.abs(exact).max()
        # the FFT's float32 error is of the dense product's size (both a few 1e-7 of the peak)
        assert np.abs(fast - exact).max() <= max(2.0 * np.abs(dense - exact).max(), 1e-6 * peak)
    assert fft.multiplications(layout) < matrix.size / 20  # 2,248 against 51,600 at 8 kHz
    power = fft.simulate(layout, x, power=True)
    bins = layout.bins
    np.testing.assert_allclose(power, exact[:bins] ** 2 + exact[bins:] ** 2, rtol=1e-4, atol=1e-6 * peak**2)


def test_only_a_windowed_real_dft_is_recognised():
    fe = FrontEnd.for_rate(8000)
    matrix = dft_matrix(fe)
    bins = matrix.shape[1] // 2
    assert fft.recognise(np.concatenate([matrix[:, :bins], -matrix[:, bins:]], axis=1)).imag_sign == 1.0
    off = matrix.copy()
    off[57, 31] += 1e-4  # one value off the DFT's
    swapped = np.concatenate([matrix[:, bins:], matrix[:, :bins]], axis=1)
    for other in (off, matrix.T, swapped, matrix[:, :-2], np.zeros_like(matrix), matrix[:, : 2 * 100]):
        assert fft.recognise(other) is None
    longer = fft.expected_matrix(np.hanning(300), 256).astype(np.float32)  # frame > fft points
    assert longer.shape == (300, 258) and fft.recognise(longer) is None


def test_the_mel_matrix_is_sparse_and_a_trained_matrix_is_not():
    assert sparse.is_sparse(stacked_filterbank(FrontEnd.for_rate(8000)))
    assert not sparse.is_sparse(np.random.default_rng(0).normal(size=(64, 96)).astype(np.float32))
    assert not sparse.is_sparse(np.eye(16, dtype=np.float32))  # small: stays dense


def test_the_files_own_logarithm_is_within_its_ulps_of_libms(tmp_path):
    _need("cc", "gcc")
    lines = ["#include <math.h>", "#include <stdint.h>", "#include <stdio.h>", "#include <string.h>"]
    lines += ["typedef union { float f; uint32_t u; } m_bits;", *log_helper("m")]
    lines += [
        "int main(void)",
        "{",
        "    double worst = 0.0;",
        "    uint32_t u;",
        "    for (u = 1; u < 0x7F800000u; u += 97) {",
        "        float x, r;",
        "        double want, e;",
        "        memcpy(&x, &u, 4);",
        "        want = log((double)x);",
        "        r = fabsf((float)want);",
        "        e = fabs((double)m_log(x) - want) / (double)(nextafterf(r, INFINITY) - r);",
        "        worst = e > worst ? e : worst;",
        "    }",
        '    printf("%.3f %g %g %g %g\\n", worst, (double)m_log(0.0f), (double)m_log(-1.0f),',
        "           (double)m_log(INFINITY), (double)m_log(1.0f));",
        "    return 0;",
        "}",
    ]
    (tmp_path / "log.c").write_text("\n".join(lines) + "\n")
    flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
    subprocess.run(["cc", *flags, "log.c", "-lm", "-o", "log"], cwd=tmp_path, check=True)
    worst, zero, negative, infinite, one = subprocess.run(
        [str(tmp_path / "log")], capture_output=True, text=True, check=True
    ).stdout.split()
    assert 0.5 < float(worst) <= LOG_MAX_ULP
    assert (zero, negative.lstrip("-"), infinite, one) == ("-inf", "nan", "inf", "0")


# --- a keyword model's C ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """A small keyword model trained for a few steps on the bundled clips and exported."""
    from edgernn.export import export_run
    from edgernn.models import ModelConfig
    from edgernn.train import TrainConfig, train_task

    base = tmp_path_factory.mktemp("keyword-device")
    config = TrainConfig(budget_minutes=None, max_steps=4, batch_size=8, eval_every=4, warmup_steps=0)
    train_task(
        None, FSDD, base / "run", ModelConfig(hidden_size=16), config,
        data_options={"augment": False}, progress=False,
    )  # fmt: skip
    export_run(base / "run", base / "digits.onnx")
    return base / "digits.onnx"


def test_the_c_step_computes_the_spectrum_as_an_fft_and_the_mel_bands_sparse(digits, tmp_path):
    from edgernn.export.c.generate import generate_sources

    for precision in ("float32", "int8"):
        sources = generate_sources(digits, name="kws", precision=precision)
        code = sources.files["kws.c"]
        assert "windowed real DFT of 200 samples as a 256-point real FFT" in code
        assert "re[k] = kr * kr + ki * ki; /* the power of bins k and N/2 - k */" in code  # the Mul fused
        assert "frontend_mel: 129 -> 32, its" in code and "nonzero weights of 4128" in code
        assert "kws_log(" in code and "logf(" not in code
        assert code.count("#ifdef KWS_BENCH_MARKS") == 2
        assert sources.flash_bytes < 60_000  # the dense DFT alone was 206,400 bytes in float32
    # the deploy check: 1,000 steps against the onnxruntime stepper on the host, front end included
    _need("cc", "gcc")
    result = CliRunner().invoke(cli, ["deploy", str(digits), "--target", "c", "-o", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "host self-test" in result.output


def test_bench_on_the_cortex_m4_reports_the_front_end_apart(digits, tmp_path):
    require_device("cortex-m4", mca=True)
    args = ["bench", str(digits), "--device", "cortex-m4", "--precision", "float32", "--steps", "4"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    import json

    row = json.loads(result.output)["results"][0]
    front, rest = row["front_end"], row["rest"]
    assert front["instructions"] + rest["instructions"] == row["instructions"]["median"]
    assert 5_000 < front["instructions"] < 60_000 and rest["instructions"] > 1_000
    assert 0 < front["cycles"] < row["cycles"]["estimate"]
    assert (
        front["graph_macs"] == 200 * 258 + 258 * 32
        and rest["graph_macs"] == row["macs"] - front["graph_macs"]
    )
    text = CliRunner().invoke(cli, args)
    assert re.search(
        r"float32: front end [\d,]+ instructions, [\d,]+ cycles \(est\., \d+% of the step", text.output
    )


def test_bench_on_this_machine_times_the_front_end_alone_beside_the_step(digits):
    import json

    args = ["bench", str(digits), "--steps", "200", "--warmup", "20"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert {"stepper", "floor", "front_end"} <= set(doc) and "baseline_onnx" not in doc
    assert doc["front_end"]["p50_us"] > 0 and np.isfinite(doc["ratios"]["front_end_share"])
    assert any("the front end's nodes alone" in note for note in doc["notes"])
    text = CliRunner().invoke(cli, ["bench", str(digits), "--steps", "50", "--warmup", "5"]).output
    assert re.search(r"front end = -?\d+% of a step \(p50s, the floor taken off both", text)


def test_the_front_end_alone_is_the_graphs_front_end(digits):
    from edgernn.bench_front_end import front_end_model
    from edgernn.runtime import Stepper

    alone, whole = Stepper(front_end_model(digits)), Stepper(digits)
    assert [s.input for s in alone.info.states] == [s.input for s in whole.info.states]
    a, w = alone.new_stream(), whole.new_stream()
    rng = np.random.default_rng(0)
    for _ in range(5):
        hop = rng.uniform(-0.5, 0.5, (1, 80)).astype(np.float32)
        assert not a.step(hop).any()  # y: zeros
        w.step(hop)
    np.testing.assert_array_equal(a.state["audio"], w.state["audio"])  # as the model carries it


def test_inspect_reports_trained_parameters_and_front_end_constants_apart(digits):
    import json

    doc = json.loads(CliRunner().invoke(cli, ["inspect", str(digits), "--json"]).output)
    rows = {w["name"]: w for w in doc["weights"]}
    assert rows["frontend.dft"]["role"] == rows["frontend.mel"]["role"] == "front end"
    assert (
        rows["frontend.dft"]["parameters"] == 0 and rows["frontend.dft"]["front_end_constants"] == 200 * 258
    )
    total = sum(w["front_end_constants"] for w in doc["weights"])
    assert doc["front_end_constants"] == total >= 200 * 258 + 258 * 32  # the DFT, the mel bands, ...
    assert doc["parameters"] == 3 * 16 * (32 + 16) + 6 * 16 + 16 * 11 + 11  # the GRU and its head
    shown = CliRunner().invoke(cli, ["inspect", str(digits)]).output
    assert f"weights: {doc['parameters']:,} trained parameters; the front end's constants" in shown
    assert "frontend.dft                 float32 front end" in shown


# --- the spoken-digit example ---------------------------------------------------------------------------


def test_mcu_spoken_digits_on_the_cortex_m4_hears_what_the_host_stream_hears(tmp_path):
    """examples/mcu `make digits` as written (a model trained on four speakers, fewer steps), its words
    and times against `edgernn stream` of the same audio."""
    require_mcu_examples()
    edgernn = Path(sys.executable).with_name("edgernn")

    def make_digits(precision: str) -> tuple[str, list[list[str]]]:
        done = subprocess.run(
            ["make", "--no-print-directory", "-C", str(ROOT / "examples" / "mcu"), "digits", f"BUILD={tmp_path}",
             f"EDGERNN={edgernn}", f"PYTHON={sys.executable}", "DIGITS_STEPS=400", "DIGITS_BENCH=0",
             f"DIGITS_PRECISION={precision}"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        out = done.stdout
        assert re.search(rf"{precision} model on the Cortex-M4F: flash \d+ bytes, RAM \d+ bytes", out)
        assert "listening: 65648 samples at 8000 Hz, 80-sample hops, 6 words spoken" in out
        assert "spoken: 3 (0.50-1.12 s) 1 (1.92-2.29 s) 4 (3.09-3.52 s)" in out
        lines = out.splitlines()
        heard = [line.split("\t") for line in lines if re.fullmatch(r"\d+\.\d\d s\t\d\t\d\.\d{3}", line)]
        assert f"heard {len(heard)} word(s) in 8.21 s of audio" in out
        return out, heard

    _, heard_int8 = make_digits("int8")  # the example as written
    _, heard = make_digits("float32")
    host = subprocess.run(
        [str(edgernn), "stream", str(tmp_path / "digits.onnx"), "--wav", str(tmp_path / "digits.wav")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    expected = [line.split("\t") for line in host.splitlines()]
    assert len(expected) >= 3, host
    # float32: the same words at the same times as the host's stepper and spotter
    assert [(t, w) for t, w, _ in heard] == [(t, w) for t, w, _ in expected]
    assert all(abs(float(a) - float(b)) < 1e-3 for (_, _, a), (_, _, b) in zip(heard, expected, strict=True))
    # int8: its own rounding may tip a word near the threshold; most of the host's are heard as they were
    same = {(t, w) for t, w, _ in heard_int8} & {(t, w) for t, w, _ in expected}
    assert len(same) >= len(expected) // 2, (heard_int8, expected)
