"""SQLite trace store (WAL): runs, claimed inputs, emissions and their events, records, rejects.

This is the "historique des échanges" of the convention (art. 5, annexe 2 §6) and the
memory that makes a rerun after a crash complete the work exactly once. Every change
of an emission's status is checked by the lifecycle and written with an event row, in
the same transaction, so the history is an audit trail.

No personal data enters here: record identities are HMAC-SHA256 of the record key
with a secret kept beside the database (owner-only), file names are technical.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import date, datetime
from pathlib import Path

from ..core import workdays
from ..core.errors import TraceError
from .history import HistoryQueries
from .lifecycle import (
    TO_DELIVER,
    AckOutcome,
    BatchState,
    InboxKind,
    InboxState,
    ParkedState,
    RequestStatus,
    RunStatus,
    Status,
    check_transition,
)
from .records import BatchRow, Emission, Hold, InboxFile, Parked, Reject, Request, Run
from .reporting import ReportQueries
from .retention import RetentionQueries
from .schema import SCHEMA_VERSION, open_trace, open_trace_read_only

__all__ = ["SCHEMA_VERSION", "Emission", "HoldWatch", "TraceStore", "recent_archived_files", "waiting_by_department"]

def _iso(value: date | datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _deadlines(received: date, given: workdays.Deadlines | date) -> workdays.Deadlines:
    """Both clocks of a record: as given, or a bare date taken as the contract's (the law counts from receipt)."""
    if isinstance(given, workdays.Deadlines):
        return given
    return workdays.Deadlines(contract=given, legal=workdays.legal_deadline(received))


def recent_archived_files(path: Path, limit: int = 20) -> list[tuple[date, str]]:
    """(business date, file name) of the latest emissions the trace says are in the archive and not
    purged, read-only: `check` proves the archive folder holds them, and must change nothing."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT business_date, file_name FROM emissions WHERE archived_at IS NOT NULL AND purged_at IS NULL"
            " AND file_name IS NOT NULL ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    except sqlite3.Error:
        return []  # an older or damaged trace: `run` will say so, not `check`
    finally:
        db.close()
    return [(date.fromisoformat(d), name) for d, name in rows]


def waiting_by_department(path: Path) -> dict[str, tuple[int, int]]:
    """Per département, (files archived and not delivered, records kept while it was not enabled),
    read-only: `check` names a département taken out of the config while it still has some."""
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    marks = ",".join("?" * len(TO_DELIVER))
    try:
        files = db.execute(f"SELECT department, count(*) FROM emissions WHERE status IN ({marks}) GROUP BY department",
                           tuple(TO_DELIVER)).fetchall()
        kept = db.execute("SELECT department, sum(count) FROM parked WHERE state=? GROUP BY department",
                          (ParkedState.PARKED,)).fetchall()
    except sqlite3.Error:
        return {}  # an older or damaged trace: `run` will say so, not `check`
    finally:
        db.close()
    out = {dept: (n, 0) for dept, n in files}
    for dept, n in kept:
        out[dept] = (out.get(dept, (0, 0))[0], n)
    return out


class HoldWatch:
    """Whether a département is held right now: what delivery workers ask before each file.

    `flux-pmi hold` is another process writing to the trace while a run delivers. The store's own
    connection belongs to the run's main thread, which may be busy building; this is a second,
    read-only connection that any thread may use (one at a time). It is in autocommit and each
    question reads its rows to the end, so each is its own short read transaction and sees every
    hold committed before it began: one indexed SELECT (`holds_active`) per file delivered. It is
    opened (and the schema read) up front, so that a worker's first file waits for no more than that.
    """

    def __init__(self, path: Path, *, busy_timeout_ms: int = 30_000):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=busy_timeout_ms / 1000,
                                       isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._active("")  # prepares the statement: the schema is read here, not before a file
        except sqlite3.Error as exc:
            raise TraceError(f"trace store {self.path}: reading the holds: {exc}") from exc

    def _active(self, department: str) -> list[sqlite3.Row]:
        return self._db.execute("SELECT * FROM holds WHERE department=? AND resumed_at IS NULL",
                                (department,)).fetchall()

    def active(self, department: str) -> Hold | None:
        """The département's active hold, as committed now; None if it is not held."""
        with self._lock:
            try:
                rows = self._active(department)
            except sqlite3.Error as exc:
                raise TraceError(f"trace store {self.path}: reading the holds: {exc}") from exc
        return Hold.from_row(rows[0]) if rows else None

    def close(self) -> None:
        with self._lock:
            self._db.close()


class TraceStore(ReportQueries, RetentionQueries, HistoryQueries):
    """One connection, used by the run's main thread; delivery workers report back to it."""

    label = "trace store"
    error = TraceError

    def __init__(self, path: Path, *, busy_timeout_ms: int = 30_000):
        self.path = Path(path)
        self.db = open_trace(self.path, label=self.label, busy_timeout_ms=busy_timeout_ms)
        self._key = self._load_key()
        self._grouped = False  # inside `group()`: each write is a savepoint of the one transaction

    @classmethod
    def read_only(cls, path: Path) -> TraceStore:
        """The trace for a dry run: every read works, any write fails; nothing is created, not even
        the key (a missing one is a random key: no record of the trace is recognised then)."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self.db = open_trace_read_only(self.path)
        key_file = self.path.with_suffix(".key")
        self._key = key_file.read_bytes() if key_file.exists() else secrets.token_bytes(32)
        return self

    # -- plumbing ------------------------------------------------------------------------

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def group(self) -> Iterator[None]:
        """Several writes in one transaction: one commit (and one fsync) instead of one per write.

        Each write inside keeps its all-or-nothing (a savepoint), and nothing is durable before the
        group ends: a caller groups only facts whose files are already durable, or that a crash
        before the commit merely makes the next run redo (a delivery found in place, say). Nested
        groups are part of the outer one.
        """
        if self._grouped:
            yield
            return
        with self.tx():
            self._grouped = True
            try:
                yield
            finally:
                self._grouped = False

    def tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._savepoint() if self._grouped else super().tx()

    @contextmanager
    def _savepoint(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("SAVEPOINT write")
        try:
            yield self.db
        except BaseException:
            # SQLite may have rolled the whole transaction back already (a full disk does):
            # then there is no savepoint left to return to, and the error that did it is the one to raise.
            if self.db.in_transaction:
                try:
                    self.db.execute("ROLLBACK TO write")
                    self.db.execute("RELEASE write")
                except sqlite3.Error:
                    pass
            raise
        self.db.execute("RELEASE write")

    def _load_key(self) -> bytes:
        key_file = self.path.with_suffix(".key")
        try:
            return key_file.read_bytes()
        except FileNotFoundError:
            key = secrets.token_bytes(32)
            tmp = key_file.with_suffix(".key.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(key)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, key_file)  # first writer wins if two processes race
            except FileExistsError:
                pass
            tmp.unlink(missing_ok=True)
            return key_file.read_bytes()

    def record_ref(self, key: str) -> str:
        return hmac.new(self._key, key.encode(), hashlib.sha256).hexdigest()[:40]

    # -- runs ------------------------------------------------------------------------------

    def start_run(self, command: str, business_date: date | None, now: datetime) -> int:
        """A new `running` row. Commands start runs only while holding the run lock (lock.py), and
        only the lock holder is alive: any other row still `running` is a process that died."""
        with self.tx():
            self.db.execute(
                "UPDATE runs SET status=?, finished_at=COALESCE(finished_at, ?),"
                " message=TRIM(COALESCE(message, '') || ' process gone: found running at a later start')"
                " WHERE status=?", (RunStatus.DIED, _iso(now), RunStatus.RUNNING))
            cur = self.db.execute(
                "INSERT INTO runs(command, business_date, started_at, pid) VALUES (?,?,?,?)",
                (command, _iso(business_date), _iso(now), os.getpid()),
            )
            return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, now: datetime, *, status: RunStatus | str, exit_code: int, records: int = 0,
                   rejects: int = 0, files: int = 0, nbytes: int = 0, message: str = "") -> None:
        with self.tx():
            self.db.execute(
                "UPDATE runs SET finished_at=?, status=?, exit_code=?, records=?, rejects=?, files=?, bytes=?,"
                " message=? WHERE id=?",
                (_iso(now), RunStatus(status), exit_code, records, rejects, files, nbytes, message, run_id),
            )

    def last_runs(self, limit: int = 10) -> list[Run]:
        return Run.all(self.db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,)))

    # -- batches and claimed inputs --------------------------------------------------------

    def create_batch(self, flow: str, business_date: date, run_id: int, now: datetime,
                     files: Iterable[tuple[str, str, str, int]]) -> int:
        """Record a batch and its files (name, kind, sha256, size) *before* they are moved."""
        with self.tx():
            cur = self.db.execute(
                "INSERT INTO batches(flow, business_date, run_id, state, created_at) VALUES (?,?,?,?,?)",
                (flow, _iso(business_date), run_id, BatchState.CLAIMING, _iso(now)),
            )
            batch_id = int(cur.lastrowid or 0)
            self.db.executemany(
                "INSERT INTO inbox_files(batch_id, flow, name, kind, sha256, size, state) VALUES (?,?,?,?,?,?,?)",
                [(batch_id, flow, n, InboxKind(k), h, s, InboxState.CLAIMED) for n, k, h, s in files],
            )
            return batch_id

    def set_batch_state(self, batch_id: int, state: BatchState | str, now: datetime) -> None:
        state = BatchState(state)
        with self.tx():
            self.db.execute(
                "UPDATE batches SET state=?, done_at=CASE WHEN ?=? THEN ? ELSE done_at END WHERE id=?",
                (state, state, BatchState.DONE, _iso(now), batch_id),
            )
            if state == BatchState.DONE:
                self.db.execute("UPDATE inbox_files SET state=? WHERE batch_id=? AND state=?",
                                (InboxState.CONSUMED, batch_id, InboxState.CLAIMED))

    def open_batches(self) -> list[BatchRow]:
        return BatchRow.all(self.db.execute("SELECT * FROM batches WHERE state != ? ORDER BY id", (BatchState.DONE,)))

    def done_batches(self) -> list[BatchRow]:
        return BatchRow.all(self.db.execute("SELECT * FROM batches WHERE state = ? ORDER BY id", (BatchState.DONE,)))

    def batch_files(self, batch_id: int) -> list[InboxFile]:
        return InboxFile.all(self.db.execute("SELECT * FROM inbox_files WHERE batch_id=? ORDER BY name", (batch_id,)))

    def known_input(self, flow: str, sha256: str) -> InboxFile | None:
        row = self.db.execute(
            "SELECT * FROM inbox_files WHERE flow=? AND sha256=? AND kind=? AND state IN (?,?) LIMIT 1",
            (flow, sha256, InboxKind.INPUT, InboxState.CLAIMED, InboxState.CONSUMED),
        ).fetchone()
        return InboxFile.from_row(row) if row is not None else None

    def quarantine_file(self, file_id: int, code: str, reason: str) -> None:
        with self.tx():
            self.db.execute("UPDATE inbox_files SET state=?, code=?, reason=? WHERE id=?",
                            (InboxState.QUARANTINED, code, reason, file_id))

    def quarantined_in_run(self, run_id: int) -> list[InboxFile]:
        return InboxFile.all(self.db.execute(
            "SELECT f.* FROM inbox_files f JOIN batches b ON b.id=f.batch_id"
            " WHERE f.state=? AND b.run_id=?", (InboxState.QUARANTINED, run_id)))

    # -- emissions -------------------------------------------------------------------------

    def get_or_create_emission(self, batch_id: int, flow: str, department: str, business_date: date,
                               part: int, now: datetime) -> Emission:
        """The emission row of a (batch, flow, département, part), allocating its sequence once."""
        with self.tx():
            row = self.db.execute(
                "SELECT * FROM emissions WHERE batch_id=? AND flow=? AND department=? AND part=?"
                " AND reemission_no=0", (batch_id, flow, department, part)).fetchone()
            if row is None:
                seq = self._next_seq(flow, department)
                cur = self.db.execute(
                    "INSERT INTO emissions(batch_id, flow, department, business_date, part, seq, status, built_at)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    (batch_id, flow, department, _iso(business_date), part, seq, Status.BUILT, _iso(now)),
                )
                self._event(int(cur.lastrowid or 0), None, Status.BUILT, now, "allocated")
                row = self.db.execute("SELECT * FROM emissions WHERE id=?", (cur.lastrowid,)).fetchone()
            return Emission.from_row(row)

    def _next_seq(self, flow: str, department: str) -> int:
        """Hand out the next sequence, inside the caller's transaction (the one inserting the emission).

        The sequences table is the memory; the emissions rows are consulted too so that a row
        written by an older version (before the table existed) can never be repeated.
        """
        seq = self.peek_next_seq(flow, department)
        self.db.execute(
            "INSERT INTO sequences(flow, department, last_seq) VALUES (?,?,?)"
            " ON CONFLICT(flow, department) DO UPDATE SET last_seq=excluded.last_seq", (flow, department, seq))
        return int(seq)

    def peek_next_seq(self, flow: str, department: str) -> int:
        """The sequence number the next new emission of (flow, département) will get, without taking it."""
        return int(self.db.execute(
            "SELECT MAX(COALESCE((SELECT last_seq FROM sequences WHERE flow=? AND department=?), 0),"
            " COALESCE((SELECT MAX(seq) FROM emissions WHERE flow=? AND department=?), 0)) + 1",
            (flow, department, flow, department)).fetchone()[0])

    def last_seq(self, flow: str, department: str) -> int:
        row = self.db.execute("SELECT last_seq FROM sequences WHERE flow=? AND department=?",
                              (flow, department)).fetchone()
        return int(row[0]) if row else 0

    def emission(self, emission_id: int) -> Emission:
        row = self.db.execute("SELECT * FROM emissions WHERE id=?", (emission_id,)).fetchone()
        if row is None:
            raise TraceError(f"no emission {emission_id}")
        return Emission.from_row(row)

    def emission_detail(self, emission_id: int) -> Emission | None:
        """The emission with every column (its ack, its request, its purge mark); None if it is not there."""
        row = self.db.execute("SELECT * FROM emissions WHERE id=?", (emission_id,)).fetchone()
        return Emission.from_row(row) if row is not None else None

    def ack_state(self, emission_id: int) -> tuple[Status, str | None]:
        """An emission's status and the ack status it recorded, read together."""
        row = self.db.execute("SELECT status, ack_status FROM emissions WHERE id=?", (emission_id,)).fetchone()
        if row is None:
            raise TraceError(f"no emission {emission_id}")
        return Status(row["status"]), row["ack_status"]

    def has_later_copy(self, emission: Emission) -> bool:
        """Whether a re-emission newer than `emission` exists for its flow, département and sequence."""
        return self.db.execute(
            "SELECT 1 FROM emissions WHERE flow=? AND department=? AND seq=? AND reemission_no>? LIMIT 1",
            (emission.flow, emission.department, emission.seq, emission.reemission_no)).fetchone() is not None

    def unarchived_count(self) -> int:
        """Emissions not (yet) in the archive: built, sealed, or whose build failed."""
        return int(self.db.execute("SELECT COUNT(*) FROM emissions WHERE archived_at IS NULL").fetchone()[0])

    def emissions_of_batch(self, batch_id: int) -> list[Emission]:
        rows = self.db.execute("SELECT * FROM emissions WHERE batch_id=? AND reemission_no=0", (batch_id,))
        return [Emission.from_row(r) for r in rows]

    def has_emission_on(self, flow: str, department: str, business_date: date) -> bool:
        return self.db.execute(
            "SELECT 1 FROM emissions WHERE flow=? AND department=? AND business_date=? AND reemission_no=0 LIMIT 1",
            (flow, department, _iso(business_date))).fetchone() is not None

    def to_deliver(self) -> list[Emission]:
        """Archived emissions the partner does not have yet (a refused one waits for a re-emission)."""
        marks = ",".join("?" * len(TO_DELIVER))
        rows = self.db.execute(
            f"SELECT * FROM emissions WHERE status IN ({marks}) ORDER BY department, flow, seq, reemission_no",
            tuple(TO_DELIVER))
        return [Emission.from_row(r) for r in rows]

    def transition(self, emission_id: int, target: Status, now: datetime, *, detail: str = "",
                   run_id: int | None = None, **fields: object) -> None:
        """Move an emission to `target` if the lifecycle allows it, with its fields, in one transaction."""
        with self.tx():
            self._transition(emission_id, target, now, detail=detail, run_id=run_id, **fields)

    def _transition(self, emission_id: int, target: Status, now: datetime, *, detail: str = "",
                    run_id: int | None = None, **fields: object) -> None:
        row = self.db.execute("SELECT status FROM emissions WHERE id=?", (emission_id,)).fetchone()
        if row is None:
            raise TraceError(f"no emission {emission_id}")
        status = check_transition(row["status"], target)
        stamp = {Status.BUILT: "built_at", Status.SEALED: "sealed_at", Status.ARCHIVED: "archived_at",
                 Status.DELIVERED: "delivered_at", Status.ACKNOWLEDGED: "acknowledged_at",
                 Status.PURGED: "purged_at"}.get(status)
        if stamp and stamp not in fields:
            fields[stamp] = _iso(now)
        sets = ", ".join(["status=?"] + [f"{k}=?" for k in fields])
        self.db.execute(f"UPDATE emissions SET {sets} WHERE id=?", (status, *fields.values(), emission_id))
        self._event(emission_id, row["status"], status, now, detail, run_id)

    def _purge_mark(self, emission_id: int, now: datetime) -> None:
        self._transition(emission_id, Status.PURGED, now, detail="retention")

    def _event(self, emission_id: int, src: str | None, dst: str, now: datetime, detail: str,
               run_id: int | None = None) -> None:
        self.db.execute(
            "INSERT INTO emission_events(emission_id, at, from_status, to_status, run_id, detail)"
            " VALUES (?,?,?,?,?,?)", (emission_id, _iso(now), src, dst, run_id, detail))

    def mark_resealed(self, emission_id: int, now: datetime, *, size: int, sha256: str, recipient_cert_sha256: str,
                      run_id: int | None = None) -> None:
        """An archived file not delivered yet, sealed again for its département's current certificate.

        Its status does not change (an event says what happened); its size, digest and certificate do.
        """
        with self.tx():
            row = self.db.execute("SELECT status, size, sha256, recipient_cert_sha256 FROM emissions WHERE id=?",
                                  (emission_id,)).fetchone()
            if row is None or row["status"] not in TO_DELIVER:
                raise TraceError(f"emission {emission_id}: only a file archived and not delivered is re-sealed")
            if row["sha256"]:
                # A delivery that a crash kept out of the trace may have left this one at the partner.
                self.db.execute(
                    "INSERT OR IGNORE INTO superseded_seals(emission_id, sha256, size, recipient_cert_sha256,"
                    " superseded_at) VALUES (?,?,?,?,?)",
                    (emission_id, row["sha256"], row["size"] or 0, row["recipient_cert_sha256"], _iso(now)))
            self.db.execute("UPDATE emissions SET size=?, sha256=?, recipient_cert_sha256=? WHERE id=?",
                            (size, sha256, recipient_cert_sha256, emission_id))
            self._event(emission_id, row["status"], row["status"], now,
                        "re-sealed for the département's current certificate", run_id)

    def superseded_seals(self, emission_ids: Iterable[int]) -> dict[int, tuple[tuple[str, int], ...]]:
        """Per emission that has some, the (sha256, size) of its earlier seals, replaced by a re-seal
        while it waited (none in the usual night: one query on an empty table)."""
        ids = [int(i) for i in emission_ids]
        out: dict[int, list[tuple[str, int]]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for r in self.db.execute(
                    f"SELECT emission_id, sha256, size FROM superseded_seals WHERE emission_id IN"
                    f" ({','.join('?' * len(chunk))}) ORDER BY superseded_at", chunk):
                out.setdefault(r["emission_id"], []).append((r["sha256"], r["size"]))
        return {k: tuple(v) for k, v in out.items()}

    def restore_seal(self, emission_id: int, now: datetime, *, sha256: str, run_id: int | None = None) -> None:
        """The partner already holds an earlier seal of the emission (delivered before a crash kept it
        out of the trace): that seal becomes the emission's again, so that its ack and the archive agree."""
        with self.tx():
            row = self.db.execute(
                "SELECT e.status, s.size, s.recipient_cert_sha256 FROM superseded_seals s JOIN emissions e"
                " ON e.id = s.emission_id WHERE s.emission_id=? AND s.sha256=?", (emission_id, sha256)).fetchone()
            if row is None or row["status"] not in TO_DELIVER:
                raise TraceError(f"emission {emission_id}: no earlier seal {sha256[:12]} to restore")
            self.db.execute("UPDATE emissions SET size=?, sha256=?, recipient_cert_sha256=? WHERE id=?",
                            (row["size"], sha256, row["recipient_cert_sha256"], emission_id))
            self._event(emission_id, row["status"], row["status"], now,
                        "the partner already held it as sealed for the earlier certificate: not sent again", run_id)

    def mark_archived(self, emission_id: int, now: datetime, *, file_name: str, size: int, sha256: str,
                      records: Iterable[tuple[str, date, workdays.Deadlines | date]], rejects_count: int, run_id: int | None,
                      recipient_cert_sha256: str | None = None) -> None:
        """Archived and its records registered, atomically: either both are true or neither.

        `records` are (record key, received, deadlines); the key is stored only as an HMAC. A bare date
        is the contract's deadline, and the law's is then counted from `received`.
        """
        recs = [(self.record_ref(k), r.isoformat(), _deadlines(r, d)) for k, r, d in records]
        contract = min((d.contract for _, _, d in recs), default=None)
        legal = min((d.legal for _, _, d in recs), default=None)
        both = workdays.Deadlines(contract, legal) if contract and legal else None
        with self.tx():
            self._transition(
                emission_id, Status.ARCHIVED, now, run_id=run_id, file_name=file_name, size=size, sha256=sha256,
                record_count=len(recs), rejects_count=rejects_count,
                received_first=min((r for _, r, _ in recs), default=None),
                deadline=_iso(both.binding if both else None), contract_deadline=_iso(contract),
                legal_deadline=_iso(legal), deadline_basis=both.basis if both else None,
                recipient_cert_sha256=recipient_cert_sha256,
            )
            self.db.executemany(
                "INSERT INTO records(emission_id, ref, received, deadline, contract_deadline, legal_deadline,"
                " deadline_basis) VALUES (?,?,?,?,?,?,?)",
                [(emission_id, ref, r, _iso(d.binding), _iso(d.contract), _iso(d.legal), d.basis)
                 for ref, r, d in recs])

    def refs_emitted_elsewhere(self, refs: Iterable[str], batch_id: int) -> set[str]:
        """The refs among `refs` already carried by an emission of another batch."""
        refs = list(refs)
        found: set[str] = set()
        for i in range(0, len(refs), 500):
            chunk = refs[i:i + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.db.execute(
                f"SELECT r.ref FROM records r JOIN emissions e ON e.id=r.emission_id"
                f" WHERE r.ref IN ({marks}) AND (e.batch_id IS NULL OR e.batch_id != ?)", (*chunk, batch_id)))
        return found

    # -- rejects and anomalies -----------------------------------------------------------

    def add_rejects(self, run_id: int, batch_id: int, rejects: Iterable[tuple], now: datetime) -> None:
        """(flow, department, file, line, code, message) rows; a rebuilt batch does not double them."""
        rows = list(rejects)
        if not rows:  # most inputs have none: no transaction (and no sync) for nothing
            return
        with self.tx():
            self.db.executemany(
                "INSERT OR IGNORE INTO rejects(run_id, batch_id, flow, department, file, line, code, message,"
                " created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                [(run_id, batch_id, *r, _iso(now)) for r in rows])

    def rejects_of_batch(self, batch_id: int) -> list[Reject]:
        return Reject.all(self.db.execute("SELECT * FROM rejects WHERE batch_id=? ORDER BY file, line", (batch_id,)))

    def rejects_of_run(self, run_id: int) -> list[Reject]:
        """The rejects a run reported (or wrote, until it reports), in the order of its rejects report."""
        return Reject.all(self.db.execute("SELECT * FROM rejects WHERE run_id=? ORDER BY flow, file, line", (run_id,)))

    def unreported_rejects(self) -> list[Reject]:
        """Every reject no rejects report has carried yet, in report order: the run's own, and any that a
        run killed or failed before its report left in the trace (its batch may be done since)."""
        return Reject.all(self.db.execute("SELECT * FROM rejects WHERE reported_at IS NULL ORDER BY flow, file, line"))

    def mark_rejects_reported(self, run_id: int, now: datetime) -> None:
        """What `unreported_rejects` gave is in `run_id`'s report, written before this is called (a crash
        in between reports them twice, never not at all); they count as that run's from now on."""
        with self.tx():
            self.db.execute("UPDATE rejects SET run_id=?, reported_at=? WHERE reported_at IS NULL", (run_id, _iso(now)))

    def add_anomaly(self, kind: str, detail: str, now: datetime, *, department: str | None = None,
                    file: str | None = None) -> None:
        with self.tx():
            self.db.execute("INSERT INTO anomalies(at, kind, department, file, detail) VALUES (?,?,?,?,?)",
                            (_iso(now), kind, department, file, detail))

    # -- re-emission -----------------------------------------------------------------------

    def originals_between(self, flow: str, department: str, date_from: date,
                          date_to: date) -> list[Emission]:
        """First emissions (not re-emissions) of a flow and département over a date range, archived or not."""
        return Emission.all(self.db.execute(
            "SELECT * FROM emissions WHERE flow=? AND department=? AND business_date BETWEEN ? AND ?"
            " AND reemission_no=0 ORDER BY business_date, seq",
            (flow, department, _iso(date_from), _iso(date_to))))

    def create_request(self, now: datetime, *, by: str, reason: str, flow: str, department: str,
                       date_from: date, date_to: date, deadline: date | None,
                       status: RequestStatus | str = RequestStatus.PENDING,
                       message: str = "") -> int:
        status = RequestStatus(status)
        with self.tx():
            cur = self.db.execute(
                "INSERT INTO reemission_requests(requested_at, requested_by, reason, flow, department, date_from,"
                " date_to, deadline, status, message, done_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (_iso(now), by, reason, flow, department, _iso(date_from), _iso(date_to), _iso(deadline), status,
                 message, _iso(now) if status != RequestStatus.PENDING else None))
            return int(cur.lastrowid or 0)

    def finish_request(self, request_id: int, now: datetime, status: RequestStatus | str = RequestStatus.DONE,
                       message: str = "") -> None:
        status = RequestStatus(status)
        with self.tx():
            self.db.execute("UPDATE reemission_requests SET status=?, done_at=?, message=? WHERE id=?",
                            (status, _iso(now), message, request_id))

    def create_reemission(self, original_id: int, now: datetime, *, request_id: int | None, file_name: str,
                          size: int, sha256: str, recipient_cert_sha256: str | None, detail: str = "") -> Emission:
        """A new emission row carrying the original's content and sequence, ready to deliver."""
        with self.tx():
            o = self.db.execute("SELECT * FROM emissions WHERE id=?", (original_id,)).fetchone()
            n = self.db.execute("SELECT COALESCE(MAX(reemission_no), 0) + 1 FROM emissions WHERE flow=? AND"
                                " department=? AND seq=?", (o["flow"], o["department"], o["seq"])).fetchone()[0]
            cur = self.db.execute(
                "INSERT INTO emissions(batch_id, flow, department, business_date, part, seq, reemission_no,"
                " reemission_of, request_id, file_name, size, sha256, record_count, rejects_count, status,"
                " received_first, deadline, contract_deadline, legal_deadline, deadline_basis, built_at, sealed_at,"
                " archived_at, recipient_cert_sha256) VALUES (NULL,?,?,?,?,?,?,?,?,?,?,?,?,0,?,?,?,?,?,?,?,?,?,?)",
                (o["flow"], o["department"], o["business_date"], o["part"], o["seq"], n, original_id, request_id,
                 file_name, size, sha256, o["record_count"], Status.REEMITTED, o["received_first"], o["deadline"],
                 o["contract_deadline"], o["legal_deadline"], o["deadline_basis"],
                 _iso(now), _iso(now), _iso(now), recipient_cert_sha256))
            self._event(int(cur.lastrowid or 0), None, Status.REEMITTED, now, detail or f"re-emission of {original_id}")
            return Emission.from_row(self.db.execute("SELECT * FROM emissions WHERE id=?",
                                                     (cur.lastrowid,)).fetchone())

    def next_reemission_no(self, original_id: int) -> int:
        o = self.db.execute("SELECT flow, department, seq FROM emissions WHERE id=?", (original_id,)).fetchone()
        return self.db.execute("SELECT COALESCE(MAX(reemission_no), 0) + 1 FROM emissions WHERE flow=? AND"
                               " department=? AND seq=?", tuple(o)).fetchone()[0]

    def requests(self, status: RequestStatus | str | None = None) -> list[Request]:
        if status:
            return Request.all(self.db.execute("SELECT * FROM reemission_requests WHERE status=? ORDER BY id",
                                               (RequestStatus(status),)))
        return Request.all(self.db.execute("SELECT * FROM reemission_requests ORDER BY id"))

    def emissions_of_request(self, request_id: int) -> list[Emission]:
        rows = self.db.execute("SELECT * FROM emissions WHERE request_id=? ORDER BY id", (request_id,))
        return [Emission.from_row(r) for r in rows]

    # -- holds -------------------------------------------------------------------------------

    def _active_hold(self, department: str) -> Hold | None:
        row = self.db.execute("SELECT * FROM holds WHERE department=? AND resumed_at IS NULL",
                              (department,)).fetchone()
        return Hold.from_row(row) if row is not None else None

    def _hold(self, hold_id: int) -> Hold:
        return Hold.from_row(self.db.execute("SELECT * FROM holds WHERE id=?", (hold_id,)).fetchone())

    def hold(self, department: str, now: datetime, *, by: str, reason: str) -> tuple[Hold, bool]:
        """Hold a département's deliveries; (the active hold, True if it was created now)."""
        with self.tx():
            active = self._active_hold(department)
            if active is not None:
                return active, False
            cur = self.db.execute("INSERT INTO holds(department, held_at, held_by, reason) VALUES (?,?,?,?)",
                                  (department, _iso(now), by, reason))
            return self._hold(int(cur.lastrowid or 0)), True

    def resume(self, department: str, now: datetime, *, by: str) -> Hold | None:
        """Lift the active hold of a département; the hold row (now closed), or None if none was active."""
        with self.tx():
            active = self._active_hold(department)
            if active is None:
                return None
            self.db.execute("UPDATE holds SET resumed_at=?, resumed_by=? WHERE id=?", (_iso(now), by, active.id))
            return self._hold(active.id)

    def active_holds(self) -> dict[str, Hold]:
        rows = self.db.execute("SELECT * FROM holds WHERE resumed_at IS NULL ORDER BY department")
        return {h.department: h for h in Hold.all(rows)}

    def holds_history(self, limit: int = 20) -> list[Hold]:
        return Hold.all(self.db.execute("SELECT * FROM holds ORDER BY id DESC LIMIT ?", (limit,)))

    # -- parked records (département not enabled) --------------------------------------------

    def park(self, batch_id: int, flow: str, department: str, business_date: date, count: int,
             now: datetime) -> None:
        """Note that a batch holds `count` records of a département that is not enabled (idempotent)."""
        with self.tx():
            self.db.execute(
                "INSERT INTO parked(batch_id, flow, department, business_date, count, state, parked_at)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT(batch_id, flow, department) DO NOTHING",
                (batch_id, flow, department, _iso(business_date), count, ParkedState.PARKED, _iso(now)))

    def parked(self, state: ParkedState | None = ParkedState.PARKED) -> list[Parked]:
        if state is None:
            return Parked.all(self.db.execute("SELECT * FROM parked ORDER BY batch_id, flow, department"))
        return Parked.all(self.db.execute("SELECT * FROM parked WHERE state=? ORDER BY batch_id, flow, department",
                                          (state,)))

    def close_parked(self, parked_id: int, now: datetime, state: ParkedState, emitted: int) -> None:
        with self.tx():
            self.db.execute("UPDATE parked SET state=?, closed_at=?, emitted=? WHERE id=?",
                            (state, _iso(now), emitted, parked_id))

    def parked_batches(self) -> set[int]:
        """Batches whose kept input still waits for a département to be enabled: not to be purged."""
        return {r[0] for r in self.db.execute("SELECT DISTINCT batch_id FROM parked WHERE state=?",
                                              (ParkedState.PARKED,))}

    def refs_emitted(self, refs: Iterable[str]) -> set[str]:
        """The refs among `refs` already carried by any emission."""
        refs = list(refs)
        found: set[str] = set()
        for i in range(0, len(refs), 500):
            chunk = refs[i:i + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.db.execute(f"SELECT ref FROM records WHERE ref IN ({marks})", chunk))
        return found

    # -- acknowledgements ------------------------------------------------------------------

    def emission_by_file(self, department: str, file_name: str) -> Emission | None:
        row = self.db.execute("SELECT * FROM emissions WHERE department=? AND file_name=?",
                              (department, file_name)).fetchone()
        return Emission.from_row(row) if row else None

    def add_ack(self, now: datetime, *, department: str, ack_name: str, outcome: AckOutcome, file_name: str | None = None,
                sha256: str | None = None, status: str | None = None, code: str | None = None,
                ack_at: str | None = None, emission_id: int | None = None) -> None:
        with self.tx():
            self.db.execute(
                "INSERT INTO acks(received_at, department, ack_name, file_name, sha256, status, code, ack_at,"
                " emission_id, outcome) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (_iso(now), department, ack_name, file_name, sha256, status, code, ack_at, emission_id, outcome))
