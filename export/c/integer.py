"""NAME.h and NAME.c of the ``integer`` precision: an ``IntegerModel`` as C99 with no floating point in a step.

The step is the reference ``edgernn.runtime.integer_ref.q_step`` line for line: per layer two calls of
``q_product`` (int8 rows, int32 accumulators, requantized by each row's multiplier and shift) into two int32
scratch vectors on the stack, then the cell function updating the int16 state in place; the head's
``q_product`` saturated to int16 y. The only floats in the file are the scales callers with floats use
(``NAME_OUTPUT_SCALE``, ``NAME_input_scale``) and two conversion helpers, compiled out by
``-DEDGERNN_NO_FLOAT``; a step never touches them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgernn import __version__
from edgernn.export.c.check import check_strings, string_tables
from edgernn.export.c.ctext import c_ints, literal, metadata_and_strings
from edgernn.export.c.emit import metadata_json
from edgernn.export.c.header import api_close, api_open
from edgernn.export.c.integer_kernels import cell_function, kernels, stored_order
from edgernn.runtime import integer_ops as ops
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.integer_program import IntegerProgram
from edgernn.runtime.integer_ref import IntegerModel, Product

GATES = {"gru": 3, "lstm": 4, "rnn_tanh": 1, "rnn_relu": 1}
DESCRIPTION = (
    "int8 weights (one scale per row, folded into an int32 multiplier and shift), int32 accumulators, "
    "gates int16 Q3.12, activations and hidden state int16 Q0.15, sigmoid and tanh by 257-entry tables "
    "with linear interpolation, no floating point in a step"
)


@dataclass
class IntegerSources:
    header: str
    source: str
    flash_bytes: int
    ram_bytes: int
    scratch_bytes: int
    state_values: int


class _Arrays:
    """The static const arrays of NAME.c and the bytes they take."""

    def __init__(self, name: str):
        self.name, self.lines, self.flash = name, [], 0

    def add(self, label: str, ctype: str, values: np.ndarray, size: int) -> str:
        values = np.asarray(values).reshape(-1)
        symbol = f"{self.name}_{label}"
        self.lines.append(f"static const {ctype} {symbol}[{max(1, values.size)}] = {{\n{c_ints(values)}\n}};")
        self.flash += size * max(1, values.size)
        return symbol

    def product(self, label: str, product: Product) -> tuple[str, str, str, str]:
        return (
            self.add(f"{label}_w", "int8_t", stored_order(product.weight), 1),
            self.add(f"{label}_b", "int32_t", product.bias, 4),
            self.add(f"{label}_m", "int32_t", product.multiplier, 4),
            self.add(f"{label}_s", "uint8_t", product.shift, 1),
        )


def _call(arrays: tuple[str, str, str, str], x: str, k: int, n: int, out: str) -> str:
    w, b, m, s = arrays
    return f"q_product({x}, {k}, {w}, {b}, {m}, {s}, {n}, {out});"


def _step_body(model: IntegerModel, arrays: _Arrays, info: ModelInfo) -> tuple[list[str], int]:
    """The statements of a step and the int32 values of scratch it uses."""
    hidden, layers = model.hidden_size, model.num_layers
    widest = max(GATES[model.cell] * hidden, model.output_size)
    body = [f"int32_t gi[{widest}], gh[{widest}]; /* scratch: {8 * widest} bytes */"]
    if model.input_kind == "tokens":
        table = arrays.add("embedding", "int16_t", model.embedding, 2)
        width = model.embedding.shape[1]
        body.append(f"const int16_t *in = {table} + (long)token * {width};")
    else:
        width = model.input_size
        body.append("const int16_t *in = x;")
    for index, layer in enumerate(model.layers):
        rows = GATES[model.cell] * hidden
        ih, hh = arrays.product(f"l{index}_ih", layer.ih), arrays.product(f"l{index}_hh", layer.hh)
        h = f"st->s + {index * hidden}"
        body += [
            f"/* layer {index} */",
            _call(ih, "in", width, rows, "gi"),
            _call(hh, h, hidden, rows, "gh"),
        ]
        if model.cell == "lstm":
            c = f"st->s + {(layers + index) * hidden}"
            body.append(f"q_lstm_cell(gi, gh, {h}, {c}, {hidden}, {layer.c_frac});")
        else:
            body.append(f"q_{model.cell}_cell(gi, gh, {h}, {hidden});")
        body.append(f"in = {h};")
        width = hidden
    head = arrays.product("head", model.head)
    body += [
        _call(head, "in", width, model.output_size, "gi"),
        f"for (int j = 0; j < {model.output_size}; j++)",
        "    y[j] = (int16_t)q_sat16(gi[j]);",
    ]
    return body, 2 * widest


def step_functions(n: str, N: str, tokens: bool, body: list[str]) -> list[str]:
    inner = [*("        " + line for line in body), f"        return {N}_OK;"]
    token_fn = [f"int {n}_step_token({n}_state *st, int32_t token, int16_t *y)", "{"]
    features_fn = [f"int {n}_step({n}_state *st, const int16_t *x, int16_t *y)", "{"]
    if tokens:
        features_fn += ["    (void)st;", "    (void)x;", "    (void)y;", f"    return {N}_ERR_KIND;", "}", ""]
        token_fn += [
            f"    if (token < 0 || token >= {N}_VOCAB_SIZE)",
            f"        return {N}_ERR_TOKEN;",
            "    {",
            *inner,
            "    }",
            "}",
        ]
        return [*features_fn, *token_fn]
    token_fn += ["    (void)st;", "    (void)token;", "    (void)y;", f"    return {N}_ERR_KIND;", "}", ""]
    features_fn += ["    {", *inner, "    }", "}"]
    return [*token_fn, *features_fn]


def float_helpers(n: str, N: str, model: IntegerModel | IntegerProgram) -> list[str]:
    lines = ["#ifndef EDGERNN_NO_FLOAT"]
    if model.input_kind != "tokens":
        scales = ", ".join(literal(v) for v in model.input_scale)
        lines += [
            f"const float {n}_input_scale[{N}_INPUT_SIZE] = {{{scales}}};",
            "",
            f"void {n}_quantize_input(const float *x, int16_t *x_q)",
            "{",
            f"    for (int i = 0; i < {N}_INPUT_SIZE; i++) {{",
            f"        float v = x[i] / {n}_input_scale[i];",
            "        if (!(v == v)) v = 0.0f; /* NaN */",
            "        v = v > 32767.0f ? 32767.0f : (v < -32768.0f ? -32768.0f : v);",
            "        x_q[i] = (int16_t)(v + (v >= 0.0f ? 0.5f : -0.5f));",
            "    }",
            "}",
            "",
        ]
    lines += [
        f"void {n}_dequantize_output(const int16_t *y_q, float *y)",
        "{",
        f"    for (int j = 0; j < {N}_OUTPUT_SIZE; j++)",
        f"        y[j] = (float)y_q[j] * {N}_OUTPUT_SCALE;",
        "}",
        "#endif",
        "",
    ]
    return lines


def reset_function(n: str, values: int) -> list[str]:
    return [
        f"void {n}_reset({n}_state *st)",
        "{",
        f"    for (int i = 0; i < {values}; i++)",
        "        st->s[i] = 0;",
        "}",
        "",
    ]


def _header(
    n: str,
    title: str,
    description: str,
    model: IntegerModel | IntegerProgram,
    strings,
    sizes: dict[str, int],
    defines: tuple[list[str], list[str]],
) -> str:
    """NAME.h of either integer form: ``title`` what the model is, ``defines`` the lines of its shape (after
    the sizes) and of its state (after the error codes)."""
    N = n.upper()
    tokens = model.input_kind == "tokens"
    call = f"{n}_step_token(&st, token, y)" if tokens else f"{n}_step(&st, x, y)"
    lines = [
        f"/* {n}.h: {title}, generated by edgernn, precision integer:",
        " * " + description + ".",
        f" * C99, no malloc, no static mutable data: one {n}_state per stream.",
        " *",
        f" *   {n}_state st; int16_t y[{N}_OUTPUT_SIZE]; (y[j] * {N}_OUTPUT_SCALE is the output)",
        f" *   {n}_reset(&st);",
        f" *   if ({call} != {N}_OK) {{ bad input: st is as it was }}",
        " *",
        (
            " * The token is the vocabulary index."
            if tokens
            else f" * x: int16 features, x[i] * {n}_input_scale[i] the raw value ({n}_quantize_input converts)."
        ),
        f" * RAM: {sizes['ram']} bytes ({sizes['state']} state, {sizes['scratch']} scratch on the stack in a step).",
        f" * Flash: {sizes['flash']} bytes of weights and constants (plus code).",
        " * Callers without floats define EDGERNN_NO_FLOAT: the two conversion helpers are left out.",
        " */",
        *api_open(N),
        f"#define {N}_PRECISION_INTEGER 1",
        f"#define {N}_INPUT_SIZE    {0 if tokens else model.input_size}",
        f"#define {N}_VOCAB_SIZE    {model.input_size if tokens else 0}",
        f"#define {N}_OUTPUT_SIZE   {model.output_size}",
        f"#define {N}_OUTPUT_SCALE  {literal(model.output_scale)} /* y = y_q * {N}_OUTPUT_SCALE */",
        f"#define {N}_STATE_VALUES  {sizes['values']}",
        f"#define {N}_RAM_BYTES     {sizes['ram']}",
        f"#define {N}_FLASH_BYTES   {sizes['flash']}",
        *defines[0],
        f"#define {N}_OK            0",
        f"#define {N}_ERR_TOKEN     1 /* token id out of range: state untouched */",
        f"#define {N}_ERR_KIND      3 /* {n}_step on a token model, {n}_step_token on a features model */",
        *defines[1],
        "",
    ]
    for label, items in strings:
        lines.append(f"#define {N}_NUM_{label.upper()} {len(items)}")
        lines.append(f"extern const char *const {n}_{label}[{len(items)}];")
    lines += [
        "",
        f"typedef struct {{ int16_t s[{N}_STATE_VALUES]; }} {n}_state;",
        "",
        f"void {n}_reset({n}_state *st);",
        f"int {n}_step({n}_state *st, const int16_t *x, int16_t *y);",
        f"int {n}_step_token({n}_state *st, int32_t token, int16_t *y);",
        f"const char *{n}_metadata(void);",
        "",
        "#ifndef EDGERNN_NO_FLOAT",
        *(
            []
            if tokens
            else [
                f"extern const float {n}_input_scale[{N}_INPUT_SIZE];",
                f"void {n}_quantize_input(const float *x, int16_t *x_q); /* rounded, saturated to int16 */",
            ]
        ),
        f"void {n}_dequantize_output(const int16_t *y_q, float *y);",
        "#endif",
        "",
        *api_close(N),
    ]
    return "\n".join(lines) + "\n"


@dataclass
class IntegerParts:
    """What one integer form's NAME.h and NAME.c are made of besides what both share."""

    title: str  # what the model is, for NAME.h's first line
    description: str  # its arithmetic, in NAME.h and the metadata's ``weights``
    defines: tuple[list[str], list[str]]  # NAME.h: its shape's lines, its state's lines
    arrays: list[str]  # NAME.c's static const arrays
    array_bytes: int  # the flash they take
    table_bytes: int  # the flash of the kernels' tables
    kernels: tuple[list[str], list[str]]  # NAME.c: before the arrays, after the metadata and strings
    body: list[str]  # a step's statements
    scratch_bytes: int
    state_values: int


def assemble(
    model: IntegerModel | IntegerProgram,
    info: ModelInfo,
    name: str,
    quality: dict | None,
    parts: IntegerParts,
) -> IntegerSources:
    """NAME.h and NAME.c of either integer form from its ``parts`` (``quality``: the gates' summary, kept in
    the metadata)."""
    n, N = name, name.upper()
    c_target = {
        "precision": "integer",
        "generator": f"edgernn {__version__}",
        "weights": parts.description,
        "output_scale": model.output_scale,
        **model.details,
    }
    if quality is not None:
        c_target["quality"] = quality
    meta = metadata_json(info.to_json(), {"c_target": c_target}).encode("utf-8") + b"\0"
    strings = string_tables(info)
    values = parts.state_values
    flash = (
        parts.array_bytes
        + parts.table_bytes
        + len(meta)
        + sum(sum(len(s.encode()) + 1 for s in items) + 4 * len(items) for _, items in strings)
    )
    sizes = {"values": values, "state": 2 * values, "scratch": parts.scratch_bytes, "flash": flash}
    sizes["ram"] = sizes["state"] + sizes["scratch"]
    src = [f"/* {n}.c: generated by edgernn (precision integer); see {n}.h. Do not edit. */"]
    src += [f'#include "{n}.h"', "", "#include <stdint.h>", "#include <string.h>", ""]
    src += parts.kernels[0]
    src += parts.arrays
    src += metadata_and_strings(n, meta, strings)
    src.append("")
    src += parts.kernels[1]
    src += reset_function(n, values)
    src += [f"const char *{n}_metadata(void)", "{", f"    return (const char *){n}_meta;", "}", ""]
    src += step_functions(n, N, model.input_kind == "tokens", parts.body)
    src += ["", *float_helpers(n, N, model)]
    return IntegerSources(
        header=_header(n, parts.title, parts.description, model, strings, sizes, parts.defines),
        source="\n".join(src) + "\n",
        flash_bytes=flash,
        ram_bytes=sizes["ram"],
        scratch_bytes=sizes["scratch"],
        state_values=values,
    )


def integer_sources(
    model: IntegerModel, info: ModelInfo, name: str, quality: dict | None = None
) -> IntegerSources:
    """NAME.h and NAME.c of ``model`` (whose metadata is ``info``; ``quality``: the gates' summary, kept in
    the metadata)."""
    check_strings(info)
    N = name.upper()
    arrays = _Arrays(name)
    body, scratch_values = _step_body(model, arrays, info)
    hidden, layers = model.hidden_size, model.num_layers
    state = [
        f"#define {N}_STATE_H_OFFSET 0 /* h: {layers} x {hidden} int16, Q0.15"
        f"{' (relu: its own scale per layer)' if model.cell == 'rnn_relu' else ''} */"
    ]
    if model.cell == "lstm":
        fracs = ", ".join(str(layer.c_frac) for layer in model.layers)
        state.append(
            f"#define {N}_STATE_C_OFFSET {layers * hidden} /* c: {layers} x {hidden} int16, fraction bits per layer: {fracs} */"
        )
    parts = IntegerParts(
        title=f"a {info.cell} model ({layers} x {hidden})",
        description=DESCRIPTION,
        defines=([f"#define {N}_NUM_LAYERS    {layers}", f"#define {N}_HIDDEN_SIZE   {hidden}"], state),
        arrays=arrays.lines,
        array_bytes=arrays.flash,
        table_bytes=(
            2
            * (ops.TABLE_INTERVALS + 1)
            * (2 if model.cell in ("gru", "lstm") else int(model.cell == "rnn_tanh"))
        ),
        kernels=([], kernels(model.cell) + cell_function(model.cell)),
        body=body,
        scratch_bytes=4 * scratch_values,
        state_values=layers * hidden * len(model.state_names),
    )
    return assemble(model, info, name, quality, parts)
