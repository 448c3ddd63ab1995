"""The retention purge: what is older than the cutoff goes (archive, trace, consumed input), the rest stays."""

from __future__ import annotations

import os
import shutil
from datetime import date, datetime
from pathlib import Path

import pytest
from support import make_demo, run_cli

from flux_pmi.archive import ArchiveStore
from flux_pmi.config.settings import load
from flux_pmi.core.clock import PARIS, FixedClock
from flux_pmi.core.errors import ConfigError, ExitCode, RefusedError
from flux_pmi.jobs import reemit
from flux_pmi.jobs.deliver import Deliverer
from flux_pmi.jobs.night import Night
from flux_pmi.jobs.retention import purge, retention_cutoff
from flux_pmi.trace.store import TraceStore

OLD, YOUNG = date(2026, 11, 23), date(2026, 12, 10)
TODAY = date(2027, 3, 1)  # cutoff 2026-12-01: OLD is outside retention, YOUNG inside
CUTOFF = date(2026, 12, 1)


@pytest.mark.parametrize(
    ("today", "months", "cutoff"),
    [
        (date(2026, 11, 23), 3, date(2026, 8, 23)),
        (date(2026, 5, 31), 3, date(2026, 2, 28)),  # the day is clamped to the month's end
        (date(2028, 5, 31), 3, date(2028, 2, 29)),  # leap year
        (date(2024, 5, 30), 3, date(2024, 2, 29)),
        (date(2026, 3, 1), 3, date(2025, 12, 1)),  # across the year
        (date(2027, 1, 15), 3, date(2026, 10, 15)),
        (date(2026, 12, 31), 6, date(2026, 6, 30)),
        (date(2026, 8, 31), 6, date(2026, 2, 28)),
        (date(2026, 7, 31), 3, date(2026, 4, 30)),
        (date(2027, 3, 1), 3, date(2026, 12, 1)),
        (date(2026, 11, 23), 0, date(2026, 11, 23)),
        (date(2026, 11, 23), 24, date(2024, 11, 23)),
    ],
)
def test_cutoff_arithmetic(today, months, cutoff):
    assert retention_cutoff(today, months) == cutoff


def _clock(day: date, hour: int = 4) -> FixedClock:
    return FixedClock(datetime(day.year, day.month, day.day, hour, 0, tzinfo=PARIS))


def _mtime(path: Path, day: date) -> None:
    t = datetime(day.year, day.month, day.day, 12, 0, tzinfo=PARIS).timestamp()
    os.utime(path, (t, t))


@pytest.fixture
def site(tmp_path):
    """Two nights: OLD with records (and a re-emission), YOUNG with empty flows and a re-dropped input."""
    root = tmp_path / "demo"
    make_demo(root, departments="035,02A")
    cfg = root / "flux-pmi.toml"
    gro_input = next((root / "inbox" / "GRO").glob("CRI_*.xml"))  # a Cristal file, as Cristal writes it
    gro_bytes = gro_input.read_bytes()
    assert Night(load(cfg), clock=_clock(OLD), sleep=lambda _s: None, purge=False).run(OLD).exit_code == ExitCode.OK
    with _store(root) as trace:
        asked = _clock(date(2026, 11, 24), hour=10)
        settings = load(cfg)
        reemit.request(
            settings,
            trace,
            reemit.ReemitRequest(["GRO"], ["035"], OLD, by="ops", reason="lost"),
            clock=asked,
            deliverer=Deliverer(settings, clock=asked, sleep=lambda _s: None),
        )
    (root / "inbox" / "GRO" / gro_input.name).write_bytes(gro_bytes)  # the same bytes dropped again
    assert Night(load(cfg), clock=_clock(YOUNG), sleep=lambda _s: None, purge=False).run(YOUNG).exit_code == ExitCode.OK
    old_dup = next((root / "consumed" / "duplicates" / "GRO").iterdir())
    _mtime(old_dup, OLD)
    young_dup = old_dup.with_name("young-copy.xml.0123456789ab")
    shutil.copy(old_dup, young_dup)
    _mtime(young_dup, YOUNG)
    return root


def _store(root: Path) -> TraceStore:
    return _Closing(root / "trace" / "flux-pmi.sqlite")


class _Closing(TraceStore):
    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _purge(root: Path, trace: TraceStore, today: date = TODAY):
    settings = load(root / "flux-pmi.toml")
    return purge(settings, trace, ArchiveStore(settings.paths.archive), today=today, now=_clock(today).now())


def _count(trace: TraceStore, sql: str, *args) -> int:
    return trace.db.execute(sql, args).fetchone()[0]


def _tree(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root)) for sub in ("archive", "consumed") for p in (root / sub).rglob("*")
    )


def test_purge_deletes_what_is_older_than_the_cutoff_and_keeps_the_rest(site):
    archive = site / "archive"
    old_files = sorted((archive / "2026" / "11" / "23").glob("*.p7m"))
    sealed = [p for p in old_files if not p.name.endswith(".archive.p7m")]
    assert any("_R01" in p.name for p in sealed)
    with _store(site) as trace:
        old_emissions = _count(
            trace, "SELECT COUNT(*) FROM emissions WHERE business_date < ?", CUTOFF.isoformat()
        )
        young_emissions = _count(
            trace, "SELECT COUNT(*) FROM emissions WHERE business_date >= ?", CUTOFF.isoformat()
        )
        assert old_emissions == 7 and young_emissions == 6  # 6 originals + 1 re-emission; 6 empty flows
        assert _count(trace, "SELECT COUNT(*) FROM records") > 0

        result = _purge(site, trace)

        assert result.cutoff == CUTOFF
        assert (result.archive_days, result.archive_files, result.emissions) == (
            1,
            len(sealed),
            old_emissions,
        )
        # consumed: OLD's three batches (DSG, SGR, GRO), kept encrypted, one file each
        assert (result.consumed_dirs, result.duplicates, result.undelivered, result.held) == (3, 1, 0, 0)
        assert (
            _count(trace, "SELECT COUNT(*) FROM emissions WHERE business_date < ?", CUTOFF.isoformat()) == 0
        )
        assert _count(trace, "SELECT COUNT(*) FROM emissions") == young_emissions
        assert _count(trace, "SELECT COUNT(*) FROM records") == 0  # OLD's; YOUNG's flows were empty
        assert (
            _count(
                trace,
                "SELECT COUNT(*) FROM emission_events WHERE emission_id NOT IN (SELECT id FROM emissions)",
            )
            == 0
        )
        assert _count(trace, "SELECT COUNT(*) FROM emission_events") >= young_emissions
        assert _count(trace, "SELECT COUNT(*) FROM batches WHERE business_date < ?", CUTOFF.isoformat()) == 0
        assert _count(trace, "SELECT COUNT(*) FROM batches WHERE business_date = ?", YOUNG.isoformat()) > 0
        assert (
            _count(trace, "SELECT COUNT(*) FROM inbox_files WHERE batch_id NOT IN (SELECT id FROM batches)")
            == 0
        )
        assert _count(trace, "SELECT COUNT(*) FROM rejects") == 0  # all OLD's
        assert _count(trace, "SELECT COUNT(*) FROM runs WHERE started_at < ?", CUTOFF.isoformat()) == 0
        assert _count(trace, "SELECT COUNT(*) FROM runs") == 1  # YOUNG's night
        assert _count(trace, "SELECT COUNT(*) FROM reemission_requests") == 0  # asked on 2026-11-24
        assert _count(trace, "SELECT COUNT(*) FROM anomalies WHERE kind='duplicate-input'") == 1  # on YOUNG
        assert trace.db.execute("PRAGMA foreign_key_check").fetchall() == []
        p = trace.db.execute("SELECT * FROM purges").fetchall()
        assert [(r["archive_cutoff"], r["archive_files"], r["emissions"], r["consumed_dirs"]) for r in p] == [
            ("2026-12-01", len(sealed), old_emissions, 3)
        ]

    assert not (archive / "2026" / "11").exists()  # the emptied month goes too
    assert len(list((archive / "2026" / "12" / "10").glob("*.p7m"))) == 12  # 6 sealed + 6 archive copies
    assert not (site / "consumed" / OLD.isoformat()).exists()
    assert list((site / "consumed" / YOUNG.isoformat()).iterdir())
    assert [p.name for p in (site / "consumed" / "duplicates" / "GRO").iterdir()] == [
        "young-copy.xml.0123456789ab"
    ]
    # consumed input is never readable at rest: only encrypted batches
    assert all(p.name.endswith(".tar.p7m") for p in (site / "consumed" / YOUNG.isoformat()).iterdir())


def test_purge_is_idempotent_and_a_purged_date_cannot_be_re_emitted(site):
    with _store(site) as trace:
        _purge(site, trace)
        tree, emissions = _tree(site), _count(trace, "SELECT COUNT(*) FROM emissions")
        again = _purge(site, trace)
        assert (again.archive_files, again.emissions, again.consumed_dirs, again.duplicates) == (0, 0, 0, 0)
        assert not any(again.rows.values())
        assert _tree(site) == tree and _count(trace, "SELECT COUNT(*) FROM emissions") == emissions
        assert _count(trace, "SELECT COUNT(*) FROM purges") == 2
        # Asked with a clock at which the date would still be in retention: the purge's cutoff wins.
        settings = load(site / "flux-pmi.toml")
        asked = _clock(date(2026, 12, 15), hour=10)
        with pytest.raises(
            RefusedError, match="2026-11-23 is outside retention .*before 2026-12-01 are purged"
        ):
            reemit.request(
                settings,
                trace,
                reemit.ReemitRequest(["GRO"], ["035"], OLD, by="ops"),
                clock=asked,
                deliverer=Deliverer(settings, clock=asked),
            )


def test_a_purge_killed_after_marking_is_finished_by_the_next_one(site, monkeypatch):
    def crash(self, day, name):
        raise OSError("killed")

    with _store(site) as trace:
        with monkeypatch.context() as m:
            m.setattr(ArchiveStore, "purge_file", crash)
            with pytest.raises(OSError):
                _purge(site, trace)
        marked = _count(trace, "SELECT COUNT(*) FROM emissions WHERE purged_at IS NOT NULL")
        assert marked == 7 and (site / "archive" / "2026" / "11" / "23").exists()
        assert all(e.business_date >= CUTOFF.isoformat() for e in trace.to_deliver())
        settings = load(site / "flux-pmi.toml")
        asked = _clock(date(2026, 11, 25), hour=10)  # by this clock OLD is well inside retention
        with pytest.raises(RefusedError, match="outside retention"):
            reemit.request(
                settings,
                trace,
                reemit.ReemitRequest(["GRO"], ["035"], OLD, by="ops"),
                clock=asked,
                deliverer=Deliverer(settings, clock=asked),
            )
        old = trace.db.execute("SELECT id FROM emissions WHERE purged_at IS NOT NULL LIMIT 1").fetchone()[0]
        with pytest.raises(RefusedError, match="outside retention"):
            reemit.reemit_emission(
                settings,
                trace,
                ArchiveStore(settings.paths.archive),
                old,
                now=asked.now(),
                by=reemit.AUTO_REQUESTER,
                reason="KO",
            )

        result = _purge(site, trace)
        assert result.emissions == 7 and not (site / "archive" / "2026" / "11").exists()
        assert _count(trace, "SELECT COUNT(*) FROM emissions WHERE purged_at IS NOT NULL") == 0


def test_a_batch_still_in_progress_is_kept_whatever_its_age(site):
    with _store(site) as trace:
        now = _clock(date(2026, 11, 20)).now()
        run = trace.start_run("run", date(2026, 11, 20), now)
        batch = trace.create_batch("GRO", date(2026, 11, 20), run, now, [])
        stuck = trace.get_or_create_emission(batch, "GRO", "035", date(2026, 11, 20), 1, now)
        result = _purge(site, trace)
        assert result.held == 1 and trace.emission(stuck.id).status == "built"
        assert _count(trace, "SELECT COUNT(*) FROM batches WHERE id=?", batch) == 1
        assert _count(trace, "SELECT COUNT(*) FROM runs WHERE id=?", run) == 1
        assert result.emissions == 7  # OLD's went as usual


def test_retention_below_three_months_is_refused_at_load_and_a_longer_one_keeps_more(site):
    cfg = site / "flux-pmi.toml"
    text = cfg.read_text()
    cfg.write_text(text + "\n[retention]\nmonths = 2\n")
    with pytest.raises(ConfigError, match="retention.months"):
        load(cfg)
    # The old single key maps to archive_months = months, trace_months = min(months, 3).
    cfg.write_text(text + "\n[retention]\nmonths = 6\n")
    assert (load(cfg).retention.archive_months, load(cfg).retention.trace_months) == (6, 3)
    with _store(site) as trace:
        result = _purge(site, trace)
    # The rows go at 3 months (the trace's maximum); the files stay 6 months after their transmission.
    assert result.cutoff == date(2026, 12, 1) and result.archive_cutoff == date(2026, 9, 1)
    assert result.emissions == 7 and result.archive_files == 0
    assert (site / "archive" / "2026" / "11" / "23").exists()
    # Later, with no row left, the orphan files go by their date (the last transmission).
    with _store(site) as trace:
        later = _purge(site, trace, today=date(2027, 6, 1))
    assert later.archive_files == 7 and not (site / "archive" / "2026" / "11").exists()


def test_trace_months_above_three_and_archive_months_below_three_are_refused(site):
    cfg = site / "flux-pmi.toml"
    text = cfg.read_text()
    cfg.write_text(text + "\n[retention]\ntrace_months = 12\n")
    with pytest.raises(ConfigError, match=r"flux-pmi.toml: retention.trace_months: from 1 to 3"):
        load(cfg)
    cfg.write_text(text + "\n[retention]\narchive_months = 2\n")
    with pytest.raises(ConfigError, match="retention.archive_months: at least 3"):
        load(cfg)
    cfg.write_text(text + "\n[retention]\narchive_months = 4\ntrace_months = 2\n")
    assert (load(cfg).retention.archive_months, load(cfg).retention.trace_months) == (4, 2)


def test_the_purge_command(site):
    # --today may not run ahead of the clock (guards.py): the clock says TODAY too.
    out = run_cli("purge", "--config", str(site / "flux-pmi.toml"), "--today", TODAY.isoformat(),
                  env_extra={"FLUX_PMI_NOW": datetime(2027, 3, 1, 5, 30, tzinfo=PARIS).isoformat()})
    assert out.returncode == ExitCode.OK, out.stdout + out.stderr
    assert "purge: trace cutoff 2026-12-01, archive cutoff 2026-12-01" in out.stdout
    assert (
        "trace: 7 emission(s)" in out.stdout
        and "consumed: 3 batch(es), 1 set-aside duplicate(s)" in out.stdout
    )
    assert not (site / "archive" / "2026" / "11").exists()
    # Without --today the (pinned) clock says 2026-11-23: nothing is old enough.
    again = run_cli("purge", "--config", str(site / "flux-pmi.toml"))
    assert again.returncode == ExitCode.OK and "purge: trace cutoff 2026-08-23" in again.stdout
    assert "archive: 0 file(s)" in again.stdout


def test_quarantined_input_goes_once_its_reason_is_past_the_retention(tmp_path):
    from flux_pmi.jobs.retention import _purge_quarantine

    folder = tmp_path / "quarantine" / "DSG"
    folder.mkdir(parents=True)
    for name, day in (("old.xml", date(2026, 7, 1)), ("young.xml", date(2026, 11, 1))):
        (folder / name).write_text("<personal data>")
        (folder / f"{name}.reason").write_text("XML_MALFORMED: line 1\n")
        stamp = datetime(day.year, day.month, day.day, 12, tzinfo=PARIS).timestamp()
        os.utime(folder / f"{name}.reason", (stamp, stamp))
    assert _purge_quarantine(tmp_path / "quarantine", date(2026, 8, 23)) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["young.xml", "young.xml.reason"]
    assert _purge_quarantine(tmp_path / "quarantine", date(2026, 8, 23)) == 0  # idempotent


def test_closed_incidents_and_their_notices_go_with_the_trace_open_ones_stay(site):
    from flux_pmi.trace.incidents import Cause, Draft, Expected, Facts, IncidentLog, NoticeKind

    facts = Facts(Cause.PARTNER, Expected.NEXT_RUN, ("GRO",), ("GRO_035_20261123_000001.xml.p7m",), 3, "2026-12-01")
    at = datetime(2026, 11, 24, 5, 0, tzinfo=PARIS)
    with _store(site) as trace:
        log = IncidentLog(trace)
        for number in ("INC-035-20261124-1", "INC-056-20261124-1"):
            log.open(number, number[4:7], facts, at, Draft(NoticeKind.OPEN, "s", "b"), None)
        closed = log.open_incidents()["035"]
        log.close(closed.id, at, Draft(NoticeKind.CLOSE, "s", "b"), None)
        _purge(site, trace)
        assert [i.number for i in log.incidents()] == ["INC-056-20261124-1"]  # still open: kept
        assert {n.incident_id for n in log.notices()} == {log.open_incidents()["056"].id}
