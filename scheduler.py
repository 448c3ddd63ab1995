"""`flux-pmi serve`: the scheduled jobs of an installation, in one long-running process.

Why a service rather than cron alone: it owns the whole day (the nightly emission, the
retention purge, the SLA report), writes the health metrics after every job, and stops
cleanly on SIGTERM (systemd's stop), finishing the file it is delivering.
A systemd timer or a cron line running `flux-pmi run` remains a valid choice
(docs/operations.md, "Running it").

The schedule (APScheduler 3.11, BlockingScheduler, Europe/Paris):
- jobs come from `[service.jobs]` (config/settings.py, DEFAULT_JOBS); each is a CronTrigger
  built from named fields (`day_of_week="mon-fri"`). Numbers are refused at load time:
  APScheduler 3.x counts 0 as Monday where cron counts it as Sunday.
- Nothing runs by default between 02:00 and 03:00. On the night the clocks go back
  (e.g. 2026-10-25) that hour happens twice and a job in it runs twice; on the night they go
  forward it does not exist and the job shifts to 03:xx. `dst_warnings` flags such a job.
- `coalesce=True`, `max_instances=1`, `misfire_grace_time=[service] misfire_grace_seconds`
  on every job, and one worker thread: the jobs share the trace and the archive, so they
  run one after the other (a purge due while the night still runs waits for it).
- Stable job ids with `replace_existing=True`.

Missed nights. The job store is APScheduler's default MemoryJobStore: a persistent store
(SQLAlchemyJobStore) would add a dependency and a second source of truth, while the trace
already says when the last nightly run ended. At start-up the service takes the start of
the last *completed* nightly run (`done`, `undelivered` or `quarantined`: interrupted,
failed or killed runs do not count) and asks the nightly trigger for the fire times since
then. If at least one is in the past, the nightly job's first run is "now", once: one
catch-up however many nights were missed, since a night processes everything waiting in
the inbox. With no nightly run in the trace at all (a new installation) nothing is owed.
The misfire grace time is about the living service (a suspended machine, a job still
running past the next fire time); the catch-up does not depend on it.

A job that raises is logged (its exception type; a FluxError's message, which carries no
personal data) and the service goes on. A job skipped because the run lock is busy
(a `flux-pmi run` or `reemit` by hand) is logged the same way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_SCHEDULER_STARTED,
    JobEvent,
    SchedulerEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from .config.settings import Job, Settings
from .core.clock import PARIS, Clock
from .core.errors import ConfigError, ExitCode, FluxError, LockBusyError
from .core.lock import service_lock
from .core.log import get as get_logger
from .report import metrics
from .trace.lifecycle import COMPLETED_RUNS

JOB_NAMES = {
    "nightly": "nightly emission (acks first)",
    "purge": "retention purge",
    "sla": "SLA report (records at risk or late)",
}
AMBIGUOUS_HOUR = 2  # Europe/Paris changes its clocks at 02:00 (spring) and 03:00 -> 02:00 (autumn)

# A runner returns False when it ran but did not succeed (e.g. a night interrupted by a stop).
Runner = Callable[[], bool | None]


def trigger_for(settings: Settings, job: Job) -> CronTrigger:
    try:
        return CronTrigger(day_of_week=job.day_of_week, hour=job.hour, minute=job.minute, timezone=PARIS)
    except ValueError as exc:
        # e.g. "sat-mon": APScheduler ranges do not wrap past Sunday.
        raise ConfigError(
            settings.file,
            f"service.jobs.{job.id}.day_of_week",
            f"weekday names APScheduler accepts, such as mon-fri or mon,sat,sun ({exc})",
        ) from exc


def enabled_jobs(settings: Settings) -> list[Job]:
    return [j for j in settings.service.jobs.values() if j.enabled]


def next_fire_times(settings: Settings, after: datetime, count: int) -> dict[str, list[datetime]]:
    """The next `count` fire times of each enabled job, from the triggers alone (no scheduler, no wall clock)."""
    if after.tzinfo is None:
        raise ValueError("after must be an aware datetime")
    out: dict[str, list[datetime]] = {}
    for job in enabled_jobs(settings):
        trigger = trigger_for(settings, job)
        times: list[datetime] = []
        at = trigger.get_next_fire_time(None, after)
        while at is not None and len(times) < count:
            times.append(at)
            at = trigger.get_next_fire_time(at, at)
        out[job.id] = times
    return out


def dst_warnings(settings: Settings) -> list[str]:
    """A job in the 02:00 hour runs twice the night the clocks go back and shifts the night they go forward."""
    return [
        f"service.jobs.{j.id} at {j.hour:02d}:{j.minute:02d} Europe/Paris: on the night the clocks go back "
        "it runs twice, on the night they go forward it runs an hour late; choose a time outside 02:00-03:00"
        for j in enabled_jobs(settings)
        if j.hour == AMBIGUOUS_HOUR
    ]


def last_completed_nightly(trace: Any) -> datetime | None:
    row = trace.last_run("run", statuses=COMPLETED_RUNS)
    if row is not None:
        at = datetime.fromisoformat(row.started_at)
        return at if at.tzinfo else at.replace(tzinfo=PARIS)
    return None


def missed_nightly_fires(settings: Settings, trace: Any, now: datetime) -> list[datetime]:
    """The nightly fire times that passed since the last completed nightly run (empty: nothing owed)."""
    job = settings.service.jobs.get("nightly")
    if job is None or not job.enabled:
        return []
    last = last_completed_nightly(trace)
    if last is None:
        anything = trace.first_run("run")
        if anything is None:
            return []  # a new installation: no night was ever owed
        first = datetime.fromisoformat(anything["started_at"])
        last = (first if first.tzinfo else first.replace(tzinfo=PARIS)) - timedelta(microseconds=1)
    trigger = trigger_for(settings, job)
    missed: list[datetime] = []
    # Strictly after the last run: the fire time that started it is not a missed one.
    at = trigger.get_next_fire_time(None, last + timedelta(microseconds=1))
    while at is not None and at <= now:
        missed.append(at)
        at = trigger.get_next_fire_time(at, at)
    return missed


class ServiceJobs:
    """The job bodies and the guard around them: a failing job is logged and never stops the service."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        stop: threading.Event | None = None,
        runners: dict[str, Runner] | None = None,
    ):
        self.settings = settings
        self.clock = clock or Clock()
        self.stop = stop or threading.Event()
        self.log = get_logger("flux-pmi.serve")
        self.runners: dict[str, Runner] = {"nightly": self.nightly, "purge": self.purge, "sla": self.sla}
        self.runners.update(runners or {})

    def guarded(self, job_id: str) -> Callable[[], bool]:
        def run() -> bool:
            return self.run_job(job_id)

        run.__name__ = f"flux_pmi_{job_id}"
        return run

    def run_job(self, job_id: str) -> bool:
        """Run one job, then write the metrics. True if it succeeded. Never raises."""
        if self.stop.is_set():
            # Queued behind the job that was running when the stop came: the service is leaving.
            self.log.info("job.skipped", job=job_id, reason="stopping")
            return False
        self.log.info("job.start", job=job_id)
        ok = False
        try:
            ok = self.runners[job_id]() is not False
        except LockBusyError as exc:
            self.log.warning("job.skipped", job=job_id, reason="lock busy", error=str(exc))
        except FluxError as exc:
            self.log.error("job.failed", job=job_id, error=type(exc).__name__, message=str(exc))
        except Exception as exc:  # a bug: its message might quote data, so only its type is logged
            self.log.error("job.failed", job=job_id, error=type(exc).__name__)
        self.log.info("job.end", job=job_id, ok=ok)
        metrics.after_job(self.settings, job_id, succeeded=ok, now=self.clock.now())
        return ok

    # -- the jobs --------------------------------------------------------------------------

    def nightly(self) -> bool:
        from .core.lock import run_lock
        from .jobs.night import Night

        purge_job = self.settings.service.jobs.get("purge")
        with run_lock(self.settings, "serve:nightly"):
            # The purge job purges every day; without it, the night purges as `flux-pmi run` does.
            # sleep=stop.wait: a stop cuts a retry backoff short instead of waiting it out.
            report = Night(
                self.settings,
                clock=self.clock,
                stop=self.stop,
                sleep=self.stop.wait,
                purge=purge_job is None or not purge_job.enabled,
            ).run()
        t = report.totals()
        self.log.info(
            "nightly.done",
            exit_code=int(report.exit_code),
            records=t.records,
            rejects=t.rejects,
            files=t.files,
            delivered=t.delivered,
            undelivered=report.undelivered,
        )
        return not report.interrupted

    def purge(self) -> bool:
        from .archive import ArchiveStore
        from .core.lock import run_lock
        from .jobs.retention import purge
        from .trace.store import TraceStore

        with run_lock(self.settings, "serve:purge"):
            trace = TraceStore(self.settings.paths.trace)
            try:
                purge(
                    self.settings,
                    trace,
                    ArchiveStore(self.settings.paths.archive),
                    today=self.clock.today(),
                    now=self.clock.now(),
                )
            finally:
                trace.close()
        return True

    def sla(self) -> bool:
        from .report.status import gather
        from .trace.store import TraceStore

        trace = TraceStore(self.settings.paths.trace)
        try:
            data = gather(self.settings, trace, now=self.clock.now())
        finally:
            trace.close()
        totals = data["sla"]["totals"]
        late_depts = sorted(d for d, c in data["sla"]["by_department"].items() if c["late"])
        risk_depts = sorted(d for d, c in data["sla"]["by_department"].items() if c["at_risk"])
        fields = {
            "at_risk": totals["at_risk"],
            "late": totals["late"],
            "late_departments": late_depts,
            "at_risk_departments": risk_depts,
            # which clock binds them (core/workdays.py): {"contract": n, "law": n}
            "late_by_basis": {b: c["late"] for b, c in data["sla"]["by_basis"].items()},
            "at_risk_by_basis": {b: c["at_risk"] for b, c in data["sla"]["by_basis"].items()},
            "undelivered": data["undelivered"]["total"],
        }
        if totals["at_risk"] or totals["late"]:
            self.log.warning("sla.report", **fields)
        else:
            self.log.info("sla.report", **fields)
        return True


def build_scheduler(
    settings: Settings,
    *,
    clock: Clock | None = None,
    stop: threading.Event | None = None,
    runners: dict[str, Runner] | None = None,
    scheduler_cls: type[BaseScheduler] = BlockingScheduler,
) -> BaseScheduler:
    """The scheduler with the configured jobs, not started. A missed night makes the nightly run first, once.

    `clock` decides what was missed and is what the jobs see; when jobs fire is APScheduler's
    business, on the wall clock. `scheduler_cls` lets tests use a BackgroundScheduler.
    """
    from .trace.store import TraceStore

    jobs = ServiceJobs(settings, clock=clock, stop=stop, runners=runners)
    grace = settings.service.misfire_grace_seconds
    scheduler = scheduler_cls(
        timezone=PARIS,
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": grace},
    )
    trace = TraceStore(settings.paths.trace)
    try:
        missed = missed_nightly_fires(settings, trace, jobs.clock.now())
    finally:
        trace.close()
    add_jobs(scheduler, settings, jobs, catch_up=bool(missed))
    scheduler.flux_jobs = jobs
    scheduler.flux_missed = missed
    return scheduler


def add_jobs(
    scheduler: BaseScheduler, settings: Settings, jobs: ServiceJobs, *, catch_up: bool = False
) -> None:
    """(Re)register every enabled job under its stable id; registering twice replaces, never duplicates."""
    grace = settings.service.misfire_grace_seconds
    for job in enabled_jobs(settings):
        extra: dict[str, Any] = {}
        if catch_up and job.id == "nightly":
            # Once, at start-up, on the wall clock APScheduler fires by; then the cron schedule resumes.
            extra["next_run_time"] = datetime.now(PARIS)
        scheduler.add_job(
            jobs.guarded(job.id),
            trigger_for(settings, job),
            id=job.id,
            name=JOB_NAMES.get(job.id, job.id),
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=grace,
            **extra,
        )


class _ToStructlog(logging.Handler):
    """APScheduler logs through `logging`; flux-pmi's log is structlog JSON lines: forward its warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.log = get_logger("apscheduler")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            method = self.log.error if record.levelno >= logging.ERROR else self.log.warning
            method("apscheduler", message=record.getMessage())
        except Exception:  # logging must never take the service down
            self.handleError(record)


def _route_apscheduler_logging() -> None:
    logger = logging.getLogger("apscheduler")
    if not any(isinstance(h, _ToStructlog) for h in logger.handlers):
        logger.addHandler(_ToStructlog())
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def serve(settings: Settings, *, clock: Clock | None = None) -> int:
    """Run the scheduler in the main thread until SIGTERM/SIGINT; then let the running job finish and exit 0.

    The signal handler (stopping.GracefulStop) only sets an event. A watcher thread, started
    once the scheduler runs, waits for it and calls `shutdown(wait=True)`: the job in hand
    sees the event (the night finishes its current file and records it), jobs queued behind
    it are skipped, and `start()` returns in the main thread. A second signal exits at once (8).
    """
    from apscheduler.schedulers.base import STATE_STOPPED

    from .core.stopping import GracefulStop

    log = get_logger("flux-pmi.serve")
    _route_apscheduler_logging()
    for warning in dst_warnings(settings):
        log.warning("schedule.dst", message=warning)
    graceful = GracefulStop()
    with service_lock(settings), graceful:
        scheduler = build_scheduler(settings, clock=clock, stop=graceful.event)
        watchers: list[threading.Thread] = []

        def stop_when_asked() -> None:
            graceful.event.wait()
            log.info("scheduler.stopping", message="waiting for the running job, if any, to finish")
            if scheduler.state != STATE_STOPPED:
                scheduler.shutdown(wait=True)

        def on_started(_event: SchedulerEvent) -> None:
            watcher = threading.Thread(target=stop_when_asked, name="flux-pmi-stop", daemon=True)
            watcher.start()
            watchers.append(watcher)
            missed = scheduler.flux_missed
            log.info(
                "scheduler.started",
                jobs={
                    j.id: j.next_run_time.isoformat() if j.next_run_time else None
                    for j in scheduler.get_jobs()
                },
                missed_nights=len(missed),
                catch_up=bool(missed),
            )

        def on_job_event(event: JobEvent) -> None:
            what = (
                "missed its grace time"
                if event.code == EVENT_JOB_MISSED
                else "still running: this fire skipped"
            )
            log.warning("job.not_run", job=event.job_id, reason=what)

        scheduler.add_listener(on_started, EVENT_SCHEDULER_STARTED)
        scheduler.add_listener(on_job_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        metrics.after_job(settings, None, succeeded=True, now=(clock or Clock()).now())
        scheduler.start()  # blocks until the watcher shuts the scheduler down
        for watcher in watchers:
            watcher.join()  # start() may return as soon as the state flips: the job may still be ending
    log.info("scheduler.stopped")
    return int(ExitCode.OK)
