"""Helpers of the reliability tests: hostile model files, and a memory-bounded subprocess that opens them.

``run_bounded(cases)`` runs every case in one fresh Python under ``resource.setrlimit(RLIMIT_AS)``, so a
file that makes the runtime allocate gigabytes fails there (MemoryError, or the process dies) instead of
taking the test machine down, and reports each outcome as ``ok``, ``ContractError``, ``InputError`` or
``other: Type: message`` (the last is what the contract forbids).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgernn.runtime import contract

MARKER = "Q" * 16  # stands in a metadata value, replaced by invalid UTF-8 of the same length in the bytes


def symbolic_model(doc: dict, *, state_dims: list | None = None) -> bytes:
    """A tiny token model whose graph declares the state as ``state_dims`` (symbolic by default) and whose
    metadata is ``doc``: the graph passes h through and y is a Gather from a 9x9 table."""
    dims = state_dims or ["batch", "layers", "hidden"]
    table = numpy_helper.from_array(np.eye(9, dtype=np.float32), "E")
    nodes = [
        helper.make_node("Gather", ["E", "x"], ["y"], axis=0),
        helper.make_node("Identity", ["h"], ["h_next"]),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.INT64, ["batch"]),
        helper.make_tensor_value_info("h", TensorProto.FLOAT, dims),
    ]
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 9]),
        helper.make_tensor_value_info("h_next", TensorProto.FLOAT, dims),
    ]
    graph = helper.make_graph(nodes, "symbolic", inputs, outputs, initializer=[table])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", contract.OPSET)])
    proto.ir_version = contract.IR_VERSION
    helper.set_model_props(proto, {contract.METADATA_KEY: json.dumps(doc)})
    return proto.SerializeToString()


def token_doc(hidden_size: int = 4, num_layers: int = 1) -> dict:
    """Metadata of a GRU token model over 9 tokens, written without the reader's checks."""
    return {
        "schema_version": 1, "edgernn_version": "test", "opset": contract.OPSET, "cell": "gru",
        "num_layers": num_layers, "hidden_size": hidden_size, "steps_per_call": 1,
        "input": {"kind": "tokens", "size": 9, "dtype": "int64"},
        "output": {"kind": "logits", "size": 9},
        "states": [{"input": "h", "output": "h_next", "shape": [num_layers, hidden_size],
                    "dtype": "float32", "initial": 0.0}],
    }  # fmt: skip


def with_invalid_utf8(model: onnx.ModelProto, key: str = "note") -> bytes:
    """``model``'s bytes with a metadata entry ``key`` whose value is not UTF-8 (onnx cannot write one)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    entry = copy.metadata_props.add()
    entry.key, entry.value = key, MARKER
    data = copy.SerializeToString()
    return data.replace(MARKER.encode(), b"\xff\xfe\xc3" + b"\x80" * (len(MARKER) - 4) + b"\xc3")


_RUNNER = textwrap.dedent(
    """
    import json, resource, sys, warnings
    warnings.simplefilter("ignore")
    import numpy as np
    from edgernn.runtime import Stepper
    from edgernn.runtime.errors import ContractError, InputError
    cases = json.loads(sys.stdin.read())
    resource.setrlimit(resource.RLIMIT_AS, (cases["limit_bytes"], cases["limit_bytes"]))

    def stepper(path):
        s = Stepper(path, chunk_model=False)
        x = 0 if s.data_input.vocab_size else np.zeros(s.data_input.shape[1:], s.data_input.dtype)
        s.step(x)

    def checkpoint(path):
        from edgernn.checkpoint import load_checkpoint
        load_checkpoint(path)

    def resume(path):
        from edgernn.train import resume_training
        resume_training(path, max_steps=1, progress=False)

    operations = {"stepper": stepper, "checkpoint": checkpoint, "resume": resume}
    for kind, path in cases["cases"]:
        try:
            operations[kind](path)
            outcome = "ok"
        except (ContractError, InputError) as exc:
            outcome = type(exc).__name__
            if len(str(exc)) > 2000:
                outcome = f"other: message of {len(str(exc))} characters"
        except BaseException as exc:
            outcome = f"other: {type(exc).__name__}: {str(exc)[:200]}"
        print(json.dumps([path, outcome]), flush=True)
    """
)


def run_bounded(cases: list[tuple[str, str]], limit_mib: int, timeout: float = 240) -> dict[str, str]:
    """Outcome per path of ``cases`` (``(operation, path)``, operation ``stepper``, ``checkpoint`` or
    ``resume``) in one subprocess limited to ``limit_mib`` MiB of address space. A case the process did
    not live to report is ``other: died`` (a crash or the limit)."""
    doc = {"cases": cases, "limit_bytes": limit_mib << 20}
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    outcomes = dict(json.loads(line) for line in done.stdout.splitlines() if line.startswith("["))
    for _, path in cases:
        outcomes.setdefault(path, f"other: died (exit {done.returncode}): {done.stderr[-300:]}")
    return outcomes


def bounded_baseline_mib() -> int:
    """Address space a Python with numpy, onnxruntime and torch imported takes here, in MiB."""
    code = (
        "import resource, numpy, onnxruntime, torch; from edgernn.runtime import Stepper;"
        "print(open('/proc/self/status').read().split('VmPeak:')[1].split()[0])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return int(done.stdout.strip()) // 1024


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)
