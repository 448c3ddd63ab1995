"""Parse input files, and build, validate and seal a département's files, on every core.

Why it exists: a night is CPU-bound in Python (reading the inputs, writing the XML, validating
it), and one process runs Python on one core whatever its threads do. So the pure work is done
here, by functions that a pool of worker processes can run (`Workers`), or the night's own
process when the work is small or the machine has one core.

What stays with the run's process, and why:
- the trace: one writer, and the sequence numbers it hands out. A build is given its numbers
  in advance (`SeqPlan`: those an interrupted run already allocated to this batch, then the
  next ones in a row), and the run then allocates exactly those, part by part, when it
  records the build;
- the archive and the deliveries: a file is archived (synced) only when the trace records
  it, in one commit, as before;
- the fault points, so that the crash suite kills the run where it expects.

A worker writes only inside the folder it is given (one per run: a worker of a killed run
that finishes its job cannot touch the next run's files), never touches the trace, never
sends. One job writes elsewhere: keeping a finished batch's input encrypted (`keep_input`),
which is idempotent, writes its one file atomically, and which the next run finishes anyway
if it is interrupted (the batch is already done in the trace). Whatever it leaves is rebuilt by the next run. Its answers carry no personal data
beyond what the files themselves hold (record keys are hashes, see flows/records.py).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import BrokenExecutor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from itertools import islice
from multiprocessing import forkserver
from pathlib import Path
from typing import Any, TypeVar

from ..archive import consumed as consumed_store
from ..config.settings import Sender
from ..core import memory
from ..core.errors import FluxError, InputFileError, SchemaError, SealError
from ..core.fsutil import synced_file
from ..flows.build import FlowHeader, build
from ..flows.parse import Limits as ParseLimits
from ..flows.parse import ParseResult, parse_file
from ..schemas import validate_file, validate_sgr_zip
from ..seal import certs, cms
from ..testing import faults
from . import early_workers, spill

T = TypeVar("T")

SEALED_SUFFIX = ".sealed.p7m"
ARCHIVE_COPY_SUFFIX = ".archive.p7m"


# -- sequence numbers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeqPlan:
    """The sequence number of each part of one build, decided before it runs.

    `existing`: the numbers an interrupted run allocated to parts of this batch (a rebuild gets
    them again); the other parts take `next_seq`, `next_seq + 1`, ... in part order, which is
    what the trace allocates when the run records them in order.
    """

    existing: tuple[tuple[int, int], ...]  # (part, seq)
    next_seq: int

    def __call__(self, part: int) -> int:
        known = dict(self.existing)
        if part in known:
            return known[part]
        return self.next_seq + sum(1 for p in range(1, part) if p not in known)


# -- building, validating, sealing one département's files ---------------------------------------


@dataclass(frozen=True, slots=True)
class BuildJob:
    """One département's records of one batch, and everything needed to turn them into sealed files."""

    header: FlowHeader
    records: spill.Source  # checked, routed and sorted; or the spill (its file, or its bytes) that holds them
    out_dir: Path  # the run's own folder in the batch's work folder
    max_bytes: int
    seqs: SeqPlan
    recipient_certificate: Path
    now: datetime  # the run's clock: certificates are checked at this time


@dataclass(frozen=True, slots=True)
class PreparedPart:
    """One part as a worker left it: sealed beside the plaintext (removed), or why it could not be."""

    part: int
    seq: int
    record_keys: tuple[str, ...]
    received: tuple[date, ...]
    sealed: Path | None = None  # the bytes for the département (synced)
    archive_copy: Path | None = None  # the same signed bytes, enveloped for the CNAF's archive (synced)
    size: int = 0
    sha256: str = ""
    error: str | None = None  # a SchemaError's or SealError's message (no personal data)


class Unsealed(FluxError):
    """A part a worker could not validate or seal, with the message its SchemaError or SealError gave."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """A build's parts, in order; `error` when the build itself failed (its files are removed)."""

    parts: list[PreparedPart] = field(default_factory=list)
    error: OSError | None = None


def _version(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


class _Keys:
    """The sender's keys and the recipients' certificates, read once per version of their files.

    Once per version, not once per process: a service runs night after night in one process,
    and a certificate renewed in place must be used from the next night on.
    """

    def __init__(self) -> None:
        self._sender: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}
        self._recipients: dict[tuple[Path, tuple[int, int, int]], Any] = {}

    def sender(self, s: Sender) -> tuple[Any, Any, Any]:
        """(signer certificate, signer key, archive certificate)."""
        key = (s, _version(s.certificate), _version(s.key), _version(s.archive_certificate))
        if key not in self._sender:
            self._sender = {key: (certs.load_certificate(s.certificate),
                                  certs.load_private_key(s.key, s.key_passphrase),
                                  certs.load_certificate(s.archive_certificate))}
        return self._sender[key]

    def recipient(self, path: Path) -> Any:
        key = (path, _version(path))
        if key not in self._recipients:
            self._recipients[key] = certs.load_certificate(path)
        return self._recipients[key]


_KEYS = _Keys()


def prepare(job: BuildJob, sender: Sender) -> Prepared:
    """Build the parts of `job`, validate and seal each; the plaintext never outlives this call."""
    faults.point("prepare")  # in a worker, a kill there breaks the pool: the run must survive it
    try:
        records = spill.load(job.records)
        parts = build(job.header, records, out_dir=job.out_dir, max_bytes=job.max_bytes, seq_for_part=job.seqs)
    except OSError as exc:  # a full disk, say: this département waits, the others go on
        return Prepared(error=exc)
    prepared: list[PreparedPart] = []
    try:
        for part in parts:
            prepared.append(_seal_part(part, job, sender))
    except OSError as exc:
        discard(prepared)
        return Prepared(error=exc)
    finally:
        for part in parts:
            part.path.unlink(missing_ok=True)
    return Prepared(prepared)


def _seal_part(part: Any, job: BuildJob, sender: Sender) -> PreparedPart:
    try:
        if job.header.flow == "SGR":
            validate_sgr_zip(part.path)
        else:
            validate_file(job.header.flow, part.path)
        signer_cert, signer_key, archive_cert = _KEYS.sender(sender)
        envelopes = cms.seal_each(part.path.read_bytes(), signer_cert=signer_cert, signer_key=signer_key,
                                  recipient_cert=_KEYS.recipient(job.recipient_certificate),
                                  archive_cert=archive_cert, now=job.now)
        sealed_path = part.path.with_name(part.path.name + SEALED_SUFFIX)
        copy_path = part.path.with_name(part.path.name + ARCHIVE_COPY_SUFFIX)
        size, digest = 0, ""
        # One envelope in memory at a time, written (and synced: the archive then only renames it)
        # before the next is made: a worker's memory is a few times the largest part, not seven.
        for role, data in envelopes:
            with synced_file(copy_path if role == cms.ARCHIVE else sealed_path) as fh:
                fh.write(data)
            if role == cms.RECIPIENT:
                size, digest = len(data), hashlib.sha256(data).hexdigest()
            del data
    except (SchemaError, SealError) as exc:
        return PreparedPart(part.part, part.seq, part.record_keys, part.received, error=str(exc))
    return PreparedPart(part.part, part.seq, part.record_keys, part.received, sealed=sealed_path,
                        archive_copy=copy_path, size=size, sha256=digest)


def discard(parts: Sequence[PreparedPart]) -> None:
    for p in parts:
        for path in (p.sealed, p.archive_copy):
            if path is not None:
                path.unlink(missing_ok=True)


# -- parsing one input file ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParseJob:
    flow: str
    path: Path
    display_name: str
    today: date
    inbox_root: Path
    limits: ParseLimits


@dataclass(frozen=True, slots=True)
class Parsed:
    """A file's records and rejects, or why it cannot be read at all (the run quarantines it)."""

    result: ParseResult | None = None
    refusal: tuple[str, int | None, str, str] | None = None  # InputFileError's file, line, reason, code
    unreadable: tuple[int, str] | None = None  # an OSError's errno and strerror

    def unwrap(self) -> ParseResult:
        """The result, or the error the parse raised, as it raised it."""
        if self.refusal is not None:
            raise InputFileError(*self.refusal)
        if self.unreadable is not None:
            raise OSError(*self.unreadable)
        assert self.result is not None
        return self.result


def parse(job: ParseJob) -> Parsed:
    try:
        return Parsed(result=parse_file(job.flow, job.path, display_name=job.display_name, today=job.today,
                                        inbox_root=job.inbox_root, limits=job.limits))
    except InputFileError as exc:  # sent back as fields: an exception's own pickling loses them
        return Parsed(refusal=(exc.file, exc.line, exc.reason, exc.code))
    except OSError as exc:
        return Parsed(unreadable=(exc.errno or 0, exc.strerror or type(exc).__name__))


# -- a finished batch's input, kept encrypted ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeepJob:
    """A done batch's folder, to become its encrypted kept input (archive/consumed.py)."""

    src: Path
    consumed: Path
    batch_id: int
    business_date: date
    archive_certificate: Path


def keep_input(job: KeepJob) -> Path:
    """Envelope each input file for the archive certificate, tar them, then delete the plaintext.

    A catch-up's SGR batch is a gigabyte of zips: enveloped in a worker, while the run's own
    process builds the next batch and delivers.
    """
    faults.point("keep")
    cert = certs.load_certificate(job.archive_certificate)
    return consumed_store.keep(job.src, job.consumed, job.batch_id, job.business_date,
                               lambda data: cms.envelope(data, cert))


# -- the pool -------------------------------------------------------------------------------------


def _worker_start(run_pid: int) -> None:
    # A stop (Ctrl-C in a terminal, a SIGTERM to the run's process group) is the run's to handle: it
    # finishes the département in hand and stops cleanly; a worker killed by it would break the pool.
    # So a worker leaves the run's session and process group, and ignores SIGINT. It must not ignore
    # SIGTERM: that is how the standard library stops the workers left when one dies (the OOM killer,
    # say), and it then waits for them; one that ignored it could block for good sending a result no
    # one reads any more, and hang the run. (systemd's stop reaches the whole unit unless
    # KillMode=mixed, as deploy/ sets it.)
    try:
        os.setsid()
    except OSError:  # already a group leader (not from the fork server): SIGINT ignored below still holds
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    memory.cap_arenas()  # before its one thread, as the run does (core/memory.py)
    threading.Thread(target=_end_with, args=(run_pid,), name="end-with-run", daemon=True).start()


def _end_with(run_pid: int) -> None:
    """End this worker as soon as the run's process ends, however it ends.

    A run killed outright (SIGKILL, the OOM killer) cannot stop its workers, and they would
    wait for jobs forever, keeping the fork server, and the run's output pipes, open.
    """
    try:
        fd = os.pidfd_open(run_pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd (not Linux, or an old kernel): ask every second
        while _alive(run_pid):
            time.sleep(1.0)
    else:
        select.select([fd], [], [])
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Workers:
    """Worker processes for one run, started on first use, or none (the work runs here).

    Processes come from a fork server: a night's process has threads (the ack readers) and an
    open SQLite connection, and neither may be inherited by a forked child. The server imports
    this module once, so a worker starts in milliseconds.
    """

    def __init__(self, processes: int, min_jobs: int):
        self.processes, self.min_jobs = processes, min_jobs
        self._pool: ProcessPoolExecutor | None = None
        self._warming: threading.Thread | None = None
        self._lock = threading.Lock()  # the pool is made once, by whichever thread comes first

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            return self._make()

    def _make(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([early_workers.PRELOAD])  # this module
            self._pool = ProcessPoolExecutor(max_workers=self.processes, mp_context=context,
                                             initializer=_worker_start, initargs=(os.getpid(),))
        return self._pool

    def map(self, fn: Callable[..., T], jobs: Sequence[Any], *args: Any) -> Generator[Callable[[], T], None, None]:
        """Each job's result, in order, as a call that returns it (or raises what running it raised).

        Jobs go to the workers when there are enough of them to pay for the processes; otherwise
        each runs here, when its result is asked for. A few jobs per worker are in flight ahead of
        the one asked for, no more: finished results wait in memory until they are taken, and a
        catch-up's thousands of inputs must not all wait at once.
        """
        if not early_workers.worth_workers(self.processes, len(jobs), self.min_jobs):
            return (partial(fn, job, *args) for job in jobs)
        # The first jobs go now, not at the first result asked for: a batch's parse is started
        # ahead (`Night._prime_parse`) while the run is still busy with what comes before it.
        queued = iter(jobs)
        pending: deque[Future[T]] = deque(self._submit(fn, job, args)
                                          for job in islice(queued, 2 * self.processes + 2))
        return self._results(fn, pending, queued, args)

    def _results(self, fn: Callable[..., T], pending: deque[Future[T]], queued: Iterator[Any],
                 args: tuple[Any, ...]) -> Generator[Callable[[], T], None, None]:
        try:
            while pending:
                yield pending.popleft().result
                for job in islice(queued, 1):
                    pending.append(self._submit(fn, job, args))
        finally:
            for future in pending:
                future.cancel()

    def later(self, fn: Callable[[Any], T], job: Any) -> Callable[[], T]:
        """`fn(job)` in a worker when the workers are up, the caller going on meanwhile; else here, now.

        The result (or what running it raised) comes from the call returned.
        """
        if self._pool is None and self._warming is None:
            result = fn(job)
            return lambda: result
        return self._submit(fn, job, ()).result

    def warm(self, expected_jobs: int) -> None:
        """Start the workers now, from another thread, when that many jobs will use them.

        Starting them takes the fork server's imports (about half a second of one core): done
        while the run claims its inputs, instead of in the way of the first parse.
        """
        if early_workers.worth_workers(self.processes, expected_jobs, self.min_jobs) and self._warming is None:
            self._warming = threading.Thread(target=self._start_all, name="workers-start", daemon=True)
            self._warming.start()

    def _start_all(self) -> None:
        for _ in range(self.processes):
            self._submit(os.getpid, None, ())

    def _submit(self, fn: Callable[..., T], job: Any, args: tuple[Any, ...]) -> Future[T]:
        call = (fn, *args) if job is None else (fn, job, *args)
        try:
            return self._executor().submit(*call)
        except BrokenExecutor:
            # A worker died (its jobs fail, and are retried by the next run): the next jobs get new ones.
            with self._lock:
                self._close()
            return self._executor().submit(*call)

    def close(self) -> None:
        warming, self._warming = self._warming, None
        if warming is not None:
            warming.join()
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        # The fork server (started here, or early by the command: jobs/early_workers.py) would
        # outlive the run otherwise (until the process ends), unwaited: its CPU, and its workers',
        # would then be missing from the run's own accounting (getrusage). `_stop` is the standard
        # library's own (its tests use it), and does nothing when no server runs.
        stop = getattr(forkserver._forkserver, "_stop", None)
        if stop is not None:
            stop()
