"""A bring-your-own model's lowered float step (``export.c.ir.Program``) as an ``IntegerProgram``
(``edgernn.runtime.integer_program``): every buffer's scale from the largest magnitude it held over real
data (``export.c.integer_float``), twice that for headroom; the weights int8 with one scale per row.

What the integer precision takes: products by a constant matrix, element-wise Add, Sub, Mul, Div by a
constant, Max, Min, Relu, LeakyRelu, Neg, Abs, Clip, Sigmoid, Tanh, the comparisons, Not, And, Or, Where,
every copy (Slice, Split, Concat, Transpose, Expand, Gather by constant indices), the embedding row,
LayerNormalization and Softmax, and a keyword model's log-mel front end (the real FFT with its power, the
mel bands' product, + floor and Log: one ``QLogMel``, ``export.c.integer_front_end``). Anything else is
refused by name: the other activations (Exp, Log, Sqrt, Pow, Softplus, Elu, Erf...), a division by a
tensor computed at run time, LogSoftmax, and a real FFT in any other pattern. A product by a mostly-zero
matrix (float32 keeps its nonzeros alone) is a dense int8 product here.
"""

from __future__ import annotations

import math

import numpy as np

from edgernn.export.c.integer_float import FloatRun
from edgernn.export.c.integer_front_end import build_log_mel
from edgernn.export.c.ir import (
    Copy,
    Elementwise,
    GatherRow,
    Gemv,
    IndexedCopy,
    LayerNorm,
    Program,
    Softmax,
    SparseGemv,
    Storage,
    Tensor,
)
from edgernn.runtime import integer_layers
from edgernn.runtime import integer_ops as ops
from edgernn.runtime.errors import ContractError
from edgernn.runtime.integer_program import (
    IDENTITY,
    Buffer,
    IntegerProgram,
    QCopy,
    QGather,
    QGemv,
    QIndexedCopy,
    QLayerNorm,
    QMap,
    QSoftmax,
    View,
)
from edgernn.runtime.integer_ref import quantize_multiplier, quantize_product

HEADROOM = 2.0
ACT_SCALE = 2.0**-ops.ACT_FRAC  # Q0.15
GATE_SCALE = 2.0**-ops.GATE_FRAC  # Q3.12
SAME_SCALE = {"Relu": "relu", "Neg": "neg", "Abs": "abs", "Clip": "clip", "LeakyRelu": "leaky_relu"}
CALIBRATED = {"Add": "add", "Sub": "sub", "Mul": "mul", "Max": "max", "Min": "min", "Where": "where"}
COMPARISONS = {
    "Less": "less", "Greater": "greater", "LessOrEqual": "less_equal", "GreaterOrEqual": "greater_equal",
    "Equal": "equal",
}  # fmt: skip
FLIPPED = {"less": "greater", "greater": "less", "less_equal": "greater_equal", "greater_equal": "less_equal"}
LOGIC = {"Not": "not", "And": "and", "Or": "or"}
SUPPORTED = sorted(
    {*SAME_SCALE, *CALIBRATED, *COMPARISONS, *LOGIC, "Sigmoid", "Tanh", "Div"}
    | {"MatMul", "Gemm", "Slice", "Split", "Concat", "Transpose", "Gather", "LayerNormalization", "Softmax"}
)


def scale_of(peak: float) -> float:
    """An int16 scale that holds HEADROOM times ``peak``."""
    return max(HEADROOM * float(peak), 1e-9) / ops.INT16_MAX


def _ratio(ratio: float, where: str) -> tuple[int, int] | None:
    """(multiplier, shift) of ``ratio``; None for exactly 1 (nothing to do)."""
    if ratio == 1.0:
        return None
    if not ratio < 2**29:
        raise ContractError(f"--precision integer: {where} changes scale by {ratio:.3g}, past int32")
    m, s = quantize_multiplier(np.array([ratio]))
    return int(m[0]), int(s[0])


def refuse(what: str) -> ContractError:
    return ContractError(
        f"--precision integer: {what} has no integer form; it takes {', '.join(SUPPORTED)} "
        "(deploy this model as float32 or int8)"
    )


class _Builder:
    def __init__(self, program: Program, run: FloatRun):
        self.program, self.run = program, run
        self.buffers: list[Buffer] = []
        self.index: dict[int, int] = {}
        self.ops: list = []
        self.copy_writers: dict[int, int] = {}
        self.feature_scales: np.ndarray | None = None  # one scale per feature, where products alone read x
        for op in program.ops:
            if isinstance(op, Copy):
                self.copy_writers[id(op.dst)] = self.copy_writers.get(id(op.dst), 0) + 1
        self.state_of_output: dict[int, int] = {}
        for t_in, t_out in program.states:
            if t_out.offset == 0 and t_out.size == t_out.storage.size and t_out.storage.kind == "arena":
                self.state_of_output[id(t_out.storage)] = id(t_in.storage)

    # -- buffers

    def add(self, storage: Storage, scale: float, kind: str | None = None, **extra) -> int:
        key = id(storage)
        if key in self.index:
            return self.index[key]
        self.index[key] = len(self.buffers)
        name = f"b{len(self.buffers)}"
        self.buffers.append(Buffer(kind or storage.kind, storage.size, float(scale), name=name, **extra))
        return self.index[key]

    def calibrated(self, storage: Storage) -> int:
        """A buffer at the scale of its peak; the next value of a state at the state's own scale."""
        state = self.state_of_output.get(id(storage))
        if state is not None and state in self.index:
            return self.add(storage, self.buffers[self.index[state]].scale)
        return self.add(storage, scale_of(self.run.peaks.get(id(storage), 0.0)))

    def const(self, t: Tensor) -> int:
        """A constant storage as int16 at its own scale."""
        if id(t.storage) not in self.index:
            values = np.asarray(t.storage.array, np.float64)
            peak = float(np.abs(values).max(initial=0.0))
            scale = peak / ops.INT16_MAX if peak > 0 else 1.0
            q = np.clip(np.round(values / scale), -ops.INT16_MAX, ops.INT16_MAX).astype(np.int64)
            self.add(t.storage, scale, "const", values=q)
        return self.index[id(t.storage)]

    def view(self, t: Tensor) -> View:
        if id(t.storage) not in self.index:
            if t.storage.kind != "const":
                raise ContractError(f"--precision integer: {t.name!r} is read before it is written")
            self.const(t)
        return View(self.index[id(t.storage)], t.offset, tuple(t.shape))

    def scale(self, t: Tensor) -> float:
        return self.buffers[self.view(t).buffer].scale

    def out(self, t: Tensor, scale: float | None = None) -> View:
        if scale is None:
            self.calibrated(t.storage)
        else:
            self.add(t.storage, scale)
        return View(self.index[id(t.storage)], t.offset, tuple(t.shape))

    # -- operations

    def gemv(self, op: Gemv | SparseGemv) -> None:
        x = self.view(op.x)
        buffer = self.buffers[x.buffer]
        s_x = np.full(op.x.size, buffer.scale)
        if buffer.kind == "x" and self.feature_scales is not None:
            s_x = self.feature_scales[x.offset : x.offset + op.x.size]
        out = self.out(op.out)
        w = op.weight.astype(np.float64).T * s_x[None, :]  # (N, K) in units of x's integers
        bias = np.zeros(w.shape[0]) if op.bias is None else op.bias.astype(np.float64)
        where = f"the product into {op.out.name!r}"
        p = quantize_product(w, bias, self.buffers[out.buffer].scale, where, bias_limit=2**30)
        accumulate = getattr(op, "accumulate", False)
        self.ops.append(QGemv(out, x, p.weight, p.bias, p.multiplier, p.shift, accumulate))

    def elementwise(self, op: Elementwise) -> None:
        name = op.op
        inputs = op.inputs
        if name == "Div":
            if inputs[1].storage.kind != "const":
                raise refuse(f"Div by a tensor computed at run time ({op.out.name!r})")
            reciprocal = 1.0 / inputs[1].storage.array.astype(np.float64)
            if not np.isfinite(reciprocal).all():
                raise refuse(f"Div by zero ({op.out.name!r})")
            inputs = [
                inputs[0],
                Tensor(inputs[1].name, inputs[1].shape, "f", Storage("const", reciprocal.size, reciprocal)),
            ]
            name = "Mul"
        if name in COMPARISONS:
            self.compare(op, COMPARISONS[name], inputs)
            return
        if name in LOGIC:
            views = [self.view(t) for t in inputs]
            self.ops.append(QMap(LOGIC[name], self.out(op.out, 1.0), views, [None] * len(views)))
            return
        if name in ("Sigmoid", "Tanh"):
            a = self.view(inputs[0])
            rescale = _ratio(self.scale(inputs[0]) / GATE_SCALE, f"{name} of {inputs[0].name!r}")
            self.ops.append(QMap(name.lower(), self.out(op.out, ACT_SCALE), [a], [rescale or IDENTITY]))
            return
        if name in SAME_SCALE:
            self.same_scale(op, SAME_SCALE[name], inputs[0])
            return
        if name not in CALIBRATED:
            raise refuse(f"op {name} ({op.out.name!r})")
        if name == "Where" and self.flush(op, inputs):
            return
        views = [self.view(t) for t in inputs]
        out = self.out(op.out)
        s_out = self.buffers[out.buffer].scale
        where = f"{name} into {op.out.name!r}"
        if name == "Mul":
            ratio = self.scale(inputs[0]) * self.scale(inputs[1]) / s_out
            self.ops.append(QMap("mul", out, views, [_ratio(ratio, where) or IDENTITY, None]))
            return
        rescales = [_ratio(self.scale(t) / s_out, where) for t in inputs]
        if name == "Where":
            rescales[0] = None
        self.ops.append(QMap(CALIBRATED[name], out, views, rescales))

    def producer(self, view: View) -> QMap | None:
        """The element-wise operation that wrote exactly ``view``, if one did."""
        for op in reversed(self.ops):
            if isinstance(op, QMap) and op.out == view:
                return op
        return None

    def flush(self, op: Elementwise, inputs: list[Tensor]) -> bool:
        """``Where(|v| < tiny, 0, v)`` (every graph flushes a state's denormals so): in integers |v| < 1 is
        v = 0, so it is v itself, requantized to the output's scale (the comparison and |v| left unread)."""
        cond, zero, value = inputs
        less = self.producer(self.view(cond))
        if less is None or less.op != "less" or less.params.get("threshold", 2) > 1:
            return False
        absolute = self.producer(less.inputs[0])
        if absolute is None or absolute.op != "abs" or absolute.inputs[0] != self.view(value):
            return False
        if zero.storage.kind != "const" or np.any(zero.storage.array != 0):
            return False
        out = self.out(op.out)
        rescale = _ratio(self.scale(value) / self.buffers[out.buffer].scale, "a copy")
        self.ops.append(QMap("rescale", out, [self.view(value)], [rescale]))
        return True

    def same_scale(self, op: Elementwise, kind: str, source: Tensor) -> None:
        a, s = self.view(source), self.scale(source)
        out = self.out(op.out, s)
        params: dict[str, int] = {}
        rescale = None
        if kind == "clip":
            low, high = op.attrs.get("min"), op.attrs.get("max")
            params["low"] = (
                -ops.INT16_MAX - 1 if low is None else int(max(-32768, min(32768, math.ceil(low / s))))
            )
            params["high"] = (
                ops.INT16_MAX if high is None else int(max(-32769, min(32767, math.floor(high / s))))
            )
        if kind == "leaky_relu":
            alpha = float(op.attrs.get("alpha", 0.01))
            if not 0 <= alpha < 1:
                raise refuse(f"LeakyRelu with alpha {alpha}")
            rescale = _ratio(alpha, "LeakyRelu") if alpha > 0 else (0, 1)
        self.ops.append(QMap(kind, out, [a], [rescale], params))

    def compare(self, op: Elementwise, kind: str, inputs: list[Tensor]) -> None:
        a, b = inputs
        if a.storage.kind == "const" and b.storage.kind != "const" and kind in FLIPPED:
            a, b, kind = b, a, FLIPPED[kind]
        out = self.out(op.out, 1.0)
        if b.storage.kind == "const" and b.size == 1:
            t = float(b.storage.array.reshape(-1)[b.offset]) / self.scale(a)
            if kind in ("less", "greater_equal"):
                threshold = math.ceil(t)
            elif kind in ("greater", "less_equal"):
                threshold = math.floor(t)
            else:
                threshold = int(t) if t == int(t) else 40000
            threshold = int(max(-40000, min(40000, threshold)))
            self.ops.append(QMap(kind, out, [self.view(a)], [None], {"threshold": threshold}))
            return
        common = min(self.scale(a), self.scale(b))
        where = f"the comparison into {op.out.name!r}"
        rescales = [_ratio(self.scale(t) / common, where) for t in (a, b)]
        self.ops.append(QMap(kind, out, [self.view(a), self.view(b)], rescales))

    def copy(self, op: Copy) -> None:
        src = self.index.get(id(op.src))
        if src is None:
            src = self.const(Tensor("const", (op.src.size,), "f", op.src))
        if self.copy_writers.get(id(op.dst), 0) > 1:
            dst = self.calibrated(op.dst)
        else:
            dst = self.add(op.dst, self.buffers[src].scale)
        rescale = _ratio(self.buffers[src].scale / self.buffers[dst].scale, "a copy")
        self.ops.append(
            QCopy(dst, op.dst_offset, op.dst_strides, src, op.src_offset, op.src_strides, op.shape, rescale)
        )

    def layer_norm(self, op: LayerNorm) -> None:
        if op.size > integer_layers.MAX_NORM_SIZE:
            raise refuse(f"LayerNormalization over {op.size} values (at most {integer_layers.MAX_NORM_SIZE})")
        x, s_x = self.view(op.x), self.scale(op.x)
        out = self.out(op.out)
        gamma = np.ones(op.size) if op.scale is None else op.scale.astype(np.float64)
        beta = np.zeros(op.size) if op.bias is None else op.bias.astype(np.float64)
        peak = float(np.abs(gamma).max(initial=0.0))
        s_g = peak / 16384.0 if peak > 0 else 1.0
        g_q = np.round(gamma / s_g).astype(np.int64)
        b_q = np.round(beta / (s_g * 2.0**-integer_layers.NORM_FRAC))
        if not np.abs(b_q).max(initial=0) < 2**29:
            raise refuse(
                f"LayerNormalization into {op.out.name!r} (its bias is past 16 times its largest scale)"
            )
        eps = min(integer_layers.EPS_LIMIT, round(op.epsilon * op.size**2 / s_x**2))
        ratio = s_g * 2.0**-integer_layers.NORM_FRAC / self.buffers[out.buffer].scale
        m, s = _ratio(ratio, "LayerNormalization") or IDENTITY
        self.ops.append(QLayerNorm(out, x, op.size, g_q, b_q.astype(np.int64), int(eps), m, s))

    def softmax(self, op: Softmax) -> None:
        if op.log:
            raise refuse(f"LogSoftmax ({op.out.name!r})")
        if op.size > 65535:  # the sum of the exps stays within int32
            raise refuse(f"Softmax over {op.size:,} values (at most 65,535)")
        x = self.view(op.x)
        m, s = _ratio(self.scale(op.x) / 2.0**-integer_layers.EXP_FRAC, "Softmax") or IDENTITY
        self.ops.append(QSoftmax(self.out(op.out, ACT_SCALE), x, op.size, m, s))

    def gather(self, op: GatherRow) -> None:
        table = op.table.astype(np.float64)
        peak = float(np.abs(table).max(initial=0.0))
        scale = peak / ops.INT16_MAX if peak > 0 else 1.0
        q = np.clip(np.round(table / scale), -ops.INT16_MAX, ops.INT16_MAX).astype(np.int64)
        self.ops.append(QGather(self.out(op.out, scale), q))

    def indexed_copy(self, op: IndexedCopy) -> None:
        x = self.view(op.x)
        out = self.out(op.out, self.scale(op.x))
        self.ops.append(QIndexedCopy(out, x, op.indices.astype(np.int64), op.outer, op.rows, op.inner))


def _drop_unread(builder: _Builder) -> None:
    """Leave out the operations whose scratch output nothing reads (the flush's comparison and |v|)."""
    program = builder.program
    needed = {builder.index[id(t.storage)] for _, t in program.states} | {
        builder.index[id(program.y.storage)]
    }
    kept = []
    for op in reversed(builder.ops):
        written = op.dst if isinstance(op, QCopy) else op.out.buffer
        if builder.buffers[written].kind == "arena" and written not in needed:
            continue
        kept.append(op)
        if isinstance(op, QCopy):
            needed.add(op.src)
        elif isinstance(op, QMap):
            needed.update(v.buffer for v in op.inputs)
        elif not isinstance(op, QGather):
            needed.add(op.x.buffer)
    builder.ops = kept[::-1]


def _x_read_by_products_alone(program: Program) -> bool:
    storage = program.x.storage
    for op in program.ops:
        reads = []
        if isinstance(op, Elementwise):
            reads = [t.storage for t in op.inputs]
        elif isinstance(op, Copy):
            reads = [op.src]
        elif isinstance(op, (IndexedCopy, LayerNorm, Softmax)):
            reads = [op.x.storage]
        if any(r is storage for r in reads):
            return False
    return storage is not program.y.storage


def integer_program(program: Program, run: FloatRun) -> IntegerProgram:
    """The IntegerProgram of ``program`` with the scales of ``run`` (its peaks over the calibration data)."""
    info = program.info
    builder = _Builder(program, run)
    tokens = info.input.kind == "tokens"
    if tokens:
        x = builder.add(program.x.storage, 1.0, "token")
        input_scale = None
    else:
        input_scale = np.array([scale_of(p) for p in run.feature_peaks])
        if _x_read_by_products_alone(program):
            builder.feature_scales = input_scale
            x = builder.add(program.x.storage, float(input_scale.max()), "x")
        else:
            input_scale = np.full(program.x.size, input_scale.max())
            x = builder.add(program.x.storage, float(input_scale[0]), "x")
    for t_in, _ in program.states:
        builder.add(
            t_in.storage, scale_of(run.peaks.get(id(t_in.storage), 0.0)), "state", base=t_in.storage.base
        )
    writers = {
        "Gemv": builder.gemv,
        "SparseGemv": builder.gemv,  # a mostly-zero matrix (float32 keeps its nonzeros): a dense int8 product
        "Elementwise": builder.elementwise,
        "Copy": builder.copy,
        "LayerNorm": builder.layer_norm,
        "Softmax": builder.softmax,
        "GatherRow": builder.gather,
        "IndexedCopy": builder.indexed_copy,
        "Mark": lambda op: None,
    }
    consumed: set[int] = set()
    for index, op in enumerate(program.ops):
        kind = type(op).__name__
        if index in consumed:
            continue
        if kind == "RealFFT":  # a keyword model's front end: FFT, power, mel bands, floor, log as one QLogMel
            consumed.update(build_log_mel(builder, program.ops, index))
            continue
        if kind not in writers:
            raise refuse(f"the operation {kind}")
        writers[kind](op)
    _drop_unread(builder)
    states, rescales = [], []
    for t_in, t_out in program.states:
        index, out = builder.index[id(t_in.storage)], builder.view(t_out)
        states.append((index, out))
        ratio = builder.buffers[out.buffer].scale / builder.buffers[index].scale
        rescales.append(_ratio(ratio, "a state"))
    y = builder.view(program.y)
    return IntegerProgram(
        buffers=builder.buffers,
        ops=builder.ops,
        x=x,
        states=states,
        y=y,
        input_kind=info.input.kind,
        input_size=info.input.size,
        state_names=tuple(s.input for s in info.states),
        state_shapes=tuple(tuple(s.shape) for s in info.states),
        input_scale=input_scale,
        state_rescale=rescales,
        details={"activations": "int16, one calibrated scale per buffer", "gates": "int16 Q3.12 into tables"},
    )
