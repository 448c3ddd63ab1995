"""Re-emission: send again, on a département's request, what was emitted on given business dates.

The service contract (annexe 2 §3) makes the sender keep the flows 3 months and re-emit one
or more of them within 8 working days when a département asks. A re-emission is the
archived file itself, content unchanged, under the original name with `_Rnn` added (the
receiver sees the original sequence number and knows it is a copy), traced as a new
emission row (`re-emitted`, `reemission_of`, `request_id`) so that its delivery and its
acknowledgement have their own history.

When the département has renewed its certificate since the first emission, the archived
copy sealed for the CNAF's own archive certificate is opened and its signed bytes are
re-enveloped for the current certificate (`cms.reseal_from_archive`): the signature, and so
the content the receiver verifies, stay those of the first emission.

Rules, decided here:
- A request covers whole business dates; a date outside retention (or before the last
  purge's cutoff) refuses the whole request, and so does a range in which nothing was
  emitted. A refusal is traced and sends nothing.
- Each original in the range is re-emitted once per request, even if an earlier
  re-emission of it is still waiting for delivery: the département asked again, and
  the receiver recognises copies by their sequence number.
- The re-emissions are delivered at once (through `Night.deliver`, which also delivers
  whatever else is due). What cannot be delivered now stays queued for the next night;
  the request stays `pending` until `close_completed_requests` sees every one delivered.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..archive import ArchiveStore
from ..config.settings import FLOWS, Settings
from ..core import workdays
from ..core.clock import Clock
from ..core.errors import ConfigError, ExitCode, FluxError, RefusedError, TraceError
from ..core.log import get as get_logger
from ..seal import certs, cms
from ..trace.lifecycle import DONE
from ..trace.store import Emission, TraceStore
from . import night as night_mod  # a module, not names: the ack collector imports us from the night's side
from .retention import last_purge_cutoff, retention_cutoff

if TYPE_CHECKING:
    from .night import Night

REQUEST_WORKING_DAYS = 8  # annexe 2 §3: re-emit within 8 jours ouvrés of the request
AUTO_REQUESTER = "flux-pmi (auto)"

_NAME = re.compile(
    r"^(?P<flow>DSG|SGR|GRO)_(?P<dept>[0-9AB]{3}|69M)_(?P<date>\d{8})_(?P<seq>\d{6})"
    r"(?:_P(?P<part>\d+)of(?P<parts>\d+))?\.(?:xml|zip)\.p7m$"
)
# C0 and C1 controls (ESC, CSI \x9b, NEL \x85), Unicode line separators and bidi overrides, and the
# surrogates Python makes of argv bytes that are not UTF-8 (SQLite cannot store them: a traceback).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]+")


def reemission_name(original_name: str, reemission_no: int) -> str:
    """The original's name with `_Rnn`, built by the same function that named the original."""
    m = _NAME.match(original_name)
    if m is None:
        raise TraceError(f"{original_name}: not an emission file name")
    flow, dept = m["flow"], m["dept"]
    day = datetime.strptime(m["date"], "%Y%m%d").date()
    part, parts = int(m["part"] or 1), int(m["parts"] or 1)
    if night_mod.emission_name(flow, dept, day, int(m["seq"]), part, parts) != original_name:
        raise TraceError(f"{original_name}: not an original emission name")
    return night_mod.emission_name(flow, dept, day, int(m["seq"]), part, parts, reemission_no=reemission_no)


def requester() -> str:
    """Who asks, when `--by` is not given: the OS account running the command (an operator identity)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container with an anonymous uid)
        return f"uid {os.getuid()}"


def _clean(text: str, limit: int) -> str:
    # Operator text goes into the trace and onto terminals: one line, bounded.
    return _CONTROL.sub(" ", text).strip()[:limit]


class _Keys:
    """Certificates loaded once per command, not once per file."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._recipients: dict[str, tuple[Any, str]] = {}
        self._archive: tuple[Any, Any] | None = None

    def recipient(self, department: str) -> tuple[Any, str]:
        """The département's current certificate and its fingerprint."""
        if department not in self._recipients:
            dept = self.settings.departments[department]
            if dept.certificate is None:
                raise RefusedError(
                    f"département {department} has no certificate configured: nothing can be sealed"
                )
            cert = certs.load_certificate(dept.certificate)
            self._recipients[department] = cert, night_mod.cert_fingerprint(cert)
        return self._recipients[department]

    def archive(self) -> tuple[Any, Any]:
        # Loaded only when a file must be re-sealed: the archive key may be kept out of daily reach.
        if self._archive is None:
            s = self.settings.sender
            self._archive = (
                certs.load_certificate(s.archive_certificate),
                certs.load_private_key(s.archive_key, s.archive_key_passphrase),
            )
        return self._archive


@dataclass(frozen=True)
class ReemittedFile:
    emission: Emission
    original_id: int
    resealed: bool
    delivered: bool = False


@dataclass
class ReemitResult:
    request_id: int
    run_id: int
    deadline: date
    status: str  # done, pending, failed (as traced in reemission_requests)
    files: list[ReemittedFile] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # originals that could not be re-emitted, with why
    problems: list[str] = field(default_factory=list)  # delivery problems, operator-facing
    held: dict[str, int] = field(default_factory=dict)  # held département -> re-emitted files waiting for it
    planned: list[str] = field(default_factory=list)  # --dry-run: the names that would be re-emitted and sent
    waiting: list[str] = field(default_factory=list)  # originals not delivered yet: left to the night, not copied

    @property
    def pending(self) -> int:
        return sum(not f.delivered for f in self.files)

    @property
    def exit_code(self) -> ExitCode:
        if self.failed:
            return ExitCode.INTERNAL
        # Waiting for a held département is what the operator asked for, not a failure.
        return ExitCode.UNDELIVERED if self.pending > sum(self.held.values()) else ExitCode.OK


# -- one emission ----------------------------------------------------------------------------


def _original_row(trace: TraceStore, emission_id: int) -> Any:
    row = trace.emission_detail(emission_id)
    if row is None:
        raise RefusedError(
            f"emission {emission_id} is not in the trace: purged after the retention period, "
            "or never emitted; nothing was sent"
        )
    if row["reemission_of"] is not None:  # a KO on a copy re-emits the original again
        return _original_row(trace, row["reemission_of"])
    return row


def _reemit(
    settings: Settings,
    trace: TraceStore,
    archive: ArchiveStore,
    row: Any,
    *,
    now: datetime,
    by: str,
    reason: str,
    request_id: int | None,
    keys: _Keys,
) -> ReemittedFile:
    what = f"{row['flow']} {row['department']} seq {row['seq']}"
    business_date = date.fromisoformat(row["business_date"])
    cutoff = retention_cutoff(now.date(), settings.retention.months)
    if row["purged_at"] is not None or business_date < cutoff:
        raise RefusedError(
            f"{what} of {business_date} is outside retention (kept {settings.retention.months} "
            f"months: emissions before {cutoff} are purged); nothing was sent"
        )
    if row["archived_at"] is None or not row["file_name"]:
        raise RefusedError(
            f"{what} of {business_date} is not archived yet: the night has not finished it; nothing was sent"
        )
    dept = settings.departments.get(row["department"])
    if dept is None or not dept.enabled:
        raise RefusedError(f"département {row['department']} is not enabled: nothing can be sent to it")

    n = trace.next_reemission_no(row["id"])
    name = reemission_name(row["file_name"], n)
    if trace.emission_by_file(row["department"], name) is not None:  # another process took n meanwhile
        raise TraceError(f"{name} is already traced: another re-emission of {what} is running")
    cert, fingerprint = keys.recipient(row["department"])
    archive_copy = archive.get_archive_copy(business_date, row["file_name"])
    resealed = fingerprint != row["recipient_cert_sha256"]
    if resealed:
        archive_cert, archive_key = keys.archive()
        sealed = cms.reseal_from_archive(
            archive_copy, archive_cert=archive_cert, archive_key=archive_key, recipient_cert=cert, now=now
        )
    else:
        sealed = archive.get_sealed(business_date, row["file_name"])
    # Archived under its own name first: a crash before the row leaves only a file the next
    # attempt overwrites (same name, no row points at it yet).
    archive.put(business_date, name, sealed, archive_copy)
    detail = _clean(f"R{n:02d} by {by}" + (f": {reason}" if reason else ""), 300)
    emission = trace.create_reemission(
        row["id"],
        now,
        request_id=request_id,
        file_name=name,
        size=len(sealed),
        sha256=hashlib.sha256(sealed).hexdigest(),
        recipient_cert_sha256=fingerprint,
        detail=detail,
    )
    if emission.file_name != name or emission.reemission_no != n:
        raise TraceError(f"{name}: traced as re-emission {emission.reemission_no}: concurrent re-emissions")
    get_logger("flux-pmi.reemit").info(
        "reemit.archived",
        flow=row["flow"],
        department=row["department"],
        seq=row["seq"],
        file=name,
        resealed=resealed,
        request=request_id,
    )
    return ReemittedFile(emission, row["id"], resealed)


def reemit_emission(
    settings: Settings,
    trace: TraceStore,
    archive: ArchiveStore,
    emission_id: int,
    *,
    now: datetime,
    by: str,
    reason: str,
    request_id: int | None = None,
) -> Emission:
    """Re-emit one archived emission (given by its id, or the id of one of its re-emissions).

    The copy is archived and traced `re-emitted`, ready for the next `Night.deliver`; it is not
    delivered here. Raises RefusedError when the emission is purged, outside retention, not
    archived yet or its département is not enabled.
    """
    row = _original_row(trace, emission_id)
    return _reemit(
        settings,
        trace,
        archive,
        row,
        now=now,
        by=by,
        reason=reason,
        request_id=request_id,
        keys=_Keys(settings),
    ).emission


# -- a request -------------------------------------------------------------------------------


def parse_flows(values: Sequence[str]) -> list[str]:
    wanted = [v.strip().upper() for v in values]
    if "ALL" in wanted:
        return list(FLOWS)
    for v in wanted:
        if v not in FLOWS:
            raise ConfigError("command line", "--flow", f"{', '.join(FLOWS)} or all (got {v!r})")
    return sorted(set(wanted), key=FLOWS.index)


def parse_departments(settings: Settings, values: Sequence[str]) -> list[str]:
    """Codes as typed by an operator (35, 035, 2a, all) to registry codes; 'all' is every enabled one."""
    if any(v.strip().lower() == "all" for v in values):
        return sorted(d.code for d in settings.enabled_departments())
    codes = []
    for raw in values:
        code = raw.strip().upper()
        code = code.zfill(3) if code.isdigit() else ("0" + code if len(code) == 2 else code)
        if code not in settings.departments:
            raise ConfigError(
                "command line",
                "--department",
                f"a département code (035, 02A, 971) or all (got {raw.strip()!r})",
            )
        codes.append(code)
    return sorted(set(codes))


def _label(values: Sequence[str], everything: bool) -> str:
    return "all" if everything else ",".join(values)


def request(
    settings: Settings,
    trace: TraceStore,
    *,
    flows: Sequence[str],
    departments: Sequence[str],
    date_from: date,
    date_to: date | None = None,
    reason: str = "",
    by: str,
    clock: Clock,
    night: Night | None = None,
    progress: Callable[[str], None] | None = None,
    dry_run: bool = False,
) -> ReemitResult:
    """Re-emit every archived emission of the flows and départements over [date_from, date_to], and deliver.

    `flows` / `departments` may be ["all"]. Raises RefusedError (traced, nothing sent) when a
    date is outside retention, when nothing was emitted in the range, or when a département
    is not enabled; ConfigError for a malformed request (not traced).

    `dry_run`: the same checks, then the names that would be re-emitted and sent, in
    `planned`; nothing is written (not even a refusal) and nothing is sent.
    """
    now = clock.now()
    date_to = date_to or date_from
    if date_to < date_from:
        raise ConfigError("command line", "--to", f"a date on or after --date {date_from}")
    by, reason = _clean(by, 64), _clean(reason, 500)
    if not by:
        raise ConfigError("command line", "--by", "who asks for the re-emission (an operator identity)")
    flow_list = parse_flows(flows)
    dept_list = parse_departments(settings, departments)
    flow_label = _label(flow_list, any(f.strip().lower() == "all" for f in flows))
    dept_label = _label(dept_list, any(d.strip().lower() == "all" for d in departments))
    when = f"{date_from}" if date_to == date_from else f"{date_from} to {date_to}"
    log = get_logger("flux-pmi.reemit")

    def refuse(message: str) -> RefusedError:
        if dry_run:
            return RefusedError(message)
        trace.create_request(
            now,
            by=by,
            reason=reason,
            flow=flow_label,
            department=dept_label,
            date_from=date_from,
            date_to=date_to,
            deadline=None,
            status="refused",
            message=message,
        )
        log.warning(
            "reemit.refused",
            flow=flow_label,
            department=dept_label,
            date_from=date_from.isoformat(),
            date_to=date_to.isoformat(),
            reason=message,
        )
        return RefusedError(message)

    disabled = [c for c in dept_list if not settings.departments[c].enabled]
    if disabled:
        raise refuse(
            f"re-emission refused: département {', '.join(disabled)} is not enabled: "
            "nothing can be sent to it"
        )
    if not dept_list:
        raise refuse("re-emission refused: no département is enabled")
    months = settings.retention.months
    purged_before = max(filter(None, (retention_cutoff(now.date(), months), last_purge_cutoff(trace))))
    if date_from < purged_before:
        raise refuse(
            f"re-emission refused: {date_from} is outside retention (kept {months} months: "
            f"emissions before {purged_before} are purged)"
        )

    rows = [
        r for d in dept_list for f in flow_list for r in trace.originals_between(f, d, date_from, date_to)
    ]
    what = f"{flow_label if flow_label != 'all' else 'any flow'} {dept_label if dept_label != 'all' else 'any département'}"
    if any(r["purged_at"] for r in rows):  # a purge was interrupted after marking them
        raise refuse(
            f"re-emission refused: {when} is outside retention (kept {months} months): "
            f"its emissions of {what} are being purged"
        )
    archived = [r for r in rows if r["archived_at"] is not None and r["file_name"]]
    # A file not delivered yet is still on its way (its partner held or failing): the night delivers
    # it. A copy made now would reach the partner twice, the original and the `_Rnn`.
    waiting = [r["file_name"] for r in archived if r["delivered_at"] is None]
    eligible = [r for r in archived if r["delivered_at"] is not None]
    if not eligible:
        if waiting:
            raise refuse(
                f"re-emission refused: {what} on {when} is not delivered yet ({len(waiting)} file(s) waiting, "
                "its partner held or failing): the next run delivers it; a re-emission would send it twice"
            )
        if rows:
            raise refuse(
                f"re-emission refused: nothing archived yet for {what} on {when}: "
                "the night has not finished it"
            )
        raise refuse(f"re-emission refused: nothing was emitted for {what} on {when}")

    # Certificates first: a renewed certificate that is unusable must stop the request before
    # anything is made (CertificateError: an operator's matter, exit 2).
    keys = _Keys(settings)
    involved = sorted({r["department"] for r in eligible})
    for code in involved:
        cert, fingerprint = keys.recipient(code)
        if any(r["department"] == code and r["recipient_cert_sha256"] != fingerprint for r in eligible):
            certs.check_recipient(cert, now=now)
            keys.archive()

    deadline = min(workdays.add_working_days(now.date(), REQUEST_WORKING_DAYS, c) for c in involved)
    if dry_run:
        plan = ReemitResult(0, 0, deadline, "dry-run", waiting=waiting)
        plan.planned = [reemission_name(r["file_name"], trace.next_reemission_no(r["id"])) for r in eligible]
        plan.held = dict(Counter(r["department"] for r in eligible if r["department"] in trace.active_holds()))
        return plan
    request_id = trace.create_request(
        now,
        by=by,
        reason=reason,
        flow=flow_label,
        department=dept_label,
        date_from=date_from,
        date_to=date_to,
        deadline=deadline,
    )
    run_id = trace.start_run("reemit", None, now)
    result = ReemitResult(request_id, run_id, deadline, "pending", waiting=waiting)
    night = night or night_mod.Night(settings, clock=clock, progress=progress)
    archive = night.archive
    status, code = "failed", ExitCode.INTERNAL
    started = time.monotonic()
    try:
        for i, dept in enumerate(involved, 1):
            made = 0
            for row in (r for r in eligible if r["department"] == dept):
                try:
                    result.files.append(
                        _reemit(
                            settings,
                            trace,
                            archive,
                            row,
                            now=clock.now(),
                            by=by,
                            reason=reason,
                            request_id=request_id,
                            keys=keys,
                        )
                    )
                    made += 1
                except FluxError as exc:  # one damaged archive file must not stop the others
                    result.failed.append(f"{row['file_name']}: {exc}")
                    log.error("reemit.failed", department=dept, file=row["file_name"], error=str(exc))
            if progress:
                progress(f"{dept}: {made} file(s) re-emitted ({i}/{len(involved)} départements)")

        report = night_mod.NightReport(run_id, date_from)
        night.deliver(trace, run_id, report, only={f.emission.id for f in result.files})
        result.held = dict(report.held)
        result.problems = report.problems
        result.files = [
            ReemittedFile(f.emission, f.original_id, f.resealed, trace.emission(f.emission.id).status in DONE)
            for f in result.files
        ]
        end = clock.now()
        if result.failed:
            result.status = "failed"
            trace.finish_request(request_id, end, "failed", _clean("; ".join(result.failed), 2000))
        elif not result.pending:
            result.status = "done"
            trace.finish_request(
                request_id, end, "done", f"{len(result.files)} file(s) re-emitted and delivered"
            )
        code = result.exit_code
        status = "done" if code == ExitCode.OK else code.name.lower()
        return result
    finally:
        trace.finish_run(
            run_id,
            clock.now(),
            status=status,
            exit_code=int(code),
            files=len(result.files),
            nbytes=sum(f.emission.size or 0 for f in result.files),
            message=_clean("; ".join(result.failed + result.problems), 2000),
        )
        log.info(
            "reemit.end",
            request=request_id,
            run=run_id,
            files=len(result.files),
            pending=result.pending,
            failed=len(result.failed),
            status=result.status,
            seconds=round(time.monotonic() - started, 3),
        )


def close_completed_requests(trace: TraceStore, now: datetime) -> list[int]:
    """Close the pending requests whose re-emitted files are all delivered; return their ids.

    For the night, after its delivery. A pending request with no re-emitted file left (its
    command was killed before making them, or they were purged) is closed `failed`, once it
    is an hour old so that a request being made right now is not caught half-way.
    """
    closed = []
    for req in trace.requests("pending"):
        emissions = trace.emissions_of_request(req["id"])
        if not emissions:
            if datetime.fromisoformat(req["requested_at"]) < now - timedelta(hours=1):
                trace.finish_request(
                    req["id"],
                    now,
                    "failed",
                    "no re-emitted file is left (interrupted before they "
                    "were made, or purged): ask again if still needed",
                )
                closed.append(req["id"])
            continue
        if all(e.status in DONE for e in emissions):
            trace.finish_request(req["id"], now, "done", f"{len(emissions)} file(s) re-emitted and delivered")
            closed.append(req["id"])
    return closed


def describe(result: ReemitResult) -> list[str]:
    """Operator-facing lines: one per re-emitted file, then a total (technical names only)."""
    if result.status == "dry-run":
        lines = [f"would re-emit and send: {name}" for name in result.planned]
        lines += [f"would wait: département {d} is held ({n} file(s))" for d, n in sorted(result.held.items())]
        lines += [f"would not re-emit: {name}: not delivered yet, the next run delivers it" for name in result.waiting]
        lines.append(f"TOTAL dry run: {len(result.planned)} file(s) would be re-emitted; deadline would be "
                     f"{result.deadline}; nothing was changed")
        return lines
    lines = [
        f"{f.emission.file_name}  {f.emission.department}  "
        f"{'re-sealed for the current certificate' if f.resealed else 'as archived'}  "
        f"{'delivered' if f.delivered else 'pending'}"
        for f in result.files
    ]
    lines += [f"not re-emitted: {m}" for m in result.failed]
    lines += [f"not re-emitted: {name}: not delivered yet, the next run delivers it" for name in result.waiting]
    lines.append(
        f"TOTAL request {result.request_id}: {len(result.files)} file(s) re-emitted, "
        f"{sum(f.resealed for f in result.files)} re-sealed, {len(result.files) - result.pending} delivered,"
        f" {result.pending} pending; deadline {result.deadline}; status {result.status}"
    )
    lines += [f"waiting: département {d} is held ({n} file(s)); sent on `flux-pmi resume {d}` and the next run"
              for d, n in sorted(result.held.items())]
    if result.exit_code == ExitCode.UNDELIVERED:
        lines.append(
            f"exit {int(ExitCode.UNDELIVERED)}: {result.pending} file(s) not delivered yet; "
            "the next run retries"
        )
        lines += [f"  - {p}" for p in result.problems[:20]]
    return lines
