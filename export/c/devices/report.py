"""What ``edgernn bench --device`` prints: a table per model (one row per precision) or JSON."""

from __future__ import annotations

import json

from edgernn.export.c.devices.bench import DeviceBench

LEAVES_OUT = (
    "instructions are exact (QEMU's execution log, counted between two marker calls around the step, its "
    "call included); cycles are an estimate at zero wait states that leaves out flash wait states, caches "
    "(Cortex-M7, Cortex-A53) and bus contention (docs/devices.md); a front end's share is counted between "
    "two marks in the step, whose calls count in it"
)


def to_json(benches: list[DeviceBench]) -> str:
    """One model: ``{"model", "board", "steps", "results": [...]}``; the reference: ``{"models": [...]}``."""
    docs = [_doc(bench) for bench in benches]
    return json.dumps(docs[0] if len(docs) == 1 else {"models": docs}, indent=2)


def _doc(bench: DeviceBench) -> dict:
    first = bench.results[0] if bench.results else None
    return {
        "model": bench.model,
        "board": first.board if first else None,
        "steps": first.steps if first else None,
        "results": [result.to_dict() for result in bench.results],
    }


def _parts(r) -> str:
    """The front end and the rest of one precision's step, side by side."""
    fe, rest = r.front_end, r.rest
    share = fe.cycles / r.cycles if r.cycles else 0.0
    return (
        f"front end {fe.instructions_median:,.0f} instructions, {fe.cycles:,.0f} cycles (est., "
        f"{share:.0%} of the step; the graph's {fe.macs:,} MACs); the rest {rest.instructions_median:,.0f} "
        f"instructions, {rest.cycles:,.0f} cycles ({rest.macs:,} MACs)"
    )


def to_text(benches: list[DeviceBench]) -> str:
    out = []
    for bench in benches:
        device = bench.device
        board = bench.results[0].board if bench.results else "-"
        steps = bench.results[0].steps if bench.results else 0
        typical = (
            " (the device's typical clock; --clock-mhz to change)"
            if bench.clock_mhz == device.clock_mhz
            else ""
        )
        out.append(
            f"{bench.model} on {device.name}: {device.core} ({device.isa}, FPU: {device.fpu}, SIMD: {device.simd}), "
            f"{board} under {device.emulator}, {steps} steps, at {bench.clock_mhz:g} MHz{typical}"
        )
        header = (
            f"  {'precision':<9} {'instr/step':>11} {'max':>11} {'cycles (est.)':>13} {'us/step':>10} "
            f"{'max rate Hz':>11} {'MACs':>9} {'MACs/cycle':>10} {'flash B':>9} {'RAM B':>7} {'stack B':>7}"
        )
        out.append(header)
        for r in bench.results:
            out.append(
                f"  {r.precision:<9} {r.instructions_median:>11,.0f} {r.instructions_max:>11,} {r.cycles:>13,.0f} "
                f"{r.us_per_step:>10,.1f} {r.max_rate_hz:>11,.1f} {r.macs:>9,} {r.macs_per_cycle:>10.3f} "
                f"{r.flash_bytes:>9,} {r.ram_bytes:>7,} {r.stack_bytes:>7,}"
            )
        for r in bench.results:
            if r.front_end is not None and r.rest is not None:
                out.append(f"  {r.precision}: {_parts(r)}")
        for r in bench.results:
            check = (
                f"self-test passed on the device (max abs error {r.self_test_max_abs_error:g})"
                if r.self_test_max_abs_error is not None
                else "self-test not run"
            )
            out.append(f"  {r.precision}: {check}; cycles: {r.method}")
        out.append(f"  {LEAVES_OUT}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
