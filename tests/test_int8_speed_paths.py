"""The int8 C's Arm paths (export/c/arm_dsp.py): the integer identities they rest on, checked in numpy with
int32 wrap-around, and on the Cortex-M4 (SMLAD on interleaved row pairs) and the Cortex-M55 (Helium, its
row constants, its vector quantization and scaling) the outputs of odd shapes (inputs not a multiple of
4 or 16, rows not a multiple of 4) equal the portable loop's and the host's, bit for bit. Counts and
outputs only, never times.

A missing toolchain skips with one line naming its Debian packages; under CI (``CI=true``) it fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from device_support import require_device

from edgernn.export import export_model
from edgernn.export.c import arm_dsp
from edgernn.export.c.devices import get_device
from edgernn.export.c.devices.build import build, run
from edgernn.export.c.generate import generate_sources
from edgernn.export.c.targets import run_trace, trace_source
from edgernn.export.deploy import deploy
from edgernn.models import ModelConfig, RecurrentModel


def _wrap(v: np.ndarray) -> np.ndarray:
    """int64 values as int32 arithmetic leaves them (two's complement wrap-around)."""
    return ((v + 2**31) % 2**32 - 2**31).astype(np.int64)


def _smlad(word: np.ndarray, x_lo: np.ndarray, x_hi: np.ndarray) -> np.ndarray:
    """SMLAD's two products of a word's signed halfwords with two inputs, as int64."""
    lo = (word & 0xFFFF).astype(np.int64)
    hi = (word >> 16).astype(np.int64)
    lo = np.where(lo >= 32768, lo - 65536, lo)
    hi = np.where(hi >= 32768, hi - 65536, hi)
    return lo * x_lo + hi * x_hi


def test_dsp_pairs_and_helium_terms_give_the_integer_dot_products():
    rng = np.random.default_rng(0)
    n, k = 8, 2048  # sums past 2^31 in the mixed accumulator: the wrap must cancel
    q = rng.integers(-127, 128, size=(n, k))
    q[:, :8] = 127  # the extremes
    offset = (q + 128).astype(np.uint8)
    x = rng.integers(-127, 128, size=k)
    x[:8] = -127
    want = q @ x

    woven = arm_dsp.dsp_layout(offset, n)
    assert woven.shape == offset.shape and woven.dtype == np.uint8
    words = woven.reshape(n // 2, k // 2, 4).astype(np.int64)  # per pair: input pairs (i, i + 1), 4 bytes
    word = words[..., 0] | words[..., 1] << 8 | words[..., 2] << 16 | words[..., 3] << 24
    odd = np.stack([words[..., 1], words[..., 3]], axis=-1)
    odd = np.where(odd >= 128, odd - 256, odd)  # SXTB16 of bytes 1 and 3
    xs = x.reshape(k // 2, 2)
    mixed = _wrap(-128 * x.sum() + _smlad(word, xs[:, 0], xs[:, 1]).sum(axis=1))
    second = _wrap((odd[..., 0] * xs[:, 0] + odd[..., 1] * xs[:, 1]).sum(axis=1))
    first = _wrap(mixed - second * 256)
    got = np.stack([first, second], axis=1).reshape(n)
    np.testing.assert_array_equal(got, want)

    terms = arm_dsp.mve_row_terms(offset)
    helium = offset.astype(np.int64) @ (x + 128)  # VMLADAVA.U8: weights + 128 by inputs + 128
    np.testing.assert_array_equal(_wrap(helium - terms - 128 * x.sum()), want)


def test_the_arm_layouts_are_chosen_by_the_loops_own_conditions(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(cell="gru", input_kind="features", input_size=5, hidden_size=20,
                         output_size=3, output_kind="values")  # fmt: skip
    path = tmp_path / "odd.onnx"
    export_model(RecurrentModel(config).eval(), path, chunk_steps=None)
    source = generate_sources(path, precision="int8").files["model.c"]
    dsp, mve = arm_dsp.dsp_condition("model"), arm_dsp.mve_condition("model")
    assert source.count(f"#if {dsp} /* row pairs interleaved for SMLAD */") == 3  # the three products
    assert f"#elif {dsp}" in source and f"#if {mve}" in source
    assert source.count(f"#if {mve} /* each row's constant share of the Helium sums */") == 2  # not the head
    assert "__smlad(" in source and "vmladavaq_u8(" in source and "vstrbq_u32(" in source


@pytest.fixture(scope="module")
def odd_models(tmp_path_factory) -> dict[str, Path]:
    """A GRU with 5 features, 20 hidden, 3 outputs (products of 5 and 20 inputs, 3 rows) and a two-layer
    LSTM with 3 features, 16 hidden (3 inputs: no whole group), deployed int8 (host self-test passed)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("int8_paths")
    made = {}
    for cell, features, hidden, layers, outputs in (("gru", 5, 20, 1, 3), ("lstm", 3, 16, 2, 2)):
        torch.manual_seed(0)
        config = ModelConfig(cell=cell, input_kind="features", input_size=features, hidden_size=hidden,
                             num_layers=layers, output_size=outputs, output_kind="values")  # fmt: skip
        path = root / f"{cell}.onnx"
        export_model(RecurrentModel(config).eval(), path, chunk_steps=None)
        made[cell] = deploy(path, "c", root / f"{cell}-int8", precision="int8").out_dir
    return made


@pytest.mark.parametrize("name", ["cortex-m4", "cortex-m55"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_arm_paths_equal_the_portable_loop_and_the_host(odd_models, tmp_path, name, cell):
    device = require_device(name)
    deployed = odd_models[cell]
    source = tmp_path / "model_trace.c"
    source.write_text(trace_source("model", 12))
    outputs = {}
    for label, defines in (("arm", ()), ("portable", ("MODEL_PORTABLE",))):
        program = build(device, [source, deployed / "model.c"], tmp_path / f"{label}.elf",
                        include=(deployed,), defines=defines)  # fmt: skip
        outputs[label] = run(program).stdout
    assert outputs["arm"] == outputs["portable"] and outputs["arm"].rstrip().endswith("PASS")
    rows = [[float(v) for v in row.split()] for row in outputs["arm"].splitlines()[:-1]]
    np.testing.assert_array_equal(np.array(rows), run_trace(deployed, "host", steps=12))


def test_the_cortex_m55_estimate_overlaps_a_vector_load_with_a_vector_operation():
    if shutil.which("llvm-mca-14") is None:
        message = "llvm-mca-14 not found (Debian package: llvm-14)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from edgernn.export.c.devices.cycles import _mca_cycles

    device = get_device("cortex-m55")
    load = "ldc p14, c5, [r3], #0x40"  # how QEMU 7.2 prints a VLDRB.U8 with writeback
    alternating = [load, "undecoded.w"] * 4
    grouped = [load] * 4 + ["undecoded.w"] * 4
    (a, g), unread = _mca_cycles(device, [alternating, grouped])
    assert unread == [0, 0]
    assert g - a == pytest.approx(6, abs=0.5)  # 2 each grouped (one overlap where they meet), 1 alternating
