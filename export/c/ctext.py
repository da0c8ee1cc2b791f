"""C text: float literals that read back as the same float32, arrays of numbers, and string literals that
carry any bytes (metadata text never becomes code)."""

from __future__ import annotations

import numpy as np

from edgernn.runtime.errors import ContractError

PER_LINE = 12


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


def c_floats(array: np.ndarray) -> str:
    a = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
    if not np.isfinite(a).all():
        raise ContractError("a weight holds non-finite values, which the C target cannot store")
    texts = np.char.mod("%.9g", a.astype(np.float64))
    texts = [t + ("f" if ("." in t or "e" in t) else ".0f") for t in texts.tolist()]
    return _joined(texts)


def c_ints(array: np.ndarray) -> str:
    return _joined([str(int(v)) for v in np.asarray(array).reshape(-1)])


def _joined(items: list[str]) -> str:
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


def metadata_and_strings(name: str, meta: bytes, strings: list[tuple[str, list[str]]]) -> list[str]:
    """The model's metadata as a byte array (``-pedantic`` refuses string literals past 4095 characters)
    and its string tables (vocabulary, classes, columns) as C strings, written byte for byte."""
    lines = [
        f"static const unsigned char {name}_meta[{len(meta)}] = {{\n{c_ints(np.frombuffer(meta, np.uint8))}\n}};"
    ]
    for label, items in strings:
        lines.append(
            f"const char *const {name}_{label}[{len(items)}] = {{\n"
            + ",\n".join(f"    {c_string(s)}" for s in items)
            + "\n};"
        )
    return lines
