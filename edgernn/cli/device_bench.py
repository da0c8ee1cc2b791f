"""edgernn bench --device: one step's cost on an emulated device (edgernn.export.c.devices)."""

from __future__ import annotations

import click

from edgernn.cli.common import names

HOST_STEPS = 5000


def bench_on_device(models, device, precisions, clock_mhz, steps, as_json, data=None) -> str:
    """The report of ``bench --device``: checks the arguments, measures, formats (text or JSON)."""
    from edgernn.export.c.devices import get_device
    from edgernn.export.c.devices.bench import PRECISIONS, bench_device, default_steps
    from edgernn.export.c.devices.report import to_json, to_text

    if device is None:
        raise click.UsageError("--precision, --clock-mhz and --data go with --device DEVICE")
    get_device(device)  # an unknown device lists the known ones
    chosen = names(precisions) or []
    for precision in chosen:
        if precision not in PRECISIONS:
            raise click.BadParameter(
                f"expected a comma-separated list of {', '.join(PRECISIONS)}, got {precisions!r}",
                param_hint="--precision",
            )
    if not chosen:
        raise click.BadParameter("expected at least one precision", param_hint="--precision")
    if len(models) > 1:
        raise click.UsageError("--device measures one MODEL (or, with none, the reference GRU and LSTM)")
    if data is not None and not models:
        raise click.UsageError("--data calibrates the MODEL you name (the reference models take none)")
    if data is not None and not {"int8", "integer"} & set(chosen):
        raise click.BadParameter(
            f"it calibrates int8 and integer: expected them in --precision, got {precisions!r}",
            param_hint="--data",
        )
    if clock_mhz is not None and clock_mhz <= 0:
        raise click.BadParameter(f"expected a clock above 0 MHz, got {clock_mhz:g}", param_hint="--clock-mhz")
    source = click.get_current_context().get_parameter_source("steps")
    note = ""
    if source is not None and source.name == "DEFAULT":
        profile = get_device(device)
        steps = default_steps(profile)
        if profile.fpu.startswith("none"):
            note = (
                f"{steps} steps: the default on a core without an FPU (soft float, millions of instructions "
                "a step); --steps N for more\n"
            )
    benches = bench_device(
        models[0] if models else None,
        device,
        precisions=tuple(dict.fromkeys(chosen)),
        clock_mhz=clock_mhz,
        steps=steps,
        data=data,
    )
    return to_json(benches) + "\n" if as_json else note + to_text(benches)
