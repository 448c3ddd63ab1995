"""The catalog of emissions: what `flux-pmi history` lists, like CFTUTIL LISTCAT or Waarp's history.

A named query over the emissions table, filtered by business date, département, flow and
state, answering typed rows (no SQL leaves trace/). The states are the operator's words,
each a predicate on the lifecycle's statuses (trace/lifecycle.py) and the active holds.
Schema version 6 indexes the business date so that three months of a national history
(about 27,000 rows) are read through an index, not scanned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from .lifecycle import TO_DELIVER, Status
from .records import Record
from .sqlite import Database

# Version 6: the catalog's filters (business date first, then département) go through an index.
HISTORY_INDEXES = (
    "CREATE INDEX IF NOT EXISTS emissions_business_date ON emissions(business_date, department, flow)",
)


class HistoryState(StrEnum):
    """What `history --state` selects."""

    ALL = "all"
    UNDELIVERED = "undelivered"  # archived, the partner does not have it yet (failing or held)
    UNACKNOWLEDGED = "unacknowledged"  # delivered, no ack yet
    KO = "ko"  # refused by the département's ack
    REEMITTED = "reemitted"  # a copy made on request (_Rnn)
    HELD = "held"  # archived and waiting for its département's `resume`
    DELIVERED = "delivered"  # the partner took it (acked or not)
    ACKNOWLEDGED = "acknowledged"  # acked OK
    FAILED = "failed"  # its build or its last delivery attempt failed


def _in(statuses: Sequence[Status]) -> str:
    return "e.status IN (" + ",".join(f"'{s}'" for s in statuses) + ")"


_HELD = "h.department IS NOT NULL"
# Each state as a predicate on the emission `e` and its active hold `h` (statuses are StrEnum constants).
_PREDICATES: dict[HistoryState, str] = {
    HistoryState.ALL: "1",
    HistoryState.UNDELIVERED: _in(TO_DELIVER),
    HistoryState.UNACKNOWLEDGED: _in([Status.DELIVERED]),
    HistoryState.KO: _in([Status.REFUSED]),
    HistoryState.REEMITTED: "e.reemission_no > 0",
    HistoryState.HELD: f"{_in(TO_DELIVER)} AND {_HELD}",
    HistoryState.DELIVERED: "e.delivered_at IS NOT NULL",
    HistoryState.ACKNOWLEDGED: _in([Status.ACKNOWLEDGED]),
    HistoryState.FAILED: _in([Status.BUILD_FAILED, Status.DELIVERY_FAILED]),
}


@dataclass(frozen=True, slots=True)
class HistoryRow(Record):
    """One emission as the catalog shows it."""

    id: int
    business_date: str
    flow: str
    department: str
    seq: int
    part: int
    reemission_no: int
    file_name: str | None
    record_count: int
    status: Status
    transport: str | None
    transport_ref: str | None
    delivered_at: str | None
    acknowledged_at: str | None
    ack_status: str | None
    deadline: str | None
    deadline_basis: str | None  # which clock binds: contract (8 working days) or law (8 days)
    last_error: str | None
    held: int  # 1 when its département is held now

    @property
    def state(self) -> str:
        """The status, or `held` for a file that waits only for its département's resume."""
        return HistoryState.HELD if self.held and self.status in TO_DELIVER else self.status


HistoryRow._enums = {"status": Status}


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """The catalog's filters; empty tuples and None mean "any"."""

    date_from: date | None = None
    date_to: date | None = None
    departments: tuple[str, ...] = ()
    flows: tuple[str, ...] = ()
    state: HistoryState = HistoryState.ALL


class HistoryQueries(Database):
    """Mixed into TraceStore: the catalog of emissions."""

    def history(self, wanted: HistoryFilter) -> list[HistoryRow]:
        """The emissions matching `wanted`, by business date, département, flow, sequence and copy."""
        where, args = [_PREDICATES[wanted.state]], []
        for column, op, value in (("business_date", ">=", wanted.date_from), ("business_date", "<=", wanted.date_to)):
            if value is not None:
                where.append(f"e.{column} {op} ?")
                args.append(value.isoformat())
        for column, values in (("department", wanted.departments), ("flow", wanted.flows)):
            if values:
                where.append(f"e.{column} IN ({','.join('?' for _ in values)})")
                args.extend(values)
        return HistoryRow.all(self.db.execute(
            "SELECT e.id, e.business_date, e.flow, e.department, e.seq, e.part, e.reemission_no, e.file_name,"
            " e.record_count, e.status, e.transport, e.transport_ref, e.delivered_at, e.acknowledged_at,"
            " e.ack_status, e.deadline, e.deadline_basis, e.last_error, h.department IS NOT NULL AS held"
            " FROM emissions e LEFT JOIN holds h ON h.department = e.department AND h.resumed_at IS NULL"
            f" WHERE {' AND '.join(where)}"
            " ORDER BY e.business_date, e.department, e.flow, e.seq, e.reemission_no", args))
