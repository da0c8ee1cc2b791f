"""Training that starts from another run's trained weights (``edgernn train --init-from RUN``): a model
adapted to new data, for example a keyword model to its user's own recordings.

The new run keeps everything the weights mean something with: the run's task, its classes or vocabulary
and front end (the data must give the same), its model (cell, layers, sizes) and its input and output
normalisation. Only the weights train on, from where the run left them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgernn.checkpoint import WEIGHTS_FILE, load_checkpoint
from edgernn.models import ModelConfig
from edgernn.runtime.errors import InputError
from edgernn.tasks import TaskData

ARCHITECTURE = ("cell", "hidden_size", "num_layers", "embedding_size", "dropout")
SHAPES = ("input_kind", "input_size", "output_kind", "output_size")
RECALIBRATED = ("anomaly",)  # metadata measured again on the new run's own data


@dataclass(frozen=True)
class StartingPoint:
    """A run's model config and trained weights, and where they came from (kept in the new run)."""

    config: ModelConfig
    weights: dict[str, torch.Tensor]
    provenance: dict[str, str]


def starting_point(
    run_dir: str | os.PathLike, task: str, data: TaskData, model_config: ModelConfig | None = None
) -> StartingPoint:
    """The weights of ``run_dir`` to train ``task`` on ``data`` from; InputError naming what differs when
    the run cannot start it (another task, other classes, vocabulary or front end, another model)."""
    run_dir = Path(run_dir)
    where = f"--init-from {run_dir}"
    base = load_checkpoint(run_dir)
    config = base.model.config
    if base.task != task:
        raise InputError(f"{where}: a {base.task or 'untasked'} run; the data trains the {task} task")
    if model_config is not None:
        differs = [n for n in ARCHITECTURE if getattr(model_config, n) != getattr(config, n)]
        if differs:
            raise InputError(
                f"{where}: the model is the run's ({_model(config)}); "
                f"{', '.join('--' + n.replace('_', '-') for n in differs)} "
                f"{'differs' if len(differs) == 1 else 'differ'}: leave them out"
            )
    saved = base.train_config.get("metadata") or {}
    if not isinstance(saved, dict):
        raise InputError(f"{run_dir / 'config.json'}: train.metadata: expected an object")
    fresh = json.loads(json.dumps(data.metadata))
    for key in sorted((set(saved) | set(fresh)) - set(RECALIBRATED)):
        name, run_value, data_value = _first_difference(key, saved.get(key), fresh.get(key))
        if name is not None:
            raise InputError(
                f"{where}: {name} differs (the run's {_short(run_value)}, the data's {_short(data_value)})"
            )
    if (base.vocabulary or None) != (data.vocabulary or None):
        raise InputError(
            f"{where}: the data's characters differ from the run's vocabulary "
            f"(run: {len(base.vocabulary or [])} tokens; data: {len(data.vocabulary or [])})"
        )
    for name in SHAPES:
        given = data.model_fields.get(name)
        if given is not None and given != getattr(config, name):
            raise InputError(f"{where}: the run's {name} is {getattr(config, name)}, the data's {given}")
    weights = {k: v.detach().clone() for k, v in base.model.state_dict().items()}
    digest = hashlib.sha256((run_dir / WEIGHTS_FILE).read_bytes()).hexdigest()
    return StartingPoint(config, weights, {"run": str(run_dir), "weights_sha256": digest})


def _model(config: ModelConfig) -> str:
    return f"{config.cell.upper()} {config.num_layers}x{config.hidden_size}"


def _first_difference(name: str, run: Any, data: Any) -> tuple[str | None, Any, Any]:
    """The first place ``run`` and ``data`` differ (``front_end.mels``), or (None, ...) where they do not."""
    if run == data:
        return None, run, data
    if isinstance(run, dict) and isinstance(data, dict):
        for key in sorted(set(run) | set(data)):
            found = _first_difference(f"{name}.{key}", run.get(key), data.get(key))
            if found[0] is not None:
                return found
    return name, run, data


def _short(value: Any) -> str:
    return f"{json.dumps(value)[:80]}"


__all__ = ["StartingPoint", "starting_point"]
