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

import fcntl
import os
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any

from cryptography.x509 import Certificate

from ..config.settings import FLOWS, Settings
from ..core import workdays
from ..core.clock import PARIS
from ..core.errors import ConfigError, FluxError
from ..core.lock import lock_path
from ..seal import certs
from ..seal.certs import EXPIRY_WARNING_DAYS
from ..trace.lifecycle import UNDELIVERED, UNFINISHED_RUNS, AckOutcome, RequestStatus, RunStatus
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
    try:
        fd = os.open(lock_path(settings.paths.trace), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


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
    if row is None:
        return None
    if row.reemission_no and row.request_id is not None and request_deadlines.get(row.request_id):
        return request_deadlines[row.request_id]
    return row.deadline


# -- sections -----------------------------------------------------------------------------


def _last_nightly(trace: TraceStore, settings: Settings, now: datetime, alive: bool = True) -> dict[str, Any]:
    limit = max_age_hours(settings)
    row = trace.last_run("run")
    if row is None:
        return {"run": None, "age_hours": None, "max_age_hours": limit, "stale": True}
    # Measured from the start: a run that started on time and is still going is not a scheduler problem.
    age = round((now - datetime.fromisoformat(row.started_at)).total_seconds() / 3600, 2)
    return {"run": _run(row, alive), "age_hours": age, "max_age_hours": limit, "stale": age > limit}


def _flows(trace: TraceStore, settings: Settings, today: date) -> list[dict[str, Any]]:
    request_deadlines = _request_deadlines(trace)
    out = []
    for dept in sorted(settings.enabled_departments(), key=lambda d: d.code):
        for flow in sorted(dept.flows, key=_flow_order):
            row = trace.latest_emission(flow, dept.code)
            last = None if row is None else _last_emission(row, _deadline(row, request_deadlines), today)
            out.append({"department": dept.code, "flow": flow, "last_emission": last})
    return out


def _last_emission(row: Emission, deadline: str | None, today: date) -> dict[str, Any]:
    return {
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


def _undelivered(trace: TraceStore) -> dict[str, Any]:
    request_deadlines = _request_deadlines(trace)
    rows = sorted(
        trace.emissions_in(UNDELIVERED_STATUSES),
        key=lambda r: (r.department, _flow_order(r.flow), r.seq, r.reemission_no),
    )
    emissions = [
        {
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


def _sla(trace: TraceStore, settings: Settings, today: date) -> dict[str, Any]:
    zero = {"at_risk": 0, "late": 0, "late_delivered": 0}
    by_dept: dict[str, dict[str, int]] = {d.code: dict(zero) for d in settings.enabled_departments()}
    # Grouped in SQL: three months of records are many rows but few (département, deadline, delivery) triples.
    for row in trace.deadline_counts():
        dept, delivered_at, n = row.department, row.delivered_at, row.n
        limit = date.fromisoformat(row.deadline)
        counts = by_dept.setdefault(dept, dict(zero))
        if delivered_at is not None:
            # delivered_at, not the status: a file the partner got stays delivered even if a KO ack
            # later sends it back through the lifecycle.
            if _local_date(delivered_at) > limit:
                counts["late_delivered"] += n
        elif limit < today:
            counts["late"] += n
        elif workdays.count_working_days(today, limit, dept) <= AT_RISK_WORKING_DAYS:
            counts["at_risk"] += n
    totals = {k: sum(c[k] for c in by_dept.values()) for k in zero}
    return {
        "at_risk_working_days": AT_RISK_WORKING_DAYS,
        "totals": totals,
        "by_department": dict(sorted(by_dept.items())),
    }


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


def _certificates(settings: Settings, now: datetime) -> list[dict[str, Any]]:
    out = []
    for scope, role, path, cert in loaded_certificates(settings):
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


def _holds(trace: TraceStore, today: date) -> dict[str, Any]:
    """Active holds with the files waiting for them and the deadlines those files' records run."""
    request_deadlines = _request_deadlines(trace)
    waiting: dict[str, list[Any]] = {}
    for e in trace.to_deliver():
        waiting.setdefault(e.department, []).append(e)
    active = []
    for code, h in trace.active_holds().items():
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


def gather(settings: Settings, trace: TraceStore, *, now: datetime) -> dict[str, Any]:
    """The status document (docs/status-json.md). Reads the trace and the certificates; writes nothing."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    today = now.astimezone(PARIS).date()
    alive = _lock_held(settings)
    return {
        "schema": SCHEMA,
        "generated_at": now.isoformat(),
        "today": today.isoformat(),
        "runs": [_run(r, alive) for r in trace.last_runs(RUNS_SHOWN)],
        "last_nightly": _last_nightly(trace, settings, now, alive),
        "flows": _flows(trace, settings, today),
        "undelivered": _undelivered(trace),
        "sla": _sla(trace, settings, today),
        "acks": _acks(trace),
        "reemissions": _reemissions(trace, today),
        "certificates": _certificates(settings, now),
        "anomalies": _anomalies(trace),
        "holds": _holds(trace, today),
        "parked": _parked(trace, settings),
    }


# -- text -----------------------------------------------------------------------------------


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


def render_text(data: dict[str, Any]) -> str:
    """The status for a human at a terminal: one heading per section, fixed-width columns."""
    out = [f"flux-pmi status at {data['generated_at']} (today {data['today']})", ""]
    for section in _TEXT_SECTIONS:
        out += section(data)
    return "\n".join(out) + "\n"


def _text_last_nightly(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    ln = data["last_nightly"]
    out.append("LAST NIGHTLY RUN")
    verdict = "STALE" if ln["stale"] else "OK"
    if not ln["stale"] and ln["run"] is not None and ln["run"]["status"] in UNFINISHED_RUNS:
        verdict = "NOT FINISHED (rerun `flux-pmi run`: it resumes)"  # recent, but "OK" would hide a dead night
    if ln["run"] is None:
        out.append(f"  {verdict}: no nightly run recorded (max age {ln['max_age_hours']} h)")
    else:
        r = ln["run"]
        out.append(
            f"  {verdict}: run {r['id']} for {r['business_date']} started {r['started_at']}, "
            f"{ln['age_hours']} h ago (max {ln['max_age_hours']} h); status {r['status']}, "
            f"exit {_cell(r['exit_code'])}"
        )
    return out


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


_TEXT_SECTIONS = (_text_last_nightly, _text_runs, _text_flows, _text_undelivered, _text_holds, _text_parked, _text_sla, _text_acks, _text_reemissions, _text_certificates, _text_anomalies)
