"""Bring your own model: export a torch.nn.Module you wrote and trained to the edgernn contract.

    report = export_module(model, "model.onnx", example_input=torch.randn(1, 20, 6))
    Stepper("model.onnx").step(features)  # one step, state carried

``model.forward(x, state) -> (y, state)`` runs a sequence: x ``(batch, steps, features)`` float32 or
``(batch, steps)`` token ids (``(steps, batch, ...)`` when its recurrent layers are ``batch_first=False``),
y one output per step, ``(batch, steps, outputs)``. Between x and y: any per-step layers (Linear,
LayerNorm, activations, Embedding, Dropout...) and one or more nn.GRU / nn.LSTM / nn.RNN. The state is
whatever the model passes to those layers: ``h``, ``(h, c)``, a tuple per layer, a dict... (see
``byo_probe``). ``forward(x, None)`` must start from zeros, or pass ``initial_state``.

How: the recurrent layers are swapped for modules that compute one step of the same math with plain
matmuls and the same weights (``byo_cells``), one step of the model is traced with torch.onnx at
opset 17, and the graph's inputs and outputs are those of the contract: ``x``, ``h``/``c``
as ``(batch, num_layers, hidden_size)``, ``y``, ``h_next``/``c_next``. A model with several recurrent
layers gets one numbered state per layer (``h0``, ``c0``, ``h1``...), listed in the metadata's ``stacks``.
The result is verified against your original module, exactly as ``export_model`` verifies its own.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import chain

import numpy as np
import onnx
import torch
from onnx import helper
from torch import nn

from edgernn import __version__
from edgernn.export.byo_cells import with_step_modules
from edgernn.export.byo_probe import (
    InitialState,
    Probe,
    RecurrentLayer,
    StateLayout,
    UnsupportedModuleError,
    check_forward_signature,
    find_recurrent_layers,
    probe_module,
)
from edgernn.export.exporter import ExportReport, quantize_checked, seal, sealed_size, write_pair
from edgernn.export.graph import FLUSH_BELOW
from edgernn.export.quality import EvaluationData
from edgernn.export.quantize import QuantizeConfig
from edgernn.export.verify import States, verify_against
from edgernn.runtime import contract
from edgernn.runtime.contract import InputSpec, ModelInfo, OutputSpec, StackSpec
from edgernn.runtime.errors import InputError

__all__ = ["UnsupportedModuleError", "export_module"]

EXPORT_BATCH = 2  # traced with 2 so that no batch-sized axis passes for a broadcast axis of size 1
FORBIDDEN_OPS = frozenset({"GRU", "LSTM", "RNN", "If", "Loop", "Scan"})


@dataclass(frozen=True)
class _Input:
    """What x carries: ``tokens`` (size = vocabulary size) or ``features`` (size = feature count)."""

    kind: str
    size: int


def export_module(
    module: nn.Module,
    path: str | os.PathLike,
    *,
    example_input: torch.Tensor,
    batch_first: bool | None = None,
    initial_state: InitialState | None = None,
    vocabulary: Sequence[str] | None = None,
    output_kind: str | None = None,
    extra_metadata: dict | None = None,
    quantize: QuantizeConfig | None = None,
    data: EvaluationData | None = None,
) -> ExportReport:
    """Write one step of ``module`` as a verified single-step ONNX graph with explicit state.

    module: ``forward(x, state) -> (y, state)`` over a sequence, holding nn.GRU / nn.LSTM / nn.RNN
        layers (unidirectional, no ``proj_size``) and per-step layers; float32, on the CPU. It is left as
        it was (its train/eval mode included).
    example_input: an x the forward takes: float32 ``(batch, steps, features)`` for feature models,
        integer ``(batch, steps)`` token ids for token models (time first when ``batch_first`` is False).
        Only its dtype, rank and feature count are used.
    batch_first: how x and y are laid out; defaults to the recurrent layers' own ``batch_first``.
    initial_state: ``batch_size -> state`` in the module's own structure, all zeros; needed only when
        ``forward(x, None)`` does not work.
    vocabulary: the tokens of a token model (its length is the vocabulary size; without it the size is
        that of the module's one nn.Embedding).
    output_kind: ``"logits"`` or ``"values"``; defaults to logits for token models, values otherwise.
    extra_metadata: more fields for the metadata (``task``, ``classes``...), as ``export_model`` takes.
    quantize, data: as ``export_model`` takes them: the verified float32 graph is quantized and checked
        against itself on ``data`` (real inputs and targets: one step, a 3000-step closed loop, the metric).

    Returns an ExportReport; the file is written atomically and only after every parity check passed
    (ParityError otherwise; QuantizationError for a quantized export that fails its checks). A module
    that cannot be exported raises UnsupportedModuleError saying why.
    No chunk graph is written (``Stepper.run`` steps one at a time); one an earlier export left is removed.
    """
    check_forward_signature(module)
    layers = find_recurrent_layers(module)
    _check_tensors(module)
    source = _input_of(module, example_input, vocabulary)
    batch_first = _batch_first(layers, batch_first)
    make_input = partial(_random_input, source, batch_first, torch.Generator().manual_seed(0))
    with _eval_mode(module):
        probe = probe_module(module, layers, make_input, initial_state, batch_first)
        info = _build_info(probe, source, vocabulary, output_kind, extra_metadata)
        step = _ContractStep(with_step_modules(module), probe.layout, batch_first)
        proto = _finish(_trace(step, info), info)
        reference = partial(_run_reference, module, probe.layout, batch_first, initial_state)
        parity = verify_against(reference, proto, info)
    float32_size = None
    if quantize is not None and quantize.mode != "none":
        float32_size = sealed_size(proto, info)
        proto, info = quantize_checked(proto, info, quantize, data)
    content, info = seal(proto, info)
    written, _ = write_pair(path, content, None, info)  # removes an earlier export's chunk graph
    return ExportReport(written, len(content), info, parity, float32_size)


# --- arguments ---------------------------------------------------------------------------------------


def _check_tensors(module: nn.Module) -> None:
    problems = []
    for name, tensor in chain(module.named_parameters(), module.named_buffers()):
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            problems.append(
                f"{name} is {str(tensor.dtype).replace('torch.', '')}; convert with module.float()"
            )
        if tensor.device.type != "cpu":
            problems.append(f"{name} is on {tensor.device}; move the module with module.cpu()")
    if problems:
        raise UnsupportedModuleError(
            "export_module needs a float32 module on the CPU:\n  - " + "\n  - ".join(problems)
        )


def _input_of(module: nn.Module, example_input: torch.Tensor, vocabulary: Sequence[str] | None) -> _Input:
    if not isinstance(example_input, torch.Tensor):
        raise InputError(f"example_input: expected a torch.Tensor, got {type(example_input).__name__}")
    dtype, shape = example_input.dtype, tuple(example_input.shape)
    if dtype == torch.float32 and example_input.dim() == 3:
        if vocabulary is not None:
            raise InputError("vocabulary is for token models; example_input holds float32 features")
        return _Input("features", shape[-1])
    if dtype in (torch.int64, torch.int32) and example_input.dim() == 2:
        return _Input("tokens", len(vocabulary) if vocabulary is not None else _embedding_size(module))
    raise InputError(
        "example_input: expected float32 features (batch, steps, features) or int64 token ids "
        f"(batch, steps) (time first for batch_first=False), got {shape} {str(dtype).replace('torch.', '')}"
    )


def _embedding_size(module: nn.Module) -> int:
    embeddings = [m for m in module.modules() if isinstance(m, nn.Embedding)]
    if len(embeddings) != 1:
        raise InputError(
            f"a token model needs vocabulary=[...] when it has {len(embeddings)} nn.Embedding layers "
            "(with exactly one, its num_embeddings is the vocabulary size)"
        )
    return embeddings[0].num_embeddings


def _batch_first(layers: list[RecurrentLayer], given: bool | None) -> bool:
    if given is not None:
        return given
    found = {layer.batch_first for layer in layers}
    if len(found) > 1:
        raise InputError(
            "the recurrent layers disagree on batch_first; pass batch_first=True if x and y are "
            "(batch, steps, ...), False if (steps, batch, ...)"
        )
    return found.pop()


def _random_input(
    source: _Input, batch_first: bool, generator: torch.Generator, batch: int, steps: int
) -> torch.Tensor:
    """Random x for ``steps`` steps in the module's own layout."""
    if source.kind == "tokens":
        x = torch.randint(0, source.size, (batch, steps), generator=generator)
    else:
        x = torch.randn(batch, steps, source.size, generator=generator)
    return x if batch_first else x.transpose(0, 1)


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode (dropout off) for the export, then every submodule back in the mode it was in."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _build_info(
    probe: Probe,
    source: _Input,
    vocabulary: Sequence[str] | None,
    output_kind: str | None,
    extra: dict | None,
) -> ModelInfo:
    output_kind = output_kind or ("logits" if source.kind == "tokens" else "values")
    if output_kind not in contract.OUTPUT_KINDS:
        raise InputError(
            f"output_kind: expected one of {', '.join(contract.OUTPUT_KINDS)}, got {output_kind!r}"
        )
    first = probe.layers[0]
    stacks = tuple(StackSpec(layer.cell, layer.num_layers, layer.hidden_size) for layer in probe.layers)
    return contract.make_info(
        cell=first.cell,
        num_layers=first.num_layers,
        hidden_size=first.hidden_size,
        input=InputSpec(
            kind=source.kind,
            size=source.size,
            dtype="int64" if source.kind == "tokens" else "float32",
            vocabulary=None if vocabulary is None else tuple(vocabulary),
        ),
        output=OutputSpec(kind=output_kind, size=probe.output_size),
        edgernn_version=__version__,
        extra=extra,
        stacks=stacks if len(stacks) > 1 else (),
    )


# --- the step graph ----------------------------------------------------------------------------------


class _ContractStep(nn.Module):
    """One step of the user's module in the contract's layout: (x, *states) -> (y, *next states).

    x: ``(B,)`` int64 or ``(B, F)`` float32; each state ``(B, num_layers, hidden_size)`` float32.
    """

    def __init__(self, module: nn.Module, layout: StateLayout, batch_first: bool):
        super().__init__()
        self.module, self.layout = module, layout
        self.time_axis = 1 if batch_first else 0

    def forward(self, x: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, state = self.module(x.unsqueeze(self.time_axis), self.layout.to_user(states))  # a 1-step sequence
        return (y.select(self.time_axis, 0), *(_flush_tiny(s) for s in self.layout.from_user(state)))


def _flush_tiny(state: torch.Tensor) -> torch.Tensor:
    """Every |v| < FLUSH_BELOW set to exactly 0, as in every edgernn step graph (see graph.FLUSH_BELOW)."""
    return torch.where(state.abs() < FLUSH_BELOW, 0.0, state)


def _trace(step: _ContractStep, info: ModelInfo) -> onnx.ModelProto:
    """One traced step at opset 17, constants folded into initializers.

    torch.onnx's TorchScript exporter, not the dynamo one: in torch 2.13 dynamo emits opset 18 and its
    conversion down to 17 leaves Split with an opset-18 attribute (onnx.checker refuses the graph) and
    gives up on ReduceMean; TorchScript writes opset 17 natively, and 10-30x faster.
    """
    if info.input.kind == "tokens":
        x = torch.zeros(EXPORT_BATCH, dtype=torch.int64)
    else:
        x = torch.zeros(EXPORT_BATCH, info.input.size)
    states = tuple(torch.zeros(EXPORT_BATCH, *s.shape) for s in info.states)
    names = [contract.INPUT_NAME, *(s.input for s in info.states)]
    names += [contract.OUTPUT_NAME, *(s.output for s in info.states)]
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the exporter's deprecation and tracer notes; the checks decide
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                step,
                (x, *states),
                buffer,
                dynamo=False,
                opset_version=contract.OPSET,
                input_names=names[: 1 + len(states)],
                output_names=names[1 + len(states) :],
                dynamic_axes={name: {0: contract.BATCH_AXIS_NAME} for name in names},
            )
        except Exception as exc:  # the tracer's many failure modes, reported with the cause chained
            raise UnsupportedModuleError(
                f"torch.onnx.export could not trace one step of the module: {type(exc).__name__}: {exc}"
            ) from exc
    import onnxscript  # a second of import time, paid only by exports that need it

    proto = onnxscript.optimizer.optimize(onnx.load_from_string(buffer.getvalue()))
    _scalars_as_constants(proto, keep=set(step.state_dict()))
    return proto


def _scalars_as_constants(proto: onnx.ModelProto, keep: set[str]) -> None:
    """Scalar initializers the trace made (the flush limit, indices) become Constant nodes: they are no
    weights, and ``edgernn inspect`` counts float initializers as weights. The module's own stay."""
    scalars = [init for init in proto.graph.initializer if not init.dims and init.name not in keep]
    for init in scalars:
        proto.graph.initializer.remove(init)
    nodes = [helper.make_node("Constant", [], [init.name], value=init) for init in scalars]
    nodes += proto.graph.node
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def _finish(proto: onnx.ModelProto, info: ModelInfo) -> onnx.ModelProto:
    """Refuse graphs outside the contract's limits; stamp the IR version, producer and metadata."""
    problems = []
    ops = sorted({node.op_type for node in proto.graph.node} & FORBIDDEN_OPS)
    if ops:
        problems.append(
            f"the step graph contains {ops}; edgernn graphs are unrolled, without RNN ops or control flow"
        )
    opsets = sorted((o.domain or "ai.onnx", o.version) for o in proto.opset_import)
    if opsets != [("ai.onnx", contract.OPSET)]:
        problems.append(f"the step graph imports opsets {opsets}; expected ai.onnx {contract.OPSET} alone")
    if problems:
        raise UnsupportedModuleError("cannot export one step of this module:\n  - " + "\n  - ".join(problems))
    del proto.graph.value_info[:]  # the tracer's intermediate shapes: stale once a quantizer rewrites weights
    proto.ir_version = contract.IR_VERSION
    proto.producer_name, proto.producer_version = "edgernn", __version__
    proto.graph.name = f"edgernn_{info.cell}_step"
    helper.set_model_props(proto, {contract.METADATA_KEY: info.to_json()})
    return proto


# --- the reference the export is checked against -----------------------------------------------------


def _run_reference(
    module: nn.Module,
    layout: StateLayout,
    batch_first: bool,
    initial_state: InitialState | None,
    xs: np.ndarray,
    state: States | None,
) -> tuple[np.ndarray, States]:
    """The original module over a whole sequence, in and out in the contract's layout (see Reference)."""
    x = torch.from_numpy(xs) if batch_first else torch.from_numpy(xs).transpose(0, 1)
    if state is not None:
        start = layout.to_user([torch.from_numpy(s) for s in state])
    else:  # the module's own start, checked to be zeros by the probe
        start = None if initial_state is None else initial_state(xs.shape[0])
    with torch.no_grad():
        y, next_state = module(x, start)
    y = y if batch_first else y.transpose(0, 1)
    return y.numpy().astype(np.float64), tuple(
        s.numpy().astype(np.float64) for s in layout.from_user(next_state)
    )
