"""The delivery journal: what a stateful transport (CFT, HubEE) has asked its partner, per file.

CFT keeps a transfer going after CFTUTIL returns, and HubEE keeps a folder once it answered the
POST: a crash of flux-pmi must not end in a second SEND or a second folder. So each step such an
adapter takes is written here before and after it is asked (the transfer id, the folder and case
ids, what was handed on as an ack), and a rerun finishes the file instead of starting again.

The journal is one table of the trace database, so it shares the trace's backups and durability
(WAL, synchronous=FULL: a committed step survives a power cut, as the atomic JSON files did). Its
table is part of the trace's schema (trace/schema.py, version 4), and whichever of the store and the
journal opens the file first brings it up to date. Each step change is one transaction.

An installation from before the journal kept those facts in JSON files under the work folder
(work/cft/<dept>/<part>.json, work/hubee/<dept>.json). Opening the journal imports them once and
renames each to *.json.imported: an upgrade in the middle of an incident still finishes a half-sent
file instead of sending it twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..core.errors import TraceError
from .schema import open_trace
from .sqlite import immediate


class JournalTransport(StrEnum):
    CFT = "cft"
    HUBEE = "hubee"


class CftPhase(StrEnum):
    """Where a CFT transfer stands, as far as flux-pmi knows."""

    NO_IDTU = "?"  # SEND answered without a transfer id: whether CFT holds it is unknown
    SENT = "T"  # CFT has it (IDTU known), not done yet
    DONE = "X"  # done (and acknowledged when the partner's ack is expected)


class HubeeStep(StrEnum):
    """Where a HubEE folder stands."""

    POSTING = "posting"  # POST /folders asked; no usable answer yet
    CREATED = "created"  # the folder exists (ids known)
    UPLOADED = "uploaded"  # the attachment is uploaded
    COMPLETED = "completed"  # HUBEE_COMPLETED: the recipient is notified


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One file's row: its step and the adapter's resume facts."""

    transport: JournalTransport
    department: str
    file_name: str
    sha256: str
    step: str
    facts: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    updated_at: str = ""


def _now() -> str:
    return datetime.now(UTC).isoformat()


class DeliveryJournal:
    """One connection to the trace database, shared by the threads of one transport."""

    def __init__(self, path: Path, *, legacy_dir: Path | None = None, busy_timeout_ms: int = 30_000):
        self.path = Path(path)
        # Delivery workers and the main thread (acks, check) share it: the lock serialises them.
        self._lock = threading.RLock()
        self.db = open_trace(self.path, label="delivery journal", busy_timeout_ms=busy_timeout_ms,
                             check_same_thread=False)
        if legacy_dir is not None:
            import_legacy_states(self, Path(legacy_dir))

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def __enter__(self) -> DeliveryJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, immediate(self.db, f"delivery journal {self.path}", TraceError) as db:
            yield db

    # -- reading ---------------------------------------------------------------------------

    def entry(self, transport: JournalTransport, department: str, file_name: str) -> JournalEntry | None:
        rows = self._select("AND file_name = ?", (str(transport), department, file_name))
        return rows[0] if rows else None

    def entries(self, transport: JournalTransport, department: str) -> list[JournalEntry]:
        """Every file of one transport and département, by name."""
        return self._select("", (str(transport), department))

    def _select(self, more: str, params: tuple[str, ...]) -> list[JournalEntry]:
        try:
            with self._lock:
                rows = self.db.execute(
                    "SELECT transport, department, file_name, sha256, step, facts, created_at, updated_at"
                    f" FROM delivery_journal WHERE transport = ? AND department = ? {more} ORDER BY file_name",
                    params,
                ).fetchall()
        except sqlite3.Error as exc:
            raise TraceError(f"delivery journal {self.path}: {exc}") from exc
        return [_entry(r) for r in rows]

    # -- writing ---------------------------------------------------------------------------

    def put(
        self,
        transport: JournalTransport,
        department: str,
        file_name: str,
        *,
        sha256: str,
        step: str,
        facts: Mapping[str, Any],
        created_at: str | None = None,
    ) -> None:
        """Record a file's step and facts, in one durable transaction (created_at kept from the first write)."""
        now = _now()
        with self._tx() as db:
            db.execute(
                "INSERT INTO delivery_journal"
                "(transport, department, file_name, sha256, step, facts, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(transport, department, file_name) DO UPDATE SET"
                " sha256 = excluded.sha256, step = excluded.step, facts = excluded.facts,"
                " updated_at = excluded.updated_at",
                (
                    str(transport),
                    department,
                    file_name,
                    sha256,
                    str(step),
                    _dump(facts),
                    created_at or now,
                    now,
                ),
            )

    def remove(self, transport: JournalTransport, department: str, file_name: str) -> None:
        with self._tx() as db:
            db.execute(
                "DELETE FROM delivery_journal WHERE transport = ? AND department = ? AND file_name = ?",
                (str(transport), department, file_name),
            )

    def prune(self, transport: JournalTransport, department: str, before: str) -> int:
        """Forget the files created before `before` (ISO time): past the trace's retention they serve nothing."""
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM delivery_journal WHERE transport = ? AND department = ? AND created_at < ?",
                (str(transport), department, before),
            )
        return cur.rowcount

    def _import(self, rows: list[tuple[str, ...]]) -> None:
        # DO NOTHING: a crash between this commit and the rename re-imports the same file, and a row
        # the journal already has is newer than the file.
        with self._tx() as db:
            db.executemany(
                "INSERT INTO delivery_journal"
                "(transport, department, file_name, sha256, step, facts, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                rows,
            )


def _dump(facts: Mapping[str, Any]) -> str:
    return json.dumps(dict(facts), sort_keys=True, separators=(",", ":"))


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    transport, department, file_name, sha256, step, facts, created_at, updated_at = row
    try:
        loaded = json.loads(facts)
    except ValueError:
        loaded = None
    return JournalEntry(
        JournalTransport(transport),
        department,
        file_name,
        sha256,
        step,
        loaded if isinstance(loaded, dict) else {},
        created_at,
        updated_at,
    )


def read_journal(path: Path, transport: JournalTransport, department: str) -> dict[str, JournalEntry]:
    """A département's files of one transport, by name (the operator's and the tests' query)."""
    with DeliveryJournal(path) as journal:
        return {e.file_name: e for e in journal.entries(transport, department)}


# -- the JSON state files of earlier versions ----------------------------------------------------


def import_legacy_states(journal: DeliveryJournal, work: Path) -> int:
    """Import work/cft/<dept>/<part>.json and work/hubee/<dept>.json once; returns how many files."""
    found = [(JournalTransport.CFT, p.parent.name, p) for p in sorted((work / "cft").glob("*/*.json"))] + [
        (JournalTransport.HUBEE, p.stem, p) for p in sorted((work / "hubee").glob("*.json"))
    ]
    for transport, department, path in found:
        journal._import(_legacy_rows(transport, department, path))
        # Renamed, not deleted: an operator can still read what the older version knew.
        path.rename(path.with_name(path.name + ".imported"))
    return len(found)


def _legacy_rows(transport: JournalTransport, department: str, path: Path) -> list[tuple[str, ...]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = dict(data["files"])
        stamp = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat()
        rows: list[tuple[str, ...]] = []
        for name, entry in files.items():
            facts = {
                k: v for k, v in dict(entry).items() if k not in ("sha256", "step", "phase", "created_at")
            }
            if transport is JournalTransport.CFT:
                facts["part"] = data.get("partner") or path.stem
                step = str(entry.get("phase") or CftPhase.NO_IDTU)
            else:
                step = str(entry.get("step") or HubeeStep.POSTING)
            created = str(entry.get("created_at") or stamp)
            rows.append(
                (
                    str(transport),
                    department,
                    str(name),
                    str(entry["sha256"]),
                    step,
                    _dump(facts),
                    created,
                    stamp,
                )
            )
        return rows
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        # Left in place and refused: importing half of it could let a file be sent twice.
        raise TraceError(
            f"delivery journal: state file {path} unreadable ({type(exc).__name__}); "
            "fix or remove it, then run again"
        ) from None
