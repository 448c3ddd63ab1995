"""The textfile metrics: written after a real demo night, parsed back, checked against the trace.

The parser below is deliberately small and strict (the Prometheus text format as the
node_exporter textfile collector reads it): HELP and TYPE once per family and before its
samples, a family's samples together, no sample timestamps. prometheus_client is not a
dependency, so it is not used.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from collections import defaultdict
from datetime import timedelta

import pytest
from structlog.testing import capture_logs
from support import BUSINESS_DATE, NOW, make_demo, run_cli

from flux_pmi.config.settings import FLOWS, load
from flux_pmi.core.clock import FixedClock
from flux_pmi.core.errors import ExitCode
from flux_pmi.jobs.night import Night
from flux_pmi.report import metrics
from flux_pmi.report.status import gather
from flux_pmi.seal import certs
from flux_pmi.testing.mock import ScriptedPartner
from flux_pmi.trace.store import TraceStore

DEPTS = ["02A", "035", "067", "971"]
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{family: {sorted label pairs: value}}; fails on anything the collector would refuse."""
    assert text.endswith("\n")
    families: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    helped, typed, closed = set(), set(), set()
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helped, f"HELP twice for {name}"
            helped.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name in helped and name not in typed and kind == "gauge"
            typed.add(name)
            if current is not None:
                closed.add(current)
            current = name
            families[name] = {}
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, label_text, value = m.groups()
        assert name == current and name not in closed, f"{name}: samples not together, or no TYPE first"
        labels = tuple(sorted(_LABEL.findall(label_text or "")))
        assert labels not in families[name], f"duplicate sample {line!r}"
        families[name][labels] = float(value)
    return families


def one(fams, name: str, **labels: str) -> float:
    return fams[name][tuple(sorted(labels.items()))]


def with_metrics_file(settings, path):
    return dataclasses.replace(settings, service=dataclasses.replace(settings.service, metrics_file=path))


@pytest.fixture
def night(tmp_path):
    """A demo night at NOW where 067 is down: 035, 02A and 971 delivered, 067's three files pending."""
    root = tmp_path / "demo"
    make_demo(root)
    (tmp_path / "prom").mkdir()
    settings = with_metrics_file(load(root / "flux-pmi.toml"), tmp_path / "prom" / "flux-pmi.prom")
    double = ScriptedPartner(down={"067"})
    report = Night(
        settings, clock=FixedClock(NOW), sleep=lambda _s: None, transport_factory=double.factory
    ).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.UNDELIVERED
    return settings, report


def test_the_metrics_of_a_night_match_the_report_and_the_trace(night):
    settings, report = night
    path = metrics.write_metrics(settings, now=NOW, job="nightly")
    assert path == settings.service.metrics_file
    fams = parse(path.read_text(encoding="utf-8"))

    assert fams["flux_pmi_job_last_success_timestamp_seconds"] == {(("job", "nightly"),): NOW.timestamp()}
    assert one(fams, "flux_pmi_last_run_exit_code") == int(ExitCode.UNDELIVERED)
    assert one(fams, "flux_pmi_last_run_start_timestamp_seconds") == NOW.timestamp()
    by_flow: dict[str, dict[str, int]] = defaultdict(lambda: {"records": 0, "rejects": 0, "files": 0})
    for (flow, _dept), line in report.lines.items():
        for key in ("records", "rejects", "files"):
            by_flow[flow][key] += getattr(line, key)
    for flow in FLOWS:
        for key in ("records", "rejects", "files"):
            assert one(fams, f"flux_pmi_last_run_{key}", flow=flow) == by_flow[flow][key], (flow, key)
    assert sum(fams["flux_pmi_last_run_records"].values()) == report.totals().records > 0
    assert sum(fams["flux_pmi_last_run_rejects"].values()) == report.totals().rejects > 0
    assert sum(fams["flux_pmi_last_run_files"].values()) == report.totals().files == 12

    trace = TraceStore(settings.paths.trace)
    try:
        status = gather(settings, trace, now=NOW)
        # The night had warning rows (ADDRESSING_MISMATCH, records still delivered): they are in the
        # rejects table, but the reject metric, like the report, counts rejects only.
        warnings = trace.db.execute("SELECT COUNT(*) FROM rejects WHERE code = 'ADDRESSING_MISMATCH'").fetchone()[0]
        assert warnings > 0
        assert trace.db.execute("SELECT COUNT(*) FROM rejects").fetchone()[0] == report.totals().rejects + warnings
        pending = dict(
            trace.db.execute(
                "SELECT department, COUNT(*) FROM emissions WHERE delivered_at IS NULL GROUP BY department"
            ).fetchall()
        )
    finally:
        trace.close()
    assert pending == {"067": 3}
    assert {dict(k)["department"]: v for k, v in fams["flux_pmi_undelivered_emissions"].items()} == {
        "02A": 0,
        "035": 0,
        "067": 3,
        "971": 0,
    }
    sla = status["sla"]
    assert one(fams, "flux_pmi_records_at_risk") == sla["totals"]["at_risk"] > 0  # 067's, due Mon 23 and Tue 24
    assert one(fams, "flux_pmi_records_late") == sla["totals"]["late"]
    for dept in DEPTS:
        assert (
            one(fams, "flux_pmi_department_records_at_risk", department=dept)
            == sla["by_department"][dept]["at_risk"]
        )
        assert (
            one(fams, "flux_pmi_department_records_late", department=dept)
            == sla["by_department"][dept]["late"]
        )
    assert one(fams, "flux_pmi_last_nightly_stale") == 0

    expected_days = {
        ("signer", "sender"): settings.sender.certificate,
        ("archive", "archive"): settings.sender.archive_certificate,
        **{("recipient", d): settings.departments[d].certificate for d in DEPTS},
    }
    assert len(fams["flux_pmi_certificate_expiry_timestamp_seconds"]) == len(expected_days)
    for (role, scope), cert_path in expected_days.items():
        not_after = certs.load_certificate(cert_path).not_valid_after_utc.timestamp()
        assert one(fams, "flux_pmi_certificate_expiry_timestamp_seconds", role=role, scope=scope) == not_after
        assert one(fams, "flux_pmi_certificate_unusable", role=role, scope=scope) == 0

    # Per département, zeros included: an alert has its series from the first write.
    assert {dict(k)["department"]: v for k, v in fams["flux_pmi_partner_failing"].items()} == {
        "02A": 0, "035": 0, "067": 1, "971": 0}
    assert {dict(k)["department"]: v for k, v in fams["flux_pmi_unacknowledged_files"].items()} == dict.fromkeys(
        DEPTS, 0)
    assert {dict(k)["department"]: v for k, v in
            fams["flux_pmi_department_last_delivery_timestamp_seconds"].items()} == dict.fromkeys(
        ("02A", "035", "971"), NOW.timestamp())
    assert one(fams, "flux_pmi_last_run_duration_seconds") == 0  # the pinned clock does not move
    assert one(fams, "flux_pmi_records_late_by_basis", basis="law") == sla["by_basis"]["law"]["late"] > 0
    assert one(fams, "flux_pmi_records_late_by_basis", basis="contract") == 0


def test_files_never_acknowledged_show_after_the_configured_days(night):
    settings, _ = night
    fams = parse(metrics.write_metrics(settings, now=NOW + timedelta(days=5, minutes=1)).read_text())
    # 02A, 035 and 971 each got 3 files at NOW, none acknowledged (the double sends no acks).
    assert {dict(k)["department"]: v for k, v in fams["flux_pmi_unacknowledged_files"].items()} == {
        "02A": 3, "035": 3, "067": 0, "971": 3}


def test_the_file_is_written_atomically_and_readable_by_the_exporter(night, monkeypatch):
    settings, _ = night
    path = settings.service.metrics_file
    old_umask = os.umask(0o077)  # as under `flux-pmi`: the exporter is another user and must still read it
    try:
        metrics.write_metrics(settings, now=NOW, job="nightly")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    # Only the .prom file and the hidden lock: no temporary left for anyone to scrape.
    assert sorted(p.name for p in path.parent.iterdir()) == [".flux-pmi.prom.lock", "flux-pmi.prom"]
    before = path.read_bytes()

    def crash(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(metrics.os, "replace", crash)
    with pytest.raises(OSError):
        metrics.write_metrics(settings, now=NOW + timedelta(hours=1), job="sla")
    assert path.read_bytes() == before  # the previous file, whole
    assert not (path.parent / ".flux-pmi.prom.tmp").exists()


def test_each_job_keeps_the_others_last_success(night):
    settings, _ = night
    metrics.write_metrics(settings, now=NOW, job="nightly")
    metrics.write_metrics(settings, now=NOW + timedelta(hours=1), job="purge")
    metrics.write_metrics(
        settings, now=NOW + timedelta(hours=2), job="sla", succeeded=False
    )  # failed: unchanged
    metrics.write_metrics(settings, now=NOW + timedelta(hours=3))  # the service starting: no job
    fams = parse(settings.service.metrics_file.read_text())
    assert fams["flux_pmi_job_last_success_timestamp_seconds"] == {
        (("job", "nightly"),): NOW.timestamp(),
        (("job", "purge"),): (NOW + timedelta(hours=1)).timestamp(),
    }
    assert one(fams, "flux_pmi_metrics_generated_timestamp_seconds") == (NOW + timedelta(hours=3)).timestamp()


def test_no_personal_data_in_the_file(night):
    settings, _ = night
    metrics.write_metrics(settings, now=NOW, job="nightly")
    text = settings.service.metrics_file.read_text()
    allowed = {
        "job": {"nightly", "purge", "sla"},
        "flow": set(FLOWS),
        "department": set(DEPTS),
        "scope": {"sender", "archive", *DEPTS},
        "role": {"signer", "archive", "recipient"},
        "basis": {"contract", "law"},
    }
    for family in parse(text).values():
        for labels in family:
            for key, value in labels:
                assert value in allowed[key], (key, value)
    # Nothing shaped like a NIR, a phone number or a certificate subject; no inbox file name.
    assert not re.search(r"\b[12]\d{12}\b|\b0[1-9](?:[ .]?\d{2}){4}\b|CN=", text)
    inbox_names = {p.name for p in (settings.paths.consumed).rglob("*") if p.is_file()}
    assert inbox_names and not any(name in text for name in inbox_names)


def test_render_falls_back_on_the_status_document_alone(night):
    settings, _ = night
    trace = TraceStore(settings.paths.trace)
    try:
        status = gather(settings, trace, now=NOW)
    finally:
        trace.close()
    fams = parse(metrics.render(status, job_success={"sla": 1.5}))
    assert fams["flux_pmi_job_last_success_timestamp_seconds"] == {(("job", "sla"),): 1.5}
    assert one(fams, "flux_pmi_last_run_exit_code") == 3
    assert fams["flux_pmi_last_run_records"] == {}  # per flow needs the trace
    assert fams["flux_pmi_certificate_expiry_timestamp_seconds"] == {}  # status lists only those near expiry


def test_after_job_does_nothing_without_a_file_and_never_raises(night, tmp_path):
    settings, _ = night
    assert metrics.after_job(with_metrics_file(settings, None), "nightly", succeeded=True, now=NOW) is None
    missing = with_metrics_file(settings, tmp_path / "no-such-dir" / "flux-pmi.prom")
    with capture_logs() as logs:
        assert metrics.after_job(missing, "nightly", succeeded=True, now=NOW) is None
    assert [e["event"] for e in logs] == ["metrics.failed"]
    assert not (tmp_path / "no-such-dir").exists()  # a mistyped folder is reported, not created


def test_flux_pmi_run_writes_the_metrics_when_configured(tmp_path):
    root = tmp_path / "demo"
    make_demo(root)
    cfg = root / "flux-pmi.toml"
    cfg.write_text(cfg.read_text() + '\n[service]\nmetrics_file = "prom/flux-pmi.prom"\n')
    (root / "prom").mkdir()
    proc = run_cli("run", "--config", str(cfg), "--date", BUSINESS_DATE.isoformat())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fams = parse((root / "prom" / "flux-pmi.prom").read_text())
    assert fams["flux_pmi_job_last_success_timestamp_seconds"] == {(("job", "nightly"),): NOW.timestamp()}
    assert one(fams, "flux_pmi_last_run_exit_code") == 0
    assert sum(fams["flux_pmi_undelivered_emissions"].values()) == 0
