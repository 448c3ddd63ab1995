"""The trace's read-only questions: what `status`, the metrics and the scheduler ask of it.

They read and never write, so they sit apart from the store's writers; each is a named
query answering typed records (trace/records.py), so no SQL leaves trace/.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .lifecycle import AckOutcome, Status
from .records import Ack, Anomaly, Emission, Record, Run
from .sqlite import Database


@dataclass(frozen=True, slots=True)
class DeadlineCount(Record):
    """Records of a département and flow sharing a deadline, its basis and a delivery time (None: not delivered)."""

    department: str
    flow: str
    deadline: str
    deadline_basis: str | None
    delivered_at: str | None
    n: int


@dataclass(frozen=True, slots=True)
class LastDelivery(Record):
    """When a département last received a file (Unix time)."""

    department: str
    at: int


@dataclass(frozen=True, slots=True)
class AckCount(Record):
    outcome: str
    status: str | None
    n: int


@dataclass(frozen=True, slots=True)
class FlowCount(Record):
    """What a run archived for a flow: files and their records (re-emissions not counted)."""

    flow: str
    files: int
    records: int


def _marks(values: Iterable[object]) -> str:
    return ",".join("?" for _ in values)


class ReportQueries(Database):
    """Mixed into TraceStore: the reads behind `flux-pmi status`, the metrics file and the scheduler."""

    def last_run(self, command: str, *, statuses: Iterable[str] | None = None,
                 finished: bool = False) -> Run | None:
        """The latest run of `command`, among `statuses` if given, only ended ones if `finished`."""
        where, args = ["command=?"], [command]
        if statuses is not None:
            wanted = list(statuses)
            where.append(f"status IN ({_marks(wanted)})")
            args += wanted
        if finished:
            where.append("finished_at IS NOT NULL")
        row = self.db.execute(f"SELECT * FROM runs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT 1",
                              args).fetchone()
        return Run.from_row(row) if row is not None else None

    def first_run(self, command: str) -> Run | None:
        row = self.db.execute("SELECT * FROM runs WHERE command=? ORDER BY id LIMIT 1", (command,)).fetchone()
        return Run.from_row(row) if row is not None else None

    def latest_emission(self, flow: str, department: str) -> Emission | None:
        """The last emission of a flow to a département: highest sequence, latest copy."""
        row = self.db.execute(
            "SELECT * FROM emissions WHERE flow=? AND department=? ORDER BY seq DESC, reemission_no DESC LIMIT 1",
            (flow, department)).fetchone()
        return Emission.from_row(row) if row is not None else None

    def emissions_in(self, statuses: Iterable[Status]) -> list[Emission]:
        wanted = list(statuses)
        return Emission.all(self.db.execute(
            f"SELECT * FROM emissions WHERE status IN ({_marks(wanted)}) ORDER BY id", wanted))

    def deadline_counts(self) -> list[DeadlineCount]:
        """Records grouped by (département, flow, deadline, basis, delivery): three months of records, few groups."""
        return DeadlineCount.all(self.db.execute(
            "SELECT e.department, e.flow, r.deadline, r.deadline_basis, e.delivered_at, COUNT(*) AS n FROM records r"
            " JOIN emissions e ON e.id = r.emission_id"
            " GROUP BY e.department, e.flow, r.deadline, r.deadline_basis, e.delivered_at"))

    def unacknowledged(self, delivered_before: str) -> list[Emission]:
        """Delivered before `delivered_before` (compared as instants, whatever the offsets) and never acknowledged."""
        return Emission.all(self.db.execute(
            "SELECT * FROM emissions WHERE status = ? AND acknowledged_at IS NULL"
            " AND julianday(delivered_at) < julianday(?) ORDER BY department, flow, seq, reemission_no",
            (Status.DELIVERED, delivered_before)))

    def last_deliveries(self) -> list[LastDelivery]:
        """Per département, the latest delivery the trace still holds, as Unix time."""
        return LastDelivery.all(self.db.execute(
            "SELECT department, MAX(CAST(strftime('%s', delivered_at) AS INTEGER)) AS at FROM emissions"
            " WHERE delivered_at IS NOT NULL GROUP BY department ORDER BY department"))

    def ack_counts(self) -> list[AckCount]:
        return AckCount.all(self.db.execute(
            "SELECT outcome, status, COUNT(*) AS n FROM acks GROUP BY outcome, status"))

    def ko_acks(self) -> list[Ack]:
        """The KO acks recorded against an emission, oldest first."""
        return Ack.all(self.db.execute("SELECT * FROM acks WHERE outcome=? AND UPPER(status)='KO' ORDER BY id", (AckOutcome.RECORDED,)))

    def recent_anomalies(self, limit: int) -> list[Anomaly]:
        return Anomaly.all(self.db.execute("SELECT * FROM anomalies ORDER BY id DESC LIMIT ?", (limit,)))

    def archived_by_flow(self, run_id: int) -> list[FlowCount]:
        """Files and records a run archived, per flow, read from its archive events (re-emissions not counted)."""
        return FlowCount.all(self.db.execute(
            "SELECT e.flow, COUNT(DISTINCT e.id) AS files, COALESCE(SUM(e.record_count), 0) AS records"
            " FROM emissions e WHERE e.reemission_no = 0 AND e.id IN (SELECT emission_id FROM emission_events"
            " WHERE run_id = ? AND to_status = ?) GROUP BY e.flow", (run_id, Status.ARCHIVED)))

    def rejects_by_flow(self, run_id: int, *, except_codes: Iterable[str] = ()) -> dict[str, int]:
        """How many rejects a run wrote, per flow, leaving out `except_codes` (warnings)."""
        skip = list(except_codes)
        rows = self.db.execute(
            f"SELECT flow, COUNT(*) FROM rejects WHERE run_id = ? AND code NOT IN ({_marks(skip)}) GROUP BY flow",
            (run_id, *skip))
        return {flow: int(n) for flow, n in rows}
