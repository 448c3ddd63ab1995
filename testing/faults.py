"""Named fault points, so tests can kill or pause a run at an exact step.

`FLUX_PMI_CRASH_AT=name` (or `name:N` for the N-th passage) makes the process kill
itself, without any cleanup, when it reaches `point(name)`.

`FLUX_PMI_PAUSE_AT=name[:N]` with `FLUX_PMI_PAUSE_FIFO=path` makes the thread that reaches
the N-th passage write "paused at name" to stderr and block until a line (or end of file)
can be read from that FIFO: a test can then signal the process at a known step and
release it by an explicit handshake, with no sleep to guess when the step is reached.

`FLUX_PMI_ENOSPC_AT=name[:N]` makes the N-th passage of `point(name)` raise
OSError(ENOSPC) instead, as a disk that fills up at that step would.

In production the variables are unset and a point costs two dictionary lookups.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading

_counts: dict[str, int] = {}
_enospc_counts: dict[str, int] = {}
_pause_counts: dict[str, int] = {}
_pause_lock = threading.Lock()  # points are passed by delivery workers in parallel: count each passage once


def point(name: str) -> None:
    spec = os.environ.get("FLUX_PMI_CRASH_AT")
    if spec:
        target, _, nth = spec.partition(":")
        if target == name:
            _counts[name] = _counts.get(name, 0) + 1
            if _counts[name] >= int(nth or 1):
                os.kill(os.getpid(), signal.SIGKILL)
    full = os.environ.get("FLUX_PMI_ENOSPC_AT")
    if full:
        target, _, nth = full.partition(":")
        if target == name:
            with _pause_lock:
                _enospc_counts[name] = _enospc_counts.get(name, 0) + 1
                hit = _enospc_counts[name] == int(nth or 1)
            if hit:
                raise OSError(errno.ENOSPC, "No space left on device")
    pause = os.environ.get("FLUX_PMI_PAUSE_AT")
    if pause:
        _pause(name, pause)


def _pause(name: str, spec: str) -> None:
    target, _, nth = spec.partition(":")
    if target != name:
        return
    with _pause_lock:
        _pause_counts[name] = _pause_counts.get(name, 0) + 1
        reached = _pause_counts[name] == int(nth or 1)  # once only: a pause is a single rendezvous
    if reached:
        sys.stderr.write(f"paused at {spec}\n")
        sys.stderr.flush()
        with open(os.environ["FLUX_PMI_PAUSE_FIFO"], "rb") as fifo:  # blocks until the test opens it to write
            fifo.readline()
