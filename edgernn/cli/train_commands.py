"""Commands that need the train extra: train, export, quantize."""

from __future__ import annotations

import json
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import click
from click.core import ParameterSource

from edgernn.cli.common import FINITE_FLOAT, json_option, names, train_extra
from edgernn.cli.group import cli
from edgernn.csv_table import DEFAULT_MISSING, MISSING_POLICIES
from edgernn.runtime.contract import QUANTIZATION_MODES


@cli.command()
@click.argument("data", required=False, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o", "--out", "run_dir", type=click.Path(file_okay=False, path_type=Path), help="Run directory to write."
)
@click.option(
    "--task",
    type=click.Choice(["charlm", "forecast", "anomaly", "classify", "steplabels", "keyword"]),
    help="Default: inferred from DATA (.csv forecast, .ts classify, a folder of .wav files or .npz clip "
    "bundles keyword, text charlm); refused when ambiguous.",
)
@click.option(
    "--no-augment",
    is_flag=True,
    help="keyword: train on the clips as they are (augmentation is on by default).",
)
@click.option(
    "--mels",
    type=click.IntRange(min=1),
    help="keyword: mel bands of the front end (default 32; at most 128 at 8 kHz, 256 at 16 kHz).",
)
@click.option(
    "--running-ms",
    type=click.FloatRange(min=0, max=60_000),
    help="keyword: the front end's running normalisation, each band less its moving mean with this time "
    "constant (default 0: off).",
)
@click.option(
    "--wav-repeat",
    type=click.IntRange(min=1),
    help="keyword: in a folder of clip bundles and WAV files, each WAV file's clip N times among the "
    "training clips: your own recordings weighed against the others' (with --init-from: adapting to a voice).",
)
@click.option(
    "--columns",
    help="Comma-separated input columns of a CSV (default: numeric columns except timestamps and labels).",
)
@click.option("--targets", help="Comma-separated columns to forecast (default: the first input column).")
@click.option(
    "--label-column",
    help="Label column: per row (steplabels) or per sequence (classify from CSV); forecast and anomaly "
    "leave it out of the inputs.",
)
@click.option(
    "--missing",
    type=click.Choice(MISSING_POLICIES),
    default=DEFAULT_MISSING,
    show_default=True,
    help="CSV cells of the columns used that are empty or not numbers: refuse them, fill forward, "
    "interpolate, or drop their rows. The summary says how many and where.",
)
@click.option(
    "--cell", type=click.Choice(["gru", "lstm", "rnn_tanh", "rnn_relu"]), default="gru", show_default=True
)
@click.option(
    "--hidden-size", type=click.IntRange(min=1), help="Default: 256 charlm, 32 anomaly, 64 otherwise."
)
@click.option("--num-layers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--embedding-size", type=click.IntRange(min=1), help="Token embedding size (charlm; default 64)."
)
@click.option(
    "--dropout",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.0,
    show_default=True,
    help="Between layers.",
)
@click.option(
    "--minutes",
    "budget_minutes",
    type=click.FloatRange(min=0, min_open=True),
    help="Time budget (default 2 unless --steps). With --resume: minutes more.",
)
@click.option(
    "--steps", "max_steps", type=click.IntRange(min=1), help="Step budget. With --resume: steps more."
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Streams (series) or sequences per step (default: 32 charlm, 16 classify, 8 otherwise).",
)
@click.option(
    "--seq-len",
    type=click.IntRange(min=2),
    help="Truncated-BPTT chunk length of series tasks (default: 128 charlm, 32 otherwise).",
)
@click.option(
    "--lr", "learning_rate", type=click.FloatRange(min=0, min_open=True), default=3e-3, show_default=True
)
@click.option("--warmup-steps", type=click.IntRange(min=0), default=50, show_default=True)
@click.option(
    "--eval-every",
    type=click.IntRange(min=1),
    help="Validate every N steps (default: 200 charlm, 100 otherwise).",
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    help="Stop after N validations without improvement (default: never).",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Steps between resume checkpoints.",
)
@click.option(
    "--reset-state-per-chunk", is_flag=True, help="Start every chunk from zero state instead of carrying it."
)
@click.option(
    "--input-noise",
    type=click.FloatRange(min=0),
    help="Feature inputs: Gaussian noise added in training, in units of each feature's std (default 0).",
)
@click.option(
    "--all-data",
    is_flag=True,
    help="classify: the validation cases train too and the last weights are kept (a refit once settings are chosen).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="torch threads; 1 holds up when the machine is busy, where more make every step slower (docs/training.md).",
)
@click.option(
    "--resume",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Continue this run directory exactly (--steps N / --minutes M: that much more).",
)
@click.option(
    "--init-from",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Start from this run's trained weights (its model, classes and front end) and train them on DATA: "
    "a model adapted to new recordings or rows.",
)
@click.option("--overwrite", is_flag=True, help="Replace a run already in RUN_DIR (refused without it).")
@click.option(
    "--tensorboard", type=click.Path(file_okay=False, path_type=Path), help="Write TensorBoard logs here."
)
@click.option("--quiet", is_flag=True, help="Print nothing but the summary (no progress, no notes).")
def train(
    data,
    run_dir,
    task,
    columns,
    targets,
    label_column,
    missing,
    no_augment,
    mels,
    running_ms,
    wav_repeat,
    resume,
    init_from,
    overwrite,
    tensorboard,
    quiet,
    **settings,
) -> None:
    """Train a model on DATA and write a run directory (best weights, metrics, loss curves, resume state).

    The task is inferred from DATA unless --task names it; an existing run in RUN_DIR is refused unless
    --overwrite. Progress goes to stderr (a bar on a terminal, a line every 5% elsewhere); the summary to
    stdout: the input columns in order, what is predicted, what --missing did with bad CSV cells. A model
    too big for the machine's memory is refused before training. Ctrl-C saves a checkpoint and prints
    the --resume command (exit code 130).

    \b
    Examples:
      edgernn train examples/data/tinyshakespeare.txt -o runs/shakespeare --minutes 2
      edgernn train examples/data/japanese_vowels_train.ts -o runs/vowels --steps 600
      edgernn train readings.csv -o runs/readings --columns temperature,pressure --targets temperature
      edgernn train examples/data/ucr_internalbleeding16_train.csv --task anomaly -o runs/bleeding --steps 400
      edgernn train examples/data/ucr_internalbleeding16_test.csv --task steplabels --label-column is_anomaly -o runs/labels
      edgernn train examples/data/fsdd -o runs/digits --minutes 5     # spoken digits: a keyword model
      edgernn train --resume runs/shakespeare --minutes 4     # four minutes more
      edgernn train examples/data/fsdd/lucas.npz -o runs/lucas --init-from runs/digits --steps 300  # one voice
      torchrun --nproc_per_node=2 -m edgernn train data.txt -o runs/ddp --steps 500
    """
    train_module = train_extra("train", "edgernn.train")
    from edgernn.train_summary import format_training

    if resume and (data is not None or run_dir is not None):
        raise click.UsageError("--resume RUN_DIR continues that run: give no DATA or -o")
    if not resume and (data is None or run_dir is None):
        raise click.UsageError("give DATA and -o RUN_DIR (or --resume RUN_DIR)")
    data_flags = {
        "--columns": columns, "--targets": targets, "--label-column": label_column, "--task": task,
        "--no-augment": no_augment, "--mels": mels, "--running-ms": running_ms, "--wav-repeat": wav_repeat,
    }  # fmt: skip
    given = [flag for flag, value in data_flags.items() if value not in (None, False)]
    if resume and given:
        raise click.UsageError(
            f"--resume continues the run on its own data and front end: drop {', '.join(given)}"
        )
    if resume and init_from:
        raise click.UsageError("--resume continues a run; --init-from starts a new one from a run's weights")
    if init_from:
        source = click.get_current_context().get_parameter_source
        shaped = [f"--{k.replace('_', '-')}" for k in MODEL_KEYS if source(k) != ParameterSource.DEFAULT]
        if shaped:
            raise click.UsageError(
                f"--init-from {init_from} keeps that run's model: drop {', '.join(shaped)}"
            )
    with warnings.catch_warnings(), _exit_on_interrupt():
        if quiet:  # the summary carries the warning
            warnings.simplefilter("ignore", train_module.FewStepsWarning)
        if resume:
            result = train_module.resume_training(
                resume,
                more_steps=settings["max_steps"],
                more_minutes=settings["budget_minutes"],
                threads=settings["threads"],
                progress=not quiet,
                tensorboard=tensorboard,
            )
        else:
            options = {
                "columns": names(columns),
                "targets": names(targets),
                "label_column": label_column,
                "missing": missing,
            }
            options = {k: v for k, v in options.items() if v}
            if no_augment:
                options["augment"] = False
            keyword = (("mels", mels), ("running_ms", running_ms), ("wav_repeat", wav_repeat))
            options.update({k: v for k, v in keyword if v is not None})
            result = _train_new(train_module, task, data, run_dir, options, settings, progress=not quiet,
                                tensorboard=tensorboard, overwrite=overwrite, init_from=init_from)  # fmt: skip
    click.echo(format_training(result.run_dir, result.metrics))


@contextmanager
def _exit_on_interrupt():
    """Ctrl-C while training: where the checkpoint is and the --resume command, on stderr; exit code 130."""
    from edgernn.interrupt import INTERRUPTED_EXIT_CODE, TrainingInterrupted

    try:
        yield
    except TrainingInterrupted as exc:
        click.echo(str(exc), err=True)
        sys.exit(INTERRUPTED_EXIT_CODE)


MODEL_KEYS = ("cell", "hidden_size", "num_layers", "embedding_size", "dropout")


def _train_new(train_module, task, data, run_dir, options, settings, **keywords):
    """Defaults for the task (inferred when not given: train_task infers it again and says so)."""
    naming = {k: v for k, v in options.items() if k in ("columns", "targets", "label_column")}
    inferred = task or train_module.infer_task(data, **naming)[0]
    model_config, train_config = train_module.configs_for(
        inferred, {k: settings.pop(k) for k in MODEL_KEYS}, settings
    )
    if keywords.get("init_from"):
        model_config = None  # the run's
    return train_module.train_task(
        task, data, run_dir, model_config, train_config, data_options=options, **keywords
    )


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    "path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="ONNX file to write.",
)
@click.option(
    "--quantize",
    type=click.Choice(["none", *QUANTIZATION_MODES]),
    default="none",
    show_default=True,
    help="Weights as int8 (about 3.5-4x smaller), fp16 (2x) or int4 (about 4-5x; onnxruntime contrib ops).",
)
@click.option(
    "--int8-method",
    type=click.Choice(["auto", "weights", "dynamic", "static"]),
    default="auto",
    show_default=True,
    help="int8: weights stored int8, float32 arithmetic after load (weights); int8 arithmetic with "
    "activation ranges measured every step (dynamic) or calibrated on real states (static, QDQ); auto: "
    "weights below 512 KiB of float32 weights, dynamic above.",
)
@click.option(
    "--tolerance",
    type=FINITE_FLOAT,
    help="Metric change a quantized model may show (default +0.02 nats for language models, -1 point of "
    "accuracy for classifiers, +2% RMSE for regressors).",
)
@click.option(
    "--force", is_flag=True, help="Write a quantized model even if the metric or drift check fails."
)
@click.option(
    "--data",
    "data_path",
    type=click.Path(exists=True, path_type=Path),
    help="Data to check a quantized model on (default: the file the run was trained on).",
)
@json_option
def export(run_dir, path, quantize, int8_method, tolerance, force, data_path, as_json) -> None:
    """Export a run directory to a single-step ONNX model with explicit state, verified against PyTorch.

    With --quantize the verified graph is quantized with onnxruntime's tools and checked against itself
    (one step, 3000 steps closed loop, the task metric on the validation split); a model that loses more
    than --tolerance is refused and nothing is written.

    \b
    Examples:
      edgernn export runs/shakespeare -o shakespeare.onnx
      edgernn export runs/shakespeare -o shakespeare-int8.onnx --quantize int8
    """
    QuantizeConfig, export_run = train_extra("export", "edgernn.export", "QuantizeConfig", "export_run")
    from edgernn.report import export_document, format_export

    if quantize == "none" and (force or tolerance is not None or data_path):
        raise click.UsageError("--force, --tolerance and --data apply to --quantize int8/fp16/int4 only")
    config = QuantizeConfig(quantize, int8_method, tolerance=tolerance, force=force)
    with _failure_as_json(as_json):
        report = export_run(run_dir, path, quantize=config, data_path=data_path)
    click.echo(json.dumps(export_document(report), indent=2) if as_json else format_export(report))
    if report.quantization and report.quantization["checks"]["forced"]:
        click.echo("warning: written with --force past failed check(s)", err=True)


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", "path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--mode", required=True, type=click.Choice(QUANTIZATION_MODES), help="Weights as int8, fp16 or int4."
)
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Real data in the model's format (text, CSV with its columns, .ts); split as training splits it.",
)
@click.option("--int8-method", type=click.Choice(["auto", "weights", "dynamic", "static"]), default="auto")
@click.option("--tolerance", type=float, help="Metric change allowed (as export --tolerance).")
@click.option("--force", is_flag=True, help="Write even if the metric or drift check fails.")
@json_option
def quantize(model, path, mode, data_path, int8_method, tolerance, force, as_json) -> None:
    """Quantize a verified float32 ONNX file (edgernn's own or a bring-your-own model) without its run.

    The same quantization and checks as export --quantize (one step, 3000 steps closed loop, the task
    metric on the validation split of --data); refused past --tolerance with nothing written.

    \b
    Examples:
      edgernn quantize shakespeare.onnx -o shakespeare-int8.onnx --mode int8 --data examples/data/tinyshakespeare.txt
      edgernn quantize sensor.onnx -o sensor-fp16.onnx --mode fp16 --data readings.csv --json
    """
    (QuantizeConfig,) = train_extra("quantize", "edgernn.export", "QuantizeConfig")
    (quantize_file,) = train_extra("quantize", "edgernn.export.exporter", "quantize_file")
    from edgernn.report import export_document, format_export

    config = QuantizeConfig(mode, int8_method, tolerance=tolerance, force=force)
    with _failure_as_json(as_json):
        report = quantize_file(model, path, config, data_path)
    click.echo(json.dumps(export_document(report), indent=2) if as_json else format_export(report))
    if report.quantization["checks"]["forced"]:
        click.echo("warning: written with --force past failed check(s)", err=True)


@contextmanager
def _failure_as_json(as_json: bool):
    """With --json, a refused export prints its report on stdout (one JSON object) before the error line
    on stderr and exit 1."""
    from edgernn.runtime.errors import ParityError

    try:
        yield
    except ParityError as exc:
        if as_json:
            from edgernn.report import failure_document

            click.echo(json.dumps(failure_document(exc), indent=2))
        raise
