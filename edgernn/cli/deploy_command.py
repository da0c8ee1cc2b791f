"""edgernn deploy: a model's artefacts for a target."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import click

from edgernn.cli.common import FINITE_FLOAT, json_option
from edgernn.cli.group import cli


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target", required=True, type=click.Choice(["ort", "c", "triton"]), help="Where it runs.")
@click.option(
    "-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Directory to write."
)
@click.option(
    "--optimization-style",
    type=click.Choice(["runtime", "fixed"]),
    help="ort: runtime (portable, the default) or fixed (optimised for --target-platform).",
)
@click.option(
    "--target-platform", type=click.Choice(["arm", "amd64"]), help="ort: platform of a fixed style."
)
@click.option("--static-batch", is_flag=True, default=None, help="ort: batch fixed at 1 (NNAPI, CoreML).")
@click.option("--name", help="c: base name of the files and C symbols (default: model).")
@click.option(
    "--precision",
    type=click.Choice(["float32", "int8", "integer"]),
    help="c, triton --backend c: weights (default float32); integer: no floating point in a step.",
)
@click.option(
    "--fast-activations", is_flag=True, default=None, help="c: approximate tanh/sigmoid (error documented)."
)
@click.option("--no-verify", "skip_verify", is_flag=True, default=None, help="c: write without compiling.")
@click.option(
    "--data",
    type=click.Path(exists=True, path_type=Path),
    help="c (or triton --backend c) int8, integer: real data for the task-metric check (integer: calibration too).",
)
@click.option(
    "--tolerance", type=FINITE_FLOAT, help="c int8, integer: metric change allowed (as export --tolerance)."
)
@click.option(
    "--force",
    is_flag=True,
    default=None,
    help="Replace an -o that is not an edgernn deployment of this target (or overwrite a file in the way); "
    "c int8: also write past a failed metric or drift check.",
)
@click.option(
    "--max-state-bytes", type=click.IntRange(min=1), help="c: largest state struct accepted (default 1 MiB)."
)
@click.option(
    "--max-scratch-bytes",
    type=click.IntRange(min=1),
    help="c: largest scratch a step keeps on the stack (default 1 MiB).",
)
@click.option(
    "--device",
    help="c: the emulated core it runs on (cortex-m0plus, cortex-m4, rv32imc...): its self-test runs there "
    "too, and a core without an FPU gets --precision integer unless --precision is given.",
)
@click.option("--backend", type=click.Choice(["onnxruntime", "python", "c"]), help="triton: the backend.")
@click.option("--model-name", help="triton: the model's name in the repository.")
@click.option("--max-batch-size", type=click.IntRange(min=1), help="triton: max_batch_size.")
@click.option(
    "--max-candidate-sequences", type=click.IntRange(min=1), help="triton: oldest strategy's candidates."
)
@click.option("--idle-timeout-us", type=click.IntRange(min=1), help="triton: max_sequence_idle_microseconds.")
@click.option("--instances", type=click.IntRange(min=1), help="triton: instance count.")
@click.option(
    "--max-queue-delay-us",
    type=click.IntRange(min=0),
    help="triton: how long the oldest strategy may hold a request to batch it (default 0).",
)
@json_option
def deploy(model, target, out_dir, as_json, device=None, **options) -> None:
    """Write MODEL's artefacts for a target into a directory, verified, from the ONNX file alone.

    \b
    Targets:
      ort     model.ort (and model.chunk.ort) for onnxruntime mobile and minimal builds
      c       model.h / model.c (C99, no malloc) and a self-test, compiled and replayed at deploy
      triton  a Triton model repository with sequence batching

    \b
    Examples:
      edgernn deploy shakespeare.onnx --target ort -o deploy/ort
      edgernn deploy shakespeare.onnx --target c --precision int8 -o deploy/c
      edgernn deploy shakespeare.onnx --target c --device cortex-m0plus -o deploy/m0
      edgernn deploy shakespeare.onnx --target triton --backend python -o model_repository
    """
    from edgernn.export.deploy import deploy as deploy_model

    given = {key: value for key, value in options.items() if value is not None}
    if device is not None:
        from edgernn.cli.deploy_device import device_options

        profile, chosen = device_options(device, target, given)
    with warnings.catch_warnings(record=True) as caught:  # each warning one clean line on stderr
        try:
            report = deploy_model(model, target, out_dir, **given)
        finally:
            for message in dict.fromkeys(" ".join(str(w.message).split()) for w in caught):
                click.echo(f"Warning: {message}", err=True)
    if device is not None:
        from edgernn.cli.deploy_device import self_test_on_device

        if not report.details.get("verified"):
            report.checks.append(f"NOT RUN on {device}: the self-test (--no-verify)")
        else:
            report.checks.append(self_test_on_device(profile, out_dir, report.details["name"]))
        if chosen:
            report.notes.insert(0, chosen)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format())
