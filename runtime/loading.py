"""Opening a model as a ``Graph``: edgernn models checked against their metadata, others via ``foreign``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from edgernn.runtime import contract
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.errors import ContractError, InputError
from edgernn.runtime.foreign import foreign_graph, state_map_needed
from edgernn.runtime.graph import Graph, StateSlot
from edgernn.runtime.inputs import DataInput, onnx_dtype, shape_text
from edgernn.runtime.session import read_info


def load_graph(
    session: ort.InferenceSession,
    state_map: Mapping[str, str] | None,
    constants: Mapping[str, Any] | None,
    state_shapes: Mapping[str, Sequence[int | str | None]] | None,
    source: object = "the model",
    data_shape: Sequence[int | str | None] | None = None,
) -> Graph:
    info = read_info(session, source)
    if info is not None:
        _refuse_foreign_arguments(
            state_map=state_map, constants=constants, state_shapes=state_shapes, data_shape=data_shape
        )
        return edgernn_graph(session, info)
    if not state_map:
        raise state_map_needed(session)
    return foreign_graph(session, state_map, constants or {}, state_shapes or {}, data_shape)


def _refuse_foreign_arguments(**arguments: object) -> None:
    given = [name for name, value in arguments.items() if value]
    if given:
        raise InputError(
            f"{', '.join(given)}: only for models without edgernn metadata; this one describes itself"
        )


def edgernn_graph(session: ort.InferenceSession, info: ModelInfo) -> Graph:
    if info.steps_per_call != 1:
        raise ContractError(
            f"this is a chunk graph ({info.steps_per_call} steps per call), which Stepper.run uses; "
            "open the step model it was exported with (model.onnx for model.chunk.onnx)"
        )
    expected_inputs, expected_outputs = _contract_io(info)
    problems = _io_problems("input", expected_inputs, session.get_inputs())
    problems += _io_problems("output", expected_outputs, session.get_outputs())
    if problems:
        raise ContractError("the graph does not match its edgernn metadata:\n  - " + "\n  - ".join(problems))
    x_dtype, x_shape = expected_inputs[contract.INPUT_NAME]
    vocab_size = info.input.size if info.input.kind == "tokens" else None
    data = DataInput(contract.INPUT_NAME, x_dtype, x_shape, vocab_size)
    states = tuple(
        StateSlot(s.input, s.output, (None, *s.shape), np.dtype(s.dtype), s.initial) for s in info.states
    )
    return Graph(session, info, data, states, (contract.OUTPUT_NAME,), {})


def _contract_io(info: ModelInfo) -> tuple[dict, dict]:
    """name -> (dtype, shape with None for the batch axis) of every input and output the contract requires."""
    float32 = np.dtype(np.float32)
    x_shape = (None,) if info.input.kind == "tokens" else (None, info.input.size)
    inputs = {contract.INPUT_NAME: (np.dtype(info.input.dtype), x_shape)}
    outputs = {contract.OUTPUT_NAME: (float32, (None, info.output.size))}
    for s in info.states:
        inputs[s.input] = (np.dtype(s.dtype), (None, *s.shape))
        outputs[s.output] = (np.dtype(s.dtype), (None, *s.shape))
    return inputs, outputs


def _io_problems(kind: str, expected: dict, found_args: Sequence[Any]) -> list[str]:
    found = {arg.name: arg for arg in found_args}
    problems = []
    if sorted(found) != sorted(expected):
        problems.append(f"{kind}s: expected {sorted(expected)}, found {sorted(found)}")
    for name, (dtype, shape) in expected.items():
        if name in found:
            problems += _arg_problems(f"{kind} {name!r}", dtype, shape, found[name])
    return problems


def _arg_problems(where: str, dtype: np.dtype, shape: tuple[int | None, ...], arg: Any) -> list[str]:
    problems = []
    if onnx_dtype(arg.type) != dtype:
        problems.append(f"{where}: expected dtype {dtype}, found {arg.type}")
    expected_text = shape_text(["batch" if d is None else str(d) for d in shape])
    if len(arg.shape) != len(shape):
        return [*problems, f"{where}: expected shape {expected_text}, found {arg.shape}"]
    if isinstance(arg.shape[0], int):
        problems.append(f"{where}: expected a dynamic batch axis first, found fixed size {arg.shape[0]}")
    if any(f != d for d, f in zip(shape[1:], arg.shape[1:], strict=True)):  # a symbolic size never fits
        problems.append(f"{where}: expected shape {expected_text}, found {arg.shape}")
    return problems
