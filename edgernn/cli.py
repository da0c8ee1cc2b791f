"""The ``edgernn`` command line: a thin click layer over the library.

Each command parses, calls one library function and echoes. Heavy modules (torch, onnx) are imported
inside the commands that need them, so ``edgernn bench`` and ``edgernn generate`` start fast on a device.
Results go to stdout; progress and diagnostics to stderr. Bad input: one line on stderr, exit code 2.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import click

from edgernn import __version__
from edgernn.runtime.contract import QUANTIZATION_MODES
from edgernn.runtime.errors import EdgeRNNError, InputError, ParityError


class _Group(click.Group):
    """Turns every error into one line on stderr: exit 2 for bad input, 1 for a failed export or run."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except ParityError as exc:
            _fail(str(exc), 1)
        except EdgeRNNError as exc:
            _fail(" ".join(str(exc).split()), 2)
        except click.Abort:
            _fail("aborted", 1)
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON to stdout.")(
        func
    )


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgernn")
def cli() -> None:
    """Train compact recurrent models, export them to ONNX with explicit state, and step them.

    \b
    Example:
      edgernn train examples/data/tinyshakespeare.txt -o runs/shakespeare --minutes 2
      edgernn export runs/shakespeare -o shakespeare.onnx
      edgernn generate shakespeare.onnx --prompt "ROMEO:" -n 300
      edgernn bench shakespeare.onnx
    """


class _FiniteFloat(click.ParamType):
    """A float that is a number: click's float type takes "nan" and "inf"."""

    name = "number"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if number != number or number in (float("inf"), float("-inf")):
            self.fail(f"expected a finite number, got {value!r}", param, ctx)
        return number


FINITE_FLOAT = _FiniteFloat()


def _names(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


@cli.command()
@click.argument("data", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o", "--out", "run_dir", type=click.Path(file_okay=False, path_type=Path), help="Run directory to write."
)
@click.option(
    "--task",
    type=click.Choice(["charlm", "forecast", "anomaly", "classify", "steplabels"]),
    help="Default: inferred from DATA (.csv forecast, .ts classify, text charlm); refused when ambiguous.",
)
@click.option(
    "--columns",
    help="Comma-separated input columns of a CSV (default: numeric columns except timestamps and labels).",
)
@click.option("--targets", help="Comma-separated columns to forecast (default: the first input column).")
@click.option(
    "--label-column", help="Label column: per row (steplabels) or per sequence (classify from CSV)."
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
@click.option("--overwrite", is_flag=True, help="Replace a run already in RUN_DIR (refused without it).")
@click.option(
    "--tensorboard", type=click.Path(file_okay=False, path_type=Path), help="Write TensorBoard logs here."
)
@click.option("--quiet", is_flag=True, help="Print nothing but the summary (no progress, no notes).")
def train(
    data, run_dir, task, columns, targets, label_column, resume, overwrite, tensorboard, quiet, **settings
) -> None:
    """Train a model on DATA and write a run directory (best weights, metrics, loss curves, resume state).

    The task is inferred from DATA unless --task names it; an existing run in RUN_DIR is refused unless
    --overwrite. Progress goes to stderr (a bar on a terminal, a line every 5% elsewhere); the summary to
    stdout.

    \b
    Examples:
      edgernn train examples/data/tinyshakespeare.txt -o runs/shakespeare --minutes 2
      edgernn train examples/data/japanese_vowels_train.ts -o runs/vowels --steps 600
      edgernn train readings.csv -o runs/readings --columns temperature,pressure --targets temperature
      edgernn train examples/data/ucr_internalbleeding16_train.csv --task anomaly -o runs/bleeding --steps 400
      edgernn train examples/data/ucr_internalbleeding16_test.csv --task steplabels --label-column is_anomaly -o runs/labels
      edgernn train --resume runs/shakespeare --minutes 4     # four minutes more
      torchrun --nproc_per_node=2 -m edgernn train data.txt -o runs/ddp --steps 500
    """
    train_module = _train_extra("train", "edgernn.train")
    from edgernn.report import format_training

    if resume and (data is not None or run_dir is not None):
        raise click.UsageError("--resume RUN_DIR continues that run: give no DATA or -o")
    if not resume and (data is None or run_dir is None):
        raise click.UsageError("give DATA and -o RUN_DIR (or --resume RUN_DIR)")
    with warnings.catch_warnings():
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
            options = {"columns": _names(columns), "targets": _names(targets), "label_column": label_column}
            result = _train_new(train_module, task, data, run_dir, {k: v for k, v in options.items() if v},
                                settings, progress=not quiet, tensorboard=tensorboard, overwrite=overwrite)  # fmt: skip
    click.echo(format_training(result.run_dir, result.metrics))


def _train_new(train_module, task, data, run_dir, options, settings, **keywords):
    """Defaults for the task (inferred when not given: train_task infers it again and says so)."""
    inferred = task or train_module.infer_task(data, **options)[0]
    model_keys = ("cell", "hidden_size", "num_layers", "embedding_size", "dropout")
    model_config, train_config = train_module.configs_for(
        inferred, {k: settings.pop(k) for k in model_keys}, settings
    )
    return train_module.train_task(
        task, data, run_dir, model_config, train_config, data_options=options, **keywords
    )


_TRAIN_EXTRA = {"torch", "onnx", "onnxscript", "onnx_ir", "safetensors", "tqdm", "matplotlib"}


def _train_extra(command: str, module: str, *names: str):
    """Import a module of the train extra (and take ``names`` from it, which may import more), or say in
    one line (exit 2) what to install."""
    import importlib

    try:
        imported = importlib.import_module(module)
        return tuple(getattr(imported, name) for name in names) if names else imported
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in _TRAIN_EXTRA:
            raise
        raise InputError(
            f"edgernn {command} needs the train extra ({missing} is not installed): pip install 'edgernn[train]'"
        ) from None


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
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Data to check a quantized model on (default: the file the run was trained on).",
)
@_json_option
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
    QuantizeConfig, export_run = _train_extra("export", "edgernn.export", "QuantizeConfig", "export_run")
    from edgernn.report import export_document, format_export

    if quantize == "none" and (force or tolerance is not None or data_path):
        raise click.UsageError("--force, --tolerance and --data apply to --quantize int8/fp16/int4 only")
    config = QuantizeConfig(quantize, int8_method, tolerance=tolerance, force=force)
    report = export_run(run_dir, path, quantize=config, data_path=data_path)
    click.echo(json.dumps(export_document(report), indent=2) if as_json else format_export(report))
    if report.quantization and report.quantization["checks"]["forced"]:
        click.echo("warning: written with --force past failed check(s)", err=True)


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_json_option
def inspect(model, as_json) -> None:
    """Show the contract, metadata and sizes of an ONNX model.

    Example: edgernn inspect shakespeare.onnx
    """
    from edgernn.report import describe_model, format_description

    doc = describe_model(model)
    click.echo(json.dumps(doc, indent=2) if as_json else format_description(doc))


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--prompt", default="\n", show_default=True, help="Text to start from.")
@click.option(
    "-n",
    "--length",
    "max_new_tokens",
    type=click.IntRange(min=0),
    default=500,
    show_default=True,
    help="Characters to write.",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0),
    default=0.8,
    show_default=True,
    help="0 picks the likeliest.",
)
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Sample from the k likeliest only.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed for repeatable text.")
def generate(model, prompt, max_new_tokens, temperature, top_k, seed) -> None:
    """Write text with a character model through the stepper (no torch needed).

    Example: edgernn generate shakespeare.onnx --prompt "ROMEO:" -n 300 --seed 1
    """
    from edgernn.runtime import Stepper
    from edgernn.runtime import generate as generate_text

    stepper = Stepper(model)
    text = generate_text(
        stepper, prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, seed=seed
    )
    click.echo(prompt + text)


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
@click.option("--data-shape", help="Foreign models: the data input's shape, e.g. batch,512 (others refused).")
@_json_option
def bench(models, steps, warmup, batch_size, threads, baselines, run_dir, paced_hz, plot, as_json, **foreign):
    """Measure per-step latency: p50/p90/p99/max and steps/s, measured side by side in one run.

    With no MODEL, or one: the stepper against PyTorch eager, a plain ONNX export of the same weights run
    with session.run, the floor (a model that does nothing, same call path) and the generated C (path c:
    compiled with -O3 -march=native, timed in C; needs a C compiler); then run() through the
    chunk graph, a pool of 256 streams, steps after 10,000 silent steps, and the cold start. No MODEL
    means the reference GRU and LSTM (2x128, 32 features). Several models, --no-baselines or a batch
    size above 1: the steppers side by side, with file sizes (e.g. float32 next to int8).

    \b
    Examples:
      edgernn bench --plot latency.png
      edgernn bench shakespeare.onnx --run runs/shakespeare --paced 1000 --json
      edgernn bench shakespeare.onnx shakespeare-int8.onnx --plot side-by-side.png --paced 1000
      edgernn bench silero_vad.onnx --state state=stateN --constant sr=16000
    """
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
            f"expected sizes such as batch,512, got {text!r}", param_hint="--data-shape"
        ) from None


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
    type=click.Choice(["float32", "int8"]),
    help="c, triton --backend c: weights (default float32).",
)
@click.option(
    "--fast-activations", is_flag=True, default=None, help="c: approximate tanh/sigmoid (error documented)."
)
@click.option("--no-verify", "skip_verify", is_flag=True, default=None, help="c: write without compiling.")
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="c int8: real data for the task-metric check.",
)
@click.option("--tolerance", type=FINITE_FLOAT, help="c int8: metric change allowed (as export --tolerance).")
@click.option(
    "--force", is_flag=True, default=None, help="c int8: write past a failed metric or drift check."
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
@_json_option
def deploy(model, target, out_dir, as_json, **options) -> None:
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
      edgernn deploy shakespeare.onnx --target triton --backend python -o model_repository
    """
    from edgernn.export.deploy import deploy as deploy_model

    given = {key: value for key, value in options.items() if value is not None}
    report = deploy_model(model, target, out_dir, **given)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format())


@cli.command("eval")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--series-column", default="series_id", show_default=True, help="classify CSV: sequence ids.")
@click.option("--label-column", help="classify CSV: the label column (default: label).")
@_json_option
def evaluate(model, data, series_column, label_column, as_json) -> None:
    """The task's metric of MODEL on the test file DATA, streamed through the stepper (no torch needed).

    Accuracy for classifiers, loss in nats per character for character models, MSE and RMSE in the
    targets' units for forecasts, the top anomaly score for anomaly models, loss for step labels. DATA
    is a file as training reads it (text, CSV with the model's columns by name, or .ts).

    \b
    Examples:
      edgernn eval vowels.onnx examples/data/japanese_vowels_test.ts
      edgernn eval bleeding.onnx examples/data/ucr_internalbleeding16_test.csv --json
    """
    from edgernn.export.evaluation import evaluate_file

    result = evaluate_file(model, data, id_column=series_column, label_column=label_column)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.format())


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("source", default="-", type=click.File("rb"))
@click.option("--series-column", help="Column whose change starts a new sequence (a blank line does too).")
@click.option(
    "--threshold", type=float, help="anomaly: add a 0/1 'anomaly' column, 1 where score > THRESHOLD."
)
@click.option(
    "--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="charlm: characters shown."
)
@_json_option
def stream(model, source, series_column, threshold, top_k, as_json) -> None:
    """Predict line by line: CSV or JSON lines from SOURCE (default stdin), one prediction per line out.

    Columns are matched by name against the model's. Forecasts come in the user's units, anomaly models
    give a score per sample, classifiers their label and probabilities after every frame; a character
    model reads text lines and gives the likeliest next characters. No torch needed.

    \b
    Examples:
      edgernn stream bleeding.onnx examples/data/ucr_internalbleeding16_test.csv --threshold 6
      sensor-reader | edgernn stream forecast.onnx --json
      echo "ROMEO:" | edgernn stream shakespeare.onnx --top-k 3
    """
    from edgernn.runtime import Stepper
    from edgernn.runtime.streaming_io import predict_lines

    options = {"series_column": series_column, "threshold": threshold, "top_k": top_k, "as_json": as_json}
    for line in predict_lines(Stepper(model), iter(source.readline, b""), **options):
        click.echo(line)  # click.echo flushes: every prediction leaves as soon as it is made


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
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Real data in the model's format (text, CSV with its columns, .ts); split as training splits it.",
)
@click.option("--int8-method", type=click.Choice(["auto", "weights", "dynamic", "static"]), default="auto")
@click.option("--tolerance", type=float, help="Metric change allowed (as export --tolerance).")
@click.option("--force", is_flag=True, help="Write even if the metric or drift check fails.")
@_json_option
def quantize(model, path, mode, data_path, int8_method, tolerance, force, as_json) -> None:
    """Quantize a verified float32 ONNX file (edgernn's own or a bring-your-own model) without its run.

    The same quantization and checks as export --quantize (one step, 3000 steps closed loop, the task
    metric on the validation split of --data); refused past --tolerance with nothing written.

    \b
    Examples:
      edgernn quantize shakespeare.onnx -o shakespeare-int8.onnx --mode int8 --data examples/data/tinyshakespeare.txt
      edgernn quantize sensor.onnx -o sensor-fp16.onnx --mode fp16 --data readings.csv --json
    """
    (QuantizeConfig,) = _train_extra("quantize", "edgernn.export", "QuantizeConfig")
    (quantize_file,) = _train_extra("quantize", "edgernn.export.exporter", "quantize_file")
    from edgernn.report import export_document, format_export

    config = QuantizeConfig(mode, int8_method, tolerance=tolerance, force=force)
    report = quantize_file(model, path, config, data_path)
    click.echo(json.dumps(export_document(report), indent=2) if as_json else format_export(report))
    if report.quantization["checks"]["forced"]:
        click.echo("warning: written with --force past failed check(s)", err=True)


def main() -> None:
    cli(prog_name="edgernn")
