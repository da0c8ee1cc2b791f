"""Ctrl-C during training: the step in progress finishes, a checkpoint is saved, and the run says how to
resume it.

The first SIGINT only sets a flag that the training loop reads between steps, so the checkpoint it then
saves is a consistent state (a KeyboardInterrupt in the middle of an optimizer step would not be), and
``edgernn train --resume RUN_DIR`` continues it bit for bit. A second Ctrl-C stops at once, keeping the
last checkpoint saved before it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C; ``checkpoint`` is the resume file to continue from (None: none yet)."""

    def __init__(
        self, run_dir: Path, step: int, total: int | None, checkpoint_step: int | None, *, saved: bool
    ):
        self.run_dir, self.step, self.checkpoint_step = run_dir, step, checkpoint_step
        self.checkpoint = run_dir / "resume.safetensors" if checkpoint_step is not None else None
        of = f"/{total}" if total else ""
        if self.checkpoint is None:
            text = f"interrupted at step {step}{of} before any checkpoint was saved; start the run again"
        else:
            how = "saved on the interrupt" if saved else "the last one saved"
            text = (
                f"interrupted at step {step}{of}; checkpoint {self.checkpoint} (step {checkpoint_step}, {how}); "
                f"continue with: edgernn train --resume {run_dir}"
            )
        super().__init__(text)


class InterruptRequest:
    """While entered, SIGINT asks the training loop to stop after its step (``requested``) and calls
    ``on_request`` (to say so); a second SIGINT raises KeyboardInterrupt at once.

    Installed only in the main thread and only over Python's default handler: a process that ignores
    SIGINT, or set its own handler, keeps it. ``enabled=False`` installs nothing (data-parallel ranks
    must stop at the same step, which one rank's signal cannot promise).
    """

    def __init__(self, on_request: Callable[[], None], *, enabled: bool = True):
        self.on_request, self.enabled = on_request, enabled
        self.requested = False
        self._previous: object = None

    def __enter__(self) -> InterruptRequest:
        installable = (
            self.enabled
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        )
        if installable:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.on_request()
