"""The generated C driven from Python (``NativeStepper``) beside onnxruntime, side by side in one run.

For the reference GRU and LSTM (2 layers of 128, 32 features in, 32 values out) and a hidden-512 GRU,
each path steps one stream with its state fed back, timed call by call in interleaved rounds:

- ``baseline_onnx``: a plain ``nn.GRU``/``nn.LSTM`` exported by torch.onnx, ``session.run`` with a numpy
  dict (what a user writes by hand; edgernn.benchmark's baseline);
- ``stepper``: ``Stepper.step`` (onnxruntime, the step graph);
- ``native``: ``NativeStepper.step`` on the generated C built with ``build_shared_library``
  (-O3 -fPIC, FMA contraction allowed, no -ffast-math), float32 and int8; ``-march=native`` variants too;
- ``C ... (timed in C)``: the same step in a C program with the same flags, each step timed with
  ``clock_gettime`` (separate runs after the interleaved Python paths; its ratio uses the same baseline).

Prints a markdown table (p50/p99 per step in microseconds, and native / baseline_onnx); the goal of issue 9
is native float32 at most 0.4x baseline_onnx. Timings only: nothing here passes or fails.

    .venv/bin/python benchmarks/c_native.py [--steps 5000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

from edgernn.benchmark import (  # noqa: E402
    REFERENCE_SHAPE,
    BenchSettings,
    _baseline_onnx,
    _interleaved,
    _plain_module,
    _torch_threads,
    reference_models,
)
from edgernn.export.c import build_shared_library, generate_sources  # noqa: E402
from edgernn.runtime import Stepper  # noqa: E402
from edgernn.runtime.bench import random_input, stats_of  # noqa: E402
from edgernn.runtime.native import NativeStepper  # noqa: E402


def _cycle_inputs(stepper: Stepper, seed: int = 0):
    rng = np.random.default_rng(seed)
    pool = [random_input(stepper.data_input, 1, rng)[0] for _ in range(256)]
    state = {"i": 0}

    def next_input():
        state["i"] = (state["i"] + 1) % len(pool)
        return pool[state["i"]]

    return next_input


_C_TIMER = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
#include "model.h"
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
int main(int argc, char **argv)
{
    const int steps = argc > 1 ? atoi(argv[1]) : 5000;
    static float xs[256][MODEL_INPUT_SIZE > 0 ? MODEL_INPUT_SIZE : 1];
    static double us[100000];
    float y[MODEL_OUTPUT_SIZE];
    uint32_t seed = 12345u;
    model_state st;
    for (int i = 0; i < 256; i++)
        for (int f = 0; f < (MODEL_INPUT_SIZE > 0 ? MODEL_INPUT_SIZE : 1); f++) {
            seed = seed * 1664525u + 1013904223u;
            xs[i][f] = (float)((int)(seed >> 8) % 2001 - 1000) / 500.0f;
        }
    model_reset(&st);
    for (int i = 0; i < steps / 10; i++)
        model_step(&st, xs[i % 256], y);
    for (int i = 0; i < steps && i < 100000; i++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        model_step(&st, xs[i % 256], y);
        clock_gettime(CLOCK_MONOTONIC, &b);
        us[i] = (b.tv_sec - a.tv_sec) * 1e6 + (b.tv_nsec - a.tv_nsec) / 1e3;
    }
    qsort(us, steps, sizeof us[0], cmp);
    printf("%.3f %.3f\n", us[steps / 2], us[steps * 99 / 100]);
    return 0;
}
"""


def _time_in_c(out: Path, native: bool, steps: int) -> tuple[float, float]:
    """p50, p99 of a step timed in C, built with the library's flags (features models)."""
    from edgernn.export.c.build import SHARED_FLAGS, _native_flags

    (out / "timer.c").write_text(_C_TIMER)
    flags = [f for f in SHARED_FLAGS if f not in ("-fPIC", "-shared", "-std=c99")] + ["-std=c99"]
    flags += _native_flags() if native else []
    exe = out / f"timer{'-native' if native else ''}"
    subprocess.run(
        ["cc", *flags, str(out / "model.c"), str(out / "timer.c"), "-o", str(exe), "-lm"], check=True
    )
    done = subprocess.run([str(exe), str(steps)], capture_output=True, text=True, check=True)
    p50, p99 = (float(v) for v in done.stdout.split())
    return p50, p99


def _native_call(library: Path, stepper: Stepper):
    native = NativeStepper(library, name="model")
    stream = native.new_stream()
    take = _cycle_inputs(stepper)
    return lambda: stream.step(take())


def _stepper_call(stepper: Stepper):
    stream = stepper.new_stream()
    take = _cycle_inputs(stepper)
    return lambda: stream.step(take())


def bench(label: str, path: Path, model, folder: Path, settings: BenchSettings) -> dict:
    stepper = Stepper(path)
    batched_inputs = _cycle_inputs(stepper)

    def baseline_inputs():
        while True:
            yield batched_inputs()[None]

    calls = {
        "baseline_onnx": _baseline_onnx(_plain_module(model), stepper.info, 1, baseline_inputs()),
        "stepper": _stepper_call(stepper),
    }
    sizes = {}
    in_c: dict[str, tuple[float, float]] = {}
    for precision, fast in (("float32", False), ("float32", True), ("int8", False), ("int8", True)):
        sources = generate_sources(path, precision=precision, fast_activations=fast)
        sizes[precision] = sources.flash_bytes
        out = folder / f"{path.stem}-{precision}{'-fast' if fast else ''}"
        out.mkdir()
        for name, text in sources.files.items():
            (out / name).write_text(text)
        for native in (False, True):
            if fast and not native:
                continue
            library = build_shared_library(
                out, "model", out / f"libmodel{'-native' if native else ''}.so", native=native
            )
            key = f"native {precision}{' fast' if fast else ''}{' -march=native' if native else ''}"
            calls[key] = _native_call(library, stepper)
            in_c[f"C {key[len('native ') :]}"] = _time_in_c(out, native, settings.steps)
    with _torch_threads(1):
        timings = _interleaved(calls, settings)
    stats = {name: stats_of(t, settings.warmup) for name, t in timings.items()}
    base = stats["baseline_onnx"].p50_us
    rows = {
        name: {"p50_us": s.p50_us, "p99_us": s.p99_us, "vs_baseline_onnx": s.p50_us / base}
        for name, s in stats.items()
    }
    for name, (p50, p99) in in_c.items():  # timed in C, in separate runs after the Python paths
        rows[f"{name} (timed in C)"] = {"p50_us": p50, "p99_us": p99, "vs_baseline_onnx": p50 / base}
    return {"model": label, "paths": rows, "flash_bytes": sizes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--big", action="store_true", help="also a GRU 1x512 (slower to generate and build)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    settings = BenchSettings(steps=args.steps, warmup=max(100, args.steps // 10), rounds=args.rounds)
    results = []
    with tempfile.TemporaryDirectory(prefix="edgernn-c-bench-") as tmp:
        folder = Path(tmp)
        models = reference_models(folder)
        if args.big:
            big = folder / "big"
            big.mkdir()
            shape = {**REFERENCE_SHAPE, "num_layers": 1, "hidden_size": 512}
            models += [m for m in reference_models(big, shape=shape) if m[0].startswith("GRU")]
        for label, path, model in models:
            results.append(bench(label, path, model, folder, settings))
    print(f"steps per path: {settings.steps} in {settings.rounds} interleaved rounds, one thread, batch 1\n")
    print("| model | path | p50 us | p99 us | p50 vs baseline_onnx |")
    print("|---|---|---:|---:|---:|")
    for result in results:
        for name, row in result["paths"].items():
            print(
                f"| {result['model']} | {name} | {row['p50_us']:.1f} | {row['p99_us']:.1f} | {row['vs_baseline_onnx']:.2f}x |"
            )
    print()
    for result in results:
        f32, i8 = result["flash_bytes"]["float32"], result["flash_bytes"]["int8"]
        print(f"{result['model']}: flash float32 {f32:,} B, int8 {i8:,} B ({f32 / i8:.2f}x smaller)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
