"""Bring your own model: train a PyTorch module your own way, then export and stream it with edgernn.

Shows ``export_module`` on a module edgernn did not define: Linear -> 2-layer nn.GRU -> LayerNorm ->
Linear, trained here with a plain PyTorch loop (150 steps) to clean up a noisy sine wave. The export
swaps the GRU for an unrolled cell with the same weights, checks the ONNX graph against the module
(one step, 1000 steps with state fed back, after a reset) and writes it only if every check passes. The
file then runs sample by sample with ``Stepper``, like any edgernn model.

Run:  python examples/bring_your_own.py [--out out/byo] [--steps 150]   (writes OUT/denoiser.onnx; ~10 s on 2 cores)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgernn.export import export_module
from edgernn.runtime import Stepper


class Denoiser(nn.Module):
    """Your model: forward(x, state) -> (y, state), x (batch, steps, 1), state h (layers, batch, hidden)."""

    def __init__(self, hidden_size: int = 32):
        super().__init__()
        self.inp = nn.Linear(1, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, num_layers=2, batch_first=True)
        self.norm = nn.LayerNorm(hidden_size)
        self.out = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        z, state = self.gru(torch.tanh(self.inp(x)), state)
        return self.out(self.norm(z)), state


def noisy_sines(batch: int, steps: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy, clean), each (batch, steps, 1): sines of random frequency and phase, noise of std 0.3."""
    t = torch.arange(steps, dtype=torch.float32)
    frequency = 0.05 + 0.15 * torch.rand(batch, 1, generator=generator)
    phase = 6.28 * torch.rand(batch, 1, generator=generator)
    clean = torch.sin(frequency * t + phase).unsqueeze(-1)
    return clean + 0.3 * torch.randn(clean.shape, generator=generator), clean


def train(model: Denoiser, steps: int = 150) -> float:
    """Your own training loop; edgernn is not involved. Returns the last batch's loss."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        noisy, clean = noisy_sines(16, 64, generator)
        loss = nn.functional.mse_loss(model(noisy)[0], clean)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.item()


def main(out: Path, steps: int) -> None:
    torch.set_num_threads(1)  # a model this small trains faster without threads waiting on each other
    torch.manual_seed(0)
    model = Denoiser()
    print(f"trained with a plain PyTorch loop: last batch MSE {train(model, steps):.4f}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "denoiser.onnx"

    report = export_module(model, path, example_input=torch.randn(1, 64, 1))
    print(f"wrote {report.path} ({report.size_bytes / 1024:.0f} KiB), states {report.info.state_map}")
    print(f"max parity error {report.parity.max_error():.2g} over {report.parity.closed_loop_steps} steps")

    noisy, clean = noisy_sines(1, 200, torch.Generator().manual_seed(1))
    stepper = Stepper(path)  # one sample in, one cleaned sample out, the GRU state carried between calls
    cleaned = np.array([stepper.step(sample.numpy()) for sample in noisy[0]])  # (200, 1)
    with torch.no_grad():
        expected = model.eval()(noisy)[0][0].numpy()
    print(f"stepper vs PyTorch over 200 samples: max |difference| {np.abs(cleaned - expected).max():.2g}")
    print(
        f"MSE to the clean wave: noisy input {((noisy[0] - clean[0]) ** 2).mean():.4f}, "
        f"cleaned {((cleaned - clean[0].numpy()) ** 2).mean():.4f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("out/byo"), help="directory to write denoiser.onnx in"
    )
    parser.add_argument("--steps", type=int, default=150, help="training steps of the plain PyTorch loop")
    args = parser.parse_args()
    main(args.out, args.steps)
