"""One run at a time: an advisory lock beside the trace store.

Two runs that overlap (the service's night, cron's `run`, an operator's `reemit`) would
claim the same inbox, hand out sequence numbers and deliver the same emissions in
parallel. Every command that changes state therefore holds this lock for its whole life.

It is `fcntl.flock` on `<trace stem>.lock`, not a PID file: the kernel drops the lock
when the holding process dies, however it dies (SIGKILL included), so a stale lock
never blocks the next run. The file also carries a small JSON record of who holds it
(pid, command, start, host), only so that a run that gives up can say whom it waited for.
A release empties that record; a record found non-empty on acquisition was left by a
process that died holding the lock, and it is simply overwritten.

The lock is not reentrant: a process that needs it twice has a bug. It is advisory and
local: the trace directory must be on a local file system (flock over NFS is emulated
or absent, depending on the client).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from .clock import PARIS
from .errors import LockBusyError
from .fsutil import private_dir, state_dir
from .log import get as get_logger

_RECORD_MAX = 4096  # a holder record is a few dozen bytes; anything longer is not ours


def lock_path(trace: Path) -> Path:
    """`trace/flux-pmi.sqlite` -> `trace/flux-pmi.lock`: beside the store it protects."""
    return trace.with_name(trace.stem + ".lock")


class RunLock:
    """Exclusive run lock: `with RunLock(...):` acquires (waiting up to `wait_seconds`) or raises LockBusyError.

    Waiting is a bounded polling loop (LOCK_NB, then `sleep(poll_seconds)`) rather than a
    blocking flock, so the deadline holds without signals or threads; `monotonic` and
    `sleep` are injectable for tests.
    """

    def __init__(
        self,
        path: Path,
        *,
        command: str,
        wait_seconds: float,
        poll_seconds: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        new_state: bool = True,
        holder_is: str = "another flux-pmi run",
    ):
        self.path = Path(path)
        self.holder_is = holder_is  # who the busy message says holds it
        # False for an installation's run lock: its folder's parent must exist (fsutil.state_dir).
        self.new_state = new_state
        self.command = command
        self.wait_seconds = max(0.0, float(wait_seconds))
        self.poll_seconds = max(0.001, float(poll_seconds))
        self._monotonic = monotonic
        self._sleep = sleep
        self._fd: int | None = None
        self.log = get_logger("flux-pmi.lock")

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: this RunLock is already held (the lock is not reentrant)")
        if self.new_state:
            private_dir(self.path.parent)
        else:
            state_dir(self.path.parent, "run lock")
        # O_CLOEXEC: a child (CFTUTIL, ssh...) must not inherit the lock and keep it alive after we die.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a lock file created by an older umask must not stay readable by others
            self._acquire(fd)
            previous = _read_record(fd)
            if previous:
                # Only a holder that died holding the lock leaves its record behind (a release empties it).
                self.log.warning(
                    "lock.taken_over",
                    lock=str(self.path),
                    command=self.command,
                    message=f"taken over from a dead process ({describe(previous)})",
                    stale_pid=previous.get("pid"),
                    stale_command=previous.get("command"),
                )
            record = {
                "pid": os.getpid(),
                "command": self.command,
                "hostname": socket.gethostname(),
                "started_at": datetime.now(PARIS).isoformat(timespec="seconds"),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record, sort_keys=True) + "\n").encode(), 0)
        except BaseException:
            os.close(fd)  # closing drops the flock too, if we had it
            raise
        self._fd = fd
        self.log.debug("lock.acquired", lock=str(self.path), command=self.command)
        return self

    def _acquire(self, fd: int) -> None:
        deadline = self._monotonic() + self.wait_seconds
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                raise LockBusyError(self._busy_message(_read_record(fd)))
            if not announced:
                # Said once, so that an operator watching a silent command knows what it waits for
                # (a warning: it shows at the default level, and two runs overlapping is worth a look).
                announced = True
                self.log.warning(
                    "lock.waiting",
                    lock=str(self.path),
                    command=self.command,
                    holder=describe(_read_record(fd)),
                    wait_seconds=self.wait_seconds,
                )
            self._sleep(min(self.poll_seconds, remaining))

    def _busy_message(self, holder: dict[str, Any] | None) -> str:
        return (
            f"{self.holder_is} holds the lock {self.path} ({describe(holder)}); "
            + (f"waited {self.wait_seconds:g} s — exit 4" if self.wait_seconds else "exit 4")
        )

    def __exit__(self, *exc: object) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # emptied while still held: an empty record means "released cleanly"
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        self.log.debug("lock.released", lock=str(self.path), command=self.command)


def run_lock(settings: Any, command: str, *, wait_seconds: float | None = None) -> RunLock:
    """The run lock of an installation: `<trace stem>.lock` beside the trace store, waiting
    `[service] lock_wait_seconds` unless told otherwise."""
    wait = settings.service.lock_wait_seconds if wait_seconds is None else wait_seconds
    return RunLock(lock_path(settings.paths.trace), command=command, wait_seconds=wait, new_state=False)


def service_lock_path(trace: Path) -> Path:
    """`trace/flux-pmi.sqlite` -> `trace/flux-pmi.serve.lock`: one `serve` per installation."""
    return trace.with_name(trace.stem + ".serve.lock")


def service_lock(settings: Any) -> RunLock:
    """Held by `serve` for its whole life, not waited for: a second service on the same trace (one
    started by hand beside systemd's, or the same unit installed twice) would schedule every job
    twice, each night's second run waiting for the first's lock, then exiting 4 or finding nothing."""
    return RunLock(service_lock_path(settings.paths.trace), command="serve", wait_seconds=0, new_state=False,
                   holder_is="another `flux-pmi serve` for this installation")


def holder(path: Path) -> dict[str, Any] | None:
    """Who holds the lock at `path` right now, without waiting: None when nobody does, else its
    record ({} while the holder has not written it yet).

    A probe for commands that work during a run (`hold`, `status`): a shared lock taken and dropped
    at once, never the exclusive one, so a run that starts in that instant only polls once more.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file: no run ever took it here
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # EWOULDBLOCK; anything else is as unsure: said held, the careful answer
            return _read_record(fd) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_record(fd: int) -> dict[str, Any] | None:
    """The holder record, or None when it is empty or unreadable (the holder may be writing it right now)."""
    try:
        data = os.pread(fd, _RECORD_MAX, 0)
        record = json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def describe(record: dict[str, Any] | None) -> str:
    if not record:
        return "holder unknown"
    parts = [f"pid {record.get('pid', '?')}", f"`{record.get('command', '?')}`"]
    host = record.get("hostname")
    if host and host != socket.gethostname():
        parts.append(f"on {host}")
    if record.get("started_at"):
        parts.append(f"since {record['started_at']}")
    return ", ".join(parts)
