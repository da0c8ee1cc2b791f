"""How much memory a training run needs, estimated before anything is allocated, against what the machine has.

Measured on torch 2.13's CPU kernels (peak resident memory of training steps with AdamW, parameters from
5 thousand to 13 million, batch x seq_len from 256 to 131,072; ``benchmarks/training_memory.py`` compares
the estimate with whole runs):

- every parameter costs about 32 bytes in a step (weights, gradients, AdamW's two moments, and the
  temporaries of the backward pass and the optimizer), and about 32 more for the best model kept and the
  resume checkpoint, whose tensors are copied to bytes in memory before they are written: 64 bytes;
- the recurrence keeps, for every step of every sequence in the batch and every layer, about
  ``4 * (4 * gates + 4)`` bytes per hidden unit for the backward pass: 64 for a GRU (3 gates; 60-66
  measured), 80 for an LSTM (4 gates; 74-80 measured), 32 for a vanilla RNN (32 measured);
- the head's outputs, their loss and gradients: about 12 bytes per output per step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgernn.models import ModelConfig
from edgernn.runtime.errors import InputError

BYTES_PER_PARAMETER = 64
_GATES = {"gru": 3, "lstm": 4, "rnn_tanh": 1, "rnn_relu": 1}
_MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class MemoryEstimate:
    """A training run's estimated peak memory, in bytes, by what holds it."""

    parameters: int  # how many
    parameter_bytes: int
    activation_bytes: int
    batch_size: int
    seq_len: int
    processes: int = 1  # processes of the run on this machine, each with its own copy

    @property
    def total_bytes(self) -> int:
        return (self.parameter_bytes + self.activation_bytes) * self.processes

    def describe(self, config: ModelConfig) -> str:
        each = f" per process x {self.processes}" if self.processes > 1 else ""
        return (
            f"about {_size(self.total_bytes)}{each} ({self.parameters:,} parameters: "
            f"{_size(self.parameter_bytes)} for the weights, gradients, AdamW state, the best copy and the "
            f"checkpoint; {_size(self.activation_bytes)} of activations for batch {self.batch_size} x seq_len "
            f"{self.seq_len} x hidden {config.hidden_size} x {config.num_layers} layer(s))"
        )


def parameter_count(config: ModelConfig) -> int:
    """The trainable parameters of ``RecurrentModel(config)``, counted without building it."""
    gates = _GATES[config.cell]
    hidden = config.hidden_size
    embedding = config.input_size * config.embedding_size if config.input_kind == "tokens" else 0
    first_input = config.embedding_size if config.input_kind == "tokens" else config.input_size
    recurrent = 0
    for layer in range(config.num_layers):
        layer_input = first_input if layer == 0 else hidden
        recurrent += gates * hidden * (layer_input + hidden + 2)  # W_ih, W_hh and their two biases
    head = hidden * config.output_size + config.output_size
    return embedding + recurrent + head


def estimate_training_memory(
    config: ModelConfig, batch_size: int, seq_len: int, processes: int = 1
) -> MemoryEstimate:
    """Peak memory of a training step of ``config`` on ``batch_size`` sequences of ``seq_len`` steps (see
    the module docstring for where the numbers come from)."""
    parameters = parameter_count(config)
    steps = batch_size * seq_len
    per_step = 4 * (4 * _GATES[config.cell] + 4) * config.hidden_size * config.num_layers
    per_step += 12 * config.output_size
    if config.input_kind == "tokens":
        per_step += 8 * config.embedding_size
    else:
        per_step += 8 * config.input_size
    return MemoryEstimate(
        parameters, BYTES_PER_PARAMETER * parameters, per_step * steps, batch_size, seq_len, processes
    )


def available_memory_bytes() -> int | None:
    """What the machine can give without swapping: ``MemAvailable`` of /proc/meminfo, else the free
    physical pages; None where neither is known."""
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_training_memory(
    config: ModelConfig, batch_size: int, seq_len: int, available: int | None = None
) -> MemoryEstimate:
    """Refuse, in one line, a run whose estimate exceeds the memory available (``available`` bytes, else
    read from the machine); processes of a ``torchrun`` on this machine each count."""
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    estimate = estimate_training_memory(config, batch_size, seq_len, processes)
    available = available_memory_bytes() if available is None else available
    if available is not None and estimate.total_bytes > available:
        raise InputError(
            f"training this model would need {estimate.describe(config)}, and this machine has "
            f"{_size(available)} available now; give a smaller --hidden-size, --num-layers, "
            "--batch-size or --seq-len"
        )
    return estimate


def _size(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 1e3:,.1f} kB"
