"""The run's worker processes (jobs/prepare.py): the very files the run's own process builds, numbered alike."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from support import make_demo, open_delivered, run_cli

from flux_pmi.jobs import prepare
from flux_pmi.jobs.prepare import SeqPlan, Workers


@pytest.mark.parametrize("existing, expected", [
    ((), [10, 11, 12]),  # nothing allocated yet: the next numbers, in a row
    (((1, 4), (2, 5)), [4, 5, 10]),  # an interrupted run numbered parts 1 and 2: a rebuild gets them again
    (((2, 7),), [10, 7, 11]),  # whatever was allocated keeps its number; the rest follow in part order
])  # fmt: skip
def test_the_sequence_plan_is_what_the_trace_allocates(existing, expected) -> None:
    plan = SeqPlan(existing, next_seq=10)
    assert [plan(part) for part in (1, 2, 3)] == expected


def test_workers_build_the_files_the_run_builds_itself(tmp_path) -> None:
    opened = {}
    for processes in (1, 2):
        root = tmp_path / f"p{processes}"
        make_demo(root, departments="035,02A,971")
        config = root / "flux-pmi.toml"
        config.write_text(config.read_text() + f"\n[build]\nprocesses = {processes}\nmin_jobs = 1\n")
        done = run_cli("run", "--config", str(config))
        assert done.returncode == 0, done.stdout + done.stderr
        opened[processes] = open_delivered(root)
        assert not [p for p in (root / "work").rglob("*") if p.is_file() and "batch-" in str(p)]
    assert len(opened[2]) == 9  # three flows for three départements
    assert opened[2] == opened[1]


def _feed(fifo: Path, data: bytes) -> None:
    """Write `data` to whoever reads `fifo`, if anyone still does (a reader killed meanwhile: no one)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no reader left
            return
        raise
    os.set_blocking(fd, True)
    try:
        os.write(fd, data)
    except BrokenPipeError:
        pass
    finally:
        os.close(fd)


def test_a_worker_that_dies_while_the_other_works_breaks_the_pool_without_hanging_the_run(tmp_path) -> None:
    # The OOM killer, say, takes one worker while the other is busy. The standard library then
    # stops the survivor with SIGTERM and waits for it, no longer reading results: a survivor that
    # ignored SIGTERM finished its job, blocked sending a result nobody read, and hung the run.
    fifo = tmp_path / "job-input"
    os.mkfifo(fifo)
    helper = subprocess.Popen(["cat"], stdin=subprocess.PIPE)  # the second job lasts as long as it does
    workers = Workers(processes=2, min_jobs=1)
    survivors: set[int] = set()
    try:
        assert {f.result(timeout=60) for f in [workers._submit(os.getpid, None, ()) for _ in range(4)]}
        pool = workers._pool
        assert pool is not None
        survivors.update(pool._processes)  # type: ignore[attr-defined]
        busy = workers._submit(Path.read_bytes, fifo, ())  # blocks its worker until the fifo is fed
        doomed = workers._submit(prepare._end_with, helper.pid, ())  # the other: ends it with the helper
        helper.stdin.close()  # type: ignore[union-attr]
        helper.wait(timeout=60)
        with pytest.raises(BrokenProcessPool):
            doomed.result(timeout=60)
        feeding = threading.Thread(target=_feed, args=(fifo, b"x" * (1 << 20)), daemon=True)
        feeding.start()  # a megabyte back: more than a pipe holds
        closing = threading.Thread(target=workers.close, daemon=True)
        closing.start()
        closing.join(timeout=60)
        assert not closing.is_alive(), "closing a broken pool hung on a worker that outlived it"
        with pytest.raises(BrokenProcessPool):
            busy.result(timeout=0)
        for pid in survivors:  # none left running (a zombie waits for its parent, the fork server)
            proc = Path(f"/proc/{pid}/stat")
            state = proc.read_text().rsplit(")", 1)[1].split()[0] if proc.exists() else "gone"
            assert state in ("Z", "X", "gone"), (pid, state)
        again = workers._submit(os.getpid, None, ()).result(timeout=60)  # the next jobs get new workers
        assert again not in survivors
    finally:
        for pid in survivors:  # after a failure above, so that closing returns and the suite goes on
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        workers.close()
        if helper.poll() is None:
            helper.kill()
