"""edgernn search: the best model that fits a device's budget, found with Optuna, retrained and deployed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgernn.cli.common import json_option, names, train_extra
from edgernn.cli.group import cli
from edgernn.runtime.errors import InputError


@cli.command()
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory: the study (search.db), every trial, the table, the plot, the chosen model.")  # fmt: skip
@click.option(
    "--device", required=True, help="The device the model must fit (cortex-m4, cortex-m0plus, ...)."
)
@click.option("--budget", required=True, help="flash=256K,ram=64K,rate=100 (also us= per step, clock= MHz).")
@click.option(
    "--trials", type=click.IntRange(min=1), help="Trained trials in the study (default 20 unless --minutes)."
)
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), help="This worker's time for trials.")
@click.option("--trial-steps", type=click.IntRange(min=2), default=300, show_default=True,
              help="Training steps of each trial (the chosen model's refit on every sequence after "
              "cross-validation: as many passes over the data, x folds/(folds-1)).")  # fmt: skip
@click.option("--task", type=click.Choice(["charlm", "forecast", "anomaly", "classify", "steplabels", "keyword"]),
              help="Default: inferred from DATA, as edgernn train does.")  # fmt: skip
@click.option("--folds", type=click.IntRange(min=1),
              help="Cross-validation folds of a sequence data set (default: 3 up to 400 sequences, else 1).")  # fmt: skip
@click.option("--cells", help="Cells to search, e.g. gru,lstm (default: rnn_tanh, gru, lstm).")
@click.option(
    "--precision", "precisions", help="Precisions to search: float32, int8, integer (default: float32,int8)."
)
@click.option("--max-layers", type=click.IntRange(1, 3), default=2, show_default=True)
@click.option(
    "--pareto", is_flag=True, help="Two objectives: the metric and cycles per step (the Pareto front)."
)
@click.option(
    "--no-measure", is_flag=True, help="Predicted costs only (default: measure every trial on the device)."
)
@click.option("--storage", help="An Optuna storage URL shared by workers, e.g. postgresql://user@host/db "
              "(default: sqlite in RUN_DIR).")  # fmt: skip
@click.option("--study", "study_name", default="edgernn-search", show_default=True, help="The study's name.")
@click.option("--resume", is_flag=True, help="Continue the search stored in RUN_DIR (or --storage).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@json_option
def search(data, run_dir, device, budget, trials, minutes, trial_steps, task, folds, cells, precisions, max_layers,
           pareto, no_measure, storage, study_name, resume, seed, quiet, as_json):  # fmt: skip
    """Search cell, layers, hidden size, embedding, learning rate, sequence length, dropout and precision
    for the best model that fits DEVICE's budget; retrain, export, deploy and measure the chosen one.

    Configurations the cost model says cannot fit are pruned before training; unpromising ones stop
    early on their learning curve. Ctrl-C keeps the study: the same command with --resume continues it.

    \b
    Example:
      edgernn search examples/data/japanese_vowels_train.ts -o runs/vowels-search --device cortex-m4 \\
          --budget flash=64K,ram=16K,rate=100 --trials 20
      edgernn search readings.csv -o runs/s --device cortex-m0plus --budget flash=128K,ram=16K,rate=50 \\
          --storage postgresql://edgernn@db/search --study sensors --trials 200     # on every machine
    """
    from edgernn.cli.plan_command import _choices
    from edgernn.cost_model import CELL_NAMES, PRECISIONS, load_cost_model

    module = train_extra("search", "edgernn.search_result")
    try:
        import optuna  # noqa: F401
    except ModuleNotFoundError:
        raise InputError(
            "edgernn search needs optuna (the train extra): pip install 'edgernn[train]'"
        ) from None
    from edgernn.search import Search, SearchSettings, SearchSpace, parse_budget

    cost_model = load_cost_model()
    space = SearchSpace(
        cells=_choices(names(cells), CELL_NAMES, "--cells"),
        precisions=(
            _choices(names(precisions), PRECISIONS, "--precision") if precisions else SearchSpace.precisions
        ),
        max_layers=max_layers,
    )
    settings = SearchSettings(trials=trials if trials or minutes else 20, minutes=minutes, trial_steps=trial_steps,
                              folds=folds, objectives=2 if pareto else 1, measure=False if no_measure else None,
                              seed=seed, task=task, space=space)  # fmt: skip
    say = (lambda line: None) if quiet else (lambda line: click.echo(line, err=True))
    job = Search(
        str(data), run_dir, device, parse_budget(budget, device, cost_model), settings, cost_model, say=say
    )
    try:
        summary = module.run_search(job, storage, study_name, resume, progress=not quiet)
    except module.SearchInterrupted as exc:
        click.echo(str(exc), err=True)
        sys.exit(130)
    click.echo(json.dumps({k: v for k, v in summary.items() if k != "table"}, indent=2) if as_json
               else module.to_text(summary), nl=as_json)  # fmt: skip
