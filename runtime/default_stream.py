"""The stream calls a stepper answers itself, on its default stream (``self._stream``).

Shared by the onnxruntime :class:`~edgernn.runtime.Stepper` and the ctypes
:class:`~edgernn.runtime.native.NativeStepper`, so both speak the same Stream API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgernn.runtime.errors import InputError


class _Closed:
    """What a closed stepper's parts become: any use of them raises InputError saying so."""

    def __init__(self, owner: str):
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        raise InputError(
            f"this {self._owner} is closed: make a new one to step again (streams made with new_stream "
            "before close() keep working)"
        )


class DefaultStream:
    """Mixin: ``step``, ``run``, ``reset``, ``state``, ``snapshot`` and ``restore`` of ``self._stream``,
    and ``close``."""

    _stream: Any
    _closes: tuple[str, ...] = ("_stream",)  # what close() lets go of

    def close(self) -> None:
        """Let go of the default stream and the model (the process frees them once no stream made with
        ``new_stream`` holds them). Any later call on this stepper raises InputError; closing twice is
        allowed."""
        closed = _Closed(type(self).__name__)
        for name in self._closes:
            setattr(self, name, closed)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def step(self, x: Any) -> Any:
        """``step`` on the default stream."""
        return self._stream.step(x)

    def run(self, xs: Any) -> Any:
        """``run`` on the default stream."""
        return self._stream.run(xs)

    def reset(self) -> None:
        self._stream.reset()

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the default stream's state; assign a dict to replace it (validated)."""
        return self._stream.state

    @state.setter
    def state(self, value: Mapping[str, Any]) -> None:
        self._stream.state = value

    def snapshot(self) -> dict[str, np.ndarray]:
        return self._stream.snapshot()

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        self._stream.restore(snapshot)
