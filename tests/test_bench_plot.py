"""edgernn bench --plot: a path that cannot be written is refused before anything is measured."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

import edgernn.benchmark as benchmark
from edgernn.cli import cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def no_measuring(monkeypatch):
    """Every way bench measures fails the test: the refusal must come first."""

    def measured(*args, **kwargs):
        raise AssertionError("bench measured before checking --plot")

    for name in ("_interleaved", "bench_model", "bench_reference"):
        monkeypatch.setattr(benchmark, name, measured)


def _bench(*args) -> object:
    return CliRunner().invoke(cli, ["bench", *map(str, args)])


def _bad_paths(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    link = tmp_path / "link.png"
    link.symlink_to(tmp_path / "elsewhere.png")
    return [
        (afile / "p.png", "afile is a file, not a folder"),
        (afile / "deeper" / "p.png", "afile is a file, not a folder"),
        (folder, "is a directory"),  # click refuses it
        (link, "not a regular file"),
        (tmp_path / "p.svg", "expected a .png file name"),
    ]


@pytest.mark.parametrize("flags", [["--no-baselines", "--steps", "50"], ["--steps", "50"], []])
def test_an_unwritable_plot_is_one_line_exit_2_before_measuring(feature_model, tmp_path, no_measuring, flags):
    models = [feature_model.path] if flags else []  # no MODEL: the reference models
    for plot, fragment in _bad_paths(tmp_path):
        result = _bench(*models, *flags, "--plot", plot)
        assert result.exit_code == 2, (plot, result.output)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("Error: ") and fragment in line and str(plot.name) in line, line
        assert result.stdout == ""
    assert (tmp_path / "afile").read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_a_read_only_folder_is_refused_before_measuring(feature_model, tmp_path, no_measuring):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    result = _bench(feature_model.path, "--no-baselines", "--plot", locked / "p.png")
    assert result.exit_code == 2 and "is not writable" in result.stderr


def test_a_plot_in_a_new_folder_is_written_as_png(feature_model, tmp_path):
    plot = tmp_path / "new" / "sub" / "latency.png"
    result = _bench(feature_model.path, feature_model.path, "--steps", "30", "--warmup", "5", "--plot", plot)
    assert result.exit_code == 0, result.output
    assert plot.read_bytes().startswith(PNG_MAGIC)
    assert f"wrote {plot}" in result.stdout
    assert [p.name for p in plot.parent.iterdir()] == ["latency.png"]  # no temporary file left
