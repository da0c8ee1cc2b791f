"""Bring-your-own models in the three C precisions side by side on a core without an FPU (the numbers of
docs/c.md, "Bring-your-own models").

Two modules written the way users write them, trained here briefly with plain PyTorch and exported with
``export_module``: a forecaster (Linear -> LayerNorm -> GRU 2x64 -> ReLU -> Linear, one raw reading in, the
next out, on the InternalBleeding16 series) and a character model (Embedding -> LSTM 1x64 -> Linear ->
Softmax, on tinyshakespeare). Each is deployed as float32, int8 and integer (the quantized two with
``--data``: their gates measure the task metric against float32 on the validation split) and one step is
measured on the emulated device by the device bench (exact instructions between two markers, flash, RAM).

    .venv/bin/python benchmarks/integer_byo.py --work build/integer-byo [--device cortex-m0plus]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgernn.export import export_module
from edgernn.export.c.devices import get_device
from edgernn.export.c.devices.bench import bench_precision
from edgernn.export.deploy import deploy

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data"
PRECISIONS = ("float32", "int8", "integer")


class Forecaster(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(1, 32)
        self.norm = nn.LayerNorm(32)
        self.gru = nn.GRU(32, 64, num_layers=2, batch_first=True)
        self.out = nn.Linear(64, 1)

    def forward(self, x, state=None):
        z, state = self.gru(self.norm(self.inp((x - 70.0) / 15.0)), state)
        return self.out(torch.relu(z)) * 15.0 + 70.0, state


class CharSoftmax(nn.Module):
    def __init__(self, vocabulary: int):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, 16)
        self.lstm = nn.LSTM(16, 64, batch_first=True)
        self.head = nn.Linear(64, vocabulary)

    def forward(self, tokens, state=None):
        z, state = self.lstm(self.embedding(tokens), state)
        return torch.softmax(self.head(z), dim=-1), state


def _train(model: nn.Module, batches, loss_of, steps: int) -> None:
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(steps):
        x, y = batches(step)
        out, _ = model(x)
        loss = loss_of(out, y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def forecaster(work: Path, steps: int) -> tuple[Path, Path]:
    values = np.loadtxt(DATA / "ucr_internalbleeding16_train.csv", delimiter=",", skiprows=1, usecols=1)
    series = torch.tensor(values, dtype=torch.float32)
    rng = np.random.default_rng(0)

    def batches(_):
        starts = rng.integers(0, len(series) - 101, 16)
        window = torch.stack([series[s : s + 101] for s in starts])
        return window[:, :-1, None], window[:, 1:, None]

    model = Forecaster()
    _train(model, batches, lambda out, y: ((out - y) ** 2).mean(), steps)
    path = work / "forecaster.onnx"
    extra = {"task": "forecast", "columns": ["value"], "targets": ["value"]}
    export_module(model.eval(), path, example_input=torch.randn(1, 5, 1) * 10 + 70, extra_metadata=extra)
    return path, DATA / "ucr_internalbleeding16_test.csv"


def char_model(work: Path, steps: int) -> tuple[Path, Path]:
    text = (DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:60_000]
    vocabulary = sorted(set(text))
    ids = torch.tensor([vocabulary.index(c) for c in text])
    rng = np.random.default_rng(1)

    def batches(_):
        starts = rng.integers(0, len(ids) - 65, 16)
        window = torch.stack([ids[s : s + 65] for s in starts])
        return window[:, :-1], window[:, 1:]

    model = CharSoftmax(len(vocabulary))
    nll = nn.NLLLoss()
    _train(model, batches, lambda p, y: nll(torch.log(p + 1e-9).transpose(1, 2), y), steps)
    path = work / "char_softmax.onnx"
    export_module(
        model.eval(), path, example_input=torch.zeros(1, 5, dtype=torch.int64), vocabulary=vocabulary
    )
    data = work / "char_text.txt"
    data.write_text(text, encoding="utf-8")
    return path, data


def measure(name: str, model: Path, data: Path, device_name: str, work: Path, steps: int) -> dict:
    device = get_device(device_name)
    out: dict = {"model": name, "device": device_name, "precisions": {}}
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for precision in PRECISIONS:
        options = {} if precision == "float32" else {"data": data}
        report = deploy(model, "c", folder / f"c-{precision}", precision=precision, **options)
        bench = bench_precision(model, device, precision, clock_mhz=48.0, steps=steps, work=folder)
        row = {
            "instructions": bench.instructions_median,
            "flash_bytes": bench.flash_bytes,
            "ram_bytes": bench.ram_bytes,
            "macs": bench.macs,
        }
        metric = report.details.get("quality", {}).get("metric") if precision != "float32" else None
        if metric:
            row["metric"] = {k: metric[k] for k in ("name", "float32", "quantized", "tolerance")}
        out["precisions"][precision] = row
    return out


def table(results: list[dict]) -> str:
    lines = [
        "| model | precision | instructions/step | vs float32 | vs int8 | flash | RAM | task metric (float32 -> C) |",
        "|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for result in results:
        rows = result["precisions"]
        for precision, row in rows.items():
            metric = row.get("metric")
            text = f"{metric['name']} {metric['float32']:.4f} -> {metric['quantized']:.4f}" if metric else ""
            lines.append(
                f"| {result['model']} ({result['device']}) | {precision} | {row['instructions']:,.0f} | "
                f"{row['instructions'] / rows['float32']['instructions']:.3f}x | "
                f"{row['instructions'] / rows['int8']['instructions']:.3f}x | {row['flash_bytes']:,} B | "
                f"{row['ram_bytes']:,} B | {text} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "integer-byo")
    parser.add_argument("--device", default="cortex-m0plus")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=3, help="steps measured on the device")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results = []
    for name, make in (("forecaster GRU 2x64", forecaster), ("char LSTM 1x64 softmax", char_model)):
        model, data = make(args.work, args.train_steps)
        results.append(measure(name.split()[0], model, data, args.device, args.work, args.steps))
        results[-1]["model"] = name
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    print(f"({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
