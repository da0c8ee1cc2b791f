"""Soak test of the stepper: a million steps, a pool under join/leave churn, exports killed mid-write.

Reports RSS growth (after a warm-up, so one-time allocations do not count), non-finite outputs, and for
the kills how many left the model and its chunk graph whole and consistent. Numbers only, no pass/fail
(docs/reliability.md records a run):

    .venv/bin/python benchmarks/soak.py                  # 1,000,000 steps, 200,000 pool steps, 20 kills
    .venv/bin/python benchmarks/soak.py --steps 100000 --pool-steps 20000 --kills 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def export_runs(root: Path) -> tuple[list[Path], Path]:
    """Two run directories of one shape with different weights, and a model exported from the first."""
    import torch

    from edgernn.checkpoint import save_checkpoint
    from edgernn.export import export_run
    from edgernn.models import ModelConfig, RecurrentModel

    runs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        config = ModelConfig(input_size=65, output_size=65, hidden_size=128, embedding_size=32)
        runs.append(save_checkpoint(root / f"run{seed}", RecurrentModel(config), task="charlm",
                                    vocabulary=[chr(32 + i) for i in range(65)]))  # fmt: skip
    model = root / "model.onnx"
    export_run(runs[0], model)
    return runs, model


def soak_stream(model: Path, steps: int) -> dict:
    from edgernn.runtime import Stepper

    stepper = Stepper(model)
    tokens = np.random.default_rng(0).integers(0, 65, size=4096)
    for t in range(20_000):
        stepper.step(int(tokens[t % 4096]))
    start_rss, started, non_finite = rss_mib(), time.perf_counter(), 0
    for t in range(steps):
        y = stepper.step(int(tokens[t % 4096]))
        if t % 1000 == 0:
            non_finite += int(not np.isfinite(y).all())
            if t % 100_000 == 0:
                stepper.restore(stepper.snapshot())
    elapsed = time.perf_counter() - started
    state = stepper.state["h"]
    return {
        "steps": steps, "seconds": round(elapsed, 1), "us_per_step": round(elapsed / steps * 1e6, 2),
        "rss_start_mib": round(start_rss, 1), "rss_growth_mib": round(rss_mib() - start_rss, 2),
        "non_finite_outputs_sampled": non_finite, "state_finite": bool(np.isfinite(state).all()),
    }  # fmt: skip


def soak_pool(model: Path, pool_steps: int, capacity: int = 64) -> dict:
    from edgernn.runtime import Stepper

    stepper = Stepper(model)
    pool = stepper.new_pool(capacity)
    rng = random.Random(0)
    live = [pool.join() for _ in range(capacity // 2)]
    joins = leaves = 0

    def churn() -> None:
        nonlocal joins, leaves
        if live and (len(live) == capacity or rng.random() < 0.5):
            pool.leave(live.pop(rng.randrange(len(live))))
            leaves += 1
        else:
            live.append(pool.join())
            joins += 1

    for _ in range(5000):
        churn()
        pool.step({i: rng.randrange(65) for i in live})
    start_rss, started, non_finite = rss_mib(), time.perf_counter(), 0
    for t in range(pool_steps):
        churn()
        ys = pool.step({i: rng.randrange(65) for i in live})
        if t % 100 == 0:
            non_finite += sum(int(not np.isfinite(y).all()) for y in ys.values())
    elapsed = time.perf_counter() - started
    return {
        "pool_steps": pool_steps, "capacity": capacity, "joins": joins, "leaves": leaves,
        "seconds": round(elapsed, 1), "rss_start_mib": round(start_rss, 1),
        "rss_growth_mib": round(rss_mib() - start_rss, 2), "non_finite_outputs_sampled": non_finite,
    }  # fmt: skip


def kill_exports(runs: list[Path], model: Path, kills: int) -> dict:
    """Export the two runs in turn over one path and SIGKILL each export at a random moment; after each
    kill the path must load, and run() (through whatever chunk graph lies beside it) must equal
    stepping the step graph alone."""
    from edgernn.runtime import Stepper

    rng = random.Random(1)
    xs = np.random.default_rng(1).integers(0, 65, size=200)
    outcomes = {"whole_and_consistent": 0, "chunk_ignored_with_warning": 0, "broken": 0}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in range(kills):
        run = runs[k % 2]
        command = [sys.executable, "-m", "edgernn", "export", str(run), "-o", str(model)]
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 6.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ys = Stepper(model).run(xs)
            want = Stepper(model, chunk_model=False).run(xs)
            same = np.allclose(ys, want, atol=1e-4)
            warned = any("ignoring" in str(w.message) for w in caught)
            key = "broken" if not same else "chunk_ignored_with_warning" if warned else "whole_and_consistent"
        except Exception:  # noqa: BLE001 - a file the kill left unreadable is what this counts
            key = "broken"
        outcomes[key] += 1
    leftovers = [p.name for p in model.parent.iterdir() if p.name.endswith(".tmp")]
    return {"kills": kills, **outcomes, "temporary_files_left": len(leftovers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--pool-steps", type=int, default=200_000)
    parser.add_argument("--kills", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs, model = export_runs(Path(tmp))
        report = {"stream": soak_stream(model, args.steps), "pool": soak_pool(model, args.pool_steps)}
        print(json.dumps(report, indent=2), flush=True)
        report["kills"] = kill_exports(runs, model, args.kills)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
