"""Graphs that ask for memory by themselves: refused before onnxruntime opens them (runtime/graph_bounds.py).

A dead ConstantOfShape of a constant 16384x16384 shape made every session allocate a gigabyte, at load and
at every step; the metadata bounds did not see it. Each hostile graph here is a real edgernn token model
with a few nodes added; the bombs run in a memory-bounded subprocess, so that a regression fails the test
instead of exhausting the machine.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from reliability_support import bounded_baseline_mib, run_bounded, write

from edgernn.runtime import Stepper, contract
from edgernn.runtime.errors import ContractError
from edgernn.runtime.graph_bounds import check_model_graph


def with_nodes(base: onnx.ModelProto, nodes: list, initializers: list = (), feed: str | None = None) -> bytes:
    """``base`` with ``nodes`` added; ``feed``: a tensor they make, added into ``y`` (0 * its sum) so that
    the nodes are live, as a model that uses what it allocates would be."""
    proto = onnx.ModelProto()
    proto.CopyFrom(base)
    graph = proto.graph
    if feed is not None:
        for node in graph.node:
            node.output[:] = ["y_inner" if o == contract.OUTPUT_NAME else o for o in node.output]
        nodes = [
            *nodes,
            helper.make_node("Cast", [feed], ["fed_f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["fed_f"], ["fed_sum"], keepdims=0),
            helper.make_node("Mul", ["fed_sum", "zero_f"], ["fed_zero"]),
            helper.make_node("Add", ["y_inner", "fed_zero"], [contract.OUTPUT_NAME]),
        ]
        initializers = [*initializers, numpy_helper.from_array(np.array(0.0, np.float32), "zero_f")]
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
    return proto.SerializeToString()


def ints(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def floats(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.float32), name)


def hostile_cases() -> dict[str, tuple[list, list, str | None, str]]:
    """name -> (nodes, initializers, tensor fed into y or None (dead), message fragment)."""
    big = [16384, 16384]
    cos = helper.make_node("ConstantOfShape", ["big_shape"], ["made"])
    return {
        "dead_constant_of_shape": ([cos], [ints("big_shape", big)], None, "feeds no output"),
        "dead_65536": ([cos], [ints("big_shape", [65536, 65536])], None, "4,294,967,296 elements"),
        "dead_small_node": ([helper.make_node("Relu", ["x_f"], ["made"]),
                             helper.make_node("Cast", ["x"], ["x_f"], to=TensorProto.FLOAT)], [], None,
                            "'made' (Relu): feeds no output"),
        "live_constant_of_shape": ([cos], [ints("big_shape", big)], "made", "268,435,456 elements"),
        "expand": ([helper.make_node("Expand", ["one", "big_shape"], ["made"])],
                   [floats("one", [1.0]), ints("big_shape", big)], "made", "(Expand): makes 268,435,456"),
        "tile": ([helper.make_node("Tile", ["one2", "big_shape"], ["made"])],
                 [floats("one2", [[1.0]]), ints("big_shape", big)], "made", "(Tile): makes 268,435,456"),
        "range": ([helper.make_node("Range", ["r0", "r1", "r2"], ["made"])],
                  [floats("r0", 0.0), floats("r1", 2e9), floats("r2", 1.0)], "made", "(Range): makes 2,000,000,000"),
        "shape_computed_from_constants": (
            [helper.make_node("Constant", [], ["c128"], value_ints=[128, 128]),
             helper.make_node("Mul", ["c128", "c128"], ["c16384"]),
             helper.make_node("ConstantOfShape", ["c16384"], ["made"])], [], "made", "268,435,456 elements"),
        "shape_an_op_hides": (
            [helper.make_node("Constant", [], ["c2"], value_ints=[2, 2]),
             helper.make_node("BitShift", ["c2", "c14"], ["hidden"], direction="LEFT"),
             helper.make_node("ConstantOfShape", ["hidden"], ["made"])],
            [numpy_helper.from_array(np.array([14, 14], np.uint64), "c14")], "made", "cannot be bounded"),
        "one_hot": ([helper.make_node("OneHot", ["x", "depth", "onoff"], ["made"])],
                    [ints("depth", [1 << 30]), floats("onoff", [0.0, 1.0])], "made", "(OneHot): makes 1,073,741,824"),
        "pad": ([helper.make_node("Pad", ["one2", "pads"], ["made"])],
                [floats("one2", [[1.0]]), ints("pads", [0, 0, 16384, 16384])], "made", "(Pad): makes"),
        "outer_product": ([helper.make_node("Mul", ["column", "row"], ["made"])],
                          [floats("column", np.ones((16384, 1))), floats("row", np.ones((1, 16384)))], "made",
                          "(Mul): makes a tensor of at least 268,435,456 elements"),
        "matmul_of_constants": ([helper.make_node("MatMul", ["column", "row"], ["made"])],
                                [floats("column", np.ones((16384, 1))), floats("row", np.ones((1, 16384)))],
                                "made", "(MatMul): makes a tensor of at least 268,435,456"),
        "broadcast_through_the_data": (
            [helper.make_node("Cast", ["x"], ["x_f"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["x_f", "column"], ["wide"]),
             helper.make_node("Mul", ["wide", "row"], ["made"])],
            [floats("column", np.ones((16384, 1))), floats("row", np.ones((1, 16384)))], "made",
            "'made' (Mul): makes a tensor of at least 268,435,456"),
        "sparse_constant": (
            [helper.make_node("Constant", [], ["made"], sparse_value=helper.make_sparse_tensor(
                floats("v", [1.0]), ints("i", [0]), [1 << 20, 1 << 10]))], [], "made", "once made dense"),
    }  # fmt: skip


@pytest.fixture(scope="module")
def hostile_files(token_model, tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("hostile_graphs")
    return {
        name: write(folder / f"{name}.onnx", with_nodes(token_model.proto, nodes, inits, feed))
        for name, (nodes, inits, feed, _) in hostile_cases().items()
    }


def test_graphs_that_allocate_past_the_bounds_are_refused_before_a_session_opens(hostile_files):
    limit_mib = bounded_baseline_mib() + 512  # a gigabyte tensor does not fit: before, these died here
    outcomes = run_bounded([("stepper", path) for path in hostile_files.values()], limit_mib)
    assert {name: outcomes[path] for name, path in hostile_files.items()} == dict.fromkeys(
        hostile_files, "ContractError"
    )


def test_an_ort_format_file_is_checked_as_its_onnx_source_is(hostile_files, tmp_path):
    """A OneHot of depth 2^30 on the token input survives onnxruntime's conversion (nothing to fold) and
    allocated 4 GiB a step from the .ort file, which the check used to pass unread."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    source = tmp_path / "onnx"
    source.mkdir()
    (source / "one_hot.onnx").write_bytes(Path(hostile_files["one_hot"]).read_bytes())
    with contextlib.redirect_stdout(io.StringIO()):
        convert_onnx_models_to_ort(
            source, output_dir=tmp_path / "ort", optimization_styles=[OptimizationStyle.Runtime]
        )
    converted = str(tmp_path / "ort" / "one_hot.with_runtime_opt.ort")
    limit_mib = bounded_baseline_mib() + 512
    assert run_bounded([("stepper", converted)], limit_mib) == {converted: "ContractError"}
    with pytest.raises(ContractError, match=r"\(OneHot\): makes 1,073,741,824 elements"):
        check_model_graph(Path(converted).read_bytes(), converted)


@pytest.mark.parametrize("name", [n for n in hostile_cases() if n != "dead_65536"])
def test_each_refusal_names_the_node_and_the_bound(hostile_files, name):
    data = Path(hostile_files[name]).read_bytes()
    with pytest.raises(ContractError) as err:
        check_model_graph(data, hostile_files[name])
    message = str(err.value)
    assert hostile_cases()[name][3] in message and hostile_files[name] in message and len(message) < 1500


def test_the_65536_bomb_is_refused_in_milliseconds_whatever_it_would_cost(hostile_files):
    with pytest.raises(ContractError, match="(?s)4,294,967,296 elements.*feeds no output"):
        Stepper(hostile_files["dead_65536"], chunk_model=False)


def test_a_shape_taken_from_the_data_is_not_refused(foreign_model, tmp_path):
    """Zeros the size of the state, made from its Shape at every step: a pattern exporters write, whose size
    the stepper's input checks bound. The foreign model keeps loading and stepping as before."""
    nodes = [
        helper.make_node("Shape", ["state"], ["state_shape"]),
        helper.make_node("ConstantOfShape", ["state_shape"], ["zeros"]),
        helper.make_node("Add", ["state_next_inner", "zeros"], ["stateN"]),
    ]
    proto = onnx.ModelProto()
    proto.CopyFrom(foreign_model.proto)
    for node in proto.graph.node:
        node.output[:] = ["state_next_inner" if o == "stateN" else o for o in node.output]
    proto.graph.node.extend(nodes)
    path = tmp_path / "zeros.onnx"
    path.write_bytes(proto.SerializeToString())
    stepper = Stepper(path, state_map=foreign_model.state_map, constants={"sr": 16000})
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    expected, _ = foreign_model.step(x, np.zeros((2, 1, 16), np.float32), 16000)
    np.testing.assert_allclose(stepper.step(x[0]), expected[0], atol=1e-6)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda g: g.node[0].input.__setitem__(0, "nowhere"), "input 'nowhere' is defined nowhere"),
        (lambda g: g.output.add(name="missing"), "output 'missing': expected a value the graph makes"),
    ],
)
def test_malformed_graphs_are_named_before_onnxruntime_sees_them(token_model, edit, message):
    proto = onnx.ModelProto()
    proto.CopyFrom(token_model.proto)
    edit(proto.graph)
    with pytest.raises(ContractError, match=message):
        Stepper(proto.SerializeToString(), chunk_model=False)


def test_a_cycle_is_named(token_model):
    proto = onnx.ModelProto()
    proto.CopyFrom(token_model.proto)
    proto.graph.node.extend(
        [
            helper.make_node("Relu", ["loop_b"], ["loop_a"]),
            helper.make_node("Relu", ["loop_a"], ["loop_b"]),
        ]
    )
    with pytest.raises(ContractError, match=r"a cycle: 2 node\(s\) wait on each other"):
        check_model_graph(proto.SerializeToString())
