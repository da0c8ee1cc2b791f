"""Fuzzing the readers of untrusted bytes: every outcome is success, ContractError or InputError.

Metadata documents mutated field by field, model files with flipped, cut and inserted bytes, invalid
UTF-8 in the metadata map, hostile run directories (config.json, vocab.json, model.safetensors,
resume.safetensors): all opened in one subprocess whose address space is bounded (``resource.setrlimit``),
so a file that would make the runtime allocate gigabytes fails the test instead of the machine.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from reliability_support import (
    bounded_baseline_mib,
    run_bounded,
    symbolic_model,
    token_doc,
    with_invalid_utf8,
    write,
)

from edgernn.runtime import contract

pytestmark = pytest.mark.filterwarnings("ignore")

HOSTILE_VALUES = [
    None, True, -1, 0, 2**27, 2**31, 10**7, 1e308, "x" * 1000, [], {}, [[[[[]]]]], [1] * 100_000,
    "float32", "tokens", {"kind": "tokens"}, 1.5, "NaN",
]  # fmt: skip
FIELDS = [
    ("hidden_size",), ("num_layers",), ("cell",), ("steps_per_call",), ("schema_version",), ("opset",),
    ("input", "size"), ("input", "kind"), ("input", "dtype"), ("input", "vocabulary"), ("input", "mean"),
    ("output", "size"), ("output", "kind"), ("states",), ("states", 0, "shape"), ("states", 0, "initial"),
    ("states", 0, "input"), ("stacks",), ("quantization",), ("graph_sha256",),
]  # fmt: skip
HOSTILE_DOCUMENTS = {
    "deep": "[" * 100_000 + "]" * 100_000,
    "digits": '{"schema_version": 1, "hidden_size": ' + "9" * 5000 + "}",
    "nan": '{"schema_version": 1, "hidden_size": NaN}',
    "vocab10m": json.dumps(
        {
            **token_doc(),
            "input": {"kind": "tokens", "size": 10**7, "dtype": "int64", "vocabulary": ["a"] * 10**7},
        }
    ),  # fmt: skip
    "states1m": json.dumps({**token_doc(), "states": [token_doc()["states"][0]] * 10**6}),
    "hidden2**27": json.dumps(token_doc(hidden_size=2**27)),
    "hidden2**30": json.dumps(token_doc(hidden_size=2**30)),
    "not-json": "{cell: gru",
    "list": "[1, 2]",
}


def _set(doc: dict, path: tuple, value) -> dict:
    doc = json.loads(json.dumps(doc))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def metadata_cases(tmp_path, token_model) -> list[tuple[str, str]]:
    base = json.loads(token_model.info.to_json())
    cases = []
    for i, field in enumerate(FIELDS):
        for j, value in enumerate(HOSTILE_VALUES):
            doc = _set(base, field, value)
            path = write(tmp_path / f"field{i}_{j}.onnx", symbolic_model(doc, state_dims=["batch", 2, 6]))
            cases.append(("stepper", path))
    for name, text in HOSTILE_DOCUMENTS.items():
        proto_bytes = symbolic_model({}, state_dims=None)
        import onnx

        proto = onnx.load_from_string(proto_bytes)
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = contract.METADATA_KEY, text
        cases.append(("stepper", write(tmp_path / f"doc_{name}.onnx", proto.SerializeToString())))
    symbolic = symbolic_model(
        token_doc(hidden_size=1000)
    )  # within bounds, but the graph's sizes are symbolic
    cases.append(("stepper", write(tmp_path / "symbolic.onnx", symbolic)))
    cases.append(("stepper", write(tmp_path / "utf8.onnx", with_invalid_utf8(token_model.proto))))
    cases.append(
        ("stepper", write(tmp_path / "utf8_key.onnx", with_invalid_utf8(token_model.proto, "edgernn")))
    )
    return cases


def byte_cases(tmp_path, token_model, count: int = 150) -> list[tuple[str, str]]:
    rng = random.Random(1234)
    data = bytearray(token_model.path.read_bytes())
    cases = []
    for i in range(count):
        mutated = bytearray(data)
        kind = i % 3
        if kind == 0:  # flip bytes
            for _ in range(rng.randint(1, 8)):
                mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
        elif kind == 1:  # cut the file
            mutated = mutated[: rng.randrange(len(mutated))]
        else:  # insert random bytes
            at = rng.randrange(len(mutated))
            mutated[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        cases.append(("stepper", write(tmp_path / f"bytes{i}.onnx", bytes(mutated))))
    cases.append(
        ("stepper", write(tmp_path / "garbage.onnx", bytes(rng.randrange(256) for _ in range(4096))))
    )
    cases.append(("stepper", write(tmp_path / "empty.onnx", b"")))
    return cases


def run_dir_cases(tmp_path) -> list[tuple[str, str]]:
    """Run directories with one hostile file each, from a real (tiny, untrained) checkpoint."""
    torch = pytest.importorskip("torch")
    from edgernn.checkpoint import save_checkpoint
    from edgernn.models import ModelConfig, RecurrentModel

    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig(input_size=9, output_size=9, hidden_size=8, embedding_size=4))
    good = tmp_path / "good"
    save_checkpoint(good, model, task="charlm", vocabulary=list("abcdefgh "))
    config = json.loads((good / "config.json").read_text())
    edits = {
        "deep": "[" * 100_000 + "]" * 100_000,
        "digits": '{"model": {"hidden_size": ' + "9" * 5000 + "}}",
        "hidden1e6": json.dumps(_set(config, ("model", "hidden_size"), 10**6)),
        "train_list": json.dumps({**config, "train": [1]}),
        "bogus_task": json.dumps({**config, "task": "bogus"}),
        "model_list": json.dumps({**config, "model": [1]}),
        "cell": json.dumps(_set(config, ("model", "cell"), {"a": 1})),
        "utf8": b'{"model": "\xff\xfe"}',
    }
    cases = []
    for name, text in edits.items():
        run = _copy_run(good, tmp_path / f"config_{name}")
        (run / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
        cases.append(("checkpoint", str(run)))
    for name, text in {"vocab_deep": "[" * 100_000, "vocab_ints": "[1, 2]", "vocab_utf8": b"\xff"}.items():
        run = _copy_run(good, tmp_path / name)
        (run / "vocab.json").write_bytes(text if isinstance(text, bytes) else text.encode())
        cases.append(("checkpoint", str(run)))
    weights = (good / "model.safetensors").read_bytes()
    for name, data in {
        "st_cut": weights[:40],
        "st_header": b"\xff" * 8 + weights[8:],
        "st_json": weights[:8] + b"{" + weights[9:],
        "st_size": (10**12).to_bytes(8, "little") + weights[8:],
    }.items():
        run = _copy_run(good, tmp_path / name)
        (run / "model.safetensors").write_bytes(data)
        cases.append(("checkpoint", str(run)))
    return cases


def resume_cases(tmp_path) -> list[tuple[str, str]]:
    """Corrupt and edited resume.safetensors beside a good run (KeyError, SafetensorError before)."""
    from safetensors.torch import save

    torch = pytest.importorskip("torch")
    cases = []
    for name, data in {
        "resume_garbage": b"\x00" * 64,
        "resume_no_state": save({"a": torch.zeros(1)}),
        "resume_bad_json": save({"a": torch.zeros(1)}, metadata={"state": "{" * 10}),
        "resume_empty_state": save({"a": torch.zeros(1)}, metadata={"state": "{}"}),
        "resume_list": save({"a": torch.zeros(1)}, metadata={"state": "[1]"}),
        "resume_deep": save({"a": torch.zeros(1)}, metadata={"state": "[" * 50_000 + "]" * 50_000}),
    }.items():
        run = tmp_path / name
        run.mkdir()
        (run / "resume.safetensors").write_bytes(data)
        cases.append(("resume", str(run)))
    return cases


def _copy_run(good, target):
    import shutil

    shutil.copytree(good, target)
    return target


@pytest.fixture(scope="module")
def limit_mib() -> int:
    return bounded_baseline_mib() + 768


def test_hostile_files_are_refused_cleanly_within_bounded_memory(tmp_path, token_model, limit_mib):
    cases = metadata_cases(tmp_path, token_model) + byte_cases(tmp_path, token_model)
    cases += run_dir_cases(tmp_path) + resume_cases(tmp_path)
    outcomes = run_bounded(cases, limit_mib)
    bad = {path.rsplit("/", 1)[-1]: o for path, o in outcomes.items() if o.startswith("other")}
    assert not bad, (
        f"{len(bad)} of {len(cases)} cases escaped the error contract: {dict(list(bad.items())[:8])}"
    )
    counts = {o: sum(v == o for v in outcomes.values()) for o in set(outcomes.values())}
    assert counts.get("ContractError", 0) > 150 and counts.get("InputError", 0) >= 20, counts
    # the sizes past the bounds, and the symbolic graph, are refused by the contract, not by luck
    for name in ("doc_hidden2**27", "doc_hidden2**30", "doc_vocab10m", "doc_states1m", "symbolic", "utf8"):
        assert outcomes[str(tmp_path / f"{name}.onnx")] == "ContractError", name
    for name in ("config_hidden1e6", "config_train_list", "config_bogus_task", "st_size"):
        assert outcomes[str(tmp_path / name)] == "InputError", name


def test_flipped_weight_bytes_never_load_silently(tmp_path, limit_mib):
    """Any single byte flipped inside the weights of a sealed file is refused (the checksum)."""
    from edgernn.export.exporter import seal
    from edgernn.runtime.contract import ModelInfo

    proto = _tiny_sealable()
    info: ModelInfo = contract.parse_info(
        {p.key: p.value for p in proto.metadata_props}[contract.METADATA_KEY]
    )
    content, _ = seal(proto, info)
    weights = np.eye(9, dtype=np.float32).tobytes()
    start = content.find(weights)
    assert start > 0
    rng = random.Random(7)
    cases = []
    for i in range(40):
        mutated = bytearray(content)
        mutated[start + rng.randrange(len(weights))] ^= 1 << rng.randrange(8)
        cases.append(("stepper", write(tmp_path / f"flip{i}.onnx", bytes(mutated))))
    outcomes = run_bounded(cases, limit_mib)
    assert set(outcomes.values()) == {"ContractError"}, outcomes


def _tiny_sealable():
    import onnx

    return onnx.load_from_string(
        symbolic_model(token_doc(hidden_size=6, num_layers=2), state_dims=["batch", 2, 6])
    )
