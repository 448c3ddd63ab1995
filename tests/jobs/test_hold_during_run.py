"""`flux-pmi hold` while a night delivers: the night honours it from its next file, and `hold` says so.

`hold` is another process writing one row to the trace the run has open. The run is parked at
the `deliver` fault point of its first file (FLUX_PMI_PAUSE_AT), the hold is placed, then the run
is released through a FIFO: every step is a handshake, never a sleep.

With one delivery worker, the départements are served in code order (the session offers them
sorted), so the parked file is 02A's first one (DSG seq 1): it is the file "being sent right now"
when 02A is held, and it is allowed to arrive. Nothing else of 02A may be sent.
"""

from __future__ import annotations

import json
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
from flux_pmi.jobs.night import Night
from flux_pmi.trace.store import TraceStore
from flux_pmi.transport.registry import transport_for

DAY = BUSINESS_DATE.strftime("%Y%m%d")
IN_FLIGHT = f"DSG_02A_{DAY}_000001.xml.p7m"


def _run_args(root: Path) -> tuple[str, ...]:
    return ("run", "--config", str(root / "flux-pmi.toml"), "--date", BUSINESS_DATE.isoformat())


@pytest.fixture
def demo(tmp_path) -> Path:
    root = tmp_path / "demo"
    make_demo(root, departments="035,02A")
    cfg = root / "flux-pmi.toml"
    cfg.write_text(cfg.read_text().replace("parallel = 16", "parallel = 1"))  # one worker: a known order
    return root


@pytest.fixture
def paused(demo):
    run = PausedRun(demo, "deliver:1")  # the first file's upload has not begun
    yield run
    run.cleanup()


def _drop(root: Path, dept: str) -> list[str]:
    return sorted(p.name for p in (root / "drop" / dept).glob("*.p7m"))


def _emissions(root: Path, dept: str) -> dict[str, str]:
    """file name -> status of every emission of `dept`."""
    with TraceStore(root / "trace" / "flux-pmi.sqlite") as trace:
        return {r["file_name"]: r["status"] for r in trace.db.execute(
            "SELECT file_name, status FROM emissions WHERE department=?", (dept,))}


def _ever_failed(root: Path, dept: str) -> int:
    with TraceStore(root / "trace" / "flux-pmi.sqlite") as trace:
        return trace.db.execute(
            "SELECT COUNT(*) FROM emission_events v JOIN emissions e ON e.id=v.emission_id"
            " WHERE e.department=? AND v.to_status='delivery-failed'", (dept,)).fetchone()[0]


def _events(stderr: str, name: str) -> list[dict]:
    return [e for e in (json.loads(line) for line in stderr.splitlines() if line.startswith("{"))
            if e.get("event") == name]


def test_a_hold_placed_during_the_night_stops_that_departement_after_the_file_in_flight(demo, paused):
    cfg = str(demo / "flux-pmi.toml")
    paused.wait_for("paused at deliver:1")

    held = run_cli("hold", "02A", "--config", cfg, "--reason", "maintenance", "--by", "ops")
    assert held.returncode == 0, held.stdout + held.stderr
    assert "département 02A held" in held.stdout
    assert (f"a run is in progress (pid {paused.proc.pid}, `run`" in held.stdout
            and "a file it is sending to 02A right now may still arrive" in held.stdout
            and "it sends no other file to 02A, the rest waits" in held.stdout), held.stdout

    paused.release()
    code, out, err = paused.finish()

    assert code == 0, out + err  # held files do not change the code, as for a hold placed before the run
    assert "held: 2 file(s) for département 02A wait for `flux-pmi resume 02A`" in out, out
    assert "delivered=4 " in out, out  # 035's three and the file in flight
    assert all("pending=0" in line for line in out.splitlines() if " all " in line), out  # none counted as pending
    [said] = _events(err, "delivery.held_meanwhile")  # once, though 02A had two more files to send
    assert said["department"] == "02A" and said["held_by"] == "ops" and said["level"] == "warning"
    assert not _events(err, "emission.delivery_failed")

    # The file in flight finished; no other 02A file reached its drop or was marked delivered.
    assert _drop(demo, "02A") == [IN_FLIGHT]
    statuses = _emissions(demo, "02A")
    assert statuses.pop(IN_FLIGHT) == "delivered"
    assert len(statuses) == 2 and set(statuses.values()) == {"archived"}, statuses
    assert _ever_failed(demo, "02A") == 0  # waiting for a hold is not a failure
    assert len(_drop(demo, "035")) == 3 and set(_emissions(demo, "035").values()) == {"delivered"}

    status = json.loads(run_cli("status", "--config", cfg, "--json").stdout)
    [hold] = status["holds"]["active"]
    assert (hold["department"], hold["waiting"]) == ("02A", 2)

    # Resumed, the next run delivers the two that waited, each once, and the first is not sent again.
    assert run_cli("resume", "02A", "--config", cfg, "--by", "ops").returncode == 0
    rerun = run_cli(*_run_args(demo))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "delivered=2 " in rerun.stdout and "held:" not in rerun.stdout, rerun.stdout
    assert len(_drop(demo, "02A")) == 3 and set(_emissions(demo, "02A").values()) == {"delivered"}
    fps = record_fingerprints(open_delivered(demo))
    assert fps and all(n == 1 for n in fps.values())  # every record delivered exactly once


def test_a_hold_with_no_run_in_progress_says_nothing_of_a_run(demo):
    held = run_cli("hold", "02A", "--config", str(demo / "flux-pmi.toml"), "--by", "ops")
    assert held.returncode == 0, held.stdout + held.stderr
    assert "département 02A held" in held.stdout and "in progress" not in held.stdout


def test_in_process_a_hold_committed_by_another_connection_mid_upload_stops_the_next_files(tmp_path):
    """Départements in parallel (the demo's 16 workers): 02A is held by another connection to the
    trace while its first file is being uploaded; that file arrives, 02A's next ones wait, 035's go."""
    root = tmp_path / "demo"
    make_demo(root, departments="035,02A")
    settings = load(root / "flux-pmi.toml")
    sent: list[str] = []

    def factory(s, dept):
        t = transport_for(s, dept)
        inner = t.deliver

        def deliver(item):
            if item.department == "02A" and not any("_02A_" in n for n in sent):  # its first file
                with TraceStore(settings.paths.trace) as other:  # as `flux-pmi hold` would, from outside
                    other.hold("02A", NOW, by="ops", reason="maintenance")
            sent.append(item.file_name)
            return inner(item)

        t.deliver = deliver  # type: ignore[method-assign]
        return t

    report = Night(settings, clock=FixedClock(NOW), sleep=lambda _s: None, transport_factory=factory).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.OK
    assert report.held == {"02A": 2}
    mine = [n for n in sent if "_02A_" in n]
    assert len(mine) == 1 and _drop(root, "02A") == mine  # the file under way, nothing after it
    assert len(_drop(root, "035")) == 3
    assert all(s.pending == 0 for (_flow, dept), s in report.lines.items() if dept == "02A")
    assert _ever_failed(root, "02A") == 0
