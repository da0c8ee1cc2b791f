"""The C target against hostile model files: generated code trusts the graph's shapes, never the metadata's
words; constant folding and the generated code are bounded before anything is allocated; scratch and state
beyond a stated bound are refused at deploy; a malformed graph or string table is one line, exit 2, before
any C is written; a crashing self-test says its signal. Graphs are built here with onnx.helper (a few kB)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
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


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_token_bound_and_self_test_under_address_and_undefined_sanitizers(tmp_path, precision):
    """The token check is the embedding's row count, compiled with ASan and UBSan: in-range tokens step,
    every other one returns MODEL_ERR_TOKEN with the state untouched, and the self-test passes clean."""
    flags = sanitizer_flags()
    path = saved(step_model(rows=65), tmp_path / "char.onnx")
    report = deploy(path, "c", tmp_path / "c", skip_verify=True, precision=precision)
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


# --- 17.3: folded constants and generated code bounded before anything is allocated ---------------------

BOUNDED_RUNNER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from edgernn.export.c import generate_sources
from edgernn.runtime.errors import ContractError, InputError
try:
    generate_sources(sys.argv[1])
    print("ok")
except (ContractError, InputError) as exc:
    print(type(exc).__name__ + ": " + str(exc))
except BaseException as exc:
    print("other: " + type(exc).__name__ + ": " + str(exc)[:300])
"""


def generate_bounded(path: Path) -> str:
    """generate_sources(path) in a fresh Python limited to 3 GiB of address space: its outcome line."""
    done = subprocess.run(
        [sys.executable, "-c", BOUNDED_RUNNER, str(path)], capture_output=True, text=True, timeout=120
    )
    return (done.stdout.strip().splitlines() or [f"died: {done.returncode} {done.stderr[-300:]}"])[-1]


def _const(name: str, value) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def _with(*extra_nodes: onnx.NodeProto):
    def edit(nodes, inits):
        return [*extra_nodes, *nodes], inits

    return edit


BOMBS = {
    "dead ConstantOfShape 65536 x 65536": _with(
        _const("big", np.array([65536, 65536], np.int64)), helper.make_node("ConstantOfShape", ["big"], ["z"])
    ),
    "Range of 2e9": _with(
        _const("r0", np.array(0, np.int64)),
        _const("r1", np.array(2_000_000_000, np.int64)),
        _const("r2", np.array(1, np.int64)),
        helper.make_node("Range", ["r0", "r1", "r2"], ["r"]),
    ),  # fmt: skip
    "Expand of a scalar to 1e9": _with(
        _const("one", np.array(1.0, np.float32)),
        _const("wide", np.array([1_000_000_000], np.int64)),
        helper.make_node("Expand", ["one", "wide"], ["ones"]),
    ),  # fmt: skip
    "outer product of two constants": _with(
        _const("tall", np.array([100_000, 1], np.int64)),
        _const("long", np.array([1, 100_000], np.int64)),
        helper.make_node("ConstantOfShape", ["tall"], ["col"]),
        helper.make_node("ConstantOfShape", ["long"], ["row"]),
        helper.make_node("MatMul", ["col", "row"], ["outer"]),
    ),  # fmt: skip
    "run-time Expand of x to 1e8": _with(
        _const("rows", np.array([100_000_000 // FEATURES, FEATURES], np.int64)),
        helper.make_node("Expand", ["x", "rows"], ["x_wide"]),
    ),  # fmt: skip
    "state expanded to 1e8": _with(
        _const("state_wide", np.array([25_000_000, 1, HIDDEN], np.int64)),
        helper.make_node("Expand", ["h", "state_wide"], ["h_wide"]),
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", BOMBS)
def test_constants_and_tensors_past_the_declared_sizes_are_refused_before_allocating(tmp_path, case):
    """Each file is a few hundred bytes; each used to ask numpy for gigabytes (a MemoryError traceback, or
    the machine's memory): now one ContractError naming the node and the bound, in a 3 GiB process."""
    path = saved(step_model(tokens=False, edit=BOMBS[case]), tmp_path / "bomb.onnx")
    assert path.stat().st_size < 2_000
    outcome = generate_bounded(path)
    assert outcome.startswith("ContractError: node ") and "bound a tensor to 1,048,576" in outcome, outcome
    deploy_refused(path, tmp_path, triton=False)  # deploy may refuse the dead node first


def scattered_gather(count: int, used: bool):
    """x (1, 3) gathered by ``count`` scattered indices (7919 i mod 3, int32); used: the gathered values go
    through a (count, 4) product into the state's update, else the node is dead."""

    def edit(nodes, inits):
        inits = {**inits, "picks": (np.arange(count) * 7919 % FEATURES).astype(np.int32)}
        gathered = [helper.make_node("Gather", ["x", "picks"], ["x_picked"], axis=1)]
        if used:
            rng = np.random.default_rng(1)
            inits["G"] = (rng.standard_normal((count, HIDDEN)) * 0.1).astype(np.float32)
            gathered += [
                helper.make_node("MatMul", ["x_picked", "G"], ["g"]),
                helper.make_node("Add", ["p", "g"], ["p_g"]),
            ]
            nodes = [
                helper.make_node("Add", ["p_g", "q"], ["pre"]) if n.output[0] == "pre" else n for n in nodes
            ]
        return [*nodes[:1], *gathered, *nodes[1:]], inits

    return edit


def test_a_gather_by_scattered_indices_is_a_table_and_a_loop(tmp_path):
    """10,000 scattered indices used to be 10,000 statements (so a 1 kB file that computes its indices
    made a 61 MB model.c); now one loop over a table of them, and a used one (80 indices) matches the
    onnxruntime stepper."""
    path = saved(step_model(tokens=False, edit=scattered_gather(10_000, used=False)), tmp_path / "wide.onnx")
    source = generate_sources(path).files["model.c"]
    assert "Gather by 10000 constant indices" in source
    assert source.count(";\n") < 200 and len(source) < 100_000, (source.count(";\n"), len(source))
    path = saved(step_model(tokens=False, edit=scattered_gather(80, used=True)), tmp_path / "used.onnx")
    report = deploy(path, "c", tmp_path / "c")
    assert report.details["verified"] and report.details["max_abs_error"] < 1e-5
    assert "Gather by 80 constant indices" in (tmp_path / "c" / "model.c").read_text()


# --- 17.4: state and scratch bounded at deploy; a crashing self-test names its signal -------------------


def big_state_model(layers: int, hidden: int) -> onnx.ModelProto:
    """Features 3 -> y (2); a (layers, hidden) state halved every step: its scratch is the state's size."""
    info = contract.make_info(
        cell="rnn_tanh", num_layers=layers, hidden_size=hidden,
        input=InputSpec(kind="features", size=FEATURES, dtype="float32"), output=OutputSpec(kind="values", size=2),
        edgernn_version="test",
    )  # fmt: skip
    inits = [
        numpy_helper.from_array(np.ones((FEATURES, 2), np.float32), "W"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["y"]),
        helper.make_node("Mul", ["h", "half"], ["h_next"]),
    ]
    graph = helper.make_graph(
        nodes,
        "big_state",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", layers, hidden]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("h_next", TensorProto.FLOAT, ["batch", layers, hidden]),
        ],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", contract.OPSET)])
    proto.ir_version = contract.IR_VERSION
    helper.set_model_props(proto, {contract.METADATA_KEY: info.to_json()})
    return proto


def test_state_and_scratch_beyond_their_bounds_are_refused_and_options_raise_them(tmp_path):
    """A 64 x 65,536 state (16 MiB, and as much scratch) used to deploy and crash its self-test with an
    empty reason; now one line naming the bound and the option that raises it."""
    path = saved(big_state_model(64, 65536), tmp_path / "big.onnx")
    with pytest.raises(ContractError, match=r"the state takes 16,777,216 bytes.*--max-state-bytes"):
        generate_sources(path)
    assert_one_line_exit_2(
        run_cli("deploy", path, "--target", "c", "-o", tmp_path / "c"), "--max-state-bytes", "1,048,576"
    )
    path = saved(big_state_model(2, 65536), tmp_path / "wide.onnx")  # 512 KiB state, 512 KiB scratch
    with pytest.raises(
        ContractError, match=r"a step.s scratch on the stack takes 524,[0-9]{3} bytes.*--max-scr"
    ):
        generate_sources(path, max_scratch_bytes=256 * 1024)
    result = run_cli(
        "deploy", path, "--target", "c", "-o", tmp_path / "raised", "--no-verify", "--max-state-bytes",
        16 << 20, "--max-scratch-bytes", 16 << 20,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "#define MODEL_STATE_FLOATS  131072\n" in (tmp_path / "raised" / "model.h").read_text()
    assert_one_line_exit_2(
        run_cli("deploy", path, "--target", "c", "-o", tmp_path / "zero", "--max-state-bytes", 0),
        "--max-state-bytes",
    )


CRASHING = r"""
#include <signal.h>
#include <stdio.h>
int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, BUFSIZ);
    printf("step 0 ok\nstep 1 ok\n");
    raise(SIGSEGV);
    printf("PASS\n");
    return 0;
}
"""


def test_a_crashing_self_test_is_reported_with_its_signal_and_output(tmp_path):
    (tmp_path / "crash.c").write_text(CRASHING)
    built = subprocess.run([CC, str(tmp_path / "crash.c"), "-o", str(tmp_path / "crash")], check=False)
    assert built.returncode == 0
    result = run_self_test(tmp_path / "crash")
    assert not result.passed
    lines = result.output.strip().splitlines()
    assert lines[:2] == ["step 0 ok", "step 1 ok"]
    assert (
        lines[-1] == f"the self-test was killed by signal {int(signal.SIGSEGV)} (SIGSEGV, Segmentation fault)"
    )
    source = deploy(saved(step_model(), tmp_path / "m.onnx"), "c", tmp_path / "c", skip_verify=True)
    test_c = (source.out_dir / "model_test.c").read_text()
    assert "setvbuf(stdout, NULL, _IOLBF, BUFSIZ);" in test_c and "static model_state st, before;" in test_c


# --- 17.9, 17.13: malformed graphs and string tables, one line before any C -----------------------------


def _rename_input(node_output: str, position: int, to: str):
    """Node writing ``node_output`` reads ``to`` as its input ``position`` instead."""

    def edit(nodes, inits):
        changed = []
        for n in nodes:
            if n.output[0] == node_output:
                inputs = list(n.input)
                inputs[position] = to
                attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
                n = helper.make_node(n.op_type, inputs, list(n.output), **attrs)
            changed.append(n)
        return changed, inits

    return edit


def _drop(node_output: str):
    return lambda nodes, inits: ([n for n in nodes if n.output[0] != node_output], inits)


def _layer_norm_axis_7(nodes, inits):
    inits = {**inits, "ln_scale": np.ones(HIDDEN, np.float32)}
    norm = helper.make_node("LayerNormalization", ["p", "ln_scale"], ["p_norm"], axis=7)
    nodes = [helper.make_node("Add", ["p_norm", "q"], ["pre"]) if n.output[0] == "pre" else n for n in nodes]
    return [*nodes[:1], norm, *nodes[1:]], inits


MALFORMED = {
    "dangling input": (
        _rename_input("q", 0, "nowhere"),
        "reads 'nowhere', which no input, initializer or node",
    ),
    "cyclic edge": (_rename_input("p", 0, "hn"), "reads 'hn' before node"),
    "undefined output": (_drop("y"), "does not compute its output 'y'"),
    "LayerNormalization axis=7": (_layer_norm_axis_7, "axis 7 of a tensor of rank 2"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_graphs_are_one_line_before_any_c(tmp_path, case):
    edit, fragment = MALFORMED[case]
    path = saved(step_model(tokens=False, edit=edit), tmp_path / "bad.onnx")
    with pytest.raises(ContractError, match=re.escape(fragment)):
        generate_sources(path)
    deploy_refused(path, tmp_path)  # deploy may refuse the graph before the C target sees it


STRINGS = {
    "lone surrogate in the vocabulary": (
        dict(vocabulary=tuple(chr(97 + i % 26) * (1 + i // 26) for i in range(64)) + ("\ud800",)),
        "metadata 'vocabulary': entry 64 is not valid Unicode",
    ),
    "lone surrogate in a class name": (
        dict(tokens=False, extra={"classes": ["calm", "\ud800"]}),
        "metadata 'classes': entry 1 is not valid Unicode",
    ),
    "NUL inside a class name": (
        dict(tokens=False, extra={"classes": ["calm", "alarm\0ing"]}),
        "metadata 'classes': entry 1 holds a NUL character",
    ),
}


@pytest.mark.parametrize("case", STRINGS)
def test_string_tables_the_c_cannot_carry_are_refused(tmp_path, case):
    """A lone surrogate was a UnicodeEncodeError traceback (C and Triton C flavour); a NUL silently
    truncated the name in the C table."""
    options, fragment = STRINGS[case]
    path = saved(step_model(**options), tmp_path / "strings.onnx")
    with pytest.raises(ContractError, match=re.escape(fragment)):
        generate_sources(path)
    deploy_refused(path, tmp_path, fragment)


def test_metadata_text_stays_bytes_in_the_c(tmp_path):
    """Quotes, backslashes, newlines, comment ends, trigraphs and #include in names are written byte-exact
    as escapes: text never becomes code."""
    hostile = ['a"b', "c\\d", "e\nf", "*/ int x; /*", "??=", "#include <stdlib.h>"]
    path = saved(step_model(tokens=False, outputs=6, extra={"classes": hostile}), tmp_path / "m.onnx")
    report = deploy(path, "c", tmp_path / "c")
    assert report.details["verified"]
    source = (tmp_path / "c" / "model.c").read_text()
    assert not any(line.startswith("#include <stdlib") for line in source.splitlines())
    assert "??=" not in source  # '?' is always an escape: no trigraph
    (tmp_path / "names.c").write_text(
        '#include "model.h"\n#include <stdio.h>\n'
        'int main(void) { for (int i = 0; i < MODEL_NUM_CLASSES; i++) printf("%s|", model_classes[i]); '
        "return 0; }\n"
    )
    exe = tmp_path / "names"
    built = subprocess.run(
        [CC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-trigraphs", "-I", str(tmp_path / "c"), str(tmp_path / "c" / "model.c"), str(tmp_path / "names.c"),
         "-o", str(exe), "-lm"], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    printed = subprocess.run([str(exe)], capture_output=True, check=True).stdout
    assert printed == "|".join(hostile).encode() + b"|"


def test_a_constant_output_compiles(tmp_path):
    """y computed by no run-time op (a Constant): its array is written with the others, not after them."""

    def constant_y(nodes, inits):
        y = numpy_helper.from_array(np.array([[1.5, -2.0]], np.float32), "y")
        return [
            *(n for n in nodes if n.output[0] != "y"),
            helper.make_node("Constant", [], ["y"], value=y),
        ], inits

    sources = generate_sources(saved(step_model(tokens=False, edit=constant_y), tmp_path / "m.onnx"))
    (tmp_path / "model.c").write_text(sources.files["model.c"])
    (tmp_path / "model.h").write_text(sources.files["model.h"])
    built = subprocess.run(
        [CC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", str(tmp_path / "model.c"), "-o",
         str(tmp_path / "model.o")], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
