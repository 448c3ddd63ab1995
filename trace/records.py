"""The trace's rows as typed records: what `TraceStore` hands out instead of sqlite3.Row.

SQL stays in trace/; everything outside reads frozen dataclasses whose fields are the
table's columns, so a renamed column breaks at type-check time, not at 3 a.m. The
statuses are the lifecycle's StrEnums (trace/lifecycle.py).
"""

from __future__ import annotations

import sqlite3
from dataclasses import astuple, dataclass, fields
from typing import Any, Self

from ..core.workdays import DeadlineBasis
from .lifecycle import BatchState, InboxState, ParkedState, RequestStatus, RunStatus, Status


class Record:
    """A row as a dataclass, built from a sqlite3.Row by column name."""

    __slots__ = ()
    _enums: dict[str, type] = {}

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Self:
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            value = row[f.name]
            enum = cls._enums.get(f.name)
            values[f.name] = enum(value) if enum is not None and value is not None else value
        return cls(**values)

    @classmethod
    def all(cls, rows: Any) -> list[Self]:
        return [cls.from_row(r) for r in rows]

    # Read by column name or unpacked as a tuple, like the sqlite3.Row it replaces: the tests compare
    # trace contents that way. Product code reads attributes, so that mypy checks every column name.
    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]  # type: ignore[arg-type]

    def __iter__(self) -> Any:
        return iter(astuple(self))  # type: ignore[call-overload]



@dataclass(frozen=True, slots=True)
class Emission(Record):
    """An emission row, every column."""

    id: int
    batch_id: int | None
    flow: str
    department: str
    business_date: str
    part: int
    seq: int
    reemission_no: int
    reemission_of: int | None
    request_id: int | None
    file_name: str | None
    size: int | None
    sha256: str | None
    record_count: int
    rejects_count: int
    status: Status
    transport: str | None
    attempts: int
    last_error: str | None
    received_first: str | None
    deadline: str | None
    built_at: str | None
    sealed_at: str | None
    archived_at: str | None
    delivered_at: str | None
    acknowledged_at: str | None
    ack_status: str | None
    ack_code: str | None
    recipient_cert_sha256: str | None
    transport_ref: str | None
    purged_at: str | None
    contract_deadline: str | None  # schema version 5: each clock's earliest date, and which one binds
    legal_deadline: str | None
    deadline_basis: DeadlineBasis | None


@dataclass(frozen=True, slots=True)
class Run(Record):
    id: int
    command: str
    business_date: str | None
    started_at: str
    finished_at: str | None
    status: RunStatus
    exit_code: int | None
    pid: int | None
    records: int
    rejects: int
    files: int
    bytes: int
    message: str | None


@dataclass(frozen=True, slots=True)
class BatchRow(Record):
    id: int
    flow: str
    business_date: str
    run_id: int
    state: BatchState
    created_at: str
    done_at: str | None


@dataclass(frozen=True, slots=True)
class InboxFile(Record):
    id: int
    batch_id: int
    flow: str
    name: str
    kind: str
    sha256: str
    size: int
    state: InboxState
    code: str | None
    reason: str | None
    purged_at: str | None


@dataclass(frozen=True, slots=True)
class Reject(Record):
    flow: str
    department: str | None
    file: str
    line: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Request(Record):
    """A re-emission request."""

    id: int
    requested_at: str
    requested_by: str
    reason: str
    flow: str
    department: str
    date_from: str
    date_to: str
    deadline: str | None
    status: RequestStatus
    done_at: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class Ack(Record):
    id: int
    received_at: str
    department: str
    ack_name: str
    file_name: str | None
    sha256: str | None
    status: str | None
    code: str | None
    ack_at: str | None
    emission_id: int | None
    outcome: str


@dataclass(frozen=True, slots=True)
class Hold(Record):
    id: int
    department: str
    held_at: str
    held_by: str
    reason: str
    resumed_at: str | None
    resumed_by: str | None


@dataclass(frozen=True, slots=True)
class Parked(Record):
    id: int
    batch_id: int
    flow: str
    department: str
    business_date: str
    count: int
    state: ParkedState
    parked_at: str
    closed_at: str | None
    emitted: int | None


@dataclass(frozen=True, slots=True)
class Anomaly(Record):
    id: int
    at: str
    kind: str
    department: str | None
    file: str | None
    detail: str


Emission._enums = {"status": Status, "deadline_basis": DeadlineBasis}
Run._enums = {"status": RunStatus}
BatchRow._enums = {"state": BatchState}
InboxFile._enums = {"state": InboxState}
Request._enums = {"status": RequestStatus}
Parked._enums = {"state": ParkedState}
