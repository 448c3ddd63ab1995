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
- The re-emissions are delivered at once (jobs/deliver.py, as the night delivers), and only
  them. What cannot be delivered now stays queued for the next night; the request stays
  `pending` until `close_completed_requests` sees every one delivered.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from ..archive import ArchiveStore
from ..config.settings import FLOWS, Settings
from ..core import names, workdays
from ..core.clock import Clock
from ..core.errors import ConfigError, ExitCode, FluxError, RefusedError, TraceError
from ..core.log import bind_run, unbind_run
from ..core.log import get as get_logger
from ..seal import certs, cms
from ..trace.lifecycle import DONE, RequestStatus, RunStatus
from ..trace.store import Emission, TraceStore
from . import guards
from .deliver import Deliverer
from .retention import last_purge_cutoff, retention_cutoff
from .sealkeys import SealKeys

REQUEST_WORKING_DAYS = 8  # annexe 2 §3: re-emit within 8 jours ouvrés of the request
AUTO_REQUESTER = "flux-pmi (auto)"

# C0 and C1 controls (ESC, CSI \x9b, NEL \x85), Unicode line separators and bidi overrides, and the
# surrogates Python makes of argv bytes that are not UTF-8 (SQLite cannot store them: a traceback).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]+")


def reemission_name(original_name: str, reemission_no: int) -> str:
    """The original's name with `_Rnn`, built by the grammar that named the original (core/names.py)."""
    name = names.parse(original_name)
    if name is None or not name.sealed:
        raise TraceError(f"{original_name}: not an emission file name")
    if not name.is_original or names.build(name) != original_name:
        raise TraceError(f"{original_name}: not an original emission name")
    return names.build(dataclasses.replace(name, reemission_no=reemission_no))


def requester() -> str:
    """Who asks, when `--by` is not given: the OS account running the command (an operator identity)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container with an anonymous uid)
        return f"uid {os.getuid()}"


def _clean(text: str, limit: int) -> str:
    # Operator text goes into the trace and onto terminals: one line, bounded.
    return _CONTROL.sub(" ", text).strip()[:limit]


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
    status: RequestStatus  # as traced in reemission_requests
    files: list[ReemittedFile] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # originals that could not be re-emitted, with why
    problems: list[str] = field(default_factory=list)  # delivery problems, operator-facing
    held: dict[str, int] = field(default_factory=dict)  # held département -> re-emitted files waiting for it
    dry_run: bool = False  # a plan: nothing was traced, made or sent
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
    if row.reemission_of is not None:  # a KO on a copy re-emits the original again
        return _original_row(trace, row.reemission_of)
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
    keys: SealKeys,
) -> ReemittedFile:
    what = f"{row.flow} {row.department} seq {row.seq}"
    business_date = date.fromisoformat(row.business_date)
    cutoff = retention_cutoff(now.date(), settings.retention.months)
    if row.purged_at is not None or business_date < cutoff:
        raise RefusedError(
            f"{what} of {business_date} is outside retention (kept {settings.retention.months} "
            f"months: emissions before {cutoff} are purged); nothing was sent"
        )
    if row.archived_at is None or not row.file_name:
        raise RefusedError(
            f"{what} of {business_date} is not archived yet: the night has not finished it; nothing was sent"
        )
    dept = settings.departments.get(row.department)
    if dept is None or not dept.enabled:
        raise RefusedError(f"département {row.department} is not enabled: nothing can be sent to it")

    n = trace.next_reemission_no(row.id)
    name = reemission_name(row.file_name, n)
    if trace.emission_by_file(row.department, name) is not None:  # another process took n meanwhile
        raise TraceError(f"{name} is already traced: another re-emission of {what} is running")
    cert, fingerprint = keys.recipient(row.department)
    archive_copy = archive.get_archive_copy(business_date, row.file_name)
    resealed = fingerprint != row.recipient_cert_sha256
    if resealed:
        archive_cert, archive_key = keys.archive()
        sealed = cms.reseal_from_archive(
            archive_copy, archive_cert=archive_cert, archive_key=archive_key, recipient_cert=cert, now=now
        )
    else:
        sealed = archive.get_sealed(business_date, row.file_name)
    # Archived under its own name first: a crash before the row leaves only a file the next
    # attempt overwrites (same name, no row points at it yet).
    archive.put(business_date, name, sealed, archive_copy)
    detail = _clean(f"R{n:02d} by {by}" + (f": {reason}" if reason else ""), 300)
    emission = trace.create_reemission(
        row.id,
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
    get_logger("flux-pmi.reemit").info("reemit.archived", flow=row.flow, department=row.department,
                                       seq=row.seq, file=name, resealed=resealed, request=request_id)
    return ReemittedFile(emission, row.id, resealed)


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

    The copy is archived and traced `re-emitted`, ready for the next delivery; it is not
    delivered here. Raises RefusedError when the emission is purged, outside retention, not
    archived yet or its département is not enabled.
    """
    row = _original_row(trace, emission_id)
    keys = SealKeys(settings)
    return _reemit(settings, trace, archive, row, now=now, by=by, reason=reason, request_id=request_id,
                   keys=keys).emission


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


@dataclass(frozen=True)
class ReemitRequest:
    """What an operator asks: which flows and départements (["all"] for every one), which business
    dates, who asks and why. `dry_run`: the same checks, then only the names that would be sent."""

    flows: Sequence[str]
    departments: Sequence[str]
    date_from: date
    date_to: date | None = None
    by: str = ""
    reason: str = ""
    dry_run: bool = False


@dataclass(frozen=True)
class _Scope:
    """A request once read: registry codes, the labels the trace keeps, and the operator's text cleaned."""

    flows: list[str]
    departments: list[str]
    flow_label: str
    dept_label: str
    date_from: date
    date_to: date
    by: str
    reason: str

    @property
    def when(self) -> str:
        return f"{self.date_from}" if self.date_to == self.date_from else f"{self.date_from} to {self.date_to}"

    @property
    def what(self) -> str:
        flows = self.flow_label if self.flow_label != "all" else "any flow"
        return f"{flows} {self.dept_label if self.dept_label != 'all' else 'any département'}"


def _scope(settings: Settings, ask: ReemitRequest) -> _Scope:
    """ConfigError for a malformed request (not traced: nobody could tell what was asked)."""
    date_to = ask.date_to or ask.date_from
    if date_to < ask.date_from:
        raise ConfigError("command line", "--to", f"a date on or after --date {ask.date_from}")
    by, reason = _clean(ask.by, 64), _clean(ask.reason, 500)
    if not by:
        raise ConfigError("command line", "--by", "who asks for the re-emission (an operator identity)")
    flows = parse_flows(ask.flows)
    departments = parse_departments(settings, ask.departments)
    return _Scope(flows, departments, _label(flows, any(f.strip().lower() == "all" for f in ask.flows)),
                  _label(departments, any(d.strip().lower() == "all" for d in ask.departments)),
                  ask.date_from, date_to, by, reason)


def _create_request(trace: TraceStore, scope: _Scope, now: datetime, **outcome: Any) -> int:
    return trace.create_request(now, by=scope.by, reason=scope.reason, flow=scope.flow_label,
                                department=scope.dept_label, date_from=scope.date_from, date_to=scope.date_to,
                                **outcome)


class _Refusals:
    """A refusal is traced (and logged) before it is raised; a dry run only raises it."""

    def __init__(self, trace: TraceStore, scope: _Scope, now: datetime, *, dry_run: bool):
        self.trace, self.scope, self.now, self.dry_run = trace, scope, now, dry_run

    def __call__(self, message: str) -> RefusedError:
        if not self.dry_run:
            s = self.scope
            _create_request(self.trace, s, self.now, deadline=None, status=RequestStatus.REFUSED, message=message)
            get_logger("flux-pmi.reemit").warning(
                "reemit.refused", flow=s.flow_label, department=s.dept_label, date_from=s.date_from.isoformat(),
                date_to=s.date_to.isoformat(), reason=message)
        return RefusedError(message)


def _check_scope(settings: Settings, trace: TraceStore, scope: _Scope, now: datetime, refuse: _Refusals) -> None:
    disabled = [c for c in scope.departments if not settings.departments[c].enabled]
    if disabled:
        raise refuse(f"re-emission refused: département {', '.join(disabled)} is not enabled: "
                     "nothing can be sent to it")
    shared = guards.shared_recipient_keys(settings)
    if mixed := [c for c in scope.departments if c in shared]:
        raise refuse(f"re-emission refused: département {mixed[0]}: {shared[mixed[0]]}: nothing can be sealed "
                     "for it until each département has its own certificate")
    if not scope.departments:
        raise refuse("re-emission refused: no département is enabled")
    months = settings.retention.months
    purged_before = max(filter(None, (retention_cutoff(now.date(), months), last_purge_cutoff(trace))))
    if scope.date_from < purged_before:
        raise refuse(f"re-emission refused: {scope.date_from} is outside retention (kept {months} months: "
                     f"emissions before {purged_before} are purged)")


def _select(settings: Settings, trace: TraceStore, scope: _Scope, refuse: _Refusals) -> tuple[list[Any], list[str]]:
    """The originals to copy (delivered ones), and the names still waiting for their first delivery."""
    rows = [r for d in scope.departments for f in scope.flows
            for r in trace.originals_between(f, d, scope.date_from, scope.date_to)]
    what, when = scope.what, scope.when
    if any(r.purged_at for r in rows):  # a purge was interrupted after marking them
        raise refuse(f"re-emission refused: {when} is outside retention (kept {settings.retention.months} months): "
                     f"its emissions of {what} are being purged")
    archived = [r for r in rows if r.archived_at is not None and r.file_name]
    # A file not delivered yet is still on its way (its partner held or failing): the night delivers
    # it. A copy made now would reach the partner twice, the original and the `_Rnn`.
    waiting = [r.file_name for r in archived if r.delivered_at is None and r.file_name]
    eligible = [r for r in archived if r.delivered_at is not None]
    if eligible:
        return eligible, waiting
    if waiting:
        raise refuse(f"re-emission refused: {what} on {when} is not delivered yet ({len(waiting)} file(s) waiting, "
                     "its partner held or failing): the next run delivers it; a re-emission would send it twice")
    if rows:
        raise refuse(f"re-emission refused: nothing archived yet for {what} on {when}: "
                     "the night has not finished it")
    raise refuse(f"re-emission refused: nothing was emitted for {what} on {when}")


def _check_certificates(keys: SealKeys, eligible: list[Any], now: datetime) -> list[str]:
    """The départements involved. A renewed certificate that is unusable stops the request before
    anything is made (CertificateError: an operator's matter, exit 2)."""
    involved = sorted({r.department for r in eligible})
    for code in involved:
        cert, fingerprint = keys.recipient(code)
        if any(r.department == code and r.recipient_cert_sha256 != fingerprint for r in eligible):
            certs.check_recipient(cert, now=now)
            keys.archive()
    return involved


def request(settings: Settings, trace: TraceStore, ask: ReemitRequest, *, clock: Clock,
            deliverer: Deliverer | None = None, progress: Callable[[str], None] | None = None) -> ReemitResult:
    """Re-emit every archived emission of the flows and départements over [date_from, date_to], and deliver.

    Raises RefusedError (traced, nothing sent) when a date is outside retention, when nothing
    was emitted in the range, or when a département is not enabled; ConfigError for a
    malformed request (not traced). A dry run writes nothing (not even a refusal) and sends
    nothing: the names that would be re-emitted and sent are in `planned`.
    """
    now = clock.now()
    scope = _scope(settings, ask)
    refuse = _Refusals(trace, scope, now, dry_run=ask.dry_run)
    _check_scope(settings, trace, scope, now, refuse)
    eligible, waiting = _select(settings, trace, scope, refuse)
    keys = SealKeys(settings)
    involved = _check_certificates(keys, eligible, now)
    deadline = min(workdays.add_working_days(now.date(), REQUEST_WORKING_DAYS, c) for c in involved)
    if ask.dry_run:
        plan = ReemitResult(0, 0, deadline, RequestStatus.PENDING, waiting=waiting, dry_run=True)
        plan.planned = [reemission_name(r.file_name, trace.next_reemission_no(r.id)) for r in eligible]
        plan.held = dict(Counter(r.department for r in eligible if r.department in trace.active_holds()))
        return plan
    request_id = _create_request(trace, scope, now, deadline=deadline)
    run_id = trace.start_run("reemit", None, now)
    bind_run(run_id)
    result = ReemitResult(request_id, run_id, deadline, RequestStatus.PENDING, waiting=waiting)
    deliverer = deliverer or Deliverer(settings, clock=clock, progress=progress)
    run = _Run(settings, trace, scope, clock, keys, progress)
    status, code = RunStatus.FAILED, ExitCode.INTERNAL
    started = time.monotonic()
    try:
        run.make(result, eligible, involved, deliverer.archive)
        run.deliver(result, deliverer)
        run.finish_request(result)
        code = result.exit_code
        status = RunStatus.DONE if code == ExitCode.OK else RunStatus.of_exit(code.name)
        return result
    finally:
        run.finish_run(result, status, code, started)
        unbind_run()


class _Run:
    """One request's making, delivery and closing, once it is traced."""

    def __init__(self, settings: Settings, trace: TraceStore, scope: _Scope, clock: Clock, keys: SealKeys,
                 progress: Callable[[str], None] | None):
        self.settings, self.trace, self.scope, self.clock, self.keys = settings, trace, scope, clock, keys
        self.progress = progress
        self.log = get_logger("flux-pmi.reemit")

    def make(self, result: ReemitResult, eligible: list[Any], involved: list[str], archive: ArchiveStore) -> None:
        for i, dept in enumerate(involved, 1):
            made = 0
            for row in (r for r in eligible if r.department == dept):
                try:
                    result.files.append(_reemit(self.settings, self.trace, archive, row, now=self.clock.now(),
                                                by=self.scope.by, reason=self.scope.reason,
                                                request_id=result.request_id, keys=self.keys))
                    made += 1
                except FluxError as exc:  # one damaged archive file must not stop the others
                    result.failed.append(f"{row.file_name}: {exc}")
                    self.log.error("reemit.failed", department=dept, file=row.file_name, error=str(exc))
            if self.progress:
                self.progress(f"{dept}: {made} file(s) re-emitted ({i}/{len(involved)} départements)")

    def deliver(self, result: ReemitResult, deliverer: Deliverer) -> None:
        done = deliverer.deliver(self.trace, result.run_id, only={f.emission.id for f in result.files})
        result.held = dict(done.held)
        result.problems = done.problems
        result.files = [
            ReemittedFile(f.emission, f.original_id, f.resealed, self.trace.emission(f.emission.id).status in DONE)
            for f in result.files
        ]

    def finish_request(self, result: ReemitResult) -> None:
        end = self.clock.now()
        if result.failed:
            result.status = RequestStatus.FAILED
            self.trace.finish_request(result.request_id, end, RequestStatus.FAILED, _clean("; ".join(result.failed), 2000))
        elif not result.pending:
            result.status = RequestStatus.DONE
            self.trace.finish_request(result.request_id, end, RequestStatus.DONE,
                                      f"{len(result.files)} file(s) re-emitted and delivered")

    def finish_run(self, result: ReemitResult, status: RunStatus, code: ExitCode, started: float) -> None:
        self.trace.finish_run(result.run_id, self.clock.now(), status=status, exit_code=int(code),
                              files=len(result.files), nbytes=sum(f.emission.size or 0 for f in result.files),
                              message=_clean("; ".join(result.failed + result.problems), 2000))
        self.log.info("reemit.end", request=result.request_id, run=result.run_id, files=len(result.files),
                      pending=result.pending, failed=len(result.failed), status=result.status,
                      seconds=round(time.monotonic() - started, 3))


def close_completed_requests(trace: TraceStore, now: datetime) -> list[int]:
    """Close the pending requests whose re-emitted files are all delivered; return their ids.

    For the night, after its delivery. A pending request with no re-emitted file left (its
    command was killed before making them, or they were purged) is closed `failed`, once it
    is an hour old so that a request being made right now is not caught half-way.
    """
    closed = []
    for req in trace.requests(RequestStatus.PENDING):
        emissions = trace.emissions_of_request(req.id)
        if not emissions:
            if datetime.fromisoformat(req.requested_at) < now - timedelta(hours=1):
                trace.finish_request(
                    req.id,
                    now,
                    RequestStatus.FAILED,
                    "no re-emitted file is left (interrupted before they "
                    "were made, or purged): ask again if still needed",
                )
                closed.append(req.id)
            continue
        if all(e.status in DONE for e in emissions):
            trace.finish_request(req.id, now, RequestStatus.DONE, f"{len(emissions)} file(s) re-emitted and delivered")
            closed.append(req.id)
    return closed


def describe(result: ReemitResult) -> list[str]:
    """Operator-facing lines: one per re-emitted file, then a total (technical names only)."""
    if result.dry_run:
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
