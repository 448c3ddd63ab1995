"""A clean stop on SIGTERM or SIGINT: finish the file being delivered, record it, exit.

Python's defaults are wrong for a delivery: SIGTERM kills the process between a
transfer and its trace row (the next run would make up for it, but needlessly), and
SIGINT raises KeyboardInterrupt in whatever the main thread happens to be doing, a
SQLite transaction included. Here the first signal only sets an event; the night checks
it between batches, départements and files, so each delivery worker finishes the file
in hand, the main thread records it, and the run returns (`NightReport.interrupted`).
A second signal means "now": the process exits at once with ExitCode.INTERRUPTED,
which is safe because every step is crash-safe (the next run resumes).

Handlers can only be installed from the main thread (a CPython rule), and Python runs
them in the main thread too, between bytecodes, including while it waits on a queue or
a lock; so enter GracefulStop in the main thread, around the work, never in a worker.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from .errors import ExitCode

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop:
    """Context manager: installs SIGTERM/SIGINT handlers; the first signal sets `event` and logs
    'stopping after the current file'; a second signal exits at once with os._exit(ExitCode.INTERRUPTED)
    (after a best-effort log line). Restores the previous handlers on exit.

    Main thread only (RuntimeError otherwise). `event` may be given to share one with other
    parts of a service; `message` says what the first signal waits for (a command whose work
    has no "current file" says so); `exit_process` is injectable so the second signal can be
    tested in-process.
    """

    def __init__(
        self,
        *,
        event: threading.Event | None = None,
        signals: Iterable[int] = STOP_SIGNALS,
        exit_process: Callable[[int], Any] = os._exit,
        message: str = "stopping after the current file",
    ):
        self.event = event if event is not None else threading.Event()
        self.signals_received = 0
        self._signals = tuple(signals)
        self._exit = exit_process
        self._message = message
        self._previous: dict[int, Any] = {}


    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "GracefulStop must be entered in the main thread: only it can install signal handlers"
            )
        try:
            for sig in self._signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        except BaseException:
            self.__exit__()  # never leave half of the handlers installed
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        previous, self._previous = self._previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    @property
    def stopping(self) -> bool:
        return self.event.is_set()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        # Runs in the main thread at an arbitrary point, maybe while it holds the logger's lock:
        # it must take no lock (structlog's PrintLogger would deadlock) and never raise.
        self.signals_received += 1
        name = signal.Signals(signum).name
        if self.signals_received == 1:
            self.event.set()
            _say("warning", "stop.requested", f"{name}: {self._message} (send it again to stop at once)", name)
            return
        _say("error", "stop.forced", f"{name}: a second signal, stopping at once; the next run resumes", name)
        self._exit(int(ExitCode.INTERRUPTED))


def _say(level: str, event: str, message: str, signal_name: str) -> None:
    """One JSON log line written with a single raw write: no Python lock, safe inside a handler."""
    line = json.dumps({"event": event, "level": level, "message": message, "signal": signal_name,
                       "timestamp": datetime.now(UTC).isoformat()})
    try:
        os.write(2, (line + "\n").encode())
    except OSError:
        pass
