"""The C of a ``Mark``: nothing in a deployed step; a call of ``edgernn_NAME_LABEL`` (``edgernn_front_end_begin``,
``edgernn_front_end_end``) where the file is compiled with ``-DNAME_BENCH_MARKS``, so that the device
benchmark's execution trace counts the instructions between two marks (``export.c.devices.bench``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgernn.export.c.ir import Mark

if TYPE_CHECKING:
    from edgernn.export.c.emitter import Emitter


def symbol(label: str) -> str:
    """The function a benchmark build calls at a mark."""
    return f"edgernn_{label}"


def emit(e: Emitter, op: Mark) -> list[str]:
    call = symbol(op.label)
    return [
        f"#ifdef {e.NAME}_BENCH_MARKS",
        f"{{ extern void {call}(void); {call}(); }}",
        "#endif",
    ]
