"""Incidents and their notices, as the trace keeps them (annexe 2, 5.1).

When a delay may make records miss their deadline, the sender informs the receivers
(jobs/notices.py decides and words it). The trace keeps each incident, under the
number every notice repeats, and each notice, sent or still waiting for the SMTP relay:
a notice is written here in the same transaction as the incident change that calls for
it, and sent afterwards, so a relay that is down delays a notice and never loses it.
Nothing personal: codes, counts, dates and file names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from .records import Record
from .sqlite import Database


class IncidentState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Cause(StrEnum):
    """Why the late files wait."""

    PARTNER = "partner-failing"  # deliveries to it failed: retried by every run
    HELD = "held"  # an operator's hold: they wait for `flux-pmi resume`
    NOT_ENABLED = "not-enabled"  # its transport was switched off since they were built


class Expected(StrEnum):
    """When the files should reach the département, as far as flux-pmi can tell."""

    NEXT_RUN = "next-run"
    AFTER_RESUME = "after-resume"
    UNKNOWN = "unknown"


class NoticeKind(StrEnum):
    OPEN = "open"
    UPDATE = "update"  # the incident got worse (more flows or records): at most one a day
    CLOSE = "close"


class NoticeState(StrEnum):
    PENDING = "pending"  # written, not yet accepted by the relay: every run tries again
    SENT = "sent"


@dataclass(frozen=True, slots=True)
class Facts:
    """What one département's late files amount to tonight: what a notice says."""

    cause: Cause
    expected: Expected
    flows: tuple[str, ...]
    files: tuple[str, ...]  # technical file names
    records: int
    deadline: str | None  # the earliest, ISO date
    basis: str | None = None  # the clock it comes from: DeadlineBasis's contract or law, or "request"


@dataclass(frozen=True, slots=True)
class Incident(Record):
    id: int
    number: str
    department: str
    state: IncidentState
    cause: Cause
    expected: Expected
    flows: str
    files: int
    records: int
    deadline: str | None
    opened_at: str
    notified_on: str
    closed_at: str | None


@dataclass(frozen=True, slots=True)
class Notice(Record):
    id: int
    incident_id: int
    kind: NoticeKind
    run_id: int | None
    created_at: str
    subject: str
    body: str
    state: NoticeState
    attempts: int
    recipients: int | None
    sent_at: str | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Draft:
    """A notice to write: its kind and its words."""

    kind: NoticeKind
    subject: str
    body: str


Incident._enums = {"state": IncidentState, "cause": Cause, "expected": Expected}
Notice._enums = {"kind": NoticeKind, "state": NoticeState}


class IncidentLog:
    """The named queries over `incidents` and `notices`, on the trace store's connection."""

    def __init__(self, store: Database):
        self.store = store
        self.db = store.db

    def open_incidents(self) -> dict[str, Incident]:
        rows = self.db.execute("SELECT * FROM incidents WHERE state=? ORDER BY department", (IncidentState.OPEN,))
        return {i.department: i for i in Incident.all(rows)}

    def incidents(self) -> list[Incident]:
        return Incident.all(self.db.execute("SELECT * FROM incidents ORDER BY id"))

    def notices(self) -> list[Notice]:
        return Notice.all(self.db.execute("SELECT * FROM notices ORDER BY id"))

    def next_number(self, department: str, day: date) -> str:
        """INC-<dept>-<yyyymmdd>-<n>: the n-th incident of the département opened that day."""
        prefix = f"INC-{department}-{day:%Y%m%d}-"
        n = self.db.execute("SELECT COUNT(*) FROM incidents WHERE number LIKE ?", (prefix + "%",)).fetchone()[0]
        return f"{prefix}{int(n) + 1}"

    def open(self, number: str, department: str, facts: Facts, now: datetime, draft: Draft,
             run_id: int | None) -> None:
        with self.store.tx():
            cur = self.db.execute(
                "INSERT INTO incidents(number, department, state, cause, expected, flows, files, records,"
                " deadline, opened_at, notified_on) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (number, department, IncidentState.OPEN, facts.cause, facts.expected, ",".join(facts.flows),
                 len(facts.files), facts.records, facts.deadline, now.isoformat(), now.date().isoformat()))
            self._add_notice(int(cur.lastrowid or 0), draft, now, run_id)

    def update(self, incident_id: int, facts: Facts, now: datetime, draft: Draft, run_id: int | None) -> None:
        with self.store.tx():
            self.db.execute(
                "UPDATE incidents SET cause=?, expected=?, flows=?, files=?, records=?, deadline=?, notified_on=?"
                " WHERE id=?", (facts.cause, facts.expected, ",".join(facts.flows), len(facts.files), facts.records,
                                facts.deadline, now.date().isoformat(), incident_id))
            self._add_notice(incident_id, draft, now, run_id)

    def close(self, incident_id: int, now: datetime, draft: Draft, run_id: int | None) -> None:
        with self.store.tx():
            self.db.execute("UPDATE incidents SET state=?, closed_at=?, notified_on=? WHERE id=?",
                            (IncidentState.CLOSED, now.isoformat(), now.date().isoformat(), incident_id))
            self._add_notice(incident_id, draft, now, run_id)

    def _add_notice(self, incident_id: int, draft: Draft, now: datetime, run_id: int | None) -> None:
        self.db.execute(
            "INSERT INTO notices(incident_id, kind, run_id, created_at, subject, body, state)"
            " VALUES (?,?,?,?,?,?,?)",
            (incident_id, draft.kind, run_id, now.isoformat(), draft.subject, draft.body, NoticeState.PENDING))

    def pending(self) -> list[tuple[Notice, Incident]]:
        """Notices the relay has not accepted yet, oldest first (an opening before its closing)."""
        rows = self.db.execute(
            "SELECT n.* FROM notices n WHERE n.state=? ORDER BY n.id", (NoticeState.PENDING,)).fetchall()
        notices = Notice.all(rows)
        ids = sorted({n.incident_id for n in notices})
        marks = ",".join("?" for _ in ids)
        incidents = {i.id: i for i in Incident.all(self.db.execute(f"SELECT * FROM incidents WHERE id IN ({marks})",
                                                                   ids))}
        return [(n, incidents[n.incident_id]) for n in notices]

    def sent(self, notice_id: int, now: datetime, recipients: int) -> None:
        with self.store.tx():
            self.db.execute("UPDATE notices SET state=?, sent_at=?, recipients=?, attempts=attempts+1,"
                            " last_error=NULL WHERE id=?", (NoticeState.SENT, now.isoformat(), recipients, notice_id))

    def failed(self, notice_id: int, error: str) -> None:
        with self.store.tx():
            self.db.execute("UPDATE notices SET attempts=attempts+1, last_error=? WHERE id=?",
                            (error[:500], notice_id))
