"""The runtime works on a device with neither torch nor onnx, and nothing imports as bare ``runtime``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

# Runs in a fresh interpreter: torch and onnx are blocked before edgernn.runtime is imported, so any
# import of either (direct or through a dependency) raises ImportError.
STEP_WITHOUT_TORCH = """
import json, sys
sys.modules["torch"] = None
sys.modules["onnx"] = None
import numpy as np
from edgernn.runtime import Stepper, describe, generate

path, tokens = sys.argv[1], json.loads(sys.argv[2])
stepper = Stepper(path)
ys = [stepper.step(t).tolist() for t in tokens]
text = generate(stepper, "abc", max_new_tokens=5, temperature=0)
describe(path)
leaked = sorted(
    name for name, module in sys.modules.items()
    if module is not None and name.split(".")[0] in ("torch", "onnx")
)
print(json.dumps({"ys": ys, "h": stepper.state["h"].tolist(), "text": text, "leaked": leaked,
                  "blocked": [sys.modules.get("torch") is None, sys.modules.get("onnx") is None]}))
"""

BARE_NAMES = """
import importlib, json
result = {}
for name in ("export", "runtime"):
    try:
        importlib.import_module(name)
        result[name] = "imported"
    except ModuleNotFoundError:
        result[name] = "missing"
import edgernn.export, edgernn.runtime
result["edgernn"] = [edgernn.export.__name__, edgernn.runtime.__name__]
print(json.dumps(result))
"""


def run_python(code: str, *args: str, cwd=None) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_runtime_steps_a_model_with_torch_and_onnx_blocked(token_model, tmp_path):
    tokens = [3, 1, 8, 0]
    state = token_model.initial_state(1)
    want = []
    for token in tokens:
        y, state = token_model.step(np.array([token]), state)
        want.append(y[0])

    result = run_python(STEP_WITHOUT_TORCH, str(token_model.path), json.dumps(tokens), cwd=tmp_path)

    np.testing.assert_allclose(np.array(result["ys"]), np.stack(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(result["h"]), state["h"], rtol=1e-5, atol=1e-6)
    assert len(result["text"]) == 5
    assert result["leaked"] == []
    assert result["blocked"] == [True, True]


def test_packages_import_only_under_the_edgernn_name(tmp_path):
    result = run_python(BARE_NAMES, cwd=tmp_path)
    assert result == {
        "export": "missing",
        "runtime": "missing",
        "edgernn": ["edgernn.export", "edgernn.runtime"],
    }


# A device-only install: train, export and quantize say what to install, in one line, exit code 2.
TRAIN_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None
from edgernn.cli import main
sys.argv = ["edgernn", *sys.argv[1:]]
main()
"""


def test_train_and_export_without_torch_say_what_to_install(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("hello world " * 200)
    commands = (
        ["train", str(text), "-o", str(tmp_path / "run")],
        ["export", str(tmp_path), "-o", "m.onnx"],
        ["quantize", str(text), "-o", "m.onnx", "--mode", "int8", "--data", str(text)],
    )
    for args in commands:
        done = subprocess.run(
            [sys.executable, "-c", TRAIN_WITHOUT_TORCH, *args], capture_output=True, text=True, cwd=tmp_path, timeout=120
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert f"edgernn {args[0]} needs the train extra (torch is not installed)" in lines[0]
        assert "pip install 'edgernn[train]'" in lines[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "m.onnx").exists()
