"""`flux-pmi serve`: the job set, its fire times across a DST change, missed nights, failures, a clean stop.

Fire times come from the triggers with an injected "now", so the autumn change of
2026-10-25 is tested today. What a running scheduler does (a catch-up fires, a failing job
does not stop the others) is checked with a BackgroundScheduler and fake jobs that signal
an event: every wait is a handshake with a deadline, never a sleep. The stop path runs the
real command in a subprocess and signals it once it says it is ready (or once a delivery
worker is parked at a fault point).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.schedulers.background import BackgroundScheduler
from structlog.testing import capture_logs
from support import NOW, CliProcess, make_demo

from flux_pmi.config.settings import DEFAULT_JOBS, Job, load
from flux_pmi.core.clock import PARIS, FixedClock
from flux_pmi.core.errors import ConfigError
from flux_pmi.core.lock import run_lock
from flux_pmi.scheduler import (
    ServiceJobs,
    add_jobs,
    build_scheduler,
    dst_warnings,
    missed_nightly_fires,
    next_fire_times,
)
from flux_pmi.trace.store import TraceStore

DEADLINE = 60  # seconds: only ever reached when something is broken


def paris(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def with_service(settings, **changes):
    return dataclasses.replace(settings, service=dataclasses.replace(settings.service, **changes))


def with_job(settings, job: Job):
    return with_service(settings, jobs={**settings.service.jobs, job.id: job})


@pytest.fixture
def settings(demo):
    root, _ = demo
    return load(root / "flux-pmi.toml")


def record_nightly(settings, started: datetime, status: str = "done", exit_code: int = 0) -> None:
    trace = TraceStore(settings.paths.trace)
    try:
        run_id = trace.start_run("run", started.date(), started)
        trace.finish_run(run_id, started + timedelta(minutes=20), status=status, exit_code=exit_code)
    finally:
        trace.close()


class Recorder:
    """Fake job bodies: count the calls, signal each one, optionally raise."""

    def __init__(self, raises: set[str] = frozenset()):
        self.calls: list[str] = []
        self.events = {j: threading.Event() for j in DEFAULT_JOBS}
        self.raises = raises

    def runners(self):
        def make(job_id):
            def run():
                self.calls.append(job_id)
                self.events[job_id].set()
                if job_id in self.raises:
                    raise RuntimeError("boom: 2850575123456 Jeanne Martin")  # must never reach the log
                return True

            return run

        return {j: make(j) for j in DEFAULT_JOBS}


# -- the job set --------------------------------------------------------------------------------


def test_the_job_set_is_the_configured_jobs_with_coalescing_one_instance_and_a_grace_time(settings):
    scheduler = build_scheduler(settings, clock=FixedClock(NOW))
    assert str(scheduler.timezone) == "Europe/Paris"
    jobs = {j.id: j for j in scheduler.get_jobs()}
    assert set(jobs) == {"nightly", "purge", "sla"}
    expected = {
        "nightly": {"day_of_week": "mon-fri", "hour": "4", "minute": "30"},
        "purge": {"day_of_week": "mon-sun", "hour": "5", "minute": "30"},
        "sla": {"day_of_week": "mon-fri", "hour": "8", "minute": "0"},
    }
    for job_id, fields in expected.items():
        job = jobs[job_id]
        got = {f.name: str(f) for f in job.trigger.fields if f.name in fields}
        assert got == fields
        assert str(job.trigger.timezone) == "Europe/Paris"
        assert (job.coalesce, job.max_instances) == (True, 1)
        assert job.misfire_grace_time == settings.service.misfire_grace_seconds == 6 * 3600
    assert scheduler.flux_missed == []  # a new installation owes no night
    assert not hasattr(jobs["nightly"], "next_run_time")  # so no catch-up: the trigger decides


def test_started_jobs_follow_their_triggers_and_registering_again_replaces_them(settings):
    scheduler = build_scheduler(
        settings, clock=FixedClock(NOW), runners=Recorder().runners(), scheduler_cls=BackgroundScheduler
    )
    before = datetime.now(PARIS)
    scheduler.start(paused=True)
    try:
        for job in scheduler.get_jobs():
            assert job.next_run_time == job.trigger.get_next_fire_time(None, before)
            assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 6 * 3600)
        add_jobs(scheduler, settings, scheduler.flux_jobs)  # stable ids + replace_existing: no conflict
        assert sorted(j.id for j in scheduler.get_jobs()) == ["nightly", "purge", "sla"]
    finally:
        scheduler.shutdown(wait=False)


def test_disabled_jobs_are_not_scheduled(settings):
    s = with_job(settings, dataclasses.replace(DEFAULT_JOBS["sla"], enabled=False))
    assert sorted(j.id for j in build_scheduler(s, clock=FixedClock(NOW)).get_jobs()) == ["nightly", "purge"]
    assert set(next_fire_times(s, NOW, 1)) == {"nightly", "purge"}


def test_a_weekday_range_apscheduler_cannot_read_is_a_config_error(settings):
    s = with_job(settings, Job("purge", True, "sat-mon", 5, 30))  # ranges do not wrap past Sunday
    with pytest.raises(ConfigError, match=r"service\.jobs\.purge\.day_of_week"):
        next_fire_times(s, NOW, 1)


# -- fire times across the autumn change of 2026-10-25 ----------------------------------------------


def test_next_fire_times_across_the_clocks_going_back_on_2026_10_25(settings):
    # Sunday 25 October 2026, 03:00 CEST (+02:00) becomes 02:00 CET (+01:00).
    times = next_fire_times(settings, paris(2026, 10, 22, 12, 0), 4)  # from Thursday noon
    assert times == {
        "nightly": [
            paris(2026, 10, 23, 4, 30),
            paris(2026, 10, 26, 4, 30),
            paris(2026, 10, 27, 4, 30),
            paris(2026, 10, 28, 4, 30),
        ],
        "purge": [
            paris(2026, 10, 23, 5, 30),
            paris(2026, 10, 24, 5, 30),
            paris(2026, 10, 25, 5, 30),
            paris(2026, 10, 26, 5, 30),
        ],
        "sla": [
            paris(2026, 10, 23, 8, 0),
            paris(2026, 10, 26, 8, 0),
            paris(2026, 10, 27, 8, 0),
            paris(2026, 10, 28, 8, 0),
        ],
    }
    # The same instants in UTC, which is what "equal" compares: the wall time stays, the offset moves.
    assert [t.astimezone(UTC) for t in times["nightly"][:2]] == [
        utc(2026, 10, 23, 2, 30),
        utc(2026, 10, 26, 3, 30),
    ]
    assert [t.astimezone(UTC) for t in times["purge"]] == [
        utc(2026, 10, 23, 3, 30),
        utc(2026, 10, 24, 3, 30),
        utc(2026, 10, 25, 4, 30),
        utc(2026, 10, 26, 4, 30),
    ]
    assert [t.utcoffset() for t in times["purge"]] == [timedelta(hours=h) for h in (2, 2, 1, 1)]
    assert times["sla"][0].utcoffset() == timedelta(hours=2) and times["sla"][1].utcoffset() == timedelta(
        hours=1
    )
    # Saturday 05:30 to Sunday 05:30 is 25 hours (in UTC: Python subtracts same-zone datetimes as wall
    # times), and each job fires once on that day, not twice.
    assert times["purge"][2].astimezone(UTC) - times["purge"][1].astimezone(UTC) == timedelta(hours=25)
    assert [t for t in times["purge"] if t.date() == date(2026, 10, 25)] == [paris(2026, 10, 25, 5, 30)]


def test_no_default_job_falls_in_the_2am_hour_all_year(settings):
    for job_id, times in next_fire_times(settings, paris(2026, 1, 1, 0, 0), 370).items():
        assert times[-1] > paris(2026, 12, 31, 0, 0), job_id  # the whole year, both changes included
        assert all(t.hour != 2 for t in times), job_id
        assert len({t.date() for t in times}) == len(times), job_id  # never twice a day
    assert dst_warnings(settings) == []


def test_a_job_at_0230_would_run_twice_in_autumn_and_shift_in_spring(settings):
    s = with_job(settings, Job("purge", True, "mon-sun", 2, 30))
    autumn = next_fire_times(s, paris(2026, 10, 24, 12, 0), 3)["purge"]
    # 02:30 happens twice on 25 October: once in summer time, once in winter time, an hour apart.
    assert [t.astimezone(UTC) for t in autumn] == [
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 1, 30),
        utc(2026, 10, 26, 1, 30),
    ]
    assert [t.utcoffset() for t in autumn[:2]] == [timedelta(hours=2), timedelta(hours=1)]
    # 02:30 does not exist on 29 March 2026: the job runs at 03:30 CEST, an hour late.
    spring = next_fire_times(s, paris(2026, 3, 28, 12, 0), 2)["purge"]
    assert spring[0].astimezone(UTC) == utc(2026, 3, 29, 1, 30)
    assert spring[0].astimezone(UTC).astimezone(PARIS).strftime("%H:%M%z") == "03:30+0200"
    warnings = dst_warnings(s)
    assert len(warnings) == 1 and "service.jobs.purge at 02:30" in warnings[0] and "twice" in warnings[0]


# -- missed nights ---------------------------------------------------------------------------------


def test_three_missed_nights_make_one_catch_up_run_at_start_up(settings):
    record_nightly(settings, paris(2026, 11, 18, 4, 30))  # Wednesday's night ran; the machine then went down
    clock = FixedClock(paris(2026, 11, 23, 10, 0))  # back on Monday morning
    trace = TraceStore(settings.paths.trace)
    try:
        missed = missed_nightly_fires(settings, trace, clock.now())
    finally:
        trace.close()
    assert missed == [paris(2026, 11, 19, 4, 30), paris(2026, 11, 20, 4, 30), paris(2026, 11, 23, 4, 30)]

    recorder = Recorder()
    scheduler = build_scheduler(
        settings, clock=clock, runners=recorder.runners(), scheduler_cls=BackgroundScheduler
    )
    assert scheduler.flux_missed == missed
    nightly = scheduler.get_job("nightly")
    started = datetime.now(PARIS)
    assert abs(nightly.next_run_time - started) < timedelta(minutes=1)  # first run: now, not 04:30
    scheduler.start()
    try:
        assert recorder.events["nightly"].wait(DEADLINE), "the catch-up never ran"
    finally:
        scheduler.shutdown(wait=True)
    assert recorder.calls == ["nightly"]  # once, not three times


def test_after_the_catch_up_the_nightly_follows_its_trigger_again(settings):
    record_nightly(settings, paris(2026, 11, 18, 4, 30))
    recorder = Recorder()
    scheduler = build_scheduler(
        settings,
        clock=FixedClock(paris(2026, 11, 23, 10, 0)),
        runners=recorder.runners(),
        scheduler_cls=BackgroundScheduler,
    )
    done = threading.Event()
    scheduler.add_listener(lambda _e: done.set(), EVENT_JOB_EXECUTED)
    scheduler.start()
    try:
        assert done.wait(DEADLINE)
        job = scheduler.get_job("nightly")
        after = datetime.now(PARIS)
        assert job.next_run_time == job.trigger.get_next_fire_time(None, after)
        assert job.next_run_time > after
    finally:
        scheduler.shutdown(wait=True)
    assert recorder.calls == ["nightly"]


@pytest.mark.parametrize(
    ("runs", "owed"),
    [
        ([], []),  # a new installation
        ([(paris(2026, 11, 23, 4, 30), "done")], []),  # this morning's night ran
        ([(paris(2026, 11, 20, 4, 30), "undelivered")], [paris(2026, 11, 23, 4, 30)]),  # it ran, exit 3
        # Interrupted (a reboot), failed or killed runs do not count: the night is still owed.
        (
            [(paris(2026, 11, 20, 4, 30), "done"), (paris(2026, 11, 23, 4, 30), "interrupted")],
            [paris(2026, 11, 23, 4, 30)],
        ),
        ([(paris(2026, 11, 23, 4, 30), "failed")], [paris(2026, 11, 23, 4, 30)]),
    ],
)
def test_what_counts_as_a_missed_night(settings, runs, owed):
    for started, status in runs:
        record_nightly(settings, started, status=status)
    trace = TraceStore(settings.paths.trace)
    try:
        assert missed_nightly_fires(settings, trace, paris(2026, 11, 23, 10, 0)) == owed
    finally:
        trace.close()


# -- failures --------------------------------------------------------------------------------------


def test_a_job_that_raises_is_logged_without_its_message_and_the_others_still_run(settings):
    recorder = Recorder(raises={"nightly"})
    scheduler = build_scheduler(
        settings, clock=FixedClock(NOW), runners=recorder.runners(), scheduler_cls=BackgroundScheduler
    )
    with capture_logs() as logs:
        scheduler.start()
        try:
            now = datetime.now(PARIS)
            scheduler.modify_job("nightly", next_run_time=now)
            scheduler.modify_job("sla", next_run_time=now)
            assert recorder.events["nightly"].wait(DEADLINE) and recorder.events["sla"].wait(DEADLINE)
            assert scheduler.running
            for job in scheduler.get_jobs():  # still scheduled, the failing one included
                assert job.next_run_time > now
        finally:
            scheduler.shutdown(wait=True)
    assert sorted(recorder.calls) == ["nightly", "sla"]
    failed = [e for e in logs if e["event"] == "job.failed"]
    assert failed == [
        {"event": "job.failed", "job": "nightly", "error": "RuntimeError", "log_level": "error"}
    ]
    assert "2850575123456" not in repr(logs) and "Martin" not in repr(logs)
    ends = {e["job"]: e["ok"] for e in logs if e["event"] == "job.end"}
    assert ends == {"nightly": False, "sla": True}


def test_a_nightly_that_finds_the_lock_taken_is_skipped_and_logged(settings):
    s = with_service(settings, lock_wait_seconds=0)
    jobs = ServiceJobs(s, clock=FixedClock(NOW))
    with capture_logs() as logs, run_lock(s, "run"):  # an operator's `flux-pmi run` holds it
        assert jobs.run_job("nightly") is False
    skipped = [e for e in logs if e["event"] == "job.skipped"]
    assert skipped and skipped[0]["reason"] == "lock busy" and "exit 4" in skipped[0]["error"]
    trace = TraceStore(s.paths.trace)
    try:
        assert trace.last_runs() == []  # nothing was started under someone else's lock
    finally:
        trace.close()


def test_a_job_queued_behind_a_stop_does_not_start(settings):
    stop = threading.Event()
    recorder = Recorder()
    jobs = ServiceJobs(settings, clock=FixedClock(NOW), stop=stop, runners=recorder.runners())
    stop.set()
    assert jobs.run_job("purge") is False and recorder.calls == []


def test_the_sla_job_warns_about_late_records_and_each_job_writes_the_metrics(settings, tmp_path):
    (tmp_path / "prom").mkdir()
    s = with_service(settings, metrics_file=tmp_path / "prom" / "flux-pmi.prom")
    jobs = ServiceJobs(s, clock=FixedClock(NOW))
    with capture_logs() as logs:
        assert jobs.run_job("sla") is True
    report = [e for e in logs if e["event"] == "sla.report"]
    assert report == [
        {
            "event": "sla.report",
            "log_level": "info",
            "at_risk": 0,
            "late": 0,
            "late_departments": [],
            "at_risk_departments": [],
            "late_by_basis": {"contract": 0, "law": 0},
            "at_risk_by_basis": {"contract": 0, "law": 0},
            "undelivered": 0,
        }
    ]
    text = (tmp_path / "prom" / "flux-pmi.prom").read_text()
    assert f'flux_pmi_job_last_success_timestamp_seconds{{job="sla"}} {int(NOW.timestamp())}' in text


def test_the_sla_job_warns_when_records_are_at_risk(settings):
    from flux_pmi.jobs.night import Night
    from flux_pmi.testing.mock import ScriptedPartner

    double = ScriptedPartner(down={"067"})  # 067's files stay undelivered
    Night(settings, clock=FixedClock(NOW), sleep=lambda _s: None, transport_factory=double.factory).run()
    with capture_logs() as logs:
        assert ServiceJobs(settings, clock=FixedClock(NOW)).run_job("sla") is True
    (report,) = [e for e in logs if e["event"] == "sla.report"]
    # By the law's 8 calendar days, which bind (tests/report/test_status.py works the deadlines out): 067's
    # records due Tue 24 and Wed 25 are at risk (4 + 5), those due Wed 18 and Fri 20 late. Its two GRO
    # mutations count from the day its Caf recorded them (DTREF), not from their declaration to the Caf
    # she left: due Sat 28, not late.
    assert report["log_level"] == "warning" and report["at_risk"] == 9 and report["late"] == 2
    assert report["at_risk_departments"] == ["067"] and report["late_departments"] == ["067"]
    assert report["undelivered"] == 3
    assert report["late_by_basis"] == {"contract": 0, "law": 2}  # the clock that binds them, named
    assert sum(report["at_risk_by_basis"].values()) == 9


# -- serve, end to end -------------------------------------------------------------------------------


class Served(CliProcess):
    """`flux-pmi serve` as a subprocess (see support.CliProcess)."""

    def __init__(self, config: Path, env_extra: dict[str, str] | None = None):
        super().__init__("serve", "--config", str(config), env_extra=env_extra, deadline=DEADLINE)

    def finish(self) -> tuple[int, str]:  # type: ignore[override]
        code, _out, err = super().finish()
        return code, err


@pytest.fixture
def served():
    procs: list[Served] = []

    def start(config: Path, env_extra: dict[str, str] | None = None) -> Served:
        procs.append(Served(config, env_extra))
        return procs[-1]

    yield start
    for p in procs:
        p.cleanup()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_exits_0_on_a_signal_while_idle(demo, served, sig):
    root, _ = demo
    proc = served(root / "flux-pmi.toml")
    started = json.loads(proc.wait_for('"scheduler.started"'))
    assert started["catch_up"] is False and set(started["jobs"]) == {"nightly", "purge", "sla"}
    proc.proc.send_signal(sig)
    code, err = proc.finish()
    assert code == 0, err
    assert '"scheduler.stopped"' in err


def test_a_second_serve_for_the_same_installation_is_refused_with_exit_4(demo, served):
    """Found by hand: two `serve` ran side by side on one config (one started by hand beside the
    unit), each scheduling every job: each night's second run waited for the first's lock."""
    root, _ = demo
    cfg = root / "flux-pmi.toml"
    first = served(cfg)
    json.loads(first.wait_for('"scheduler.started"'))
    second = served(cfg)
    code, err = second.finish()
    assert code == 4, err
    assert "another `flux-pmi serve` for this installation holds the lock" in err and f"pid {first.proc.pid}" in err
    assert '"scheduler.started"' not in err  # not one job scheduled
    first.proc.send_signal(signal.SIGTERM)
    assert first.finish()[0] == 0
    third = served(cfg)  # the first one's lock went with it
    json.loads(third.wait_for('"scheduler.started"'))
    third.proc.send_signal(signal.SIGTERM)
    assert third.finish()[0] == 0


def test_serve_catches_up_a_missed_night_and_a_stop_finishes_the_file_in_hand(tmp_path, served):
    root = tmp_path / "demo"
    make_demo(root)
    cfg = root / "flux-pmi.toml"
    # One delivery worker, so that the stop leaves the other files undone; metrics on.
    cfg.write_text(
        cfg.read_text().replace("parallel = 16", "parallel = 1")
        + '\n[service]\nmetrics_file = "prom/flux-pmi.prom"\n'
    )
    (root / "prom").mkdir()
    settings = load(cfg)
    record_nightly(settings, paris(2026, 11, 19, 4, 30))  # Thursday; Friday's night was missed
    fifo = tmp_path / "pause.fifo"
    os.mkfifo(fifo, 0o600)
    proc = served(cfg, {"FLUX_PMI_PAUSE_AT": "deliver", "FLUX_PMI_PAUSE_FIFO": str(fifo)})

    started = json.loads(proc.wait_for('"scheduler.started"'))
    assert started["catch_up"] is True and started["missed_nights"] == 1
    proc.wait_for("paused at deliver")  # the catch-up night is delivering its first file
    proc.proc.send_signal(signal.SIGTERM)
    proc.wait_for('"stop.requested"')
    with open(fifo, "wb") as f:  # release the worker: it delivers the file in hand, then stops
        f.write(b"go\n")
    code, err = proc.finish()
    assert code == 0, err

    trace = TraceStore(settings.paths.trace)
    try:
        run = trace.last_runs(1)[0]
        assert (run["command"], run["status"], run["exit_code"]) == ("run", "interrupted", 8)
        delivered = trace.db.execute(
            "SELECT COUNT(*) FROM emissions WHERE delivered_at IS NOT NULL"
        ).fetchone()[0]
        assert delivered == 1  # the file in hand, and no other
        # An interrupted night does not count: the next start-up catches up again.
        assert missed_nightly_fires(settings, trace, NOW) == [paris(2026, 11, 20, 4, 30)]
    finally:
        trace.close()
    text = (root / "prom" / "flux-pmi.prom").read_text()
    assert "flux_pmi_last_run_exit_code 8" in text
    assert 'job="nightly"' not in text  # not a success


# -- the shipped deploy files --------------------------------------------------------------------

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    """systemd's INI dialect: repeated keys accumulate, comments start with # or ;."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in (DEPLOY / name).read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def test_the_deploy_files_run_commands_the_cli_accepts_at_the_default_times():
    from flux_pmi.cli import _parser

    service = _unit("flux-pmi.service")["Service"]
    assert (
        service["Type"] == ["simple"]
        and service["KillSignal"] == ["SIGTERM"]
        and service["UMask"] == ["0077"]
    )
    assert service["NoNewPrivileges"] == ["yes"] and service["ProtectSystem"] == ["strict"]
    for unit, command in (
        ("flux-pmi.service", "serve"),
        ("flux-pmi-run.service", "run"),
        ("flux-pmi-purge.service", "purge"),
    ):
        exec_start = _unit(unit)["Service"]["ExecStart"][0].split()
        assert exec_start[0] == "/opt/flux-pmi/.venv/bin/flux-pmi" and exec_start[1] == command
        assert _parser().parse_args(exec_start[1:]).command == command
    assert _unit("flux-pmi-run.service")["Service"]["Type"] == ["oneshot"]

    nightly, purge = DEFAULT_JOBS["nightly"], DEFAULT_JOBS["purge"]
    run_timer = _unit("flux-pmi-run.timer")["Timer"]
    assert run_timer["OnCalendar"] == [
        f"Mon..Fri *-*-* {nightly.hour:02d}:{nightly.minute:02d}:00 Europe/Paris"
    ]
    assert run_timer["Persistent"] == ["true"]  # a missed night runs once at boot
    purge_timer = _unit("flux-pmi-purge.timer")["Timer"]
    assert purge_timer["OnCalendar"] == [f"*-*-* {purge.hour:02d}:{purge.minute:02d}:00 Europe/Paris"]

    cron = [
        line.split()
        for line in (DEPLOY / "crontab").read_text().splitlines()
        if line and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert "CRON_TZ=Europe/Paris" in (DEPLOY / "crontab").read_text().splitlines()
    assert cron[0][:7] == [
        str(nightly.minute),
        str(nightly.hour),
        "*",
        "*",
        "1-5",
        "flux-pmi",
        "/opt/flux-pmi/.venv/bin/flux-pmi",
    ]  # cron's 1-5 is Monday to Friday
    for line in cron:
        assert _parser().parse_args(line[7:]).command in {"run", "purge"}
        assert line[1] != "2"  # nothing in the hour the clocks repeat or skip
