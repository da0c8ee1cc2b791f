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
Sigmoid, tanh and exp are the file's own branch-free functions (see EXP_MAX_REL_ERROR), so they vectorise
too and no libm is needed for a GRU/LSTM.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgernn.export.c.lower import (
    Copy,
    Elementwise,
    GatherRow,
    Gemv,
    LayerNorm,
    Program,
    Softmax,
    Storage,
    Tensor,
    _contiguous_strides,
    broadcast_strides,
)
from edgernn.runtime.errors import ContractError

AXPY_INPUTS = 4  # rows of a matrix each pass over the output adds in
ROWS_PER_DOT = 4  # int8: outputs each pass over the quantized input computes
ALIGN = 8  # floats (32 bytes): every scratch tensor starts on a 256-bit vector boundary
PER_LINE = 12

# tanh as a rational function: odd polynomial of degree 13 over an even one of degree 6, on x clamped to
# +-7.9988 (past which float32 tanh is +-1 within rounding). The coefficients are Eigen's (ptanh_float).
# Measured maximum error over [-10, 10]: FAST_TANH_MAX_ERROR; sigmoid(x) = 0.5 + 0.5 tanh(x / 2).
FAST_TANH_ALPHA = (
    4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
    -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16,
)  # fmt: skip
FAST_TANH_BETA = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)
FAST_TANH_CLAMP = 7.99881172180175781

# The default exp, sigmoid and tanh: float32 code of the generated file itself, no libm, no branches (every
# select is a mask on integer bits and every clamp an integer min: gcc does not if-convert float compares,
# nor speculate float arithmetic that a branch would skip, under the default -ftrapping-math), so the activation
# loops vectorise at -O3 (and at -O2 wherever the target has vector blends, AVX and up).
# exp(x): x clamped to [-150, 150] (on its bits); n = round(x / ln 2) by the 1.5 * 2^23 rounding trick; r = x - n ln 2 in
# two parts (Cody-Waite); exp(r) by Cephes' degree-7 minimax polynomial; 2^n as two powers of two built in
# the exponent bits, so results overflow to +inf and underflow through the subnormals to 0 as expf's do.
# sigmoid(x) = 1 / (1 + exp(-x)); tanh(x): Cephes' odd polynomial below |x| = 0.625, else
# sign(x) (1 - 2 / (exp(2 |x|) + 1)) with |x| clamped to 9. Measured against double precision over every
# third float32 (benchmarks/c_activations.py; tests/test_c_target.py samples every float's neighbourhood):
EXP_MAX_REL_ERROR = 8.2e-08  # results in the normal range
TANH_MAX_ABS_ERROR = 7.9e-08
SIGMOID_MAX_ABS_ERROR = 8.9e-08
EXP_POLY = (
    1.9875691500e-4,
    1.3981999507e-3,
    8.3334519073e-3,
    4.1665795894e-2,
    1.6666665459e-1,
    5.0000001201e-1,
)
TANH_POLY = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1)


def literal(value: float) -> str:
    """A C float literal that reads back as exactly this float32."""
    v = np.float32(value)
    if np.isnan(v):
        raise ContractError("a NaN constant cannot be written as C")
    if np.isinf(v):
        return "HUGE_VALF" if v > 0 else "(-HUGE_VALF)"
    text = repr(float(v)) if v == 0 else np.format_float_scientific(v, unique=True, trim="-")
    if "e" in text:
        mantissa, exponent = text.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        text = f"{mantissa}e{int(exponent)}"
    elif "." not in text:
        text += ".0"
    return text + "f"


def _floats(array: np.ndarray) -> str:
    a = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
    if not np.isfinite(a).all():
        raise ContractError("a weight holds non-finite values, which the C target cannot store")
    texts = np.char.mod("%.9g", a.astype(np.float64))
    texts = [t + ("f" if ("." in t or "e" in t) else ".0f") for t in texts.tolist()]
    return _lines(texts)


def _ints(array: np.ndarray) -> str:
    return _lines([str(int(v)) for v in np.asarray(array).reshape(-1)])


def _lines(items: list[str]) -> str:
    if not items:
        return "0"
    per = PER_LINE * 2 if len(items[0]) < 6 else PER_LINE
    return ",\n".join("    " + ", ".join(items[i : i + per]) for i in range(0, len(items), per))


def c_string(text: str) -> str:
    """A C string literal (octal escapes for anything outside printable ASCII)."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= byte < 127 and ch != "?":  # '?' never starts a trigraph
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def quantize_rows(matrix: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per slice along ``axis`` (per output column of an input-major
    matrix, per token row of an embedding table): q in [-127, 127], value = q * scale."""
    m = np.asarray(matrix, dtype=np.float32)
    peak = np.abs(m).max(axis=1 - axis)
    scale = (peak / np.float32(127.0)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    shape = (1, -1) if axis == 1 else (-1, 1)
    q = np.clip(np.rint(m / safe.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def dequantize_rows(q: np.ndarray, scale: np.ndarray, axis: int) -> np.ndarray:
    shape = (1, -1) if axis == 1 else (-1, 1)
    return (q.astype(np.float32) * scale.reshape(shape)).astype(np.float32)


@dataclass
class Emitted:
    header: str
    source: str
    flash_bytes: int
    ram_bytes: int
    scratch_bytes: int
    replaced: dict[str, np.ndarray] = field(default_factory=dict)  # initializer -> its int8 rounding
    quantized_inputs: list[tuple[str, str]] = field(default_factory=list)  # int8: (x tensor, weight)


class _Emitter:
    def __init__(self, program: Program, name: str, precision: str, fast: bool, metadata: str):
        self.p, self.name, self.NAME = program, name, name.upper()
        self.int8 = precision == "int8"
        self.fast = fast
        self.metadata = metadata
        self.arrays: list[str] = []
        self.array_names: dict[tuple[str, str], str] = {}
        self.flash = 0
        self.replaced: dict[str, np.ndarray] = {}
        self.helpers: set[str] = set()
        self.arena_base: dict[int, int] = {}
        self.alias: dict[int, tuple[int, int]] = {}  # id(storage) -> (id(the storage it lives in), offset)
        self.arena_size = 0
        self.quantized_inputs: list[tuple[str, str]] = []  # int8: (graph tensor, weight) of each product
        self.int8_scratch = 0  # bytes: the largest quantized input vector
        self.serpentine = False  # an int8 product reads the state's pass bit

    # -- constant arrays

    def const_array(self, array: np.ndarray, ctype: str, prefix: str = "w") -> str:
        array = np.ascontiguousarray(array)
        key = (ctype, hashlib.sha256(array.tobytes() + str(array.dtype).encode()).hexdigest())
        if key in self.array_names:
            return self.array_names[key]
        symbol = f"{self.name}_{prefix}{len(self.array_names)}"
        self.array_names[key] = symbol
        byte = ctype in ("int8_t", "uint8_t")
        body = _ints(array) if byte else _floats(array)
        self.arrays.append(f"static const {ctype} {symbol}[{max(1, array.size)}] = {{\n{body}\n}};")
        self.flash += array.size * (1 if byte else 4)
        return symbol

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
            root, offset = self._root(id(s))
            return self.arena_base[root] + offset
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

    # -- scratch placement

    def split_state_products(self) -> None:
        """A product of a state alone that adds into another product's output (a layer's hidden-to-hidden
        product added to its input-to-hidden one) writes its own buffer instead, added after: it can then
        run first (``hoistable``), and both orders compute the same bits."""
        ops = []
        for op in self.p.ops:
            if isinstance(op, Gemv) and op.accumulate and op.x.storage.kind == "state" and op.bias is None:
                alone = Tensor(f"{op.out.name}_state", op.out.shape, "f", Storage("arena", op.out.size))
                ops.append(Gemv(alone, op.x, op.weight, None, False, op.source, op.x_name))
                ops.append(Elementwise(op.out, "Add", [op.out, alone]))
            else:
                ops.append(op)
        self.p.ops = ops

    def hoistable(self) -> list[int]:
        """The indices of the products of a state alone (each layer's hidden-to-hidden product): nothing
        computed in the step feeds them, so they may run first. int8 steps run them first, last layer
        first, on the steps that walk their rows backward: the weights read at the end of one step are
        then the first read by the next, which keeps about half of them in a cache too small for all."""
        if any(s.kind == "state" for op in self.p.ops for s in self.writes(op)):
            return []
        found, touched = [], set()
        for index, op in enumerate(self.p.ops):
            if (
                isinstance(op, Gemv)
                and not op.accumulate
                and op.x.storage.kind == "state"
                and op.out.storage.kind == "arena"
                and id(op.out.storage) not in touched
            ):
                found.append(index)
            touched.update(id(s) for s in (*self.writes(op), *self.reads(op)))
        return found

    def plan(self, extra_live: list[Storage], born_first: list[Storage] = ()) -> None:
        """Place every scratch storage so that no two alive at the same op overlap; ``born_first``
        storages are alive from the first op (their op may run first)."""
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        storages: dict[int, Storage] = {}
        end = len(self.p.ops)
        for index, op in enumerate(self.p.ops):
            for s in self.writes(op):
                if s.kind == "arena":
                    storages[id(s)] = s
                    first.setdefault(id(s), index)
                    last[id(s)] = max(last.get(id(s), index), index)
            for s in self.reads(op):
                if s.kind == "arena":
                    if id(s) not in first:
                        raise ContractError("internal: a scratch buffer is read before it is written")
                    last[id(s)] = index
        for s in extra_live:
            if s.kind == "arena" and id(s) in first:
                last[id(s)] = end
        for s in born_first:
            first[id(s)] = 0
        self._in_place(first, last, storages)
        placed: list[tuple[int, int, int, int]] = []  # (first, last, start, stop)
        for key in sorted(storages, key=lambda k: (first[k], -storages[k].size)):
            s = storages[key]
            size = -(-s.size // ALIGN) * ALIGN
            busy = sorted((lo, hi) for f, end_, lo, hi in placed if f <= last[key] and first[key] <= end_)
            start = 0
            for b_start, b_stop in busy:
                if start + size <= b_start:
                    break
                start = max(start, b_stop)
            placed.append((first[key], last[key], start, start + size))
            self.arena_base[key] = start
        self.arena_size = max([stop for *_, stop in placed], default=0)

    def _root(self, key: int) -> tuple[int, int]:
        return self.alias.get(key, (key, 0))

    def _in_place(self, first: dict[int, int], last: dict[int, int], storages: dict[int, Storage]) -> None:
        """An element-wise op writes over an input it reads at the same index when nothing reads that
        input's buffer after it (a gate's sigmoid over the GEMV that made it): less scratch RAM."""
        for index, op in enumerate(self.p.ops):
            if not isinstance(op, Elementwise) or op.out.storage.kind != "arena" or op.out.offset:
                continue
            out_key = id(op.out.storage)
            if out_key not in storages or first[out_key] != index:
                continue
            for t in op.inputs:
                if t.storage.kind != "arena" or t.size != op.out.size:
                    continue
                root, offset = self._root(id(t.storage))
                if last[root] != index:
                    continue
                start = offset + t.offset
                clash = False
                for u in op.inputs:
                    if u is t or u.storage.kind != "arena":
                        continue
                    u_root, u_offset = self._root(id(u.storage))
                    u_start = u_offset + u.offset
                    same = u_start == start and u.size == t.size
                    if u_root == root and not same and u_start < start + t.size and start < u_start + u.size:
                        clash = True
                if clash:
                    continue
                self.alias[out_key] = (root, start)
                last[root] = max(last[root], last[out_key])
                del storages[out_key]
                break

    def writes(self, op) -> list[Storage]:
        if isinstance(op, Copy):
            return [op.dst]
        return [op.out.storage]

    def reads(self, op) -> list[Storage]:
        if isinstance(op, Copy):
            return [op.src]
        if isinstance(op, Gemv):
            extra = [op.out.storage] if op.accumulate else []
            return [op.x.storage, *extra]
        if isinstance(op, GatherRow):
            return []
        if isinstance(op, Elementwise):
            return [t.storage for t in op.inputs]
        return [op.x.storage]

    # -- operations

    def emit_op(self, op) -> list[str]:
        if isinstance(op, Gemv):
            return self.gemv(op)
        if isinstance(op, Elementwise):
            return self.elementwise(op)
        if isinstance(op, Copy):
            return self.copy(op)
        if isinstance(op, GatherRow):
            return self.gather(op)
        if isinstance(op, LayerNorm):
            return self.layer_norm(op)
        if isinstance(op, Softmax):
            return self.softmax(op)
        raise ContractError(f"internal: no C for {type(op).__name__}")

    def gemv(self, op: Gemv) -> list[str]:
        k, n = op.weight.shape
        x = op.x
        lines = [f"{{ /* {op.out.name}: {k} -> {n}{', added' if op.accumulate else ''} */"]
        lines.append(f"    const float *restrict v = {self.ptr(x)};")
        if self.int8:
            return self._gemv_int8(op, k, n, lines)
        w = self.const_array(op.weight, "float", "w")
        lines.append(f"    float *restrict o = {self.ptr(op.out)};")
        lines.append(f"    const float *restrict w = {w};")
        if op.bias is not None:
            b = self.const_array(op.bias, "float", "b")
            lines.append(f"    for (int j = 0; j < {n}; j++) o[j] = {b}[j];")
        elif not op.accumulate:
            lines.append(f"    for (int j = 0; j < {n}; j++) o[j] = 0.0f;")
        lines += self._axpy(k, n, "o", "")
        lines.append("}")
        return lines

    def _gemv_int8(self, op: Gemv, k: int, n: int, lines: list[str]) -> list[str]:
        """int8 x int8 in int32: x quantized once (symmetric, one scale from its max |x|, rounded half to
        even as onnx Round), the weights stored output-major and offset by 128 (uint8), so that each output
        is a contiguous unsigned-by-signed byte dot product (gcc: vpdpbusd with AVX512-VNNI / AVX-VNNI,
        pmaddwd elsewhere); 128 times the sum of x is taken off in int32, which leaves exactly the int8
        product. Then it is scaled by the output's scale times x's and the float bias added. The rows are
        walked forward or backward as the state's pass bit says (the same sums either way)."""
        q, scale = quantize_rows(op.weight, axis=1)
        if op.source is None:
            raise ContractError(
                f"int8: the matrix of {op.out.name!r} is computed in the graph rather than stored, so no "
                "reference graph with its int8 rounding can check the C; deploy this file as float32"
            )
        if op.x_name is None:
            raise ContractError(f"int8: the input of {op.out.name!r} has no name in the graph")
        self._record(op.source, q, scale)
        self.quantized_inputs.append((op.x_name, op.source[0]))
        self.helpers.add("bits")
        self.int8_scratch = max(self.int8_scratch, 2 * k)  # int16 where the bytes have no dot product
        offset = (np.ascontiguousarray(q.T).astype(np.int16) + 128).astype(np.uint8)
        w = self.const_array(offset, "uint8_t", "q")
        s = self.const_array(scale, "float", "s")
        b = self.const_array(op.bias, "float", "b") if op.bias is not None else None
        bits = f"{self.name}_bits"
        lines += [
            f"    float *restrict o = {self.ptr(op.out)};",
            f"    const uint8_t *restrict w = {w}; /* output-major: row j is output j's {k} weights + 128 */",
            f"    {self.name}_xq xq[{k}];",
            "    uint32_t top = 0;",
            f"    for (int i = 0; i < {k}; i++) {{ {bits} a; a.f = v[i]; a.u &= 0x7FFFFFFFu; "
            "top = a.u > top ? a.u : top; }",
            f"    {bits} m; m.u = top; /* max |v|: NaN stays NaN */",
            "    const float peak = m.f < 1e-30f ? 1e-30f : m.f;",
            "    const float inv = 127.0f / peak, vs = peak / 127.0f;",
            "    int32_t xsum = 0;",
            f"    for (int i = 0; i < {k}; i++) {{ {bits} r; r.f = v[i] * inv + 12583040.0f; "
            "const int32_t qi = (int32_t)((r.u - 0x4B400000u) & 0xFFu) - 128; "
            f"xq[i] = ({self.name}_xq)qi; xsum += qi; }} /* round half to even */",
            "    const int32_t offset = 128 * xsum; /* the weights' +128 times x */",
        ]

        def store(index: str, acc: str) -> str:
            value = f"({s}[{index}] * vs) * (float)({acc} - offset)"
            if op.accumulate:
                return f"o[{index}] += {value};"
            if b is not None:
                return f"o[{index}] = {value} + {b}[{index}];"
            return f"o[{index}] = {value};"

        rows = ROWS_PER_DOT
        whole = n // rows * rows
        if whole:  # ROWS_PER_DOT outputs per pass over xq: fewer loads of xq, fewer horizontal sums
            self.serpentine = True
            accs = [f"a{g}" for g in range(rows)]
            lines += [
                f"    for (int jj = 0; jj < {whole}; jj += {rows}) {{",
                f"        const int j = back ? {whole - rows} - jj : jj;",
                f"        const uint8_t *restrict r = w + j * {k};",
                f"        int32_t {', '.join(f'{a} = 0' for a in accs)};",
                f"        for (int i = 0; i < {k}; i++) {{",
                "            const int32_t x = xq[i];",
                *(f"            {a} += (int32_t)r[{g * k} + i] * x;" for g, a in enumerate(accs)),
                "        }",
                *(f"        {store(f'j + {g}' if g else 'j', a)}" for g, a in enumerate(accs)),
                "    }",
            ]
        if n - whole:
            lines += [
                f"    for (int j = {whole}; j < {n}; j++) {{",
                f"        const uint8_t *restrict r = w + j * {k};",
                "        int32_t acc = 0;",
                f"        for (int i = 0; i < {k}; i++) acc += (int32_t)r[i] * (int32_t)xq[i];",
                f"        {store('j', 'acc')}",
                "    }",
            ]
        lines.append("}")
        return lines

    def _axpy(self, k: int, n: int, out: str, cast: str) -> list[str]:
        """``out[j] += sum_i v[i] * w[i][j]``, AXPY_INPUTS rows of w per pass over out (fewer loads and
        stores of out per product; the inner loop over j has no reduction in it and vectorises)."""
        ctype = "int8_t" if cast else "float"
        lines = []
        group = AXPY_INPUTS
        whole = k // group * group
        if whole:
            lines.append(f"    for (int i = 0; i < {whole}; i += {group}) {{")
            for g in range(group):
                lines.append(f"        const float x{g} = v[i + {g}];")
                lines.append(f"        const {ctype} *restrict w{g} = w + (i + {g}) * {n};")
            terms = " + ".join(f"x{g} * {cast}w{g}[j]" for g in range(group))
            lines.append(f"        for (int j = 0; j < {n}; j++) {out}[j] += {terms};")
            lines.append("    }")
        rest = k - whole
        if rest:
            lines.append("    {")
            for g in range(rest):
                lines.append(f"        const float x{g} = v[{whole + g}];")
                lines.append(f"        const {ctype} *restrict w{g} = w + {(whole + g) * n};")
            terms = " + ".join(f"x{g} * {cast}w{g}[j]" for g in range(rest))
            lines.append(f"        for (int j = 0; j < {n}; j++) {out}[j] += {terms};")
            lines.append("    }")
        return lines

    def _record(self, source: tuple[str, str], q: np.ndarray, scale: np.ndarray) -> None:
        name, kind = source
        value = dequantize_rows(q, scale, axis=1)
        if kind == "gemm_t":
            value = value.T
        elif kind != "matmul":
            raise ContractError(
                f"int8: weight {name!r} is scaled inside the graph (Gemm alpha); no float reference"
            )
        value = np.ascontiguousarray(value)
        if name in self.replaced and not np.array_equal(self.replaced[name], value):
            raise ContractError(f"int8: weight {name!r} is used by two products with different layouts")
        self.replaced[name] = value

    def elementwise(self, op: Elementwise) -> list[str]:
        out = op.out
        n = out.size
        shapes = [broadcast_strides(t.shape, out.shape) for t in op.inputs]
        flat = all(t.size == n or t.size == 1 for t in op.inputs)
        if flat:
            args = [self.ref(t.storage, t.offset, "i" if t.size == n and n > 1 else "0") for t in op.inputs]
            expr = self.expression(op, args)
            return [f"for (int i = 0; i < {n}; i++) {self.ref(out.storage, out.offset, 'i')} = {expr};"]
        rank = len(out.shape)
        loops = [f"for (int i{d} = 0; i{d} < {out.shape[d]}; i{d}++)" for d in range(rank)]
        out_index = " + ".join(f"i{d} * {s}" for d, s in enumerate(_contiguous_strides(out.shape)) if s)
        args = []
        for t, strides in zip(op.inputs, shapes, strict=True):
            index = " + ".join(f"i{d} * {s}" for d, s in enumerate(strides) if s) or "0"
            args.append(self.ref(t.storage, t.offset, index))
        return [
            " ".join(loops)
            + f" {self.ref(out.storage, out.offset, out_index)} = {self.expression(op, args)};"
        ]

    def exp(self) -> str:
        """The generated file's own exp (no libm, vectorisable; see EXP_MAX_REL_ERROR)."""
        self.helpers.add("exp")
        return f"{self.name}_exp"

    def expression(self, op: Elementwise, args: list[str]) -> str:
        a = args[0]
        b = args[1] if len(args) > 1 else None
        attrs = op.attrs

        def f(key: str, default: float) -> str:
            return literal(attrs.get(key, default))

        name = op.op
        if name == "Sigmoid":
            if self.fast:
                self.helpers.add("fast")
                return f"{self.name}_fast_sigmoid({a})"
            self.helpers.add("exp")
            return f"{self.name}_sigmoid({a})"
        if name == "Tanh":
            if self.fast:
                self.helpers.add("fast")
                return f"{self.name}_fast_tanh({a})"
            self.helpers.add("exp")
            return f"{self.name}_tanh({a})"
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
            "Exp": f"{self.exp()}({a})",
            "Log": f"logf({a})",
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
            return f"({a} >= 0.0f ? {a} : {f('alpha', 1.0)} * ({self.exp()}({a}) - 1.0f))"
        if name == "Celu":
            alpha = f("alpha", 1.0)
            return f"({a} > 0.0f ? {a} : {alpha} * ({self.exp()}({a} / {alpha}) - 1.0f))"
        if name == "Selu":
            alpha, gamma = f("alpha", 1.67326319217681884765625), f("gamma", 1.05070102214813232421875)
            return f"({a} > 0.0f ? {gamma} * {a} : {gamma} * {alpha} * ({self.exp()}({a}) - 1.0f))"
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

    def copy(self, op: Copy) -> list[str]:
        shape, dst_strides, src_strides = _collapse(op.shape, op.dst_strides, op.src_strides)
        if not shape:
            return [f"{self.ref(op.dst, op.dst_offset, '0')} = {self.ref(op.src, op.src_offset, '0')};"]
        loops = [f"for (int i{d} = 0; i{d} < {n}; i{d}++)" for d, n in enumerate(shape)]
        dst = " + ".join(f"i{d} * {s}" if s != 1 else f"i{d}" for d, s in enumerate(dst_strides) if s) or "0"
        src = " + ".join(f"i{d} * {s}" if s != 1 else f"i{d}" for d, s in enumerate(src_strides) if s) or "0"
        return [
            " ".join(loops)
            + f" {self.ref(op.dst, op.dst_offset, dst)} = {self.ref(op.src, op.src_offset, src)};"
        ]

    def gather(self, op: GatherRow) -> list[str]:
        vocab, width = op.table.shape
        out = self.ptr(op.out)
        if self.int8:
            q, scale = quantize_rows(op.table, axis=0)
            if op.source is None:
                raise ContractError(
                    f"int8: the table of {op.out.name!r} is computed in the graph rather than stored; deploy "
                    "this file as float32"
                )
            if op.source is not None:
                value = dequantize_rows(q, scale, axis=0)
                if op.source in self.replaced and not np.array_equal(self.replaced[op.source], value):
                    raise ContractError(f"int8: table {op.source!r} is used in two layouts")
                self.replaced[op.source] = value
            table = self.const_array(q, "int8_t", "e")
            s = self.const_array(scale, "float", "s")
            return [
                f"{{ const int8_t *restrict row = {table} + (long)token * {width}; float *restrict o = {out};",
                f"  for (int j = 0; j < {width}; j++) o[j] = {s}[token] * (float)row[j]; }}",
            ]
        table = self.const_array(op.table, "float", "e")
        return [
            f"{{ const float *restrict row = {table} + (long)token * {width}; float *restrict o = {out};",
            f"  for (int j = 0; j < {width}; j++) o[j] = row[j]; }}",
        ]

    def layer_norm(self, op: LayerNorm) -> list[str]:
        n, rows = op.size, op.x.size // op.size
        scale = self.const_array(op.scale, "float", "c") if op.scale is not None else None
        bias = self.const_array(op.bias, "float", "c") if op.bias is not None else None
        value = "(v[j] - mean) * inv"
        if scale:
            value += f" * {scale}[j]"
        if bias:
            value += f" + {bias}[j]"
        return [
            f"for (int r = 0; r < {rows}; r++) {{ /* {op.out.name}: LayerNormalization over {n} */",
            f"    const float *v = {self.ptr(op.x)} + r * {n}; float *o = {self.ptr(op.out)} + r * {n};",
            "    float mean = 0.0f, var = 0.0f;",
            f"    for (int j = 0; j < {n}; j++) mean += v[j];",
            f"    mean /= {n}.0f;",
            f"    for (int j = 0; j < {n}; j++) var += (v[j] - mean) * (v[j] - mean);",
            f"    const float inv = 1.0f / sqrtf(var / {n}.0f + {literal(op.epsilon)});",
            f"    for (int j = 0; j < {n}; j++) o[j] = {value};",
            "}",
        ]

    def softmax(self, op: Softmax) -> list[str]:
        n, rows = op.size, op.x.size // op.size
        exp = self.exp()
        final = "o[j] = v[j] - top - logf(sum);" if op.log else f"o[j] = {exp}(v[j] - top) / sum;"
        return [
            f"for (int r = 0; r < {rows}; r++) {{ /* {op.out.name}: {'Log' if op.log else ''}Softmax over {n} */",
            f"    const float *v = {self.ptr(op.x)} + r * {n}; float *o = {self.ptr(op.out)} + r * {n};",
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


def emit(
    program: Program, name: str, precision: str, fast: bool, metadata: str, notes: dict[str, Any]
) -> Emitted:
    """NAME.h and NAME.c for ``program``."""
    e = _Emitter(program, name, precision, fast, metadata)
    info = program.info
    # outputs that sit in the state itself are copied out before the state is overwritten
    finals = []
    for t in [program.y, *(out for _, out in program.states)]:
        if t.storage.kind == "state":
            copy = Tensor(f"{t.name}_copy", t.shape, "f", Storage("arena", t.size))
            program.ops.append(
                Copy(
                    copy.storage,
                    0,
                    _contiguous_strides(t.shape),
                    t.storage,
                    t.offset,
                    _contiguous_strides(t.shape),
                    t.shape,
                    dst_tensor=copy,
                )  # fmt: skip
            )
            t = copy
        finals.append(t)
    hoisted: list[int] = []
    if e.int8:
        e.split_state_products()
        hoisted = e.hoistable()
    e.plan([t.storage for t in finals], [program.ops[i].out.storage for i in hoisted])
    pieces = [e.emit_op(op) for op in program.ops]
    body: list[str] = []
    if hoisted:
        e.serpentine = True
        body.append("if (back) { /* the products of the state alone first, last layer first */")
        for i in reversed(hoisted):
            body += ["    " + line for line in pieces[i]]
        body.append("}")
    for i, lines in enumerate(pieces):
        if i in hoisted:
            body += ["if (!back) {", *("    " + line for line in lines), "}"]
        else:
            body += lines
    y, next_states = finals[0], finals[1:]
    tokens = info.input.kind == "tokens"
    N, n = e.NAME, e.name
    meta_bytes = metadata.encode("utf-8") + b"\0"
    e.flash += len(meta_bytes)
    strings = _string_tables(info)
    for _, items in strings:
        e.flash += sum(len(s.encode("utf-8")) + 1 for s in items) + 4 * len(items)
    arena = max(1, e.arena_size)
    ram = 4 * program.state_floats + 4 * e.serpentine + 4 * arena + -(-e.int8_scratch // 4) * 4
    header = _header(program, e, strings, ram, notes)
    src = [f"/* {n}.c: generated by edgernn from the verified step graph; see {n}.h. Do not edit. */"]
    src += [f'#include "{n}.h"', "", "#include <math.h>", "#include <stdint.h>", "#include <string.h>", ""]
    src += e.arrays
    src.append(
        f"static const unsigned char {n}_meta[{len(meta_bytes)}] = {{\n{_ints(np.frombuffer(meta_bytes, np.uint8))}\n}};"
    )
    for label, items in strings:
        src.append(
            f"const char *const {n}_{label}[{len(items)}] = {{\n"
            + ",\n".join(f"    {c_string(s)}" for s in items)
            + "\n};"
        )
    src.append("")
    if e.helpers & {"exp", "bits"}:
        src += [f"typedef union {{ float f; uint32_t u; }} {n}_bits; /* a float's bits */", ""]
    if e.int8_scratch:
        src += [
            "/* the quantized inputs: int8 where the CPU has an unsigned-by-signed byte dot product (gcc emits",
            " * vpdpbusd), int16 elsewhere (pmaddwd on SSE2/AVX2, vpdpwssd); the same sums either way */",
            "#if defined(__AVX512VNNI__) || defined(__AVXVNNI__)",
            f"typedef int8_t {n}_xq;",
            "#else",
            f"typedef int16_t {n}_xq;",
            "#endif",
            "",
        ]
    if "exp" in e.helpers:
        src += _exp_helpers(n)
    if "fast" in e.helpers:
        src += _fast_helpers(n)
    src += [
        f"static int {n}_finite(const float *v, int count)",
        "{",
        "    int ok = 1;",
        "    for (int i = 0; i < count; i++) ok &= (v[i] - v[i] == 0.0f); /* false for NaN and +-inf */",
        "    return ok;",
        "}",
        "",
        f"void {n}_reset({n}_state *st)",
        "{",
    ]
    offset = 0
    for spec in info.states:
        size = int(np.prod(spec.shape))
        src.append(f"    for (int i = 0; i < {size}; i++) st->s[{offset} + i] = {literal(spec.initial)};")
        offset += size
    if e.serpentine:
        src.append("    st->pass = 0u;")
    src += ["}", "", f"const char *{n}_metadata(void)", "{", f"    return (const char *){n}_meta;", "}", ""]
    checks = [f"!{n}_finite({e.ptr(y)}, {y.size})"]
    checks += [f"!{n}_finite({e.ptr(t)}, {t.size})" for t in next_states]
    commit = [f"    memcpy(y, {e.ptr(y)}, {y.size} * sizeof(float));"]
    for (state_in, _), t in zip(program.states, next_states, strict=True):
        commit.append(f"    memcpy(st->s + {state_in.storage.base}, {e.ptr(t)}, {t.size} * sizeof(float));")
    if e.serpentine:
        commit.append("    st->pass ^= 1u; /* the next step walks the int8 rows the other way */")
    step_body = [
        f"    float t[{arena}]; /* scratch: {4 * arena} bytes */",
        *(["    const int back = (int)(st->pass & 1u);"] if e.serpentine else []),
        *("    " + line for line in body),
        f"    if ({' || '.join(checks)})",
        f"        return {N}_ERR_NONFINITE;",
        *commit,
        f"    return {N}_OK;",
    ]
    if tokens:
        src += [
            f"int {n}_step({n}_state *st, const float *x, float *y)",
            "{",
            "    (void)st;",
            "    (void)x;",
            "    (void)y;",
            f"    return {N}_ERR_KIND;",
            "}",
            "",
            f"int {n}_step_token({n}_state *st, int32_t token, float *y)",
            "{",
            f"    if (token < 0 || token >= {N}_VOCAB_SIZE)",
            f"        return {N}_ERR_TOKEN;",
            "    {",
            *("    " + line for line in step_body),
            "    }",
            "}",
        ]
    else:
        src += [
            f"int {n}_step_token({n}_state *st, int32_t token, float *y)",
            "{",
            "    (void)st;",
            "    (void)token;",
            "    (void)y;",
            f"    return {N}_ERR_KIND;",
            "}",
            "",
            f"int {n}_step({n}_state *st, const float *x, float *y)",
            "{",
            f"    if (!{n}_finite(x, {N}_INPUT_SIZE))",
            f"        return {N}_ERR_NONFINITE;",
            "    {",
            *("    " + line for line in step_body),
            "    }",
            "}",
        ]
    return Emitted(
        header, "\n".join(src) + "\n", e.flash, ram, 4 * arena + -(-e.int8_scratch // 4) * 4, e.replaced,
        e.quantized_inputs,
    )  # fmt: skip


def _horner(coefficients: tuple[float, ...], var: str) -> str:
    c = [literal(v) for v in coefficients]
    poly = c[0]
    for term in c[1:]:
        poly = f"({poly} * {var} + {term})"
    return poly


def _exp_helpers(n: str) -> list[str]:
    return [
        "/* exp, sigmoid and tanh without libm and without branches, so that their loops vectorise; max error",
        f" * against double precision: exp {EXP_MAX_REL_ERROR:.2g} relative, sigmoid {SIGMOID_MAX_ABS_ERROR:.2g},"
        f" tanh {TANH_MAX_ABS_ERROR:.2g} absolute. */",
        f"static inline float {n}_exp(float x)",
        "{",
        f"    {n}_bits v, t, s1, s2;",
        "    v.f = x;",
        "    const int32_t mag = (int32_t)(v.u & 0x7FFFFFFFu); /* signed compares: SSE2 has no unsigned ones */",
        "    t.u = (uint32_t)(mag < 0x43160000 ? mag : 0x43160000) | (v.u & 0x80000000u); /* x clamped to +-150 */",
        "    const float c = t.f;",
        "    t.f = c * 1.44269504f + 12582912.0f; /* n = round(c / ln 2) in the low mantissa bits */",
        "    const float k = t.f - 12582912.0f;",
        "    const float r = (c - k * 0.693359375f) + k * 2.12194440e-4f;",
        f"    const float p = {_horner(EXP_POLY, 'r')} * r * r + r + 1.0f;",
        "    const uint32_t e = t.u - 0x4B400000u + 256u; /* n + 256 */",
        "    const uint32_t half = e >> 1;",
        "    s1.u = (half - 1u) << 23; /* 2^(half - 128) */",
        "    s2.u = (e - half - 1u) << 23; /* 2^(n - half + 128) */",
        "    t.f = p * s1.f * s2.f; /* overflows to inf, underflows through the subnormals to 0 */",
        "    const uint32_t nan = 0u - (uint32_t)(mag > 0x7F800000); /* all ones for NaN: masks, not branches */",
        "    t.u = (v.u & nan) | (t.u & ~nan); /* NaN stays NaN */",
        "    return t.f;",
        "}",
        "",
        f"static inline float {n}_sigmoid(float x)",
        "{",
        f"    return 1.0f / (1.0f + {n}_exp(-x));",
        "}",
        "",
        f"static inline float {n}_tanh(float x)",
        "{",
        f"    {n}_bits v, a, c, small, big;",
        "    v.f = x;",
        "    a.u = v.u & 0x7FFFFFFFu;",
        "    const int32_t mag = (int32_t)a.u;",
        "    const float z = a.f * a.f;",
        f"    small.f = {_horner(TANH_POLY, 'z')} * z * a.f + a.f;",
        "    c.u = (uint32_t)(mag < 0x41100000 ? mag : 0x41100000); /* |x| clamped to 9 */",
        f"    big.f = 1.0f - 2.0f / ({n}_exp(2.0f * c.f) + 1.0f);",
        "    const uint32_t below = 0u - (uint32_t)(mag < 0x3F200000); /* |x| < 0.625 */",
        "    const uint32_t nan = 0u - (uint32_t)(mag > 0x7F800000);",
        "    c.u = ((small.u & below) | (big.u & ~below) | (v.u & 0x80000000u)) & ~nan;",
        "    c.u |= v.u & nan; /* NaN stays NaN */",
        "    return c.f;",
        "}",
        "",
    ]


def _fast_helpers(n: str) -> list[str]:
    a = [literal(v) for v in FAST_TANH_ALPHA]
    b = [literal(v) for v in FAST_TANH_BETA]
    poly = a[6]
    for c in reversed(a[:6]):
        poly = f"({poly} * x2 + {c})"
    den = b[3]
    for c in reversed(b[:3]):
        den = f"({den} * x2 + {c})"
    return [
        "/* tanh as a rational function (Eigen's coefficients), no branches, no libm: vectorisable. */",
        f"static float {n}_fast_tanh(float v)",
        "{",
        f"    const float c = {literal(FAST_TANH_CLAMP)};",
        "    const float x = v < -c ? -c : (v > c ? c : v);",
        "    const float x2 = x * x;",
        f"    return x * {poly} / {den};",
        "}",
        "",
        f"static float {n}_fast_sigmoid(float v)",
        "{",
        f"    return 0.5f + 0.5f * {n}_fast_tanh(0.5f * v);",
        "}",
        "",
    ]


def _string_tables(info) -> list[tuple[str, list[str]]]:
    tables = []
    if info.input.vocabulary is not None:
        tables.append(("vocabulary", list(info.input.vocabulary)))
    for key in ("classes", "columns", "targets"):
        value = info.extra.get(key)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            tables.append((key, list(value)))
    return tables


def _header(program: Program, e: _Emitter, strings, ram: int, notes: dict[str, Any]) -> str:
    info = program.info
    N, n = e.NAME, e.name
    tokens = info.input.kind == "tokens"
    lines = [
        f"/* {n}.h: a {info.cell} model ({info.num_layers} x {info.hidden_size}), generated by edgernn from",
        f" * the verified step graph. Precision {notes['precision']}"
        f"{', fast activations' if e.fast else ''}. C99, no malloc, no static mutable data:",
        f" * one {n}_state per stream, any number of streams and threads.",
        " *",
        f" *   {n}_state st; float y[{N}_OUTPUT_SIZE];",
        f" *   {n}_reset(&st);",
        f" *   if ({n}_step{'_token' if tokens else ''}(&st, {'token' if tokens else 'x'}, y) != {N}_OK) "
        "{ bad input: st is as it was }",
        " *",
        f" * RAM: {ram} bytes ({4 * program.state_floats} state, {ram - 4 * program.state_floats} scratch on the stack in a step).",
        f" * Flash: {e.flash} bytes of weights and constants (plus code).",
        " */",
        f"#ifndef {N}_H",
        f"#define {N}_H",
        "",
        "#include <stdint.h>",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        f"#define {N}_INPUT_SIZE    {0 if tokens else info.input.size}",
        f"#define {N}_VOCAB_SIZE    {info.input.size if tokens else 0}",
        f"#define {N}_OUTPUT_SIZE   {info.output.size}",
        f"#define {N}_STATE_FLOATS  {program.state_floats}",
        f"#define {N}_RAM_BYTES     {ram}",
        f"#define {N}_FLASH_BYTES   {e.flash}",
        f"#define {N}_NUM_LAYERS    {info.num_layers}",
        f"#define {N}_HIDDEN_SIZE   {info.hidden_size}",
        f"#define {N}_OK            0",
        f"#define {N}_ERR_TOKEN     1 /* token id out of range: state untouched */",
        f"#define {N}_ERR_NONFINITE 2 /* NaN/Inf in the input or produced: state and y untouched */",
        f"#define {N}_ERR_KIND      3 /* {n}_step on a token model, {n}_step_token on a features model */",
    ]
    offset = 0
    for spec in info.states:
        size = int(np.prod(spec.shape))
        label = spec.input.upper()
        lines.append(
            f"#define {N}_STATE_{label}_OFFSET {offset} /* {spec.input}: {spec.shape} floats, row-major */"
        )
        lines.append(f"#define {N}_STATE_{label}_FLOATS {size}")
        offset += size
    lines.append("")
    for label, items in strings:
        lines.append(f"#define {N}_NUM_{label.upper()} {len(items)}")
        lines.append(f"extern const char *const {n}_{label}[{len(items)}];")
    if strings:
        lines.append("")
    lines += [
        (
            f"typedef struct {{ float s[{N}_STATE_FLOATS]; uint32_t pass; }} {n}_state; "
            "/* pass: which way the int8 products walk their rows this step */"
            if e.serpentine
            else f"typedef struct {{ float s[{N}_STATE_FLOATS]; }} {n}_state;"
        ),
        "",
        f"void {n}_reset({n}_state *st);",
        f"int {n}_step({n}_state *st, const float *x, float *y);",
        f"int {n}_step_token({n}_state *st, int32_t token, float *y);",
        f"const char *{n}_metadata(void);",
        "",
        "#ifdef __cplusplus",
        "}",
        "#endif",
        "",
        f"#endif /* {N}_H */",
    ]
    return "\n".join(lines) + "\n"


def metadata_json(info_json: str, extra: dict[str, Any]) -> str:
    doc = json.loads(info_json)
    doc.update(extra)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))
