"""Write a lowered Program as C99: NAME.h and NAME.c.

The step is straight-line code over one scratch array on the stack (``t``), whose tensors are placed by
their lifetimes so that buffers no longer read are reused. Weights are ``static const`` arrays. Loops have
literal bounds; every matrix product is written input-major (``out[j] += x[i] * W[i][j]`` over
contiguous rows of W, two inputs per pass), a loop with no reduction in it, which gcc and clang vectorise
at -O2/-O3 without -ffast-math. int8 weights keep one float scale per output and are stored output-major;
each product's input is quantized to int8 once per step (one scale per vector), the products are integer
dot products summed in int32, scaled once per output. The weights are stored offset by 128 (uint8), so that
each dot product is unsigned-by-signed bytes, the form of x86's vpdpbusd that gcc vectorises to; the offset's
share, 128 times the input's sum, is taken off exactly in int32. Each int8 product walks its rows forward on
one step and backward on the next (a bit in the state), so that rows read last stay in cache for the next
step when the weights are larger than the cache.
Sigmoid, tanh and exp are the file's own branch-free functions (see activations.EXP_MAX_REL_ERROR), so they vectorise
too and no libm is needed for a GRU/LSTM (``activations``).

The file is written by concern: ``emitter`` (constant arrays, names of buffers, dispatch), ``arena`` (scratch
placement), ``float32`` and ``int8`` (each precision's products and embedding, over ``products``),
``layers`` (element-wise, copies, LayerNorm, Softmax), ``activations``, ``step`` (NAME.c around the step
functions) and ``header`` (NAME.h).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgernn.export.c import step
from edgernn.export.c.check import string_tables
from edgernn.export.c.emitter import Emitter
from edgernn.export.c.header import header
from edgernn.export.c.ir import Program


@dataclass
class Emitted:
    header: str
    source: str
    flash_bytes: int
    ram_bytes: int
    scratch_bytes: int
    replaced: dict[str, np.ndarray] = field(default_factory=dict)  # initializer -> its int8 rounding
    quantized_inputs: list[tuple[str, str]] = field(default_factory=list)  # int8: (x tensor, weight)


def emit(
    program: Program, name: str, precision: str, fast: bool, metadata: str, notes: dict[str, Any]
) -> Emitted:
    """NAME.h and NAME.c for ``program``."""
    e = Emitter(program, name, precision, fast, metadata)
    finals = step.copy_state_outputs(program)
    hoisted = e.precision.schedule(e)
    e.arena.plan(program.ops, [t.storage for t in finals], [program.ops[i].out.storage for i in hoisted])
    body = step.operations(e, hoisted, finals)
    meta_bytes = metadata.encode("utf-8") + b"\0"
    e.flash += len(meta_bytes)
    strings = string_tables(program.info)
    for _, items in strings:
        e.flash += sum(len(s.encode("utf-8")) + 1 for s in items) + 4 * len(items)
    scratch = 4 * max(1, e.arena.size) + -(-e.int8_scratch // 4) * 4
    ram = 4 * program.state_floats + 4 * e.serpentine + scratch
    text = header(program, e, strings, ram, notes)
    source = step.source(e, finals, body, strings, meta_bytes)
    return Emitted(text, source, e.flash, ram, scratch, e.replaced, e.quantized_inputs)


def metadata_json(info_json: str, extra: dict[str, Any]) -> str:
    doc = json.loads(info_json)
    doc.update(extra)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))
