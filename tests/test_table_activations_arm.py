"""The int8 table sigmoid and tanh on the Cortex-M4 and M33 (VFP and SSAT: the index by VCVT and SSAT, the
fraction by VCVT to 16-bit fixed point, tanh's 2x in the conversion) give the bits of the portable C for every input: a sweep over
every exponent of both signs, the ends of the table, past the saturation of the conversion, infinities
and NaN. Needs the device's toolchain and emulator (skips naming the Debian packages; fails under CI=true).
"""

from __future__ import annotations

import pytest
from device_support import require_device

from edgernn.export.c.activations import ARM_TABLE_CONDITION, sigmoid_table, table_helpers
from edgernn.export.c.ctext import c_floats

HARNESS = r"""
#include <stdint.h>
#include <stdio.h>
typedef union { float f; uint32_t u; } m_bits;
typedef m_bits p_bits;
static const float m_t0[%(size)d] = {
%(table)s
};
%(fast)s
%(portable)s
static uint32_t bits(float f) { m_bits b; b.f = f; return b.u; }
int main(void)
{
    static const uint32_t edges[] = {
        0x41800000u, 0x417FFFFFu, 0x41800001u, 0x41000000u, 0x40FFFFFFu, 0x45000000u, 0x44FFFFFFu,
        0x4F000000u, 0x7F7FFFFFu, 0x7F800000u, 0x7F800001u, 0x7FC00000u, 0x7FC00123u, 0x7FFFFFFFu,
        0x00000001u, 0x00800000u, 0x3F800000u, 0u};
    long checked = 0, differ = 0;
    for (uint32_t u = 0; u < 0x7F800000u; u += 4099u) {
        for (uint32_t s = 0; s < 2; s++) {
            m_bits v; v.u = u | (s << 31);
            differ += bits(m_table_sigmoid(v.f)) != bits(p_table_sigmoid(v.f));
            differ += bits(m_table_tanh(v.f)) != bits(p_table_tanh(v.f));
            checked += 2;
        }
    }
    for (unsigned e = 0; e < sizeof edges / sizeof edges[0]; e++) {
        for (uint32_t s = 0; s < 2; s++) {
            m_bits v; v.u = edges[e] | (s << 31);
            for (int d = -3; d <= 3; d++) {
                m_bits w; w.u = v.u + (uint32_t)d;
                differ += bits(m_table_sigmoid(w.f)) != bits(p_table_sigmoid(w.f));
                differ += bits(m_table_tanh(w.f)) != bits(p_table_tanh(w.f));
                checked += 2;
            }
        }
    }
    printf("checked=%%ld differ=%%ld top=%%08lx\n", checked, differ, (unsigned long)bits(m_table_sigmoid(1e30f)));
    return 0;
}
"""


def _portable(lines: list[str]) -> str:
    text = "\n".join(lines).replace("m_table_", "p_table_").replace("m_bits", "p_bits")
    return text.replace(f"#if {ARM_TABLE_CONDITION}", "#if 0")


@pytest.mark.parametrize("device_name", ["cortex-m4", "cortex-m33"])
def test_the_arm_table_activations_give_the_portable_bits(device_name, tmp_path):
    from edgernn.export.c.devices.build import build, run

    device = require_device(device_name)
    table = sigmoid_table()
    helpers = table_helpers("m", "m_t0")
    fast = "\n".join(helpers)
    assert "ssat" in fast and "vcvt.f32.u16" in fast  # the paths under test are there
    source = HARNESS % {
        "size": table.size,
        "table": c_floats(table),
        "fast": fast,
        "portable": _portable(helpers),
    }
    (tmp_path / "t.c").write_text(source)
    program = build(device, [tmp_path / "t.c"], tmp_path / "t.elf")
    out = run(program, timeout_s=240).stdout
    line = next(text for text in out.splitlines() if text.startswith("checked="))
    fields = dict(item.split("=") for item in line.split())
    assert int(fields["checked"]) > 2_000_000 // 4099 * 4 and fields["differ"] == "0", line
    assert fields["top"] == f"{table.view('uint32')[512]:08x}"  # sigmoid(1e30) is the table's top
