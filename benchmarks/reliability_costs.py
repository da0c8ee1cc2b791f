"""What the hardening costs, measured side by side in one run (numbers only, no pass/fail):

- the lock on the single-thread step path: the body of ``Stream.step`` (the stream's own binding) with
  its lock against the same body without it, interleaved in rounds (and ``Stream.step`` as shipped);
- the non-finite check inside every step: the probe alone, against the step;
- the checksum at load: ``Stepper(path)`` against ``Stepper(path, verify_checksum=False)``, interleaved.

    .venv/bin/python benchmarks/reliability_costs.py            # prints a Markdown table
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def exported_models(root: Path) -> dict[str, Path]:
    """Character GRUs of the sizes edgernn trains (hidden 64 and 256, and a 2x512 to show the trend)."""
    import torch

    from edgernn.export import export_model
    from edgernn.models import ModelConfig, RecurrentModel

    models = {}
    for hidden, layers in ((64, 1), (256, 1), (512, 2)):
        torch.manual_seed(0)
        config = ModelConfig(
            input_size=65, output_size=65, hidden_size=hidden, num_layers=layers, embedding_size=32
        )
        path = root / f"gru{layers}x{hidden}.onnx"
        export_model(RecurrentModel(config).eval(), path, chunk_steps=None)
        models[f"char GRU {layers}x{hidden}"] = path
    return models


def step_calls(path: Path):
    """Stream.step as shipped, and its body (the stream's own binding) with and without the lock."""
    from edgernn.runtime import Stepper

    stream = Stepper(path).new_stream()
    step, acquire, release = stream._binding.fast_step, stream._acquire, stream._release

    def unlocked(x: int) -> np.ndarray:
        results, unbatched = step(x)
        return results[0][0].copy() if unbatched else results[0].copy()

    def locked(x: int) -> np.ndarray:  # as Stream.step holds its lock
        acquire()
        try:
            results, unbatched = step(x)
            return results[0][0].copy() if unbatched else results[0].copy()
        finally:
            release()

    return stream.step, locked, unlocked, stream._binding._probes[0]


def per_call_us(fn, calls: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - started) / calls / 1000


def lock_cost(path: Path, rounds: int, calls: int) -> dict[str, float]:
    shipped, locked, unlocked, probe = step_calls(path)
    tokens = iter(np.random.default_rng(0).integers(0, 65, size=10**8).tolist())
    for fn in (shipped, locked, unlocked):
        for _ in range(2000):
            fn(next(tokens))
    lock = threading.Lock()
    acquire_alone, release_alone = lock.acquire, lock.release

    def lock_alone() -> None:
        acquire_alone()
        try:
            pass
        finally:
            release_alone()

    times: dict[str, list[float]] = {"shipped": [], "locked": [], "unlocked": [], "probe": [], "lock": []}
    for _ in range(rounds):  # interleaved: every round measures all five
        for name, fn in (("shipped", shipped), ("locked", locked), ("unlocked", unlocked)):
            times[name].append(per_call_us(lambda fn=fn: fn(next(tokens)), calls))
        times["probe"].append(per_call_us(probe.all_finite, calls))
        times["lock"].append(per_call_us(lock_alone, calls))
    ratios = np.array(times["locked"]) / np.array(times["unlocked"])
    return {
        "step_us": float(np.median(times["shipped"])),
        "lock_ratio": float(np.median(ratios)),
        "lock_low": float(np.percentile(ratios, 25)),
        "lock_high": float(np.percentile(ratios, 75)),
        "lock_best": min(times["locked"]) / min(times["unlocked"]),  # fastest rounds: least disturbed
        "probe_share": min(times["probe"]) / min(times["unlocked"]),
        "lock_share": min(times["lock"]) / min(times["unlocked"]),  # what the lock adds to each call
    }


def checksum_cost(path: Path, rounds: int) -> dict[str, float]:
    from edgernn.runtime import Stepper

    on, off = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        Stepper(path)
        on.append(time.perf_counter() - started)
        started = time.perf_counter()
        Stepper(path, verify_checksum=False)
        off.append(time.perf_counter() - started)
    return {
        "size_kib": path.stat().st_size / 1024,
        "load_ms": float(np.median(off)) * 1000,
        "checksum_ms": (float(np.median(on)) - float(np.median(off))) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    print(
        "| model | file KiB | Stream.step us | lock: locked/unlocked body, median of rounds (IQR) "
        "| fastest rounds | lock alone / step | finite probe / step | load ms | checksum ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in exported_models(Path(tmp)).items():
            lock = lock_cost(path, args.rounds, args.calls)
            load = checksum_cost(path, 15)
            print(
                f"| {name} | {load['size_kib']:,.0f} | {lock['step_us']:.1f} | {lock['lock_ratio']:.3f}x "
                f"({lock['lock_low']:.3f}-{lock['lock_high']:.3f}) | {lock['lock_best']:.3f}x | "
                f"{lock['lock_share'] * 100:.1f}% | "
                f"{lock['probe_share'] * 100:.1f}% | "
                f"{load['load_ms']:.1f} | {load['checksum_ms']:+.2f} |"
            )


if __name__ == "__main__":
    main()
