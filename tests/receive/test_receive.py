"""The département side end to end: a demo night received by every département, acks back to the sender.

Also: the three real HubEE samples (unsealed), a sequence gap, duplicates (re-emission and
re-delivery), a sequence number reused with other content, a pull from a real OpenSSH
server, the retention, and a receiver killed between its output and its ledger.
Everything is deterministic: seeded demo data, pinned clocks, no sleeps.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from lxml import etree
from structlog.testing import capture_logs
from support import BUSINESS_DATE, make_demo, open_delivered, run_cli
from support.sshd import FLOW_DIRS, PartnerPool, generate_key, require_tools

from flux_pmi.config.settings import load
from flux_pmi.core.clock import PARIS, FixedClock
from flux_pmi.core.errors import ConfigError, ExitCode
from flux_pmi.core.names import ack_name
from flux_pmi.jobs import reemit
from flux_pmi.jobs.deliver import Deliverer
from flux_pmi.jobs.night import Night
from flux_pmi.receive.config import load_receive
from flux_pmi.receive.extract import COLUMNS
from flux_pmi.receive.pipeline import Receiver
from flux_pmi.schemas.ack import Ack, parse_ack
from flux_pmi.seal import certs, cms
from flux_pmi.trace.ledger import Ledger
from flux_pmi.trace.store import TraceStore

HUBEE = Path(__file__).resolve().parents[1] / "data" / "hubee"  # copies of shared/reference/hubee
RECEIVED_AT = datetime(2026, 11, 23, 9, 30, tzinfo=PARIS)  # the départements take the night in at 09:30
DEPTS = ["02A", "035", "067", "971"]


# --- helpers ---------------------------------------------------------------------------------


def night(root: Path, day: date = BUSINESS_DATE) -> Night:
    at = datetime(day.year, day.month, day.day, 4, 0, tzinfo=PARIS)
    return Night(load(root / "flux-pmi.toml"), clock=FixedClock(at), sleep=lambda _s: None)


def run_night(root: Path, day: date = BUSINESS_DATE):
    report = night(root, day).run(day)
    assert report.exit_code == ExitCode.OK, report.problems
    return report


def receiver(cfg: Path, at: datetime = RECEIVED_AT) -> Receiver:
    return Receiver(load_receive(cfg), clock=FixedClock(at))


def receive(cfg: Path, at: datetime = RECEIVED_AT):
    return receiver(cfg, at).run_once()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh, delimiter=";"))


def outputs(output_dir: Path, flow: str) -> list[Path]:
    """The output folders of one flow, in ledger order."""
    folder = output_dir / flow
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def rows_of(output_dir: Path, flow: str) -> tuple[list[dict[str, str]], pd.DataFrame]:
    csv_rows: list[dict[str, str]] = []
    frames = []
    for folder in outputs(output_dir, flow):
        csv_rows += read_csv(folder / "records.csv")
        frames.append(pd.read_parquet(folder / "records.parquet"))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS[flow]))
    return csv_rows, frame


def expected_counts(delivered: dict[str, bytes], dept: str) -> dict[str, int]:
    """Records per flow in what was delivered to `dept`, read straight from the files."""
    counts: Counter[str] = Counter()
    for name, data in delivered.items():
        if not name.startswith(dept + "/"):
            continue
        flow = name.split("/")[1][:3]
        if flow == "SGR":
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                index = next(n for n in z.namelist() if n.endswith("_pmiich.xml"))
                counts[flow] += len(etree.fromstring(z.read(index)).findall("InfoSuiviGrossessePMI"))
        elif flow == "GRO":
            counts[flow] += len(etree.fromstring(data).findall("InfoSuiviGrossessePMI"))
        else:
            counts[flow] += len(etree.fromstring(data).findall("{urn:ops:rncps:dge}Document"))
    return dict(counts)


def ledger_rows(cfg: Path) -> list:
    ledger = Ledger(load_receive(cfg).ledger)
    try:
        return ledger.files()
    finally:
        ledger.close()


def assert_ledger_matches_outputs(cfg: Path) -> None:
    """The invariant: every `ok` row has its complete output folder, and every folder has its row."""
    c = load_receive(cfg)
    rows = ledger_rows(cfg)
    assert all(r.status != "ingesting" for r in rows)
    recorded = {r.output_dir for r in rows if r.status == "ok"}
    on_disk = {f"{flow}/{p.name}" for flow in ("DSG", "GRO", "SGR") for p in outputs(c.output_dir, flow)}
    hidden = [
        p
        for flow in ("DSG", "GRO", "SGR")
        if (c.output_dir / flow).is_dir()
        for p in (c.output_dir / flow).iterdir()
        if p.name.startswith(".")
    ]
    assert recorded == on_disk and hidden == []
    for folder in on_disk:
        assert {"records.csv", "records.parquet"} <= {p.name for p in (c.output_dir / folder).iterdir()}


def drop_acks(root: Path, dept: str) -> dict[str, Ack]:
    folder = root / "drop" / dept / "acks"
    return {p.name: parse_ack(p.read_bytes()) for p in sorted(folder.glob("*.ack.xml"))}


# --- the demo night, both halves --------------------------------------------------------------


def test_a_demo_night_is_received_by_every_departement_and_the_acks_reach_the_sender(tmp_path):
    root = tmp_path / "demo"
    result = make_demo(root)
    assert sorted(p.name for p in result.receive_configs) == [f"{d}.toml" for d in DEPTS]
    run_night(root)
    delivered = open_delivered(root)

    for dept in ("02A", "035", "067"):
        report = receive(root / "receive" / f"{dept}.toml")
        assert (report.ingested, report.refused, report.duplicates, report.errors) == (3, 0, 0, [])
        assert report.exit_code == ExitCode.OK
    # 971 through the command line, as a département's cron would run it.
    cli = run_cli(
        "receive",
        "--config",
        str(root / "receive" / "971.toml"),
        "--once",
        env_extra={"FLUX_PMI_NOW": RECEIVED_AT.isoformat(), "FLUX_PMI_LOG_LEVEL": "info"},
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "971: 3 ingested, 0 refused, 0 duplicate(s)" in cli.stdout
    assert cli.stdout.count("  CSV:     ") == 3 and cli.stdout.count("  Parquet: ") == 3
    assert "outputs (CSV and Parquet):" in cli.stdout.splitlines()[-1]
    events = [json.loads(line)["event"] for line in cli.stderr.splitlines() if line.startswith("{")]
    assert events.count("receive.ingested") == 3

    total = 0
    for dept in DEPTS:
        cfg = root / "receive" / f"{dept}.toml"
        out = load_receive(cfg).output_dir
        assert out == root / "received" / dept
        expected = expected_counts(delivered, dept)
        for flow in ("DSG", "GRO", "SGR"):
            csv_rows, frame = rows_of(out, flow)
            assert len(csv_rows) == len(frame) == expected.get(flow, 0), (dept, flow)
            assert list(frame.columns) == list(COLUMNS[flow])
            assert [r["record_key"] for r in csv_rows] == list(frame["record_key"])
            total += len(csv_rows)
        assert_ledger_matches_outputs(cfg)

        # A few values, compared with the delivered files themselves.
        plain = {n.split("/")[1][:3]: d for n, d in delivered.items() if n.startswith(dept + "/")}
        gro_csv, gro_frame = rows_of(out, "GRO")
        gro = etree.fromstring(plain["GRO"])
        assert sorted(r["matricule"] for r in gro_csv) == sorted(
            e.text for e in gro.iter("MATRICULE") if e.getparent().tag == "Organisme"
        )
        assert set(gro_frame["departement"]) <= {dept}
        dsg_csv, _ = rows_of(out, "DSG")
        assert sorted(r["identification"] for r in dsg_csv) == sorted(
            e.text for e in etree.fromstring(plain["DSG"]).iter("{urn:cnamts:dsgcnaf}Identification")
        )
        # SGR: each record's scan, extracted into its own folder, is the PDF the zip carried.
        sgr_csv, _ = rows_of(out, "SGR")
        with zipfile.ZipFile(io.BytesIO(plain["SGR"])) as z:
            index = etree.fromstring(z.read(next(n for n in z.namelist() if n.endswith("_pmiich.xml"))))
            sent = Counter(
                hashlib.sha256(z.read(c.findtext("DossierPMI/NOMIMAGED").lstrip("/"))).hexdigest()
                for c in index.iter("InfoSuiviGrossessePMI")
            )
        (folder,) = outputs(out, "SGR")
        got = Counter()
        for r in sgr_csv:
            scan = folder / r["scan_file"]
            assert scan == folder / "scans" / r["record_key"] / "scan.pdf"
            assert scan.read_bytes().startswith(b"%PDF-") and int(r["scan_size"]) == scan.stat().st_size
            got[hashlib.sha256(scan.read_bytes()).hexdigest()] += 1
        assert got == sent

        # One OK ack per delivered file, carrying its digest and the time it was taken in.
        sent_files = sorted(p.name for p in (root / "drop" / dept).glob("*.p7m"))
        got_acks = drop_acks(root, dept)
        assert sorted(got_acks) == [ack_name(n) for n in sent_files]
        for name in sent_files:
            ack = got_acks[ack_name(name)]
            digest = (root / "drop" / dept / f"{name}.sha256").read_text().split()[0]
            assert (ack.status, ack.code, ack.sha256, ack.at) == ("OK", "OK", digest, RECEIVED_AT)
    assert total == result.records - result.bad  # every valid record of the night, once

    # Received again: nothing is taken twice, no ack is written again.
    again = receive(root / "receive" / "035.toml")
    assert (again.ingested, again.duplicates, again.refused, again.acks_written) == (0, 0, 0, 0)

    # The sender's next run collects the acks: each emission records the date it was taken in.
    next_day = BUSINESS_DATE + timedelta(days=1)
    report = run_night(root, next_day)
    assert report.acks is not None and report.acks.recorded_ok == 12 and report.acks.anomalies == 0
    trace = TraceStore(load(root / "flux-pmi.toml").paths.trace)
    try:
        rows = trace.db.execute(
            "SELECT status, acknowledged_at, ack_status, ack_code FROM emissions WHERE business_date=?",
            (BUSINESS_DATE.isoformat(),),
        ).fetchall()
    finally:
        trace.close()
    assert len(rows) == 12
    assert {tuple(r) for r in rows} == {("acknowledged", RECEIVED_AT.isoformat(), "OK", "OK")}
    assert not [p for d in DEPTS for p in (root / "drop" / d / "acks").glob("*.ack.xml")]  # collected


# --- HubEE's real files, unsealed ---------------------------------------------------------------


def _hubee_config(base: Path, code: str) -> Path:
    (base / "drop").mkdir(parents=True)
    cfg = base / "receive.toml"
    cfg.write_text(
        f'[department]\ncode = "{code}"\naccept_unsealed = true\n\n'
        '[drop]\ntype = "local"\npath = "drop"\n\n[output]\ndir = "out"\n'
    )
    return cfg


@pytest.mark.parametrize(
    "sample,code,flow", [("GRO.xml", "056", "GRO"), ("DSG.xml", "008", "DSG"), ("SGR.zip", "081", "SGR")]
)
def test_the_three_hubee_samples_are_ingested_unsealed(tmp_path, sample, code, flow):
    cfg = _hubee_config(tmp_path, code)
    data = (HUBEE / sample).read_bytes()
    (tmp_path / "drop" / sample).write_bytes(data)
    if flow == "GRO":  # a .sha256 beside an unsealed file is optional, and checked when present
        (tmp_path / "drop" / f"{sample}.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {sample}\n")
    report = receive(cfg)
    assert (report.ingested, report.refused, report.errors) == (1, 0, [])
    (outcome,) = report.outcomes
    assert outcome.flow == flow and outcome.seq is None and outcome.rows >= 1
    out = load_receive(cfg).output_dir
    (folder,) = outputs(out, flow)
    assert folder.name.endswith("-noseq")
    csv_rows, frame = rows_of(out, flow)
    assert len(csv_rows) == len(frame) == outcome.rows
    if flow == "GRO":
        assert csv_rows[0]["matricule"] == "063052900000000" and csv_rows[0]["departement"] == "056"
    elif flow == "DSG":
        assert csv_rows[0]["identification"] == "08002781800019d88000250510001320064"
    else:
        # The index is ISO-8859-1 and names /00001/IMG00001.pdf; the PDF sits at the zip root.
        (row,) = csv_rows
        assert row["matricule"] == "073819400000000" and row["departement"] == "081"
        with zipfile.ZipFile(HUBEE / sample) as z:
            pdf = z.read("IMG00001.pdf")
        assert (folder / row["scan_file"]).read_bytes() == pdf
    # Not a technical name: there is no ack to write (schemas/ack.xsd), the ledger has it all.
    assert not (tmp_path / "drop" / "acks").exists()
    (row,) = ledger_rows(cfg)
    assert (row.status, row.code, row.ack_sha256) == ("ok", "OK", None)
    assert receive(cfg).outcomes == []


def test_an_unsealed_file_is_refused_unless_the_departement_accepts_them(tmp_path):
    cfg = _hubee_config(tmp_path, "056")
    cfg.write_text(cfg.read_text().replace("accept_unsealed = true\n", 'certificate = "c.pem"\n'))
    with pytest.raises(ConfigError, match="department.key"):
        load_receive(cfg, check_files=False)
    cfg.write_text(cfg.read_text().replace('certificate = "c.pem"\n', ""))
    with pytest.raises(ConfigError, match="accept_unsealed"):
        load_receive(cfg)


# --- sequences: a gap, a duplicate, a sequence number reused -----------------------------------


@pytest.fixture
def three_nights(tmp_path):
    """035 alone, three nights in a row: sequences 1, 2, 3 of each flow in its drop."""
    root = tmp_path / "demo"
    make_demo(root, departments="035")
    for n in range(3):
        run_night(root, BUSINESS_DATE + timedelta(days=n))
    return root


def test_a_gap_is_recorded_and_logged_and_both_files_are_taken(three_nights):
    root = three_nights
    drop, aside = root / "drop" / "035", root / "aside"
    aside.mkdir()
    day2 = f"{BUSINESS_DATE + timedelta(days=1):%Y%m%d}"
    missing = f"GRO_035_{day2}_000002.xml.p7m"
    for name in (missing, f"{missing}.sha256"):
        shutil.move(drop / name, aside / name)
    cfg = root / "receive" / "035.toml"
    with capture_logs() as logs:
        report = receive(cfg)
    assert (report.ingested, report.refused) == (8, 0)
    assert report.gaps == ["GRO: sequence 3 received, 2 missing"]
    gap_logs = [e for e in logs if e["event"] == "receive.sequence_gap"]
    assert len(gap_logs) == 1 and gap_logs[0]["code"] == "SEQUENCE_GAP" and gap_logs[0]["missing"] == "2"
    assert gap_logs[0]["file"].startswith("GRO_035_") and gap_logs[0]["file"].endswith("_000003.xml.p7m")
    ledger = Ledger(load_receive(cfg).ledger)
    try:
        (anomaly,) = ledger.anomalies()
        assert (anomaly["kind"], anomaly["flow"], anomaly["seq"]) == ("SEQUENCE_GAP", "GRO", 3)
    finally:
        ledger.close()
    assert sorted(o.seq for o in report.outcomes if o.flow == "GRO") == [1, 3]

    # The missing file turns up late: it is taken, and nothing new is flagged.
    for name in (missing, f"{missing}.sha256"):
        shutil.move(aside / name, drop / name)
    late = receive(cfg)
    assert [(o.name, o.status, o.gap) for o in late.outcomes] == [(missing, "ok", None)]
    assert_ledger_matches_outputs(cfg)


def test_a_reemitted_or_redelivered_file_is_recognised_and_not_taken_twice(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, departments="035")
    run_night(root)
    cfg = root / "receive" / "035.toml"
    first = receive(cfg)
    assert first.ingested == 3
    folders = {flow: outputs(load_receive(cfg).output_dir, flow) for flow in ("DSG", "GRO", "SGR")}

    # The same file delivered again by a relay (new mtime, same bytes): skipped quietly.
    gro = next((root / "drop" / "035").glob("GRO_*.p7m"))
    os.utime(gro, (gro.stat().st_atime + 60, gro.stat().st_mtime + 60))
    assert receive(cfg).outcomes == []

    # The PMI asks for the day again: the _R01 copies hold the same content.
    settings = load(root / "flux-pmi.toml")
    asked = FixedClock(datetime(2026, 11, 24, 10, 0, tzinfo=PARIS))
    trace = TraceStore(settings.paths.trace)
    try:
        reemit.request(
            settings,
            trace,
            reemit.ReemitRequest(["all"], ["035"], BUSINESS_DATE, by="ops", reason="lost on the PMI side"),
            clock=asked,
            deliverer=Deliverer(settings, clock=asked, sleep=lambda _s: None),
        )
    finally:
        trace.close()
    copies = sorted(p.name for p in (root / "drop" / "035").glob("*_R01.*.p7m"))
    assert len(copies) == 3
    with capture_logs() as logs:
        second = receive(cfg, RECEIVED_AT + timedelta(days=1))
    assert sorted((o.name, o.status, o.code) for o in second.outcomes) == [
        (name, "duplicate", "DUPLICATE") for name in copies
    ]
    assert second.exit_code == ExitCode.OK and second.ingested == 0
    assert {flow: outputs(load_receive(cfg).output_dir, flow) for flow in folders} == folders
    assert sum(e["event"] == "receive.duplicate" for e in logs) == 3
    got = drop_acks(root, "035")
    for name in copies:
        ack = got[ack_name(name)]
        assert (ack.status, ack.code) == ("OK", "DUPLICATE")

    # The sender records the copies as taken into account too.
    report = run_night(root, BUSINESS_DATE + timedelta(days=1))
    assert report.acks is not None and report.acks.recorded_ok == 6
    trace = TraceStore(settings.paths.trace)
    try:
        codes = {
            r["file_name"]: r["ack_code"]
            for r in trace.db.execute(
                "SELECT file_name, ack_code FROM emissions WHERE reemission_no=1 AND status='acknowledged'"
            )
        }
    finally:
        trace.close()
    assert codes == dict.fromkeys(copies, "DUPLICATE")


def test_a_sequence_number_taken_with_other_content_is_refused(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, departments="035")
    run_night(root)
    cfg = root / "receive" / "035.toml"
    assert receive(cfg).ingested == 3
    drop = root / "drop" / "035"
    original = next(drop.glob("GRO_*_000001.xml.p7m"))
    plain = open_delivered(root)[f"035/{original.name}"]
    # Other content under the same sequence number, genuinely signed by the sender.
    tree = etree.fromstring(plain)
    tree.find("IdentificationFlux/HEUCREAFLUX").text = "23:59:59.0000"
    other = etree.tostring(tree, xml_declaration=True, encoding="UTF-8")
    assert other != plain
    name = original.name.replace(".xml.p7m", "_R07.xml.p7m")
    sealed = _seal(root, other, "035")
    (drop / name).write_bytes(sealed)
    (drop / f"{name}.sha256").write_text(f"{hashlib.sha256(sealed).hexdigest()}  {name}\n")
    report = receive(cfg)
    assert [(o.name, o.status, o.code) for o in report.outcomes] == [(name, "refused", "SEQUENCE_DUPLICATE")]
    assert report.exit_code == ExitCode.QUARANTINED
    assert drop_acks(root, "035")[ack_name(name)].code == "SEQUENCE_DUPLICATE"
    assert_ledger_matches_outputs(cfg)


def _seal(root: Path, data: bytes, dept: str) -> bytes:
    pki = root / "pki"
    signed = cms.sign(
        data, certs.load_certificate(pki / "cnaf.crt"), certs.load_private_key(pki / "cnaf.key")
    )
    return cms.envelope(signed, certs.load_certificate(pki / f"{dept}.crt"))


# --- retention -----------------------------------------------------------------------------------


def test_the_retention_removes_outputs_drop_copies_and_rows_but_keeps_the_sequence(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, departments="035")
    run_night(root)
    cfg = root / "receive" / "035.toml"
    assert receive(cfg).ingested == 3
    out = load_receive(cfg).output_dir
    assert receive(cfg, RECEIVED_AT + timedelta(days=89)).purged == 0
    report = receive(cfg, RECEIVED_AT + timedelta(days=91))
    assert report.purged == 3 and report.outcomes == []
    assert ledger_rows(cfg) == [] and all(outputs(out, f) == [] for f in ("DSG", "GRO", "SGR"))
    assert not list((root / "drop" / "035").glob("*.p7m*"))
    # The next file is not mistaken for a gap: the highest sequence outlives the rows.
    run_night(root, BUSINESS_DATE + timedelta(days=91))
    later = receive(cfg, RECEIVED_AT + timedelta(days=91, hours=2))
    assert later.ingested == 3 and later.gaps == []


# --- a real SFTP server ---------------------------------------------------------------------


def test_a_departement_pulls_its_files_from_its_own_sftp_server(tmp_path):
    require_tools()
    root = tmp_path / "demo"
    make_demo(root, departments="035")
    key = tmp_path / "keys" / "id_ed25519"
    public = generate_key(key)
    with PartnerPool(tmp_path / "partners") as pool:
        partner = pool.start(["035"], public)["035"]
        known_hosts = partner.write_known_hosts(root / "known_hosts.035")
        params = partner.transport_params(key, known_hosts, connect_timeout=5, timeout=10)
        cfg = root / "flux-pmi.toml"
        text = cfg.read_text()
        inline = ", ".join(
            f"{k} = {json.dumps(v)}"
            if not isinstance(v, dict)
            else f"{k} = {{ {', '.join(f'{a} = {json.dumps(b)}' for a, b in v.items())} }}"
            for k, v in params.items()
        )
        cfg.write_text(
            text.replace('[departments."035"]\n', f'[departments."035"]\ntransport = {{ {inline} }}\n')
        )
        run_night(root)
        assert len([f for f in partner.files() if f.endswith(".p7m")]) == 3

        recv = root / "receive" / "035.toml"
        dirs = partner.directories()
        recv.write_text(
            recv.read_text().replace(
                '[drop]\ntype = "local"\npath = "../drop/035"\n',
                '[drop]\ntype = "sftp"\n'
                f"host = {json.dumps(params['host'])}\nport = {partner.port}\nuser = {json.dumps(partner.user)}\n"
                f"key = {json.dumps(str(key))}\nknown_hosts = {json.dumps(str(known_hosts))}\n"
                f"directories = {{ DSG = {json.dumps(dirs['DSG'])}, SGR = {json.dumps(dirs['SGR'])}, "
                f"GRO = {json.dumps(dirs['GRO'])} }}\n"
                f"ack_directory = {json.dumps(partner.remote('acks'))}\nconnect_timeout = 5\ntimeout = 10\n",
            )
        )
        # A name that is not UTF-8 on the server: set aside under a stand-in, the good files behind
        # it still ingested (paramiko's own listing fails the whole folder on such a name).
        dsg_dir = partner.root / FLOW_DIRS["DSG"]
        good = sorted(dsg_dir.glob("*.p7m"))[0]
        bad = dsg_dir / os.fsdecode(b"A\xe9.xml.p7m")
        bad.write_bytes(good.read_bytes())
        bad.with_name(bad.name + ".sha256").write_bytes(
            hashlib.sha256(good.read_bytes()).hexdigest().encode() + b"\n")
        report = receive(recv)
        assert (report.ingested, report.refused, report.errors) == (3, 1, [])
        bad.unlink()
        bad.with_name(bad.name + ".sha256").unlink()
        acks_on_server = sorted(f for f in partner.files() if f.startswith("acks/"))
        assert len(acks_on_server) == 3 and all(f.endswith(".ack.xml") for f in acks_on_server)
        assert receive(recv).outcomes == []

        # The sender's next night fetches the acks over SFTP and records them.
        after = run_night(root, BUSINESS_DATE + timedelta(days=1))
        assert after.acks is not None and after.acks.recorded_ok == 3
        assert not [f for f in partner.files() if f.startswith("acks/")]

        # A host key that is not the pinned one: nothing is read, the run says why (exit 3).
        partner.write_known_hosts(known_hosts, wrong=True)
        blocked = receive(recv, RECEIVED_AT + timedelta(days=1))
        assert blocked.outcomes == [] and blocked.exit_code == ExitCode.UNDELIVERED
        assert "host key" in blocked.errors[0]


# --- crash safety --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "point", ["receive-ingesting", "receive-written", "receive-written:2", "receive-recorded"]
)
def test_a_receiver_killed_between_output_and_ledger_leaves_them_agreeing(tmp_path, point):
    root = tmp_path / "demo"
    make_demo(root, departments="035")
    run_night(root)
    cfg = root / "receive" / "035.toml"
    env = {"FLUX_PMI_NOW": RECEIVED_AT.isoformat()}
    killed = run_cli("receive", "--config", str(cfg), "--once", env_extra={**env, "FLUX_PMI_CRASH_AT": point})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    out = load_receive(cfg).output_dir
    states = Counter(r.status for r in ledger_rows(cfg))
    if point.startswith("receive-written"):
        # Killed with a complete folder whose row still says `ingesting`: the one state to repair.
        assert states["ingesting"] == 1
        (row,) = [r for r in ledger_rows(cfg) if r.status == "ingesting"]
        assert (out / row.output_dir).is_dir()
    again = run_cli("receive", "--config-dir", str(root / "receive"), "--once", env_extra=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert_ledger_matches_outputs(cfg)
    rows = ledger_rows(cfg)
    assert sorted(r.status for r in rows) == ["ok", "ok", "ok"]
    expected = expected_counts(open_delivered(root), "035")
    for flow in ("DSG", "GRO", "SGR"):
        assert len(rows_of(out, flow)[0]) == expected.get(flow, 0)  # each record once
    got = drop_acks(root, "035")
    assert len(got) == 3 and {a.code for a in got.values()} == {"OK"}


def test_one_receiver_per_ledger_and_config_errors_name_the_key(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, departments="035")
    cfg = root / "receive" / "035.toml"
    text = cfg.read_text()
    cfg.write_text(text.replace("[retention]\n", "[retention]\nmonths = 3\n"))
    with pytest.raises(ConfigError) as err:
        load_receive(cfg)
    assert err.value.key == "retention.months" and "unknown key" in err.value.expected
    assert str(cfg) in str(err.value)
    cfg.write_text(text.replace('type = "local"', 'type = "ftp"'))
    assert run_cli("receive", "--config", str(cfg), "--once").returncode == ExitCode.USAGE
    cfg.write_text(text)
    from flux_pmi.receive.pipeline import receive_lock

    with receive_lock(load_receive(cfg)):
        busy = run_cli("receive", "--config", str(cfg), "--once")
    assert busy.returncode == ExitCode.LOCKED, busy.stderr


def test_a_missing_drop_folder_is_an_error_not_an_empty_night(tmp_path):
    """Found by hand: the département's drop share unmounted, `receive --once` said "0 ingested" and
    exited 0, night after night, while the CNAF's files waited on the share."""
    root = tmp_path / "demo"
    make_demo(root, departments="035,02A")
    assert (root / "drop" / "035").is_dir()  # the demo's drops exist before anything arrives, as on a server
    (root / "drop" / "035").rename(root / "drop" / "035.unmounted")
    done = run_cli("receive", "--config-dir", str(root / "receive"), "--once")
    assert done.returncode == ExitCode.UNDELIVERED, done.stdout + done.stderr
    assert f"error: drop {root / 'drop' / '035'} cannot be listed" in done.stdout
    assert "missing or not a folder (an unmounted share" in done.stdout
    (root / "drop" / "035.unmounted").rename(root / "drop" / "035")
    assert run_cli("receive", "--config-dir", str(root / "receive"), "--once").returncode == ExitCode.OK


def test_what_the_drop_holds_and_no_receive_takes_is_named_not_skipped_in_silence(tmp_path):
    """Found by hand: a symbolic link, a folder and a sealed file left without its `.sha256` sat in the
    drop, and `receive` said "0 ingested" without a word about them."""
    root = tmp_path / "demo"
    make_demo(root, departments="035")
    drop = root / "drop" / "035"
    (drop / "GRO_035_20261123_000010.xml.p7m").symlink_to("/etc/hostname")
    (drop / "SGR_035_20261123_000009.zip.p7m").mkdir()
    (drop / "notes.txt").write_text("not for flux-pmi")
    late = drop / "DSG_035_20261123_000009.xml.p7m"
    late.write_bytes(b"sealed, but its marker never came")
    two_hours_ago = datetime.now().timestamp() - 7200
    os.utime(late, (two_hours_ago, two_hours_ago))
    (drop / "DSG_035_20261123_000010.xml.p7m").write_bytes(b"arriving")  # its marker may still come
    (drop / ".GRO_035_20261123_000011.xml.p7m.tmp").write_bytes(b"a writer's temporary")
    done = run_cli("receive", "--config", str(root / "receive" / "035.toml"), "--once")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    left = [line.strip() for line in done.stdout.splitlines() if "not taken:" in line]
    assert left == [
        "not taken: DSG_035_20261123_000009.xml.p7m: no .sha256 beside it for over an hour (a delivery "
        "interrupted, which the sender's next run completes; or not the CNAF's)",
        "not taken: GRO_035_20261123_000010.xml.p7m: a symbolic link, never read",
        "not taken: SGR_035_20261123_000009.zip.p7m: a folder, never read",
        "not taken: notes.txt: neither a sealed .p7m nor an .xml or .zip",
    ]
    assert "0 ingested, 0 refused" in done.stdout


def test_a_lost_ledger_beside_ingested_outputs_takes_nothing_again(tmp_path):
    """Found by hand: the ledger deleted (or [ledger] pointed elsewhere), the next `receive` took the
    files still in the drop again: two of three written a second time for the PMI's import, re-acked."""
    root = tmp_path / "demo"
    make_demo(root, departments="035")
    assert run_cli("run", "--config", str(root / "flux-pmi.toml")).returncode == ExitCode.OK
    cfg = root / "receive" / "035.toml"
    assert run_cli("receive", "--config", str(cfg), "--once").returncode == ExitCode.OK
    out = root / "received" / "035"
    before = sorted(p.relative_to(out) for p in out.rglob("records.csv"))
    assert len(before) == 3
    (out / "ledger.sqlite").rename(tmp_path / "ledger.sqlite")
    done = run_cli("receive", "--config", str(cfg), "--once")
    assert done.returncode == ExitCode.UNDELIVERED, done.stdout + done.stderr
    assert "the ledger is missing, and" in done.stdout and "holds 3 file(s) ingested with it" in done.stdout
    assert sorted(p.relative_to(out) for p in out.rglob("records.csv")) == before  # nothing ingested again
    assert not (out / "ledger.sqlite").exists()  # and no empty ledger left to be taken for the real one
    (tmp_path / "ledger.sqlite").rename(out / "ledger.sqlite")
    again = run_cli("receive", "--config", str(cfg), "--once")
    assert again.returncode == ExitCode.OK and "0 ingested" in again.stdout


@pytest.mark.parametrize(("old", "new", "key"), [
    ('path = "../drop/02A"', 'path = "../drop/035"', "drop"),
    ('dir = "../received/02A"', 'dir = "../received/035"', "output.dir"),
])
def test_two_departements_on_one_drop_or_output_are_refused_before_anything_is_taken(tmp_path, old, new, key):
    """Found by hand: 056.toml copied from 035.toml with its drop path left as is; its receiver took
    035's files, refused them (DECRYPT) and wrote KO acks into 035's drop beside 035's OK ones."""
    root = tmp_path / "demo"
    make_demo(root, departments="035,02A")
    assert run_cli("run", "--config", str(root / "flux-pmi.toml")).returncode == ExitCode.OK
    cfg = root / "receive" / "02A.toml"
    cfg.write_text(cfg.read_text().replace(old, new))
    done = run_cli("receive", "--config-dir", str(root / "receive"), "--once")
    assert done.returncode == ExitCode.USAGE, done.stdout + done.stderr
    # Which of the two is wrong cannot be told: the message names both.
    assert f"{root / 'receive' / '035.toml'}: {key}: its own, not the one of 02A.toml (département 02A)" in done.stderr
    assert not (root / "received").exists() and not (root / "drop" / "035" / "acks").exists()


def test_without_once_it_polls_until_sigterm_and_then_exits_0(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, departments="035")
    run_night(root)
    cfg = root / "receive" / "035.toml"
    env = {**os.environ, "FLUX_PMI_NOW": RECEIVED_AT.isoformat(), "FLUX_PMI_LOG_FORMAT": "json"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flux_pmi.cli", "receive", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        # The end of the first round is seen in the log, not guessed with a sleep.
        events = []
        for line in proc.stderr:
            if line.startswith("{"):
                events.append(json.loads(line)["event"])
                if events[-1] == "receive.done":
                    break
        assert events.count("receive.ingested") == 3
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "035: 3 ingested, 0 refused, 0 duplicate(s)" in out
    assert "stop.requested" in err
