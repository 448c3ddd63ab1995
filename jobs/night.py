"""The nightly run: claim the inbox, build, validate, seal, archive, deliver, trace.

This is the only module that knows the whole path; each stage below it knows only
its own job. Every step that changes the world is recorded in the trace first or
right after, so that a run killed at any point is completed, exactly once, by the
next one:
- claimed material stays in `work/` until every emission made from it is archived;
- an emission not yet archived is rebuilt from that material, with the sequence
  number it was given the first time;
- an archived emission is only ever delivered, by name, and delivering a name the
  partner already holds with the same SHA-256 is a no-op.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Generator, Iterator
from concurrent.futures import BrokenExecutor
from dataclasses import astuple, dataclass, field
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import Any

from ..archive import ArchiveStore
from ..archive import consumed as consumed_store
from ..config.settings import Department, Settings
from ..core import workdays
from ..core.clock import Clock
from ..core.errors import ExitCode, FluxError, InputFileError
from ..core.fsutil import private_dir, remove_temp_files
from ..core.log import bind_run, unbind_run
from ..core.log import get as get_logger
from ..core.names import emission_name
from ..flows.build import FlowHeader
from ..flows.codes import recipient_of_commune, recipient_of_idepart
from ..flows.parse import Limits as ParseLimits
from ..flows.parse import parse_file
from ..flows.records import FLOWS, DsgRecord, GroRecord, Reject, SgrRecord
from ..inbox import claim as inbox
from ..report import rejects as rejects_report
from ..seal import certs, cms
from ..testing import faults
from ..trace.lifecycle import BatchState, InboxKind, InboxState, ParkedState, RunStatus, Status
from ..trace.store import Emission, TraceStore
from ..transport.base import Transport
from ..transport.registry import transport_for
from . import acks, guards, notices, prepare, reemit, retention
from .deliver import Deliverer, DeliveryReport, DeliverySession, TransportPool
from .spill import MEMORY_BYTES as SPILL_MEMORY_BYTES
from .spill import Sink, Spill
from .spill import Source as SpillSource

REJECTS_PER_COMMIT = 2000  # reject rows a batch's parse writes at once (memory: a few hundred KB)


@dataclass
class LineSummary:
    """One (flow, département) line of the night's summary."""

    records: int = 0  # emitted tonight
    rejects: int = 0  # refused, parked or warned about, by rejects code
    files: int = 0  # sealed and archived
    bytes: int = 0  # of the sealed files
    delivered: int = 0
    pending: int = 0  # tried tonight and not delivered: the next run retries


@dataclass
class NightReport:
    run_id: int
    business_date: date
    lines: dict[tuple[str, str], LineSummary] = field(default_factory=lambda: defaultdict(LineSummary))
    quarantined: list[tuple[str, str, str]] = field(default_factory=list)  # flow, file, code
    # Inbox entries the night neither took nor set aside (inbox.claim.not_taken): left in place for a
    # person to move or remove. Printed and logged, but not in the exit code: the run did all it could
    # with what it was given, and `status` (exit 5) and the metrics keep saying so until they are gone.
    not_taken: list[tuple[str, str, str]] = field(default_factory=list)  # flow, file, reason
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # operator-facing, no personal data
    undelivered: int = 0
    undelivered_files: int = 0  # of `undelivered`: emissions built (archived or not) and not delivered
    unbuilt: int = 0  # département files that could not be built (their batch stays open for the next run)
    held: dict[str, int] = field(default_factory=dict)  # held département -> files waiting for its resume
    parked: int = 0  # records kept for a département that is not enabled (DEPARTMENT_NOT_ENABLED_KEPT)
    replayed: int = 0  # parked records emitted tonight, their département being enabled now
    resealed: dict[str, int] = field(default_factory=dict)  # département -> files sealed again (new certificate)
    earlier_seal: list[str] = field(default_factory=list)  # files the partner held under a former seal already
    # Enabled départements whose SIRET is still the registry's placeholder: nothing is built or sent
    # to them (their records are kept, as for a département not enabled) until the SIRET is set.
    unsendable: list[str] = field(default_factory=list)
    rejects_report: Path | None = None
    seconds: float = 0.0
    interrupted: bool = False
    acks: Any = None  # acks.AckSummary
    purge: Any = None  # retention.PurgeResult

    @property
    def exit_code(self) -> ExitCode:
        # The most urgent that holds: a stop, then files not delivered, then input set aside.
        urgent = ((self.interrupted, ExitCode.INTERRUPTED),
                  (self.undelivered > 0 or bool(self.unsendable), ExitCode.UNDELIVERED),
                  (bool(self.quarantined), ExitCode.QUARANTINED))
        return next((code for holds, code in urgent if holds), ExitCode.OK)

    def totals(self, flow: str | None = None) -> LineSummary:
        """The sum of every line, or of one flow's lines."""
        t = LineSummary()
        for (f, _dept), s in self.lines.items():
            if flow is not None and f != flow:
                continue
            for k in vars(t):
                setattr(t, k, getattr(t, k) + getattr(s, k))
        return t


@dataclass
class _Routed:
    """One batch's routing so far: its records in the spill, the refs seen, the counts over its inputs."""

    enabled: dict[str, Department]  # the départements whose flow is enabled
    spill: Sink  # the records to emit, per département
    seen: set[str] = field(default_factory=set)  # refs routed so far: a second one in the batch is a DUPLICATE
    parked: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rejects_by_dept: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # "---": none could be told
    # Reject rows not yet in the trace: written together, not one commit per input (see `_flush_rejects`).
    unwritten: list[tuple[str, str | None, str, int, str, str]] = field(default_factory=list)


@dataclass
class _Parsing:
    """One batch's parse under way: its claimed inputs, their jobs, and their results in order."""

    rows: list[Any]  # trace.records.InboxFile
    jobs: list[prepare.ParseJob]
    results: Iterator[Callable[[], prepare.Parsed]]


@dataclass
class _Found:
    """One input's warnings and rejects (with the département when one is known)."""

    warnings: list[tuple[Reject, str | None]] = field(default_factory=list)
    rejects: list[tuple[Reject, str | None]] = field(default_factory=list)


class Night:
    def __init__(self, settings: Settings, *, clock: Clock | None = None,
                 transport_factory: Callable[[Settings, Department], Transport] = transport_for,
                 stop: threading.Event | None = None, sleep: Callable[[float], object] = time.sleep,
                 progress: Callable[[str], None] | None = None, purge: bool = True):
        # A file addressed to a placeholder SIRET would reach the wrong receiver identity (DGE envelope,
        # HubEE folder): such a département is treated as not enabled tonight, and the run says so.
        why = {d.code: (f"its SIRET is still the registry's placeholder: nothing is sent to it (its records are "
                        f"kept); set [departments.\"{d.code}\"] siret in {settings.file.name} from the acte d'adhésion",
                        "department.siret_placeholder", "siret")
               for d in settings.enabled_departments() if d.siret_placeholder}
        # A recipient key shared across SIRETs is a copied table: sealed for one PMI, it would go to another.
        why |= {code: (f"{reason}: nothing is sent to it (its records are kept); give each département its own "
                       f"certificate in {settings.file.name}", "department.certificate_shared", "certificate")
                for code, reason in guards.shared_recipient_keys(settings).items() if code not in why}
        self._unsendable_why = why
        self.unsendable = sorted(why)
        self.settings = _disabled(settings, self.unsendable)
        self.clock = clock or Clock()
        self.transport_factory = transport_factory
        self.stop = stop or threading.Event()
        self.sleep = sleep
        self.progress = progress or (lambda _msg: None)
        self.purge = purge
        self.log = get_logger("flux-pmi.night")
        self.paths = settings.paths
        self.archive = ArchiveStore(self.paths.archive)
        self.deliverer = Deliverer(settings, archive=self.archive, clock=self.clock,
                                   transport_factory=transport_factory, stop=self.stop, sleep=sleep,
                                   progress=self.progress)
        self._certs: dict[str, Any] = {}
        # One transport per département for a whole run, closed at its end: the acks' connection delivers too.
        self._transports = TransportPool(transport_factory)
        # Worker processes for the CPU of the run, started when a batch is big enough, stopped at its end.
        self.workers = prepare.Workers(self.settings.build.processes, self.settings.build.min_jobs)
        self._delivery: DeliverySession | None = None  # under way from the first batch on
        self._keeping: list[tuple[prepare.KeepJob, Callable[[], Path]]] = []  # kept inputs under way
        self._primed: dict[int, _Parsing] = {}  # batches whose parse was started ahead, by batch id

    # -- entry point -----------------------------------------------------------------------

    def run(self, business_date: date | None = None, *, trace: TraceStore | None = None) -> NightReport:
        started = time.monotonic()
        business_date = business_date or self.clock.today()
        own_trace = trace is None
        trace = trace or TraceStore(self.paths.trace)
        run_id = trace.start_run("run", business_date, self.clock.now())
        report = NightReport(run_id, business_date)
        bind_run(run_id)
        self.log.info("run.start", run=run_id, business_date=business_date.isoformat())
        for dept in self.unsendable:
            reason, event, key = self._unsendable_why[dept]
            report.unsendable.append(dept)
            report.problems.append(f"département {dept}: {reason}")
            self.log.error(event, department=dept, key=f"departments.{dept}.{key}")
        status, failure = RunStatus.FAILED, ExitCode.INTERNAL
        try:
            self.workers.warm(len(self.settings.enabled_departments()))  # they start while the run claims
            self._prepare()
            self._load_sender()
            self._secure_consumed(trace)
            # Read while the files are built (connecting is most of it), recorded before delivering.
            # Delivery starts once the acks are recorded (after the first batch) and takes each
            # département's files as they are archived, while the next ones are built.
            fetching = self._start_acks(trace)
            built = False
            try:
                self._build_all(trace, business_date, run_id, report, fetching)
                self._start_delivery(fetching, trace, run_id, report)  # no batch tonight: now
                built = True
            finally:
                fetching.close()
                # What is under way is always waited for and recorded; more only after a full build.
                self._finish_delivery(report, offer_due=built and not self.stop.is_set())
            self._write_rejects_report(trace, run_id, report)
            self._housekeeping(trace, report)
            # Emissions to deliver, not yet archived, or not even built (their batch is still open).
            # Files that wait only for a held département are not "undelivered": the operator asked.
            held = trace.active_holds()
            waiting = [e for e in trace.to_deliver() if e.department not in held]
            report.held = dict(sorted(Counter(e.department for e in trace.to_deliver()
                                              if e.department in held).items()))
            report.undelivered_files = len(waiting) + self._unarchived(trace)
            report.undelivered = (report.undelivered_files
                                  + len([b for b in trace.open_batches() if b.state == BatchState.CLAIMED]))
            report.interrupted = self.stop.is_set() and report.undelivered > 0
            report.problems += notices.notify_incidents(self.settings, trace, self.clock, run_id=run_id, stop=self.stop)
            status = RunStatus.of_exit(report.exit_code.name)
            return report
        except FluxError as exc:
            # A refusal on purpose (no inbox, a loose key): the trace keeps the operator's code and
            # reason, as the command line gave them, not a bug's. Messages carry no personal data.
            failure = exc.exit_code
            report.problems.append(str(exc))
            raise
        finally:
            report.seconds = time.monotonic() - started
            t = report.totals()
            code = report.exit_code if status != RunStatus.FAILED else failure
            unrecorded: FluxError | None = None
            try:
                trace.finish_run(run_id, self.clock.now(), status=status, exit_code=int(code), records=t.records,
                                 rejects=t.rejects, files=t.files, nbytes=t.bytes,
                                 message="; ".join(report.problems)[:2000])
            except FluxError as exc:  # the trace's volume is full, say: what follows must still run
                unrecorded = exc
                self.log.error("run.end_unrecorded", run=run_id, error=str(exc))
            self.log.info("run.end", run=run_id, status=status, exit_code=int(code), records=t.records,
                          rejects=t.rejects, files=t.files, bytes=t.bytes, seconds=round(report.seconds, 3))
            self._transports.close()
            try:
                self._await_kept()  # after a stop or an error: what is under way still ends
            except Exception as exc:  # the run's own outcome comes first; the next run keeps it
                self.log.error("consumed.keep_failed", error=type(exc).__name__)
            self.workers.close()
            unbind_run()
            if own_trace:
                trace.close()
            # The first error is the one to report; a night that ended well but could not say so has one.
            if unrecorded is not None and sys.exc_info()[0] is None:
                raise unrecorded

    # -- setup -----------------------------------------------------------------------------

    def _prepare(self) -> None:
        # Refused before anything is claimed or sent. The inbox is never created here: a missing one
        # is an unmounted share, and creating it would send "nothing today" to every département.
        guards.require_inbox(self.settings)
        guards.require_own_folders(self.settings)
        guards.require_one_volume(self.settings)
        guards.require_owner_only_keys(self.settings)
        for p in (self.paths.work, self.paths.reports, self.paths.quarantine, self.paths.consumed):
            guards.ensure_private_dir(p)
        # Leftovers of writes a crash interrupted never carried a final name: remove them.
        self.archive.cleanup()
        remove_temp_files(self.paths.work)

    def _load_sender(self) -> None:
        s = self.settings.sender
        self.signer_cert = certs.load_certificate(s.certificate)
        self.signer_key = certs.load_private_key(s.key, s.key_passphrase)
        self.archive_cert = certs.load_certificate(s.archive_certificate)

    def _recipient_cert(self, dept: Department) -> Any:
        if dept.code not in self._certs:
            assert dept.certificate is not None
            self._certs[dept.code] = certs.load_certificate(dept.certificate)
        return self._certs[dept.code]

    # -- acknowledgements first, housekeeping last ----------------------------------------------

    def _start_acks(self, trace: TraceStore) -> acks.AckFetch:
        # A held département is not connected to at all, not even for its acks: they wait for the resume.
        return acks.start(_disabled(self.settings, trace.active_holds()), self._transports)

    def _finish_acks(self, fetching: acks.AckFetch, trace: TraceStore, run_id: int, report: NightReport) -> None:
        """Record the départements' acks before delivering, so a KO is re-emitted (and sent) tonight."""
        now = self.clock.now()

        def auto_reemit(emission_id: int, *, reason: str) -> object:
            return reemit.reemit_emission(self.settings, trace, self.archive, emission_id, now=now,
                                          by=reemit.AUTO_REQUESTER, reason=reason)

        summary = acks.finish(fetching, trace, now, reemit=auto_reemit, run_id=run_id)
        report.acks = summary
        report.problems.extend(f"acks: {e}" for e in summary.errors)

    def _start_delivery(self, fetching: acks.AckFetch, trace: TraceStore, run_id: int, report: NightReport) -> None:
        """Record the acks, then start delivering what is due (unless stopped); once per run."""
        if self._delivery is not None or fetching.finished:
            return
        self._finish_acks(fetching, trace, run_id, report)
        if not self.stop.is_set():
            self._delivery = self.deliverer.session(trace, run_id, self._transports)
            self._delivery.offer_due()

    def _offer(self, emissions: list[Emission]) -> None:
        """Hand freshly archived files to the delivery under way."""
        if self._delivery is not None:
            self._delivery.offer(emissions)

    def _drain(self) -> None:
        """Record what the delivery under way reported so far (in the caller's commit, when grouped)."""
        if self._delivery is not None:
            self._delivery.drain()

    def _finish_delivery(self, report: NightReport, *, offer_due: bool) -> None:
        session, self._delivery = self._delivery, None
        if session is not None:  # even after a stop: what was sent is recorded
            self._tally(session.finish(offer_due=offer_due), report)

    def _build_all(self, trace: TraceStore, business_date: date, run_id: int, report: NightReport,
                   fetching: acks.AckFetch) -> None:
        """Claim the inbox, then parse, check, route, build, validate, seal and archive every batch."""
        batches = self._batches(trace, business_date, run_id, report)
        # Input set aside tonight as a duplicate is a plaintext copy of upstream's file: sealed now.
        consumed_store.seal_plaintext_leftovers(self.paths.consumed, self._encrypt_for_archive)
        for i, batch in enumerate(batches, 1):
            if self.stop.is_set():
                break
            self._process_batch(trace, batch, run_id, report)
            self.progress(f"{batch.flow} {batch.business_date}: batch {i}/{len(batches)} built")
            self._start_delivery(fetching, trace, run_id, report)
        self._await_kept()  # a parked record's replay reads its batch's kept input
        if not self.stop.is_set():
            self._replay_parked(trace, run_id, report)

    def _housekeeping(self, trace: TraceStore, report: NightReport) -> None:
        if self.purge and not self.stop.is_set():
            faults.point("purge")
            report.purge = retention.purge(self.settings, trace, self.archive, today=self.clock.today(),
                                           now=self.clock.now())
        reemit.close_completed_requests(trace, self.clock.now())

    # -- claim -----------------------------------------------------------------------------

    def _batches(self, trace: TraceStore, business_date: date, run_id: int, report: NightReport) -> list[inbox.Batch]:
        now = self.clock.now()
        batches: list[inbox.Batch] = []
        for row in trace.open_batches():
            if row.state == BatchState.CLAIMING:
                inbox.finish_claim(trace, row.id, inbox=self.paths.inbox, work=self.paths.work,
                                   flow=row.flow, now=now)
            batches.append(inbox.Batch(row.id, row.flow, date.fromisoformat(row.business_date),
                                       inbox.batch_dir(self.paths.work, row.id, row.flow)))
        pending_flows = {(b.flow, b.business_date) for b in batches}
        for flow in FLOWS:
            if batches:  # the first batch parses on the workers while the next flows are claimed
                self._prime_parse(trace, batches[0])
            for aside in inbox.screen(self.paths.inbox, self.paths.quarantine, flow):  # before it can crash a claim
                report.quarantined.append((flow, aside.name, aside.code))
                trace.add_anomaly("quarantined-input", f"{flow} input set aside: {aside.code}: {aside.reason}", now,
                                  file=aside.name)
                self.log.error("inbox.quarantined", flow=flow, file=aside.name, code=aside.code, reason=aside.reason)
            faults.point("claim")
            batch, dups = inbox.claim(
                trace, inbox=self.paths.inbox, work=self.paths.work, consumed=self.paths.consumed, flow=flow,
                business_date=business_date, run_id=run_id, now=now,
                on_duplicate=partial(self._note_duplicate, trace, flow, now))
            for name in dups:
                report.duplicates.append((flow, name))
                self.log.warning("inbox.duplicate", flow=flow, file=name)
            # After the claim: what is left is what no night will take. Not an anomaly in the trace:
            # it would be noted again every night; `status` counts them from the folder instead.
            for entry in inbox.not_taken(self.paths.inbox, flow):
                report.not_taken.append((flow, entry.name, entry.reason))
                self.log.warning("inbox.not_taken", flow=flow, file=entry.name, reason=entry.reason)
            if batch is None and (flow, business_date) not in pending_flows and self._needs_empty(trace, flow,
                                                                                               business_date):
                batch_id = trace.create_batch(flow, business_date, run_id, now, [])
                inbox.finish_claim(trace, batch_id, inbox=self.paths.inbox, work=self.paths.work, flow=flow,
                                   now=now)
                batch = inbox.Batch(batch_id, flow, business_date, inbox.batch_dir(self.paths.work, batch_id, flow))
            if batch is not None:
                batches.append(batch)
        return batches

    def _empty_flow_departments(self, flow: str) -> list[Department]:
        return [d for d in self.settings.enabled_departments() if flow in d.flows and d.empty_flows]

    def _owes_empty(self, trace: TraceStore, flow: str, business_date: date) -> list[Department]:
        """The départements that get a "nothing today" file of `flow` for the day unless records come.

        Not one whose records of that day were kept while it was not enabled: this run's replay emits
        them as its file of the day. An empty file first said "nothing today" to a PMI, and the
        records followed in a second file of the same day.
        """
        day = business_date.isoformat()
        replayed = {row.department for row in trace.parked() if row.flow == flow and row.business_date == day}
        return [d for d in self._empty_flow_departments(flow)
                if d.code not in replayed and not trace.has_emission_on(flow, d.code, business_date)]

    @staticmethod
    def _note_duplicate(trace: TraceStore, flow: str, now: datetime, name: str) -> None:
        trace.add_anomaly("duplicate-input", f"{flow} input already consumed, set aside", now, file=name)

    def _needs_empty(self, trace: TraceStore, flow: str, business_date: date) -> bool:
        return bool(self._owes_empty(trace, flow, business_date))

    # -- parse, check, route, build, validate, seal, archive -------------------------------

    def _process_batch(self, trace: TraceStore, batch: inbox.Batch, run_id: int, report: NightReport) -> None:
        # File by file, the accepted records set aside per département (jobs/spill.py): the memory
        # holds one input's records and one département's, never the whole batch (a catch-up's days),
        # and at most a few MB of spilled records (beyond them, the spill is on disk).
        now = self.clock.now()
        with Spill(self.paths.work / f"batch-{batch.id:06d}", SPILL_MEMORY_BYTES) as spill:
            routed = self._routing(batch.flow, spill)
            self._parse_batch(trace, batch, run_id, routed, report, now)
            self._record_parked(trace, batch, routed, report, now)
            faults.point("spilled")
            complete = self._emit_batch(trace, batch, routed, spill, run_id, report)
        if complete and not self.stop.is_set():
            faults.point("batch-done")
            trace.set_batch_state(batch.id, "done", self.clock.now())
            inbox.retire_batch(self.paths.work, self.paths.consumed, batch.id, batch.business_date,
                               keep=lambda src: self._keep_later(src, batch))

    def _parsed(self, parsed: Callable[[], prepare.Parsed], job: prepare.ParseJob) -> prepare.Parsed:
        try:
            return parsed()
        except BrokenExecutor:  # its worker died (with another job, or killed): parsed here instead
            self.log.warning("parse.worker_lost", file=job.display_name)
            return prepare.parse(job)

    def _routing(self, flow: str, sink: Sink) -> _Routed:
        return _Routed({d.code: d for d in self.settings.enabled_departments() if flow in d.flows}, sink)

    def _parse_limits(self) -> ParseLimits:
        return ParseLimits(max_input_bytes=self.settings.limits.max_input_bytes,
                           max_pdf_bytes=self.settings.limits.max_pdf_bytes)

    def _parse_batch(self, trace: TraceStore, batch: inbox.Batch, run_id: int, routed: _Routed,
                     report: NightReport, now: datetime) -> None:
        """Parse, route and record each claimed input in turn; an unreadable input is quarantined."""
        flow = batch.flow
        parsing = self._primed.pop(batch.id, None) or self._start_parse(trace, batch)
        for row, job, parsed in zip(parsing.rows, parsing.jobs, parsing.results, strict=True):
            path = batch.dir / row.name
            faults.point("parse")
            try:
                result = self._parsed(parsed, job).unwrap()
            except (InputFileError, OSError) as error:  # OSError: unreadable since it was claimed
                exc = error if isinstance(error, InputFileError) else InputFileError(
                    row.name, None, f"cannot be read ({error.strerror})", "UNREADABLE")
                inbox.quarantine(path, self.paths.quarantine, flow, row.name, exc.code, str(exc))
                trace.quarantine_file(row.id, exc.code, str(exc))
                report.quarantined.append((flow, row.name, exc.code))
                self.log.error("inbox.quarantined", flow=flow, file=row.name, code=exc.code, reason=str(exc))
                continue
            found = self._route_batch(trace, batch, result.records, routed, now)
            found.rejects[:0] = [(r, None) for r in result.rejects]  # the parse's rejects first, as they were found
            self._record_rejects(trace, batch, run_id, found, routed, report, now)
        self._flush_rejects(trace, batch, run_id, routed, now)

    def _start_parse(self, trace: TraceStore, batch: inbox.Batch) -> _Parsing:
        """The batch's claimed inputs, their parse jobs, and their results to come (the first ones sent now)."""
        limits = self._parse_limits()
        rows = [row for row in trace.batch_files(batch.id) if row.kind == InboxKind.INPUT and row.state == InboxState.CLAIMED]
        jobs = [prepare.ParseJob(batch.flow, batch.dir / row.name, row.name, self.clock.today(), batch.dir, limits)
                for row in rows]
        return _Parsing(rows, jobs, self.workers.map(prepare.parse, jobs))

    def _prime_parse(self, trace: TraceStore, batch: inbox.Batch) -> None:
        """Start a batch's parse before its turn: parsing only reads its claimed inputs, and what it
        finds is recorded in turn, as if it had started then (a run stopped first drops it)."""
        if batch.id not in self._primed:
            self._primed[batch.id] = self._start_parse(trace, batch)

    def _route_batch(self, trace: TraceStore, batch: inbox.Batch, records: list[Any], routed: _Routed,
                     now: datetime) -> _Found:
        """Each record of one input to its département's spill, or to a reject (with the département when known)."""
        flow, found = batch.flow, _Found()
        refs = {id(r): trace.record_ref(r.key) for r in records}
        elsewhere = trace.refs_emitted_elsewhere(refs.values(), batch.id)
        # A DSG rectification is emitted again, not refused: trace it as such when its original was sent.
        originals = {id(r): trace.record_ref(r.original_key) for r in records
                     if isinstance(r, DsgRecord) and r.is_rectification}
        rectified = trace.refs_emitted_elsewhere(originals.values(), batch.id) if originals else set()
        for rec in records:
            dept, ref = _route(rec), refs[id(rec)]
            refusal = self._refusal(flow, dept, ref in elsewhere, ref in routed.seen, routed.enabled)
            if refusal is not None:
                found.rejects.append((Reject(flow, rec.source, *refusal), dept))
                if refusal[0] == "DEPARTMENT_NOT_ENABLED_KEPT":
                    routed.parked[dept or ""] += 1
                continue
            assert dept is not None
            routed.seen.add(ref)
            routed.spill.add(dept, rec)
            mismatch = _addressing_mismatch(rec, dept, routed.enabled[dept].siret)
            if mismatch:
                found.warnings.append((Reject(flow, rec.source, "ADDRESSING_MISMATCH", mismatch), dept))
            if originals.get(id(rec)) in rectified:
                trace.add_anomaly("dsg-rectification", "declaration emitted again as a rectification", now,
                                  department=dept, file=rec.source.file)
        return found

    def _refusal(self, flow: str, dept: str | None, emitted_before: bool, seen: bool,
                 enabled: dict[str, Department]) -> tuple[str, str] | None:
        """Why a record is not emitted tonight (code, value-free message), or None when it is."""
        if dept is None:
            return "COMMUNE_UNKNOWN", "no recipient runs PMI for this record's commune (or IDEPARTE)"
        if emitted_before:
            return "DUPLICATE", "record already emitted from an earlier input"
        if seen:
            return "DUPLICATE", "record appears twice in this batch"
        if dept not in enabled and dept in self.settings.departments:
            # Kept: the input is kept (encrypted) and enabling the flow later emits these records.
            return ("DEPARTMENT_NOT_ENABLED_KEPT",
                    f"département {dept} has no enabled {flow} flow: kept, emitted once it is enabled")
        if dept not in enabled:
            return "DEPARTMENT_NOT_ENABLED", f"département {dept} has no enabled {flow} flow"
        return None

    def _record_rejects(self, trace: TraceStore, batch: inbox.Batch, run_id: int, found: _Found, routed: _Routed,
                        report: NightReport, now: datetime) -> None:
        """Trace and log one input's warnings and rejects; the rejects per département go to the line."""
        flow = batch.flow
        # Info, not warning: each is a row of the rejects report (what the operator reads and sends
        # upstream) and of the trace; at warning, a national night would mail one line per record.
        for r, d in found.warnings:
            self.log.info("record.warning", flow=flow, file=r.source.file, line=r.source.line, code=r.code,
                          department=d, reason=r.message)
        routed.unwritten += [(r.flow, d, r.source.file, r.source.line, r.code, r.message)
                             for r, d in (*found.warnings, *found.rejects)]
        if len(routed.unwritten) >= REJECTS_PER_COMMIT:
            self._flush_rejects(trace, batch, run_id, routed, now)
        for r, d in found.rejects:
            self.log.info("record.rejected", flow=flow, file=r.source.file, line=r.source.line, code=r.code,
                          department=d, reason=r.message)
        # The summary's counts come from the rejects report (`_write_rejects_report`), not from here: a
        # rerun finds again what a killed run wrote, and a killed run's rows may reach only its successor.
        for _r, d in found.rejects:
            routed.rejects_by_dept[d or "---"] += 1  # "---": no département could be told

    @staticmethod
    def _flush_rejects(trace: TraceStore, batch: inbox.Batch, run_id: int, routed: _Routed, now: datetime) -> None:
        """The batch's reject rows so far, in one commit. Losing them to a crash loses nothing: the
        batch is still claimed, so the next run parses it again and writes them (never twice)."""
        rows, routed.unwritten = routed.unwritten, []
        trace.add_rejects(run_id, batch.id, rows, now)

    def _record_parked(self, trace: TraceStore, batch: inbox.Batch, routed: _Routed, report: NightReport,
                       now: datetime) -> None:
        """The batch's parked records, counted over all its inputs (a park is noted once per département)."""
        for code, n in sorted(routed.parked.items()):
            trace.park(batch.id, batch.flow, code, batch.business_date, n, now)
            report.parked += n

    def _emit_batch(self, trace: TraceStore, batch: inbox.Batch, routed: _Routed, spill: Spill, run_id: int,
                    report: NightReport) -> bool:
        """Emit for every target département; False when one is left undone (the batch stays open).

        The départements' files are built, validated and sealed by the run's workers (jobs/prepare.py),
        in parallel, each from its spill; each is then recorded here, in département order, as it
        would have been built here.
        """
        flow = batch.flow
        existing: dict[str, list[Emission]] = defaultdict(list)
        for e in trace.emissions_of_batch(batch.id):
            existing[e.department].append(e)
        targets = spill.departments() | set(existing)
        targets |= {d.code for d in self._owes_empty(trace, flow, batch.business_date)}
        out_dir = self._run_out_dir(batch, run_id)
        jobs: list[prepare.BuildJob] = []
        for code in sorted(targets):
            if existing[code] and all(e.archived_at for e in existing[code]):
                continue  # archived by an earlier, interrupted run: only delivery is left
            jobs.append(self._build_job(trace, batch, routed.enabled[code], spill.source(code), existing[code],
                                        out_dir))
        complete = True
        results = self.workers.map(prepare.prepare, jobs, self.settings.sender)
        assert isinstance(results, Generator)
        try:
            for job, result in zip(jobs, results, strict=True):
                if self.stop.is_set():
                    return False
                code = job.header.department
                try:
                    complete &= self._emit(trace, batch, routed.enabled[code], job, result,
                                           routed.rejects_by_dept.get(code, 0), run_id, report)
                finally:
                    spill.discard(code)
        finally:
            results.close()  # what was not recorded is cancelled; its files go with the folder
            shutil.rmtree(out_dir, ignore_errors=True)
        return complete

    def _emit_one(self, trace: TraceStore, batch: inbox.Batch, dept: Department, records: list[Any], run_id: int,
                  report: NightReport) -> bool:
        """Emit one département's records of a batch, here (the replay of parked records)."""
        existing = [e for e in trace.emissions_of_batch(batch.id) if e.department == dept.code]
        out_dir = self._run_out_dir(batch, run_id)
        try:
            job = self._build_job(trace, batch, dept, records, existing, out_dir)
            return self._emit(trace, batch, dept, job, lambda: prepare.prepare(job, self.settings.sender), 0, run_id,
                              report)
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)

    def _run_out_dir(self, batch: inbox.Batch, run_id: int) -> Path:
        """This run's own folder for the batch's files; earlier runs' leftovers (plaintext) removed."""
        out = private_dir(self.paths.work / f"batch-{batch.id:06d}" / "out")
        for old in out.iterdir():
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
        return private_dir(out / f"run-{run_id:06d}")

    def _build_job(self, trace: TraceStore, batch: inbox.Batch, dept: Department, records: SpillSource,
                   existing: list[Emission], out_dir: Path) -> prepare.BuildJob:
        now = self.clock.now()
        header = FlowHeader(flow=batch.flow, department=dept.code, numorg=dept.numorg[0], siret=dept.siret,
                            business_date=batch.business_date, created_at=now)
        # A rebuild gets the numbers an interrupted run allocated; new parts the next ones, in a row.
        seqs = prepare.SeqPlan(tuple(sorted((e.part, e.seq) for e in existing)),
                               trace.peek_next_seq(batch.flow, dept.code))
        assert dept.certificate is not None
        return prepare.BuildJob(header=header, records=records, out_dir=out_dir,
                                max_bytes=self.settings.limits.max_file_bytes, seqs=seqs,
                                recipient_certificate=dept.certificate, now=now)

    def _emit(self, trace: TraceStore, batch: inbox.Batch, dept: Department, job: prepare.BuildJob,
              result: Callable[[], prepare.Prepared], rejects: int, run_id: int, report: NightReport) -> bool:
        """Record, archive and trace the emission(s) of one département. False if one is left undone."""
        flow = batch.flow
        prepared: prepare.Prepared | None = None
        try:
            faults.point("build")
            prepared = result()
            if prepared.error is not None:
                raise prepared.error
            return self._record_prepared(trace, batch, dept, prepared.parts, rejects, run_id,
                                         report.lines[(flow, dept.code)], report)
        except (OSError, BrokenExecutor) as exc:  # a full disk, say: this département waits, the others go on
            # A worker process that died (killed, out of memory) breaks the pool: what it held waits too.
            why = ("a worker process died" if isinstance(exc, BrokenExecutor)
                   else (exc.strerror or str(exc)) + (self._folder_of(exc.filename) or self._full_folders(exc)))
            report.problems.append(f"{flow} {dept.code}: cannot build: {why}")
            report.unbuilt += 1
            self.log.error("emission.build_failed", flow=flow, department=dept.code, error=why)
            return False
        finally:
            if prepared is not None:
                prepare.discard(prepared.parts)  # the sealed copies not taken by the archive

    _WRITTEN = ("archive", "work", "consumed", "reports", "quarantine")
    _NEARLY_FULL = 1 << 20

    def _full_folders(self, exc: OSError) -> str:
        """For a full disk met by a write (which names no file): which of our folders are on a full
        volume, as " (the archive folder /srv/... has 12 KiB free)", so the operator knows where to look."""
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            return ""
        full = []
        for label in self._WRITTEN:
            folder = getattr(self.paths, label)
            try:
                free = shutil.disk_usage(folder).free
            except OSError:
                continue
            if free < self._NEARLY_FULL:
                full.append(f"the {label} folder {folder} has {free // 1024} KiB free")
        return f" ({'; '.join(full)})" if full else ""

    def _folder_of(self, filename: object) -> str:
        """Which configured folder a failing path is in, as " (in the archive folder /srv/...)": a full
        disk is one folder's. Never the path itself, whose name may come from upstream."""
        if not isinstance(filename, str | bytes | os.PathLike):
            return ""
        path = Path(os.fsdecode(filename))
        for label in self._WRITTEN:
            folder = getattr(self.paths, label)
            if path == folder or folder in path.parents:
                return f" (in the {label} folder {folder})"
        return ""

    def _record_prepared(self, trace: TraceStore, batch: inbox.Batch, dept: Department,
                         parts: list[prepare.PreparedPart], rejects: int, run_id: int, line: LineSummary,
                         report: NightReport) -> bool:
        flow, now = batch.flow, self.clock.now()
        done = LineSummary()
        ok = True
        archived: list[int] = []
        # One commit for the département's emissions, once their files are archived (a crash before
        # it rebuilds them with the same sequence numbers): not one per emission and per state.
        with trace.group():
            rows: dict[int, Emission] = {}
            for part in parts:
                rows[part.part] = trace.get_or_create_emission(batch.id, flow, dept.code, batch.business_date,
                                                               part.part, now)
                if rows[part.part].seq != part.seq:  # the plan and the trace disagree: a bug, never a data problem
                    raise RuntimeError(f"{flow} {dept.code}: part {part.part} built as seq {part.seq}, "
                                       f"the trace allocated {rows[part.part].seq}")
            for part in parts:
                row = rows[part.part]
                if row.archived_at:
                    continue
                try:
                    self._archive_part(trace, row, part, dept, len(parts), rejects if part.part == 1 else 0, run_id)
                    archived.append(row.id)
                    done.records += len(part.record_keys)
                    done.files += 1
                    done.bytes += part.size
                except prepare.Unsealed as exc:
                    ok = False
                    trace.transition(row.id, Status.BUILD_FAILED, self.clock.now(), run_id=run_id,
                                     last_error=str(exc)[:500])
                    report.problems.append(f"{flow} {dept.code}: {exc}")
                    self.log.error("emission.failed", flow=flow, department=dept.code, seq=row.seq, error=str(exc))
            # The files delivered meanwhile, in the same commit: one per département, not two. Last,
            # so that an archive that fails (a full disk) leaves them to the next commit, not undone.
            self._drain()
        line.records += done.records
        line.files += done.files
        line.bytes += done.bytes
        self._offer([trace.emission(i) for i in archived])  # committed: may be sent now
        return ok

    def _archive_part(self, trace: TraceStore, row: Emission, part: prepare.PreparedPart, dept: Department,
                      nparts: int, rejects: int, run_id: int) -> None:
        if row.status != Status.BUILT:
            trace.transition(row.id, Status.BUILT, self.clock.now(), run_id=run_id, detail="rebuilt")
        if part.error is not None:
            raise prepare.Unsealed(part.error)
        faults.point("validated")
        sealed_at = self.clock.now()
        faults.point("sealed")
        assert part.sealed is not None and part.archive_copy is not None
        name = emission_name(row.flow, dept.code, date.fromisoformat(row.business_date), row.seq, part.part, nparts)
        self.archive.adopt(date.fromisoformat(row.business_date), name, part.sealed, part.archive_copy)
        faults.point("archived-file")
        with trace.group():  # sealed and archived in one commit, once the files are on disk
            trace.transition(row.id, Status.SEALED, sealed_at, run_id=run_id)
            trace.mark_archived(
                row.id, self.clock.now(), file_name=name, size=part.size, sha256=part.sha256,
                records=[(k, r, workdays.deadlines(r, dept.code)) for k, r in zip(part.record_keys, part.received,
                                                                                 strict=True)],
                rejects_count=rejects, run_id=run_id,
                recipient_cert_sha256=certs.cert_fingerprint(self._recipient_cert(dept)))
        faults.point("archived")
        self.log.info("emission.archived", flow=row.flow, department=dept.code, seq=row.seq, file=name,
                      records=len(part.record_keys))

    # -- consumed input, kept encrypted; parked records -------------------------------------

    def _encrypt_for_archive(self, data: bytes) -> bytes:
        return cms.envelope(data, self.archive_cert)

    def _decrypt_from_archive(self, data: bytes) -> bytes:
        s = self.settings.sender
        key = certs.load_private_key(s.archive_key, s.archive_key_passphrase)
        return cms.decrypt_envelope(data, cert=self.archive_cert, key=key, what="kept consumed input")

    def _keep_consumed(self, src: Path, batch_id: int, business_date: date) -> None:
        consumed_store.keep(src, self.paths.consumed, batch_id, business_date, self._encrypt_for_archive)

    def _keep_later(self, src: Path, batch: inbox.Batch) -> None:
        """Keep a done batch's input encrypted, in a worker when there are some (see `_await_kept`)."""
        job = prepare.KeepJob(src, self.paths.consumed, batch.id, batch.business_date,
                              self.settings.sender.archive_certificate)
        self._keeping.append((job, self.workers.later(prepare.keep_input, job)))

    def _await_kept(self) -> None:
        """Wait for the kept inputs under way. One whose worker died is kept here instead.

        Its batch is done in the trace already: were this run to stop first, the next one would
        find the plaintext folder and keep it (`_secure_consumed`), as after a crash.
        """
        keeping, self._keeping = self._keeping, []
        for job, kept in keeping:
            try:
                kept()
            except BrokenExecutor:
                self.log.warning("consumed.worker_lost", batch=job.batch_id)
                self._keep_consumed(job.src, job.batch_id, job.business_date)

    def _secure_consumed(self, trace: TraceStore) -> None:
        """Nothing consumed stays in clear: finish a retirement a crash interrupted, encrypt old leftovers."""
        done = {r.id: r for r in trace.done_batches()}
        for folder in sorted(self.paths.work.glob("batch-*")):
            try:
                batch_id = int(folder.name.removeprefix("batch-"))
            except ValueError:
                continue
            if batch_id in done:
                self._keep_consumed(folder, batch_id, date.fromisoformat(done[batch_id].business_date))
        for folder in sorted(self.paths.work.glob("replay-*")):
            shutil.rmtree(folder, ignore_errors=True)  # a replay killed midway: its plaintext goes
        consumed_store.seal_plaintext_leftovers(self.paths.consumed, self._encrypt_for_archive)

    def _replay_parked(self, trace: TraceStore, run_id: int, report: NightReport) -> None:
        """Emit the parked records of départements enabled since, from their kept input, exactly once."""
        for row in trace.parked():
            dept = self.settings.departments.get(row.department)
            if dept is None or not dept.enabled or row.flow not in dept.flows:
                continue
            if self.stop.is_set():
                return
            self._replay_one(trace, row, dept, run_id, report)

    def _replay_one(self, trace: TraceStore, row: Any, dept: Department, run_id: int, report: NightReport) -> None:
        batch_id, flow, now = row.batch_id, row.flow, self.clock.now()
        where = f"{flow} {dept.code} (kept input of batch {batch_id})"
        work = self.paths.work / f"replay-{batch_id:06d}"
        try:
            consumed_store.restore(self.paths.consumed, batch_id, work, self._decrypt_from_archive)
            folder = work / flow
            todo = self._not_yet_emitted(trace, flow, dept.code, folder)
            ok = True
            if todo:
                batch = inbox.Batch(batch_id, flow, date.fromisoformat(row.business_date), folder)
                ok = self._emit_one(trace, batch, dept, todo, run_id, report)
                shutil.rmtree(self.paths.work / f"batch-{batch_id:06d}", ignore_errors=True)  # its `out/`
            if ok:
                trace.close_parked(row.id, self.clock.now(), ParkedState.EMITTED, len(todo))
                report.replayed += len(todo)
                self.log.info("parked.emitted", flow=flow, department=dept.code, batch=batch_id, records=len(todo))
        except (FluxError, OSError) as exc:
            if isinstance(exc, consumed_store.KeptInputMissing):
                trace.close_parked(row.id, now, ParkedState.LOST, 0)
            report.problems.append(f"{where}: not emitted: {exc}")
            self.log.error("parked.failed", flow=flow, department=dept.code, batch=batch_id, error=str(exc))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _not_yet_emitted(self, trace: TraceStore, flow: str, dept: str, folder: Path) -> list[Any]:
        """The records of a restored kept input that route to `dept` and were never emitted, in input order."""
        limits, records = self._parse_limits(), []
        inputs = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink()
                        and p.name.lower().endswith(inbox.PATTERNS[flow])) if folder.is_dir() else []
        for path in inputs:
            try:
                records.extend(parse_file(flow, path, display_name=path.name, today=self.clock.today(),
                                          inbox_root=folder, limits=limits).records)
            except InputFileError:
                continue  # quarantined the first time: never part of the kept batch's records
        mine = [r for r in records if _route(r) == dept]
        refs = {id(r): trace.record_ref(r.key) for r in mine}
        emitted = trace.refs_emitted(refs.values())
        todo, seen = [], set()
        for r in sorted(mine, key=lambda r: (r.source.file, r.source.line)):
            if refs[id(r)] not in emitted and refs[id(r)] not in seen:
                seen.add(refs[id(r)])
                todo.append(r)
        return todo

    def _unarchived(self, trace: TraceStore) -> int:
        return trace.unarchived_count()

    # -- rejects report ----------------------------------------------------------------------

    def _write_rejects_report(self, trace: TraceStore, run_id: int, report: NightReport) -> None:
        """Every reject not reported yet goes in this run's report, and the summary counts them from it."""
        rows = trace.unreported_rejects()
        if not rows:
            return
        path = self.paths.reports / f"rejects-{report.business_date:%Y%m%d}-run{run_id:06d}.csv"
        report.rejects_report = rejects_report.write(path, [astuple(r) for r in rows])
        trace.mark_rejects_reported(run_id, self.clock.now())
        for r in rows:
            if r.code not in rejects_report.WARNING_CODES:
                report.lines[(r.flow, r.department or "---")].rejects += 1  # "---": no département could be told

    # -- deliver ---------------------------------------------------------------------------

    def deliver(self, trace: TraceStore, run_id: int, report: NightReport, *,
                only: Collection[int] | None = None) -> None:
        """Deliver what is due (jobs/deliver.py) and tally it into the night's report."""
        self._tally(self.deliverer.deliver(trace, run_id, only=only, transports=self._transports), report)

    @staticmethod
    def _tally(done: DeliveryReport, report: NightReport) -> None:
        for code, n in done.held.items():
            report.held[code] = report.held.get(code, 0) + n
        for e in done.delivered:
            report.lines[(e.flow, e.department)].delivered += 1
        for e in [*done.not_delivered, *done.waiting]:
            report.lines[(e.flow, e.department)].pending += 1
        report.problems.extend(done.problems)
        for e in done.resealed:
            report.resealed[e.department] = report.resealed.get(e.department, 0) + 1
        report.earlier_seal += [e.file_name or "" for e in done.earlier_seal]


def _disabled(settings: Settings, codes: Collection[str]) -> Settings:
    """These départements, as if not enabled, for one run or one step of it."""
    if not codes:
        return settings
    return dataclasses.replace(settings, departments={
        c: dataclasses.replace(d, enabled=False) if c in codes else d for c, d in settings.departments.items()})


def _route(rec: Any) -> str | None:
    """The recipient's registry code: SGR from the real index on IDEPARTE, the rest on the commune."""
    if isinstance(rec, SgrRecord) and rec.idepart:
        return recipient_of_idepart(rec.idepart)
    return recipient_of_commune(rec.commune_code)


def _addressing_mismatch(rec: Any, dept: str, siret: str | None) -> str | None:
    """A value-free message when the upstream file addressed the record elsewhere than its route."""
    if isinstance(rec, DsgRecord):
        if rec.addressed_to and rec.addressed_to != dept:
            return f"the envelope's Recepteur names another département than {dept}, where the commune routes"
        if rec.addressed_siret and siret and rec.addressed_siret != siret:
            return f"the envelope's Recepteur SIRET is not that of {dept}, where the commune routes"
    elif isinstance(rec, GroRecord) and rec.idepart and rec.idepart != dept:
        return f"the case's IDEPARTE names another département than {dept}, where the commune routes"
    return None
