"""The training memory estimate (edgernn.memory) against the peak memory training really takes.

Each configuration trains 3 steps through ``train_task`` (validating and writing a resume checkpoint at
every step, so that the best copy and the checkpoint's serialisation count) in a fresh interpreter, and
reports the growth of its peak resident memory over what the process held before training began, beside
the estimate. Prints a markdown table.

Run:  python benchmarks/training_memory.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

TEXT = Path(__file__).parents[1] / "examples" / "data" / "tinyshakespeare.txt"
CONFIGS = {  # label: (model settings, batch_size, seq_len)
    "GRU 1x2048, batch 8 x 32": ({"cell": "gru", "hidden_size": 2048}, 8, 32),
    "LSTM 2x512, batch 32 x 128": ({"cell": "lstm", "hidden_size": 512, "num_layers": 2}, 32, 128),
    "GRU 1x64, batch 256 x 512": ({"cell": "gru", "hidden_size": 64}, 256, 512),
    "LSTM 1x64, batch 256 x 512": ({"cell": "lstm", "hidden_size": 64}, 256, 512),
    "RNN 1x64, batch 256 x 512": ({"cell": "rnn_tanh", "hidden_size": 64}, 256, 512),
}


def measure(label: str) -> dict:
    """In this process: train ``label``'s configuration for 3 steps; the peak memory it added, and the estimate."""
    from edgernn.memory import estimate_training_memory
    from edgernn.models import ModelConfig
    from edgernn.train import TrainConfig, train_task

    settings, batch_size, seq_len = CONFIGS[label]
    model = ModelConfig(embedding_size=64, **settings)
    train = TrainConfig(budget_minutes=None, max_steps=3, batch_size=batch_size, seq_len=seq_len,
                        eval_every=1, checkpoint_every=1, eval_batch_size=32, warmup_steps=1)  # fmt: skip
    before = _resident_bytes()
    with tempfile.TemporaryDirectory() as run_dir:
        result = train_task("charlm", TEXT, run_dir, model, train, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    estimate = estimate_training_memory(result.model.config, batch_size, seq_len)
    return {
        "label": label,
        "parameters": estimate.parameters,
        "measured": peak,
        "estimate": estimate.total_bytes,
    }


def _resident_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


def main() -> None:
    print(
        "| configuration (charlm, tinyshakespeare) | parameters | measured peak growth | estimate | estimate / measured |"
    )
    print("|---|---|---|---|---|")
    for label in CONFIGS:
        code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import training_memory as m; print(json.dumps(m.measure({label!r})))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(f"| {label} | {row['parameters']:,} | {row['measured'] / 1e6:,.0f} MB | {row['estimate'] / 1e6:,.0f} MB "
              f"| {row['estimate'] / row['measured']:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
