"""`flux-pmi status`: what an operator or a monitoring probe needs to know, in one read.

The trace store already holds the whole history; this module reads it (never writes)
and answers the morning questions: did last night run, did every département get its
files, which records are about to miss or have missed the 8-working-day deadline
(annexe 2 §3), what did the partners acknowledge, which re-emissions are owed, and
which certificates need renewing. The result is a plain dict whose shape is a
documented, versioned contract (docs/status-json.md, schema "flux-pmi.status/1") so
that monitoring can parse it; `render_text` is the same data for a human.

Only technical data leave: file names, sequence numbers, dates, counts, codes and
operator identities. Records are counted, never listed (their rows hold HMAC refs).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.x509 import Certificate

from ..config.settings import FLOWS, Settings
from ..core import workdays
from ..core.clock import PARIS
from ..core.errors import ConfigError, ExitCode, FluxError
from ..core.lock import holder as lock_holder
from ..core.lock import lock_path
from ..core.workdays import DeadlineBasis
from ..inbox import claim as inbox
from ..inbox import quarantined
from ..seal import certs
from ..seal.certs import EXPIRY_WARNING_DAYS
from ..trace.lifecycle import (
    COMPLETED_RUNS,
    UNDELIVERED,
    UNFINISHED_RUNS,
    AckOutcome,
    RequestStatus,
    RunStatus,
    Status,
)
from ..trace.records import Emission, Run
from ..trace.store import TraceStore

SCHEMA = "flux-pmi.status/1"
DEFAULT_MAX_AGE_HOURS = 26  # a nightly job plus two hours of slack
RUNS_SHOWN = 10
ANOMALIES_SHOWN = 20
AT_RISK_WORKING_DAYS = 2
UNDELIVERED_STATUSES = UNDELIVERED

_RUN_FIELDS = (
    "id",
    "command",
    "business_date",
    "started_at",
    "finished_at",
    "status",
    "exit_code",
    "records",
    "rejects",
    "files",
    "bytes",
)


def max_age_hours(settings: Settings) -> float:
    """[service] max_age_hours: how old the last nightly run may be before `status` says stale."""
    service = settings.raw.get("service", {})
    if not isinstance(service, dict):
        raise ConfigError(settings.file, "service", "a table")
    value = service.get("max_age_hours", DEFAULT_MAX_AGE_HOURS)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(settings.file, "service.max_age_hours", "a number of hours greater than 0")
    return value


def unacknowledged_days(settings: Settings) -> float:
    """[service] unacknowledged_days: how long a delivered file may wait for its ack before `status` says so."""
    return settings.service.unacknowledged_days


@dataclass(frozen=True, slots=True)
class Scope:
    """`--department` / `--flow`: what a probe for one partner or one flow looks at (None: everything)."""

    departments: frozenset[str] | None = None
    flows: frozenset[str] | None = None

    def keeps(self, department: str | None, flow: str | None = None) -> bool:
        if department is not None and self.departments is not None and department not in self.departments:
            return False
        return flow is None or self.flows is None or flow in self.flows


EVERYTHING = Scope()

# `status`'s exit code: the first problem that applies, in this order (docs/operations.md), and what a
# Nagios-style check makes of it. A hold is an operator's decision, not a problem: its files count once late.
# A problem is named after its code, except input left in the inbox: it exits 5 as quarantined input does
# (input no run will deliver until a person acts; no new code for monitoring to learn), under its own name.
PROBLEMS: tuple[tuple[ExitCode, str, str, str], ...] = (
    (ExitCode.LATE, "late", "CRITICAL", "LATE"),
    (ExitCode.STALE, "stale", "CRITICAL", "STALE"),
    (ExitCode.UNDELIVERED, "undelivered_not_held", "WARNING", "UNDELIVERED"),
    (ExitCode.AT_RISK, "at_risk", "WARNING", "AT_RISK"),
    (ExitCode.UNACKNOWLEDGED, "unacknowledged", "WARNING", "UNACKNOWLEDGED"),
    (ExitCode.CERTIFICATES, "certificates", "WARNING", "CERTIFICATES"),
    (ExitCode.QUARANTINED, "quarantined", "WARNING", "QUARANTINED"),
    (ExitCode.QUARANTINED, "inbox_not_taken", "WARNING", "INBOX_NOT_TAKEN"),
)
NAGIOS_CODES = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


def _local_date(stamp: str) -> date:
    """The French calendar day of a stored timestamp: deadlines are French working days."""
    at = datetime.fromisoformat(stamp)
    return (at if at.tzinfo else at.replace(tzinfo=PARIS)).astimezone(PARIS).date()


def _run(row: Run, alive: bool = True) -> dict[str, Any]:
    run = {k: getattr(row, k) for k in _RUN_FIELDS}
    if run["status"] == RunStatus.RUNNING and not alive:
        # Nobody holds the run lock, so the process is gone: the next command marks it `died` too.
        run["status"] = RunStatus.DIED
    return run


def _lock_held(settings: Settings) -> bool:
    """Whether a live process holds the run lock (read-only probe: a shared lock taken and dropped)."""
    return lock_holder(lock_path(settings.paths.trace)) is not None


def _on_time(delivered_at: str | None, deadline: str | None, today: date) -> bool | None:
    """Delivered on or before the deadline; None while it can still go either way (or has no deadline)."""
    if deadline is None:
        return None  # an empty flow carries no record, so no clock runs
    limit = date.fromisoformat(deadline)
    if delivered_at is not None:
        return _local_date(delivered_at) <= limit
    return False if limit < today else None


def _flow_order(flow: str) -> tuple[int, str]:
    return (FLOWS.index(flow) if flow in FLOWS else len(FLOWS), flow)


def _request_deadlines(trace: TraceStore) -> dict[int, str | None]:
    return {r.id: r.deadline for r in trace.requests()}


def _deadline(row: Emission | None, request_deadlines: dict[int, str | None]) -> str | None:
    """The date an emission is due: a re-emission answers a request, so its clock is the request's."""
    return _deadline_and_basis(row, request_deadlines)[0]


def _deadline_and_basis(row: Emission | None,
                        request_deadlines: dict[int, str | None]) -> tuple[str | None, str | None]:
    """The due date and which clock sets it: a request's 8 working days are the contract's alone."""
    if row is None:
        return None, None
    if row.reemission_no and row.request_id is not None and request_deadlines.get(row.request_id):
        return request_deadlines[row.request_id], DeadlineBasis.CONTRACT
    return row.deadline, row.deadline_basis


# -- sections -----------------------------------------------------------------------------


def _last_nightly(trace: TraceStore, settings: Settings, now: datetime, alive: bool = True) -> dict[str, Any]:
    limit = max_age_hours(settings)
    row = trace.last_run("run")
    completed = trace.last_run("run", statuses=COMPLETED_RUNS)
    if row is None:
        return {"run": None, "age_hours": None, "max_age_hours": limit, "last_completed": None,
                "completed_age_hours": None, "stale": True}
    # Measured from the start: a run that started on time and is still going is not a scheduler problem.
    # Otherwise from the last run that reached its end: nights that fail or are refused (an unmounted
    # inbox, say) every time are stale however recent they are.
    going = row.status == RunStatus.RUNNING and alive
    basis = row if going else completed
    basis_age = None if basis is None else _hours_since(basis, now)
    return {"run": _run(row, alive), "age_hours": _hours_since(row, now), "max_age_hours": limit,
            "last_completed": None if completed is None else _run(completed, alive),
            "completed_age_hours": None if completed is None else _hours_since(completed, now),
            "stale": basis_age is None or basis_age > limit}


def _hours_since(row: Run, now: datetime) -> float:
    return round((now - datetime.fromisoformat(row.started_at)).total_seconds() / 3600, 2)


def _flows(trace: TraceStore, settings: Settings, today: date, scope: Scope) -> list[dict[str, Any]]:
    request_deadlines = _request_deadlines(trace)
    out = []
    for dept in sorted(settings.enabled_departments(), key=lambda d: d.code):
        for flow in sorted(dept.flows, key=_flow_order):
            if not scope.keeps(dept.code, flow):
                continue
            row = trace.latest_emission(flow, dept.code)
            last = None if row is None else _last_emission(row, request_deadlines, today)
            out.append({"department": dept.code, "flow": flow, "last_emission": last})
    return out


def _last_emission(row: Emission, request_deadlines: dict[int, str | None], today: date) -> dict[str, Any]:
    deadline, basis = _deadline_and_basis(row, request_deadlines)
    return {
        **_clocks(row, basis),
        "seq": row.seq,
        "part": row.part,
        "reemission_no": row.reemission_no,
        "file_name": row.file_name,
        "business_date": row.business_date,
        "status": row.status,
        "records": row.record_count,
        "deadline": deadline,
        "delivered_at": row.delivered_at,
        "acknowledged_at": row.acknowledged_at,
        "ack_status": row.ack_status,
        "ack_code": row.ack_code,
        "on_time": _on_time(row.delivered_at, deadline, today),
    }


def _clocks(row: Emission, basis: str | None) -> dict[str, Any]:
    """Both clocks of an emission (its records' earliest) and which one binds its `deadline`."""
    return {"deadline_basis": basis, "contract_deadline": row.contract_deadline, "legal_deadline": row.legal_deadline}


def _undelivered(trace: TraceStore, scope: Scope) -> dict[str, Any]:
    request_deadlines = _request_deadlines(trace)
    rows = sorted(
        (r for r in trace.emissions_in(UNDELIVERED_STATUSES) if scope.keeps(r.department, r.flow)),
        key=lambda r: (r.department, _flow_order(r.flow), r.seq, r.reemission_no),
    )
    emissions = [
        {
            **_clocks(r, _deadline_and_basis(r, request_deadlines)[1]),
            "department": r.department,
            "flow": r.flow,
            "seq": r.seq,
            "part": r.part,
            "reemission_no": r.reemission_no,
            "file_name": r.file_name,
            "business_date": r.business_date,
            "status": r.status,
            "attempts": r.attempts,
            "last_error": r.last_error,
            "deadline": _deadline(r, request_deadlines),
            "ack_status": r.ack_status,
        }
        for r in rows
    ]
    by_dept = Counter(e["department"] for e in emissions)
    return {"total": len(emissions), "by_department": dict(sorted(by_dept.items())), "emissions": emissions}


def _sla(trace: TraceStore, settings: Settings, today: date, scope: Scope) -> dict[str, Any]:
    zero = {"at_risk": 0, "late": 0, "late_delivered": 0}
    by_dept: dict[str, dict[str, int]] = {
        d.code: dict(zero) for d in settings.enabled_departments() if scope.keeps(d.code)}
    by_basis = {b.value: {"at_risk": 0, "late": 0} for b in DeadlineBasis}
    next_due: dict[str, tuple[str, str | None]] = {}
    # Grouped in SQL: three months of records are many rows but few (département, deadline, delivery) groups.
    for row in trace.deadline_counts():
        if not scope.keeps(row.department, row.flow):
            continue
        counts = by_dept.setdefault(row.department, dict(zero))
        if row.delivered_at is None:
            due = (row.deadline, row.deadline_basis)
            next_due[row.department] = min(next_due.get(row.department, due), due, key=lambda d: d[0])
        key = _sla_key(row.delivered_at, date.fromisoformat(row.deadline), today, row.department)
        if key is None:
            continue
        counts[key] += row.n
        if key != "late_delivered":
            by_basis[row.deadline_basis or DeadlineBasis.CONTRACT][key] += row.n
    totals = {k: sum(c[k] for c in by_dept.values()) for k in zero}
    return {
        "at_risk_working_days": AT_RISK_WORKING_DAYS,
        "totals": totals,
        "by_basis": by_basis,
        "by_department": dict(sorted(by_dept.items())),
        "next_deadline": {d: {"deadline": due, "basis": basis} for d, (due, basis) in sorted(next_due.items())},
    }


def _sla_key(delivered_at: str | None, limit: date, today: date, dept: str) -> str | None:
    """Which count a group of records falls in: late_delivered, late, at_risk, or none (on time, or not due soon)."""
    if delivered_at is not None:
        # delivered_at, not the status: a file the partner got stays delivered even if a KO ack
        # later sends it back through the lifecycle.
        return "late_delivered" if _local_date(delivered_at) > limit else None
    if limit < today:
        return "late"
    if workdays.count_working_days(today, limit, dept) <= AT_RISK_WORKING_DAYS:
        return "at_risk"
    return None


def _acks(trace: TraceStore) -> dict[str, Any]:
    counts = {"ok": 0, "ko": 0, "anomalies": 0, "duplicates": 0}
    for row in trace.ack_counts():
        outcome, status, n = row.outcome, row.status, row.n
        if outcome == AckOutcome.RECORDED:
            key = {"OK": "ok", "KO": "ko"}.get((status or "").upper())
            if key:
                counts[key] += n
        elif outcome == AckOutcome.DUPLICATE:
            counts["duplicates"] += n
        else:  # unknown-file, hash-mismatch, invalid, and whatever acks.py adds later
            counts["anomalies"] += n
    ko = [
        {
            "department": r.department,
            "file": r.file_name,
            "code": r.code,
            "at": r.ack_at or r.received_at,
            "received_at": r.received_at,
        }
        for r in trace.ko_acks()
    ]
    return {**counts, "ko_list": ko}


def _reemissions(trace: TraceStore, today: date) -> dict[str, Any]:
    requests = [
        {
            "id": r.id,
            "requested_at": r.requested_at,
            "requested_by": r.requested_by,
            "reason": r.reason,
            "flow": r.flow,
            "department": r.department,
            "date_from": r.date_from,
            "date_to": r.date_to,
            "deadline": r.deadline,
            "status": r.status,
            "done_at": r.done_at,
            "overdue": r.status == RequestStatus.PENDING
            and r.deadline is not None
            and date.fromisoformat(r.deadline) < today,
        }
        for r in trace.requests()
    ]
    counts = Counter(r["status"] for r in requests)
    return {
        "pending": counts[RequestStatus.PENDING],
        "done": counts[RequestStatus.DONE],
        "refused": counts[RequestStatus.REFUSED],
        "requests": requests,
    }


def loaded_certificates(settings: Settings) -> list[tuple[str, str, Path | None, Certificate | FluxError]]:
    """(scope, role, path, the certificate or the error that kept it from loading) of every certificate in use."""
    out: list[tuple[str, str, Path | None, Certificate | FluxError]] = []
    for scope, role, path in settings.certificates_in_use():
        try:
            if path is None:
                raise FluxError("no certificate configured")
            out.append((scope, role, path, certs.load_certificate(path)))
        except FluxError as exc:
            out.append((scope, role, path, exc))
    return out


def _certificates(settings: Settings, now: datetime, wanted: Scope = EVERYTHING) -> list[dict[str, Any]]:
    out = []
    for scope, role, path, cert in loaded_certificates(settings):
        if role == "recipient" and not wanted.keeps(scope):
            continue
        entry: dict[str, Any] = {
            "scope": scope,
            "role": role,
            "path": str(path) if path else None,
            "subject": None,
            "not_after": None,
            "days_left": None,
            "expired": None,
            "error": None,
        }
        if isinstance(cert, FluxError):
            out.append({**entry, "error": str(cert)})
            continue
        left = certs.days_left(cert, now)
        if left <= EXPIRY_WARNING_DAYS:
            out.append(
                {
                    **entry,
                    "subject": certs.describe(cert),
                    "not_after": cert.not_valid_after_utc.isoformat(),
                    "days_left": left,
                    "expired": now > cert.not_valid_after_utc,
                }
            )
    return out


def _anomalies(trace: TraceStore) -> list[dict[str, Any]]:
    rows = trace.recent_anomalies(ANOMALIES_SHOWN)
    return [
        {
            "kind": r.kind,
            "at": r.at,
            "department": r.department,
            "file": r.file,
            "detail": r.detail,
        }
        for r in rows
    ]


def _holds(trace: TraceStore, today: date, scope: Scope = EVERYTHING) -> dict[str, Any]:
    """Active holds with the files waiting for them and the deadlines those files' records run."""
    request_deadlines = _request_deadlines(trace)
    waiting: dict[str, list[Any]] = {}
    for e in trace.to_deliver():
        if scope.keeps(e.department, e.flow):
            waiting.setdefault(e.department, []).append(e)
    active = []
    for code, h in trace.active_holds().items():
        if not scope.keeps(code):
            continue
        files = [
            {
                "file_name": e.file_name,
                "flow": e.flow,
                "seq": e.seq,
                "reemission_no": e.reemission_no,
                "deadline": _deadline(e, request_deadlines),
            }
            for e in waiting.get(code, [])
        ]
        deadlines = sorted(f["deadline"] for f in files if f["deadline"])
        active.append({
            "department": code,
            "since": h.held_at,
            "by": h.held_by,
            "reason": h.reason,
            "waiting": len(files),
            "next_deadline": deadlines[0] if deadlines else None,
            "late": bool(deadlines) and date.fromisoformat(deadlines[0]) < today,
            "files": files,
        })
    history = [
        {"department": r.department, "since": r.held_at, "by": r.held_by, "reason": r.reason,
         "resumed_at": r.resumed_at, "resumed_by": r.resumed_by}
        for r in trace.holds_history()
    ]
    return {"active": active, "history": history}


def _parked(trace: TraceStore, settings: Settings) -> dict[str, Any]:
    """Records kept for départements that are not enabled (DEPARTMENT_NOT_ENABLED_KEPT)."""
    rows = trace.parked()
    by: dict[str, dict[str, int]] = {}
    for r in rows:
        by.setdefault(r.department, {}).setdefault(r.flow, 0)
        by[r.department][r.flow] += r.count
    return {
        "records": sum(r.count for r in rows),
        "batches": len({r.batch_id for r in rows}),
        "by_department": {d: dict(sorted(f.items())) for d, f in sorted(by.items())},
    }


def _unacknowledged(trace: TraceStore, settings: Settings, now: datetime, scope: Scope) -> dict[str, Any]:
    """Files the partner received more than [service] unacknowledged_days ago and never acknowledged."""
    days = unacknowledged_days(settings)
    rows = [r for r in trace.unacknowledged((now - timedelta(days=days)).isoformat())
            if scope.keeps(r.department, r.flow)]
    files = [{"department": r.department, "flow": r.flow, "seq": r.seq, "reemission_no": r.reemission_no,
              "file_name": r.file_name, "delivered_at": r.delivered_at} for r in rows]
    by_dept = Counter(f["department"] for f in files)
    return {"days": days, "total": len(files), "by_department": dict(sorted(by_dept.items())), "files": files}


def _partners_failing(undelivered: dict[str, Any], holds: dict[str, Any]) -> list[dict[str, Any]]:
    """Départements whose last delivery attempt failed (a held one is not tried, so it is not failing)."""
    held = {h["department"] for h in holds["active"]}
    failing: dict[str, dict[str, Any]] = {}
    for e in undelivered["emissions"]:
        if e["status"] != Status.DELIVERY_FAILED or e["department"] in held:
            continue
        entry = failing.setdefault(e["department"], {"department": e["department"], "files": 0, "attempts": 0,
                                                     "last_error": None})
        entry["files"] += 1
        entry["attempts"] = max(entry["attempts"], e["attempts"])
        entry["last_error"] = e["last_error"] or entry["last_error"]
    return [failing[d] for d in sorted(failing)]


_DEPT_COUNTS = ("late", "at_risk", "undelivered", "unacknowledged", "held", "failing", "certificates")


def _departments(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per département of the scope: what it has to say; `attention` when it is anything."""
    sla = data["sla"]
    held = {h["department"]: h["waiting"] for h in data["holds"]["active"]}
    failing = {f["department"]: f for f in data["partners_failing"]}
    certificates = Counter(c["scope"] for c in data["certificates"] if c["role"] == "recipient")
    codes = sorted(set(sla["by_department"]) | set(data["undelivered"]["by_department"]) | set(held)
                   | set(data["unacknowledged"]["by_department"]) | set(certificates))
    out = []
    for code in codes:
        counts = sla["by_department"].get(code, {})
        due = sla["next_deadline"].get(code, {})
        item = {
            "department": code,
            "late": counts.get("late", 0),
            "at_risk": counts.get("at_risk", 0),
            "late_delivered": counts.get("late_delivered", 0),
            "undelivered": data["undelivered"]["by_department"].get(code, 0),
            "unacknowledged": data["unacknowledged"]["by_department"].get(code, 0),
            "held": held.get(code, 0) if code in held else 0,
            "is_held": code in held,
            "failing": code in failing,
            "last_error": failing[code]["last_error"] if code in failing else None,
            "certificates": certificates[code],
            "next_deadline": due.get("deadline"),
            "next_deadline_basis": due.get("basis"),
        }
        item["attention"] = bool(item["is_held"] or any(item[k] for k in _DEPT_COUNTS))
        out.append(item)
    return out


def _quarantine(settings: Settings, scope: Scope) -> dict[str, Any]:
    """The input files still waiting in quarantine/, by flow and code (inbox/quarantined.py).

    Whose they are is not known (a file is quarantined because it could not be read), so a
    `--department` probe leaves them to the national one; `--flow` keeps its flows.
    """
    if scope.departments is not None:
        return {"total": 0, "by_flow": {}, "scoped_out": True}
    flows = [f for f in FLOWS if scope.flows is None or f in scope.flows]
    waiting = quarantined.waiting(settings.paths.quarantine, flows)
    return {"total": sum(sum(c.values()) for c in waiting.values()),
            "by_flow": {flow: {"files": sum(codes.values()), "codes": dict(sorted(codes.items()))}
                        for flow, codes in waiting.items()},
            "scoped_out": False}


def _inbox_not_taken(settings: Settings, scope: Scope) -> dict[str, Any]:
    """The inbox entries no run takes nor sets aside (inbox.claim.not_taken), counted per flow.

    Counted, not named: a name may carry anything, and `run` names them in its output and its log.
    Whose they are is not known either, so `--department` leaves them to the national probe.
    """
    if scope.departments is not None:
        return {"total": 0, "by_flow": {}, "scoped_out": True}
    flows = [f for f in FLOWS if scope.flows is None or f in scope.flows]
    counts = {flow: n for flow in flows if (n := len(inbox.not_taken(settings.paths.inbox, flow)))}
    return {"total": sum(counts.values()), "by_flow": counts, "scoped_out": False}


def _summary(data: dict[str, Any]) -> dict[str, Any]:
    """The first screen: every count a person or a probe looks at first, and the exit code they make."""
    held_files = sum(h["waiting"] for h in data["holds"]["active"])
    facts = {
        "late": data["sla"]["totals"]["late"],
        "at_risk": data["sla"]["totals"]["at_risk"],
        "late_by_basis": {b: c["late"] for b, c in data["sla"]["by_basis"].items()},
        "unacknowledged": data["unacknowledged"]["total"],
        "unacknowledged_days": data["unacknowledged"]["days"],
        "held": len(data["holds"]["active"]),
        "held_files": held_files,
        "undelivered": data["undelivered"]["total"],
        "undelivered_not_held": data["undelivered"]["total"] - held_files,
        "partners_failing": len(data["partners_failing"]),
        "certificates": len(data["certificates"]),
        "stale": data["last_nightly"]["stale"],
        "departments_to_see": sum(d["attention"] for d in data["departments"]),
        "quarantined": data["quarantine"]["total"],
        "inbox_not_taken": data["inbox_not_taken"]["total"],
    }
    problems = [(code, verdict, name) for code, key, verdict, name in PROBLEMS if facts[key]]
    code, verdict = problems[0][:2] if problems else (ExitCode.OK, "OK")
    return {**facts, "exit_code": int(code), "exit_name": code.name, "nagios": verdict,
            "problems": [name for _c, _v, name in problems]}


def gather(settings: Settings, trace: TraceStore, *, now: datetime, scope: Scope = EVERYTHING) -> dict[str, Any]:
    """The status document (docs/status-json.md). Reads the trace and the certificates; writes nothing.

    `scope` keeps the per-département sections to some départements and flows; runs, acks, re-emission
    requests and anomalies stay whole.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    today = now.astimezone(PARIS).date()
    alive = _lock_held(settings)
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_at": now.isoformat(),
        "today": today.isoformat(),
        "scope": {"departments": sorted(scope.departments) if scope.departments is not None else None,
                  "flows": sorted(scope.flows, key=_flow_order) if scope.flows is not None else None},
        "runs": [_run(r, alive) for r in trace.last_runs(RUNS_SHOWN)],
        "last_nightly": _last_nightly(trace, settings, now, alive),
        "flows": _flows(trace, settings, today, scope),
        "undelivered": _undelivered(trace, scope),
        "unacknowledged": _unacknowledged(trace, settings, now, scope),
        "sla": _sla(trace, settings, today, scope),
        "acks": _acks(trace),
        "reemissions": _reemissions(trace, today),
        "certificates": _certificates(settings, now, scope),
        "anomalies": _anomalies(trace),
        "holds": _holds(trace, today, scope),
        "parked": _parked(trace, settings),
        "quarantine": _quarantine(settings, scope),
        "inbox_not_taken": _inbox_not_taken(settings, scope),
    }
    data["partners_failing"] = _partners_failing(data["undelivered"], data["holds"])
    data["departments"] = _departments(data)
    data["summary"] = _summary(data)
    return data


def nagios_line(data: dict[str, Any]) -> str:
    """One Nagios plugin line: the verdict, what is wrong, and the counts as performance data."""
    s = data["summary"]
    wrong = ", ".join(p.lower().replace("_", " ") for p in s["problems"]) or "all delivered on time"
    perf = " ".join(f"{k}={s[k]}" for k in ("late", "at_risk", "unacknowledged", "undelivered", "held_files",
                                               "partners_failing", "certificates", "quarantined",
                                               "inbox_not_taken"))
    return f"FLUX-PMI {s['nagios']} - {wrong} | {perf}"


def exit_code(data: dict[str, Any]) -> ExitCode:
    """What `status` exits with: the first problem of PROBLEMS that applies (docs/operations.md)."""
    return ExitCode(data["summary"]["exit_code"])


# -- text -----------------------------------------------------------------------------------


def _exit_cell(code: int | None) -> str:
    """`10 STORAGE`: the number monitoring reads, and the name that says what stopped the run."""
    if code is None:
        return "-"
    return f"{code} {ExitCode(code).name}" if code in ExitCode._value2member_map_ else str(code)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _table(headers: list[str], rows: list[list[Any]], empty: str = "(none)") -> list[str]:
    if not rows:
        return [f"  {empty}"]
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    fmt = "  " + "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*headers).rstrip(), fmt.format(*("-" * w for w in widths))] + [
        fmt.format(*r).rstrip() for r in cells
    ]


def _keyed_table(columns: tuple[tuple[str, str], ...], items: list[dict[str, Any]],
                 empty: str = "(none)") -> list[str]:
    """A table of (heading, key) columns, each row read from one item."""
    return _table([h for h, _ in columns], [[item.get(k) for _, k in columns] for item in items], empty)


def render_text(data: dict[str, Any], *, everything: bool = False) -> str:
    """The status for a human: the summary, the départements with something to say, then what needs a look.

    `everything` (`--all`) lists every département and every section, problems or not.
    """
    s = data["summary"]
    # The first problem's own name: exit 5 for inbox entries not taken reads INBOX_NOT_TAKEN, not QUARANTINED.
    out = [f"flux-pmi status at {data['generated_at']} (today {data['today']}): {s['nagios']}, "
           f"exit {s['exit_code']} {(s['problems'] or [s['exit_name']])[0]}", ""]
    out += _text_summary(data)
    out += _text_departments(data, everything)
    for section in (_TEXT_SECTIONS if everything else _TEXT_PROBLEM_SECTIONS):
        out += section(data)
    return "\n".join(out) + "\n"


def _text_summary(data: dict[str, Any]) -> list[str]:
    s, sla = data["summary"], data["sla"]
    basis = ", ".join(f"{b} {n}" for b, n in s["late_by_basis"].items())
    failing = ", ".join(f["department"] for f in data["partners_failing"])
    held = ", ".join(h["department"] for h in data["holds"]["active"])
    return [
        "SUMMARY",
        f"  late              {s['late']} record(s) past their deadline (binding: {basis})",
        f"  at risk           {s['at_risk']} record(s) due within {sla['at_risk_working_days']} working days",
        f"  unacknowledged    {s['unacknowledged']} file(s) delivered over {s['unacknowledged_days']:g} days"
        " ago, no ack",
        f"  held              {s['held']} département(s){': ' + held if held else ''}, {s['held_files']} file(s)"
        " waiting",
        f"  undelivered       {s['undelivered']} file(s), {s['undelivered_not_held']} not held",
        f"  partners failing  {s['partners_failing']}{': ' + failing if failing else ''}",
        f"  certificates      {s['certificates']} expired, unreadable or expiring within {EXPIRY_WARNING_DAYS} days",
        f"  quarantined       {_quarantine_line(data['quarantine'])}",
        f"  not taken         {_not_taken_line(data['inbox_not_taken'])}",
        f"  last run          {_last_nightly_line(data)}",
    ]


def _quarantine_line(q: dict[str, Any]) -> str:
    if q["scoped_out"]:
        return "not counted for a --department scope (whose a quarantined file is, is not known)"
    if not q["total"]:
        return "0 input file(s) waiting"
    flows = "; ".join(f"{flow} {f['files']} (" + ", ".join(f"{c} {n}" for c, n in f["codes"].items()) + ")"
                      for flow, f in q["by_flow"].items())
    return (f"{q['total']} input file(s) waiting in quarantine/<FLOW>/: {flows}. Read each .reason, have the"
            " file fixed upstream and dropped again, then take it away from quarantine/")


def _not_taken_line(n: dict[str, Any]) -> str:
    if n["scoped_out"]:
        return "not counted for a --department scope (whose an entry left in the inbox is, is not known)"
    if not n["total"]:
        return "0 inbox entries left that no run takes"
    flows = ", ".join(f"{flow} {count}" for flow, count in n["by_flow"].items())
    return (f"{n['total']} inbox entr{'y' if n['total'] == 1 else 'ies'} no run takes, left in inbox/<FLOW>/: {flows}."
            " `flux-pmi run --dry-run` names them; move each into its flow folder under a name it takes,"
            " or take it away")


def _last_nightly_line(data: dict[str, Any]) -> str:
    ln = data["last_nightly"]
    verdict = "STALE" if ln["stale"] else "OK"
    if not ln["stale"] and ln["run"] is not None and ln["run"]["status"] in UNFINISHED_RUNS:
        verdict = "NOT FINISHED (rerun `flux-pmi run`: it resumes)"  # recent, but "OK" would hide a dead night
    if ln["run"] is None:
        return f"{verdict}: no nightly run recorded (max age {ln['max_age_hours']} h)"
    r, done = ln["run"], ln.get("last_completed")
    line = (f"{verdict}: run {r['id']} for {r['business_date']} started {r['started_at']}, "
            f"{ln['age_hours']} h ago (max {ln['max_age_hours']} h); status {r['status']}, "
            f"exit {_exit_cell(r['exit_code'])}")
    if ln["stale"] and r["status"] != RunStatus.RUNNING and (done is None or done["id"] != r["id"]):
        last = ("no nightly run ever completed" if done is None else
                f"last completed: run {done['id']} for {done['business_date']}, {ln['completed_age_hours']} h ago")
        line += f"; {last} (fix what stops the runs, then `flux-pmi run`)"
    return line


_DEPT_COLUMNS = (("DEPT", "department"), ("LATE", "late"), ("AT RISK", "at_risk"), ("NEXT DEADLINE", "next_deadline"),
                 ("BINDS", "next_deadline_basis"), ("UNDELIVERED", "undelivered"), ("UNACKED", "unacknowledged"),
                 ("HELD", "is_held"), ("FAILING", "failing"), ("CERTS", "certificates"), ("LAST ERROR", "last_error"))


def _text_departments(data: dict[str, Any], everything: bool) -> list[str]:
    depts = data["departments"]
    shown = depts if everything else [d for d in depts if d["attention"]]
    heading = (f"DÉPARTEMENTS ({len(depts)})" if everything else
               f"DÉPARTEMENTS WITH SOMETHING TO SAY ({len(shown)} of {len(depts)}; --all lists every one)")
    return ["", heading] + _keyed_table(_DEPT_COLUMNS, shown)


def _text_last_nightly(data: dict[str, Any]) -> list[str]:
    return ["", "LAST NIGHTLY RUN", f"  {_last_nightly_line(data)}"]


def _text_unacknowledged(data: dict[str, Any]) -> list[str]:
    u = data["unacknowledged"]
    return (["", f"UNACKNOWLEDGED ({u['total']} delivered over {u['days']:g} days ago)"]
            + _keyed_table(_UNACKED_COLUMNS, u["files"]))


_UNACKED_COLUMNS = (("DEPT", "department"), ("FLOW", "flow"), ("SEQ", "seq"), ("FILE", "file_name"),
                    ("DELIVERED", "delivered_at"))


def _when(key: str, section: Any) -> Any:
    """A section shown on the default screen only when it has something in it."""
    def shown(data: dict[str, Any]) -> list[str]:
        return section(data) if _dig(data, key) else []
    return shown


def _dig(data: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


def _text_runs(data: dict[str, Any]) -> list[str]:
    headings = ("ID", "COMMAND", "DATE", "STARTED", "FINISHED", "STATUS", "EXIT", "RECORDS", "REJECTS", "FILES",
                "BYTES")
    return ["", f"RUNS (last {RUNS_SHOWN})"] + _keyed_table(tuple(zip(headings, _RUN_FIELDS, strict=True)),
                                                           data["runs"])


_FLOW_COLUMNS = (("DEPT", "department"), ("FLOW", "flow"), ("SEQ", "seq"), ("FILE", "file_name"),
                 ("STATUS", "status"), ("RECORDS", "records"), ("DEADLINE", "deadline"),
                 ("DELIVERED", "delivered_at"), ("ACK", "ack_status"), ("CODE", "ack_code"), ("ON TIME", "on_time"))


def _text_flows(data: dict[str, Any]) -> list[str]:
    items = [{**(f["last_emission"] or {}), "department": f["department"], "flow": f["flow"]} for f in data["flows"]]
    return ["", "FLOWS (last emission per département and flow)"] + _keyed_table(
        _FLOW_COLUMNS, items, "(no département enabled)")


_UNDELIVERED_COLUMNS = (("DEPT", "department"), ("FLOW", "flow"), ("SEQ", "seq"), ("FILE", "file_name"),
                        ("STATUS", "status"), ("ATTEMPTS", "attempts"), ("DEADLINE", "deadline"),
                        ("LAST ERROR", "last_error"))


def _text_undelivered(data: dict[str, Any]) -> list[str]:
    u = data["undelivered"]
    return ["", f"UNDELIVERED ({u['total']})"] + _keyed_table(_UNDELIVERED_COLUMNS, u["emissions"])


def _text_holds(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    h = data["holds"]
    out += ["", f"HOLDS ({len(h['active'])} département(s) held)"]
    out += _table(
        ["DEPT", "SINCE", "BY", "WAITING", "NEXT DEADLINE", "LATE", "REASON"],
        [[x["department"], x["since"], x["by"], x["waiting"], x["next_deadline"], x["late"], x["reason"]]
         for x in h["active"]],
    )
    return out


def _text_parked(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    p = data["parked"]
    out += ["", f"KEPT FOR DÉPARTEMENTS NOT ENABLED ({p['records']} record(s) in {p['batches']} batch(es))"]
    out += _table(
        ["DEPT", "RECORDS BY FLOW"],
        [[d, ", ".join(f"{f} {n}" for f, n in flows.items())] for d, flows in p["by_department"].items()],
    )
    return out


def _text_sla(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    s = data["sla"]
    out += ["", f"DEADLINES (records; at risk = due within {s['at_risk_working_days']} working days)"]
    rows = [[d, c["at_risk"], c["late"], c["late_delivered"]] for d, c in s["by_department"].items()]
    t = s["totals"]
    rows.append(["TOTAL", t["at_risk"], t["late"], t["late_delivered"]])
    out += _table(["DEPT", "AT RISK", "LATE", "LATE DELIVERED"], rows)
    return out


def _text_acks(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    a = data["acks"]
    out += [
        "",
        "ACKNOWLEDGEMENTS",
        f"  OK {a['ok']}  KO {a['ko']}  anomalies {a['anomalies']}  duplicates {a['duplicates']}",
    ]
    if a["ko_list"]:
        out += _table(
            ["DEPT", "FILE", "CODE", "AT"],
            [[k["department"], k["file"], k["code"], k["at"]] for k in a["ko_list"]],
        )
    return out


_REQUEST_COLUMNS = (("ID", "id"), ("REQUESTED", "requested_at"), ("BY", "requested_by"), ("FLOW", "flow"),
                    ("DEPT", "department"), ("FROM", "date_from"), ("TO", "date_to"), ("DEADLINE", "deadline"),
                    ("STATUS", "status"), ("DONE", "done_at"), ("OVERDUE", "overdue"), ("REASON", "reason"))


def _text_reemissions(data: dict[str, Any]) -> list[str]:
    r = data["reemissions"]
    return (["", f"RE-EMISSION REQUESTS (pending {r['pending']}, done {r['done']}, refused {r['refused']})"]
            + _keyed_table(_REQUEST_COLUMNS, r["requests"]))


def _text_certificates(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    out += ["", f"CERTIFICATES (expired, unreadable or expiring within {EXPIRY_WARNING_DAYS} days)"]
    out += _table(
        ["SCOPE", "ROLE", "DAYS LEFT", "NOT AFTER", "SUBJECT / ERROR"],
        [
            [c["scope"], c["role"], c["days_left"], c["not_after"], c["error"] or c["subject"]]
            for c in data["certificates"]
        ],
    )
    return out


def _text_anomalies(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    out += ["", f"ANOMALIES (last {ANOMALIES_SHOWN})"]
    out += _table(
        ["AT", "KIND", "DEPT", "FILE", "DETAIL"],
        [[x["at"], x["kind"], x["department"], x["file"], x["detail"]] for x in data["anomalies"]],
    )
    return out


_TEXT_SECTIONS = (_text_last_nightly, _text_runs, _text_flows, _text_undelivered, _text_unacknowledged, _text_holds,
                  _text_parked, _text_sla, _text_acks, _text_reemissions, _text_certificates, _text_anomalies)
# The default screen: only the sections that hold a problem, each only when it holds one.
_TEXT_PROBLEM_SECTIONS = (_when("undelivered.total", _text_undelivered), _when("unacknowledged.total", _text_unacknowledged),
                          _when("holds.active", _text_holds), _when("acks.ko_list", _text_acks),
                          _when("reemissions.pending", _text_reemissions), _when("certificates", _text_certificates))
