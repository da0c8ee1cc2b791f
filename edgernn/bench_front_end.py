"""The front end alone, for ``edgernn bench`` on a model that has one in its step (a keyword model): a
model with the same inputs, outputs and metadata whose graph keeps only the nodes that the front end's
output (the log-mel frame) and its states (``audio``, any its own nodes write) need; the other states pass
through and y is the frame's sum times zeros (one tiny op, as the floor's). Stepped through the same call path as the model and
the floor, interleaved with them, it gives the front end's share of a step on this machine:
(front end - floor) / (stepper - floor)."""

from __future__ import annotations

import os

import numpy as np

from edgernn.runtime.contract import AUDIO_STATE, METADATA_KEY, OUTPUT_NAME, parse_info, unsealed

FRONT_END_PREFIX = "frontend"  # the names of a keyword model's front-end nodes start with it (export.keyword)


def front_end_model(path: str | os.PathLike) -> bytes | None:
    """The front end alone as a model (see the module docstring); None when the model has none."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in props:
        return None
    info = parse_info(props[METADATA_KEY])
    front = [node for node in proto.graph.node if node.name.startswith(FRONT_END_PREFIX)]
    audio = [spec for spec in info.states if spec.input == AUDIO_STATE[0]]
    if not front or not audio or not front[-1].output:
        return None
    producers = {out: index for index, node in enumerate(proto.graph.node) for out in node.output}
    features = front[-1].output[0]
    own = [  # the states the front end carries: the audio, any its own nodes write
        spec.output
        for spec in info.states
        if spec is audio[0]
        or (
            spec.output in producers
            and proto.graph.node[producers[spec.output]].name.startswith(FRONT_END_PREFIX)
        )
    ]
    kept, pending = set(), [features, *own]
    while pending:
        index = producers.get(pending.pop())
        if index is not None and index not in kept:
            kept.add(index)
            pending.extend(name for name in proto.graph.node[index].input if name)
    nodes = [node for index, node in enumerate(proto.graph.node) if index in kept]
    read = {name for node in nodes for name in node.input}
    initializers = [init for init in proto.graph.initializer if init.name in read]
    written = {out for node in nodes for out in node.output}
    for spec in info.states:
        if spec.output not in written:  # the recurrent state passes through
            nodes.append(helper.make_node("Identity", [spec.input], [spec.output]))
    initializers += [
        numpy_helper.from_array(np.array([1], np.int64), "front_end_alone.axes"),
        numpy_helper.from_array(np.zeros((1, info.output.size), np.float32), "front_end_alone.zeros"),
    ]
    nodes += [
        helper.make_node(
            "ReduceSum", [features, "front_end_alone.axes"], ["front_end_alone.sum"], keepdims=1
        ),
        helper.make_node("Mul", ["front_end_alone.sum", "front_end_alone.zeros"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(nodes, "front_end", proto.graph.input, proto.graph.output, initializers)
    model = helper.make_model(graph, opset_imports=proto.opset_import, ir_version=proto.ir_version)
    props[METADATA_KEY] = unsealed(info).to_json()  # another graph: the checksum is not its own
    helper.set_model_props(model, props)
    return model.SerializeToString()
