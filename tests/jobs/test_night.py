"""The nightly emission end to end, on a seeded demo day, with nothing stubbed."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
from datetime import date, timedelta
from pathlib import Path

import pytest
from lxml import etree
from support import BUSINESS_DATE, NOW, make_demo, open_delivered, record_fingerprints, run_cli

from flux_pmi.config.settings import load
from flux_pmi.core.clock import FixedClock
from flux_pmi.core.errors import ExitCode
from flux_pmi.jobs.night import Night
from flux_pmi.schemas import xsd_path
from flux_pmi.testing.mock import ScriptedPartner
from flux_pmi.trace.store import TraceStore

DEPTS = ["035", "02A", "067", "971"]


def _night(root: Path, **kw) -> Night:
    return Night(load(root / "flux-pmi.toml"), clock=FixedClock(NOW), sleep=lambda _s: None, **kw)


def _valid_count(result) -> int:
    return result.records - result.bad


def test_a_demo_night_delivers_every_valid_record_once_and_reports_the_bad_ones(demo):
    root, result = demo
    report = _night(root).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.OK, report.problems
    delivered = open_delivered(root)
    for dept in DEPTS:
        flows = sorted(n.split("/")[1][:3] for n in delivered if n.startswith(dept + "/"))
        assert flows == ["DSG", "GRO", "SGR"], dept
    fps = record_fingerprints(delivered)
    assert sum(fps.values()) == _valid_count(result)
    assert max(fps.values()) == 1
    with open(report.rejects_report, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    assert all(r["file"] and int(r["line"]) >= 1 for r in rows)
    # The report also carries warning rows (upstream addressing that disagrees with the route; the
    # record is delivered, so counted above): the generator's own lists say which rows are which.
    summary = _regenerated(root)
    rejects = [r for r in rows if r["code"] != "ADDRESSING_MISMATCH"]
    warnings = [r for r in rows if r["code"] == "ADDRESSING_MISMATCH"]
    assert len(rejects) == result.bad == len(summary.bad)
    assert {r["code"] for r in rejects} >= {"NIR_KEY", "PDF_MISSING", "COMMUNE_UNKNOWN"}
    assert sorted((r["flow"], r["file"], r["code"]) for r in rejects) == sorted(
        (b.flow, b.file, b.reason) for b in summary.bad
    )
    assert summary.warnings and sorted((r["flow"], r["file"]) for r in warnings) == sorted(
        (w.flow, w.file) for w in summary.warnings
    )
    assert all(r["department"] in DEPTS for r in warnings)
    totals = report.totals()
    assert (totals.records, totals.rejects, totals.files) == (_valid_count(result), result.bad, 12)


def test_delivered_files_open_with_stock_openssl_and_validate_with_xmllint(demo, tmp_path):
    root, _ = demo
    assert _night(root).run(BUSINESS_DATE).exit_code == ExitCode.OK
    pki = root / "pki"
    for p7m in sorted((root / "drop" / "02A").glob("*.p7m")):
        signed, plain = tmp_path / "signed.der", tmp_path / p7m.name.removesuffix(".p7m")
        subprocess.run(["openssl", "cms", "-decrypt", "-inform", "DER", "-in", str(p7m), "-recip",
                        str(pki / "02A.crt"), "-inkey", str(pki / "02A.key"), "-out", str(signed)], check=True)
        subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-in", str(signed), "-CAfile",
                        str(pki / "ca.crt"), "-out", str(plain)], check=True, capture_output=True)
        flow = p7m.name[:3]
        if flow == "SGR":
            shutil.unpack_archive(plain, tmp_path / "sgr", "zip")
            xml = next((tmp_path / "sgr").glob("CG_02A_*_pmiich.xml"))
        else:
            xml = plain
        out = subprocess.run(["xmllint", "--noout", "--schema", str(xsd_path(flow)), str(xml)],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        digest = (p7m.parent / (p7m.name + ".sha256")).read_text().split()[0]
        assert subprocess.run(["sha256sum", str(p7m)], capture_output=True, text=True).stdout.split()[0] == digest


def test_gro_output_carries_no_nir_although_the_extract_had_one(demo):
    root, _result = demo
    # Cristal's XML holds each person's NIR (input only: annexe 1 does not allow it in GRO).
    nirs = {
        e.text
        for p in (root / "inbox" / "GRO").glob("CRI_*.xml")
        for e in etree.parse(str(p)).iter("NIR")
        if e.text
    }
    assert nirs and all(len(v) == 15 for v in nirs)  # Corsican NIRs carry 2A/2B
    assert _night(root).run(BUSINESS_DATE).exit_code == ExitCode.OK
    for name, data in open_delivered(root).items():
        if "/GRO_" in name:
            text = data.decode("utf-8")
            assert "<NIR>" not in text and not any(n in text for n in nirs)


def _regenerated(root: Path):
    """The demo day again (same seed), for what the generator says it wrote: faults, warnings, values."""
    from flux_pmi.demo.generate import generate_inbox

    again = generate_inbox(root / "regen-inbox", business_date=BUSINESS_DATE, departments=DEPTS, seed=7, bad=True)
    shutil.rmtree(root / "regen-inbox")
    return again


def result_personal(root: Path) -> set[str]:
    return _regenerated(root).personal_values


def test_a_second_run_sends_nothing(demo):
    root, _ = demo
    assert _night(root).run(BUSINESS_DATE).exit_code == ExitCode.OK
    before = {p: p.stat().st_mtime_ns for p in (root / "drop").rglob("*")}
    second = _night(root).run(BUSINESS_DATE)
    assert second.exit_code == ExitCode.OK and second.totals().files == 0 and second.totals().delivered == 0
    assert {p: p.stat().st_mtime_ns for p in (root / "drop").rglob("*")} == before


def test_a_day_without_records_still_sends_an_empty_flow_unless_turned_off(demo):
    root, _ = demo
    assert _night(root).run(BUSINESS_DATE).exit_code == ExitCode.OK
    cfg = root / "flux-pmi.toml"
    cfg.write_text(cfg.read_text().replace('[departments."971"]\n', '[departments."971"]\nempty_flows = false\n'))
    next_day = BUSINESS_DATE + timedelta(days=1)
    report = Night(load(cfg), clock=FixedClock(NOW + timedelta(days=1))).run(next_day)
    assert report.exit_code == ExitCode.OK
    delivered = open_delivered(root)
    stamp = f"{next_day:%Y%m%d}"
    empties = sorted(n for n in delivered if f"_{stamp}_" in n)
    assert len(empties) == 9 and not any(n.startswith("971/") for n in empties)
    gro = etree.fromstring(next(delivered[n] for n in empties if "/GRO_" in n))
    assert gro.findtext("TransmissionFlux/NBTOTDOSPMITRANSM").lstrip("0") in ("", "0")
    assert not gro.findall("InfoSuiviGrossessePMI")


def test_a_large_flow_is_split_into_numbered_parts_each_valid(demo):
    root, result = demo
    cfg = root / "flux-pmi.toml"
    cfg.write_text(cfg.read_text().replace("[delivery]", "[limits]\nmax_file_bytes = 12000\n\n[delivery]"))
    assert _night(root).run(BUSINESS_DATE).exit_code == ExitCode.OK
    delivered = open_delivered(root)
    parts = [n for n in delivered if "_P1of" in n]
    assert parts, "expected at least one split flow"
    assert sum(record_fingerprints(delivered).values()) == _valid_count(result)
    seqs = {}
    for n in delivered:
        dept, fname = n.split("/")
        seqs.setdefault((dept, fname[:3]), []).append(int(fname.split("_")[3].split(".")[0]))
    for s in seqs.values():
        assert sorted(s) == list(range(1, len(s) + 1))  # one sequence number per file, no gap


def test_a_partner_down_leaves_work_undelivered_then_the_next_run_completes_it(demo):
    root, result = demo
    double = ScriptedPartner(down={"067"})
    report = _night(root, transport_factory=double.factory).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.UNDELIVERED and report.undelivered == 3
    assert sorted(double.received) == ["02A", "035", "971"]
    double.down.clear()
    again = _night(root, transport_factory=double.factory).run(BUSINESS_DATE)
    assert again.exit_code == ExitCode.OK and sorted(double.received) == sorted(DEPTS)


def test_transient_failures_are_retried_within_the_run(demo):
    root, _ = demo
    double = ScriptedPartner(fail_first={"035": 2})
    report = _night(root, transport_factory=double.factory).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.OK and len(double.received["035"]) == 3


def test_an_unreadable_input_file_is_quarantined_and_the_rest_goes_on(demo):
    root, result = demo
    (root / "inbox" / "DSG" / "broken.xml").write_text("<dsgcnaf:DSGCNAF xmlns:dsgcnaf='urn:cnamts:dsgcnaf'>")
    report = _night(root).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.QUARANTINED
    assert report.quarantined == [("DSG", "broken.xml", "XML_MALFORMED")]
    assert (root / "quarantine" / "DSG" / "broken.xml.reason").read_text().startswith("XML_MALFORMED")
    assert sum(record_fingerprints(open_delivered(root)).values()) == _valid_count(result)


CRASH_POINTS = ["claim:2", "parse:3", "build:2", "validated:3", "sealed:4", "archived-file:5", "archived:6",
                "batch-done:1", "deliver:4", "delivered:5", "delivered-traced:7"]


@pytest.fixture(scope="module")
def clean_fingerprints(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean") / "demo"
    make_demo(root)
    proc = run_cli("run", "--config", str(root / "flux-pmi.toml"), "--date", BUSINESS_DATE.isoformat())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return record_fingerprints(open_delivered(root))


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_sigkill_at_any_point_then_a_rerun_delivers_every_record_exactly_once(tmp_path, point, clean_fingerprints):
    root = tmp_path / "demo"
    make_demo(root)
    args = ("run", "--config", str(root / "flux-pmi.toml"), "--date", BUSINESS_DATE.isoformat())
    killed = run_cli(*args, env_extra={"FLUX_PMI_CRASH_AT": point})
    assert killed.returncode == -signal.SIGKILL, f"{point} was never reached: {killed.stdout}"
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert record_fingerprints(open_delivered(root)) == clean_fingerprints
    # no temporary file left visible under a final name, and the trace agrees with the drop
    assert not [p for p in (root / "drop").rglob("*") if p.is_file() and not p.name.endswith((".p7m", ".sha256"))]
    trace = TraceStore(root / "trace" / "flux-pmi.sqlite")
    names = {f"{r['department']}/{r['file_name']}" for r in trace.db.execute(
        "SELECT department, file_name FROM emissions WHERE status='delivered'")}
    trace.close()
    assert names == {str(p.relative_to(root / "drop")) for p in (root / "drop").rglob("*.p7m")}
    assert not list((root / "inbox").rglob("*.xml")) and not list((root / "inbox").rglob("*.csv"))


def test_no_personal_data_outside_the_sealed_files(demo):
    root, result = demo
    values = result_personal(root)
    assert len(values) > 50
    proc = run_cli("run", "--config", str(root / "flux-pmi.toml"), "--date", BUSINESS_DATE.isoformat())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc2 = run_cli("run", "--config", str(root / "flux-pmi.toml"), "--date", BUSINESS_DATE.isoformat())
    inputs = {"inbox", "consumed", "work", "quarantine", "pki"}  # the input material itself, and keys
    haystacks: dict[str, bytes] = {"stdout+stderr": (proc.stdout + proc.stderr + proc2.stdout + proc2.stderr).encode()}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        haystacks[f"name:{rel}"] = str(rel).encode()
        if p.is_file() and rel.parts[0] not in inputs:
            haystacks[str(rel)] = p.read_bytes()  # sealed files included: they must not leak plaintext either
    trace = TraceStore(root / "trace" / "flux-pmi.sqlite")
    haystacks["trace dump"] = "\n".join(trace.db.iterdump()).encode()
    trace.close()
    hits = [(where, v) for where, data in haystacks.items() for v in values if v.encode() in data
            or v.encode("iso-8859-1", "ignore") in data]
    assert hits == []


def test_files_holding_personal_data_are_owner_only(demo):
    root, _ = demo
    assert _night(root).run(BUSINESS_DATE).exit_code == ExitCode.OK
    for sub in ("archive", "drop", "consumed", "trace"):
        for p in (root / sub).rglob("*"):
            mode = p.stat().st_mode & 0o777
            assert mode & 0o077 == 0, f"{p} is {oct(mode)}"


def test_run_command_prints_a_line_per_flow_and_department_then_totals(demo):
    root, result = demo
    proc = run_cli("run", "--verbose", "--config", str(root / "flux-pmi.toml"), "--date", BUSINESS_DATE.isoformat())
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for flow in ("DSG", "GRO", "SGR"):
        for dept in DEPTS:
            assert any(line.startswith(f"{flow} {dept}") for line in lines), (flow, dept)
    total = next(line for line in lines if line.startswith("TOTAL"))
    assert f"records={_valid_count(result)}" in total and "seconds=" in total and "bytes=" in total
    assert date.fromisoformat(total.split()[1]) == BUSINESS_DATE
    assert os.path.exists(next(line.split(": ", 1)[1] for line in lines if line.startswith("rejects report")))
