"""The ``edgernn`` command group: a thin click layer over the library.

Each command parses, calls one library function and echoes. Heavy modules (torch, onnx) are imported
inside the commands that need them, so ``edgernn bench`` and ``edgernn generate`` start fast on a device.
Results go to stdout; progress and diagnostics to stderr. Bad input: one line on stderr, exit code 2.
"""

from __future__ import annotations

import click

from edgernn import __version__
from edgernn.cli.common import Group


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgernn")
def cli() -> None:
    """Train compact recurrent models, export them to ONNX with explicit state, and step them.

    \b
    Example:
      edgernn train examples/data/tinyshakespeare.txt -o runs/shakespeare --minutes 2
      edgernn export runs/shakespeare -o shakespeare.onnx
      edgernn generate shakespeare.onnx --prompt "ROMEO:" -n 300
      edgernn bench shakespeare.onnx
    """
