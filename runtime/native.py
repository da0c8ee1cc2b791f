"""Step the C that ``edgernn deploy --target c`` generates, built as a shared library, from Python.

    from edgernn.runtime.native import NativeStepper
    stepper = NativeStepper("libmodel.so")        # built by edgernn.export.c.build_shared_library
    y = stepper.step(3)                           # the Stream API of Stepper: step, run, reset,
    snap = stepper.snapshot(); stepper.restore(snap)   # state, snapshot, restore, new_stream

Needs numpy and ctypes only: no torch, no onnx, no onnxruntime. The library describes itself
(``NAME_metadata()``, the model's edgernn metadata). The functions are looked up and their argument
types bound once; each step is one foreign call on buffers bound once. A stream of ``batch_size`` B keeps
B C state structs in one array and steps them one after another.

Every input is checked before the C runs, by the rules the onnxruntime ``Stepper`` applies
(``edgernn.runtime.inputs``), and the C checks again (a token out of range, a NaN or inf
input, a step that would produce NaN or inf: an error code, the state untouched); on any error the
stream's state is left exactly as it was (a batch rolls back every row) and InputError says why.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgernn.runtime import contract
from edgernn.runtime.contract import ModelInfo
from edgernn.runtime.default_stream import DefaultStream
from edgernn.runtime.errors import ContractError, EdgeRNNError, InputError
from edgernn.runtime.inputs import DataInput, StateSlot, check_positive_int, check_state, check_stream_bytes

OK, ERR_TOKEN, ERR_NONFINITE, ERR_KIND = 0, 1, 2, 3
_INT32_MAX = 2**31 - 1


def _library_name(path: Path) -> str:
    stem = path.name.split(".")[0]
    return stem[3:] if stem.startswith("lib") and len(stem) > 3 else stem


class _Library:
    """The generated functions of one loaded library, argument types bound once."""

    def __init__(self, path: Path, name: str | None):
        if not path.is_file():
            raise InputError(
                f"library {str(path)!r}: expected a shared library built from the generated C, found none"
            )
        name = name or _library_name(path)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise InputError(f"name {name!r}: expected the C prefix of the generated functions")
        try:
            lib = ctypes.CDLL(str(path.resolve()))
        except OSError as exc:
            raise ContractError(f"library {str(path)!r} cannot be loaded: {exc}") from None
        try:
            self.reset = getattr(lib, f"{name}_reset")
            self.step = getattr(lib, f"{name}_step")
            self.step_token = getattr(lib, f"{name}_step_token")
            metadata = getattr(lib, f"{name}_metadata")
        except AttributeError as exc:
            raise ContractError(
                f"library {str(path)!r} has no generated model named {name!r} ({exc}); pass name= the "
                "NAME it was generated with"
            ) from None
        self.lib, self.name, self.path = lib, name, path
        self.reset.argtypes, self.reset.restype = [ctypes.c_void_p], None
        self.step.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.step.restype = ctypes.c_int
        self.step_token.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p]
        self.step_token.restype = ctypes.c_int
        metadata.argtypes, metadata.restype = [], ctypes.c_char_p
        text = metadata()
        if not text:
            raise ContractError(f"library {str(path)!r}: {name}_metadata() returned nothing")
        self.info = contract.parse_info(text.decode("utf-8"))
        target = self.info.extra.get("c_target")
        if isinstance(target, dict) and target.get("precision") == "integer":
            raise ContractError(
                f"library {str(path)!r}: integer-only C (int16 x and y, an int16 state), which NativeStepper "
                "does not step (it steps the float32 and int8 C); run it from C with its header, serve it "
                "(deploy --target triton --backend c --precision integer), or step its reference "
                "(edgernn.runtime.integer_ref)"
            )


class NativeStream:
    """One independent stream (of ``batch_size`` sequences) over a loaded library, with its own state.

    Made by ``NativeStepper.new_stream``. Its inputs follow the onnxruntime ``Stream``'s rules
    (``edgernn.runtime.inputs``: the same x, the same state checks, the same allocation bound). Safe to
    share between threads: each call runs whole, one at a time (the foreign call releases the GIL, so
    without the lock two steps would read and write one state at once).
    """

    def __init__(self, library: _Library, batch_size: int):
        self._lib = library
        info = self.info = library.info
        self._tokens = info.input.kind == "tokens"
        self._features = 0 if self._tokens else info.input.size
        self._vocab = info.input.size if self._tokens else 0
        self._data = DataInput(  # what the Stepper's loading makes of the same metadata
            contract.INPUT_NAME,
            np.dtype(info.input.dtype),
            (None,) if self._tokens else (None, self._features),
            self._vocab or None,
        )
        self._slots = tuple(
            StateSlot(spec.input, spec.output, (None, *spec.shape), np.dtype(spec.dtype), spec.initial)
            for spec in info.states
        )
        self._offsets = []
        offset = 0
        for spec in info.states:
            size = math.prod(spec.shape)
            self._offsets.append((offset, size))
            offset += size
        self._state_floats = offset
        # per batch row: the state struct (its floats and one word past them: the int8 files' pass bit,
        # which way the rows are walked, never part of the values), x, y, and the copy a batch rolls back to
        row_floats = 2 * (offset + 1) + max(1, self._features) + info.output.size
        check_stream_bytes(4 * row_floats, batch_size)
        self.batch_size = batch_size
        self._state = np.zeros((batch_size, offset + 1), np.float32)
        self._x = np.zeros((batch_size, max(1, self._features)), np.float32)
        self._y = np.zeros((batch_size, info.output.size), np.float32)
        rows = range(batch_size)
        self._state_ptr = [self._state.ctypes.data + b * self._state.strides[0] for b in rows]
        self._x_ptr = [self._x.ctypes.data + b * self._x.strides[0] for b in rows]
        self._y_ptr = [self._y.ctypes.data + b * self._y.strides[0] for b in rows]
        self._step = library.step
        self._step_token = library.step_token
        # One lock per stream, as the onnxruntime Stream has: calls from several threads run one at a time.
        self._lock = threading.Lock()
        self._acquire, self._release = self._lock.acquire, self._lock.release
        self.reset()

    # --- stepping

    def step(self, x: Any) -> np.ndarray:
        """Feed one step and advance the state. x: token ids ``(B,)`` / features ``(B, F)`` (float, or
        integer readings converted to float32); with batch size 1 also an int / ``(F,)``. Returns y
        ``(B, O)`` or ``(O,)`` for an unbatched x (a new array)."""
        self._acquire()  # acquire/release in try/finally, as Stream.step: half the cost of "with lock"
        try:
            if self.batch_size == 1:
                if self._tokens and type(x) is int and 0 <= x < self._vocab:
                    if self._step_token(self._state_ptr[0], x, self._y_ptr[0]) == OK:
                        return self._y[0].copy()
                elif type(x) is np.ndarray and x.dtype == np.float32 and x.shape == (self._features,):
                    self._x[0] = x
                    if self._step(self._state_ptr[0], self._x_ptr[0], self._y_ptr[0]) == OK:
                        return self._y[0].copy()
                # anything else, or a step the C refused (state untouched): the full rules and messages
            batch, unbatched = self._data.validate(x, self.batch_size)
            self._run_rows(batch[:, None], None)
            return self._y[0].copy() if unbatched else self._y.copy()
        finally:
            self._release()

    def run(self, xs: Any) -> np.ndarray:
        """Feed a sequence, carrying state: ``(B, T)`` tokens or ``(B, T, F)`` features (``(T,)`` /
        ``(T, F)`` with batch size 1). Returns ys ``(B, T, O)`` or ``(T, O)``; the state moves only if
        every step ran."""
        batch, unbatched = self._data.validate(xs, self.batch_size, sequence=True)
        ys = np.empty((self.batch_size, batch.shape[1], self._y.shape[1]), np.float32)
        with self._lock:
            self._run_rows(batch, ys)
        return ys[0] if unbatched else ys

    def _run_rows(self, batch: np.ndarray, ys: np.ndarray | None) -> None:
        """Every row of ``batch`` ``(B, T[, F])`` through its own state; all rows roll back on an error."""
        before = self._state.copy()
        steps = batch.shape[1]
        try:
            for b in range(self.batch_size):
                state, x_ptr, y_ptr = self._state_ptr[b], self._x_ptr[b], self._y_ptr[b]
                for t in range(steps):
                    if self._tokens:
                        rc = self._step_token(state, int(batch[b, t]), y_ptr)
                    else:
                        self._x[b] = batch[b, t]
                        rc = self._step(state, x_ptr, y_ptr)
                    if rc != OK:
                        raise self._error(rc, batch[b, t], b, t)
                    if ys is not None:
                        ys[b, t] = self._y[b]
        except BaseException:
            self._state[...] = before
            raise

    def _error(self, rc: int, x: Any, row: int, step: int) -> EdgeRNNError:
        where = f" (row {row}, step {step})" if self.batch_size > 1 or step else ""
        if rc == ERR_TOKEN:
            return InputError(
                f"x: expected token ids in [0, {self._vocab}) (the vocabulary size), got {x}{where}"
            )
        if rc == ERR_NONFINITE:
            return InputError(
                f"this input and state make the model produce NaN or inf{where}; the state was left as it was"
            )
        if rc == ERR_KIND:
            return ContractError("the library's step function refused the input kind its metadata declares")
        return ContractError(f"the library returned the unknown error code {rc}")

    # --- state

    def reset(self) -> None:
        """Every state tensor to its initial value (the generated NAME_reset)."""
        with self._lock:
            for ptr in self._state_ptr:
                self._lib.reset(ptr)

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the state, name -> ``(B, layers, hidden)`` float32; assign a dict to replace it
        (validated as the onnxruntime Stream validates it: names, shapes, numbers, finite in float32)."""
        with self._lock:
            return {
                slot.input: self._state[:, offset : offset + size]
                .reshape(slot.shape_for(self.batch_size))
                .copy()
                for slot, (offset, size) in zip(self._slots, self._offsets, strict=True)
            }

    @state.setter
    def state(self, value: Mapping[str, Any]) -> None:
        checked = check_state(value, self._slots, self.batch_size)
        with self._lock:
            for slot, (offset, size) in zip(self._slots, self._offsets, strict=True):
                self._state[:, offset : offset + size] = checked[slot.input].reshape(self.batch_size, size)

    def snapshot(self) -> dict[str, np.ndarray]:
        """A copy of the state to ``restore`` later (into this stream or another of the same batch size)."""
        return self.state

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Go back to a ``snapshot``; it is validated (names, shapes, dtypes, finite) and copied."""
        self.state = snapshot


class NativeStepper(DefaultStream):
    """A loaded shared library of generated C plus a default stream; ``new_stream`` makes more.

    library: the path of the shared library (``build_shared_library``); name: the NAME it was
    generated with (default: the file name without ``lib`` and the extension). Raises InputError for a
    missing file, ContractError for a library that is not a generated edgernn model.
    """

    _closes = ("_stream", "_library")

    def __init__(self, library: str | os.PathLike, *, name: str | None = None, batch_size: int = 1):
        check_positive_int("batch_size", batch_size)
        self._library = _Library(Path(library), name)
        self._stream = NativeStream(self._library, batch_size)

    @property
    def info(self) -> ModelInfo:
        """The model's edgernn metadata, read from the library (with its ``c_target`` record)."""
        return self._library.info

    @property
    def name(self) -> str:
        return self._library.name

    @property
    def path(self) -> Path:
        """The shared library this stepper loaded."""
        return self._library.path

    @property
    def batch_size(self) -> int:
        return self._stream.batch_size

    def new_stream(self, batch_size: int = 1) -> NativeStream:
        """A new stream with its own state, from the initial state."""
        return NativeStream(self._library, batch_size)
