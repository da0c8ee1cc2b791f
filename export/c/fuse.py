"""Fusion while lowering: an Add of a product and a constant becomes the product's bias, an Add of two
products the later one adding into the earlier one's output (one buffer, no separate sum)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edgernn.export.c.ir import Gemv, Tensor

if TYPE_CHECKING:
    from edgernn.export.c.lower import Lowering


def fuse_add(low: Lowering, inputs: list[Tensor], out_name: str, shape) -> bool:
    """Add(gemv, constant) -> the gemv's bias; Add(gemv, gemv) -> the later gemv adds to the earlier."""
    a, b = inputs
    gemv_a, gemv_b = _single_use_gemv(low, a), _single_use_gemv(low, b)
    if gemv_a is None and gemv_b is not None:
        a, b, gemv_a, gemv_b = b, a, gemv_b, gemv_a
    if gemv_a is None or tuple(shape) != a.shape:
        return False
    if b.storage.kind == "const" and gemv_b is None:
        if gemv_a.bias is not None or gemv_a.accumulate:
            if gemv_a.accumulate:
                return False
            bias = gemv_a.bias + np.broadcast_to(b.storage.array.reshape(b.shape), shape).reshape(-1)
            gemv_a.bias = bias.astype(np.float32)
        else:
            gemv_a.bias = (
                np.broadcast_to(b.storage.array.reshape(b.shape), shape).reshape(-1).astype(np.float32)
            )
        low.values[out_name] = low.view(a, out_name, shape)
        return True
    if gemv_b is not None and b.shape == a.shape and not gemv_b.accumulate:
        # the later gemv adds into the earlier one's output, where it stands: nothing else reads
        # that output before this Add (single use), and its own input is ready by then
        earlier, later = sorted((gemv_a, gemv_b), key=low.ops.index)
        if later.bias is not None:
            if earlier.bias is not None:
                return False
            earlier.bias, later.bias = later.bias, None
        later.out = earlier.out
        later.accumulate = True
        low.values[out_name] = low.view(earlier.out, out_name, shape)
        return True
    return False


def _single_use_gemv(low: Lowering, t: Tensor) -> Gemv | None:
    """The gemv that wrote ``t`` when this Add is the only reader of everything aliasing its output."""
    op = low.producer.get(id(t.storage))
    if not isinstance(op, Gemv) or op.out.storage is not t.storage or t.offset != op.out.offset:
        return None
    aliases = low.aliases.get(id(t.storage), [])
    if t.size != op.out.size or not aliases or aliases[-1] != t.name:
        return None
    if any(low.uses.get(n, 0) > 1 or n in low.outputs for n in aliases):
        return None
    return op
