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

from edgernn.export.c.reference import evaluate, np_eval


class ConstantFolder:
    """``consts``: graph name -> its value; ``initializer_names``: the names stored in the file (the int8
    reference replaces those)."""

    def __init__(self, graph: onnx.GraphProto):
        self.consts: dict[str, np.ndarray] = {}
        self.initializer_names: set[str] = set()
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
            results = evaluate(op, inputs, attrs, len(node.output), index)
            for name, value in zip(node.output, results, strict=False):
                if name:
                    self.consts[name] = np.asarray(value)
            return True
        if op in ("Shape", "Size"):  # of a run-time tensor: its static shape
            shape = self.consts[names[0]].shape if names[0] in self.consts else shape_of(names[0])
            self.consts[node.output[0]] = np_eval(op, [np.zeros(shape)], attrs, 1)[0]
            return True
        return False
