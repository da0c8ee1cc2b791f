"""``edgernn train``'s summary: the result, the data the model saw and how it was read, what it predicts."""

from __future__ import annotations

from typing import Any

_NAMES_SHOWN = 12
MANY_BAD_CELLS = 0.1  # a column with more bad cells than this fraction is worth a second look


def names_text(names: list, limit: int = _NAMES_SHOWN) -> str:
    """``a, b, c`` (at most ``limit`` names, then how many in all)."""
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def percent(fraction: float) -> str:
    """An accuracy as ``edgernn train`` and ``edgernn eval`` both print it: ``90.91 %``."""
    return f"{100 * fraction:.2f} %"


def format_training(run_dir: Any, m: dict[str, Any]) -> str:
    """The summary of ``metrics.json``: the result, the data it was trained on, the order of the model's
    inputs and outputs, how missing cells were handled, what the loss measures, and any warning."""
    accuracy = (
        f", validation accuracy {percent(m['best_val_accuracy'])}"
        if m["best_val_accuracy"] is not None
        else ""
    )
    lines = [
        f"{run_dir}: {m['task']}, {m['parameters']:,} parameters, {m['steps']} steps in {m['minutes']:.1f} min, "
        f"best validation loss {m['best_val_loss']:.4f}{accuracy}"
    ]
    lines.append(f"  validation loss: {m['loss']}")
    unit = m["split_unit"]
    read_as = f" ({m['delimiter']}-separated)" if m.get("delimiter") else ""
    lines.append(
        f"  data: {m['data']}{read_as}: {m['train_size']:,} training {unit}, {m['validation_size']:,} validation {unit}"
    )
    if m.get("all_data"):
        lines.append(f"  {m['all_data']}")
    lines += _column_lines(m)
    lines += _missing_lines(m.get("missing"))
    if m.get("anomaly", {}).get("suggested_threshold") is not None:
        lines.append(_threshold_line(m["anomaly"]))
    lines += [f"warning: {w}" for w in m.get("warnings", [])[-1:]]
    return "\n".join(lines)


def _column_lines(m: dict[str, Any]) -> list[str]:
    lines = []
    if m.get("columns"):
        lines.append(
            f"  columns used, in order: {names_text(m['columns'])} (x of Stepper.step and of the C "
            "target, whose header lists them; stream and eval match columns by name)"
        )
    if m.get("left_out"):
        lines.append("  left out: " + ", ".join(f"{k} ({v})" for k, v in m["left_out"].items()))
    targets = m.get("targets")
    if targets and m["task"] == "anomaly":
        lines.append(f"  targets: {names_text(targets)} (every input is its own target)")
    if targets and m["task"] == "forecast":
        lines.append(f"  targets: {names_text(targets)}, predicted one step ahead (y)")
        if m.get("targets_default"):
            lines.append(
                f"    only {targets[0]}, the first input: without --targets a forecaster predicts the first "
                "input column; --targets a,b predicts others"
            )
        unseen = [t for t in targets if t not in m.get("columns", [])]
        if unseen:
            lines.append(
                f"    not inputs: {names_text(unseen)} (the model never sees their past; add them to --columns to use it)"
            )
    if m.get("classes"):
        lines.append(f"  classes (y, a logit each, in order): {names_text(m['classes'])}")
    return lines


def _missing_lines(missing: dict[str, Any] | None) -> list[str]:
    if not missing:
        return []
    policy = missing["policy"]
    if not missing["columns"]:
        return [f"  missing or non-numeric cells: none in the columns used (--missing {policy})"]
    lines = [f"  missing or non-numeric cells (--missing {policy}):"]
    for c in missing["columns"]:
        shown = ", ".join(str(line) for line in c["lines"]) + (
            ", ..." if c["count"] > len(c["lines"]) else ""
        )
        lines.append(
            f"    {c['column']}: {c['count']:,} of {c['rows']:,} cells, {c['action']} (lines {shown})"
        )
        if c["count"] > MANY_BAD_CELLS * c["rows"]:
            lines.append(
                f"    warning: {100 * c['count'] / c['rows']:.0f}% of {c['column']} was not numbers: check that "
                "it is a column to use"
            )
    return lines


def _threshold_line(anomaly: dict[str, Any]) -> str:
    quantile = anomaly.get("threshold_quantile", 0.999)
    return (
        f"  anomaly score: the largest |error| / residual_std over the columns; suggested "
        f"stream --threshold {anomaly['suggested_threshold']:g} (the {100 * quantile:g}th percentile of the "
        "validation scores, kept in the model's metadata)"
    )
