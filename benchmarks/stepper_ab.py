"""A step of the stepper now, the same step as an earlier revision wrote it, and baseline_onnx, alternately.

The step's Python (``runtime/binding.py`` and ``runtime/stream.py``) of the revision ``--before`` is read
from git and run over the same session as today's, so the graph and onnxruntime are the same and only the
call path differs. The reference GRU and LSTM (2x128, 32 features); every round times ``--calls`` steps
of each path in turn, and the ratios are taken within a round, so that another job slowing the machine
for a while slows all three alike. Numbers only, no pass/fail.

    .venv/bin/python benchmarks/stepper_ab.py --before 1ad8b7d [--rounds 30] [--calls 1000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

from edgernn.benchmark import _baseline_onnx, _inputs, _plain_module, reference_models
from edgernn.runtime import Stepper
from edgernn.runtime.bench import time_calls

ROOT = Path(__file__).resolve().parent.parent


def module_at(revision: str, path: str, name: str, replace: dict[str, str] | None = None) -> types.ModuleType:
    """``path`` as it was at ``revision``, loaded as module ``name`` (``replace``: imports to redirect)."""
    source = subprocess.run(
        ["git", "show", f"{revision}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for old, new in (replace or {}).items():
        source = source.replace(old, new)
    module = types.ModuleType(name)
    module.__file__ = f"{revision}:{path}"
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - this repository's own code
    return module


def before_stream_class(revision: str) -> type:
    module_at(revision, "runtime/binding.py", "_before_binding")
    stream = module_at(
        revision,
        "runtime/stream.py",
        "_before_stream",
        {"from edgernn.runtime.binding import Binding": "from _before_binding import Binding"},
    )
    return stream.Stream


def compare(path: Path, model, before: type, rounds: int, calls: int) -> dict[str, np.ndarray]:
    stepper = Stepper(path)
    now, old = stepper.new_stream(), before(stepper._graph, 1)
    plain = _plain_module(model.eval())
    paths = {"baseline": _baseline_onnx(plain, stepper.info, 1, _inputs(stepper, 0))}
    for name, stream in (("now", now), ("before", old)):
        xs = _inputs(stepper, 0)
        paths[name] = lambda stream=stream, xs=xs: stream.step(next(xs))
    for call in paths.values():
        time_calls(call, 1, 1000)
    medians: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, call in paths.items():
            medians[name].append(float(np.median(time_calls(call, calls, 0))))
    return {name: np.array(values) for name, values in medians.items()}


def ratio_text(values: np.ndarray) -> str:
    low, mid, high = np.percentile(values, [25, 50, 75])
    return f"{mid:.3f} ({low:.3f}-{high:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision whose step to compare with")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    before = before_stream_class(args.before)
    print(
        "| model | now us | before us | baseline_onnx us | now / baseline_onnx (IQR) "
        "| before / baseline_onnx (IQR) | now / before (IQR) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        for label, path, model in reference_models(scratch):
            t = compare(path, model, before, args.rounds, args.calls)
            now, old, base = t["now"], t["before"], t["baseline"]
            print(
                f"| {label} | {np.median(now):.2f} | {np.median(old):.2f} | {np.median(base):.2f} | "
                f"{ratio_text(now / base)} | {ratio_text(old / base)} | {ratio_text(now / old)} |"
            )


if __name__ == "__main__":
    main()
