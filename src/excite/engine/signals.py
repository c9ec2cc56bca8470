"""Stopping a run cleanly on a signal: finish the step, save, stop.

SIGINT (Ctrl-C), SIGTERM (what ``kill``, ``timeout``, SLURM, Kubernetes and torchrun send
first) and SIGUSR1 (SLURM's ``--signal`` warning before a time limit) are handled alike.
The first one only sets :attr:`StopRequest.requested`; the training loop checks it after
every step (on every rank, see :func:`~excite.engine.distributed.any_true`), saves a
resumable state there, between two steps, and raises ``KeyboardInterrupt``. A second
signal raises :class:`AbortRun` at once: the run stops without saving anything, so the
run directory keeps its last saved state (a state taken in the middle of a step would
not resume to the same result).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType, TracebackType

#: the signals a run stops on (those the platform has)
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name)
)
STOP_MESSAGE = "stopping after this step (Ctrl-C again to abort without saving)"


class AbortRun(KeyboardInterrupt):
    """Stop now without saving: a second stop signal, or an interrupt in the middle of
    an optimizer step (the state there is not one a run can continue from)."""


def stop_message(signum: int) -> str:
    """The notice of a first stop signal (SIGINT: :data:`STOP_MESSAGE`)."""
    if signum == signal.SIGINT:
        return STOP_MESSAGE
    name = signal.Signals(signum).name
    return f"{name} received: stopping after this step ({name} again aborts without saving)"


class StopRequest:
    """A stop flag that the given signals set while it is entered as a context manager.

    Handlers are installed only in the main thread (Python delivers signals there; in
    another thread the flag can still be set with :meth:`request`), and the previous
    handlers come back on exit.

    Args:
        signals: the signals that request a stop (default :data:`STOP_SIGNALS`).
        log: where the one-line notice of the first signal goes.
        message: that notice (default: :func:`stop_message` of the signal).

    Attributes:
        requested: True once a stop was requested.
    """

    def __init__(self, signals: Sequence[signal.Signals] = STOP_SIGNALS, *,
                 log: Callable[[str], None], message: str | None = None) -> None:
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
            raise AbortRun(f"{signal.Signals(signum).name} again: aborted without saving")
        self.request()
        self.log(self.message if self.message is not None else stop_message(signum))

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
