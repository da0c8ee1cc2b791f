"""edgernn plan: the largest models that fit a device's flash, RAM and step time, before training."""

from __future__ import annotations

import json

import click

from edgernn.cli.common import FINITE_FLOAT, json_option, names
from edgernn.cli.group import cli
from edgernn.runtime.errors import InputError


@cli.command()
@click.argument("data", required=False, type=click.Path(dir_okay=True))
@click.option(
    "--device", required=True, help="The device (cortex-m4, cortex-m0plus, ...: those the cost model knows)."
)
@click.option("--clock-mhz", type=FINITE_FLOAT, help="The core clock (default: the device's typical clock).")
@click.option("--flash", help="Flash the model may use: bytes, or 256K, 1M.")
@click.option("--ram", help="RAM the model may use (state, scratch and a step's stack): bytes, or 64K.")
@click.option("--rate-hz", type=FINITE_FLOAT, help="Steps per second the model must keep up with.")
@click.option("--budget-us", type=FINITE_FLOAT, help="Time one step may take, in µs (instead of --rate-hz).")
@click.option("--task", help="With DATA: the task (default: inferred from the data, as edgernn train does).")
@click.option("--input-size", type=click.IntRange(min=1), help="Features per step (without DATA).")
@click.option("--vocab", type=click.IntRange(min=1), help="Token inputs: the vocabulary (without DATA).")
@click.option("--output-size", type=click.IntRange(min=1), help="Outputs per step (without DATA).")
@click.option(
    "--embedding-size", type=click.IntRange(min=1), default=32, show_default=True, help="Token inputs."
)
@click.option("--cells", help="Cells to plan, e.g. gru,lstm (default: rnn_tanh, gru, lstm).")
@click.option(
    "--precision", "precisions", help="Precisions, e.g. int8,integer (default: float32,int8,integer)."
)
@json_option
def plan(data, device, clock_mhz, flash, ram, rate_hz, budget_us, task, input_size, vocab, output_size,
         embedding_size, cells, precisions, as_json):  # fmt: skip
    """Per cell and precision, the largest models (layers x hidden) that fit the budget, with their
    predicted flash, RAM, instructions, cycles and µs per step, and the headroom left.

    The predictions come from a cost model fitted to bench --device measurements (docs/plan.md).

    \b
    Example:
      edgernn plan --device cortex-m4 --flash 256K --ram 64K --rate-hz 100 --input-size 12 --output-size 9
      edgernn plan examples/data/tinyshakespeare.txt --device cortex-m0plus --flash 128K --ram 16K --json
    """
    from edgernn.cost_model import CELL_NAMES, PRECISIONS
    from edgernn.plan import Budget, make_plan, to_text

    budget = Budget.make(
        device, clock_mhz=clock_mhz, flash=flash, ram=ram, rate_hz=rate_hz, budget_us=budget_us
    )
    io = plan_io(data, task, input_size, vocab, output_size, embedding_size)
    chosen_cells = _choices(names(cells), CELL_NAMES, "--cells")
    chosen_precisions = _choices(names(precisions), PRECISIONS, "--precision") if precisions else None
    result = make_plan(budget, io, cells=chosen_cells, precisions=chosen_precisions)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else to_text(result), nl=as_json)


def _choices(given: list[str] | None, known: tuple[str, ...], option: str) -> tuple[str, ...]:
    for name in given or ():
        if name not in known:
            raise InputError(f"{option} {name!r}: expected one of {', '.join(known)}")
    return tuple(given) if given else known


def plan_io(data, task, input_size, vocab, output_size, embedding_size):
    """The model's ends: read from DATA, or given as --input-size / --vocab and --output-size."""
    from edgernn.plan import Io

    if data is not None:
        if input_size or vocab or output_size:
            raise InputError("DATA and --input-size/--vocab/--output-size: expected one or the other")
        from edgernn.cli.common import train_extra
        from edgernn.plan import io_from_data

        train_extra("plan DATA", "edgernn.tasks")
        return io_from_data(data, task, embedding_size)
    if (input_size is None) == (vocab is None):
        raise InputError("expected DATA, or one of --input-size (features) and --vocab (tokens)")
    if output_size is None:
        raise InputError("expected --output-size with --input-size or --vocab")
    if vocab is not None:
        return Io("tokens", vocab, output_size, embedding_size)
    return Io("features", input_size, output_size, embedding_size)
