"""Stopping a run cleanly on a signal: finish the step, save, stop.

The first signal only sets :attr:`StopRequest.requested`; the training loop checks it
after every step (on every rank, see :func:`~excite.engine.distributed.any_true`),
saves a resumable state and raises ``KeyboardInterrupt``. A second signal raises
``KeyboardInterrupt`` at once, without saving.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType, TracebackType

STOP_MESSAGE = "stopping after this step (Ctrl-C again to abort without saving)"


class StopRequest:
    """A stop flag that the given signals set while it is entered as a context manager.

    Handlers are installed only in the main thread (Python delivers signals there; in
    another thread the flag can still be set with :meth:`request`), and the previous
    handlers come back on exit.

    Args:
        signals: the signals that request a stop (default: SIGINT, i.e. Ctrl-C).
        log: where the one-line notice of the first signal goes.
        message: that notice.

    Attributes:
        requested: True once a stop was requested.
    """

    def __init__(self, signals: Sequence[signal.Signals] = (signal.SIGINT,), *,
                 log: Callable[[str], None], message: str = STOP_MESSAGE) -> None:
        self.signals = tuple(signals)
        self.log = log
        self.message = message
        self.requested = False
        self._previous: dict[signal.Signals, object] = {}

    def request(self) -> None:
        """Ask the loop to stop after the current step (what the first signal does)."""
        self.requested = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.request()
        self.log(self.message)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        while self._previous:
            sig, previous = self._previous.popitem()
            signal.signal(sig, previous)  # type: ignore[arg-type]
