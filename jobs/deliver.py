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
- a held département's files wait for its resume: no connection is opened to it;
- every delivered file is logged once, here, as `emission.delivered` (whatever the transport),
  and a final failure as an error; the workers run in a copy of the caller's logging context,
  so their events carry the run's id too.
"""

from __future__ import annotations

import contextvars
import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime

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
from ..core.log import get as get_logger
from ..testing import faults
from ..trace.lifecycle import Status
from ..trace.store import Emission, TraceStore
from ..transport.base import Delivery, Transport
from ..transport.registry import transport_for

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


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One file's delivery, as a worker reports it to the thread that writes the trace."""

    emission: Emission
    error: str | None
    attempts: int
    reference: str
    seconds: float = 0.0


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

    def deliver(self, trace: TraceStore, run_id: int, *, only: Collection[int] | None = None,
                transports: TransportPool | None = None) -> DeliveryReport:
        """Deliver every archived emission not yet delivered (night, re-emissions, retries).

        `only`: these emission ids and nothing else (a re-emission request sends what it asked
        for; the rest waits for the night). `transports`: the run's pool, which its owner closes;
        without one, the transports opened here are closed before returning.
        """
        pool = transports or TransportPool(self.transport_factory)
        try:
            return self._deliver(trace, run_id, only, pool)
        finally:
            if transports is None:
                pool.close()

    def _deliver(self, trace: TraceStore, run_id: int, only: Collection[int] | None,
                 pool: TransportPool) -> DeliveryReport:
        report = DeliveryReport()
        pending = self._pending(trace, only, report)
        if not pending:
            return report
        by_dept: dict[str, list[Emission]] = defaultdict(list)
        for e in pending:
            by_dept[e.department].append(e)
        transports = self._open(trace, run_id, by_dept, report, pool)
        self.progress(f"delivering {len(pending)} file(s) to {len(transports)} département(s)")
        results: queue.Queue[_Outcome | None] = queue.Queue()
        with ThreadPoolExecutor(max_workers=max(1, self.settings.delivery.parallel),
                                thread_name_prefix="deliver") as executor:
            # One copy of the context per worker: a context cannot be entered by two threads at once.
            futures = [executor.submit(contextvars.copy_context().run, self._deliver_department, transports[c],
                                       by_dept[c], results) for c in sorted(transports)]
            self._record_all(trace, run_id, results, futures, transports, len(pending), report)
        tried = {e.id for e in report.delivered} | {e.id for e in report.not_delivered}
        report.waiting = [e for e in pending if e.id not in tried]  # their transport unusable, or queued
        return report

    # -- on the calling thread: choose, open, record ---------------------------------------------

    def _pending(self, trace: TraceStore, only: Collection[int] | None, report: DeliveryReport) -> list[Emission]:
        pending = trace.to_deliver()
        if only is not None:
            pending = [e for e in pending if e.id in only]
        held = trace.active_holds()
        for e in pending:
            if e.department in held:
                report.held[e.department] = report.held.get(e.department, 0) + 1
        return [e for e in pending if e.department not in held]

    def _open(self, trace: TraceStore, run_id: int, by_dept: dict[str, list[Emission]],
              report: DeliveryReport, pool: TransportPool) -> dict[str, Transport]:
        transports: dict[str, Transport] = {}
        for code in by_dept:
            dept = self.settings.departments.get(code)
            if dept is None or not dept.enabled:
                report.problems.append(f"département {code} has emissions to deliver but is not enabled")
                continue
            try:
                transports[code] = pool(self.settings, dept)
            except FluxError as exc:  # one partner's broken setup must not stop the others
                report.problems.append(f"département {code}: transport unusable: {exc}")
                self.log.error("transport.unusable", department=code, files=len(by_dept[code]), error=str(exc))
                for e in by_dept[code]:
                    trace.transition(e.id, Status.DELIVERY_FAILED, self.clock.now(), run_id=run_id, last_error=str(exc)[:500])
        return transports

    def _record_all(self, trace: TraceStore, run_id: int, results: queue.Queue[_Outcome | None],
                    futures: list[Future[None]], transports: dict[str, Transport], total: int,
                    report: DeliveryReport) -> None:
        remaining = len(futures)
        while remaining:
            # What the workers reported meanwhile is recorded in one commit: a crash before it only
            # makes the next run find those files in place at the partner (idempotent delivery).
            got = [results.get()]
            while True:
                try:
                    got.append(results.get_nowait())
                except queue.Empty:
                    break
            with trace.group():
                for outcome in got:
                    if outcome is None:  # one département's worker is done
                        remaining -= 1
                        continue
                    self._record_one(trace, run_id, outcome, transports, total, report)
        for f in futures:
            f.result()

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

    def _deliver_department(self, transport: Transport, emissions: list[Emission],
                            results: queue.Queue[_Outcome | None]) -> None:
        """One département's files, in sequence order; a failure stops its queue (no gap is created)."""
        try:
            for e in emissions:
                if self.stop.is_set():
                    return
                outcome = self._send(transport, e)
                results.put(outcome)
                if outcome.error is not None:
                    return
        except Exception as exc:  # a bug in one adapter must not take the other départements down
            self.log.error("deliver.crashed", error=type(exc).__name__)
            raise
        finally:
            results.put(None)

    def _send(self, transport: Transport, e: Emission) -> _Outcome:
        """One file, retried on transient failures; the outcome says how many attempts it took."""
        policy = self.settings.delivery
        item = Delivery(e.department, e.flow, e.file_name or "",
                        self.archive.sealed_path(date.fromisoformat(e.business_date), e.file_name or ""),
                        e.size or 0, e.sha256 or "")
        attempts, started = 0, time.monotonic()

        def attempt() -> str:
            nonlocal attempts
            attempts += 1
            faults.point("deliver")
            reference = transport.deliver(item).reference
            faults.point("delivered")
            return reference

        def warn_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.log.warning("deliver.retry", department=e.department, file=item.file_name,
                             attempt=state.attempt_number, error=str(exc))

        retrying = Retrying(stop=stop_after_attempt(policy.attempts), wait=retry_wait(policy),
                            retry=retry_if_exception(_transient), sleep=self._pause, before_sleep=warn_retry,
                            reraise=True)
        try:
            reference = retrying(attempt)
        except TransportError as exc:
            return _Outcome(e, str(exc), attempts, "")
        except FluxError as exc:
            return _Outcome(e, str(exc), attempts, "")
        return _Outcome(e, None, attempts, reference, time.monotonic() - started)
