"""An operator's ordinary day loses nothing (issue 12): holds, parked départements, sequences that
survive the purge, a reemit that sends only what was asked, dry runs that change nothing, dead runs."""

from __future__ import annotations

import json
import os
import shutil
import stat
from datetime import date, datetime
from pathlib import Path

import pytest
from support import BUSINESS_DATE, make_demo, open_delivered, record_fingerprints, run_cli

from flux_pmi.archive import ArchiveStore
from flux_pmi.config.settings import load
from flux_pmi.core.clock import PARIS, FixedClock
from flux_pmi.core.errors import ExitCode, FluxError, RefusedError
from flux_pmi.demo.setup import write_demo
from flux_pmi.jobs import reemit
from flux_pmi.jobs.deliver import Deliverer
from flux_pmi.jobs.night import Night
from flux_pmi.jobs.retention import purge
from flux_pmi.trace.lifecycle import ParkedState, RunStatus
from flux_pmi.trace.store import TraceStore
from flux_pmi.transport.registry import transport_for

D23, D24 = date(2026, 11, 23), date(2026, 11, 24)


def _clock(day: date, hour: int = 4) -> FixedClock:
    return FixedClock(datetime(day.year, day.month, day.day, hour, 0, tzinfo=PARIS))


def _night(root: Path, day: date, **kw):
    return Night(load(root / "flux-pmi.toml"), clock=_clock(day), sleep=lambda _s: None, **kw).run(day)


def _trace(root: Path) -> TraceStore:
    return TraceStore(root / "trace" / "flux-pmi.sqlite")


def _drop(root: Path, dept: str) -> list[str]:
    return sorted(p.name for p in (root / "drop" / dept).glob("*.p7m"))


def _feed(root: Path, day: date, seed: int) -> None:
    """New upstream input for `day` (another seed: other records), dropped in the inbox."""
    other = root.parent / f"feed-{day}"
    write_demo(other, business_date=day, departments="035,02A", seed=seed,
               now=datetime(day.year, day.month, day.day, 3, tzinfo=PARIS))
    for src in (other / "inbox").rglob("*"):
        if src.is_file():
            dst = root / "inbox" / src.relative_to(other / "inbox")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)


# -- sequences ------------------------------------------------------------------------------


def test_the_sequence_continues_across_a_purge_far_ahead(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, departments="035,02A")
    assert _night(root, D23, purge=False).exit_code == ExitCode.OK
    assert "DSG_035_20261123_000001.xml.p7m" in _drop(root, "035")
    far = date(2027, 3, 15)
    settings = load(root / "flux-pmi.toml")
    trace = _trace(root)
    try:
        result = purge(settings, trace, ArchiveStore(settings.paths.archive), today=far, now=_clock(far).now())
        assert result.emissions > 0 and trace.db.execute("SELECT COUNT(*) FROM emissions").fetchone()[0] == 0
        assert trace.last_seq("DSG", "035") == 1  # the purge never touches the sequences
    finally:
        trace.close()
    assert _night(root, far, purge=False).exit_code == ExitCode.OK  # empty flows: a file each
    assert "DSG_035_20270315_000002.xml.p7m" in _drop(root, "035")


def test_the_sequence_continues_after_three_months_without_a_file(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, departments="035,02A")
    cfg = root / "flux-pmi.toml"
    cfg.write_text(cfg.read_text().replace("empty_flows = true", "empty_flows = false"))
    assert _night(root, D23).exit_code == ExitCode.OK
    later = date(2027, 3, 1)  # more than 3 months after D23: the night's own purge empties the trace
    _feed(root, later, seed=99)
    assert _night(root, later).exit_code in (ExitCode.OK, ExitCode.QUARANTINED)
    with _trace(root) as trace:
        assert trace.db.execute("SELECT COUNT(*) FROM emissions WHERE business_date < '2026-12-01'").fetchone()[0] == 0
    assert "DSG_035_20270301_000002.xml.p7m" in _drop(root, "035")
    assert not any(n.startswith("DSG_035_20270301_000001") for n in _drop(root, "035"))


# -- hold and resume ------------------------------------------------------------------------


def test_a_held_partner_waits_and_gets_its_files_on_resume_exactly_once_in_order(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, departments="035,02A")
    cfg = str(root / "flux-pmi.toml")
    held = run_cli("hold", "035", "--config", cfg, "--reason", "PMI server migration", "--by", "ops-a")
    assert held.returncode == 0 and "département 035 held" in held.stdout, held.stdout + held.stderr

    opened: list[str] = []

    def factory(settings, dept):
        opened.append(dept.code)
        return transport_for(settings, dept)

    report = _night(root, D23, transport_factory=factory)
    assert report.exit_code == ExitCode.OK  # waiting for a hold is what the operator asked
    assert report.held == {"035": 3}
    assert "035" not in opened  # not one connection, not even for the acks
    assert _drop(root, "035") == [] and len(_drop(root, "02A")) == 3

    status = run_cli("status", "--config", cfg, "--json", env_extra={"FLUX_PMI_NOW": "2026-11-23T09:00:00+01:00"})
    doc = json.loads(status.stdout)
    [hold] = doc["holds"]["active"]
    assert (hold["department"], hold["by"], hold["reason"], hold["waiting"]) == (
        "035", "ops-a", "PMI server migration", 3)
    assert hold["next_deadline"] is not None and len(hold["files"]) == 3
    text = run_cli("status", "--config", cfg).stdout
    assert "HOLDS (1 département(s) held)" in text and "PMI server migration" in text

    resumed = run_cli("resume", "035", "--config", cfg, "--by", "ops-b")
    assert resumed.returncode == 0 and "resumed by ops-b" in resumed.stdout
    delivered_order: list[str] = []

    def recording(settings, dept):
        t = transport_for(settings, dept)
        inner = t.deliver

        def deliver(item):
            delivered_order.append(item.file_name)
            return inner(item)

        t.deliver = deliver  # type: ignore[method-assign]
        return t

    assert _night(root, D24, transport_factory=recording).exit_code == ExitCode.OK
    mine = [n for n in delivered_order if n.split("_")[1] == "035"]
    for flow in ("DSG", "SGR", "GRO"):
        seqs = [n for n in mine if n.startswith(flow)]
        assert seqs == sorted(seqs) and seqs[0].endswith("_000001" + seqs[0][seqs[0].index(".") :])
    assert len(_drop(root, "035")) == 6  # D23's three, then D24's empty flows
    fps = record_fingerprints(open_delivered(root))
    assert fps and all(n == 1 for n in fps.values())
    with _trace(root) as trace:
        [h] = trace.holds_history()
        assert (h["held_by"], h["resumed_by"]) == ("ops-a", "ops-b") and h["resumed_at"]


# -- enabled = false keeps the records ------------------------------------------------------


def test_records_of_a_disabled_departement_are_kept_and_emitted_once_it_is_enabled(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, departments="035,02A,067")
    cfg = root / "flux-pmi.toml"
    original = cfg.read_text()
    cfg.write_text(original.replace('[departments."067"]\n', '[departments."067"]\nenabled = false\n'))
    report = _night(root, D23)
    assert report.parked > 0 and not list((root / "drop" / "067").iterdir())  # nothing sent to it
    with _trace(root) as trace:
        kept = trace.db.execute("SELECT COUNT(*) FROM rejects WHERE code='DEPARTMENT_NOT_ENABLED_KEPT'"
                                " AND department='067'").fetchone()[0]
        assert kept == report.parked == sum(r["count"] for r in trace.parked())
    # Consumed input is never readable at rest: only encrypted, owner-only.
    consumed = [p for p in (root / "consumed").rglob("*") if p.is_file()]
    assert consumed and all(p.name.endswith(".tar.p7m") for p in consumed)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in consumed)
    assert not list((root / "work").glob("batch-*"))

    status = json.loads(run_cli("status", "--config", str(cfg), "--json").stdout)
    assert status["parked"]["records"] == report.parked and "067" in status["parked"]["by_department"]

    cfg.write_text(original)  # 067 enabled
    again = _night(root, D24)
    assert again.exit_code == ExitCode.OK and again.replayed == report.parked
    delivered = open_delivered(root)
    mine = {n: b for n, b in delivered.items() if n.startswith("067/") and "20261123" in n}
    assert sum(record_fingerprints(mine).values()) == report.parked
    with _trace(root) as trace:
        assert trace.parked() == [] and {r["state"] for r in trace.parked(None)} == {ParkedState.EMITTED}
    third = _night(root, date(2026, 11, 25))
    assert third.replayed == 0
    fps = record_fingerprints(open_delivered(root))
    assert all(n == 1 for n in fps.values())  # exactly once


# -- reemit sends what was asked --------------------------------------------------------------


def test_reemit_for_02A_sends_only_02A_s_file(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, departments="035,02A")
    assert _night(root, D23).exit_code == ExitCode.OK  # Monday's files reach both partners
    sent = {d: _drop(root, d) for d in ("035", "02A")}

    def down(settings, dept):
        raise FluxError("partner down for the test")

    # Tuesday's night cannot deliver: every département has files pending.
    assert _night(root, D24, transport_factory=down).exit_code == ExitCode.UNDELIVERED
    settings = load(root / "flux-pmi.toml")
    asked = _clock(D24, hour=10)
    with _trace(root) as trace:
        pending = len(trace.to_deliver())
        assert pending == 6
        result = reemit.request(settings, trace, reemit.ReemitRequest(["DSG"], ["02A"], D23, by="ops"),
                                clock=asked, deliverer=Deliverer(settings, clock=asked, sleep=lambda _s: None))
        assert result.exit_code == ExitCode.OK
        assert _drop(root, "02A") == sorted([*sent["02A"], "DSG_02A_20261123_000001_R01.xml.p7m"])
        assert _drop(root, "035") == sent["035"]  # the other pending files wait for the night
        assert len(trace.to_deliver()) == pending


def test_reemit_of_a_file_not_delivered_yet_is_refused_not_sent_twice(tmp_path):
    """Its original still waits (partner failing or held): the night delivers it. A copy made now
    would reach the partner twice, the original and the `_R01`."""
    root = tmp_path / "demo"
    make_demo(root, departments="035,02A")

    def down(settings, dept):
        raise FluxError("partner down for the test")

    assert _night(root, D23, transport_factory=down).exit_code == ExitCode.UNDELIVERED
    settings = load(root / "flux-pmi.toml")
    asked = _clock(D23, hour=10)
    with _trace(root) as trace:
        with pytest.raises(RefusedError, match="not delivered yet .*would send it twice"):
            reemit.request(settings, trace, reemit.ReemitRequest(["DSG"], ["02A"], D23, by="ops"),
                           clock=asked, deliverer=Deliverer(settings, clock=asked, sleep=lambda _s: None))
        assert len(trace.to_deliver()) == 6 and _drop(root, "02A") == []
    # The night then delivers each file once.
    assert _night(root, D23).exit_code == ExitCode.OK
    assert _drop(root, "02A") == sorted(f"{f}_02A_20261123_000001.{'zip' if f == 'SGR' else 'xml'}.p7m"
                                        for f in ("DSG", "GRO", "SGR"))


# -- dry runs change nothing ----------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_dry_runs_print_and_change_nothing(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, departments="035,02A")
    assert _night(root, D23).exit_code == ExitCode.OK
    cfg = str(root / "flux-pmi.toml")
    before = _snapshot(root)
    r = run_cli("reemit", "--config", cfg, "--flow", "all", "--department", "02A", "--date", D23.isoformat(),
                "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "would re-emit and send: DSG_02A_20261123_000001_R01.xml.p7m" in r.stdout
    assert "TOTAL dry run: 3 file(s)" in r.stdout
    # The purge's --today must be within a day of the clock (a guard rail): the clock moves on too.
    later = {"FLUX_PMI_NOW": "2027-03-15T10:00:00+01:00"}
    p = run_cli("purge", "--config", cfg, "--today", "2027-03-15", "--dry-run", env_extra=later)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "dry run, nothing changed" in p.stdout and "trace: 6 emission(s)" in p.stdout
    after = _snapshot(root)
    assert after.pop("trace/flux-pmi.lock") == b""  # the run lock, taken and released: empty
    assert after == before  # trace, archive, consumed, drop: byte-identical
    real = run_cli("purge", "--config", cfg, "--today", "2027-03-15", env_extra=later)
    assert "trace: 6 emission(s)" in real.stdout and _snapshot(root) != before


# -- a run that died ----------------------------------------------------------------------------


def test_a_killed_run_shows_as_died(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, departments="035,02A")
    cfg = str(root / "flux-pmi.toml")
    killed = run_cli("run", "--config", cfg, "--date", BUSINESS_DATE.isoformat(),
                     env_extra={"FLUX_PMI_CRASH_AT": "deliver"})
    assert killed.returncode == -9
    doc = json.loads(run_cli("status", "--config", cfg, "--json").stdout)
    assert doc["runs"][0]["status"] == RunStatus.DIED  # nobody holds the lock: the process is gone
    with _trace(root) as trace:
        assert trace.last_runs(1)[0]["status"] == RunStatus.RUNNING  # status only reads
    rerun = run_cli("run", "--config", cfg, "--date", BUSINESS_DATE.isoformat())
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    with _trace(root) as trace:
        runs = trace.last_runs(2)
        assert [r["status"] for r in runs] == [RunStatus.DONE, RunStatus.DIED]
        assert runs[1]["finished_at"] is not None
    assert os.path.exists(root / "trace" / "flux-pmi.lock")
