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
    assert source.count(f"#if {mve} /* each row's constant share of the Helium sums */") == 3
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


ACTIVATIONS = r"""
#include <stdint.h>
#include <stdio.h>
#if defined(__ARM_FEATURE_MVE)
#define M_ARM_MVE 1
#include <arm_mve.h>
#endif
typedef union { float f; uint32_t u; } m_bits;
static const float m_t0[%(size)d] = {
%(table)s
};
%(helpers)s
static const uint32_t special[] = {
    0x00000000u, 0x80000000u, 0x00000001u, 0x80000001u, 0x007FFFFFu, 0x807FFFFFu, 0x00800000u, 0x80800000u,
    0x3F800000u, 0xBF800000u, 0x41800000u, 0xC1800000u, 0x417FFFFFu, 0xC17FFFFFu, 0x41800001u, 0xC1800001u,
    0x7F7FFFFFu, 0xFF7FFFFFu, 0x7F800000u, 0xFF800000u, 0x7F800001u, 0xFF800001u, 0x7FC00000u, 0xFFC00000u,
    0x7FC12345u, 0xFFA54321u, 0x7FFFFFFFu, 0xFFFFFFFFu, 0x3F000000u, 0x40FFFFFFu, 0x3D800000u, 0x00400000u,
};

static uint32_t check(const m_bits *x, uint32_t *lanes)
{
    uint32_t bad = 0;
#if defined(M_ARM_MVE)
    m_bits s4[4], t4[4];
    vstrwq_f32(&s4[0].f, m_table_sigmoid4(vldrwq_f32(&x[0].f)));
    vstrwq_f32(&t4[0].f, m_table_tanh4(vldrwq_f32(&x[0].f)));
    for (int i = 0; i < 4; i++) {
        m_bits s, t;
        s.f = m_table_sigmoid(x[i].f);
        t.f = m_table_tanh(x[i].f);
        if (s.u != s4[i].u || t.u != t4[i].u) {
            if (!bad)
                printf("x %%08lx: sigmoid %%08lx %%08lx tanh %%08lx %%08lx\n", (unsigned long)x[i].u,
                       (unsigned long)s.u, (unsigned long)s4[i].u, (unsigned long)t.u, (unsigned long)t4[i].u);
            bad++;
        }
    }
    *lanes += 4;
#else
    (void)x;
    (void)lanes;
#endif
    return bad;
}

int main(void)
{
    m_bits x[4];
    uint32_t bad = 0, lanes = 0, n = 0;
    for (uint32_t i = 0; i < sizeof special / sizeof special[0]; i++) {
        x[n++].u = special[i];
        if (n == 4) { bad += check(x, &lanes); n = 0; }
    }
    for (uint32_t u = 0; u <= 0x41A00000u; u += 997u) /* [0, 20] and [-20, 0]: the table's range */
        for (int s = 0; s < 2; s++) {
            x[n++].u = u | (s ? 0x80000000u : 0u);
            if (n == 4) { bad += check(x, &lanes); n = 0; }
        }
    for (uint32_t u = 0; u < 0xFFFF0000u; u += 65521u) { /* the whole range, NaN payloads included */
        x[n++].u = u;
        if (n == 4) { bad += check(x, &lanes); n = 0; }
    }
    printf("lanes %%lu mismatches %%lu\nPASS\n", (unsigned long)lanes, (unsigned long)bad);
    return 0;
}
"""


def test_helium_table_activations_equal_the_scalar_ones_bit_for_bit(tmp_path):
    """Four lanes of the Helium sigmoid and tanh against the scalar helpers on the Cortex-M55 itself:
    every result's bits equal, over the table's range, the whole float32 range, subnormals, the clamp's
    edges, infinities and NaNs (signalling, quiet, with payloads, both signs)."""
    from edgernn.export.c.activations import sigmoid_table, table_helpers, table_vector_helpers
    from edgernn.export.c.ctext import c_floats

    device = require_device("cortex-m55")
    table = sigmoid_table()
    source = tmp_path / "activations.c"
    helpers = [*table_helpers("m", "m_t0"), *table_vector_helpers("m", "m_t0")]
    source.write_text(
        ACTIVATIONS % {"size": table.size, "table": c_floats(table), "helpers": "\n".join(helpers)}
    )
    out = run(build(device, [source], tmp_path / "activations.elf")).stdout.split()
    assert out[-1] == "PASS", out
    lanes, mismatches = int(out[-4]), int(out[-2])
    assert lanes > 200_000 and mismatches == 0, " ".join(out)


def test_the_cortex_m55_estimate_counts_a_gather_as_a_load():
    """A gather (VLDRW.U32 Qd, [Rn, Qm, UXTW #2], which QEMU 7.2 prints undecoded) is a load/store-pipe
    instruction, counted 2 cycles: not overlapped with the vector operations beside it."""
    if shutil.which("llvm-mca-14") is None:
        message = "llvm-mca-14 not found (Debian package: llvm-14)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from edgernn.export.c.devices.cycles import _MVE_GATHER, _mca_cycles

    gathers = ["undecoded.w fc910f4b", "undecoded.w fc942f4b", "undecoded.w ec900f49"]
    assert all(_MVE_GATHER.match(g) for g in gathers)
    assert not _MVE_GATHER.match("undecoded.w ee276f45")  # a vector by scalar operation
    assert not _MVE_GATHER.match("undecoded.w f00fc02f")  # LE
    device = get_device("cortex-m55")
    operation, load = "vcvt.f32.s32 q3, q3, #0x10", "ldc p14, c5, [r3], #0x40"
    (loads, gathered), unread = _mca_cycles(device, [[operation, load] * 4, [operation, gathers[0]] * 4])
    assert unread == [0, 0]
    assert loads == pytest.approx(9, abs=0.5)  # 2, then 1 each: their beats overlap
    assert gathered == pytest.approx(16, abs=0.5)  # 2 each
