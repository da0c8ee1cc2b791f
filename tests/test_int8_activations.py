"""The int8 steps' table sigmoid and tanh (export/c/activations.py): their largest error against double
precision, measured on the generated C itself, within the documented bounds; NaN kept; the ends exact."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from edgernn.export.c.activations import (
    TABLE_SIGMOID_MAX_ABS_ERROR,
    TABLE_TANH_MAX_ABS_ERROR,
    sigmoid_table,
    table_helpers,
)
from edgernn.export.c.ctext import c_floats

HARNESS = r"""
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
typedef union { float f; uint32_t u; } m_bits;
static const float m_t0[%(size)d] = {
%(table)s
};
%(helpers)s
int main(void)
{
    double es = 0.0, et = 0.0;
    for (uint32_t u = 0; u <= 0x41A00000u; u += 61u) { /* every 61st float32 in [0, 20], both signs */
        for (int s = 0; s < 2; s++) {
            m_bits v; v.u = u | (s ? 0x80000000u : 0u);
            const double x = v.f;
            const double ds = fabs((double)m_table_sigmoid(v.f) - 1.0 / (1.0 + exp(-x)));
            const double dt = fabs((double)m_table_tanh(v.f) - tanh(x));
            es = ds > es ? ds : es;
            et = dt > et ? dt : et;
        }
    }
    m_bits nan; nan.u = 0x7FC00001u;
    printf("%%.9g %%.9g %%d %%d %%.9g %%.9g %%.9g\n", es, et, m_table_sigmoid(nan.f) != m_table_sigmoid(nan.f),
           m_table_tanh(nan.f) != m_table_tanh(nan.f), m_table_sigmoid(INFINITY), m_table_sigmoid(-INFINITY),
           m_table_tanh(0.0f));
    return 0;
}
"""


def test_table_activations_measured_error(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (Debian package gcc)")
    table = sigmoid_table()
    assert table.dtype == np.float32 and table.size == 514
    source = HARNESS % {
        "size": table.size,
        "table": c_floats(table),
        "helpers": "\n".join(table_helpers("m", "m_t0")),
    }
    (tmp_path / "t.c").write_text(source)
    subprocess.run([cc, "-std=c99", "-O2", "t.c", "-o", "t", "-lm"], cwd=tmp_path, check=True)
    out = subprocess.run([tmp_path / "t"], capture_output=True, text=True, check=True).stdout.split()
    sigmoid_error, tanh_error = float(out[0]), float(out[1])
    assert 1e-6 < sigmoid_error <= TABLE_SIGMOID_MAX_ABS_ERROR, sigmoid_error
    assert 1e-6 < tanh_error <= TABLE_TANH_MAX_ABS_ERROR, tanh_error
    assert out[2:4] == ["1", "1"]  # NaN stays NaN
    assert float(out[4]) == pytest.approx(1.0, abs=1e-6) and float(out[5]) == pytest.approx(0.0, abs=1e-6)
    assert float(out[6]) == 0.0


def test_bench_device_default_steps_fewer_without_fpu():
    from edgernn.export.c.devices import get_device
    from edgernn.export.c.devices.bench import DEFAULT_STEPS, SOFT_FLOAT_DEFAULT_STEPS, default_steps

    assert [default_steps(get_device(d)) for d in ("cortex-m0plus", "cortex-m3", "rv32imc")] == [
        SOFT_FLOAT_DEFAULT_STEPS
    ] * 3
    assert [default_steps(get_device(d)) for d in ("cortex-m4", "cortex-m55", "rv32imafc", "aarch64")] == [
        DEFAULT_STEPS
    ] * 4
    assert SOFT_FLOAT_DEFAULT_STEPS == 5 and DEFAULT_STEPS == 200
