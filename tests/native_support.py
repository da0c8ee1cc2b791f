"""The runtime tests' hand-built models as generated C, built as shared libraries for ``NativeStepper``.

``native_pair(root, cell, kind)`` deploys a hand-built contract model (``conftest.build_tiny_model``) with
``--target c``, builds the library and returns it with the onnxruntime ``Stepper`` of the same file, so a
test can hold the two runtimes to one set of rules. Without a C compiler the test skips with one line
naming the Debian package (under ``CI=true`` it fails).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import build_tiny_model

from edgernn.runtime import Stepper
from edgernn.runtime.native import NativeStepper

SIZES = {"tokens": 9, "features": 5}  # vocabulary (conftest's VOCABULARY) or features in and out


def require_compiler() -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        message = "no C compiler for the generated C: install the Debian package gcc"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def native_pair(root: Path, cell: str, kind: str, hidden_size: int = 24) -> tuple[NativeStepper, Stepper]:
    """The generated C of a 2-layer ``cell`` model over ``kind`` inputs, and its onnxruntime Stepper (the
    .onnx file is ``root / f"{cell}-{kind}.onnx"``)."""
    require_compiler()
    from edgernn.export.c import build_shared_library
    from edgernn.export.deploy import deploy

    model = build_tiny_model(cell, kind, SIZES[kind], hidden_size, 2, seed=4)
    path = model.save(root, f"{cell}-{kind}.onnx")
    out = root / f"{cell}-{kind}-c"
    deploy(path, "c", out)
    library = build_shared_library(out, "model", root / f"lib{cell}{kind}.so")
    return NativeStepper(library, name="model"), Stepper(path)
