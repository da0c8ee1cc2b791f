"""``edgernn bench --plot``: latency histograms and CDFs as a PNG, and the check of where it goes.

``check_plot_path`` runs before anything is measured, so a plot that cannot be written costs one line
and exit code 2, not a minute of measuring and then a traceback. The PNG itself is written atomically
(``edgernn.runtime.files``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgernn.runtime.errors import InputError
from edgernn.runtime.files import atomic_write_bytes

if TYPE_CHECKING:
    from edgernn.benchmark import ModelBench

NO_MATPLOTLIB = "--plot needs matplotlib (pip install 'edgernn[train]')"


def check_plot_path(path: str | os.PathLike) -> Path:
    """Refuse (InputError, naming the path) a plot that could not be written once measured: a name that
    is not .png, matplotlib missing, a target that is a folder, a link or a device, a folder on the way
    that is a file, or a folder this process cannot write. Creates nothing."""
    path = Path(path)
    if path.suffix and path.suffix.lower() != ".png":
        raise InputError(f"--plot {path}: expected a .png file name (the plot is a PNG)")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError(NO_MATPLOTLIB) from None
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise InputError(f"cannot write {path}: it is not a regular file; give another path")
    folder = _nearest_existing(path.parent)
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: {folder} is not writable")
    return path


def _nearest_existing(folder: Path) -> Path:
    """``folder`` or its nearest ancestor that exists (the write makes the rest)."""
    for candidate in (folder, *folder.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def plot_latency(results: list[ModelBench], path: str | os.PathLike) -> Path:
    """A PNG: per model, the histogram and the CDF of per-step latency of each path (needs matplotlib)."""
    from edgernn.benchmark import PATHS

    plt = _pyplot()
    figure, axes = plt.subplots(len(results), 2, figsize=(12, 3.6 * len(results)), squeeze=False)
    for (histogram, cdf), result in zip(axes, results, strict=True):
        timings = {name: result.timings_us[name] for name in PATHS if name in result.timings_us}
        _plot_timings(histogram, cdf, Path(result.label).name, timings)
    return _save(plt, figure, path)


def plot_side_by_side(timings: dict[str, np.ndarray], path: str | os.PathLike, batch_size: int) -> Path:
    """One PNG: histogram and CDF of every model's step latency on shared axes (needs matplotlib)."""
    plt = _pyplot()
    figure, (histogram, cdf) = plt.subplots(1, 2, figsize=(12, 3.8))
    _plot_timings(histogram, cdf, f"{len(timings)} model(s), batch {batch_size}", timings)
    return _save(plt, figure, path)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise InputError(NO_MATPLOTLIB) from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, path: str | os.PathLike) -> Path:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return atomic_write_bytes(path, buffer.getvalue())  # an unwritable path: InputError naming it


def _plot_timings(histogram, cdf, title: str, timings: dict[str, np.ndarray]) -> None:
    """Histogram and CDF of per-step latency, one line per entry of ``timings`` (microseconds)."""
    everything = np.concatenate(list(timings.values()))
    low, high = np.percentile(everything, 0.1), np.percentile(everything, 99.9)
    bins = np.geomspace(max(low, 0.1), max(high, low * 1.01), 80)
    for name, timing in timings.items():
        values = np.sort(timing)
        label = f"{name} (p50 {np.median(values):.1f} us)"
        histogram.hist(values, bins=bins, histtype="step", linewidth=1.4, label=label)
        cdf.plot(values, np.arange(1, len(values) + 1) / len(values), linewidth=1.4, label=name)
    for ax, ylabel in ((histogram, "steps"), (cdf, "fraction of steps")):
        ax.set_xscale("log")
        ax.set_xlabel("step latency (us, log scale)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    histogram.set_title(f"{title}: latency histogram")
    cdf.set_title(f"{title}: latency CDF")
    histogram.legend(fontsize=8)
    cdf.legend(fontsize=8, loc="lower right")
