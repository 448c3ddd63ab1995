"""`flux-pmi run --dry-run`: it predicts what the night claims, builds and sends, and changes nothing.

Nothing means every file under the installation byte-identical (the trace included), no new
file (no lock, no -wal beside the trace), no socket opened; and the real run that follows
does what the dry run said.
"""

from __future__ import annotations

import hashlib
import socket
from datetime import date
from pathlib import Path

import pytest
from support import run_cli
from support.night import at_four, held_demo, partner_down

from flux_pmi.core.errors import ExitCode
from flux_pmi.jobs.night import Night, NightReport
from flux_pmi.jobs.plan import NightPlan, plan
from flux_pmi.trace.store import TraceStore

D23, D24 = date(2026, 11, 23), date(2026, 11, 24)


def _state(root: Path) -> dict[str, str]:
    """Every entry under the installation: a file's SHA-256, or 'dir'."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def site(tmp_path):
    """A demo day for 035, 02A and 971, with 971 held."""
    return tmp_path / "demo", held_demo(tmp_path / "demo")


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*_args, **_kw):
        raise AssertionError("a dry run opened a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _assert_predicted(predicted: NightPlan, report: NightReport) -> None:
    """The real night's lines, deliveries and holds are those the dry run printed."""
    real = {key: (s.records, s.rejects, s.files) for key, s in report.lines.items()}
    assert real == {key: (s.records, s.rejects, s.files) for key, s in predicted.lines.items()}
    delivered: dict[str, int] = {}
    for (_flow, code), s in report.lines.items():
        if s.delivered:
            delivered[code] = delivered.get(code, 0) + s.delivered
    assert delivered == {code: n for code, n in predicted.to_send().items() if n}
    assert report.held == dict(predicted.held_files())


def test_the_dry_run_changes_nothing_and_the_night_sends_what_it_predicted(site, no_network):
    root, settings = site
    before = _state(root)
    predicted = plan(settings, D23, clock=at_four(D23))
    assert _state(root) == before
    assert sum(len(i.to_claim) for i in predicted.inbox.values()) == 9
    assert set(predicted.held) == {"971"} and predicted.held_files() == {"971": 3}
    assert predicted.to_send() == {"035": 3, "02A": 3}
    assert sum(s.rejects for s in predicted.lines.values()) > 0  # the demo's deliberately bad records

    cli = run_cli("run", "--dry-run", "--config", str(root / "flux-pmi.toml"))
    assert cli.returncode == ExitCode.OK, cli.stderr
    assert _state(root) == before  # no lock file, no run row, no -wal, nothing claimed or sent
    out = cli.stdout.splitlines()
    assert out[0] == "dry run for 2026-11-23: nothing is claimed, built, sent or written"
    assert "would deliver: 6 file(s) to 2 département(s) (0 of them built earlier and waiting)" in out
    assert "held: 3 file(s) for département 971 would wait for `flux-pmi resume 971`" in out

    report = Night(settings, clock=at_four(D23), sleep=lambda _s: None).run(D23)  # the demo's drops are local
    assert report.exit_code == ExitCode.OK
    _assert_predicted(predicted, report)


def test_files_waiting_for_a_partner_are_predicted_and_sent_the_next_night(site):
    root, settings = site
    first = Night(settings, clock=at_four(D23), transport_factory=partner_down("035"), sleep=lambda _s: None).run(D23)
    assert first.exit_code == ExitCode.UNDELIVERED
    before = _state(root)
    predicted = plan(settings, D24, clock=at_four(D24))
    assert _state(root) == before
    assert sum(len(i.to_claim) for i in predicted.inbox.values()) == 0
    assert {key: n for key, n in predicted.waiting.items() if key[1] == "035"} == {
        ("DSG", "035"): 1, ("GRO", "035"): 1, ("SGR", "035"): 1}
    report = Night(settings, clock=at_four(D24), sleep=lambda _s: None).run(D24)
    _assert_predicted(predicted, report)
    assert report.exit_code == ExitCode.OK


def test_a_trace_open_elsewhere_is_read_through_its_wal(site):
    root, settings = site
    with TraceStore(settings.paths.trace) as trace:  # a -wal exists: another process has the trace open
        trace.hold("02A", at_four(D23).now(), by="ops", reason="maintenance")
        predicted = plan(settings, D23, clock=at_four(D23))
    assert set(predicted.held) == {"971", "02A"}
    assert predicted.to_send() == {"035": 3}
