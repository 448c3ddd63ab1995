"""Health metrics in the Prometheus text format, for node_exporter's textfile collector.

Monitoring should not have to run `flux-pmi status` to learn that the night did not run,
that a département has files waiting, that records are about to miss the 8-working-day
deadline or that a certificate is about to expire. After every job (`serve`) and at the end
of `flux-pmi run`, the whole picture is rewritten to `[service] metrics_file`, a `*.prom`
file in the collector's folder.

The collector's conventions: it reads `*.prom` files only, whole, at every scrape; samples
carry no timestamp; each family has its HELP and TYPE once, its samples together. So the
file is written atomically (a hidden `.<name>.tmp` beside it, fsync, rename): a scrape sees
the old file or the new one, never half of one. It is world-readable (0644) because the
exporter runs as another user, which is acceptable because nothing in it is personal:
labels are job ids, flow codes, département codes and certificate scopes (sender, archive,
a département), never a name, a record or a certificate subject.

Every write recomputes everything from the trace, except the last success time of each job:
that lives only in this file, so it is read back and merged (under an flock on a hidden
`.<name>.lock` beside it), and one job's write never erases another's timestamp.
"""

from __future__ import annotations

import fcntl
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config.settings import FLOWS, Settings
from ..core.errors import FluxError
from ..core.fsutil import atomic_write
from ..core.log import get as get_logger
from .rejects import WARNING_CODES

if TYPE_CHECKING:
    from ..trace.store import TraceStore

JOB_SUCCESS = "flux_pmi_job_last_success_timestamp_seconds"
_JOB_SUCCESS_LINE = re.compile(rf'^{JOB_SUCCESS}\{{job="((?:[^"\\]|\\.)*)"\}}\s+(\S+)\s*$')


@dataclass
class _Family:
    name: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)
    type: str = "gauge"

    def add(self, value: float | int | bool | None, **labels: str) -> None:
        if value is not None:
            self.samples.append((labels, float(value)))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _timestamp(stamp: str | None) -> float | None:
    return datetime.fromisoformat(stamp).timestamp() if stamp else None


# -- what the file says ----------------------------------------------------------------------


def last_nightly_run(trace: TraceStore) -> dict[str, Any] | None:
    """The last nightly run that ended, with what it archived and rejected per flow.

    Read from the trace (archive events and rejects of that run), not from a NightReport,
    so that every job (and `run` under cron) reports the same thing. Re-emissions are not
    counted: they are not the night's records.
    """
    run = trace.last_run("run", finished=True)
    if run is None:
        return None
    flows = {f: {"records": 0, "rejects": 0, "files": 0} for f in FLOWS}
    for c in trace.archived_by_flow(run.id):
        flows.setdefault(c.flow, {"records": 0, "rejects": 0, "files": 0}).update(files=c.files, records=c.records)
    for flow, n in trace.rejects_by_flow(run.id, except_codes=WARNING_CODES).items():
        flows.setdefault(flow, {"records": 0, "rejects": 0, "files": 0})["rejects"] = n
    return {"id": run.id, "started_at": run.started_at, "finished_at": run.finished_at, "status": run.status,
            "exit_code": run.exit_code, "flows": flows}


def certificate_days(settings: Settings, now: datetime) -> list[dict[str, Any]]:
    """Days left for every certificate in use (status lists only those close to expiry; a graph wants all)."""
    from ..seal import certs
    from .status import loaded_certificates

    out: list[dict[str, Any]] = []
    for scope, role, _, cert in loaded_certificates(settings):
        if isinstance(cert, FluxError):
            out.append({"scope": scope, "role": role, "days_left": None, "not_after": None,
                        "error": type(cert).__name__})
        else:
            out.append({"scope": scope, "role": role, "days_left": certs.days_left(cert, now),
                        "not_after": cert.not_valid_after_utc.timestamp(), "error": None})
    return out


def render(
    status_data: dict[str, Any],
    *,
    job_success: dict[str, float],
    last_run: dict[str, Any] | None = None,
    certificates: list[dict[str, Any]] | None = None,
    generated_at: float | None = None,
    last_deliveries: dict[str, float] | None = None,
) -> str:
    """The text exposition of `status.gather`'s document plus the jobs' last successes.

    `last_run` (per-flow counts) and `certificates` (every certificate) come from
    `last_nightly_run` / `certificate_days`; without them, the run's exit code and the
    certificates near expiry are taken from the status document. `last_deliveries` (Unix time per
    département, from the trace) gives each département's last successful delivery.
    """
    fams: list[_Family] = []

    def family(name: str, help_text: str) -> _Family:
        fams.append(_Family(f"flux_pmi_{name}", help_text))
        return fams[-1]

    jobs = family(
        "job_last_success_timestamp_seconds",
        "Unix time the job last ran to its end (what it found is in the other metrics).",
    )
    for job, at in sorted(job_success.items()):
        jobs.add(at, job=job)

    if last_run is None and status_data["last_nightly"]["run"] is not None:
        r = status_data["last_nightly"]["run"]
        last_run = {"started_at": r["started_at"], "exit_code": r["exit_code"], "flows": None}
    family("last_run_start_timestamp_seconds", "Unix time the last nightly run that ended had started.").add(
        _timestamp(last_run["started_at"]) if last_run else None
    )
    family("last_run_exit_code", "Exit code of the last nightly run that ended (docs/operations.md).").add(
        last_run["exit_code"] if last_run else None
    )
    family("last_run_duration_seconds", "How long the last nightly run that ended took.").add(
        _duration(last_run)
    )
    per_flow = (last_run or {}).get("flows") or {}
    for key, help_text in (
        ("records", "Records the last nightly run archived for delivery, per flow."),
        ("rejects", "Records the last nightly run rejected, per flow (warnings not counted)."),
        ("files", "Files the last nightly run sealed and archived, per flow."),
    ):
        fam = family(f"last_run_{key}", help_text)
        for flow, counts in per_flow.items():
            fam.add(counts[key], flow=flow)
    family("last_nightly_stale", "1 when the last nightly run is older than [service] max_age_hours.").add(
        status_data["last_nightly"]["stale"]
    )

    sla = status_data["sla"]
    departments = sorted(set(sla["by_department"]) | set(status_data["undelivered"]["by_department"])
                         | {d["department"] for d in status_data["departments"]})
    undelivered = family(
        "undelivered_emissions", "Emissions sealed and archived but not delivered, per département."
    )
    for dept in departments:
        undelivered.add(status_data["undelivered"]["by_department"].get(dept, 0), department=dept)
    family(
        "records_at_risk",
        f"Undelivered records due within {sla['at_risk_working_days']} working days, all départements.",
    ).add(sla["totals"]["at_risk"])
    family("records_late", "Undelivered records past their deadline, all départements.").add(
        sla["totals"]["late"]
    )
    family("records_late_delivered", "Records delivered after their deadline, still in the trace.").add(
        sla["totals"]["late_delivered"]
    )
    risk = family(
        "department_records_at_risk",
        f"Undelivered records due within {sla['at_risk_working_days']} working days, per département.",
    )
    late = family("department_records_late", "Undelivered records past their deadline, per département.")
    for dept in departments:
        counts = sla["by_department"].get(dept, {})
        risk.add(counts.get("at_risk", 0), department=dept)
        late.add(counts.get("late", 0), department=dept)
    family("reemission_requests_pending", "Re-emission requests whose files are not all delivered yet.").add(
        status_data["reemissions"]["pending"]
    )
    waiting = family("quarantined_files", "Input files waiting in quarantine/ for an operator, per flow.")
    by_flow = status_data["quarantine"]["by_flow"]
    for flow in FLOWS:
        waiting.add(by_flow.get(flow, {}).get("files", 0), flow=flow)
    left = family("inbox_not_taken_files", "Inbox entries no run takes nor sets aside, left in inbox/<FLOW>/, per flow.")
    for flow in FLOWS:
        left.add(status_data["inbox_not_taken"]["by_flow"].get(flow, 0), flow=flow)

    _certificate_families(family, status_data, certificates)
    _partner_families(family, status_data, departments, last_deliveries or {})
    family("metrics_generated_timestamp_seconds", "Unix time this file was written.").add(generated_at)

    lines: list[str] = []
    for fam in fams:
        lines += [f"# HELP {fam.name} {fam.help}", f"# TYPE {fam.name} {fam.type}"]
        for labels, value in fam.samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(
                f"{fam.name}{{{label_text}}} {_number(value)}" if labels else f"{fam.name} {_number(value)}"
            )
    return "\n".join(lines) + "\n"


def _certificate_families(family: Any, status_data: dict[str, Any],
                          certificates: list[dict[str, Any]] | None) -> None:
    """Expiry as a Unix time (promtool's base units; a date does not age), and whether it can be used at all."""
    if certificates is None:
        certificates = [
            {
                "scope": c["scope"],
                "role": c["role"],
                "days_left": c["days_left"],
                "error": "unusable" if c["error"] else None,
                "not_after": _timestamp(c["not_after"]),
            }
            for c in status_data["certificates"]
        ]
    expiry = family("certificate_expiry_timestamp_seconds", "Unix time the certificate stops being valid (not after).")
    unusable = family("certificate_unusable", "1 when the certificate cannot be read or is missing.")
    for c in sorted(certificates, key=lambda c: (c["role"], c["scope"])):
        expiry.add(c["not_after"], scope=c["scope"], role=c["role"])
        unusable.add(c["error"] is not None, scope=c["scope"], role=c["role"])


def _duration(last_run: dict[str, Any] | None) -> float | None:
    if not last_run or not last_run.get("finished_at"):
        return None
    return (datetime.fromisoformat(last_run["finished_at"]) - datetime.fromisoformat(last_run["started_at"])).total_seconds()


def _partner_families(family: Any, status_data: dict[str, Any], departments: list[str],
                      last_deliveries: dict[str, float]) -> None:
    """Per-département health, one sample per département (0 included), so an alert sees a series from the start."""
    unacked = family("unacknowledged_files", "Files delivered over [service] unacknowledged_days ago and never "
                                             "acknowledged, per département.")
    failing = family("partner_failing", "1 when the département's last delivery attempt failed (not held).")
    held = family("department_held", "1 while the département is held (flux-pmi hold).")
    failed = {f["department"] for f in status_data["partners_failing"]}
    holds = {h["department"] for h in status_data["holds"]["active"]}
    for dept in departments:
        unacked.add(status_data["unacknowledged"]["by_department"].get(dept, 0), department=dept)
        failing.add(dept in failed, department=dept)
        held.add(dept in holds, department=dept)
    last = family("department_last_delivery_timestamp_seconds",
                  "Unix time of the département's last successful delivery the trace still holds.")
    for dept, at in sorted(last_deliveries.items()):
        last.add(at, department=dept)
    sla = status_data["sla"]
    for key, what in (("late", "past their deadline"), ("at_risk", f"due within {sla['at_risk_working_days']} "
                                                                     "working days")):
        fam = family(f"records_{key}_by_basis", f"Undelivered records {what}, by the clock that binds them "
                                                "(contract: 8 working days; law: 8 calendar days).")
        for basis, counts in sorted(sla["by_basis"].items()):
            fam.add(counts[key], basis=basis)


# -- the file ---------------------------------------------------------------------------------


def read_job_success(path: Path) -> dict[str, float]:
    """The jobs' last success times from a previous file (absent or unreadable: none)."""
    out: dict[str, float] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return out
    for line in text.splitlines():
        m = _JOB_SUCCESS_LINE.match(line)
        if m:
            try:
                out[_unescape(m.group(1))] = float(m.group(2))
            except ValueError:
                continue
    return out


def write_textfile(path: Path, text: str) -> None:
    """Replace `path` atomically: `.<name>.tmp` beside it (not `*.prom`, so never scraped), fsync, rename.

    The folder is the collector's and must exist: creating a mistyped one would hide the error.
    """
    # 0644: the exporter runs as another user, and the process umask (0077) would hide the file.
    atomic_write(Path(path), text.encode("utf-8"), mode=0o644, create_parent=False)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Read-merge-write of the job timestamps: `serve` and a `run` by hand may write at the same time.
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_metrics(
    settings: Settings,
    *,
    now: datetime,
    job: str | None = None,
    succeeded: bool = True,
    path: Path | None = None,
) -> Path:
    """Recompute every metric and rewrite the file; `job` (if it succeeded) gets `now` as its last success."""
    from ..trace.store import TraceStore
    from .status import gather

    target = Path(path or settings.service.metrics_file or "")
    if not target.name:
        raise ValueError("no metrics file: set [service] metrics_file")
    with _locked(target):
        job_success = read_job_success(target)
        if job is not None and succeeded:
            job_success[job] = now.timestamp()
        trace = TraceStore(settings.paths.trace)
        try:
            status_data = gather(settings, trace, now=now)
            last_run = last_nightly_run(trace)
            last_deliveries = {d.department: float(d.at) for d in trace.last_deliveries()}
        finally:
            trace.close()
        text = render(
            status_data,
            job_success=job_success,
            last_run=last_run,
            certificates=certificate_days(settings, now),
            generated_at=now.timestamp(),
            last_deliveries=last_deliveries,
        )
        write_textfile(target, text)
    return target


def after_job(settings: Settings, job: str | None, *, succeeded: bool, now: datetime) -> Path | None:
    """`write_metrics` when `[service] metrics_file` is set; a failure is logged, never raised (the job is done)."""
    if settings.service.metrics_file is None:
        return None
    try:
        return write_metrics(settings, now=now, job=job, succeeded=succeeded)
    except Exception as exc:
        # OSError and FluxError messages name paths and keys; anything else might quote data.
        message = str(exc)[:300] if isinstance(exc, OSError | FluxError) else ""
        get_logger("flux-pmi.metrics").warning(
            "metrics.failed",
            file=str(settings.service.metrics_file),
            job=job,
            error=type(exc).__name__,
            message=message,
        )
        return None
