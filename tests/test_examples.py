"""Every example runs as written (with a small model so the test stays fast)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from device_support import require_mcu_examples

from edgernn.data import build_vocabulary
from edgernn.export import export_model
from edgernn.models import ModelConfig, RecurrentModel

ROOT = Path(__file__).parents[1]


def _char_model(directory: Path, **options) -> tuple[Path, list[str]]:
    """An untrained GRU 1x16 character model over tinyshakespeare's vocabulary, exported to chars.onnx: (path, vocabulary)."""
    vocabulary = build_vocabulary(
        (ROOT / "examples" / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    )
    torch.manual_seed(0)
    config = ModelConfig(
        input_size=len(vocabulary), output_size=len(vocabulary), hidden_size=16, embedding_size=8
    )
    path = directory / "chars.onnx"
    export_model(RecurrentModel(config), path, vocabulary=vocabulary, **options)
    return path, vocabulary


def test_keyboard_streams_example(tmp_path):
    model_path, _ = _char_model(tmp_path)
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "keyboard_streams.py"), "--model", str(model_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for user in ("alice", "bob", "carol"):
        assert f"{user} typed" in done.stdout
    assert "keystrokes, median" in done.stdout
    generated = done.stdout.split("--- generated ---\n", 1)[1]
    assert generated.startswith("ROMEO:") and len(generated) > 200


def run_example(name: str, *args: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_anomaly_stream_example(tmp_path):
    out = run_example("anomaly_stream.py", "--steps", "300", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert "streamed 7501 samples" in out and "inside the window" in out
    assert (tmp_path / "run" / "anomaly.png").read_bytes().startswith(b"\x89PNG")


def test_vowels_stream_example(tmp_path):
    out = run_example("vowels_stream.py", "--steps", "60", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert "370 test utterances streamed frame by frame" in out
    accuracy = float(out.split("accuracy after the last frame: ")[1].split()[0])
    assert accuracy > 0.5  # 60 steps already separates most speakers; the full run is in the README


def test_adapt_to_a_voice_example(tmp_path):
    out = run_example(
        "adapt_to_a_voice.py",
        "--base-steps",
        "30",
        "--steps",
        "5",
        "--out",
        str(tmp_path / "run"),
        cwd=tmp_path,
    )
    lines = out.strip().splitlines()
    assert lines[0] == "lucas: 30 recordings to adapt to, 20 others to hear"
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["base", "adapted"]
    assert all(" of 20 right (" in line for line in lines[1:])
    config = json.loads((tmp_path / "run" / "adapted" / "config.json").read_text())["train"]
    assert config["init_from"]["run"] == str(tmp_path / "run" / "base")
    assert config["data_options"]["wav_repeat"] == 4
    assert len(list((tmp_path / "run" / "mine").glob("*_lucas_*.wav"))) == 30


EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py"))


def test_every_example_has_help_writes_nothing_with_it_and_is_in_the_readme(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in EXAMPLES:
        out = run_example(name, "--help", cwd=tmp_path)
        assert "usage:" in out and "--out" in out, name
        assert f"examples/{name}" in readme, f"README does not list {name}"
    assert list(tmp_path.iterdir()) == []  # --help wrote no file named --help, nor anything else


def _make_mcu(target: str, build: Path, *variables: str, stdin: str | None = None) -> str:
    """``make -C examples/mcu TARGET`` with this environment's edgernn; skips (fails under CI) without
    the Cortex-M4 toolchain."""
    require_mcu_examples()
    edgernn = Path(sys.executable).with_name("edgernn")
    done = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT / "examples" / "mcu"), target,
         f"BUILD={build}", f"EDGERNN={edgernn}", *variables],
        input=stdin, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_mcu_anomaly_scorer_on_the_cortex_m4_and_csv_stream_on_the_host(tmp_path):
    out = _make_mcu("anomaly", tmp_path)  # as written: trains a small model, deploys it, runs it in QEMU
    assert "scored 1000 samples (test rows 3700-4699)" in out
    assert "inside the window +-100" in out
    rows = (ROOT / "examples" / "data" / "ucr_internalbleeding16_test.csv").read_text()
    predictions = _make_mcu("stream", tmp_path, stdin=rows).splitlines()
    assert predictions[0] == "value" and len(predictions) == 1 + 7501
    values = np.array([float(v) for v in predictions[1:]])
    assert np.isfinite(values).all() and 40 < np.median(values) < 90  # the sensor's own units


def test_mcu_integer_anomaly_scorer_on_the_cortex_m0plus(tmp_path):
    """examples/mcu/integer_m0.py as written: trains, deploys --device cortex-m0plus (integer), runs in QEMU."""
    from edgernn.export.c.devices import get_device

    m0 = get_device("cortex-m0plus")
    if m0.missing_tools():
        message = f"examples/mcu integer: {', '.join(m0.missing_tools())} not found (Debian packages: {' '.join(m0.packages)})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "mcu" / "integer_m0.py"), "--build", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "cortex-m0plus has no FPU: --precision integer" in done.stdout + done.stderr
    assert "scored 1000 samples (test rows 3700-4699) in integers" in done.stdout
    assert "inside the window +-100" in done.stdout


def test_mcu_chargen_on_the_cortex_m4(tmp_path):
    model_path, vocabulary = _char_model(tmp_path, chunk_steps=None)
    out = _make_mcu(
        "chargen", tmp_path / "build", f"CHAR_MODEL={model_path}", "CHAR_PRECISION=float32", "CHARS=120"
    )
    assert (
        "float32 C on the Cortex-M4F: flash " in out
        and f"ONNX file: {model_path.stat().st_size} bytes" in out
    )
    generated = out.rsplit("ROMEO:", 1)[1].removesuffix("\n")  # the last line: what QEMU printed
    assert len(generated) == 120 and set(generated) <= set("".join(vocabulary))


def test_mcu_build_follows_the_model_given_not_the_files_date(tmp_path):
    """`make stream MODEL=other.onnx` regenerates the C even when other.onnx is older than the build; the
    same model again deploys nothing."""
    from task_models import task_model

    if shutil.which("make") is None or not any(shutil.which(cc) for cc in ("cc", "gcc")):
        message = "examples/mcu stream: make or cc not found (Debian packages: make gcc)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    extra = {"task": "forecast", "columns": ["a", "b"], "targets": ["a", "b"]}
    models = [
        task_model(
            tmp_path, f"m{seed}.onnx", extra, input_kind="features", input_size=2, hidden_size=4, seed=seed
        )
        for seed in (1, 2)
    ]
    os.utime(models[1].path, (1_000_000_000, 1_000_000_000))  # older than any build
    rows = "a,b\n" + "".join(f"{np.sin(t / 5):.4f},{np.cos(t / 7):.4f}\n" for t in range(20))

    def stream(model, build):
        done = subprocess.run(
            ["make", "--no-print-directory", "-C", str(ROOT / "examples" / "mcu"), "stream", f"BUILD={build}",
             f"EDGERNN={Path(sys.executable).with_name('edgernn')}", f"MODEL={model.path}"],
            input=rows, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout, "deploy" in done.stderr

    first, deployed = stream(models[0], tmp_path / "build")
    assert deployed and len(first.splitlines()) == 1 + 20
    again, deployed = stream(models[0], tmp_path / "build")
    assert (again, deployed) == (first, False)
    other, deployed = stream(models[1], tmp_path / "build")
    assert deployed and other != first
    assert other == stream(models[1], tmp_path / "fresh")[0]
