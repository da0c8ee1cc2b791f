"""The per-step layers every precision writes the same way: element-wise arithmetic with broadcasting (and the
activations), strided copies (Slice, Split, Concat, Transpose, Gather by constant indices), LayerNormalization
and Softmax/LogSoftmax, all in float32."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgernn.export.c.activations import activation
from edgernn.export.c.ctext import literal
from edgernn.export.c.ir import (
    Copy,
    Elementwise,
    IndexedCopy,
    LayerNorm,
    Softmax,
    broadcast_strides,
    contiguous_strides,
)
from edgernn.runtime.errors import ContractError

if TYPE_CHECKING:
    from edgernn.export.c.emitter import Emitter


def elementwise(e: Emitter, op: Elementwise) -> list[str]:
    out = op.out
    n = out.size
    shapes = [broadcast_strides(t.shape, out.shape) for t in op.inputs]
    flat = all(t.size == n or t.size == 1 for t in op.inputs)
    if flat:
        args = [e.ref(t.storage, t.offset, "i" if t.size == n and n > 1 else "0") for t in op.inputs]
        expr = expression(e, op, args)
        return [f"for (int i = 0; i < {n}; i++) {e.ref(out.storage, out.offset, 'i')} = {expr};"]
    rank = len(out.shape)
    loops = [f"for (int i{d} = 0; i{d} < {out.shape[d]}; i{d}++)" for d in range(rank)]
    out_index = " + ".join(f"i{d} * {s}" for d, s in enumerate(contiguous_strides(out.shape)) if s)
    args = []
    for t, strides in zip(op.inputs, shapes, strict=True):
        index = " + ".join(f"i{d} * {s}" for d, s in enumerate(strides) if s) or "0"
        args.append(e.ref(t.storage, t.offset, index))
    return [" ".join(loops) + f" {e.ref(out.storage, out.offset, out_index)} = {expression(e, op, args)};"]


def expression(e: Emitter, op: Elementwise, args: list[str]) -> str:
    a = args[0]
    b = args[1] if len(args) > 1 else None
    attrs = op.attrs

    def f(key: str, default: float) -> str:
        return literal(attrs.get(key, default))

    name = op.op
    if name in ("Sigmoid", "Tanh"):
        return activation(e, name, a)
    if name == "Log":
        return f"{e.log()}({a})"
    table = {
        "Add": f"{a} + {b}",
        "Sub": f"{a} - {b}",
        "Mul": f"{a} * {b}",
        "Div": f"{a} / {b}",
        "Pow": f"powf({a}, {b})",
        "Max": f"({a} > {b} ? {a} : {b})",
        "Min": f"({a} < {b} ? {a} : {b})",
        "Less": f"({a} < {b} ? 1.0f : 0.0f)",
        "Greater": f"({a} > {b} ? 1.0f : 0.0f)",
        "LessOrEqual": f"({a} <= {b} ? 1.0f : 0.0f)",
        "GreaterOrEqual": f"({a} >= {b} ? 1.0f : 0.0f)",
        "Equal": f"({a} == {b} ? 1.0f : 0.0f)",
        "And": f"({a} != 0.0f && {b} != 0.0f ? 1.0f : 0.0f)",
        "Or": f"({a} != 0.0f || {b} != 0.0f ? 1.0f : 0.0f)",
        "Not": f"({a} == 0.0f ? 1.0f : 0.0f)",
        "PRelu": f"({a} < 0.0f ? {a} * {b} : {a})",
        "Abs": f"fabsf({a})",
        "Neg": f"-{a}",
        "Sqrt": f"sqrtf({a})",
        "Exp": f"{e.exp()}({a})",
        "Reciprocal": f"1.0f / {a}",
        "Relu": f"({a} > 0.0f ? {a} : 0.0f)",
        "Erf": f"erff({a})",
        "Sin": f"sinf({a})",
        "Cos": f"cosf({a})",
        "Floor": f"floorf({a})",
        "Ceil": f"ceilf({a})",
        "Softsign": f"{a} / (1.0f + fabsf({a}))",
    }
    if name in table:
        return table[name]
    if name == "LeakyRelu":
        return f"({a} >= 0.0f ? {a} : {f('alpha', 0.01)} * {a})"
    if name == "Elu":
        return f"({a} >= 0.0f ? {a} : {f('alpha', 1.0)} * ({e.exp()}({a}) - 1.0f))"
    if name == "Celu":
        alpha = f("alpha", 1.0)
        return f"({a} > 0.0f ? {a} : {alpha} * ({e.exp()}({a} / {alpha}) - 1.0f))"
    if name == "Selu":
        alpha, gamma = f("alpha", 1.67326319217681884765625), f("gamma", 1.05070102214813232421875)
        return f"({a} > 0.0f ? {gamma} * {a} : {gamma} * {alpha} * ({e.exp()}({a}) - 1.0f))"
    if name == "ThresholdedRelu":
        return f"({a} > {f('alpha', 1.0)} ? {a} : 0.0f)"
    if name == "Softplus":
        return f"({a} > 0.0f ? {a} + log1pf(expf(-{a})) : log1pf(expf({a})))"
    if name == "HardSigmoid":
        inner = f"{f('alpha', 0.2)} * {a} + {f('beta', 0.5)}"
        return f"fmaxf(0.0f, fminf(1.0f, {inner}))"
    if name == "HardSwish":
        return f"{a} * fmaxf(0.0f, fminf(1.0f, {a} / 6.0f + 0.5f))"
    if name == "Clip":
        expr = a
        if "min" in attrs:
            expr = f"fmaxf({expr}, {literal(attrs['min'])})"
        if "max" in attrs:
            expr = f"fminf({expr}, {literal(attrs['max'])})"
        return expr
    if name == "Where":
        return f"({a} != 0.0f ? {args[1]} : {args[2]})"
    raise ContractError(f"internal: no C expression for {name}")


def copy(e: Emitter, op: Copy) -> list[str]:
    shape, dst_strides, src_strides = _collapse(op.shape, op.dst_strides, op.src_strides)
    if not shape:
        return [f"{e.ref(op.dst, op.dst_offset, '0')} = {e.ref(op.src, op.src_offset, '0')};"]
    loops = [f"for (int i{d} = 0; i{d} < {n}; i{d}++)" for d, n in enumerate(shape)]
    dst = " + ".join(f"i{d} * {s}" if s != 1 else f"i{d}" for d, s in enumerate(dst_strides) if s) or "0"
    src = " + ".join(f"i{d} * {s}" if s != 1 else f"i{d}" for d, s in enumerate(src_strides) if s) or "0"
    return [" ".join(loops) + f" {e.ref(op.dst, op.dst_offset, dst)} = {e.ref(op.src, op.src_offset, src)};"]


def indexed_copy(e: Emitter, op: IndexedCopy) -> list[str]:
    """The Gather by a table of constant indices: one loop whatever their count."""
    count = op.indices.size
    table = e.const_array(op.indices, "int32_t", "i")
    loops, dst, src = (
        [],
        [f"n * {op.inner}" if op.inner > 1 else "n"],
        [f"{table}[n] * {op.inner}" if op.inner > 1 else f"{table}[n]"],
    )
    if op.outer > 1:
        loops.append(f"for (int o = 0; o < {op.outer}; o++)")
        dst.insert(0, f"o * {count * op.inner}")
        src.insert(0, f"o * {op.rows * op.inner}")
    loops.append(f"for (int n = 0; n < {count}; n++)")
    if op.inner > 1:
        loops.append(f"for (int i = 0; i < {op.inner}; i++)")
        dst.append("i")
        src.append("i")
    target = e.ref(op.out.storage, op.out.offset, " + ".join(dst))
    value = e.ref(op.x.storage, op.x.offset, " + ".join(src))
    return [
        f"/* {op.out.name}: Gather by {count} constant indices */",
        " ".join(loops) + f" {target} = {value};",
    ]


def layer_norm(e: Emitter, op: LayerNorm) -> list[str]:
    n, rows = op.size, op.x.size // op.size
    scale = e.const_array(op.scale, "float", "c") if op.scale is not None else None
    bias = e.const_array(op.bias, "float", "c") if op.bias is not None else None
    value = "(v[j] - mean) * inv"
    if scale:
        value += f" * {scale}[j]"
    if bias:
        value += f" + {bias}[j]"
    return [
        f"for (int r = 0; r < {rows}; r++) {{ /* {op.out.name}: LayerNormalization over {n} */",
        f"    const float *v = {e.ptr(op.x)} + r * {n}; float *o = {e.ptr(op.out)} + r * {n};",
        "    float mean = 0.0f, var = 0.0f;",
        f"    for (int j = 0; j < {n}; j++) mean += v[j];",
        f"    mean /= {n}.0f;",
        f"    for (int j = 0; j < {n}; j++) var += (v[j] - mean) * (v[j] - mean);",
        f"    const float inv = 1.0f / sqrtf(var / {n}.0f + {literal(op.epsilon)});",
        f"    for (int j = 0; j < {n}; j++) o[j] = {value};",
        "}",
    ]


def softmax(e: Emitter, op: Softmax) -> list[str]:
    n, rows = op.size, op.x.size // op.size
    exp = e.exp()
    final = "o[j] = v[j] - top - logf(sum);" if op.log else f"o[j] = {exp}(v[j] - top) / sum;"
    return [
        f"for (int r = 0; r < {rows}; r++) {{ /* {op.out.name}: {'Log' if op.log else ''}Softmax over {n} */",
        f"    const float *v = {e.ptr(op.x)} + r * {n}; float *o = {e.ptr(op.out)} + r * {n};",
        "    float top = v[0], sum = 0.0f;",
        f"    for (int j = 1; j < {n}; j++) top = v[j] > top ? v[j] : top;",
        f"    for (int j = 0; j < {n}; j++) sum += {exp}(v[j] - top);",
        f"    for (int j = 0; j < {n}; j++) {final}",
        "}",
    ]


def _collapse(shape, dst, src) -> tuple[list[int], list[int], list[int]]:
    """Drop size-1 axes and merge neighbours that are contiguous in both source and destination."""
    dims = [(n, d, s) for n, d, s in zip(shape, dst, src, strict=True) if n != 1]
    merged: list[list[int]] = []
    for n, d, s in dims:
        if merged and merged[-1][1] == d * n and merged[-1][2] == s * n:
            merged[-1] = [merged[-1][0] * n, d, s]
        else:
            merged.append([n, d, s])
    return [m[0] for m in merged], [m[1] for m in merged], [m[2] for m in merged]
