"""Print the README's stepper tables: the stepper against what a user would otherwise write, in one run.

The reference GRU and LSTM (2 layers of 128, 32 features in, 32 values out, batch 1, 1 thread) through
the stepper, the floor (a model that does nothing, same call path), a plain ``torch.onnx.export`` of the
same weights run with ``session.run``, and PyTorch eager, interleaved in rounds; then ``run`` through the
chunk graph, a pool of 256 streams, steps after 10,000 silent steps (on a decaying copy, baselines
beside), a paced loop, and the cold start of a fresh interpreter. Timings only: compare the ratios, which
are measured side by side, not microseconds between machines.

Run: python benchmarks/stepper_bench.py [--steps 5000] [--paced 1000] [--plot latency.png] [--json out.json]
     (or `make stepper-results`)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgernn.benchmark import PATHS, BenchSettings, ModelBench, bench_reference, plot_latency

GOALS = {  # ratio -> (goal, how it reads)
    "stepper_vs_baseline_onnx": (0.40, "stepper p50 / baseline_onnx p50"),
    "stepper_vs_baseline_torch": (0.10, "stepper p50 / baseline_torch p50"),
    "stepper_p99_vs_p50": (2.0, "stepper p99 / its p50"),
    "run_step_vs_step": (0.35, "run() per step, 32 steps per call / a step"),
    "pool_stream_step_vs_step": (0.15, "pool of 256, per stream-step / a step"),
    "silent_p99_vs_normal_p99": (1.5, "stepper p99 after 10,000 silent steps / fresh"),
}


def path_table(results: list[ModelBench]) -> list[str]:
    lines = [
        "| model | path | p50 us | p90 us | p99 us | max us | steps/s | stepper p50 / this p50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        stepper = result.paths["stepper"].p50_us
        for name in PATHS:
            s = result.paths[name]
            lines.append(
                f"| {result.label} | {name} | {s.p50_us:.1f} | {s.p90_us:.1f} | {s.p99_us:.1f} | {s.max_us:.1f} | "
                f"{s.steps_per_s:,.0f} | {stepper / s.p50_us:.2f}x |"
            )
    return lines


def goal_table(results: list[ModelBench]) -> list[str]:
    labels = [r.label.split(",")[0] for r in results]
    lines = [f"| ratio (goal) | {' | '.join(labels)} |", "|---|" + "---|" * len(results)]
    for key, (goal, reads) in GOALS.items():
        cells = []
        for result in results:
            value = result.ratios().get(key)
            cells.append("n/a" if value is None else f"{value:.2f} {'met' if value <= goal else 'not met'}")
        lines.append(f"| {reads} (<= {goal:g}) | {' | '.join(cells)} |")
    for name, unit, goal, read in (
        ("total_s", "s", 0.3, "cold start: import + load + first step"),
        ("peak_rss_mb", "MB", 80, "cold start: peak RSS"),
    ):
        cells = [_cold(r, name, unit, goal) for r in results]
        lines.append(f"| {read} (<= {goal:g} {unit}) | {' | '.join(cells)} |")
    return lines


def _cold(result: ModelBench, name: str, unit: str, goal: float) -> str:
    value = getattr(result.cold_start, name)
    return f"{value:.{3 if unit == 's' else 0}f} {unit} {'met' if value <= goal else 'not met'}"


def silence_table(results: list[ModelBench]) -> list[str]:
    lines = [
        "| model (decaying copy) | path | p50 us fresh | p50 us silent | p99 us fresh | p99 us silent | p99 silent / fresh |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for name, doc in result.silence.items():
            lines.append(
                f"| {result.label} | {name} | {doc['normal_p50_us']:.1f} | {doc['silent_p50_us']:.1f} | "
                f"{doc['normal_p99_us']:.1f} | {doc['silent_p99_us']:.1f} | {doc['silent_p99_us'] / doc['normal_p99_us']:.2f}x |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--paced", type=float, default=1000.0, help="Hz; 0 for no paced loop")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    settings = BenchSettings(steps=args.steps, warmup=args.warmup, paced_hz=args.paced or None)
    results = bench_reference(settings)
    print("\n".join(path_table(results)), end="\n\n")
    print("\n".join(goal_table(results)), end="\n\n")
    print("\n".join(silence_table(results)), end="\n\n")
    for result in results:
        if result.paced is not None:
            p = result.paced
            print(
                f"{result.label}, paced at {p.rate_hz:g} Hz: p50 {p.latency.p50_us:.1f} us, p99 {p.latency.p99_us:.1f} us, "
                f"{p.missed_deadlines} of {p.latency.steps} deadlines missed, worst overrun {p.worst_overrun_us:.0f} us"
            )
        c = result.cold_start
        print(
            f"{result.label}, cold start: import {c.import_s:.3f} s, load {c.load_s:.3f} s, first step "
            f"{c.first_step_s * 1000:.2f} ms, peak RSS {c.peak_rss_mb:.0f} MB, torch imported: {c.torch_imported}"
        )
    if args.plot:
        print(f"wrote {plot_latency(results, args.plot)}")
    if args.json:
        args.json.write_text(json.dumps({"models": [r.to_dict() for r in results]}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
