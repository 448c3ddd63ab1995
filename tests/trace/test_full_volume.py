"""A trace (or ledger) whose volume is full is an operator's matter, not a bug: StorageError, exit 10.

SQLite's own page limit (`PRAGMA max_page_count`) stands in for the full disk: SQLite answers
SQLITE_FULL exactly as it does when the file system refuses to grow the file.
"""

from __future__ import annotations

import sqlite3

import pytest

from flux_pmi.core.errors import ExitCode, StorageError, TraceError
from flux_pmi.trace.sqlite import immediate, storage_failure
from flux_pmi.trace.store import TraceStore


def _fill_limit(db: sqlite3.Connection, spare_pages: int = 0) -> None:
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages + spare_pages}")


def test_a_full_volume_rolls_the_step_back_and_names_the_store(tmp_path):
    db = sqlite3.connect(tmp_path / "t.sqlite", isolation_level=None)
    db.execute("CREATE TABLE t(x TEXT)")
    _fill_limit(db)
    with pytest.raises(StorageError) as raised:
        with immediate(db, f"trace store {tmp_path / 't.sqlite'}", TraceError):
            db.execute("INSERT INTO t VALUES ('kept?')")
            db.executemany("INSERT INTO t VALUES (?)", [("x" * 4000,)] * 50)
    assert raised.value.exit_code == ExitCode.STORAGE
    assert str(tmp_path / "t.sqlite") in str(raised.value) and "SQLITE_FULL" in str(raised.value)
    assert not db.in_transaction  # rolled back: the connection serves the next step
    assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0  # all or nothing


def test_other_sqlite_errors_stay_what_they_are(tmp_path):
    db = sqlite3.connect(tmp_path / "t.sqlite", isolation_level=None)
    with pytest.raises(sqlite3.OperationalError):
        with immediate(db, "trace store x", TraceError):
            db.execute("SELECT * FROM no_such_table")  # a bug: its traceback is wanted
    assert storage_failure(ValueError("disk is full"), "x") is None
    assert not db.in_transaction


def test_a_full_trace_store_refuses_a_write_with_exit_10(tmp_path):
    trace = TraceStore(tmp_path / "trace" / "flux-pmi.sqlite")
    try:
        _fill_limit(trace.db)
        with pytest.raises(StorageError, match="trace store .*flux-pmi.sqlite: database or disk is full"):
            for _ in range(200):  # a few pages' worth of runs
                trace.start_run("run", None, __import__("datetime").datetime(2026, 11, 27, 3, 0))
    finally:
        trace.close()


def test_a_damaged_trace_is_an_operators_matter_with_exit_10(tmp_path):
    path = tmp_path / "trace" / "flux-pmi.sqlite"
    TraceStore(path).close()
    path.write_bytes(b"garbage" * 1000)  # a copy cut short, a disk fault
    for wal in ("-wal", "-shm"):
        path.with_name(path.name + wal).unlink(missing_ok=True)
    with pytest.raises(StorageError, match=r"file is not a database \(SQLITE_NOTADB\).*restore it from the last "
                                           r"backup") as raised:
        TraceStore(path)
    assert raised.value.exit_code == ExitCode.STORAGE
