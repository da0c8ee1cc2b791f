"""The device tests' one rule for missing tools: skip with one line naming the Debian packages, and fail
instead under ``CI=true`` (where every device test must run)."""

from __future__ import annotations

import os
import shutil

import pytest


def missing_tools(message: str) -> None:
    """Fail under CI, skip elsewhere, with ``message`` (which names the Debian packages)."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_device(name: str, mca: bool = False):
    """The device profile ``name`` (``edgernn.export.c.devices``) once its toolchain and emulator (and
    ``llvm-mca-14`` with ``mca``) are found."""
    from edgernn.export.c.devices import get_device

    device = get_device(name)
    missing = device.missing_tools()
    packages = list(device.packages)
    if mca and shutil.which("llvm-mca-14") is None:
        missing.append("llvm-mca-14")
        packages.append("llvm-14")
    if missing:
        missing_tools(f"{name}: {', '.join(missing)} not found (Debian packages: {' '.join(packages)})")
    return device


def require_mcu_examples():
    """The Cortex-M4 target examples/mcu builds with, once its toolchain, emulator and make are found."""
    from edgernn.export.c.targets import get_target

    m4 = get_target("cortex-m4")
    missing = m4.missing_tools() + (["make"] if shutil.which("make") is None else [])
    if missing:
        missing_tools(
            f"examples/mcu: {', '.join(missing)} not found (Debian packages: make {' '.join(m4.packages)})"
        )
    return m4
