"""The generated C beside the plain ONNX baseline, side by side in one run, and its flash and RAM on a
Cortex-M4F. Prints the Markdown tables of docs/devices.md.

Speed: for the reference GRU and LSTM of ``edgernn bench`` (2 layers of 128, 32 features, PyTorch's
initialisation) and the same at hidden 512, each path is timed per step, interleaved in rounds:
``baseline_onnx`` (``torch.onnx.export`` of the same weights run with ``session.run``), the stepper,
and the generated C in float32 and int8 (``-O3 -march=native``, timed in C), each with the
default activations (the generated file's own exp/sigmoid/tanh, about 1 ulp) and with ``--fast-activations``
(a rational tanh). Goals: float32 C p50 at most 0.3x
baseline_onnx for the reference 2x128 models; int8 C at most 0.2x at hidden 128 and 0.15x at hidden 512.

Size: NAME.c alone compiled for the Cortex-M4F (arm-none-eabi-gcc -O2, arm-none-eabi-size), float32 and
int8, for the demo-sized character model (GRU 1x256, embedding 64, the 65 characters of tinyshakespeare) and the
reference models. Goal: int8 flash at least 3.5x smaller than float32.

Run:  python benchmarks/c_targets.py [--steps 5000] [--rounds 5] [--no-size] [--no-speed]  (about 5 minutes)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgernn.benchmark import (
    REFERENCE_SHAPE,
    BenchSettings,
    _baseline_onnx,
    _inputs,
    _interleaved,
    _plain_module,
    _torch_threads,
    reference_models,
)
from edgernn.data import build_vocabulary
from edgernn.export import export_model
from edgernn.export.c import generate_sources
from edgernn.export.c.targets import CStepBench, get_target, measure_footprint, run_trace
from edgernn.models import ModelConfig, RecurrentModel
from edgernn.runtime import Stepper
from edgernn.runtime.bench import stats_of, step_call

ROOT = Path(__file__).parents[1]
HIDDEN_SIZES = (128, 512)
GOALS = {"float32": {128: 0.3}, "int8": {128: 0.2, 512: 0.15}}  # float32: the reference 2x128 only
FLASH_GOAL = 3.5
VARIANTS = {
    "c_float32": ("float32", False),
    "c_int8": ("int8", False),
    "c_float32_fast": ("float32", True),
    "c_int8_fast": ("int8", True),
}


def speed_rows(settings: BenchSettings, root: Path) -> list[dict]:
    """One row per reference model and hidden size: p50 of each path (us) and the C ratios."""
    rows = []
    for hidden in HIDDEN_SIZES:
        shape = {**REFERENCE_SHAPE, "hidden_size": hidden}
        for label, path, model in reference_models(root, settings.seed, shape):
            rows.append(_speed_row(label, path, model, hidden, settings, root))
    return rows


def _speed_row(label: str, path: Path, model, hidden: int, settings: BenchSettings, root: Path) -> dict:
    stepper = Stepper(path, threads=settings.threads)
    calls = {
        "baseline_onnx": _baseline_onnx(
            _plain_module(model), stepper.info, settings.threads, _inputs(stepper, settings.seed)
        ),
        "stepper": step_call(stepper, 1, settings.seed),
    }
    native = {
        variant: CStepBench.build(
            path,
            root / f"{path.stem}-{variant}",
            precision=precision,
            fast_activations=fast,
            warmup=settings.warmup,
        ).time_steps
        for variant, (precision, fast) in VARIANTS.items()
    }
    with _torch_threads(settings.threads):
        timings = _interleaved(calls, settings, batched=native)
    p50 = {name: stats_of(values, settings.warmup).p50_us for name, values in timings.items()}
    return {"model": label, "hidden": hidden, **p50}


def format_speed(rows: list[dict], settings: BenchSettings) -> str:
    lines = [
        f"p50 per step, us ({settings.steps} timed steps per path, {settings.rounds} interleaved rounds, "
        "batch 1, 1 thread); C / baseline = C p50 / baseline_onnx p50, against the goal; fast = "
        "--fast-activations",
        "",
        "| model | baseline_onnx | stepper | float32 C | int8 C | float32 C fast | int8 C fast | "
        "float32 C / baseline | int8 C / baseline | float32 fast / baseline | int8 fast / baseline |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        times = " | ".join(f"{row[variant]:.2f}" for variant in VARIANTS)
        ratios = " | ".join(
            _ratio(row[variant] / row["baseline_onnx"], GOALS[precision].get(row["hidden"]))
            for variant, (precision, _) in VARIANTS.items()
        )
        lines.append(
            f"| {row['model']} | {row['baseline_onnx']:.1f} | {row['stepper']:.1f} | {times} | {ratios} |"
        )
    return "\n".join(lines)


def _ratio(ratio: float, goal: float | None) -> str:
    if goal is None:
        return f"{ratio:.3f}x (no goal)"
    return f"{ratio:.3f}x ({'met' if ratio <= goal else 'not met'}: <= {goal})"


# --- flash and RAM on the Cortex-M4F ------------------------------------------------------------------


def size_models(root: Path) -> list[tuple[str, Path]]:
    """The demo-sized character model and the reference models, exported (untrained: the sizes are the
    same as trained ones)."""
    text = (ROOT / "examples" / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    vocabulary = build_vocabulary(text)
    torch.manual_seed(0)
    config = ModelConfig(  # what edgernn train builds for charlm (the demo's model)
        input_size=len(vocabulary), output_size=len(vocabulary), hidden_size=256, embedding_size=64
    )
    demo = root / "chars-gru-1x256.onnx"
    with _torch_threads(1):
        export_model(RecurrentModel(config).eval(), demo, vocabulary=vocabulary, chunk_steps=None)
    models = [(f"GRU 1x256 characters (vocabulary {len(vocabulary)}, embedding 64: the demo's)", demo)]
    for hidden in HIDDEN_SIZES:
        shape = {**REFERENCE_SHAPE, "hidden_size": hidden}
        models += [(label, path) for label, path, _ in reference_models(root, 0, shape)]
    return models


def size_rows(root: Path) -> list[dict]:
    rows = []
    for label, path in size_models(root):
        row: dict = {"model": label, "onnx_bytes": path.stat().st_size, "stem": path.stem}
        for precision in ("float32", "int8"):
            directory = root / f"{path.stem}-size-{precision}"
            directory.mkdir(exist_ok=True)
            sources = generate_sources(path, precision=precision)
            for name, source in sources.files.items():
                (directory / name).write_text(source)
            row[precision] = measure_footprint(directory, name="model")
        rows.append(row)
    return rows


def format_size(rows: list[dict]) -> str:
    lines = [
        "model.c alone on the Cortex-M4F (arm-none-eabi-gcc -O2 -mcpu=cortex-m4 -mfpu=fpv4-sp-d16 "
        "-mfloat-abi=hard, arm-none-eabi-size): flash = text + data; RAM = data + bss + the header's "
        "MODEL_RAM_BYTES (state and a step's scratch, per stream); linked = what linking it into a program "
        "adds, libm included",
        "",
        "| model | float32 ONNX file | float32 flash | int8 flash | float32 / int8 flash | float32 RAM | "
        "int8 RAM | float32 linked | int8 linked |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        f32, i8 = row["float32"], row["int8"]
        ratio = f32.flash / i8.flash
        lines.append(
            f"| {row['model']} | {row['onnx_bytes']:,} | {f32.flash:,} | {i8.flash:,} | {ratio:.2f}x "
            f"({_verdict_at_least(ratio)}) | {f32.ram:,} | {i8.ram:,} | {_linked(f32)} | {_linked(i8)} |"
        )
    return "\n".join(lines)


def agreement_rows(root: Path, sizes: list[dict]) -> list[dict]:
    """Largest |output - host output| over the 64 fixed steps of ``run_trace``, on the Cortex-M4F and
    aarch64, for the models whose programs fit the emulated board."""
    rows = []
    for size in sizes:
        for precision in ("float32", "int8"):
            if size[precision].linked_flash is None:
                continue
            directory = root / f"{size['stem']}-size-{precision}"
            host = run_trace(directory, "host")
            row = {"model": f"{size['model']}, {precision}", "host_max": float(np.abs(host).max())}
            for target in ("cortex-m4", "aarch64"):
                row[target] = float(np.abs(run_trace(directory, target) - host).max())
            rows.append(row)
    return rows


def format_agreement(rows: list[dict]) -> str:
    lines = [
        "The same C on the three targets: largest |output - host output| over 64 fixed steps "
        "(edgernn.export.c.targets.run_trace: the same inputs everywhere, state fed back)",
        "",
        "| model | largest host output | Cortex-M4F | aarch64 |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['model']} | {r['host_max']:.3g} | {r['cortex-m4']:.2g} | {r['aarch64']:.2g} |" for r in rows
    ]
    return "\n".join(lines)


def _linked(footprint) -> str:
    return "does not fit 4 MiB" if footprint.linked_flash is None else f"{footprint.linked_flash:,}"


def _verdict_at_least(ratio: float) -> str:
    return f">= {FLASH_GOAL}: {'met' if ratio >= FLASH_GOAL else 'not met'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000, help="timed steps per path")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-size", action="store_true", help="skip the Cortex-M4 flash/RAM table")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed table")
    args = parser.parse_args()
    settings = BenchSettings(steps=args.steps, warmup=max(1, args.steps // 10), rounds=args.rounds)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="edgernn-c-targets-") as scratch:
        root = Path(scratch)
        if not args.no_size:
            for target in ("cortex-m4", "aarch64"):
                get_target(target).require_tools()
            sizes = size_rows(root)
            print(format_size(sizes), end="\n\n", flush=True)
            print(format_agreement(agreement_rows(root, sizes)), end="\n\n", flush=True)
        if not args.no_speed:
            print(format_speed(speed_rows(settings, root), settings), flush=True)


if __name__ == "__main__":
    main()
