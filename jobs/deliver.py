"""Delivering archived emissions: the night's last step, and a re-emission request's only one.

Split out of the night so that a re-emission request delivers its copies through the same
code without importing the night. The rules it keeps:
- départements are served in parallel (`[delivery] parallel`), each by its own transport;
  a run builds each département's transport once (`TransportPool`): the night's ack collection
  and its delivery share it, so a partner sees one connection per run, not one per step;
  within one département the files go in sequence order, one at a time, and a failure stops
  that département's queue, so that no gap in its sequence is ever created;
- a transient transport failure is retried (`[delivery] attempts`), with exponential backoff
  (`backoff_seconds`, capped at `backoff_max_seconds`) and a random jitter, so that partners
  failing together are not retried in lockstep; a permanent one is not retried;
- only this module's calling thread writes to the trace: the workers move bytes and report;
- a held département's files wait for its resume: no connection is opened to it. A hold placed
  while the run delivers (`flux-pmi hold` is another process) is read again before each file: the
  file already being sent finishes, the département's next ones wait as if held from the start;
- every delivered file is logged once, here, as `emission.delivered` (whatever the transport),
  and a final failure as an error; the workers run in a copy of the caller's logging context,
  so their events carry the run's id too.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from ..archive import ArchiveStore
from ..config.settings import DeliveryPolicy, Department, Settings
from ..core.clock import Clock
from ..core.errors import FluxError, TransportError
from ..core.fsutil import atomic_write
from ..core.log import get as get_logger
from ..seal import cms
from ..testing import faults
from ..trace.lifecycle import Status
from ..trace.store import Emission, HoldWatch, TraceStore
from ..transport.base import Delivery, Receipt, Transport
from ..transport.registry import transport_for
from . import guards
from .sealkeys import SealKeys

__all__ = ["JITTER", "Deliverer", "DeliveryReport", "TransportPool", "retry_wait"]

# The random part of each wait, as a share of `backoff_seconds`, added to the exponential part.
JITTER = 0.5


class TransportPool:
    """The transports of one run, one per département, built on first use and closed together.

    Called like a transport factory, so the ack collection and the delivery take it where they
    took the factory; they leave closing to its owner. A département's transport is only ever used
    by one thread at a time (an ack worker, then the calling thread, then one delivery worker), so
    a kept SFTP session is never shared by two threads at once. A session that died while the run
    was building is replaced by the transport's own reconnection.
    """

    def __init__(self, factory: Callable[[Settings, Department], Transport] = transport_for):
        self.factory = factory
        self._by_department: dict[str, Transport] = {}
        self._lock = threading.Lock()  # the ack workers ask for their transports in parallel

    def __call__(self, settings: Settings, dept: Department) -> Transport:
        with self._lock:
            transport = self._by_department.get(dept.code)
            if transport is None:  # a factory's error is not kept: the next step tries again
                transport = self._by_department[dept.code] = self.factory(settings, dept)
            return transport

    def close(self) -> None:
        with self._lock:
            transports, self._by_department = list(self._by_department.values()), {}
        for t in {id(t): t for t in transports}.values():
            try:
                t.close()
            except Exception as exc:  # closing must not hide what the run did
                get_logger("flux-pmi.night").warning("transport.close_failed", department=getattr(t, "department", None),
                                                     error=type(exc).__name__)


@dataclass
class DeliveryReport:
    """What one delivery pass did; the caller tallies it into its own report."""

    delivered: list[Emission] = field(default_factory=list)
    not_delivered: list[Emission] = field(default_factory=list)  # tried and failed: the next run retries
    # Not tried: their transport unusable or département not enabled, behind a failed file of their
    # département's queue (no gap), or not reached before a stop.
    waiting: list[Emission] = field(default_factory=list)
    held: dict[str, int] = field(default_factory=dict)  # held département -> files waiting for its resume
    problems: list[str] = field(default_factory=list)  # operator-facing, no personal data
    resealed: list[Emission] = field(default_factory=list)  # sealed again: the département's certificate changed
    # Found at the partner as sealed for its former certificate (delivered before a crash kept it out
    # of the trace): counted delivered, not sent again; its PMI needs its former key for it.
    earlier_seal: list[Emission] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One file's delivery, as a worker reports it to the thread that writes the trace."""

    emission: Emission
    error: str | None
    attempts: int
    reference: str
    seconds: float = 0.0
    earlier_sha256: str = ""  # the partner held an earlier seal of it (Receipt.earlier_sha256)


def retry_wait(policy: DeliveryPolicy) -> Callable[[RetryCallState], float]:
    """backoff_seconds * 2^(n-1), at most backoff_max_seconds, plus up to JITTER * backoff_seconds."""
    return wait_exponential(multiplier=policy.backoff_seconds, max=policy.backoff_max_seconds) + wait_random(
        0, policy.backoff_seconds * JITTER
    )


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, TransportError) and not exc.permanent


class Deliverer:
    def __init__(self, settings: Settings, *, archive: ArchiveStore | None = None, clock: Clock | None = None,
                 transport_factory: Callable[[Settings, Department], Transport] = transport_for,
                 stop: threading.Event | None = None, sleep: Callable[[float], object] = time.sleep,
                 progress: Callable[[str], None] | None = None):
        self.settings = settings
        self.archive = archive or ArchiveStore(settings.paths.archive)
        self.clock = clock or Clock()
        self.transport_factory = transport_factory
        self.stop = stop or threading.Event()
        self.sleep = sleep
        self.progress = progress or (lambda _msg: None)
        self.log = get_logger("flux-pmi.night")
        self._keys = SealKeys(settings)
        self._shared: dict[str, str] | None = None  # départements whose key is another SIRET's (guards)
        # Emission id -> its superseded seals (sha256, size): set on the trace's thread before the
        # emission is queued, read by its worker (the queue's lock orders the two).
        self._earlier: dict[int, tuple[tuple[str, int], ...]] = {}

    def deliver(self, trace: TraceStore, run_id: int, *, only: Collection[int] | None = None,
                transports: TransportPool | None = None) -> DeliveryReport:
        """Deliver every archived emission not yet delivered (night, re-emissions, retries).

        `only`: these emission ids and nothing else (a re-emission request sends what it asked
        for; the rest waits for the night). `transports`: the run's pool, which its owner closes;
        without one, the transports opened here are closed before returning.
        """
        pool = transports or TransportPool(self.transport_factory)
        try:
            session = self.session(trace, run_id, pool)
            return session.finish(only)
        finally:
            if transports is None:
                pool.close()

    def session(self, trace: TraceStore, run_id: int, pool: TransportPool) -> DeliverySession:
        """A delivery that takes files as they are archived (`offer`) while the caller builds the next."""
        return DeliverySession(self, trace, run_id, pool)

    # -- on the calling thread: choose, open, record ---------------------------------------------

    def _held(self, trace: TraceStore, pending: list[Emission], report: DeliveryReport) -> list[Emission]:
        """The files of held départements counted (they wait for the resume); the others."""
        held = trace.active_holds()
        for e in pending:
            if e.department in held:
                report.held[e.department] = report.held.get(e.department, 0) + 1
        return [e for e in pending if e.department not in held]

    def _open(self, code: str, emissions: list[Emission], report: DeliveryReport,
              pool: TransportPool) -> Transport | str | None:
        """The département's transport; else why not: an error (its files fail) or None (not enabled)."""
        dept = self.settings.departments.get(code)
        if dept is None or not dept.enabled:
            report.problems.append(f"département {code} has emissions to deliver but is not enabled")
            return None
        if self._shared is None:
            self._shared = guards.shared_recipient_keys(self.settings)
        if code in self._shared:  # a copied certificate line: its files would be re-sealed for another PMI
            report.problems.append(f"département {code}: {self._shared[code]}: its files wait")
            return None
        try:
            return pool(self.settings, dept)
        except FluxError as exc:  # one partner's broken setup must not stop the others
            report.problems.append(f"département {code}: transport unusable: {exc}")
            self.log.error("transport.unusable", department=code, files=len(emissions), error=str(exc))
            return str(exc)

    def _unusable(self, trace: TraceStore, run_id: int, emissions: list[Emission], error: str) -> None:
        for e in emissions:
            trace.transition(e.id, Status.DELIVERY_FAILED, self.clock.now(), run_id=run_id, last_error=error[:500])

    def _sealed_for_now(self, trace: TraceStore, run_id: int, code: str, emissions: list[Emission],
                        report: DeliveryReport) -> list[Emission]:
        """The département's files to send, each sealed for its current certificate; cut at one that cannot be.

        A département renews its certificate while files wait for it (held during its migration, its
        partner down): they were sent as sealed, for the old key, and its PMI could not open them. Each
        is sealed again from the archive's copy first (the same signed bytes, as a re-emission does).
        One that cannot be (the archive key unreadable, the new certificate refused) fails, and the
        files after it wait: no gap in the département's sequence.
        """
        out: list[Emission] = []
        for e in emissions:
            try:
                cert, fingerprint = self._keys.recipient(code)
                if e.recipient_cert_sha256 in (None, fingerprint):
                    out.append(e)
                    continue
                out.append(self._reseal(trace, run_id, e, cert, fingerprint))
                report.resealed.append(out[-1])
            except (FluxError, OSError) as exc:
                why = f"not re-sealed for the département's current certificate: {exc}"
                self._unusable(trace, run_id, [e], why)
                report.not_delivered.append(e)
                report.problems.append(f"{e.flow} {e.department} seq {e.seq}: {why}")
                self.log.error("emission.reseal_failed", flow=e.flow, department=e.department, seq=e.seq,
                               file=e.file_name, error=str(exc))
                break
        self._earlier.update(trace.superseded_seals(e.id for e in out))
        return out

    def _reseal(self, trace: TraceStore, run_id: int, e: Emission, cert: Any, fingerprint: str) -> Emission:
        """`e` sealed again for `cert`: the archive's delivered copy replaced first, then the trace told."""
        day, name, now = date.fromisoformat(e.business_date), e.file_name or "", self.clock.now()
        archive_cert, archive_key = self._keys.archive()
        sealed = cms.reseal_from_archive(self.archive.get_archive_copy(day, name), archive_cert=archive_cert,
                                         archive_key=archive_key, recipient_cert=cert, now=now)
        # The copy the trace knows may be at the partner already (a delivery a crash kept out of the
        # trace): kept, and its digest with it (mark_resealed), until the emission is delivered.
        self.archive.keep_superseded(day, name, e.sha256 or "")
        # A crash between the two leaves the old fingerprint traced: the next run seals it again.
        atomic_write(self.archive.sealed_path(day, name), sealed)
        digest = hashlib.sha256(sealed).hexdigest()
        trace.mark_resealed(e.id, now, size=len(sealed), sha256=digest, recipient_cert_sha256=fingerprint,
                            run_id=run_id)
        self.log.warning("emission.resealed", flow=e.flow, department=e.department, seq=e.seq, file=name,
                         reason="the département's certificate changed since the file was built")
        return dataclasses.replace(e, size=len(sealed), sha256=digest, recipient_cert_sha256=fingerprint)

    def _record_one(self, trace: TraceStore, run_id: int, outcome: _Outcome, transports: dict[str, Transport],
                    total: int, report: DeliveryReport) -> None:
        self._record(trace, run_id, outcome, transports[outcome.emission.department].name, report)
        e = outcome.emission
        if outcome.error is None:
            self.progress(f"{e.flow} {e.department}: {len(report.delivered)}/{total} files delivered")
        else:
            self.progress(f"{e.flow} {e.department}: seq {e.seq} not delivered")

    def _record(self, trace: TraceStore, run_id: int, outcome: _Outcome, transport: str,
                report: DeliveryReport) -> None:
        e, now = outcome.emission, self.clock.now()
        attempts = e.attempts + outcome.attempts
        if outcome.error is None:
            e = self._settle_seal(trace, run_id, e, outcome.earlier_sha256, now)
            if outcome.earlier_sha256:
                report.earlier_seal.append(e)
            trace.transition(e.id, Status.DELIVERED, now, run_id=run_id, attempts=attempts, transport=transport,
                             last_error=None, transport_ref=outcome.reference or None)
            faults.point("delivered-traced")
            self._stamp_transmission(e, now)
            report.delivered.append(e)
            self.log.info("emission.delivered", flow=e.flow, department=e.department, seq=e.seq, file=e.file_name,
                          bytes=e.size, seconds=round(outcome.seconds, 3), transport=transport,
                          attempts=outcome.attempts)
        else:
            trace.transition(e.id, Status.DELIVERY_FAILED, now, run_id=run_id, attempts=attempts,
                             last_error=outcome.error[:500])
            report.not_delivered.append(e)
            report.problems.append(f"{e.flow} {e.department} seq {e.seq}: {outcome.error}")
            self.log.error("emission.delivery_failed", flow=e.flow, department=e.department, seq=e.seq,
                           file=e.file_name, transport=transport, attempts=outcome.attempts, error=outcome.error)

    def _settle_seal(self, trace: TraceStore, run_id: int, e: Emission, earlier_sha256: str, now: datetime) -> Emission:
        """A re-sealed emission, delivered: which of its seals the partner holds becomes the archived one.

        The partner holding an earlier seal means a delivery before the re-seal reached it and a crash
        kept it out of the trace: it is not sent twice. Its PMI opens it with the key it had then; if it
        no longer can, it acks it KO, and a re-emission (by hand, or `reemit_on_ko`) is sealed for the new one.
        """
        if e.id not in self._earlier:
            return e
        del self._earlier[e.id]
        day, name = date.fromisoformat(e.business_date), e.file_name or ""
        if not earlier_sha256:
            self.archive.drop_superseded(day, name)
            return e
        self.archive.restore_superseded(day, name, earlier_sha256)
        trace.restore_seal(e.id, now, sha256=earlier_sha256, run_id=run_id)
        self.log.warning("emission.delivered_earlier_seal", flow=e.flow, department=e.department, seq=e.seq,
                         file=name, message="the partner already held this file, sealed for the certificate it had "
                         "before (delivered before a crash kept it out of the trace): not sent again")
        restored = trace.emission(e.id)
        return restored if restored is not None else e

    def _stamp_transmission(self, emission: Emission, now: datetime) -> None:
        """The archived files' mtime becomes their last transmission: the purge of files whose trace
        rows are already gone (archive_months > trace_months) counts from it."""
        day = date.fromisoformat(emission.business_date)
        for path in (self.archive.sealed_path(day, emission.file_name or ""),
                     self.archive.archive_copy_path(day, emission.file_name or "")):
            try:
                os.utime(path, (now.timestamp(), now.timestamp()))
            except OSError:
                pass  # only a date for the purge: never a reason to fail a delivery that happened

    def _pause(self, seconds: float) -> None:
        self.sleep(seconds)  # `stop.wait` also says whether it was set: only the pause matters here

    # -- on a worker thread: one département's queue ---------------------------------------------

    def _send(self, transport: Transport, e: Emission) -> _Outcome:
        """One file, retried on transient failures; the outcome says how many attempts it took."""
        policy = self.settings.delivery
        day, name = date.fromisoformat(e.business_date), e.file_name or ""
        earlier = self._earlier.get(e.id, ())
        kept = tuple(path if path.is_file() else None
                     for path in (self.archive.superseded_path(day, name, d) for d, _size in earlier))
        item = Delivery(e.department, e.flow, name, self.archive.sealed_path(day, name), e.size or 0, e.sha256 or "",
                        earlier, kept)
        attempts, started = 0, time.monotonic()

        def attempt() -> Receipt:
            nonlocal attempts
            attempts += 1
            faults.point("deliver")
            receipt = transport.deliver(item)
            faults.point("delivered")
            return receipt

        def warn_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.log.warning("deliver.retry", department=e.department, file=item.file_name,
                             attempt=state.attempt_number, error=str(exc))

        retrying = Retrying(stop=stop_after_attempt(policy.attempts), wait=retry_wait(policy),
                            retry=retry_if_exception(_transient), sleep=self._pause, before_sleep=warn_retry,
                            reraise=True)
        try:
            receipt = retrying(attempt)
        except TransportError as exc:
            return _Outcome(e, str(exc), attempts, "")
        except FluxError as exc:
            return _Outcome(e, str(exc), attempts, "")
        return _Outcome(e, None, attempts, receipt.reference, time.monotonic() - started, receipt.earlier_sha256)


class DeliverySession:
    """One delivery pass that can start before every file is archived.

    The night offers each département's files as soon as they are archived and goes on building
    the next ones; `finish` offers whatever else is due and waits. The rules stay those of the
    module: one worker at a time per département, its files in the order offered (sequence order:
    the trace lists them so), a failure stops that département's queue for the run, only the
    calling thread writes the trace (`drain`, `finish`). Before each file a worker asks whether its
    département was held meanwhile (`HoldWatch`, its own read of the trace): if so the file and the
    rest of its queue wait, counted as held, and no other file of it is taken by this session.
    """

    def __init__(self, deliverer: Deliverer, trace: TraceStore, run_id: int, pool: TransportPool):
        self.d, self.trace, self.run_id, self.pool = deliverer, trace, run_id, pool
        self.report = DeliveryReport()
        self._queues: dict[str, list[Emission]] = defaultdict(list)  # guarded by _lock
        self._active: set[str] = set()  # départements with a worker running: guarded by _lock
        self._stopped: set[str] = set()  # a failure stopped their queue: guarded by _lock
        self._cut: set[str] = set()  # a file could not be re-sealed: nothing more queued (calling thread only)
        self._held_meanwhile: set[str] = set()  # held since the session began: guarded by _lock
        self._watch = HoldWatch(trace.path)  # the workers' own read of the holds
        self._lock = threading.Lock()
        self._transports: dict[str, Transport] = {}
        self._unusable: dict[str, str | None] = {}  # why not: an error, or None (not enabled)
        self._held = trace.active_holds()  # read again by each `offer_due`
        self._offered: list[Emission] = []
        self._offered_ids: set[int] = set()
        self._results: queue.Queue[_Outcome | None] = queue.Queue()
        self._running = 0  # workers started and not yet reported done (the calling thread's count)
        self._futures: list[Future[None]] = []
        self._executor = ThreadPoolExecutor(max_workers=max(1, deliverer.settings.delivery.parallel),
                                            thread_name_prefix="deliver")

    def offer(self, emissions: list[Emission]) -> None:
        """Queue these archived files (those not offered yet), starting their départements' workers.

        A held département's files are not taken: they wait for its resume (`finish` counts them).
        """
        with self._lock:
            held = self._held.keys() | self._held_meanwhile
        fresh = [e for e in emissions if e.id not in self._offered_ids and e.department not in held]
        if not fresh:
            return
        by_dept: dict[str, list[Emission]] = defaultdict(list)
        for e in fresh:
            by_dept[e.department].append(e)
            self._offered_ids.add(e.id)
            self._offered.append(e)
        for code in sorted(by_dept):
            if code not in self._transports and code not in self._unusable:
                opened = self.d._open(code, by_dept[code], self.report, self.pool)
                if opened is None or isinstance(opened, str):
                    self._unusable[code] = opened
                else:
                    self._transports[code] = opened
            if code in self._unusable:
                error = self._unusable[code]
                if error is not None:  # a broken transport: its files failed (not enabled: they wait)
                    self.d._unusable(self.trace, self.run_id, by_dept[code], error)
                continue
            # Queued only up to a file that could not be sealed for the current certificate; none after it
            # this run (the files before it still go: they leave no gap).
            todo = ([] if code in self._cut
                    else self.d._sealed_for_now(self.trace, self.run_id, code, by_dept[code], self.report))
            if len(todo) < len(by_dept[code]):
                self._cut.add(code)
            with self._lock:
                self._queues[code].extend(todo)
                start = (bool(todo) and code not in self._active and code not in self._stopped
                         and code not in self._held_meanwhile)
                if start:
                    self._active.add(code)
            if start:
                self._running += 1
                # One copy of the context per worker: a context cannot be entered by two threads at once.
                self._futures.append(self._executor.submit(contextvars.copy_context().run, self._work, code))

    def offer_due(self, only: Collection[int] | None = None) -> None:
        """Offer every archived file not delivered yet (or only these ids), held départements apart."""
        pending = self.trace.to_deliver()
        if only is not None:
            pending = [e for e in pending if e.id in only]
        self._held = self.trace.active_holds()
        self.offer(pending)

    def drain(self) -> None:
        """Record what the workers reported so far, without waiting (one commit)."""
        self._record(self._take(block=False))

    def finish(self, only: Collection[int] | None = None, *, offer_due: bool = True) -> DeliveryReport:
        """Offer what else is due (unless told not to), wait for every worker, record everything."""
        try:
            if offer_due:
                self.offer_due(only)
            if self._offered:
                self.d.progress(f"delivering {len(self._offered)} file(s) to {len(self._transports)} département(s)")
            while self._running:
                self._record(self._take(block=True))
            for f in self._futures:
                f.result()
        finally:
            self._executor.shutdown(wait=True)
            self._watch.close()
        pending = self.trace.to_deliver()
        if only is not None:
            pending = [e for e in pending if e.id in only]
        self.d._held(self.trace, pending, self.report)
        tried = {e.id for e in self.report.delivered} | {e.id for e in self.report.not_delivered}
        # Unusable, queued, or stopped; those of a département held meanwhile and still held are in `held`.
        self.report.waiting = [e for e in self._offered if e.id not in tried and e.department not in self.report.held]
        return self.report

    def _take(self, *, block: bool) -> list[_Outcome | None]:
        got: list[_Outcome | None] = []
        if block:
            got.append(self._results.get())
        while True:
            try:
                got.append(self._results.get_nowait())
            except queue.Empty:
                return got

    def _record(self, got: list[_Outcome | None]) -> None:
        # A worker's end (None) is counted before anything is written: if the write fails (the
        # trace's volume full, say), `finish` must still know which workers are done. Counted
        # after, a failed write lost those ends and `finish` waited for them for ever, holding
        # the run lock against every later night.
        self._running -= sum(1 for outcome in got if outcome is None)
        outcomes = [outcome for outcome in got if outcome is not None]
        if not outcomes:
            return
        # What the workers reported meanwhile is recorded in one commit: a crash before it only
        # makes the next run find those files in place at the partner (idempotent delivery).
        with self.trace.group():
            for outcome in outcomes:
                self.d._record_one(self.trace, self.run_id, outcome, self._transports, len(self._offered),
                                   self.report)

    # -- on a worker thread: one département's queue ---------------------------------------------

    def _next(self, code: str) -> Emission | None:
        with self._lock:
            queued = self._queues[code]
            if queued and code not in self._stopped:
                return queued.pop(0)
            self._active.discard(code)  # anything offered from now on starts a new worker
            return None

    def _held_now(self, code: str) -> bool:
        """Whether the département was held since the session began (said once); its queue then stops.

        A trace that cannot be read stops the queue too, as a failure would: its files wait for the
        next run, which reads the holds afresh.
        """
        try:
            hold = self._watch.active(code)
        except FluxError as exc:
            self.d.log.error("deliver.holds_unreadable", department=code, error=str(exc))
            with self._lock:
                self._stopped.add(code)
            return True
        if hold is None:
            return False
        with self._lock:
            first = code not in self._held_meanwhile
            self._held_meanwhile.add(code)
            queued = len(self._queues[code]) + 1  # and the one it was about to send
        if first:
            self.d.log.warning("delivery.held_meanwhile", department=code, held_at=hold.held_at,
                               held_by=hold.held_by, queued=queued,
                               message="held while the run delivers: its next files wait for the resume")
        return True

    def _work(self, code: str) -> None:
        """One département's files, in the order offered; a failure stops its queue (no gap is created),
        and so does a hold placed meanwhile (read before each file: one being sent is not cut off)."""
        left = False  # once out of `_active`, a new worker may already serve the département: hands off
        try:
            while not self.d.stop.is_set():
                e = self._next(code)
                if e is None:
                    left = True
                    return
                if self._held_now(code):
                    with self._lock:
                        self._queues[code].insert(0, e)  # not begun: it waits with the rest
                    return
                outcome = self.d._send(self._transports[code], e)
                self._results.put(outcome)
                if outcome.error is not None:
                    with self._lock:
                        self._stopped.add(code)
                    return
        except Exception as exc:  # a bug in one adapter must not take the other départements down
            self.d.log.error("deliver.crashed", error=type(exc).__name__)
            raise
        finally:
            if not left:
                with self._lock:
                    self._active.discard(code)
            self._results.put(None)
