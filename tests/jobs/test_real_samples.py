"""The "Done when" of issue 11: the three HubEE samples, as the upstream systems write them, go through.

A demo installation for 008, 056 and 081 has its generated inbox emptied and the three
samples copied in unchanged; `flux-pmi run` (clock pinned by FLUX_PMI_NOW, so the samples'
2022 dates are in the past) delivers them: DSG to 008, GRO to 056, SGR to 081. Each
delivered file opens with stock `openssl cms` (decrypt, then verify against the CNAF CA),
validates with `xmllint --schema`, and holds the sample's records with the same value in
every annexe-1 field; the SGR scan is the sample's PDF byte for byte; `flux-pmi receive`
ingests them. Then: an envelope for three départements gives three DSG files; a
rectification is emitted again, flagged; the same bytes twice give one emission.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import sqlite3
import subprocess
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from lxml import etree
from support import BUSINESS_DATE, NOW, make_demo, run_cli

from flux_pmi.schemas import xsd_path

HUBEE = Path("/work/shared/reference/hubee")
SAMPLES = {"DSG": "DSG.xml", "GRO": "GRO.xml", "SGR": "SGR.zip"}
ROUTE = {"DSG": "008", "GRO": "056", "SGR": "081"}
DEPARTMENTS = "008,056,081"
DGE = "urn:ops:rncps:dge"
DSGCNAF = "urn:cnamts:dsgcnaf"
# Personal values of the samples (placeholders "xxxxx" aside): never outside sealed files.
SAMPLE_PERSONAL = ["DU CLOCHER", "TAGNON", "1990-03-03", "063052900000000", "DU GENERAL DE GAULLE",
                   "073819400000000", "0630529", "0738194"]


def _fresh_demo(root: Path) -> Path:
    make_demo(root, departments=DEPARTMENTS)
    for flow in SAMPLES:
        folder = root / "inbox" / flow
        for p in list(folder.iterdir()):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return root / "flux-pmi.toml"


def _run(cfg: Path, day=BUSINESS_DATE) -> subprocess.CompletedProcess:
    now = NOW + (day - BUSINESS_DATE) * 1
    proc = run_cli("run", "--config", str(cfg), "--date", day.isoformat(),
                   env_extra={"FLUX_PMI_NOW": now.isoformat()})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _open(root: Path, p7m: Path, work: Path) -> bytes:
    """Stock openssl, as a département would: decrypt, then verify the signature."""
    dept, pki = p7m.parent.name, root / "pki"
    signed, plain = work / (p7m.name + ".signed"), work / p7m.name.removesuffix(".p7m")
    subprocess.run(["openssl", "cms", "-decrypt", "-inform", "DER", "-in", str(p7m), "-recip",
                    str(pki / f"{dept}.crt"), "-inkey", str(pki / f"{dept}.key"), "-out", str(signed)],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-in", str(signed), "-CAfile",
                    str(pki / "ca.crt"), "-out", str(plain)], check=True, capture_output=True)
    return plain.read_bytes()


def _xmllint(kind: str, data: bytes, work: Path) -> None:
    f = work / f"lint-{kind}.xml"
    f.write_bytes(data)
    out = subprocess.run(["xmllint", "--noout", "--schema", str(xsd_path(kind)), str(f)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def _leaves(el: etree._Element) -> list[tuple[str, str, dict]]:
    """Every element under `el`, in order: (tag, stripped text, attributes)."""
    return [(e.tag, (e.text or "").strip(), dict(e.attrib)) for e in el.iter(etree.Element)]


def _delivered(root: Path, flow: str) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for p in sorted((root / "drop").glob(f"*/{flow}_*.p7m")):
        found.setdefault(p.parent.name, []).append(p)
    return found


def _record_count(root: Path, plain: bytes, flow: str) -> int:
    if flow == "SGR":
        with zipfile.ZipFile(io.BytesIO(plain)) as z:
            index = next(n for n in z.namelist() if n.endswith("_pmiich.xml"))
            return len(etree.fromstring(z.read(index)).findall("InfoSuiviGrossessePMI"))
    tree = etree.fromstring(plain)
    if flow == "DSG":
        return len(tree.findall(f"{{{DGE}}}Document"))
    return len(tree.findall("InfoSuiviGrossessePMI"))


@pytest.fixture(scope="module")
def delivered(tmp_path_factory):
    base = tmp_path_factory.mktemp("real")
    root = base / "demo"
    cfg = _fresh_demo(root)
    for flow, name in SAMPLES.items():
        shutil.copyfile(HUBEE / name, root / "inbox" / flow / name)
    run = _run(cfg)
    work = base / "opened"
    work.mkdir()
    opened = {}
    for flow in SAMPLES:
        for dept, files in _delivered(root, flow).items():
            for p7m in files:
                plain = _open(root, p7m, work)
                opened[(flow, dept)] = plain
    return root, run, opened, work


def test_each_sample_reaches_its_departement_only(delivered):
    root, _run_proc, opened, _work = delivered
    for flow in SAMPLES:
        holding = {dept for (f, dept), plain in opened.items() if f == flow and _record_count(root, plain, flow)}
        assert holding == {ROUTE[flow]}, flow
    assert not list((root / "quarantine").rglob("*.reason"))
    assert not list((root / "reports").glob("rejects-*.csv"))  # no reject, no addressing warning


def test_dsg_sample_holds_the_same_declaration(delivered, tmp_path):
    _root, _run_proc, opened, _work = delivered
    plain = opened[("DSG", "008")]
    _xmllint("DSG", plain, tmp_path)
    ours = etree.fromstring(plain)
    sample = etree.parse(str(HUBEE / "DSG.xml")).getroot()
    (ours_doc,) = ours.findall(f"{{{DGE}}}Document/{{{DGE}}}Donnee/{{{DSGCNAF}}}DSGCNAF")
    (sample_doc,) = sample.findall(f"{{{DGE}}}Document/{{{DGE}}}Donnee/{{{DSGCNAF}}}DSGCNAF")
    # Every annexe-1 field (the sample has no NIR and no phone, and we add none).
    assert _leaves(ours_doc) == _leaves(sample_doc)
    assert ours.findtext(f"{{{DGE}}}Entete/{{{DGE}}}Recepteur/{{{DGE}}}Qualite") == "CGD008"
    assert ours.findtext(f"{{{DGE}}}Entete/{{{DGE}}}Recepteur/{{{DGE}}}Identite") == "22080004900011"


def test_gro_sample_holds_the_same_case_and_its_anomaly(delivered, tmp_path):
    _root, _run_proc, opened, _work = delivered
    plain = opened[("GRO", "056")]
    _xmllint("GRO", plain, tmp_path)
    ours = etree.fromstring(plain)
    sample = etree.parse(str(HUBEE / "GRO.xml")).getroot()
    (ours_case,) = ours.findall("InfoSuiviGrossessePMI")
    (sample_case,) = sample.findall("InfoSuiviGrossessePMI")
    assert _leaves(ours_case) == _leaves(sample_case)
    assert ours_case.getnext().tag == "Anomalie"
    assert [e.text.strip() for e in ours.findall("Anomalie/LIBANO")] == ["DOSSIER SANS PERSONNES"]
    assert ours.findtext("TransmissionFlux/NBTOTDOSPMITRANSMANO") == "1"
    assert b"NIR" not in plain


def test_sgr_sample_holds_the_same_case_and_the_same_pdf(delivered, tmp_path):
    _root, _run_proc, opened, _work = delivered
    with zipfile.ZipFile(io.BytesIO(opened[("SGR", "081")])) as ours, zipfile.ZipFile(HUBEE / "SGR.zip") as sample:
        index_name = next(n for n in ours.namelist() if n.endswith("_pmiich.xml"))
        assert index_name.startswith("CG_081_")
        index = ours.read(index_name)
        _xmllint("SGR", index, tmp_path)
        (ours_case,) = etree.fromstring(index).findall("InfoSuiviGrossessePMI")
        (sample_case,) = etree.fromstring(sample.read("CG_081_2022-01-02_pmiich.xml")).findall(
            "InfoSuiviGrossessePMI")
        assert _leaves(ours_case) == _leaves(sample_case)
        nomimaged = ours_case.findtext("DossierPMI/NOMIMAGED")
        assert ours.read(nomimaged.removeprefix("/")) == sample.read("IMG00001.pdf")


def test_receive_ingests_the_samples_and_no_personal_value_leaks(delivered):
    root, run_proc, _opened, _work = delivered
    proc = run_cli("receive", "--config-dir", str(root / "receive"), "--once")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    received = root / "received"
    rows = {}
    for flow in SAMPLES:
        (csv_path,) = received.glob(f"{ROUTE[flow]}/{flow}/*/records.csv")
        rows[flow] = list(csv.DictReader(io.StringIO(csv_path.read_text(encoding="utf-8-sig")), delimiter=";"))
    assert len(rows["DSG"]) == 1 and rows["DSG"][0]["nom_voie"] == "DU CLOCHER"
    assert rows["DSG"][0]["nir"] == ""
    assert len(rows["GRO"]) == 1 and rows["GRO"][0]["anomalie"] == "DOSSIER SANS PERSONNES"
    assert len(rows["SGR"]) == 1
    (scan,) = received.glob("081/SGR/*/scans/*/scan.pdf")
    with zipfile.ZipFile(HUBEE / "SGR.zip") as sample:
        assert hashlib.sha256(scan.read_bytes()).digest() == hashlib.sha256(sample.read("IMG00001.pdf")).digest()

    # Outside sealed files and the legitimate holders, no personal value of the samples.
    db = sqlite3.connect(f"file:{root / 'trace' / 'flux-pmi.sqlite'}?mode=ro", uri=True)
    try:
        dump = "\n".join(db.iterdump())
    finally:
        db.close()
    texts = [run_proc.stdout, run_proc.stderr, proc.stdout, proc.stderr, dump]
    texts += [p.read_text(errors="replace") for p in (root / "reports").rglob("*") if p.is_file()]
    texts += [str(p) for p in root.rglob("*")]
    for value in SAMPLE_PERSONAL:
        assert not any(value in text for text in texts), value


# --- envelopes for several départements, rectifications, duplicates --------------------


def _dsg_sample() -> bytes:
    return (HUBEE / "DSG.xml").read_bytes()


def _envelope(documents: list[bytes], nbdoc: int | None = None) -> bytes:
    sample = _dsg_sample()
    start = sample.index(b"    <ns3:Document>")
    end = sample.index(b"</Agregat>")
    head = sample[:start].replace(b"<ns3:NbDoc>1</ns3:NbDoc>",
                                  b"<ns3:NbDoc>%d</ns3:NbDoc>" % (len(documents) if nbdoc is None else nbdoc))
    return head + b"".join(documents) + sample[end:]


def _document(*, ident: bytes = b"08002781800019d88000250510001320064", commune: bytes = b"08435",
              date: bytes = b"2022-01-29T08:40:05.000", rectif_dpg: bytes = b"false",
              dpg: bytes = b"2021-12-03") -> bytes:
    sample = _dsg_sample()
    doc = sample[sample.index(b"    <ns3:Document>"):sample.index(b"</Agregat>")]
    doc = doc.replace(b"08002781800019d88000250510001320064", ident)
    doc = doc.replace(b"<beneficiaire:CodeInsee>08435", b"<beneficiaire:CodeInsee>" + commune)
    doc = doc.replace(b"2022-01-29T08:40:05.000", date)
    doc = doc.replace(b"<dsgcnaf:RectifDPG>false", b"<dsgcnaf:RectifDPG>" + rectif_dpg)
    return doc.replace(b"<beneficiaire:DateDPG>2021-12-03", b"<beneficiaire:DateDPG>" + dpg)


def _dsg_documents(root: Path) -> dict[str, list[etree._Element]]:
    ca_work = root / "opened"
    ca_work.mkdir(exist_ok=True)
    found: dict[str, list[etree._Element]] = {}
    for dept, files in _delivered(root, "DSG").items():
        for p7m in files:
            tree = etree.fromstring(_open(root, p7m, ca_work))
            found.setdefault(dept, []).extend(tree.findall(f"{{{DGE}}}Document/{{{DGE}}}Donnee/{{{DSGCNAF}}}DSGCNAF"))
    return found


def _rejects(root: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for p in sorted((root / "reports").glob("rejects-*.csv")):
        rows.extend(csv.DictReader(io.StringIO(p.read_text(encoding="utf-8")), delimiter=";"))
    return rows


def test_an_envelope_for_three_departements_gives_three_dsg_files(tmp_path):
    root = tmp_path / "demo"
    cfg = _fresh_demo(root)
    envelope = _envelope([
        _document(ident=b"A0001", commune=b"08435"),
        _document(ident=b"A0002", commune=b"56121"),  # Lorient
        _document(ident=b"A0003", commune=b"81004"),  # Albi
        _document(ident=b"A0004", commune=b"99999"),  # no such commune: refused alone
    ])
    (root / "inbox" / "DSG" / "envelope.xml").write_bytes(envelope)
    _run(cfg)
    docs = _dsg_documents(root)
    assert {d: [e.findtext(f"{{{DSGCNAF}}}Identification") for e in els] for d, els in docs.items()} == {
        "008": ["A0001"], "056": ["A0002"], "081": ["A0003"]}
    rows = _rejects(root)
    assert sorted((r["code"], r["department"]) for r in rows) == [
        ("ADDRESSING_MISMATCH", "056"), ("ADDRESSING_MISMATCH", "081"), ("COMMUNE_UNKNOWN", "")]
    assert all("99999" not in r["message"] for r in rows)


def test_a_rectification_is_emitted_again_flagged_and_the_same_bytes_twice_once(tmp_path):
    root = tmp_path / "demo"
    cfg = _fresh_demo(root)
    inbox = root / "inbox" / "DSG"
    day2 = BUSINESS_DATE + timedelta(days=1)
    shutil.copyfile(HUBEE / "DSG.xml", inbox / "first.xml")
    _run(cfg)
    rectification = _envelope([_document(date=b"2022-01-30T09:00:00.000", rectif_dpg=b"true", dpg=b"2021-12-05")])
    (inbox / "rectif.xml").write_bytes(rectification)
    _run(cfg, day2)
    # The same bytes again, then the original declaration again under other bytes.
    (inbox / "rectif-again.xml").write_bytes(rectification)
    (inbox / "first-again.xml").write_bytes(_dsg_sample().replace(b"<ns3:Temps>", b"<ns3:Temps> ", 1))
    _run(cfg, day2)

    emitted = _dsg_documents(root)["008"]
    assert [(d.findtext(f".//{{{DSGCNAF}}}RectifDPG"), d.findtext(".//{urn:siram:beneficiaire}DateDPG"))
            for d in emitted] == [("false", "2021-12-03+01:00"), ("true", "2021-12-05+01:00")]
    # Kept as evidence, and encrypted at once like all consumed input (never readable at rest).
    dups = list((root / "consumed" / "duplicates" / "DSG").glob("rectif-again.xml.*"))
    assert dups and all(p.name.endswith(".p7m") for p in dups)
    assert [r["code"] for r in _rejects(root)] == ["DUPLICATE"]
    db = sqlite3.connect(f"file:{root / 'trace' / 'flux-pmi.sqlite'}?mode=ro", uri=True)
    try:
        kinds = [r[0] for r in db.execute("SELECT kind FROM anomalies WHERE kind='dsg-rectification'")]
    finally:
        db.close()
    assert kinds == ["dsg-rectification"]
