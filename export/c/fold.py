"""Constant folding: every value of the step graph known at generation time, computed in numpy.

The initializers, every node whose inputs are all known (weights, shapes, ``Constant`` nodes, a
``DequantizeLinear`` or ``Cast`` of a stored weight) and ``Shape``/``Size`` of a tensor computed at run
time (its shape is static for a batch of 1) become constants; the lowering sees only what runs at every
step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from edgernn.export.c.bounds import FOLDED_TOTAL_FACTOR, check_elements
from edgernn.export.c.reference import evaluate, np_eval
from edgernn.runtime.errors import ContractError


class ConstantFolder:
    """``consts``: graph name -> its value; ``initializer_names``: the names stored in the file (the int8
    reference replaces those)."""

    def __init__(self, graph: onnx.GraphProto, bound: int):
        self.consts: dict[str, np.ndarray] = {}
        self.initializer_names: set[str] = set()
        self.bound = bound  # values one folded constant may hold (bounds.element_bound)
        self.folded = 0  # values of every folded constant so far
        for init in graph.initializer:
            self.consts[init.name] = numpy_helper.to_array(init)
            self.initializer_names.add(init.name)

    def fold(
        self, index: int, node: onnx.NodeProto, attrs: dict, shape_of: Callable[[str], tuple[int, ...]]
    ) -> bool:
        """Compute ``node`` if its outputs are known now (True), else leave it to the lowering (False).
        ``shape_of``: the static shape of a tensor computed at run time."""
        op, names = node.op_type, list(node.input)
        present = [n for n in names if n]
        if all(n in self.consts for n in present) and op not in ("Shape", "Size"):
            inputs = [self.consts[n] if n else None for n in names]
            results = evaluate(op, inputs, attrs, len(node.output), index, self.bound)
            for name, value in zip(node.output, results, strict=False):
                if name:
                    self.consts[name] = np.asarray(value)
                    self._count(index, op, self.consts[name].size)
            return True
        if op in ("Shape", "Size"):  # of a run-time tensor: its static shape (no values needed)
            shape = self.consts[names[0]].shape if names[0] in self.consts else shape_of(names[0])
            self.consts[node.output[0]] = np_eval(op, [np.broadcast_to(np.float32(0), shape)], attrs, 1)[0]
            return True
        return False

    def _count(self, index: int, op: str, values: int) -> None:
        check_elements(values, self.bound, f"node {index} ({op})")
        self.folded += values
        total = FOLDED_TOTAL_FACTOR * self.bound
        if self.folded > total:
            raise ContractError(
                f"node {index} ({op}): the constants folded so far hold {self.folded:,} values; this model's "
                f"stored weights and declared sizes bound them to {total:,}"
            )
