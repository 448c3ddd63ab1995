"""`flux-pmi retry ID`: one archived, undelivered emission delivered now, by the night's delivery path.

The demo night of the issue: 035's partner is down, 971 is held, 02A takes its files.
"""

from __future__ import annotations

from datetime import date, datetime

import pytest
from support import run_cli
from support.night import at_four, held_demo, partner_down

from flux_pmi.core.clock import PARIS, FixedClock
from flux_pmi.core.errors import ExitCode, RefusedError
from flux_pmi.jobs.deliver import Deliverer
from flux_pmi.jobs.night import Night
from flux_pmi.jobs.retry import retry
from flux_pmi.trace.history import HistoryFilter, HistoryState
from flux_pmi.trace.lifecycle import RunStatus, Status
from flux_pmi.trace.store import TraceStore

D23, D24 = date(2026, 11, 23), date(2026, 11, 24)
LATER = FixedClock(datetime(2026, 11, 24, 10, 0, tzinfo=PARIS))


_down = partner_down("035")


@pytest.fixture
def night(tmp_path):
    """One night with 035 down and 971 held: 035's and 971's files wait, 02A's are delivered."""
    root = tmp_path / "demo"
    settings = held_demo(root)
    report = Night(settings, clock=at_four(D23), transport_factory=_down, sleep=lambda _s: None).run(D23)
    assert report.exit_code == ExitCode.UNDELIVERED and report.held == {"971": 3}
    return root, settings


def _history(settings, state=HistoryState.ALL, **kw):
    with TraceStore(settings.paths.trace) as trace:
        return trace.history(HistoryFilter(state=state, **kw))


def _drop(root, dept):
    return sorted(p.name for p in (root / "drop" / dept).glob("*.p7m"))


def test_undelivered_lists_exactly_the_failing_and_the_held_files_and_retry_delivers_one(night):
    root, settings = night
    waiting = _history(settings, HistoryState.UNDELIVERED)
    assert {(r.department, r.state) for r in waiting} == {("035", Status.DELIVERY_FAILED), ("971", "held")}
    assert [r.department for r in _history(settings, HistoryState.HELD)] == ["971"] * 3
    gro = next(r for r in waiting if r.department == "035" and r.flow == "GRO")

    still_down = retry(settings, gro.id, clock=LATER,
                       deliverer=Deliverer(settings, clock=LATER, transport_factory=_down, sleep=lambda _s: None))
    assert still_down.exit_code == ExitCode.UNDELIVERED and _drop(root, "035") == []
    assert any("partner down" in line for line in still_down.lines)

    back = retry(settings, gro.id, clock=LATER)
    assert back.exit_code == ExitCode.OK
    assert _drop(root, "035") == [gro.file_name]  # that file and nothing else: the others wait for the night
    with TraceStore(settings.paths.trace) as trace:
        assert trace.emission(gro.id).status == Status.DELIVERED
        runs = [r for r in trace.last_runs(5) if r.command == "retry"]
        assert [(r.status, r.exit_code, r.files) for r in runs] == [(RunStatus.DONE, 0, 1),
                                                                    (RunStatus.UNDELIVERED, 3, 0)]
    left = _history(settings, HistoryState.UNDELIVERED, departments=("035",))
    assert sorted(r.flow for r in left) == ["DSG", "SGR"]


def test_what_may_not_be_sent_now_is_refused_and_nothing_is_traced(night):
    root, settings = night
    rows = _history(settings)
    held = next(r for r in rows if r.department == "971")
    delivered = next(r for r in rows if r.department == "02A")
    with TraceStore(settings.paths.trace) as trace:
        runs_before = len(trace.last_runs(50))
    for emission_id, why in ((held.id, "flux-pmi resume 971"), (delivered.id, "delivered already"),
                             (999_999, "no emission 999999")):
        with pytest.raises(RefusedError, match=why):
            retry(settings, emission_id, clock=LATER)
    with TraceStore(settings.paths.trace) as trace:
        assert len(trace.last_runs(50)) == runs_before
    assert _drop(root, "971") == []


def test_a_later_sequence_waits_for_the_earlier_one(night):
    root, settings = night
    Night(settings, clock=at_four(D24), transport_factory=_down, sleep=lambda _s: None).run(D24)
    gro = [r for r in _history(settings, HistoryState.UNDELIVERED, departments=("035",), flows=("GRO",))]
    assert [r.seq for r in gro] == [1, 2]
    with pytest.raises(RefusedError, match=f"retry {gro[0].id} first"):
        retry(settings, gro[1].id, clock=LATER)
    assert retry(settings, gro[0].id, clock=LATER).exit_code == ExitCode.OK
    assert retry(settings, gro[1].id, clock=LATER).exit_code == ExitCode.OK
    assert _drop(root, "035") == sorted(r.file_name for r in gro)


def test_the_command_exits_0_when_delivered_and_6_when_refused(night):
    root, settings = night
    config = str(root / "flux-pmi.toml")
    dsg = next(r for r in _history(settings, HistoryState.UNDELIVERED, departments=("035",), flows=("DSG",)))
    done = run_cli("retry", str(dsg.id), "--config", config)
    assert done.returncode == ExitCode.OK, done.stderr
    assert done.stdout.splitlines() == [f"delivered: {dsg.file_name} to département 035"]
    again = run_cli("retry", str(dsg.id), "--config", config)
    assert again.returncode == ExitCode.REFUSED
    assert "retry refused, nothing sent" in again.stdout and "reemit" in again.stdout
    assert not (root / "trace" / "flux-pmi.lock").exists() or (root / "trace" / "flux-pmi.lock").stat().st_size == 0
