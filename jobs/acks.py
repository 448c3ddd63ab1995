"""Acknowledgements: the receivers tell us when they took each file into account.

The convention (art. 5, annexe 2 §6) asks the sender to keep, for every exchange, the date
the receiver's application took the file into account. Nothing in a file transfer says
that, so each receiver writes back one small XML file per delivered file (schemas/ack.xsd,
docs/acks.md): the file's name and SHA-256, OK or KO with a reason code, and its own
timestamp. `collect` reads them from every enabled département's ack folder and records
them in the trace; a night splits it in two (`start`, then `finish` before it delivers) to
build its files while the connections open.

An ack changes what we believe was delivered, so it is never taken on trust: one that does
not parse, names a file we never sent to that département, or carries another SHA-256 than
the file we sent, is recorded as an anomaly and changes nothing. A KO marks the emission
failed so that it is not blindly redelivered; re-emitting it automatically is a
per-département option (`reemit_on_ko`).

The reason text (Libelle) may, against the contract, carry personal data: it is parsed and
handed to the caller but never logged nor written to the trace. Only names and codes are.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ..config.settings import Department, Settings
from ..core.errors import FluxError, TraceError, TransportError
from ..core.log import get as get_logger
from ..core.names import ACK_SUFFIX, ack_name
from ..schemas.ack import KO, OK, Ack, AckError, build_ack, parse_ack
from ..testing import faults
from ..trace.lifecycle import AckOutcome, Status
from ..trace.store import Emission, TraceStore
from ..transport.base import AckFile, Transport
from .deliver import TransportPool

__all__ = ["MAX_AUTO_REEMISSIONS", "AckFetch", "AckSummary", "Reemit", "collect", "finish", "start"]

# A receiver that keeps refusing the same file (its own certificate is wrong, say) would
# otherwise get a new copy after every KO: past this many copies, an operator decides.
MAX_AUTO_REEMISSIONS = 3

# The trace's `acks.outcome` values; RECORDED is the only one that changes an emission.
RECORDED, DUPLICATE, CONFLICT = AckOutcome.RECORDED, AckOutcome.DUPLICATE, AckOutcome.CONFLICT
UNKNOWN_FILE, HASH_MISMATCH, INVALID = AckOutcome.UNKNOWN_FILE, AckOutcome.HASH_MISMATCH, AckOutcome.INVALID


class Reemit(Protocol):
    """What `collect` calls for an automatic re-emission; the caller binds settings, trace and clock."""

    def __call__(self, emission_id: int, *, reason: str) -> object: ...


@dataclass
class AckSummary:
    recorded_ok: int = 0
    recorded_ko: int = 0
    anomalies: int = 0
    errors: list[str] = field(default_factory=list)  # operator-facing: départements whose acks were not read
    duplicates: int = 0
    deferred: int = 0  # acks for a file whose delivery is not recorded yet: left for a later collect
    ignored: int = 0  # files not named *.ack.xml (maybe a receiver's write in progress): left in place
    reemitted: list[int] = field(default_factory=list)  # emission ids handed to `reemit`


# --- collecting ------------------------------------------------------------------------


@dataclass
class _Fetched:
    department: Department
    transport: Transport | None
    acks: list[AckFile]
    error: str | None = None


def _fetch(
    settings: Settings, dept: Department, transport_for: Callable[[Settings, Department], Transport]
) -> _Fetched:
    transport: Transport | None = None
    try:
        transport = transport_for(settings, dept)
        return _Fetched(dept, transport, transport.fetch_acks())
    except FluxError as exc:  # a broken partner or its configuration: the others go on
        return _Fetched(dept, transport, [], str(exc))


class AckFetch:
    """The ack folders being read in the background, for `finish` to record on the trace's thread.

    The reading is mostly connecting (a national night opens about 100 SSH connections, which
    the servers take over a second to accept): a night starts it first and builds its files
    meanwhile. Only the reading runs here; nothing is recorded nor removed before `finish`.
    """

    def __init__(self, settings: Settings, transport_for: Callable[[Settings, Department], Transport]):
        self.departments = sorted(settings.enabled_departments(), key=lambda d: d.code)
        self.pool = transport_for if isinstance(transport_for, TransportPool) else TransportPool(transport_for)
        self._owns_pool = self.pool is not transport_for
        workers = max(1, min(settings.delivery.parallel, len(self.departments)))
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="acks")
        self._futures = [self._executor.submit(_fetch, settings, d, self.pool) for d in self.departments]
        self.finished = False  # recorded by `finish`

    def results(self) -> list[_Fetched]:
        """Every département's reading, in département order, once all are done (a crash re-raised)."""
        fetched: list[_Fetched] = []
        crash: BaseException | None = None
        for future in self._futures:
            try:
                fetched.append(future.result())
            except BaseException as exc:  # noqa: B036 - re-raised below, once every worker is done
                crash = crash or exc
        self._executor.shutdown(wait=True)
        if crash is not None:
            raise crash
        return fetched

    def close(self) -> None:
        """Wait for the readers (a run that stops early records nothing: the acks stay for the next)."""
        for future in self._futures:
            future.cancel()
        self._executor.shutdown(wait=True)
        if self._owns_pool:
            self.pool.close()


def start(settings: Settings, transport_for: Callable[[Settings, Department], Transport]) -> AckFetch:
    """Start reading the ack folders of every enabled département (`[delivery] parallel` at once)."""
    return AckFetch(settings, transport_for)


def finish(
    fetch: AckFetch,
    trace: TraceStore,
    now: datetime,
    *,
    reemit: Reemit | None = None,
    run_id: int | None = None,
) -> AckSummary:
    """Record and remove what `fetch` read: one by one, in département order, on this thread."""
    try:
        return _record_fetched(fetch.results(), trace, now, reemit, run_id)
    finally:
        fetch.finished = True
        fetch.close()


def collect(
    settings: Settings,
    trace: TraceStore,
    transport_for: Callable[[Settings, Department], Transport],
    now: datetime,
    *,
    reemit: Reemit | None = None,
    run_id: int | None = None,
) -> AckSummary:
    """Read, record and remove the acks of every enabled département.

    Folders are read in parallel (`[delivery] parallel`), since most of the time is spent
    connecting; the acks are then recorded one by one, in département order, on this thread,
    which is the only one that writes to the trace. Given the run's TransportPool, the
    connections stay open for the delivery that follows (the pool's owner closes them);
    given a plain factory, they are closed before returning.
    """
    return finish(start(settings, transport_for), trace, now, reemit=reemit, run_id=run_id)


def _record_fetched(fetched: list[_Fetched], trace: TraceStore, now: datetime, reemit: Reemit | None,
                    run_id: int | None) -> AckSummary:
    summary = AckSummary()
    log = get_logger("flux-pmi.acks")
    for item in fetched:
        code = item.department.code
        if item.error is not None:
            summary.errors.append(f"acks of département {code} not read: {item.error}")
            log.error("acks.unreadable", department=code, error=item.error)
            continue
        assert item.transport is not None
        try:
            for ack_file in item.acks:
                _one(trace, item.department, item.transport, ack_file, now, reemit, run_id, summary, log)
        except TransportError as exc:
            summary.errors.append(f"acks of département {code}: {exc}")
            log.error("acks.transport_failed", department=code, error=str(exc))
    return summary


def _ack_bytes(ack_file: AckFile) -> bytes:
    """The ack document: as the partner wrote it, or made here from the decision its protocol gave.

    A decision is written as the ack a receiver would have sent (no reason text), so that it is
    read, judged and recorded exactly like one.
    """
    d = ack_file.decision
    if d is None:
        return ack_file.data or b""
    return build_ack(d.file_name, d.sha256, str(d.status), d.code, "", d.at)


def _ack_state(trace: TraceStore, emission_id: int) -> tuple[str, str | None]:
    # Emission does not carry ack_status: read it with the status, in one statement.
    return trace.ack_state(emission_id)


def _one(
    trace: TraceStore,
    dept: Department,
    transport: Transport,
    ack_file: AckFile,
    now: datetime,
    reemit: Reemit | None,
    run_id: int | None,
    summary: AckSummary,
    log: Any,
) -> None:
    """Judge one ack, record it, then remove it (unless it is left for later)."""
    code, name = dept.code, ack_file.name

    def record(outcome: AckOutcome, ack: Ack | None, emission: Emission | None = None) -> None:
        trace.add_ack(now, department=code, ack_name=name, outcome=outcome,
                      file_name=ack.file_name if ack else None, sha256=ack.sha256 if ack else None,
                      status=ack.status if ack else None, code=ack.code if ack else None,
                      ack_at=ack.at.isoformat() if ack else None, emission_id=emission.id if emission else None)

    def anomaly(
        kind: str, outcome: AckOutcome, detail: str, ack: Ack | None = None, emission: Emission | None = None
    ) -> None:
        record(outcome, ack, emission)
        trace.add_anomaly(
            kind, f"ack {name}: {detail}", now, department=code, file=ack.file_name if ack else name
        )
        summary.anomalies += 1
        log.warning("ack.anomaly", department=code, ack=name, outcome=outcome, code=ack.code if ack else None,
                    kind=kind)

    if not name.endswith(ACK_SUFFIX):
        # Maybe a receiver's upload still under its temporary name: never read nor removed.
        summary.ignored += 1
        log.warning("ack.ignored", department=code, ack=name, reason=f"not named *{ACK_SUFFIX}")
        return
    try:
        try:
            ack = parse_ack(_ack_bytes(ack_file))
        except AckError as exc:
            anomaly("ack-invalid", INVALID, exc.reason)
            transport.remove_ack(name)
            return
        if name != ack_name(ack.file_name):
            anomaly("ack-invalid", INVALID, "its name does not match the file it acknowledges", ack)
            transport.remove_ack(name)
            return
        emission = trace.emission_by_file(code, ack.file_name)
        if emission is None:
            anomaly(
                "ack-unknown-file", UNKNOWN_FILE, f"no file {ack.file_name} was sent to this département", ack
            )
            transport.remove_ack(name)
            return
        if emission.sha256 != ack.sha256:
            # A forged, stale or corrupted ack: it must not vouch for a file it did not see.
            anomaly(
                "ack-hash-mismatch",
                HASH_MISMATCH,
                "its SHA-256 is not the one of the file sent",
                ack,
                emission,
            )
            transport.remove_ack(name)
            return
        status, recorded = _ack_state(trace, emission.id)
        if recorded == ack.status:
            record(DUPLICATE, ack, emission)
            summary.duplicates += 1
            log.info("ack.duplicate", department=code, ack=name, outcome=DUPLICATE, code=ack.code)
            if ack.status == KO:
                # The first run may have stopped between recording the KO and re-emitting.
                _maybe_reemit(trace, dept, emission, ack, now, reemit, summary, log)
            transport.remove_ack(name)
            return
        if recorded is not None:
            anomaly(
                "ack-conflict", CONFLICT, f"{ack.status} after a {recorded} for the same file", ack, emission
            )
            transport.remove_ack(name)
            return
        if status != Status.DELIVERED:
            # Our delivery is not recorded yet (a crash between the transfer and the trace): the
            # next run's delivery finds the file in place and records it; the ack waits until then.
            summary.deferred += 1
            log.info(
                "ack.deferred", department=code, ack=name, outcome="deferred", code=ack.code, status=status
            )
            return
        if ack.status == OK:
            trace.transition(
                emission.id,
                Status.ACKNOWLEDGED,
                now,
                run_id=run_id,
                detail=f"ack {ack.code}",
                acknowledged_at=ack.at.isoformat(),
                ack_status=OK,
                ack_code=ack.code,
            )
            summary.recorded_ok += 1
        else:
            trace.transition(
                emission.id,
                Status.REFUSED,
                now,
                run_id=run_id,
                detail=f"ack {ack.code}",
                ack_status=KO,
                ack_code=ack.code,
                last_error=f"KO ack: {ack.code}",
            )
            summary.recorded_ko += 1
        record(RECORDED, ack, emission)
        (log.info if ack.status == OK else log.warning)(
            "ack.recorded", department=code, ack=name, outcome=RECORDED, status=ack.status, code=ack.code
        )
        if ack.status == KO:
            _maybe_reemit(trace, dept, emission, ack, now, reemit, summary, log)
        faults.point("ack-recorded")
        # Removed last: a crash before this leaves the ack, which the next collect sees as a duplicate.
        transport.remove_ack(name)
    except TraceError as exc:
        # The trace refused (locked, or the emission changed under us): the ack stays for the next collect.
        summary.errors.append(f"ack {name} of département {code} not recorded: {exc}")
        log.error("ack.not_recorded", department=code, ack=name, error=str(exc))


def _maybe_reemit(
    trace: TraceStore,
    dept: Department,
    emission: Emission,
    ack: Ack,
    now: datetime,
    reemit: Reemit | None,
    summary: AckSummary,
    log: Any,
) -> None:
    if reemit is None or not dept.options.get("reemit_on_ko"):
        return
    if trace.has_later_copy(emission):
        return  # a later copy of this file exists already (an operator's, or ours before a crash)
    file = emission.file_name
    if emission.reemission_no >= MAX_AUTO_REEMISSIONS:
        trace.add_anomaly(
            "ack-ko-repeated",
            f"KO {ack.code} on copy {emission.reemission_no}: no automatic"
            " re-emission, an operator must look",
            now,
            department=dept.code,
            file=file,
        )
        summary.anomalies += 1
        log.warning(
            "ack.reemit_skipped",
            department=dept.code,
            file=file,
            code=ack.code,
            copies=emission.reemission_no,
        )
        return
    try:
        reemit(emission.id, reason=f"automatic on KO ack {ack.code}")
    except FluxError as exc:
        trace.add_anomaly(
            "ack-reemit-failed",
            f"automatic re-emission after KO {ack.code} failed: {exc}",
            now,
            department=dept.code,
            file=file,
        )
        summary.anomalies += 1
        summary.errors.append(f"{file}: automatic re-emission after KO {ack.code} failed: {exc}")
        log.error("ack.reemit_failed", department=dept.code, file=file, code=ack.code, error=str(exc))
        return
    summary.reemitted.append(emission.id)
    log.info("ack.reemitted", department=dept.code, file=file, code=ack.code, emission=emission.id)
