"""The ``edgernn`` command line: a thin click layer over the library, one module per command family.

Each command parses, calls one library function and echoes. Heavy modules (torch, onnx) are imported
inside the commands that need them, so ``edgernn bench`` and ``edgernn generate`` start fast on a device.
Results go to stdout; progress and diagnostics to stderr. Bad input: one line on stderr, exit code 2.
"""

from __future__ import annotations

from edgernn.cli import (  # noqa: F401  (registers)
    bench_command,
    deploy_command,
    plan_command,
    platforms_command,
    run_commands,
    search_command,
    train_commands,
)
from edgernn.cli.group import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli(prog_name="edgernn")
