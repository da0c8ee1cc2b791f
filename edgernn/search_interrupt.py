"""Ctrl-C while ``edgernn search`` runs its trials (edgernn.search_study.run_trials)."""

from __future__ import annotations

import sys
from typing import Any


class Interrupt:
    """Ctrl-C while trials run: remembered, and raised as KeyboardInterrupt by ``check`` at the next
    validation, fold or trial; a second Ctrl-C raises it at once. Raised at once anywhere, the first could
    be swallowed (in a finaliser or a weakref callback) or leave CPython ending the process by SIGINT
    instead of the command's exit code 130 (one escaping code run through exec of a string). Installed
    only in the main thread over Python's default handler (a process that ignores SIGINT keeps ignoring
    it)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> Interrupt:
        import signal
        import threading

        self.requested = False
        if threading.current_thread() is threading.main_thread() and (
            signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        self.requested = False  # what follows the trials (the refit) is not stopped by a stale request

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        sys.stderr.write("Ctrl-C: stopping at the next validation, fold or trial (again to stop at once)\n")

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


INTERRUPT = Interrupt()
