"""edgernn bench: per-step latency, side by side."""

from __future__ import annotations

from pathlib import Path

import click

from edgernn.cli.common import FINITE_FLOAT, json_option
from edgernn.cli.group import cli


@cli.command()
@click.argument("models", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--steps", type=click.IntRange(min=1), default=5000, show_default=True, help="Timed steps.")
@click.option(
    "--warmup", type=click.IntRange(min=0), default=500, show_default=True, help="Untimed steps first."
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=1, show_default=True, help="Streams per step."
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="onnxruntime intra-op threads.",
)
@click.option(
    "--baselines/--no-baselines",
    default=True,
    show_default=True,
    help="Compare one model with PyTorch, its plain ONNX export and the floor.",
)
@click.option(
    "--run",
    "run_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="MODEL's run directory: the baselines take their weights from it.",
)
@click.option("--paced", "paced_hz", type=click.FloatRange(min=0, min_open=True), help="Also step at HZ.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write a latency plot (PNG).")
@click.option("--state", "state_map", multiple=True, help="Foreign models: STATE_IN=STATE_OUT (repeat).")
@click.option("--constant", "constants", multiple=True, help="Foreign models: INPUT=NUMBER (repeat).")
@click.option("--state-shape", "state_shapes", multiple=True, help="Foreign models: STATE=2,batch,128.")
@click.option(
    "--data-shape",
    help="Foreign models: the data input's shape, e.g. batch,576 (Silero VAD at 16 kHz: 64 samples of context, "
    "then 512 new); other shapes refused.",
)
@click.option(
    "--device",
    help="Measure on an emulated device instead of this machine (cortex-m0plus, cortex-m4, rv32imc, ...): "
    "exact instructions, estimated cycles, flash, RAM and stack per step (a keyword model's front end apart); "
    "--steps defaults to 200 (5 on cores without an FPU).",
)
@click.option(
    "--precision",
    "precisions",
    default="float32",
    show_default=True,
    help="With --device: precisions side by side, e.g. float32,int8.",
)
@click.option(
    "--clock-mhz", type=FINITE_FLOAT, help="With --device: the clock for us/step (default: typical)."
)
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --device and MODEL: int8 and integer calibrated on this data, as deploy --data does.",
)
@json_option
def bench(
    models, steps, warmup, batch_size, threads, baselines, run_dir, paced_hz, plot, as_json,
    device=None, precisions="float32", clock_mhz=None, data=None, **foreign,
):  # fmt: skip
    """Measure per-step latency: p50/p90/p99/max and steps/s, measured side by side in one run.

    With no MODEL, or one: the stepper against PyTorch eager, a plain ONNX export of the same weights run
    with session.run, the floor (a model that does nothing, same call path) and the generated C (path c:
    compiled with -O3 -march=native, timed in C; needs a C compiler); then run() through the
    chunk graph, a pool of 256 streams, steps after 10,000 silent steps, and the cold start. No MODEL
    means the reference GRU and LSTM (2x128, 32 features). A keyword model (its front end in the step):
    its front end's nodes alone timed beside it instead of the baselines. Several models, --no-baselines or a batch
    size above 1: the steppers side by side, with file sizes (e.g. float32 next to int8).

    \b
    Examples:
      edgernn bench --plot latency.png
      edgernn bench shakespeare.onnx --run runs/shakespeare --paced 1000 --json
      edgernn bench shakespeare.onnx shakespeare-int8.onnx --plot side-by-side.png --paced 1000
      edgernn bench silero_vad.onnx --state state=stateN --constant sr=16000 --data-shape batch,576
      edgernn bench --device cortex-m4 --precision float32,int8 --clock-mhz 80
      edgernn bench forecast.onnx --device cortex-m0plus --precision float32,int8,integer --data readings.csv
    """
    if (
        device is not None
        or data is not None
        or click.get_current_context().get_parameter_source("precisions").name != "DEFAULT"
    ):
        from edgernn.cli.device_bench import bench_on_device

        click.echo(bench_on_device(models, device, precisions, clock_mhz, steps, as_json, data), nl=False)
        return
    from edgernn.benchmark import BenchSettings, compare, compare_steppers

    options = _stepper_options(**foreign)
    if not options:
        _refuse_foreign_without_flags(models)
    settings = BenchSettings(steps=steps, warmup=warmup, threads=threads, paced_hz=paced_hz)
    settings.stepper_options = options
    if len(models) > 1 or batch_size > 1 or not baselines:
        if not models:
            raise click.UsageError("--no-baselines and --batch-size time the models you name: give MODEL ...")
        if run_dir:
            raise click.UsageError(
                "--run gives the baselines their weights: one MODEL, batch 1, with baselines"
            )
        click.echo(compare_steppers(models, settings, batch_size=batch_size, plot=plot, as_json=as_json))
        return
    click.echo(compare(models[0] if models else None, settings, run_dir=run_dir, plot=plot, as_json=as_json))


def _refuse_foreign_without_flags(models) -> None:
    """A model without edgernn metadata needs its state named: say so with this command's flags."""
    from edgernn.runtime import describe

    for model in models:
        doc = describe(model)
        if doc["edgernn"] is None:
            inputs = ", ".join(a["name"] for a in doc["inputs"])
            outputs = ", ".join(a["name"] for a in doc["outputs"])
            raise click.UsageError(
                f"{model} has no edgernn metadata, so its state inputs must be named: --state IN=OUT for each "
                f"(e.g. --state state=stateN), --constant NAME=NUMBER for fixed inputs (e.g. --constant sr=16000), "
                f"--state-shape NAME=2,batch,128 where a shape is unknown. Inputs: {inputs}; outputs: {outputs}"
            )


def _stepper_options(state_map, constants, state_shapes, data_shape=None) -> dict:
    """--state/--constant/--state-shape/--data-shape as Stepper's keyword arguments (only those given)."""
    options = {
        "state_map": dict(_pair(item, "--state", str) for item in state_map),
        "constants": dict(_pair(item, "--constant", _number) for item in constants),
        "state_shapes": dict(_pair(item, "--state-shape", _dims) for item in state_shapes),
        "data_shape": _data_shape(data_shape) if data_shape else None,
    }
    return {key: value for key, value in options.items() if value}


def _pair(item: str, option: str, parse) -> tuple[str, object]:
    name, sep, value = item.partition("=")
    try:
        if not sep or not name:
            raise ValueError("no NAME=")
        return name, parse(value)
    except ValueError:
        raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=option) from None


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _dims(text: str) -> list[int | str]:
    return [d if d == "batch" else int(d) for d in text.split(",")]


def _data_shape(text: str) -> list[int | str]:
    try:
        return _dims(text)
    except ValueError:
        raise click.BadParameter(
            f"expected sizes such as batch,576, got {text!r}", param_hint="--data-shape"
        ) from None
