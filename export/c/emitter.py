"""The state of one C file being written: its constant arrays (deduplicated, counted as flash), the C
names of buffers and elements, the helpers the code calls, and the dispatch of each operation to the
module that writes it (the precision's products and embedding, the shared layers)."""

from __future__ import annotations

import hashlib
from types import ModuleType

import numpy as np

from edgernn.export.c import fft, float32, int8, layers, marks, sparse
from edgernn.export.c.activations import table_loop
from edgernn.export.c.arena import Arena
from edgernn.export.c.ctext import c_floats, c_ints, literal
from edgernn.export.c.ir import (
    Copy,
    Elementwise,
    GatherRow,
    Gemv,
    IndexedCopy,
    LayerNorm,
    Mark,
    Program,
    RealFFT,
    Softmax,
    SparseGemv,
    Storage,
    Tensor,
)
from edgernn.runtime.errors import ContractError

PRECISION_MODULES: dict[str, ModuleType] = {"float32": float32, "int8": int8}


class Emitter:
    def __init__(self, program: Program, name: str, precision: str, fast: bool, metadata: str):
        self.p, self.name, self.NAME = program, name, name.upper()
        self.precision = PRECISION_MODULES[precision]
        self.int8 = precision == "int8"
        self.fast = fast
        self.metadata = metadata
        self.arrays: list[str] = []
        self.array_names: dict[tuple[str, str], str] = {}
        self.flash = 0
        self.replaced: dict[str, np.ndarray] = {}
        self.helpers: set[str] = set()
        self.arena = Arena()
        self.quantized_inputs: list[tuple[str, str]] = []  # int8: (graph tensor, weight) of each product
        self.int8_scratch = 0  # bytes: the largest quantized input vector
        self.serpentine = False  # an int8 product reads the state's pass bit
        self.sigmoid_table = ""  # int8: the table the activations read (activations.table_helpers)

    # -- constant arrays

    def const_array(self, array: np.ndarray, ctype: str, prefix: str = "w") -> str:
        array = np.ascontiguousarray(array)
        key = (ctype, hashlib.sha256(array.tobytes() + str(array.dtype).encode()).hexdigest())
        if key in self.array_names:
            return self.array_names[key]
        symbol = f"{self.name}_{prefix}{len(self.array_names)}"
        self.array_names[key] = symbol
        integer = ctype in ("int8_t", "uint8_t", "int32_t")
        body = c_ints(array) if integer else c_floats(array)
        self.arrays.append(f"static const {ctype} {symbol}[{max(1, array.size)}] = {{\n{body}\n}};")
        self.flash += array.size * (1 if ctype in ("int8_t", "uint8_t") else 4)
        return symbol

    # -- names of buffers and elements

    def storage_symbol(self, s: Storage) -> str:
        if s.kind == "const":
            return self.const_array(s.array, "float", "c")
        if s.kind == "x":
            return "x"
        if s.kind == "state":
            return "st->s"
        if s.kind == "arena":
            return "t"
        raise ContractError(f"a {s.kind} buffer used as floats")

    def base(self, s: Storage) -> int:
        if s.kind == "state":
            return s.base
        if s.kind == "arena":
            return self.arena.start(s)
        return 0

    def ref(self, s: Storage, offset: int, index: str) -> str:
        """The C lvalue/rvalue of element ``offset + index`` of storage ``s``."""
        if s.kind == "const" and s.size == 1:
            return literal(s.array[0])
        start = self.base(s) + offset
        symbol = self.storage_symbol(s)
        if index == "0" or not index:
            return f"{symbol}[{start}]"
        return f"{symbol}[{index}]" if start == 0 else f"{symbol}[{start} + {index}]"

    def ptr(self, t: Tensor) -> str:
        start = self.base(t.storage) + t.offset
        symbol = self.storage_symbol(t.storage)
        return symbol if start == 0 else f"{symbol} + {start}"

    def exp(self) -> str:
        """The generated file's own exp (no libm, vectorisable; see activations.EXP_MAX_REL_ERROR)."""
        self.helpers.add("exp")
        return f"{self.name}_exp"

    def log(self) -> str:
        """The generated file's own float logarithm (no libm, no double; see mathf)."""
        self.helpers.update(("log", "bits"))
        return f"{self.name}_log"

    # -- operations

    def emit_op(self, op) -> list[str]:
        if isinstance(op, Gemv):
            return self.precision.gemv(self, op)
        if isinstance(op, GatherRow):
            return self.precision.gather(self, op)
        if isinstance(op, Elementwise):
            return table_loop(self, op) or layers.elementwise(self, op)
        if isinstance(op, Copy):
            return layers.copy(self, op)
        if isinstance(op, IndexedCopy):
            return layers.indexed_copy(self, op)
        if isinstance(op, LayerNorm):
            return layers.layer_norm(self, op)
        if isinstance(op, Softmax):
            return layers.softmax(self, op)
        if isinstance(op, RealFFT):
            return fft.emit(self, op)
        if isinstance(op, SparseGemv):
            return sparse.emit(self, op)
        if isinstance(op, Mark):
            return marks.emit(self, op)
        raise ContractError(f"internal: no C for {type(op).__name__}")
