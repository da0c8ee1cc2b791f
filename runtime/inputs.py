"""Converting and checking what a step is fed: the data input, and a state handed back in.

Every value from a caller goes through here before a session (or the generated C) sees it; the messages
say what was expected and what was given. ``DataInput.validate`` is the one rule for a step's x,
``check_state`` the one rule for a state handed back, ``check_stream_bytes`` the one bound on what a
stream allocates: for a single stream and a pool's batch, and for the onnxruntime ``Stepper`` and the
ctypes ``NativeStepper`` alike. numpy only: ``edgernn.runtime.native`` loads this without onnxruntime.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgernn.runtime.errors import InputError

_ONNX_DTYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16, "tensor(int8)": np.int8,
    "tensor(uint64)": np.uint64, "tensor(uint32)": np.uint32, "tensor(uint16)": np.uint16,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}  # fmt: skip


def onnx_dtype(type_name: str) -> np.dtype | None:
    """numpy dtype of an onnxruntime type string such as ``"tensor(float)"``; None if not a plain tensor."""
    dtype = _ONNX_DTYPES.get(type_name)
    return None if dtype is None else np.dtype(dtype)


@dataclass(frozen=True)
class DataInput:
    """The graph input a step feeds. ``shape[0]`` is the batch axis; None marks an axis of any size.

    ``vocab_size`` is set for token models: ids must lie in ``[0, vocab_size)``.
    """

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]
    vocab_size: int | None = None

    def validate(self, x: Any, batch_size: int, *, sequence: bool = False) -> tuple[np.ndarray, bool]:
        """Check ``x`` for a stream of ``batch_size``; return it batched, contiguous, in ``dtype``.

        A step takes ``shape`` (``(B,)`` tokens, ``(B, F)`` features); a sequence adds a time axis after
        the batch axis. With ``batch_size == 1`` the batch axis may be left out; the returned flag says so.
        Raises InputError saying what was expected and what was given.
        """
        label = "xs" if sequence else "x"
        array = as_array(x, label)
        dims = (batch_size, *((None,) if sequence else ()), *self.shape[1:])
        unbatched = batch_size == 1 and array.ndim == len(dims) - 1
        if unbatched:
            array = array[np.newaxis]
        if not _fits(array.shape, dims):
            expected = self._expected_shapes(batch_size, sequence)
            raise InputError(f"{label}: expected {self._noun} of shape {expected}, got {_given(x)}")
        if sequence and array.shape[1] == 0:
            raise InputError(f"{label}: expected at least one step, got shape {array.shape}")
        return self._convert(array, label), unbatched

    @property
    def _noun(self) -> str:
        if self.vocab_size:
            return "token ids"
        return "features" if self.dtype.kind == "f" else "values"

    def _expected_shapes(self, batch_size: int, sequence: bool) -> str:
        labels = [*(["T"] if sequence else []), *("?" if d is None else str(d) for d in self.shape[1:])]
        batched = shape_text([str(batch_size), *labels])
        if batch_size != 1:
            return f"{batched} (this stream's batch size is {batch_size})"
        return f"{batched} or {shape_text(labels)}"

    def _convert(self, array: np.ndarray, label: str) -> np.ndarray:
        kind = self.dtype.kind
        if kind == "f":
            return convert_floats(array, self.dtype, label, integers=True)
        if kind in "iu":
            return convert_integers(array, self.dtype, self.vocab_size, label)
        if array.dtype.kind != "b":
            raise InputError(f"{label}: expected booleans, got dtype {array.dtype}")
        return np.ascontiguousarray(array)


def as_array(x: Any, label: str) -> np.ndarray:
    try:
        array = np.asarray(x)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"{label}: expected an array of numbers, got {type(x).__name__} ({exc})") from None
    if isinstance(x, (list, tuple)) and array.dtype.kind in "iuf" and _holds_bool(x):
        # numpy turns [0, True] into ints; a bool is refused inside a list as it is alone (one rule)
        raise InputError(f"{label}: expected numbers, got a list holding booleans")
    return array


def _holds_bool(values: list | tuple) -> bool:
    for value in values:
        if isinstance(value, (bool, np.bool_)) or (isinstance(value, np.ndarray) and value.dtype.kind == "b"):
            return True
        if isinstance(value, (list, tuple)) and _holds_bool(value):
            return True
    return False


def _fits(shape: tuple[int, ...], dims: Sequence[int | None]) -> bool:
    """Whether ``shape`` matches ``dims``, where None matches any size."""
    return len(shape) == len(dims) and all(d is None or d == n for d, n in zip(dims, shape, strict=True))


def _given(x: Any) -> str:
    array = np.asarray(x)
    return f"shape {array.shape} ({array.dtype})"


def shape_text(labels: Sequence[str]) -> str:
    return "(" + ", ".join(labels) + ("," if len(labels) == 1 else "") + ")"


def convert_floats(array: np.ndarray, dtype: np.dtype, label: str, *, integers: bool = False) -> np.ndarray:
    """``array`` as contiguous ``dtype``, refusing NaN/inf. ``integers``: integer values (readings such as
    ADC counts) are converted too; booleans, complex numbers, strings and objects never are."""
    if array.dtype.kind not in ("fiu" if integers else "f"):
        accepted = "numbers" if integers else "floating-point values"
        raise InputError(f"{label}: expected {accepted} ({dtype}), got dtype {array.dtype}")
    with np.errstate(over="ignore"):  # a float64 too large for float32 becomes inf and is refused below
        converted = np.ascontiguousarray(array, dtype=dtype)
    finite = np.isfinite(converted)
    if not finite.all():
        where = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise InputError(
            f"{label}: expected finite values, got {int((~finite).sum())} NaN/inf value(s), "
            f"the first at index {where}"
        )
    return converted


def convert_integers(array: np.ndarray, dtype: np.dtype, vocab_size: int | None, label: str) -> np.ndarray:
    what = "token ids" if vocab_size else "integers"
    if array.dtype.kind not in "iu":
        raise InputError(f"{label}: expected integer {what} ({dtype}), got dtype {array.dtype}")
    low, high = (0, vocab_size - 1) if vocab_size else (np.iinfo(dtype).min, np.iinfo(dtype).max)
    if array.size and (array.min() < low or array.max() > high):
        bad = np.unique(array[(array < low) | (array > high)])[:5].tolist()
        expected = f"[0, {vocab_size}) (the vocabulary size)" if vocab_size else f"[{low}, {high}]"
        raise InputError(f"{label}: expected {what} in {expected}, got {bad}")
    return np.ascontiguousarray(array, dtype=dtype)


def check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name}: expected a positive integer, got {value!r}")


# --- the state a caller hands back, and what a stream may allocate ------------------------------------------

# What one stream (or pool) may make the runtime allocate for its state and results. A file's metadata
# decides these sizes, so they are bounded: a few hundred bytes of metadata must not cost gigabytes.
MAX_STREAM_BYTES = 1 << 28


def mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def check_stream_bytes(row_bytes: int, batch_size: int, what: str = "batch_size") -> None:
    """Refuse (InputError) a batch whose buffers, ``row_bytes`` for each of its rows, would pass the bound.

    Checked before anything is allocated, so ``new_stream(10**7)`` says how large a batch fits instead of
    asking the allocator for gigabytes."""
    check_positive_int(what, batch_size)
    need = row_bytes * batch_size
    if need > MAX_STREAM_BYTES:
        raise InputError(
            f"{what} {batch_size}: expected at most {MAX_STREAM_BYTES // row_bytes} for this model, whose "
            f"buffers would take {mib(need)} (the bound is {mib(MAX_STREAM_BYTES)})"
        )


@dataclass(frozen=True)
class StateSlot:
    """One state tensor; ``shape`` has None where the stream's batch size goes."""

    input: str
    output: str
    shape: tuple[int | None, ...]
    dtype: np.dtype
    initial: float = 0.0

    def shape_for(self, batch_size: int) -> tuple[int, ...]:
        return tuple(batch_size if d is None else d for d in self.shape)

    @property
    def row_bytes(self) -> int:
        """Bytes of this state for one batch row."""
        return math.prod(d for d in self.shape if d is not None) * self.dtype.itemsize


def check_state(state: Any, slots: Sequence[StateSlot], batch_size: int) -> dict[str, np.ndarray]:
    """Validated copies of ``state`` (name -> array, one per slot, in the slot's dtype, finite for floats);
    raises InputError listing every problem. Nothing of the caller's is kept: the arrays are new."""
    if not isinstance(state, Mapping):
        raise InputError(f"state: expected a dict of state name -> array, got {type(state).__name__}")
    expected = [s.input for s in slots]
    problems = []
    if set(state) != set(expected):
        problems.append(f"expected names {expected}, got {sorted(map(str, state))}")
    checked = {}
    for slot in slots:
        if slot.input in state:
            array = _check_state_array(slot, state[slot.input], batch_size, problems)
            if array is not None:
                checked[slot.input] = array
    if problems:
        raise InputError("invalid state:\n  - " + "\n  - ".join(problems))
    return checked


def _check_state_array(
    slot: StateSlot, value: Any, batch_size: int, problems: list[str]
) -> np.ndarray | None:
    expected_shape = slot.shape_for(batch_size)
    try:
        array = as_array(value, slot.input)
    except InputError as exc:
        problems.append(str(exc))
        return None
    if array.shape != expected_shape:
        problems.append(f"{slot.input}: expected shape {expected_shape} ({slot.dtype}), got {array.shape}")
        return None
    try:
        if slot.dtype.kind == "f":
            converted = convert_floats(array, slot.dtype, slot.input)
        else:
            converted = convert_integers(array, slot.dtype, None, slot.input)
    except InputError as exc:
        problems.append(str(exc))
        return None
    return converted.copy()
