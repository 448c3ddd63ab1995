"""Re-emission on request: archived files sent again, unchanged or re-sealed, traced, refused when it must be."""

from __future__ import annotations

import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from support import NOW, make_demo, run_cli

from flux_pmi.archive import ArchiveStore
from flux_pmi.config.settings import load
from flux_pmi.core.clock import PARIS, FixedClock
from flux_pmi.core.errors import ConfigError, ExitCode, RefusedError, SealError
from flux_pmi.core.workdays import add_working_days
from flux_pmi.demo import pki as demo_pki
from flux_pmi.jobs import reemit
from flux_pmi.jobs.deliver import Deliverer
from flux_pmi.jobs.night import Night
from flux_pmi.jobs.retention import purge
from flux_pmi.seal import certs, cms
from flux_pmi.testing.mock import ScriptedPartner
from flux_pmi.trace.store import TraceStore
from flux_pmi.transport.registry import transport_for

D23, D24, D25 = date(2026, 11, 23), date(2026, 11, 24), date(2026, 11, 25)  # Monday to Wednesday
ASKED = datetime(2026, 11, 26, 10, 0, tzinfo=PARIS)  # a Thursday


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, departments="035,02A")
    return root


def _clock(day: date, hour: int = 4) -> FixedClock:
    return FixedClock(datetime(day.year, day.month, day.day, hour, 0, tzinfo=PARIS))


def _nights(root: Path, *days: date) -> None:
    for day in days:
        report = Night(load(root / "flux-pmi.toml"), clock=_clock(day), sleep=lambda _s: None).run(day)
        assert report.exit_code == ExitCode.OK, report.problems


def _ask(root: Path, trace: TraceStore, *, clock: FixedClock | None = None, **kw) -> reemit.ReemitResult:
    clock = clock or FixedClock(ASKED)
    settings = load(root / "flux-pmi.toml")
    kw.setdefault("by", "ops-jdupont")
    kw.setdefault("reason", "files lost on the PMI side")
    deliverer = Deliverer(
        settings,
        clock=clock,
        sleep=lambda _s: None,
        transport_factory=kw.pop("transport_factory", transport_for),
    )
    return reemit.request(settings, trace, reemit.ReemitRequest(**kw), clock=clock, deliverer=deliverer)


def _drop(root: Path, dept: str) -> list[str]:
    return sorted(p.name for p in (root / "drop" / dept).glob("*.p7m"))


def _open(p7m: Path, crt: Path, key: Path, ca: Path) -> bytes:
    return cms.open_sealed(
        p7m.read_bytes(),
        recipient_cert=certs.load_certificate(crt),
        recipient_key=certs.load_private_key(key, None),
        trusted_signers=[certs.load_certificate(ca)],
    )


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in (root / "drop").rglob("*") if p.is_file()}


def test_a_date_is_resent_byte_identical_as_R01_and_the_request_is_traced(site):
    _nights(site, D23, D24, D25)
    with _trace(site) as trace:
        result = _ask(site, trace, flows=["all"], departments=["035"], date_from=D23)
        assert result.exit_code == ExitCode.OK and result.status == "done"
        copies = [n for n in _drop(site, "035") if "_R01" in n]
        assert len(copies) == 3 and all("_20261123_" in n for n in copies)
        assert not any("_R" in n for n in _drop(site, "02A"))
        for name in copies:
            original = site / "drop" / "035" / name.replace("_R01", "")
            assert (site / "drop" / "035" / name).read_bytes() == original.read_bytes()
            assert (site / "drop" / "035" / f"{name}.sha256").exists()
        assert {f.resealed for f in result.files} == {False}

        req = trace.requests()[-1]
        assert (req["status"], req["requested_by"], req["reason"]) == (
            "done",
            "ops-jdupont",
            "files lost on the PMI side",
        )
        assert (req["flow"], req["department"], req["date_from"], req["date_to"]) == (
            "all",
            "035",
            "2026-11-23",
            "2026-11-23",
        )
        # Thursday 26 + 8 jours ouvrés: Fri 27, Mon 30, Tue 1 ... Tue 8 December.
        assert req["deadline"] == "2026-12-08" == add_working_days(ASKED.date(), 8, "035").isoformat()
        rows = trace.db.execute(
            "SELECT e.*, o.file_name AS original_name, o.sha256 AS original_sha FROM emissions e"
            " JOIN emissions o ON o.id = e.reemission_of WHERE e.request_id=?",
            (req["id"],),
        ).fetchall()
        assert len(rows) == 3
        for r in rows:
            assert r["reemission_no"] == 1 and r["status"] == "delivered" and r["sha256"] == r["original_sha"]
            assert r["file_name"] == r["original_name"].replace(".", "_R01.", 1)
            events = [
                e["to_status"]
                for e in trace.db.execute(
                    "SELECT to_status FROM emission_events WHERE emission_id=? ORDER BY id", (r["id"],)
                )
            ]
            assert events == ["re-emitted", "delivered"]
        run = trace.last_runs(1)[0]
        assert (run["command"], run["status"], run["files"]) == ("reemit", "done", 3)


def _trace(root: Path) -> TraceStore:
    return _Closing(root / "trace" / "flux-pmi.sqlite")


class _Closing(TraceStore):
    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def test_a_range_resends_every_date_of_it_and_only_those(site):
    _nights(site, D23, D24, D25)
    with _trace(site) as trace:
        result = _ask(site, trace, flows=["GRO"], departments=["2a"], date_from=D23, date_to=D24)
        assert result.exit_code == ExitCode.OK
    assert [n for n in _drop(site, "02A") if "_R" in n] == [
        "GRO_02A_20261123_000001_R01.xml.p7m",
        "GRO_02A_20261124_000002_R01.xml.p7m",
    ]


def test_all_flows_and_all_departements(site):
    _nights(site, D23, D24)
    with _trace(site) as trace:
        result = _ask(site, trace, flows=["all"], departments=["all"], date_from=D24)
        req = trace.requests()[-1]
    assert result.exit_code == ExitCode.OK and len(result.files) == 6
    assert (req["flow"], req["department"]) == ("all", "all")
    for dept in ("035", "02A"):
        assert sorted(n[:3] for n in _drop(site, dept) if "_R01" in n) == ["DSG", "GRO", "SGR"]


def test_a_second_request_makes_R02_and_the_ack_path_re_emits_from_any_copy(site):
    _nights(site, D23)
    with _trace(site) as trace:
        _ask(site, trace, flows=["DSG"], departments=["035"], date_from=D23)
        _ask(site, trace, flows=["DSG"], departments=["035"], date_from=D23)
        assert [n for n in _drop(site, "035") if n.startswith("DSG")] == [
            "DSG_035_20261123_000001.xml.p7m",
            "DSG_035_20261123_000001_R01.xml.p7m",
            "DSG_035_20261123_000001_R02.xml.p7m",
        ]
        # The ack collector re-emits on a KO with the id it knows, which may be a copy's.
        r02 = trace.emission_by_file("035", "DSG_035_20261123_000001_R02.xml.p7m")
        settings = load(site / "flux-pmi.toml")
        e = reemit.reemit_emission(
            settings,
            trace,
            ArchiveStore(settings.paths.archive),
            r02.id,
            now=ASKED,
            by=reemit.AUTO_REQUESTER,
            reason="KO acknowledgement",
        )
        assert (e.file_name, e.status, e.reemission_no) == (
            "DSG_035_20261123_000001_R03.xml.p7m",
            "re-emitted",
            3,
        )
        assert e.id in {x.id for x in trace.to_deliver()}  # the next delivery sends it
        original = trace.db.execute(
            "SELECT reemission_of, request_id FROM emissions WHERE id=?", (e.id,)
        ).fetchone()
        assert original["request_id"] is None
        assert trace.emission(original["reemission_of"]).file_name == "DSG_035_20261123_000001.xml.p7m"


def test_a_renewed_certificate_gets_a_file_resealed_from_the_archive_that_only_the_new_key_opens(
    site, tmp_path
):
    _nights(site, D23)
    pki = site / "pki"
    name = "GRO_035_20261123_000001.xml.p7m"
    before = _open(site / "drop" / "035" / name, pki / "035.crt", pki / "035.key", pki / "cnaf.crt")
    old_crt, old_key = (
        shutil.copy(pki / "035.crt", tmp_path / "old.crt"),
        shutil.copy(pki / "035.key", tmp_path / "old.key"),
    )
    ca = demo_pki.Credential(certs.load_certificate(pki / "ca.crt"), certs.load_private_key(pki / "ca.key"))
    demo_pki.write_credential(demo_pki.issue_cert(ca, "PMI 035 (demo, renewed)", now=NOW), pki, "035")

    with _trace(site) as trace:
        result = _ask(site, trace, flows=["GRO"], departments=["all"], date_from=D23)
    assert result.exit_code == ExitCode.OK
    assert {f.emission.department: f.resealed for f in result.files} == {"035": True, "02A": False}
    copy = site / "drop" / "035" / name.replace(".xml", "_R01.xml")
    assert copy.read_bytes() != (site / "drop" / "035" / name).read_bytes()
    assert _open(copy, pki / "035.crt", pki / "035.key", pki / "cnaf.crt") == before
    with pytest.raises(SealError, match="not for this recipient"):
        _open(copy, Path(old_crt), Path(old_key), pki / "cnaf.crt")
    with _trace(site) as trace:
        row = trace.db.execute(
            "SELECT recipient_cert_sha256 FROM emissions WHERE file_name=?", (copy.name,)
        ).fetchone()
    from flux_pmi.seal.certs import cert_fingerprint

    assert row[0] == cert_fingerprint(certs.load_certificate(pki / "035.crt"))


def test_beyond_retention_the_request_is_refused_traced_and_sends_nothing(site):
    _nights(site, D23)
    later = _clock(date(2027, 3, 24), hour=9)
    before = _snapshot(site)
    with _trace(site) as trace:
        with pytest.raises(
            RefusedError,
            match=r"2026-11-23 is outside retention \(kept 3 months: emissions "
            r"before 2026-12-24 are purged\)",
        ):
            _ask(site, trace, clock=later, flows=["GRO"], departments=["035"], date_from=D23)
        original = trace.emission_by_file("035", "GRO_035_20261123_000001.xml.p7m")
        settings = load(site / "flux-pmi.toml")
        purge(settings, trace, ArchiveStore(settings.paths.archive), today=later.today(), now=later.now())
        with pytest.raises(RefusedError, match="outside retention"):
            _ask(site, trace, clock=later, flows=["all"], departments=["all"], date_from=D23, date_to=D25)
        with pytest.raises(RefusedError, match="not in the trace: purged"):
            reemit.reemit_emission(
                settings,
                trace,
                ArchiveStore(settings.paths.archive),
                original.id,
                now=later.now(),
                by=reemit.AUTO_REQUESTER,
                reason="KO",
            )
        refused = trace.requests("refused")
    assert len(refused) == 2 and all("outside retention" in r["message"] for r in refused)
    assert refused[0]["requested_by"] == "ops-jdupont" and refused[0]["deadline"] is None
    assert _snapshot(site) == before


def test_a_date_without_emission_is_refused_saying_so(site):
    _nights(site, D23, D25)
    before = _snapshot(site)
    with _trace(site) as trace:
        with pytest.raises(RefusedError, match="nothing was emitted for GRO 035 on 2026-11-24"):
            _ask(site, trace, flows=["GRO"], departments=["035"], date_from=D24)
        with pytest.raises(
            RefusedError, match="nothing was emitted for any flow any département on 2026-11-21 to 2026-11-22"
        ):
            _ask(
                site,
                trace,
                flows=["all"],
                departments=["all"],
                date_from=date(2026, 11, 21),
                date_to=date(2026, 11, 22),
            )
        assert [r["status"] for r in trace.requests()] == ["refused", "refused"]
        assert trace.db.execute("SELECT COUNT(*) FROM emissions WHERE reemission_no > 0").fetchone()[0] == 0
    assert _snapshot(site) == before


def test_malformed_or_impossible_requests(site):
    _nights(site, D23)
    with _trace(site) as trace:
        with pytest.raises(ConfigError, match="--to"):
            _ask(site, trace, flows=["GRO"], departments=["035"], date_from=D24, date_to=D23)
        with pytest.raises(ConfigError, match="--flow"):
            _ask(site, trace, flows=["XYZ"], departments=["035"], date_from=D23)
        with pytest.raises(ConfigError, match="--department"):
            _ask(site, trace, flows=["GRO"], departments=["999"], date_from=D23)
        with pytest.raises(RefusedError, match="département 075 is not enabled"):
            _ask(site, trace, flows=["GRO"], departments=["75"], date_from=D23)
        assert [r["status"] for r in trace.requests()] == ["refused"]  # only the refusal on purpose is traced


def test_what_the_partner_does_not_take_now_the_next_night_delivers_and_the_request_closes(site):
    _nights(site, D23)
    with _trace(site) as trace:
        down = ScriptedPartner(down={"035"})
        result = _ask(
            site,
            trace,
            flows=["SGR"],
            departments=["035"],
            date_from=D23,
            transport_factory=down.factory,
        )
        assert result.exit_code == ExitCode.UNDELIVERED and result.pending == 1
        assert result.problems and trace.requests()[-1]["status"] == "pending"
        assert reemit.close_completed_requests(trace, ASKED) == []
        assert not [n for n in _drop(site, "035") if "_R01" in n]
        Night(load(site / "flux-pmi.toml"), clock=_clock(D24), sleep=lambda _s: None).run(D24, trace=trace)
        assert [n for n in _drop(site, "035") if "_R01" in n] == ["SGR_035_20261123_000001_R01.zip.p7m"]
        # the night closes the requests whose files are all delivered
        assert trace.requests()[-1]["status"] == "done"
        assert reemit.close_completed_requests(trace, ASKED + timedelta(days=1)) == []


def test_reemission_names_keep_the_part_suffix():
    assert (
        reemit.reemission_name("SGR_035_20261123_000007_P2of3.zip.p7m", 1)
        == "SGR_035_20261123_000007_P2of3_R01.zip.p7m"
    )
    assert (
        reemit.reemission_name("GRO_02A_20261123_000042.xml.p7m", 12) == "GRO_02A_20261123_000042_R12.xml.p7m"
    )


def test_the_command_line(site):
    _nights(site, D23)
    cfg = str(site / "flux-pmi.toml")
    ok = run_cli(
        "reemit",
        "--config",
        cfg,
        "--flow",
        "gro",
        "--department",
        "035",
        "--date",
        "2026-11-23",
        "--reason",
        "lost",
        "--by",
        "ops",
    )
    assert ok.returncode == ExitCode.OK, ok.stdout + ok.stderr
    assert "GRO_035_20261123_000001_R01.xml.p7m  035  as archived  delivered" in ok.stdout
    assert (
        "TOTAL request 1: 1 file(s) re-emitted, 0 re-sealed, 1 delivered, 0 pending; deadline 2026-12-03"
        in ok.stdout
    )
    refused = run_cli(
        "reemit", "--config", cfg, "--flow", "all", "--department", "all", "--date", "2026-11-22"
    )
    assert refused.returncode == ExitCode.REFUSED
    assert "nothing was emitted for any flow any département on 2026-11-22" in refused.stdout
    usage = run_cli(
        "reemit",
        "--config",
        cfg,
        "--flow",
        "GRO",
        "--department",
        "035",
        "--date",
        "2026-11-23",
        "--to",
        "2026-11-20",
    )
    assert usage.returncode == ExitCode.USAGE and "--to" in usage.stderr
    with _trace(site) as trace:
        reqs = trace.requests()
    assert [(r["status"], r["requested_by"]) for r in reqs][0] == ("done", "ops")
    assert reqs[1]["status"] == "refused" and reqs[1]["requested_by"]  # the OS user when --by is not given
