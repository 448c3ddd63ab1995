"""Opening a flux-pmi SQLite store: the one place that knows the pragmas, the file mode and migrations.

The trace (trace/store.py) and the receiving side's ledger (trace/ledger.py) are both
small SQLite databases that must survive a crash and hold nothing anyone else may read.
They open the same way: an owner-only file created before SQLite creates its -wal and -shm
beside it (they take its mode), WAL with a full sync, and a schema brought up to date in
one immediate transaction: the `CREATE ... IF NOT EXISTS` script, then every migration
newer than the file's `user_version`, in order, then the new version. A crash midway
leaves the old version in place, and the next open does it all again.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from ..core.errors import FluxError, StorageError
from ..core.fsutil import private_dir, state_dir

# (version, step): the step brings a file from version-1 to `version`; it runs after the schema script.
Migration = tuple[int, Callable[[sqlite3.Connection], None]]

# Opening is serialised within a process: `check` opens one delivery journal per partner from several
# threads, and SQLite answers "database is locked" at once, without waiting, to a second connection
# switching a brand-new file to WAL while the first one does.
_OPENING = threading.Lock()


def open_database(path: Path, *, label: str, schema: str, migrations: Sequence[Migration] = (), version: int,
                  error: type[FluxError], busy_timeout_ms: int = 30_000,
                  foreign_keys: bool = False, check_same_thread: bool = True,
                  new_state: bool = True) -> sqlite3.Connection:
    """A connection (autocommit, rows as sqlite3.Row) to an up-to-date database.

    `label` names the store in messages ("trace store", "ledger"); `error` is raised on any SQLite failure.
    `new_state=False`: the folder that holds the database's folder must exist (fsutil.state_dir).
    """
    with _OPENING:
        if new_state:
            private_dir(path.parent)
        else:
            state_dir(path.parent, label)
        return _open(path, label=label, schema=schema, migrations=migrations, version=version, error=error,
                     busy_timeout_ms=busy_timeout_ms, foreign_keys=foreign_keys, check_same_thread=check_same_thread)


def _open(path: Path, *, label: str, schema: str, migrations: Sequence[Migration], version: int,
          error: type[FluxError], busy_timeout_ms: int, foreign_keys: bool,
          check_same_thread: bool) -> sqlite3.Connection:
    # SQLite gives its -wal and -shm files the database file's mode: create it owner-only.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    try:
        db = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                             check_same_thread=check_same_thread)
    except sqlite3.Error as exc:
        raise storage_failure(exc, f"{label} {path}") or error(f"{label} {path}: {exc}") from exc
    db.row_factory = sqlite3.Row
    try:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        if foreign_keys:
            db.execute("PRAGMA foreign_keys = ON")
        current = db.execute("PRAGMA user_version").fetchone()[0]
        if current < version:
            with immediate(db, f"{label} {path}", error):
                for stmt in schema.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                for to, step in sorted(migrations, key=lambda m: m[0]):
                    if current < to <= version:
                        step(db)
                db.execute(f"PRAGMA user_version = {int(version)}")
    except sqlite3.Error as exc:
        db.close()
        raise storage_failure(exc, f"{label} {path}") or error(f"{label} {path}: {exc}") from exc
    return db


# SQLite's primary result codes that say the volume or the file, not the code, is at fault.
_FULL_OR_FAILING = {8: "SQLITE_READONLY", 10: "SQLITE_IOERR", 13: "SQLITE_FULL", 14: "SQLITE_CANTOPEN"}
_DAMAGED = {11: "SQLITE_CORRUPT", 26: "SQLITE_NOTADB"}


def storage_failure(exc: BaseException, what: str) -> StorageError | None:
    """`exc` as the operator's matter it is (a full, read-only, failing volume, a damaged file), or None.

    A full trace volume used to end a night on a traceback (exit 1); it is the same matter as a
    full archive folder: free space, rerun, and the rerun completes the night (nothing committed
    is lost; the step that failed was rolled back whole). A damaged file (a disk fault, a copy
    cut short) is no bug either: its backup is restored, and `status --nagios` says CRITICAL.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(exc, sqlite3.Error) or code is None:
        return None
    if code & 0xFF in _FULL_OR_FAILING:
        return StorageError(what, f"{exc} ({_FULL_OR_FAILING[code & 0xFF]}): free space on its volume or make it "
                                  "writable, then run again; the step that failed was rolled back")
    if code & 0xFF in _DAMAGED:
        return StorageError(what, f"{exc} ({_DAMAGED[code & 0xFF]}): the file is damaged; stop the runs and "
                                  "restore it from the last backup (docs/operations.md, \"Backups\")")
    return None


@contextmanager
def immediate(db: sqlite3.Connection, what: str, error: type[FluxError]) -> Iterator[sqlite3.Connection]:
    """An immediate transaction: it takes the write lock first, so it never deadlocks midway.

    `what` names the database ("trace store /srv/..."): a lock held elsewhere raises `error` saying so;
    a full or failing volume raises StorageError (exit 10), after a rollback.
    """
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise storage_failure(exc, what) or error(f"{what} is locked by another process: {exc}") from exc
    try:
        yield db
        db.execute("COMMIT")
    except BaseException as exc:
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite rolled back already (a failed COMMIT may do so): the first error is the one
        storage = storage_failure(exc, what)
        if storage is not None:
            raise storage from exc
        raise


class Database:
    """What every store built on `open_database` shares: the connection, `tx()` and `close()`.

    Query mixins (trace/reporting.py, trace/retention.py) subclass it to reach `db` and `tx`.
    """

    label = "database"
    error: type[FluxError] = FluxError
    path: Path
    db: sqlite3.Connection

    def close(self) -> None:
        self.db.close()

    def tx(self) -> AbstractContextManager[sqlite3.Connection]:
        """An immediate transaction: it takes the write lock first, so it never deadlocks midway."""
        return immediate(self.db, f"{self.label} {self.path}", self.error)
