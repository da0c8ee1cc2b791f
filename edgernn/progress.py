"""Training progress on stderr: a bar on a terminal, plain lines in a log, nothing when off."""

from __future__ import annotations

import math
import sys
import time

from tqdm import tqdm

from edgernn.runtime.errors import InputError


class Progress:
    """Training progress on stderr: a tqdm bar on a terminal, plain lines elsewhere (a log, CI: one every
    5% of the budget or minute), nothing when off. Evaluations and warnings print in both visible modes."""

    LINE_FRACTION, LINE_SECONDS = 0.05, 60.0

    def __init__(self, mode: bool | str, total_steps: int | None):
        if mode is True:
            mode = "bar" if sys.stderr.isatty() else "lines"
        if mode not in (False, "bar", "lines"):
            raise InputError(f"progress must be True, False, 'bar' or 'lines', got {mode!r}")
        self.mode, self.total = mode, total_steps
        self.bar: tqdm | None = None
        self.next_fraction, self.last_line = 0.0, 0.0

    def open(self, step: int) -> None:
        if self.mode == "bar":
            self.bar = tqdm(total=self.total, initial=step, desc="train", unit="step", file=sys.stderr)
        self.last_line = time.monotonic()

    def update(self, step: int, fraction: float, loss: float, best: float, rate: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                loss=f"{loss:.3f}", best_val=f"{best:.3f}", mean_timesteps_per_s=f"{rate:,.0f}"
            )
        elif self.mode == "lines":
            now = time.monotonic()
            if fraction >= self.next_fraction or now - self.last_line >= self.LINE_SECONDS:
                total = f"/{self.total}" if self.total else ""
                best_text = f"{best:.4f}" if math.isfinite(best) else "none yet"
                self.write(
                    f"train: step {step}{total} ({fraction:.0%}), loss {loss:.4f}, best val {best_text}, "
                    f"{rate:,.0f} timesteps/s (mean since the start)"
                )
                self.next_fraction = (math.floor(fraction / self.LINE_FRACTION) + 1) * self.LINE_FRACTION
                self.last_line = now

    def write(self, line: str) -> None:
        if self.mode == "bar":
            tqdm.write(line, file=sys.stderr)
        elif self.mode == "lines":
            print(line, file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        self.write(f"warning: {message}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
