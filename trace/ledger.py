"""The receiving side's own memory: which files were taken, refused or recognised, and what came of them.

A département must know, whatever the transport does, that a file delivered twice, or
re-emitted under a `_Rnn` name, is the same file, and that a sequence number is missing.
The drop cannot tell (files are left in place, relays copy them again), so this SQLite
ledger (WAL, owner-only) records each file once it is decided:

- `files`: name, where it was listed, its size, mtime and SHA-256, the digest its `.sha256`
  declared, the SHA-256 of its plain content, flow, sequence and département read from
  the content, the decision (`ok`, `duplicate`, `refused`, or `ingesting` while its output
  is being written), the reason code, the output folder, when it was taken into account
  (the ack's timestamp) and whether its ack went out;
- `sequences`: the highest sequence taken per flow (kept when the retention deletes the
  rows, so that the next file is not mistaken for a gap);
- `anomalies`: sequence gaps (and other things an operator should look at).

It never holds personal data: names are technical, codes are fixed, digests reveal nothing.

The ledger and the output folder never disagree. A file's row is written `ingesting`
*before* its output folder appears, and turns `ok` only once the folder is complete; a
crash in between leaves an `ingesting` row that the next run resolves by removing the
folder (if it got that far) and the row, then taking the file again from the drop.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from ..core.errors import FluxError
from .records import Record
from .sqlite import Database, open_database

__all__ = ["DUPLICATE", "INGESTING", "OK", "REFUSED", "FileStatus", "Gap", "Ledger", "LedgerError", "Row"]


class FileStatus(StrEnum):
    """A `files` row's decision."""

    INGESTING = "ingesting"  # its output folder is being written (a crash leaves it to resolve)
    OK = "ok"
    DUPLICATE = "duplicate"
    REFUSED = "refused"


INGESTING, OK, DUPLICATE, REFUSED = FileStatus.INGESTING, FileStatus.OK, FileStatus.DUPLICATE, FileStatus.REFUSED
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    folder TEXT NOT NULL DEFAULT '',    -- where the drop listed it ('' for a local drop)
    size INTEGER NOT NULL,
    mtime INTEGER NOT NULL,
    marker_stat TEXT NOT NULL DEFAULT '',    -- size:mtime of its .sha256 when listed ('' when none)
    marker_sha256 TEXT NOT NULL DEFAULT '',  -- what its .sha256 declared ('' when none or unreadable)
    sha256 TEXT NOT NULL,               -- of the file as received ('' when it was not read: too large)
    content_sha256 TEXT,                -- of the plain content: recognises a re-delivery or re-emission
    sealed INTEGER NOT NULL,
    flow TEXT,
    department TEXT,
    seq INTEGER,
    status TEXT NOT NULL,               -- ingesting, ok, duplicate, refused
    code TEXT NOT NULL,                 -- OK, DUPLICATE, or the refusal's reason code
    rows INTEGER NOT NULL DEFAULT 0,
    scans INTEGER NOT NULL DEFAULT 0,
    duplicate_of INTEGER,
    output_dir TEXT,                    -- relative to [output] dir
    received_at TEXT NOT NULL,          -- when it was taken into account (aware, local): the ack's timestamp
    received_utc TEXT NOT NULL,         -- the same in UTC, for comparisons (retention)
    ack_sha256 TEXT,                    -- the digest its ack carries (NULL when no ack can be written)
    acked_at TEXT,                      -- when the ack was published
    purging_at TEXT                     -- retention: its output and drop copy are being removed
);
CREATE INDEX IF NOT EXISTS files_name ON files(name);
CREATE INDEX IF NOT EXISTS files_content ON files(content_sha256);
CREATE INDEX IF NOT EXISTS files_seq ON files(flow, seq);
CREATE TABLE IF NOT EXISTS sequences (
    flow TEXT PRIMARY KEY,
    high INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS anomalies (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,                 -- SEQUENCE_GAP
    flow TEXT,
    seq INTEGER,
    file TEXT,
    detail TEXT NOT NULL
);
"""


class LedgerError(FluxError):
    """The ledger cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    name: str
    folder: str
    size: int
    mtime: int
    marker_stat: str
    marker_sha256: str
    sha256: str
    content_sha256: str | None
    sealed: bool
    flow: str | None
    department: str | None
    seq: int | None
    status: FileStatus
    code: str
    rows: int
    scans: int
    duplicate_of: int | None
    output_dir: str | None
    received_at: str
    ack_sha256: str | None
    acked_at: str | None
    purging_at: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Row:
        values = {f: row[f] for f in cls.__slots__}
        values["sealed"] = bool(values["sealed"])
        values["status"] = FileStatus(values["status"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Gap:
    """Sequences `first`..`last` of `flow` were not received before `seq`."""

    flow: str
    first: int
    last: int
    seq: int

    def describe(self) -> str:
        missing = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        return f"{self.flow}: sequence {self.seq} received, {missing} missing"


@dataclass(frozen=True, slots=True)
class Anomaly(Record):
    """Something an operator should look at: a sequence gap (kind SEQUENCE_GAP)."""

    id: int
    at: str
    kind: str
    flow: str | None
    seq: int | None
    file: str | None
    detail: str


def _utc(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


class Ledger(Database):
    """One connection, used by the receiving process's main thread (the run lock keeps it alone)."""

    label = "ledger"
    error = LedgerError

    def __init__(self, path: Path, *, busy_timeout_ms: int = 30_000):
        self.path = Path(path)
        self.db = open_database(self.path, label=self.label, schema=_SCHEMA, version=SCHEMA_VERSION,
                                error=LedgerError, busy_timeout_ms=busy_timeout_ms)

    def _one(self, sql: str, args: tuple = ()) -> Row | None:
        row = self.db.execute(sql, args).fetchone()
        return Row.from_row(row) if row is not None else None

    def _all(self, sql: str, args: tuple = ()) -> list[Row]:
        return [Row.from_row(r) for r in self.db.execute(sql, args).fetchall()]

    # -- what is known ------------------------------------------------------------------------

    def get(self, file_id: int) -> Row | None:
        return self._one("SELECT * FROM files WHERE id=?", (file_id,))

    def files(self) -> list[Row]:
        return self._all("SELECT * FROM files ORDER BY id")

    def listed_before(self, name: str, folder: str, size: int, mtime: int, marker_stat: str) -> Row | None:
        """A decided file that looks unchanged in the drop (it and its `.sha256`): skipped unread."""
        return self._one(
            "SELECT * FROM files WHERE name=? AND folder=? AND size=? AND mtime=? AND marker_stat=? "
            "AND status != ? ORDER BY id LIMIT 1",
            (name, folder, size, mtime, marker_stat, INGESTING),
        )

    def decided(self, name: str, sha256: str, marker_sha256: str) -> Row | None:
        """This very file (name, bytes and declared digest) was decided already.

        The declared digest is part of the key so that a file refused because its `.sha256`
        was wrong is taken again once the sender fixes the `.sha256`.
        """
        return self._one(
            "SELECT * FROM files WHERE name=? AND sha256=? AND marker_sha256=? AND status != ? ORDER BY id LIMIT 1",
            (name, sha256, marker_sha256, INGESTING),
        )

    def refresh_listing(self, file_id: int, folder: str, size: int, mtime: int, marker_stat: str) -> None:
        # Same bytes, new listing attributes (a touch, a copy): the quick skip works again next time.
        self.db.execute(
            "UPDATE files SET folder=?, size=?, mtime=?, marker_stat=? WHERE id=?",
            (folder, size, mtime, marker_stat, file_id),
        )

    def ingested_content(self, content_sha256: str) -> Row | None:
        return self._one(
            "SELECT * FROM files WHERE content_sha256=? AND status=? ORDER BY id LIMIT 1",
            (content_sha256, OK),
        )

    def ingested_seq(self, flow: str, seq: int) -> Row | None:
        return self._one(
            "SELECT * FROM files WHERE flow=? AND seq=? AND status=? ORDER BY id LIMIT 1", (flow, seq, OK)
        )

    def high(self, flow: str) -> int | None:
        row = self.db.execute("SELECT high FROM sequences WHERE flow=?", (flow,)).fetchone()
        return row["high"] if row else None

    def anomalies(self) -> list[Anomaly]:
        return Anomaly.all(self.db.execute("SELECT * FROM anomalies ORDER BY id"))

    # -- decisions ----------------------------------------------------------------------------

    def _insert(self, values: dict[str, object]) -> int:
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        cur = self.db.execute(f"INSERT INTO files ({cols}) VALUES ({marks})", tuple(values.values()))
        return int(cur.lastrowid or 0)

    def decide(self, at: datetime, **values: object) -> int:
        """Insert a decided row (refused or duplicate): one statement, so atomic."""
        assert values.get("status") in (REFUSED, DUPLICATE)
        return self._insert({**values, "received_at": at.isoformat(), "received_utc": _utc(at)})

    def begin(self, at: datetime, output_base: str, **values: object) -> tuple[int, str]:
        """Insert the `ingesting` row and fix its output folder from its id, in one transaction."""
        with self.tx():
            file_id = self._insert(
                {
                    **values,
                    "status": INGESTING,
                    "code": "INGESTING",
                    "received_at": at.isoformat(),
                    "received_utc": _utc(at),
                }
            )
            seq = values.get("seq")
            folder = f"{output_base}/{file_id:06d}-" + (f"seq{seq:06d}" if isinstance(seq, int) else "noseq")
            self.db.execute("UPDATE files SET output_dir=? WHERE id=?", (folder, file_id))
        return file_id, folder

    def finish(self, file_id: int, at: datetime, *, rows: int, scans: int) -> Gap | None:
        """The output folder is complete: the row turns `ok`, and the sequence is checked for a gap.

        The gap and the new high-water mark are written in the same transaction, so a crash
        before it leaves nothing of this file behind but its `ingesting` row.
        """
        with self.tx():
            row = self.get(file_id)
            assert row is not None and row.status == INGESTING
            gap = None
            if row.flow is not None and row.seq is not None:
                high = self.high(row.flow)
                expected = (high or 0) + 1
                if row.seq > expected:
                    gap = Gap(row.flow, expected, row.seq - 1, row.seq)
                    self.db.execute(
                        "INSERT INTO anomalies (at, kind, flow, seq, file, detail) VALUES (?, ?, ?, ?, ?, ?)",
                        (at.isoformat(), "SEQUENCE_GAP", row.flow, row.seq, row.name, gap.describe()),
                    )
                if high is None or row.seq > high:
                    self.db.execute(
                        "INSERT INTO sequences (flow, high) VALUES (?, ?) "
                        "ON CONFLICT(flow) DO UPDATE SET high=excluded.high",
                        (row.flow, row.seq),
                    )
            self.db.execute(
                "UPDATE files SET status=?, code='OK', rows=?, scans=?, received_at=?, received_utc=? WHERE id=?",
                (OK, rows, scans, at.isoformat(), _utc(at), file_id),
            )
        return gap

    def forget(self, file_id: int) -> None:
        """Remove an `ingesting` row whose output was removed (crash recovery, a write that failed)."""
        self.db.execute("DELETE FROM files WHERE id=? AND status=?", (file_id, INGESTING))

    def interrupted(self) -> list[Row]:
        return self._all("SELECT * FROM files WHERE status=? ORDER BY id", (INGESTING,))

    # -- acknowledgements ---------------------------------------------------------------------

    def pending_acks(self) -> list[Row]:
        return self._all(
            "SELECT * FROM files WHERE ack_sha256 IS NOT NULL AND acked_at IS NULL AND status != ? "
            "AND purging_at IS NULL ORDER BY id",
            (INGESTING,),
        )

    def mark_acked(self, file_id: int, at: datetime) -> None:
        self.db.execute("UPDATE files SET acked_at=? WHERE id=?", (at.isoformat(), file_id))

    # -- retention ----------------------------------------------------------------------------

    def mark_expired(self, cutoff: datetime, at: datetime) -> None:
        """Mark the rows taken before `cutoff`: from now on their output and drop copy may be gone."""
        self.db.execute(
            "UPDATE files SET purging_at=? WHERE received_utc < ? AND status != ? AND purging_at IS NULL",
            (at.isoformat(), _utc(cutoff), INGESTING),
        )

    def purging(self) -> list[Row]:
        return self._all("SELECT * FROM files WHERE purging_at IS NOT NULL ORDER BY id")

    def delete(self, file_id: int) -> None:
        self.db.execute("DELETE FROM files WHERE id=?", (file_id,))

    def delete_anomalies_before(self, cutoff: datetime) -> int:
        rows = self.db.execute("SELECT id, at FROM anomalies").fetchall()
        old = [r["id"] for r in rows if datetime.fromisoformat(r["at"]) < cutoff]
        self.db.executemany("DELETE FROM anomalies WHERE id=?", [(i,) for i in old])
        return len(old)
