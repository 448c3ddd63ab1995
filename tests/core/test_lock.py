"""One run at a time: the run lock waits, gives up with a clear message, and never stays stale.

Holders in other processes are synchronised by explicit handshakes (a line on a pipe, a
log line on stderr), never by sleeping and hoping.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from support import BUSINESS_DATE, NOW, make_demo, run_cli

from flux_pmi.config.settings import load
from flux_pmi.core.errors import ExitCode, LockBusyError
from flux_pmi.core.lock import RunLock, holder, lock_path, run_lock


class FakeTime:
    """monotonic/sleep pair: sleeping advances the clock, so a wait takes no real time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_second_lock_on_the_same_file_waits_its_time_then_names_the_holder(tmp_path):
    path = tmp_path / "trace" / "flux-pmi.lock"
    fake = FakeTime()
    with RunLock(path, command="run", wait_seconds=0):
        second = RunLock(
            path,
            command="reemit",
            wait_seconds=3,
            poll_seconds=0.5,
            monotonic=fake.monotonic,
            sleep=fake.sleep,
        )
        with pytest.raises(LockBusyError) as busy:
            second.__enter__()
    assert (
        sum(fake.slept) == pytest.approx(3.0) and len(fake.slept) == 6
    )  # polled until the deadline, no longer
    assert busy.value.exit_code == ExitCode.LOCKED
    message = str(busy.value)
    assert f"pid {os.getpid()}" in message and "`run`" in message and "since " in message
    assert "waited 3 s" in message and str(path) in message
    assert not second.held


def test_the_lock_is_free_again_once_released_and_leaves_no_holder_behind(tmp_path):
    path = tmp_path / "flux-pmi.lock"
    with RunLock(path, command="run", wait_seconds=0) as held:
        record = json.loads(path.read_text())
        assert record["pid"] == os.getpid() and record["command"] == "run" and record["hostname"]
        assert (path.stat().st_mode & 0o777) == 0o600
        assert not os.get_inheritable(held._fd)  # a child process must not keep the lock alive
    assert path.read_text() == ""  # released cleanly: nothing for the next holder to take over
    with capture_logs() as logs, RunLock(path, command="purge", wait_seconds=0):
        pass
    assert not [e for e in logs if e["event"] == "lock.taken_over"]


def test_holder_names_a_live_holder_without_taking_the_lock_and_none_otherwise(tmp_path):
    path = tmp_path / "flux-pmi.lock"
    assert holder(path) is None  # no lock file: no run ever took it
    with RunLock(path, command="run", wait_seconds=0):
        record = holder(path)
        assert record is not None and record["pid"] == os.getpid() and record["command"] == "run"
    assert holder(path) is None  # released
    path.write_text(json.dumps({"pid": 999999, "command": "run"}))  # left by a holder that died
    assert holder(path) is None  # a record is not a holder: only the kernel's lock says one is alive
    with RunLock(path, command="run", wait_seconds=0):  # the probe left the lock free
        pass


def test_a_record_left_by_a_dead_holder_is_overwritten_and_logged(tmp_path):
    path = tmp_path / "flux-pmi.lock"
    path.write_text(json.dumps({"pid": 999999, "command": "run", "started_at": "2026-11-23T04:30:02+01:00"}))
    with capture_logs() as logs, RunLock(path, command="run", wait_seconds=0):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    taken = [e for e in logs if e["event"] == "lock.taken_over"]
    assert len(taken) == 1 and taken[0]["stale_pid"] == 999999
    assert "taken over from a dead process (pid 999999" in taken[0]["message"]


def test_run_lock_sits_beside_the_trace_store_and_waits_the_configured_time(demo):
    root, _ = demo
    cfg = root / "flux-pmi.toml"
    cfg.write_text(cfg.read_text() + "\n[service]\nlock_wait_seconds = 7\n")
    settings = load(cfg)
    lock = run_lock(settings, "run")
    assert lock.path == root / "trace" / "flux-pmi.lock" == lock_path(settings.paths.trace)
    assert lock.wait_seconds == 7 and lock.command == "run"
    assert run_lock(settings, "nightly", wait_seconds=0).wait_seconds == 0


# -- across processes: a holder in a child, `flux-pmi run` as another ---------------------------------

HOLDER = """
import sys
from pathlib import Path
from flux_pmi.core import log
from flux_pmi.core.lock import RunLock
log.configure(json=True)  # the log to stderr: stdout is the handshake
with RunLock(Path(sys.argv[1]), command="run", wait_seconds=0):
    print("locked", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


class Holder:
    """A child process holding the lock until told (a line on its stdin) or killed."""

    def __init__(self, lock: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(lock)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline() == "locked\n"  # the handshake: it holds the lock from here

    def release(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "released\n"
        assert self.proc.wait(timeout=30) == 0

    def kill(self) -> None:
        self.proc.kill()
        assert self.proc.wait(timeout=30) == -signal.SIGKILL  # reaped: its descriptors are closed

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            stream.close()


@pytest.fixture
def locked_demo(tmp_path):
    root = tmp_path / "demo"
    make_demo(root)
    cfg = root / "flux-pmi.toml"
    cfg.write_text(cfg.read_text() + "\n[service]\nlock_wait_seconds = 1\n")
    holders: list[Holder] = []

    def hold() -> Holder:
        holders.append(Holder(root / "trace" / "flux-pmi.lock"))
        return holders[-1]

    yield root, cfg, hold
    for h in holders:
        h.cleanup()


def _run_args(cfg: Path) -> tuple[str, ...]:
    return ("run", "--config", str(cfg), "--date", BUSINESS_DATE.isoformat())


def test_a_run_while_another_holds_the_lock_gives_up_after_the_wait_with_exit_4(locked_demo):
    root, cfg, hold = locked_demo
    holder = hold()
    started = time.monotonic()
    proc = run_cli(*_run_args(cfg))
    elapsed = time.monotonic() - started
    assert proc.returncode == ExitCode.LOCKED, proc.stdout + proc.stderr
    assert 1.0 <= elapsed < 60  # it did wait its configured second, not the default 300
    assert (
        f"another flux-pmi run holds the lock {root / 'trace' / 'flux-pmi.lock'} (pid {holder.proc.pid}, `run`"
        in proc.stderr
    )
    assert "waited 1 s" in proc.stderr
    assert not list((root / "drop").rglob("*.p7m"))  # it did nothing: no claim, no delivery
    assert list((root / "inbox").rglob("*.xml"))
    holder.release()


def test_a_lock_left_by_a_killed_holder_does_not_block_the_next_run(locked_demo):
    root, cfg, hold = locked_demo
    holder = hold()
    pid = holder.proc.pid
    holder.kill()
    proc = run_cli(*_run_args(cfg))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    taken = [json.loads(line) for line in proc.stderr.splitlines() if '"lock.taken_over"' in line]
    assert len(taken) == 1 and taken[0]["stale_pid"] == pid
    assert (root / "trace" / "flux-pmi.lock").read_text() == ""  # and this run released it cleanly


def test_a_waiting_run_proceeds_when_the_holder_releases_within_the_wait(locked_demo):
    root, cfg, hold = locked_demo
    cfg.write_text(cfg.read_text().replace("lock_wait_seconds = 1", "lock_wait_seconds = 120"))
    holder = hold()
    env = {**os.environ, "FLUX_PMI_NOW": NOW.isoformat(), "FLUX_PMI_LOG_FORMAT": "json"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flux_pmi.cli", *_run_args(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True)
    reader.start()
    try:
        while True:  # the handshake: the run says it is waiting for the lock
            line = lines.get(timeout=60)
            if '"lock.waiting"' in line:
                assert f"pid {holder.proc.pid}" in json.loads(line)["holder"]
                break
        holder.release()
        out = proc.stdout.read()
        assert proc.wait(timeout=120) == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        reader.join(timeout=30)
        proc.stderr.close()
    assert "TOTAL 2026-11-23" in out and "delivered=12" in out
