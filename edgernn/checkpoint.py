"""Run directories: config.json + model.safetensors (+ vocab.json, metrics.json). No pickle anywhere."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from edgernn import __version__
from edgernn.models import ModelConfig, RecurrentModel
from edgernn.runtime.contract import MAX_HIDDEN_SIZE, MAX_LAYERS, MAX_SIZE
from edgernn.runtime.errors import InputError
from edgernn.runtime.files import atomic_write_bytes, atomic_write_text
from edgernn.runtime.untrusted import guarded, read_json

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"
METRICS_FILE = "metrics.json"


@dataclass
class Checkpoint:
    """A model rebuilt from a run directory, with what was saved beside it."""

    model: RecurrentModel
    task: str
    vocabulary: list[str] | None = None
    train_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def write_json(path: str | os.PathLike, doc: Any) -> None:
    atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")


def save_checkpoint(
    run_dir: str | os.PathLike,
    model: RecurrentModel,
    *,
    task: str,
    vocabulary: list[str] | None = None,
    train_config: dict[str, Any] | None = None,
) -> Path:
    """Write the weights, then the config that names them; each file atomically."""
    run_dir = Path(run_dir)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(run_dir / WEIGHTS_FILE, save(tensors))
    if vocabulary is not None:
        write_json(run_dir / VOCAB_FILE, vocabulary)
    doc = {
        "edgernn_version": __version__,
        "task": task,
        "model": json.loads(model.config.to_json()),
        "train": train_config or {},
    }
    write_json(run_dir / CONFIG_FILE, doc)
    return run_dir


def _read_json(path: Path, what: str) -> Any:
    if not path.exists():
        raise InputError(
            f"{path.parent}: no {path.name}; expected a run directory written by 'edgernn train'"
        )
    return read_json(path, what)


def load_checkpoint(run_dir: str | os.PathLike) -> Checkpoint:
    """Rebuild the model of a run directory; every problem is an InputError naming the file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(
            f"{run_dir}: expected a run directory written by 'edgernn train', found no directory"
        )
    config_path = run_dir / CONFIG_FILE
    doc = _read_json(config_path, "the run config")
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        raise InputError(f"{config_path}: expected an object with a 'model' section")
    _check_run_config(config_path, doc)
    with guarded(config_path, "the model config"):
        config = ModelConfig.from_dict(doc["model"])
        model = RecurrentModel(config)
    with guarded(run_dir / WEIGHTS_FILE, "the weights"):
        _load_weights(model, run_dir / WEIGHTS_FILE)
    model.eval()
    vocab_path = run_dir / VOCAB_FILE
    vocabulary = _read_json(vocab_path, "the vocabulary") if vocab_path.exists() else None
    if vocabulary is not None and (
        not isinstance(vocabulary, list) or not all(isinstance(t, str) for t in vocabulary)
    ):
        raise InputError(f"{vocab_path}: expected a JSON list of strings")
    metrics_path = run_dir / METRICS_FILE
    metrics = _read_json(metrics_path, "the metrics") if metrics_path.exists() else {}
    return Checkpoint(model, str(doc.get("task", "")), vocabulary, doc.get("train") or {}, metrics)


def _check_run_config(path: Path, doc: dict) -> None:
    """The fields beside ``model`` that a run's consumers read: ``task`` one of the known tasks, ``train``
    an object, and sizes no model edgernn trains has (a config.json edited to hidden_size 10**6 would
    otherwise allocate terabytes before anything else is checked)."""
    from edgernn.tasks import TASKS  # the task registry lives with the training side

    task = doc.get("task")
    if task is not None and task not in TASKS:
        raise InputError(f"{path}: task: expected one of {', '.join(TASKS)}, got {task!r:.60}")
    if not isinstance(doc.get("train", {}), dict):
        raise InputError(f"{path}: train: expected an object, got {type(doc['train']).__name__}")
    limits = {"hidden_size": MAX_HIDDEN_SIZE, "num_layers": MAX_LAYERS, "input_size": MAX_SIZE}
    limits |= {"output_size": MAX_SIZE, "embedding_size": MAX_HIDDEN_SIZE}
    for name, limit in limits.items():
        value = doc["model"].get(name)
        if isinstance(value, int) and value > limit:
            raise InputError(f"{path}: model.{name}: expected at most {limit}, got {value!r:.40}")


def _load_weights(model: RecurrentModel, path: Path) -> None:
    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise InputError(f"{path.parent}: no {path.name}; the run has no saved weights") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable safetensors file ({exc})") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != given:
        diff = sorted(set(expected.items()) ^ set(given.items()))[:6]
        raise InputError(f"{path}: weights do not match config.json; expected/given differ at {diff}")
    with torch.no_grad():
        model.load_state_dict(tensors)
