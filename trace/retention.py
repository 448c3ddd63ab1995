"""The retention purge's questions and deletions on the trace (the files side is jobs/retention.py).

Step 1 of the purge marks emission groups (`mark_for_purge`): each emission goes to `purged`
through the lifecycle map, with its event, like any other status change. Step 3 deletes
the marked emissions, what hangs off them and the other rows past the cutoff by their own
dates (`delete_past`), in one transaction that a dry run rolls back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from .lifecycle import PURGEABLE, BatchState, Status
from .records import Emission
from .sqlite import Database

_KEEP_STATUSES = ",".join(f"'{s}'" for s in (*PURGEABLE, Status.PURGED))
# An emission group is an original and its re-emissions (same flow, département, sequence): it
# is purged as a whole, from its last transmission, and only when none of it still has to go.
_GROUPS = f"""
SELECT flow, department, seq, MAX(delivered_at) AS last,
       SUM(CASE WHEN status NOT IN ({_KEEP_STATUSES})
                  OR (batch_id IS NOT NULL AND batch_id IN (SELECT id FROM batches WHERE state != '{BatchState.DONE}'))
                THEN 1 ELSE 0 END) AS busy
FROM emissions GROUP BY flow, department, seq
"""
_GONE = "SELECT id FROM emissions WHERE purged_at IS NOT NULL"
# Deleted by their own date `?` (the cutoff), after the marked emissions and what hangs off them.
_BY_DATE = {
    "anomalies": "DELETE FROM anomalies WHERE substr(at, 1, 10) < ?",
    "reemission_requests": "DELETE FROM reemission_requests WHERE substr(requested_at, 1, 10) < ?",
    "holds": "DELETE FROM holds WHERE resumed_at IS NOT NULL AND substr(resumed_at, 1, 10) < ?",
    "parked": "DELETE FROM parked WHERE closed_at IS NOT NULL AND substr(closed_at, 1, 10) < ?",
    # A closed incident's notices, then the incident (the trace is kept 3 months at most, art. 5).
    "notices": "DELETE FROM notices WHERE incident_id IN"
               " (SELECT id FROM incidents WHERE closed_at IS NOT NULL AND substr(closed_at, 1, 10) < ?)",
    "incidents": "DELETE FROM incidents WHERE closed_at IS NOT NULL AND substr(closed_at, 1, 10) < ?",
}


@dataclass(frozen=True, slots=True)
class Marked:
    """A marked emission and its group's last transmission (the archive retention counts from it)."""

    emission: Emission
    last: str | None


@dataclass
class Deleted:
    emissions: int = 0
    undelivered: int = 0  # among `emissions`: never delivered
    rows: dict[str, int] = field(default_factory=dict)  # other trace rows, by table


class _Rollback(Exception):
    """Raised inside the rows transaction of a dry run so that it is rolled back."""


class RetentionQueries(Database):
    """Mixed into TraceStore: what the purge reads, marks and deletes."""

    def last_purge_cutoff(self) -> date | None:
        """The latest cutoff a purge applied: dates before it may be gone even if retention grew since."""
        row = self.db.execute("SELECT MAX(archive_cutoff) FROM purges").fetchone()
        return date.fromisoformat(row[0]) if row and row[0] else None

    def named_files(self) -> set[str]:
        """Every file name an emission row still accounts for."""
        return {r[0] for r in self.db.execute("SELECT file_name FROM emissions WHERE file_name IS NOT NULL")}

    def held_before(self, cutoff: date) -> int:
        """Emissions older than `cutoff` kept because their batch is still in progress."""
        return int(self.db.execute(
            "SELECT COUNT(*) FROM emissions WHERE business_date < ?"
            " AND batch_id IN (SELECT id FROM batches WHERE state != ?)",
            (cutoff.isoformat(), BatchState.DONE)).fetchone()[0])

    def mark_for_purge(self, cutoff: date, now: datetime, *, write: bool = True) -> list[Marked]:
        """Step 1: mark the groups whose last transmission is past `cutoff`; the marked emissions, already
        marked ones included (a purge interrupted after marking). `write=False` marks nothing."""
        with self.tx():
            return self._mark(cutoff, now, write=write)

    def _mark(self, cutoff: date, now: datetime, *, write: bool) -> list[Marked]:
        c = cutoff.isoformat()
        groups = self.db.execute(_GROUPS).fetchall()
        last = {(g["flow"], g["department"], g["seq"]): g["last"] for g in groups}
        due = {(g["flow"], g["department"], g["seq"]) for g in groups
               if g["last"] is not None and g["last"][:10] < c and not g["busy"]}
        rows = Emission.all(self.db.execute("SELECT * FROM emissions ORDER BY id"))
        marked = [e for e in rows if e.purged_at is not None or (e.flow, e.department, e.seq) in due]
        if write:
            for e in marked:
                if e.status != Status.PURGED:
                    self._purge_mark(e.id, now)
        return [Marked(e, last.get((e.flow, e.department, e.seq))) for e in marked]

    def _purge_mark(self, emission_id: int, now: datetime) -> None:
        raise NotImplementedError  # TraceStore routes it through the lifecycle map

    def delete_past(self, cutoff: date, archive_cutoff: date, now: datetime, *, keep: set[int],
                    archive_files: int, consumed_dirs: int, dry_run: bool = False) -> Deleted:
        """Step 3: the marked emissions and their dependants, then the other tables by their own dates,
        and a `purges` row; `keep` are batches whose kept input waits (parked records). A dry run marks
        and deletes in a transaction it rolls back, and answers the same counts."""
        out = Deleted()
        try:
            with self.tx():
                if dry_run:  # the marks step 1 would have made, in this transaction only
                    self._mark(cutoff, now, write=True)
                self._delete(cutoff, keep, out)
                self.db.execute(
                    "INSERT INTO purges(at, archive_cutoff, trace_cutoff, archive_files, emissions, consumed_dirs)"
                    " VALUES (?,?,?,?,?,?)",
                    (now.isoformat(), archive_cutoff.isoformat(), cutoff.isoformat(), archive_files, out.emissions,
                     consumed_dirs))
                if dry_run:
                    raise _Rollback
        except _Rollback:
            pass
        return out

    def _delete(self, cutoff: date, keep: set[int], out: Deleted) -> None:
        c = cutoff.isoformat()
        kept = ",".join(str(int(b)) for b in sorted(keep)) or "-1"
        rows = out.rows
        out.undelivered = self.db.execute(
            "SELECT COUNT(*) FROM emissions WHERE purged_at IS NOT NULL AND delivered_at IS NULL").fetchone()[0]
        rows["emission_events"] = self.db.execute(f"DELETE FROM emission_events WHERE emission_id IN ({_GONE})").rowcount
        rows["superseded_seals"] = self.db.execute(
            f"DELETE FROM superseded_seals WHERE emission_id IN ({_GONE})").rowcount
        rows["records"] = self.db.execute(f"DELETE FROM records WHERE emission_id IN ({_GONE})").rowcount
        rows["acks"] = self.db.execute(
            f"DELETE FROM acks WHERE emission_id IN ({_GONE})"
            " OR (emission_id IS NULL AND substr(received_at, 1, 10) < ?)", (c,)).rowcount
        # Re-emissions first: they point at their original.
        out.emissions = self.db.execute(
            "DELETE FROM emissions WHERE purged_at IS NOT NULL AND reemission_no > 0").rowcount
        out.emissions += self.db.execute("DELETE FROM emissions WHERE purged_at IS NOT NULL").rowcount
        old_batches = (
            f"SELECT id FROM batches WHERE business_date < ? AND state = '{BatchState.DONE}'"
            " AND id NOT IN (SELECT batch_id FROM emissions WHERE batch_id IS NOT NULL)"
            f" AND id NOT IN ({kept})"  # parked records: the batch is replayed under its id
        )
        rows["inbox_files"] = self.db.execute(
            f"DELETE FROM inbox_files WHERE batch_id IN ({old_batches})", (c,)).rowcount
        rows["rejects"] = self.db.execute(
            f"DELETE FROM rejects WHERE batch_id IN ({old_batches}) OR substr(created_at, 1, 10) < ?", (c, c)).rowcount
        rows["batches"] = self.db.execute(f"DELETE FROM batches WHERE id IN ({old_batches})", (c,)).rowcount
        rows["runs"] = self.db.execute(
            "DELETE FROM runs WHERE substr(started_at, 1, 10) < ? AND id NOT IN (SELECT run_id FROM batches)",
            (c,)).rowcount
        for table, sql in _BY_DATE.items():
            rows[table] = self.db.execute(sql, (c,)).rowcount
