"""Models edgernn did not write: which inputs carry state (``state_map``), which are fixed (``constants``).

E.g. Silero VAD (v5) at 16 kHz::

    vad = Stepper(path, state_map={"state": "stateN"}, constants={"sr": 16000}, data_shape=("batch", 576))

The data input is the one input left over; its dtype and shape come from the graph, and ``data_shape``
declares sizes the graph leaves open (Silero's ``input`` is ``[batch, ?]``). Silero takes 576 samples per
call: the last 64 samples of the previous call (zeros at the start) and 512 new ones. That context is the
caller's to keep, as Silero's own wrapper keeps it: the model's state does not hold it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from edgernn.runtime import contract
from edgernn.runtime.errors import ContractError, InputError
from edgernn.runtime.graph import Graph, StateSlot
from edgernn.runtime.inputs import DataInput, as_array, onnx_dtype


def foreign_graph(
    session: ort.InferenceSession,
    state_map: Mapping[str, str],
    constants: Mapping[str, Any],
    state_shapes: Mapping[str, Sequence[int | str | None]],
    data_shape: Sequence[int | str | None] | None = None,
) -> Graph:
    inputs = {arg.name: arg for arg in session.get_inputs()}
    outputs = {arg.name: arg for arg in session.get_outputs()}
    _check_foreign_arguments(inputs, outputs, state_map, constants, state_shapes)
    data_names = [n for n in inputs if n not in state_map and n not in constants]
    if len(data_names) != 1:
        raise ContractError(
            f"expected exactly one data input besides the state inputs {sorted(state_map)} and constants "
            f"{sorted(constants)}, found {data_names}; feed the others through constants={{name: value}}"
        )
    result_names = tuple(n for n in outputs if n not in state_map.values())
    if not result_names:
        raise ContractError(f"every output is a state output ({sorted(outputs)}); a step needs a result")
    states = tuple(
        _foreign_slot(inputs[name], output, state_shapes.get(name)) for name, output in state_map.items()
    )
    fed = {name: _constant(inputs[name], value) for name, value in constants.items()}
    data = _foreign_data_input(inputs[data_names[0]], data_shape)
    return Graph(session, None, data, states, result_names, fed)


def _check_foreign_arguments(
    inputs: dict, outputs: dict, state_map: Mapping, constants: Mapping, state_shapes: Mapping
) -> None:
    problems = [f"state_map: {n!r} is not an input of the model" for n in state_map if n not in inputs]
    problems += [
        f"state_map: {n!r} is not an output of the model" for n in state_map.values() if n not in outputs
    ]
    problems += [f"constants: {n!r} is not an input of the model" for n in constants if n not in inputs]
    problems += [f"constants: {n!r} is a state input" for n in constants if n in state_map]
    problems += [f"state_shapes: {n!r} is not in state_map" for n in state_shapes if n not in state_map]
    if len(set(state_map.values())) != len(state_map):
        problems.append(f"state_map: two state inputs share one output ({dict(state_map)})")
    if problems:
        found = f"(inputs: {sorted(inputs)}, outputs: {sorted(outputs)})"
        raise InputError("invalid arguments for this model " + found + ":\n  - " + "\n  - ".join(problems))


def _foreign_data_input(arg: Any, declared: Sequence[int | str | None] | None) -> DataInput:
    dtype = onnx_dtype(arg.type)
    if dtype is None:
        raise ContractError(
            f"data input {arg.name!r} has type {arg.type}; edgernn feeds numeric tensors only"
        )
    if not arg.shape:
        raise ContractError(
            f"data input {arg.name!r} declares no shape; edgernn needs its rank (batch axis first)"
        )
    dims = tuple(d if isinstance(d, int) else None for d in arg.shape[1:])
    if declared is not None:
        return DataInput(arg.name, dtype, _declared_shape(arg, dims, declared))
    if None in dims:
        warnings.warn(
            f"data input {arg.name!r} has axes of unknown size {_shape_label(arg.shape)}, so any x of that "
            f"rank is fed to the model (a chunk of the wrong length would move the state); declare the "
            f"shape to have others refused: data_shape=('batch', ...) (CLI: --data-shape batch,N)",
            stacklevel=5,
        )
    return DataInput(arg.name, dtype, (None, *dims))


def _declared_shape(
    arg: Any, dims: tuple[int | None, ...], declared: Sequence[int | str | None]
) -> tuple[int | None, ...]:
    """``data_shape`` checked against the graph: batch axis first, every other axis a fixed size that
    agrees with any size the graph declares."""
    shape = _override_shape("data_shape", declared)
    problem = None
    if len(shape) != len(dims) + 1:
        problem = f"the graph's data input has rank {len(dims) + 1}"
    elif shape[0] is not None or None in shape[1:]:
        problem = f"the batch axis ({contract.BATCH_AXIS_NAME!r}) first, then a size for every other axis"
    elif any(d is not None and d != s for d, s in zip(dims, shape[1:], strict=True)):
        problem = "the graph fixes some of these sizes"
    if problem:
        raise InputError(
            f"data_shape: expected a shape for {arg.name!r} {_shape_label(arg.shape)} ({problem}), "
            f"got {tuple(declared)!r:.80}"
        )
    return shape


def _shape_label(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, (int, str)) else "?" for d in shape) + "]"


def _foreign_slot(arg: Any, output: str, override: Sequence[int | str | None] | None) -> StateSlot:
    dtype = onnx_dtype(arg.type)
    if dtype is None or dtype.kind not in "fiu":
        raise ContractError(f"state input {arg.name!r} has type {arg.type}; edgernn keeps numeric state only")
    if override is not None:
        return StateSlot(arg.name, output, _override_shape(f"state_shapes[{arg.name!r}]", override), dtype)
    if not arg.shape:
        raise ContractError(
            f"state input {arg.name!r} declares no shape; pass state_shapes={{{arg.name!r}: (...)}} "
            f"with {contract.BATCH_AXIS_NAME!r} where the batch size goes"
        )
    return StateSlot(arg.name, output, tuple(d if isinstance(d, int) else None for d in arg.shape), dtype)


def _override_shape(name: str, shape: Sequence[int | str | None]) -> tuple[int | None, ...]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise InputError(f"{name}: expected a sequence of sizes, got {type(shape).__name__}")
    dims = []
    for d in shape:
        if d is None or d == contract.BATCH_AXIS_NAME:
            dims.append(None)
        elif isinstance(d, int) and not isinstance(d, bool) and d > 0:
            dims.append(d)
        else:
            raise InputError(
                f"{name}: expected positive integers, with {contract.BATCH_AXIS_NAME!r} "
                f"where the batch size goes, got {shape!r}"
            )
    return tuple(dims)


def _constant(arg: Any, value: Any) -> np.ndarray:
    label = f"constants[{arg.name!r}]"
    dtype = onnx_dtype(arg.type)
    array = as_array(value, label)
    accepted = "iufb" if dtype is not None and dtype.kind == "f" else "iub"  # never float -> int silently
    if dtype is None or array.dtype.kind not in accepted:
        raise InputError(f"{label}: expected a value of type {arg.type}, got dtype {array.dtype}")
    if arg.shape and array.ndim != len(arg.shape):
        raise InputError(f"{label}: expected shape {arg.shape}, got {array.shape}")
    return np.ascontiguousarray(array, dtype=dtype)


def state_map_needed(session: ort.InferenceSession) -> ContractError:
    inputs = [arg.name for arg in session.get_inputs()]
    outputs = [arg.name for arg in session.get_outputs()]
    return ContractError(
        "this model has no edgernn metadata, so edgernn cannot tell which inputs carry state; pass "
        "state_map={state input: state output} (and constants={input: value} for other fixed inputs), "
        f"e.g. Stepper(path, state_map={{'state': 'stateN'}}, constants={{'sr': 16000}}). "
        f"Inputs: {inputs}; outputs: {outputs}"
    )
