"""The text of ``edgernn bench``: per-model tables, ratios, fast paths, and models side by side."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgernn.runtime.bench import PacedStats

if TYPE_CHECKING:
    from edgernn.benchmark import BenchSettings, ModelBench

PATHS = ("baseline_onnx", "baseline_torch", "floor", "stepper", "c", "front_end")


def format_bench(results: list[ModelBench], settings: BenchSettings) -> str:
    """The text report: per model, a table of the paths, the ratios, then the fast paths and cold start."""
    blocks = [
        f"{settings.steps} timed steps per path after {settings.warmup} warm-up, batch 1, "
        f"{settings.threads} thread(s), interleaved in {settings.rounds} rounds; mean steps/s = timed steps "
        "over their total time, the other columns percentiles"
    ]
    blocks += [_format_model(result) for result in results]
    return "\n\n".join(blocks)


def _format_model(result: ModelBench) -> str:
    lines = [f"{result.label}  ({result.size_bytes / 1024:.0f} KiB)"]
    lines.append(f"{'path':<16}{'p50 us':>9}{'p90 us':>9}{'p99 us':>9}{'max us':>10}{'mean steps/s':>14}")
    for name in PATHS:
        if name in result.paths:
            s = result.paths[name]
            lines.append(
                f"{name:<16}{s.p50_us:>9.1f}{s.p90_us:>9.1f}{s.p99_us:>9.1f}{s.max_us:>10.1f}{s.steps_per_s:>14,.0f}"
            )
    lines += _format_ratios(result)
    lines += _format_fast_paths(result)
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


def _format_ratios(result: ModelBench) -> list[str]:
    ratios = result.ratios()
    against = [f"{ratios[f'stepper_vs_{n}']:.2f}x {n}" for n in PATHS[:3] if f"stepper_vs_{n}" in ratios]
    lines = [f"stepper p50 = {', '.join(against)}" if against else "stepper p50: nothing to compare with"]
    lines.append(f"stepper p99 = {ratios['stepper_p99_vs_p50']:.2f}x its p50")
    if "front_end_share" in ratios:
        lines.append(
            f"front end = {ratios['front_end_share']:.0%} of a step (p50s, the floor taken off both: front_end "
            "against stepper; on a device: bench --device)"
        )
    if "c_vs_baseline_onnx" in ratios:
        lines.append(
            f"c p50 = {ratios['c_vs_baseline_onnx']:.2f}x baseline_onnx, {ratios['c_vs_stepper']:.2f}x stepper"
        )
    return lines


def _format_fast_paths(result: ModelBench) -> list[str]:
    lines = []
    step = (result.step_beside or result.paths["stepper"]).p50_us
    if result.run is not None:
        lines.append(
            f"run, {result.chunk_steps} steps per call: {result.run.p50_us:.1f} us per step p50 "
            f"= {result.run.p50_us / step:.2f}x a step"
        )
    if result.pool is not None:
        lines.append(
            f"pool of {result.pool_streams} streams: {result.pool.p50_us:.2f} us per stream-step p50 "
            f"= {result.pool.p50_us / step:.3f}x a step"
        )
    for name, doc in result.silence.items():
        lines.append(
            f"after {result.silence_steps:,} silent steps, {name}: p99 {doc['silent_p99_us']:.1f} us against {doc['normal_p99_us']:.1f} us "
            f"fresh = {doc['silent_p99_us'] / doc['normal_p99_us']:.2f}x (p50 {doc['silent_p50_us']:.1f} / "
            f"{doc['normal_p50_us']:.1f} us)"
        )
    if result.paced is not None:
        lines.append(_format_paced(result.paced))
    if result.cold_start is not None:
        c = result.cold_start
        lines.append(
            f"cold start (fresh interpreter, median of {c.runs}): import {c.import_s:.3f} s + load {c.load_s:.3f} s "
            f"+ first step {c.first_step_s * 1000:.1f} ms = {c.total_s:.3f} s, peak RSS {c.peak_rss_mb:.0f} MB, "
            f"torch {'imported' if c.torch_imported else 'never imported'}"
        )
    return lines


def _format_paced(paced: PacedStats) -> str:
    s, steps = paced.latency, paced.latency.steps
    return (
        f"paced at {paced.rate_hz:g} Hz: {steps} steps, latency p50 {s.p50_us:.1f} / p99 {s.p99_us:.1f} / "
        f"max {s.max_us:.1f} us, deadline misses {paced.missed_deadlines} ({100 * paced.missed_deadlines / steps:.2f}%), "
        f"worst overrun {paced.worst_overrun_us:.1f} us, start delay p99 {paced.start_delay_p99_us:.1f} us"
    )


def paced_text(doc: dict[str, Any]) -> str:
    latency, steps = doc["latency"], doc["latency"]["steps"]
    return (
        f"{doc['rate_hz']:g} Hz, {steps} steps: latency p50 {latency['p50_us']:.1f} / p99 {latency['p99_us']:.1f} us, "
        f"deadline misses {doc['missed_deadlines']} ({100 * doc['missed_deadlines'] / steps:.2f}%)"
    )


def format_side_by_side(docs: list[dict[str, Any]]) -> str:
    """One row per model; with several, the file size and p50 against the first model too. steps/s is
    the mean rate (timed steps over their total time); the other columns are percentiles."""
    several = len(docs) > 1
    name = max(len(Path(d["model"]).name) for d in docs) + 2 if several else 10
    head = f"{'model' if several else 'path':<{name}}" + ("" if not several else f"{'KiB':>9}")
    lines = [
        head
        + f"{'p50 us':>10}{'p90 us':>10}{'p99 us':>10}{'max us':>10}{'mean steps/s':>14}"
        + ("  p50 vs first" if several else "")
    ]
    first = docs[0]["stepper"]["p50_us"]
    for d in docs:
        s = d["stepper"]
        label = Path(d["model"]).name if several else "stepper"
        size = f"{d['size_bytes'] / 1024:>9.0f}" if several else ""
        tail = f"  {s['p50_us'] / first:.2f}x" if several else ""
        lines.append(
            f"{label:<{name}}{size}{s['p50_us']:>10.1f}{s['p90_us']:>10.1f}{s['p99_us']:>10.1f}{s['max_us']:>10.1f}{s['steps_per_s']:>14,.0f}{tail}"
        )
    return "\n".join(lines)
