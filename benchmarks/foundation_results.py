"""Print the README's results table for a trained char model and its ONNX export.

Measures, in one run: validation loss of the PyTorch model and of the exported model streamed through
the stepper (same split, same streams), the export's parity errors, file size, and per-step latency of
the stepper next to PyTorch eager stepping the same model (batch 1, 1 thread, state fed back).

Run: python benchmarks/foundation_results.py runs/shakespeare out/shakespeare.onnx   (or `make results`)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgernn.checkpoint import load_checkpoint
from edgernn.data import encode, read_text, split_train_validation
from edgernn.export import build_info, build_step_model, verify_export
from edgernn.models import count_parameters
from edgernn.runtime import Stepper, bench_stepper
from edgernn.runtime.bench import measure

STREAMS = 32


def stepper_validation_loss(stepper: Stepper, val_ids: np.ndarray) -> float:
    """Stream the validation split as STREAMS contiguous streams through the ONNX model."""
    length = (len(val_ids) - 1) // STREAMS
    inputs = val_ids[: length * STREAMS].reshape(STREAMS, length)
    targets = val_ids[1 : length * STREAMS + 1].reshape(STREAMS, length)
    stream = stepper.new_stream(batch_size=STREAMS)
    total = 0.0
    for t in range(length):
        logits = stream.step(inputs[:, t]).astype(np.float64)  # (B, V)
        top = logits.max(axis=1, keepdims=True)
        log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        total += float((log_z - logits[np.arange(STREAMS), targets[:, t]]).sum())
    return total / targets.size


def torch_validation_loss(model, val_ids: np.ndarray) -> float:
    length = (len(val_ids) - 1) // STREAMS
    inputs = torch.from_numpy(val_ids[: length * STREAMS].reshape(STREAMS, length))
    targets = torch.from_numpy(val_ids[1 : length * STREAMS + 1].reshape(STREAMS, length))
    with torch.inference_mode():
        logits, _ = model(inputs)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).item()


def torch_step_latency(model, steps: int = 3000, warmup: int = 300):
    torch.set_num_threads(1)
    state = model.initial_state(1)
    x = torch.zeros(1, dtype=torch.int64)

    def step():
        nonlocal state
        with torch.inference_mode():
            _, state = model(x, state)

    return measure(step, steps=steps, warmup=warmup)


def main(run_dir: str, onnx_path: str) -> None:
    checkpoint = load_checkpoint(run_dir)
    model = checkpoint.model.eval()
    text = read_text(checkpoint.metrics.get("data", "examples/data/tinyshakespeare.txt"))
    _, val_ids = split_train_validation(encode(text, checkpoint.vocabulary))
    info = build_info(model, checkpoint.vocabulary)
    parity = verify_export(model, build_step_model(model, info), info)
    stepper = Stepper(onnx_path)
    started = time.perf_counter()
    onnx_loss = stepper_validation_loss(stepper, val_ids)
    stream_seconds = time.perf_counter() - started
    torch_loss = torch_validation_loss(model, val_ids)
    ours = bench_stepper(stepper, steps=5000, warmup=500)
    eager = torch_step_latency(model)
    config = model.config
    print(
        "| model | parameters | trained | val loss PyTorch | val loss ONNX stepper | max parity error | ONNX size |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {config.cell.upper()} {config.num_layers}x{config.hidden_size}, char LM | {count_parameters(model):,} | "
        f"{checkpoint.metrics['steps']} steps, {checkpoint.metrics['minutes']:.1f} min | {torch_loss:.4f} | {onnx_loss:.4f} | "
        f"{parity.max_error():.1e} | {Path(onnx_path).stat().st_size / 1024:.0f} KiB |"
    )
    print()
    print(
        f"validation split streamed through the stepper: {len(val_ids):,} characters as {STREAMS} streams in {stream_seconds:.1f} s"
    )
    print()
    print("| path (batch 1, 1 thread) | p50 us | p90 us | p99 us | max us | steps/s | p50 vs stepper |")
    print("|---|---|---|---|---|---|---|")
    for name, stats in (("edgernn stepper", ours), ("PyTorch eager step", eager)):
        print(
            f"| {name} | {stats.p50_us:.1f} | {stats.p90_us:.1f} | {stats.p99_us:.1f} | {stats.max_us:.1f} | "
            f"{stats.steps_per_s:,.0f} | {stats.p50_us / ours.p50_us:.2f}x |"
        )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
