"""Find how a user's module lays out its state, by running it (bring your own model).

A module's forward is ``(x, state) -> (y, state)`` where ``state`` is any nesting of tuples, lists and
dicts of tensors. Each tensor must be the state of one recurrent layer (its ``h`` or its LSTM ``c``),
handed to the layer as it is or transposed, in one of three layouts:

- ``layers_first``: ``(num_layers, batch, hidden_size)``, what nn.GRU/nn.LSTM/nn.RNN take;
- ``batch_first``: ``(batch, num_layers, hidden_size)``, the contract's own layout;
- ``no_layers``: ``(batch, hidden_size)``, for a one-layer stack.

The probe fills every state tensor with distinct marker values, runs the module once, and reads off which
tensor reached which layer in which layout from what each layer received. Its batch size differs from
every layer count and hidden size, so a shape alone tells the axes apart.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from edgernn.export.byo_cells import RECURRENT_TYPES, cell_name
from edgernn.runtime.errors import InputError

LAYOUTS = ("layers_first", "batch_first", "no_layers")
InitialState = Callable[[int], Any]


class UnsupportedModuleError(InputError):
    """A module ``export_module`` cannot turn into the contract's step graph; the message says why."""


@dataclass(frozen=True)
class RecurrentLayer:
    """An nn.GRU / nn.LSTM / nn.RNN inside the user's module; ``name`` is its dotted path ("" for the root)."""

    name: str
    cell: str
    num_layers: int
    hidden_size: int
    batch_first: bool

    @property
    def label(self) -> str:
        return f"`{self.name or 'the module itself'}` ({self.cell}, {self.num_layers}x{self.hidden_size})"


def find_recurrent_layers(module: nn.Module) -> list[RecurrentLayer]:
    """Every recurrent layer of ``module`` in registration order; refuses those with no one-step form."""
    layers, problems = [], []
    for name, layer in module.named_modules():
        if isinstance(layer, nn.RNNCellBase):
            problems.append(_cell_problem(name or "the module itself", layer))
        if not isinstance(layer, RECURRENT_TYPES):
            continue
        problems += _layer_problems(name or "the module itself", layer)
        layers.append(
            RecurrentLayer(name, cell_name(layer), layer.num_layers, layer.hidden_size, layer.batch_first)
        )
    if problems:
        raise UnsupportedModuleError("cannot export one step of this module:\n  - " + "\n  - ".join(problems))
    if not layers:
        raise UnsupportedModuleError(
            f"found no nn.GRU, nn.LSTM or nn.RNN in {type(module).__name__}; export_module swaps those for "
            "their one-step form"
        )
    return layers


def _cell_problem(name: str, cell: nn.RNNCellBase) -> str:
    kind = type(cell).__name__
    layer = kind.removesuffix("Cell")
    return (
        f"`{name}` is an nn.{kind}, which export_module does not swap; an nn.{layer} with one layer and the "
        f"same weights (weight_ih_l0 = weight_ih, ...) computes the same step"
    )


def _layer_problems(name: str, layer: nn.RNNBase) -> list[str]:
    kind = type(layer).__name__
    problems = []
    if layer.bidirectional:
        problems.append(
            f"`{name}` is a bidirectional {kind}: its backward direction reads the sequence from the end, so "
            "it has no one-step form; use bidirectional=False"
        )
    if getattr(layer, "proj_size", 0):
        problems.append(
            f"`{name}` is an {kind} with proj_size={layer.proj_size}; edgernn exports proj_size=0"
        )
    base = next(t for t in RECURRENT_TYPES if isinstance(layer, t))
    if type(layer).forward is not base.forward:
        problems.append(
            f"`{name}` ({kind}) overrides forward; edgernn can only swap the stock {base.__name__}"
        )
    return problems


@dataclass(frozen=True)
class StateLayout:
    """Maps the contract's state tensors, ``(batch, num_layers, hidden_size)`` in contract order, to the
    user's own state structure and back. ``leaves[i]`` is (contract index, layout) of the i-th tensor of
    the user's state, flattened the way ``torch.utils._pytree`` flattens it."""

    treespec: pytree.TreeSpec
    leaves: tuple[tuple[int, str], ...]

    def to_user(self, states: Sequence[torch.Tensor]) -> Any:
        tensors = [_from_contract(states[index], layout) for index, layout in self.leaves]
        return pytree.tree_unflatten(tensors, self.treespec)

    def from_user(self, state: Any) -> tuple[torch.Tensor, ...]:
        contract_states: list[torch.Tensor | None] = [None] * len(self.leaves)
        for tensor, (index, layout) in zip(pytree.tree_leaves(state), self.leaves, strict=True):
            contract_states[index] = _to_contract(tensor, layout)
        return tuple(contract_states)


def _to_contract(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "layers_first":
        return tensor.transpose(0, 1)  # (L, B, H) -> (B, L, H)
    return tensor.unsqueeze(1) if layout == "no_layers" else tensor


def _from_contract(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "layers_first":
        return tensor.transpose(0, 1).contiguous()  # (B, L, H) -> (L, B, H)
    return tensor[:, 0] if layout == "no_layers" else tensor


def _as_layers_first(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    """A user state tensor as the recurrent layer receives it, (L, B, H)."""
    if layout == "batch_first":
        return tensor.transpose(0, 1)
    return tensor.unsqueeze(0) if layout == "no_layers" else tensor


# --- running the module ------------------------------------------------------------------------------


def check_forward_signature(module: nn.Module) -> None:
    """Refuse a module whose forward cannot be called as forward(x, state)."""
    try:
        inspect.signature(module.forward).bind(None, None)
    except TypeError:
        raise UnsupportedModuleError(
            f"{type(module).__name__}.forward{inspect.signature(module.forward)} cannot be called as "
            "forward(x, state); export_module needs forward(x, state) -> (y, state), with the state passed "
            "in and returned explicitly"
        ) from None


def call_forward(module: nn.Module, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
    """module(x, state) with the result checked to be (y, state); errors name what was expected."""
    try:
        with torch.no_grad():
            result = module(x, state)
    except Exception as exc:  # the user's own code: any failure, reported with its cause chained
        given = "None" if state is None else "a state"
        raise UnsupportedModuleError(
            f"{type(module).__name__}(x, {given}) failed with {type(exc).__name__}: {exc} (x: {_shape(x)})"
        ) from exc
    if not (isinstance(result, (tuple, list)) and len(result) == 2 and isinstance(result[0], torch.Tensor)):
        raise UnsupportedModuleError(
            f"{type(module).__name__}.forward returned {_describe(result)}; expected (y, state) with y a tensor"
        )
    return result[0], result[1]


def _shape(tensor: torch.Tensor) -> str:
    return f"{tuple(tensor.shape)} {str(tensor.dtype).replace('torch.', '')}"


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor {_shape(value)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}: ({', '.join(_describe(v) for v in value)})"
    return type(value).__name__


class _Recorder:
    """Forward pre-hooks that record the state every recurrent layer receives, while installed."""

    def __init__(self, module: nn.Module, layers: list[RecurrentLayer]):
        self.received: dict[str, list[Any]] = {layer.name: [] for layer in layers}
        self._handles = [
            module.get_submodule(layer.name).register_forward_pre_hook(
                self._hook(layer.name), with_kwargs=True
            )
            for layer in layers
        ]

    def _hook(self, name: str):
        def record(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            self.received[name].append(args[1] if len(args) > 1 else kwargs.get("hx"))

        return record

    def __enter__(self) -> _Recorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()


# --- the probe ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """What running the module once showed: the recurrent layers that carry state, in contract order,
    the user's state layout, and the size of one step's output."""

    layers: tuple[RecurrentLayer, ...]
    layout: StateLayout
    output_size: int


def probe_batch_size(layers: Sequence[RecurrentLayer]) -> int:
    """The smallest batch size from 2 up that equals no layer count or hidden size."""
    taken = {d for layer in layers for d in (layer.num_layers, layer.hidden_size)}
    return next(b for b in range(2, len(taken) + 3) if b not in taken)


def probe_module(
    module: nn.Module,
    layers: list[RecurrentLayer],
    make_input: Callable[[int, int], torch.Tensor],
    initial_state: InitialState | None,
    batch_first: bool,
) -> Probe:
    """Run ``module`` on one step with marker-filled state and read its state layout off the layers."""
    batch = probe_batch_size(layers)
    x = make_input(batch, 1)
    names, leaves, treespec = _flatten(_initial_state(module, layers, x, initial_state, batch))
    _check_leaves(names, leaves)
    markers = _markers(leaves)
    with _Recorder(module, layers) as recorder:
        y, next_state = call_forward(module, x, pytree.tree_unflatten(markers, treespec))
    used = [layer for layer in layers if recorder.received[layer.name]]
    layout = _match_layout(used, recorder.received, markers, names, treespec)
    _check_next_state(next_state, treespec, names, leaves)
    return Probe(tuple(used), layout, _output_size(y, batch, batch_first))


def _flatten(state: Any) -> tuple[list[str], list[Any], pytree.TreeSpec]:
    """The state's tensors, each with a name saying where it sits (``state``, ``state[1]['h']``...)."""
    with_paths, treespec = pytree.tree_flatten_with_path(state)
    names = [f"state{pytree.keystr(path)}" for path, _ in with_paths]
    return names, [leaf for _, leaf in with_paths], treespec


def _initial_state(
    module: nn.Module,
    layers: list[RecurrentLayer],
    x: torch.Tensor,
    initial_state: InitialState | None,
    batch: int,
) -> Any:
    """The state the module starts from, in its own structure; it must be all zeros, as the contract's."""
    if initial_state is not None:
        template = initial_state(batch)
        if not _all_zero(template):
            raise UnsupportedModuleError(
                f"initial_state({batch}) is not all zeros; the contract starts every state at zero"
            )
        return template
    with _Recorder(module, layers) as recorder:
        _, template = call_forward(module, x, None)
    for layer in layers:
        calls = recorder.received[layer.name]  # the first call is where the layer starts from
        if calls and not _all_zero(calls[0]):
            raise UnsupportedModuleError(
                f"with state None, forward hands {layer.label} a non-zero state; the contract starts every "
                "state at zero (a learned initial state cannot be exported)"
            )
    return template


def _all_zero(state: Any) -> bool:
    return not any(bool(t.any()) for t in pytree.tree_leaves(state) if isinstance(t, torch.Tensor))


def _check_leaves(names: list[str], leaves: list[Any]) -> None:
    if not leaves:
        raise UnsupportedModuleError(
            "the module's state holds no tensors; expected the recurrent layers' state"
        )
    problems = []
    for name, leaf in zip(names, leaves, strict=True):
        if not isinstance(leaf, torch.Tensor):
            problems.append(f"{name} is {type(leaf).__name__}; expected a float32 tensor")
        elif leaf.dtype != torch.float32:
            problems.append(f"{name} {_shape(leaf)} is not float32; the contract keeps float32 state")
    if problems:
        raise UnsupportedModuleError("the module's state cannot be exported:\n  - " + "\n  - ".join(problems))


def _markers(leaves: list[torch.Tensor]) -> list[torch.Tensor]:
    """The leaves filled with distinct values in (0, 1], exact in float32, so copies can be traced."""
    total = sum(leaf.numel() for leaf in leaves)
    assert total < 2**24, "state too large to mark exactly in float32"
    scale = 2.0**-24  # a power of two keeps every marker exact
    values = (torch.arange(total, dtype=torch.float64) + 1) * scale
    return [
        v.to(torch.float32).reshape(leaf.shape)
        for v, leaf in zip(values.split([leaf.numel() for leaf in leaves]), leaves, strict=True)
    ]


def _match_layout(
    used: list[RecurrentLayer],
    received: dict[str, list[Any]],
    markers: list[torch.Tensor],
    names: list[str],
    treespec: pytree.TreeSpec,
) -> StateLayout:
    problems: list[str] = []
    leaves: list[tuple[int, str] | None] = [None] * len(markers)
    index = 0
    for layer in used:
        for kind, tensor in zip(
            ("h", "c"), _slot_tensors(layer, received[layer.name], problems), strict=False
        ):
            match = _find_marker(tensor, markers)
            if match is None:
                problems.append(
                    f"the {kind} state {layer.label} receives is not one of the state tensors as given (or "
                    "transposed); export_module maps each state tensor straight to one recurrent layer"
                )
            elif leaves[match[0]] is not None:
                problems.append(f"{names[match[0]]} reaches more than one recurrent layer")
            else:
                leaves[match[0]] = (index, match[1])
            index += 1
    for i, leaf in enumerate(leaves):
        if leaf is None and not problems:
            problems.append(
                f"{names[i]} {tuple(markers[i].shape)} reaches no recurrent layer; the state may hold only "
                "the recurrent layers' h and c"
            )
    if problems:
        raise UnsupportedModuleError(
            f"cannot map the module's state {_structure(treespec)}:\n  - " + "\n  - ".join(problems)
        )
    return StateLayout(treespec, tuple(leaves))


def _slot_tensors(layer: RecurrentLayer, calls: list[Any], problems: list[str]) -> list[torch.Tensor]:
    """The state tensors a layer received in its one call: [h] or [h, c], each (L, B, H)."""
    if len(calls) > 1:
        problems.append(f"{layer.label} runs {len(calls)} times in one step; expected once")
        return []
    hx = calls[0]
    if hx is None:
        problems.append(
            f"{layer.label} is called without a state; forward must pass the state it is given on"
        )
        return []
    return list(hx) if layer.cell == "lstm" else [hx]


def _find_marker(tensor: Any, markers: list[torch.Tensor]) -> tuple[int, str] | None:
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3:
        return None
    for i, marker in enumerate(markers):
        for layout in LAYOUTS:
            if marker.dim() != (2 if layout == "no_layers" else 3):
                continue
            candidate = _as_layers_first(marker, layout)
            if candidate.shape == tensor.shape and torch.equal(candidate, tensor):
                return i, layout
    return None


def _check_next_state(
    next_state: Any, treespec: pytree.TreeSpec, names: list[str], leaves: list[torch.Tensor]
) -> None:
    next_leaves, next_spec = pytree.tree_flatten(next_state)
    if next_spec != treespec:
        raise UnsupportedModuleError(
            f"forward takes its state as {_structure(treespec)} but returns {_structure(next_spec)}; it must "
            "return the next state in the structure it takes"
        )
    for name, got, want in zip(names, next_leaves, leaves, strict=True):
        if not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != want.dtype:
            raise UnsupportedModuleError(
                f"forward takes {name} as {_shape(want)} but returns {_describe(got)}"
            )


def _structure(treespec: pytree.TreeSpec) -> str:
    """A state's structure, one * per tensor: ``*``, ``(*, *)``, ``{'encoder': *, 'decoder': (*, *)}``."""
    return pytree.treespec_pprint(treespec)


def _output_size(y: torch.Tensor, batch: int, batch_first: bool) -> int:
    expected = (batch, 1) if batch_first else (1, batch)
    if y.dim() != 3 or tuple(y.shape[:2]) != expected or y.dtype != torch.float32:
        layout = "(batch, steps, outputs)" if batch_first else "(steps, batch, outputs)"
        raise UnsupportedModuleError(
            f"for x of {expected[0]}x{expected[1]} {'(batch, steps)' if batch_first else '(steps, batch)'}, "
            f"forward returned y {_shape(y)}; expected float32 {layout}, one output per step"
        )
    return y.shape[2]
