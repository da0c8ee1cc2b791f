"""``edgernn deploy --target c --device D``: the precision a device wants, and the self-test run there."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgernn.runtime.errors import ContractError, InputError


def device_options(device_name: str, target: str, options: dict[str, Any]) -> tuple[Any, str | None]:
    """The device's profile, and a note when its lack of an FPU chose ``--precision integer`` (set in
    ``options`` when no precision was given)."""
    from edgernn.export.c.devices import get_device

    if target != "c":
        raise InputError(f"--device: only --target c runs on a device (got --target {target})")
    profile = get_device(device_name)
    if "precision" in options or not profile.fpu.startswith("none"):
        return profile, None
    options["precision"] = "integer"
    return profile, (
        f"{profile.name} has no FPU: --precision integer (no floating point in a step); "
        "--precision float32 or int8 to choose otherwise"
    )


def self_test_on_device(profile: Any, out_dir: Path, name: str) -> str:
    """Build the deployed self-test for the device, run it under its emulator: the report's line.
    ContractError when it fails there (the files stay: they passed on this machine)."""
    from edgernn.export.c.devices.build import build, run
    from edgernn.export.c.selftest import parse_output

    profile.require_tools()
    with tempfile.TemporaryDirectory(prefix="edgernn-device-") as scratch:
        sources = [out_dir / f"{name}.c", out_dir / f"{name}_test.c"]
        program = build(profile, sources, Path(scratch) / "selftest.elf", include=(out_dir,))
        done = run(program)
    parsed = parse_output(done.stdout)
    if not parsed.passed:
        raise ContractError(
            f"the self-test in {out_dir} fails on {profile.name} ({program.board.machine if program.board else ''}):"
            f" {done.stdout.strip()[-800:]}"
        )
    board = program.board.machine if program.board else profile.emulator
    return (
        f"{profile.name} self-test ({board} under {profile.emulator}): {parsed.steps} steps, largest error "
        f"{parsed.max_abs_error:.3g}"
    )
