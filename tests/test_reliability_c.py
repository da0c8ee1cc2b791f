"""The C target against hostile model files: generated code trusts the graph's shapes, never the metadata's
words; constant folding and the generated code are bounded before anything is allocated; scratch and state
beyond a stated bound are refused at deploy; a malformed graph or string table is one line, exit 2, before
any C is written; a crashing self-test says its signal. Graphs are built here with onnx.helper (a few kB)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgernn.cli import cli
from edgernn.export.c import generate_sources
from edgernn.export.c.build import run_self_test
from edgernn.export.deploy import deploy
from edgernn.runtime import contract
from edgernn.runtime.contract import InputSpec, OutputSpec
from edgernn.runtime.errors import ContractError

CC = shutil.which("cc") or shutil.which("gcc")
if CC is None:
    if os.environ.get("CI") == "true":
        pytest.fail("the C target tests need a C compiler (Debian package gcc)", pytrace=False)
    pytest.skip("no C compiler: install the Debian package gcc", allow_module_level=True)

HIDDEN = 4
FEATURES = 3


def step_model(
    *,
    tokens: bool = True,
    rows: int = 65,
    vocab: int | None = None,
    outputs: int | None = None,
    extra: dict | None = None,
    vocabulary: tuple[str, ...] | None = None,
    state_shape: tuple[int, ...] = (1, HIDDEN),
    edit=None,
) -> onnx.ModelProto:
    """A one-layer tanh RNN step graph (features 3 or tokens through a ``rows`` x 4 embedding), with
    metadata saying what the arguments say; ``edit(nodes, inits) -> (nodes, inits)`` makes it hostile."""
    rng = np.random.default_rng(0)
    outputs = outputs or (rows if tokens else 2)
    inits = {
        "U": (rng.standard_normal((HIDDEN, HIDDEN)) * 0.5).astype(np.float32),
        "V": rng.standard_normal((HIDDEN, outputs)).astype(np.float32),
        "flat": np.array([-1, HIDDEN], np.int64),
        "stacked": np.array([-1, *state_shape], np.int64),
    }
    n = helper.make_node
    if tokens:
        inits["E"] = rng.standard_normal((rows, HIDDEN)).astype(np.float32)
        inits["W"] = (rng.standard_normal((HIDDEN, HIDDEN)) * 0.5).astype(np.float32)
        nodes = [n("Gather", ["E", "x"], ["e"], axis=0), n("MatMul", ["e", "W"], ["p"])]
        x = helper.make_tensor_value_info("x", TensorProto.INT64, ["batch"])
        spec = InputSpec(kind="tokens", size=vocab or rows, dtype="int64", vocabulary=vocabulary)
    else:
        inits["W"] = rng.standard_normal((FEATURES, HIDDEN)).astype(np.float32)
        nodes = [n("MatMul", ["x", "W"], ["p"])]
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])
        spec = InputSpec(kind="features", size=FEATURES, dtype="float32")
    nodes += [
        n("Reshape", ["h", "flat"], ["h2"]),
        n("MatMul", ["h2", "U"], ["q"]),
        n("Add", ["p", "q"], ["pre"]),
        n("Tanh", ["pre"], ["hn"]),
        n("MatMul", ["hn", "V"], ["y"]),
        n("Reshape", ["hn", "stacked"], ["h_next"]),
    ]
    if edit is not None:
        nodes, inits = edit(nodes, inits)
    doc = contract.make_info(
        cell="rnn_tanh", num_layers=1, hidden_size=HIDDEN, input=spec,
        output=OutputSpec(kind="logits" if tokens else "values", size=outputs), edgernn_version="test",
        extra=extra,
    )  # fmt: skip
    text = doc.to_json()
    if state_shape != (1, HIDDEN):  # metadata written as a hostile file would, past the writer's checks
        text = text.replace(f'"shape":[1,{HIDDEN}]', f'"shape":{list(state_shape)}'.replace(" ", ""))
    graph = helper.make_graph(
        nodes,
        "step",
        [x, helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", *state_shape])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs]),
            helper.make_tensor_value_info("h_next", TensorProto.FLOAT, ["batch", *state_shape]),
        ],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", contract.OPSET)])
    proto.ir_version = contract.IR_VERSION
    helper.set_model_props(proto, {contract.METADATA_KEY: text})
    return proto


def saved(proto: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(proto.SerializeToString())
    return path


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_exit_2(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def deploy_refused(path: Path, tmp_path: Path, *fragments: str, triton: bool = True) -> None:
    """deploy --target c refuses ``path`` in one line, exit 2, naming ``fragments`` and writing nothing;
    so does the Triton C flavour (in its own words where onnxruntime refuses the file first)."""
    out = tmp_path / "out_c"
    assert_one_line_exit_2(run_cli("deploy", path, "--target", "c", "--no-verify", "-o", out), *fragments)
    assert not out.exists()
    if triton:
        out = tmp_path / "out_triton"
        assert_one_line_exit_2(run_cli("deploy", path, "--target", "triton", "--backend", "c", "-o", out))
        assert not out.exists()


# --- 17.1: bounds from the graph, metadata that disagrees with it refused ------------------------------


@pytest.mark.parametrize("vocab", [100_000, 64])
def test_a_vocabulary_other_than_the_embedding_rows_is_refused(tmp_path, vocab):
    """The metadata says 100,000 tokens (or 64), the embedding table has 65 rows: token 99,999 would
    read past the table in the C (and in the Triton C flavour's VNNI build)."""
    path = saved(step_model(rows=65, vocab=vocab), tmp_path / "vocab.onnx")
    with pytest.raises(ContractError, match=f"vocabulary of {vocab:,} tokens.*65 rows"):
        generate_sources(path)
    deploy_refused(path, tmp_path, f"vocabulary of {vocab:,} tokens", "65 rows")


@pytest.mark.parametrize(
    "tokens, key, count, fragment",
    [
        (False, "classes", 3, "'classes' names 3"),
        (False, "targets", 5, "'targets' names 5"),
        (False, "columns", 2, "'columns' names 2"),
    ],
)
def test_string_tables_that_disagree_with_the_graph_are_refused(tmp_path, tokens, key, count, fragment):
    path = saved(step_model(tokens=tokens, extra={key: [f"n{i}" for i in range(count)]}), tmp_path / "m.onnx")
    with pytest.raises(ContractError, match=fragment):
        generate_sources(path)


def sanitizer_flags() -> list[str]:
    """-fsanitize=address,undefined where the compiler links it (else the test skips, or fails in CI)."""
    flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
    probe = subprocess.run(
        [CC, *flags, "-x", "c", "-", "-o", os.devnull], input="int main(void){return 0;}", text=True,
        capture_output=True, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the compiler cannot link -fsanitize=address,undefined (Debian package gcc)")
        pytest.skip("the compiler cannot link -fsanitize=address,undefined: install the Debian package gcc")
    return flags


DRIVER = """
#include "model.h"
#include <stdint.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
    static const int32_t tokens[] = {0, 64, 65, 99999, -1, INT32_MAX, INT32_MIN};
    model_state st, before;
    float y[MODEL_OUTPUT_SIZE];
    model_reset(&st);
    for (unsigned i = 0; i < sizeof tokens / sizeof tokens[0]; i++) {
        memcpy(&before, &st, sizeof st);
        const int rc = model_step_token(&st, tokens[i], y);
        printf("%d:%d:%d\\n", (int)tokens[i], rc, rc == 0 || memcmp(&before, &st, sizeof st) == 0);
    }
    return 0;
}
"""


def test_token_bound_and_self_test_under_address_and_undefined_sanitizers(tmp_path):
    """The token check is the embedding's row count, compiled with ASan and UBSan: in-range tokens step,
    every other one returns MODEL_ERR_TOKEN with the state untouched, and the self-test passes clean."""
    flags = sanitizer_flags()
    report = deploy(saved(step_model(rows=65), tmp_path / "char.onnx"), "c", tmp_path / "c", skip_verify=True)
    out = report.out_dir
    assert "#define MODEL_VOCAB_SIZE    65\n" in (out / "model.h").read_text()
    (tmp_path / "driver.c").write_text(DRIVER)
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0"}
    for program, sources in (("driver", [tmp_path / "driver.c"]), ("selftest", [out / "model_test.c"])):
        built = subprocess.run(
            [CC, "-std=c99", "-O1", *flags, "-I", str(out), str(out / "model.c"), *map(str, sources),
             "-o", str(tmp_path / program), "-lm"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert built.returncode == 0, built.stderr
        ran = subprocess.run([str(tmp_path / program)], capture_output=True, text=True, env=env, timeout=120)
        assert ran.returncode == 0 and "runtime error" not in ran.stderr, ran.stderr[-2000:]
        if program == "driver":
            results = [line.split(":") for line in ran.stdout.split()]
            assert [(t, rc) for t, rc, _ in results] == [
                ("0", "0"), ("64", "0"), ("65", "1"), ("99999", "1"), ("-1", "1"), ("2147483647", "1"),
                ("-2147483648", "1"),
            ]  # fmt: skip
            assert all(kept == "1" for *_, kept in results)
        else:
            assert ran.stdout.strip().endswith("PASS"), ran.stdout[-2000:]
