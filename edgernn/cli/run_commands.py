"""Commands that run a model torch-free: inspect, generate, eval, stream."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgernn.cli.common import json_option
from edgernn.cli.group import cli
from edgernn.cli.keyword_stream import STABLE_HELP, is_keyword, keyword_options, spotter_options
from edgernn.csv_table import DEFAULT_MISSING, MISSING_POLICIES


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
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


@cli.command("eval")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--series-column", default="series_id", show_default=True, help="classify CSV: sequence ids.")
@click.option("--label-column", help="classify CSV: the label column (default: label).")
@click.option(
    "--missing",
    type=click.Choice(MISSING_POLICIES),
    default=DEFAULT_MISSING,
    show_default=True,
    help="CSV cells of the model's columns that are empty or not numbers: as edgernn train --missing.",
)
@keyword_options
@json_option
def evaluate(model, data, series_column, label_column, missing, as_json, **spotter) -> None:
    """The task's metric of MODEL on the test file DATA, streamed through the stepper (no torch needed).

    Accuracy for classifiers, loss in nats per character for character models, MSE and RMSE in the
    targets' units for forecasts, the top anomaly score for anomaly models, loss for step labels. DATA
    is a file as training reads it (text, CSV with the model's columns by name, or .ts).

    \b
    Examples:
      edgernn eval vowels.onnx examples/data/japanese_vowels_test.ts
      edgernn eval bleeding.onnx examples/data/ucr_internalbleeding16_test.csv --json
      edgernn eval digits.onnx examples/data/fsdd/lucas.npz     # keyword: clips and a stream (docs/keyword.md)
    """
    from edgernn.runtime import Stepper

    stepper = Stepper(model, chunk_model=False)
    if is_keyword(stepper):
        from edgernn.runtime.keyword import evaluate_keyword_file, format_evaluation

        doc = evaluate_keyword_file(stepper, data, **spotter_options(spotter))
        click.echo(
            json.dumps({"model": str(model), **doc}, indent=2)
            if as_json
            else format_evaluation(doc, str(model))
        )
        return
    from edgernn.export.evaluation import evaluate_file

    options = {"id_column": series_column, "label_column": label_column, "missing": missing}
    result = evaluate_file(model, data, **options)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.format())


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("source", default="-", type=click.File("rb"))
@click.option("--series-column", help="Column whose change starts a new sequence (a blank line does too).")
@click.option(
    "--threshold",
    type=float,
    help="anomaly: add a 0/1 'anomaly' column, 1 where score > THRESHOLD. keyword: the spotter's threshold.",
)
@click.option(
    "--wav", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="keyword: a WAV file to hear."
)
@click.option(
    "--rate", type=click.IntRange(min=1), help="keyword: SOURCE is raw 16-bit mono PCM at this sample rate."
)
@click.option("--smooth-ms", type=click.FloatRange(min=0), help="keyword: posterior smoothing (default 100).")
@click.option(
    "--refractory-ms", type=click.FloatRange(min=0), help="keyword: quiet time after a word (default 600)."
)
@click.option("--stable-ms", type=click.FloatRange(min=0), help=STABLE_HELP)
@click.option(
    "--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="charlm: characters shown."
)
@click.option(
    "--on-bad-row",
    type=click.Choice(["stop", "skip", "hold"]),
    default="stop",
    show_default=True,
    help="A row that cannot be read: stop (exit 2), skip it (an empty answer), or hold each bad reading "
    "at its column's last good value. Every skipped or held row is a warning on stderr.",
)
@json_option
def stream(
    model,
    source,
    series_column,
    threshold,
    wav,
    rate,
    smooth_ms,
    refractory_ms,
    stable_ms,
    top_k,
    on_bad_row,
    as_json,
) -> None:
    """Predict line by line: CSV or JSON lines from SOURCE (default stdin), one prediction per line out.

    Columns are matched by name against the model's. Forecasts come in the user's units, anomaly models
    give a score per sample, classifiers their label and probabilities after every frame; a character
    model reads text lines and gives the likeliest next characters. No torch needed.

    \b
    Examples:
      edgernn stream bleeding.onnx examples/data/ucr_internalbleeding16_test.csv --threshold 6
      sensor-reader | edgernn stream forecast.onnx --json
      sensor-reader | edgernn stream forecast.onnx --on-bad-row hold
      echo "ROMEO:" | edgernn stream shakespeare.onnx --top-k 3
      edgernn stream digits.onnx --wav recording.wav    # keyword: a line per word heard (time, word, score)
      arecord -t raw -f S16_LE -r 8000 | edgernn stream digits.onnx --rate 8000
    """
    from edgernn.runtime import Stepper
    from edgernn.runtime.streaming_io import predict_file

    stepper = Stepper(model)
    if is_keyword(stepper) or wav or rate:
        from edgernn.cli.keyword_stream import stream_words

        spotter = spotter_options(
            {
                "threshold": threshold,
                "smooth_ms": smooth_ms,
                "refractory_ms": refractory_ms,
                "stable_ms": stable_ms,
            }
        )
        stream_words(stepper, source, wav, rate, spotter, as_json)
        return

    options = {"series_column": series_column, "threshold": threshold, "top_k": top_k, "as_json": as_json}
    warn = lambda message: click.echo(f"Warning: {message}", err=True)  # noqa: E731
    for line in predict_file(stepper, source, on_bad_row=on_bad_row, warn=warn, **options):
        click.echo(line)  # click.echo flushes: every prediction leaves as soon as it is made
