"""A clean stop: SIGTERM or SIGINT mid-delivery finishes the file, records it and exits; the next run resumes.

The signal is delivered at an exact step: FLUX_PMI_PAUSE_AT parks the delivery worker at a
fault point and says so on stderr, the test signals the process, then releases the worker
through a FIFO. Every wait is a handshake with a deadline, never a sleep.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import pytest
from support import (
    BUSINESS_DATE,
    NOW,
    PausedRun,
    make_demo,
    open_delivered,
    record_fingerprints,
    run_cli,
)

from flux_pmi.config.settings import load
from flux_pmi.core.clock import FixedClock
from flux_pmi.core.errors import ExitCode
from flux_pmi.core.stopping import GracefulStop
from flux_pmi.jobs.night import Night
from flux_pmi.testing.mock import ScriptedPartner
from flux_pmi.trace.store import TraceStore

FILES = 12  # the demo's 4 départements x 3 flows
DEADLINE = 120  # seconds: only ever reached when something is broken


def _args(root: Path) -> tuple[str, ...]:
    return ("run", "--config", str(root / "flux-pmi.toml"), "--date", BUSINESS_DATE.isoformat())


def _serial_demo(root: Path) -> Path:
    """The demo with one delivery worker: départements go one after the other, so a stop leaves some undone."""
    make_demo(root)
    cfg = root / "flux-pmi.toml"
    cfg.write_text(cfg.read_text().replace("parallel = 16", "parallel = 1"))
    return cfg


@pytest.fixture
def paused_runs():
    runs: list[PausedRun] = []

    def start(root: Path, pause_at: str) -> PausedRun:
        runs.append(PausedRun(root, pause_at))
        return runs[-1]

    yield start
    for r in runs:
        r.cleanup()


@pytest.fixture(scope="module")
def clean_fingerprints(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean") / "demo"
    _serial_demo(root)
    proc = run_cli(*_args(root))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return record_fingerprints(open_delivered(root))


def _delivered_rows(root: Path) -> set[str]:
    trace = TraceStore(root / "trace" / "flux-pmi.sqlite")
    try:
        return {
            f"{r['department']}/{r['file_name']}"
            for r in trace.db.execute("SELECT department, file_name FROM emissions WHERE status='delivered'")
        }
    finally:
        trace.close()


def _drop(root: Path) -> set[str]:
    return {str(p.relative_to(root / "drop")) for p in (root / "drop").rglob("*.p7m")}


def _total(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("TOTAL "))


def _assert_drop_is_whole(root: Path) -> None:
    """Nothing half-written: no temporary file, and each delivered file has its completion marker."""
    files = [p for p in (root / "drop").rglob("*") if p.is_file()]
    assert all(p.name.endswith((".p7m", ".sha256")) for p in files), files
    for p7m in (p for p in files if p.name.endswith(".p7m")):
        assert (p7m.parent / (p7m.name + ".sha256")).is_file(), p7m


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_delivery_finishes_the_file_records_it_and_the_rerun_completes(
    tmp_path, paused_runs, sig, clean_fingerprints
):
    root = tmp_path / "demo"
    _serial_demo(root)
    run = paused_runs(root, "delivered:3")  # the 3rd file is in the drop, not yet recorded in the trace
    run.wait_for("paused at delivered:3")
    run.proc.send_signal(sig)
    requested = json.loads(run.wait_for('"stop.requested"'))  # handled while the delivery is still in flight
    assert requested["signal"] == sig.name and requested["level"] == "warning"
    run.release()
    code, out, err = run.finish()

    assert code == ExitCode.INTERRUPTED, out + err
    assert "stopping after the current file" in err
    assert "exit 8: stopped before the end; the next run resumes" in out
    assert "delivered=3 seconds=" in _total(
        out
    )  # the file in flight was finished and counted; no other began
    assert _delivered_rows(root) == _drop(root) and len(_drop(root)) == 3  # recorded: no file without its row
    _assert_drop_is_whole(root)
    assert (root / "trace" / "flux-pmi.lock").read_text() == ""  # it released the lock on its way out

    rerun = run_cli(*_args(root))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"delivered={FILES - 3} seconds=" in _total(rerun.stdout)
    assert record_fingerprints(open_delivered(root)) == clean_fingerprints  # nothing lost, nothing twice
    assert _delivered_rows(root) == _drop(root) and len(_drop(root)) == FILES
    _assert_drop_is_whole(root)


def test_a_signal_during_the_last_delivery_exits_0_when_nothing_is_left(tmp_path, paused_runs):
    root = tmp_path / "demo"
    _serial_demo(root)
    run = paused_runs(root, f"delivered:{FILES}")
    run.wait_for(f"paused at delivered:{FILES}")
    run.proc.send_signal(signal.SIGTERM)
    run.wait_for('"stop.requested"')
    run.release()
    code, out, err = run.finish()
    assert code == 0, out + err
    assert f"delivered={FILES} seconds=" in _total(out)
    assert _delivered_rows(root) == _drop(root) and len(_drop(root)) == FILES


def test_a_second_signal_exits_at_once_even_while_a_delivery_is_stuck(
    tmp_path, paused_runs, clean_fingerprints
):
    root = tmp_path / "demo"
    _serial_demo(root)
    run = paused_runs(root, "delivered:3")
    run.wait_for("paused at delivered:3")
    run.proc.send_signal(signal.SIGTERM)
    run.wait_for('"stop.requested"')
    run.proc.send_signal(
        signal.SIGINT
    )  # the worker is still parked: only the forced exit can end the process
    code, out, err = run.finish()
    assert code == ExitCode.INTERRUPTED, out + err
    assert '"stop.forced"' in err and "stopping at once" in err
    assert out == ""  # it did not get to its summary

    rerun = run_cli(*_args(root))  # the file delivered but not recorded is found in place, not sent twice
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert record_fingerprints(open_delivered(root)) == clean_fingerprints
    assert _delivered_rows(root) == _drop(root) and len(_drop(root)) == FILES
    _assert_drop_is_whole(root)


# -- in-process: the handler itself, and Night honouring the event ----------------------------------


def test_graceful_stop_sets_the_event_on_the_first_signal_and_exits_on_the_second(capfd):
    exits: list[int] = []
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with GracefulStop(exit_process=exits.append) as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.event.wait(timeout=DEADLINE) and stop.stopping and stop.signals_received == 1
        assert exits == []
        signal.raise_signal(signal.SIGINT)  # counts as the second: either signal means "stop"
        assert stop.signals_received == 2 and exits == [ExitCode.INTERRUPTED]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    # the handler writes raw JSON lines to fd 2: a structlog call could deadlock on the logger's lock
    logs = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    assert [e["event"] for e in logs] == ["stop.requested", "stop.forced"]
    assert logs[0]["signal"] == "SIGTERM" and "stopping after the current file" in logs[0]["message"]


def test_graceful_stop_refuses_a_thread_other_than_the_main_one():
    errors: list[BaseException] = []

    def enter() -> None:
        try:
            with GracefulStop():
                pass
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=enter)
    t.start()
    t.join(timeout=DEADLINE)
    assert len(errors) == 1 and "main thread" in str(errors[0])


def test_night_records_the_file_in_flight_and_stops_the_other_departments(demo):
    root, _ = demo
    stop = threading.Event()
    progress: list[str] = []
    double = ScriptedPartner(on_deliver=lambda item: stop.set())  # the stop arrives during the first file
    cfg = root / "flux-pmi.toml"
    cfg.write_text(cfg.read_text().replace("parallel = 16", "parallel = 1"))
    night = Night(
        load(cfg),
        clock=FixedClock(NOW),
        transport_factory=double.factory,
        stop=stop,
        sleep=lambda _s: None,
        progress=progress.append,
    )
    report = night.run(BUSINESS_DATE)
    assert report.interrupted and report.exit_code == ExitCode.INTERRUPTED
    assert sum(len(v) for v in double.received.values()) == 1 == report.totals().delivered
    # Delivery starts with the first batch's files while the next batches are built: the stop, during
    # the first file, leaves the first batch's 3 other files archived and the 2 other batches claimed.
    # Whether the second batch had begun (its parse) when the stop came is the thread scheduler's call
    # (the worker reads the holds before its file, and gives the main thread a turn); it archives nothing.
    assert report.undelivered == (FILES // 3 - 1) + 2
    assert [p for p in progress if "files delivered" in p] == [f"DSG 02A: 1/{FILES // 3} files delivered"]
    assert any(p.endswith("batch 1/3 built") for p in progress)
    assert not any(p.endswith("batch 3/3 built") for p in progress)

    again = Night(
        load(cfg), clock=FixedClock(NOW), transport_factory=double.factory, sleep=lambda _s: None
    ).run(BUSINESS_DATE)
    assert again.exit_code == ExitCode.OK and again.totals().delivered == FILES - 1
    assert sum(len(v) for v in double.received.values()) == FILES


def test_progress_lines_go_to_a_terminal_only(monkeypatch, capsys):
    from flux_pmi import cli

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert cli._progress() is None  # under cron: the summary only
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    show = cli._progress()
    show("GRO 035: 3/12 files delivered")
    show("GRO 056: 4/12")
    show.close()
    # One line rewritten in place (\r, padded over the longer text before it), blanked at the end.
    assert capsys.readouterr().err == ("\rGRO 035: 3/12 files delivered" + "\rGRO 056: 4/12".ljust(30)
                                       + "\r" + " " * 13 + "\r")
