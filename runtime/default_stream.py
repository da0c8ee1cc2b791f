"""The stream calls a stepper answers itself, on its default stream (``self._stream``).

Shared by the onnxruntime :class:`~edgernn.runtime.Stepper` and the ctypes
:class:`~edgernn.runtime.native.NativeStepper`, so both speak the same Stream API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


class DefaultStream:
    """Mixin: ``step``, ``run``, ``reset``, ``state``, ``snapshot`` and ``restore`` of ``self._stream``."""

    _stream: Any

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
