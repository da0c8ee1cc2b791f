"""A realistic sensor CSV for the CSV tests: 9 accelerometer channels in milli-g (three body positions x
lateral / vertical / forward, vertical ones around +1000 mg of gravity), an ISO timestamp column and an
``is_anomaly`` label column, sampled at 50 Hz while walking."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHANNELS = [f"{place}_{axis}" for place in ("chest", "ankle", "leg") for axis in ("lat", "vert", "fwd")]
HEADER = ["timestamp", *CHANNELS, "is_anomaly"]


def sensor_rows(rows: int = 800, seed: int = 0) -> list[list[str]]:
    """The cells of ``rows`` data rows (strings, as a file holds them), a 20-row anomaly at row 600."""
    rng = np.random.default_rng(seed)
    seconds = np.arange(rows) / 50.0
    stride = 2 * np.pi * 1.8 * seconds  # a walking cadence of 1.8 steps per second
    out = []
    for i in range(rows):
        anomalous = 600 <= i < 620
        values = []
        for j, name in enumerate(CHANNELS):
            gravity = 1000.0 if name.endswith("vert") else 0.0
            swing = (900.0 if name.startswith("ankle") else 400.0) * np.sin(stride[i] + j)
            values.append(gravity + swing + rng.normal(0, 25) + (2500.0 if anomalous else 0.0))
        stamp = f"2024-05-01T10:{int(seconds[i]) // 60:02d}:{seconds[i] % 60:06.3f}"
        out.append([stamp, *(f"{v:.1f}" for v in values), str(int(anomalous))])
    return out


def write_sensor_csv(
    path: Path, rows: int = 800, *, bad: dict[int, str] | None = None, column: str = "ankle_vert",
    delimiter: str = ",",
) -> Path:  # fmt: skip
    """Write the CSV; ``bad`` maps file line numbers (the header is line 1) to what ``column`` holds there."""
    body = sensor_rows(rows)
    for line, text in (bad or {}).items():
        body[line - 2][HEADER.index(column)] = text
    lines = [delimiter.join(HEADER), *(delimiter.join(row) for row in body)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
