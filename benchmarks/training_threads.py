"""Training step time against torch's thread count, on an idle machine and beside competing CPU jobs.

Each cell is the median seconds per training step of a short run (at most ``--steps`` steps or
``--seconds`` seconds) through ``train_task``, the path the CLI and the Python API share; every
configuration runs in its own fresh interpreter (torch's thread pool is per process), and the
configurations are interleaved over ``--rounds`` rounds so that whatever else the machine does slows
them alike. A competing job is a Python busy loop, one process per job. Prints the markdown table of
docs/training.md.

Run:  python benchmarks/training_threads.py [--threads 1,2,default] [--jobs 0,1,2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).parents[1] / "examples" / "data"
TEXT_CHARS = 200_000  # the first 200,000 characters: the same steps, a shorter validation pass at the end
RECIPES = {  # the CLI's defaults for each
    "charlm GRU 1x256 (batch 32 x 128)": ("charlm", None, {"hidden_size": 256, "embedding_size": 64}, {"batch_size": 32, "seq_len": 128}),
    "forecast GRU 1x64 (batch 8 x 32)": ("forecast", DATA / "ucr_internalbleeding16_train.csv", {"hidden_size": 64}, {"batch_size": 8, "seq_len": 32, "eval_batch_size": 4}),
}  # fmt: skip

ONE_RUN = """
import json, sys, tempfile, time
from edgernn.models import ModelConfig
from edgernn.train import TrainConfig, train_task
task, path, model, train, threads, steps, seconds = json.loads(sys.argv[1])
config = TrainConfig(budget_minutes=seconds / 60, max_steps=steps, eval_every=10**6, threads=threads, **train)
with tempfile.TemporaryDirectory() as run_dir:
    result = train_task(task, path, run_dir, ModelConfig(**model), config, progress=False)
print(json.dumps({"seconds_per_step": result.metrics["minutes"] * 60 / result.metrics["steps"],
                  "steps": result.metrics["steps"], "threads": result.metrics["threads"]}))
"""
BUSY_LOOP = "while True: pass"


def one_run(recipe: tuple, threads: int | None, steps: int, seconds: float, text: Path) -> float:
    task, path, model, train = recipe
    path = path or text
    args = json.dumps([task, str(path), model, train, threads, steps, seconds])
    done = subprocess.run([sys.executable, "-c", ONE_RUN, args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds_per_step"]


def with_jobs(jobs: int):
    """Start ``jobs`` busy-loop processes; returns them (the caller ends them)."""
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(jobs)]


def main(
    thread_counts: list[int | None],
    job_counts: list[int],
    rounds: int,
    steps: int,
    seconds: float,
    scratch: Path,
) -> None:
    text = scratch / "text.txt"
    text.write_text((DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:TEXT_CHARS], encoding="utf-8")
    cells: dict[tuple[str, int, int | None], list[float]] = {}
    for _ in range(rounds):
        for jobs in job_counts:
            busy = with_jobs(jobs)
            try:
                time.sleep(0.5)
                for name, recipe in RECIPES.items():
                    for threads in thread_counts:
                        value = one_run(recipe, threads, steps, seconds, text)
                        cells.setdefault((name, jobs, threads), []).append(value)
                        print(
                            f"{name}, {jobs} job(s), threads {threads}: {value:.3f} s/step", file=sys.stderr
                        )
            finally:
                for process in busy:
                    process.kill()
                    process.wait()
    label = {None: "torch default (every core)"}
    print(
        "| model | competing jobs | " + " | ".join(f"threads {label.get(t, t)}" for t in thread_counts) + " |"
    )
    print("|---|---|" + "---|" * len(thread_counts))
    for name in RECIPES:
        for jobs in job_counts:
            medians = [float(np.median(cells[(name, jobs, t)])) for t in thread_counts]
            best = min(medians)
            row = " | ".join(f"{m:.3f} s ({m / best:.2f}x)" for m in medians)
            print(f"| {name} | {jobs} | {row} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2,default", help="comma-separated; 'default': torch's own")
    parser.add_argument("--jobs", default="0,1,2", help="competing busy-loop processes, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="at most this many steps per run")
    parser.add_argument("--seconds", type=float, default=8.0, help="at most this long per run")
    args = parser.parse_args()
    threads = [None if t == "default" else int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        main(
            threads,
            [int(j) for j in args.jobs.split(",")],
            args.rounds,
            args.steps,
            args.seconds,
            Path(scratch),
        )
