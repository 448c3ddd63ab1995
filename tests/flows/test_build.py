"""Tests of the flow builders: every built file validates (lxml and xmllint), keeps the
records' order, numbers and splits its parts as asked, is owner-only and reproducible,
and carries nothing the flow may not carry (no NIR in GRO).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import stat
import subprocess
import zipfile
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from lxml import etree
from support.records import RENNES, dsg_record, gro_record, sgr_record

from flux_pmi import schemas
from flux_pmi.core.errors import InputFileError
from flux_pmi.flows.build import BuiltPart, FlowHeader, build
from flux_pmi.flows.build_common import Sizer
from flux_pmi.flows.build_dsg import DsgLayout
from flux_pmi.flows.build_gro import GroLayout
from flux_pmi.flows.records import DsgRecord, GroRecord, SgrRecord, Source

PARIS = ZoneInfo("Europe/Paris")
CREATED = datetime(2026, 11, 23, 20, 14, 35, 516_000, tzinfo=PARIS)
BUSINESS = date(2026, 11, 23)
XMLLINT = "/usr/bin/xmllint"
DGE = "urn:ops:rncps:dge"
BENEF = "urn:siram:beneficiaire"
DSGCNAF = "urn:cnamts:dsgcnaf"
PS = "urn:siram:partenairesante"


def header(flow: str, department: str = "035", numorg: str = "351") -> FlowHeader:
    return FlowHeader(
        flow=flow,
        department=department,
        numorg=numorg,
        siret="22350001800013",
        business_date=BUSINESS,
        created_at=CREATED,
    )


class Seqs:
    """A seq_for_part that remembers its calls: part n gets 40 + n."""

    def __init__(self, base: int = 40):
        self.base, self.calls = base, []

    def __call__(self, part: int) -> int:
        self.calls.append(part)
        return self.base + part


# --- record factories ------------------------------------------------------------------


def gro(i: int, **over) -> GroRecord:
    return gro_record(i, RENNES, **{"source": Source("gro-20261123.csv", i + 1), **over})


def dsg(i: int, **over) -> DsgRecord:
    return dsg_record(i, RENNES, **over)


def fake_pdf(directory: Path, i: int, size: int = 600) -> Path:
    # The source name looks like personal data on purpose: it must not reach the zip.
    path = directory / f"scan DUPONT Marie 2900335238042 {i}.pdf"
    body = b"%PDF-1.4\n" + bytes([65 + i % 26]) * max(0, size - 16) + b"\n%%EOF\n"
    path.write_bytes(body)
    return path


def sgr(i: int, directory: Path, size: int = 600, **over) -> SgrRecord:
    return sgr_record(i, RENNES, fake_pdf(directory, i, size), **{"source": Source("sgr-20261123.csv", i + 1), **over})


# --- validation helpers ----------------------------------------------------------------


def xmllint(kind: str, path: Path) -> None:
    run = subprocess.run(
        [XMLLINT, "--noout", "--nonet", "--schema", str(schemas.xsd_path(kind)), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr


def validate_part(flow: str, part: BuiltPart, tmp_path: Path) -> etree._ElementTree:
    """Validate a built part both ways and return its (index) XML tree."""
    if flow == "SGR":
        schemas.validate_sgr_zip(part.path)
        with zipfile.ZipFile(part.path) as archive:
            index_name = archive.namelist()[0]
            data = archive.read(index_name)
        extracted = tmp_path / f"extracted-{part.seq}" / index_name
        extracted.parent.mkdir()
        extracted.write_bytes(data)
        schemas.validate_file("SGR", extracted)
        xmllint("SGR", extracted)
        return etree.parse(io.BytesIO(data))
    schemas.validate_file(flow, part.path)
    xmllint(flow, part.path)
    return etree.parse(str(part.path))


def check_part_metadata(part: BuiltPart, out_dir: Path) -> None:
    data = part.path.read_bytes()
    assert part.path.parent == out_dir
    assert part.size == len(data)
    assert part.sha256 == hashlib.sha256(data).hexdigest()
    assert stat.S_IMODE(part.path.stat().st_mode) == 0o600
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".")], "a temporary file was left"


def all_text(tree: etree._ElementTree) -> str:
    return "\n".join(tree.getroot().itertext())


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


# --- GRO -------------------------------------------------------------------------------


def test_gro_builds_a_valid_file_in_order(out_dir: Path, tmp_path: Path) -> None:
    records = [
        gro(0),
        gro(1, motif="03", numorg_ced="561", matricule_ced="063052900000000"),
        gro(2, motif="02", dtdeclgro=None, typedtnai="O", dtnai="1992-00-00"),
    ]
    seqs = Seqs()
    parts = build(header("GRO"), records, out_dir=out_dir, max_bytes=10_000_000, seq_for_part=seqs)
    assert len(parts) == 1 and seqs.calls == [1]
    part = parts[0]
    assert (part.part, part.seq) == (1, 41)
    assert part.path.name == "GRO_035_20261123_000041.xml"
    assert part.record_keys == tuple(r.key for r in records)
    assert part.received == tuple(r.received for r in records)
    check_part_metadata(part, out_dir)
    tree = validate_part("GRO", part, tmp_path)
    root = tree.getroot()

    assert part.path.read_bytes().startswith(
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Racine>'
    )
    flux = root.find("IdentificationFlux")
    assert [e.tag for e in flux] == [
        "APPLIEME", "NUMVERSIONAPPLIEME", "TYPEFLUX", "NATFLUX", "DTCREAFLUX",
        "HEUCREAFLUX", "DTREF", "FONORG", "NUMORG", "NUMSEQFLUX",
    ]  # fmt: skip
    assert [e.text for e in flux] == [
        "CRI", "6200", "H", "G", "2026-11-23", "20:14:35.5160", "2026-11-23", "CAF", "351", "41",
    ]  # fmt: skip
    cases = root.findall("InfoSuiviGrossessePMI")
    assert [c.findtext("IdentificationDossier/Organisme/MATRICULE") for c in cases] == [
        r.matricule for r in records
    ]
    assert {c.findtext("IdentificationDossier/Partenaire/TYPEPARTE") for c in cases} == {"CG  "}
    assert {c.findtext("IdentificationDossier/Partenaire/IDEPARTE") for c in cases} == {"035"}
    assert root.findtext("TransmissionFlux/NBTOTDOSPMITRANSM") == "3"
    assert root.find("Anomalie") is None
    # Text is escaped, not mangled.
    assert cases[0].findtext(".//NOMVOIE") == "DE L'ÉGLISE & DU <MARCHÉ>"
    # Only the mutation carries MutationPrenante; a missing declaration date is left out.
    assert cases[0].find("DossierPMI/MutationPrenante") is None
    assert cases[1].findtext("DossierPMI/MutationPrenante/NUMORG") == "561"
    assert cases[1].findtext("DossierPMI/MutationPrenante/MATRICULE") == "063052900000000"
    assert cases[2].find("DossierPMI/DTDECLGRO") is None
    assert cases[2].findtext("DossierPMI/DTDEBGRO") == "2026-09-01"
    assert cases[2].findtext("DonneesAdministratives/Personne/DTNAI") == "1992-00-00"


def test_gro_carries_no_nir_nor_anything_outside_the_record(out_dir: Path, tmp_path: Path) -> None:
    record = gro(0)
    parts = build(header("GRO"), [record], out_dir=out_dir, max_bytes=10_000_000, seq_for_part=Seqs())
    tree = validate_part("GRO", parts[0], tmp_path)
    data = parts[0].path.read_bytes()
    assert b"NIR" not in data
    # Every text value is either a constant of the format or a field of the GroRecord.
    fields = {str(getattr(record, f.name)) for f in dataclasses.fields(record)}
    fields |= {v.isoformat() for v in (record.dtemm, record.dtdeclgro, record.dtdebgro)}
    constants = {
        "CRI",
        "6200",
        "H",
        "G",
        "2026-11-23",
        "20:14:35.5160",
        "CAF",
        "351",
        "1",
        "CG  ",
        "035",
        "FRA",
    }
    constants |= {"0", "41"}
    for element in tree.iter():
        if len(element) == 0 and element.text:
            assert element.text in fields | constants, element.tag


# --- DSG -------------------------------------------------------------------------------


def test_dsg_builds_a_valid_envelope(out_dir: Path, tmp_path: Path) -> None:
    records = [dsg(0), dsg(1, telephone="", nir=""), dsg(2, ps_numero="12345678901", ps_numero_type="RPPS")]
    parts = build(header("DSG"), records, out_dir=out_dir, max_bytes=10_000_000, seq_for_part=Seqs(6))
    assert len(parts) == 1
    part = parts[0]
    assert part.path.name == "DSG_035_20261123_000007.xml"
    check_part_metadata(part, out_dir)
    root = validate_part("DSG", part, tmp_path).getroot()
    assert root.tag == "Agregat" and root.nsmap == {"ns2": "urn:cnav:sngi", "ns3": DGE}
    ns = {"d": DGE, "b": BENEF, "c": DSGCNAF, "p": PS}
    entete = root.find("d:Entete", ns)
    assert entete.attrib == {"Profil_Version": "01.02", "PGMD_Profil": "SORTIEDGE"}
    assert entete.findtext("d:Identification", namespaces=ns) == "CNAF.DGESDSGA.035.20261123.000007"
    assert entete.findtext("d:Temps", namespaces=ns) == "2026-11-23T20:14:35.516+01:00"
    assert entete.findtext("d:NbDoc", namespaces=ns) == "3"
    assert entete.find("d:Recepteur/d:Identite", ns).attrib == {"R": "SIRET"}
    assert entete.findtext("d:Recepteur/d:Identite", namespaces=ns) == "22350001800013"
    assert entete.findtext("d:Recepteur/d:Qualite", namespaces=ns) == "CGD035"
    docs = root.findall("d:Document", ns)
    assert [d.findtext("d:Mindex/d:Identification", namespaces=ns) for d in docs] == [
        r.identification for r in records
    ]
    assert [d.findtext("d:Mindex/d:RefDGE", namespaces=ns) for d in docs] == [
        "DGEM00070001",
        "DGEM00070002",
        "DGEM00070003",
    ]
    benef = docs[0].find("d:Donnee/c:DSGCNAF/c:BENEFICIAIRE", ns)
    assert [etree.QName(e).localname for e in benef] == [
        "NomFamille", "NomUsage", "Prenom", "NIR", "Adresse", "Telephone", "DateNai", "Rang", "MAT",
    ]  # fmt: skip
    assert benef.findtext("b:NIR", namespaces=ns) == "290033523804212"
    assert benef.findtext("b:MAT/c:RectifDPG", namespaces=ns) == "false"
    assert docs[1].findtext(".//c:RectifDPG", namespaces=ns) == "true"
    # An empty NIR or phone is left out, not written empty.
    benef1 = docs[1].find("d:Donnee/c:DSGCNAF/c:BENEFICIAIRE", ns)
    assert benef1.find("b:NIR", ns) is None and benef1.find("b:Telephone", ns) is None
    assert docs[2].find(".//c:PARTENAIRE/p:Numero", ns).attrib == {"R": "RPPS"}
    # Namespaces are declared where the sample declares them, not on every Document.
    text = part.path.read_text("utf-8")
    assert "<ns3:Document>" in text
    assert text.count('xmlns:ns3="urn:ops:rncps:dge"') == 1


def test_dsg_optional_parts_left_empty_still_validate(out_dir: Path, tmp_path: Path) -> None:
    # What the DSG parser accepts as optional (names, address parts, phone, PRESTATAIRE).
    emptied = ("destinataire", "numero_voie", "type_voie", "nom_voie", "code_postal", "localite", "code_pays")
    record = dsg(0, address=dict.fromkeys(emptied, ""), nom_usage="", telephone="", ps_numero_am="", ps_nom="",
                 ps_prenom="")
    part = build(header("DSG"), [record], out_dir=out_dir, max_bytes=10_000_000, seq_for_part=Seqs())[0]
    root = validate_part("DSG", part, tmp_path).getroot()
    assert root.find(f".//{{{PS}}}PRESTATAIRE") is None
    assert root.findtext(f".//{{{BENEF}}}CodePostal") == ""


def test_gro_optional_parts_left_empty_still_validate(out_dir: Path, tmp_path: Path) -> None:
    record = gro(0, nom="", nomcomnai="", etatadr="", code_pos="", nom_com="", num_voie="", nom_voie="")
    part = build(header("GRO"), [record], out_dir=out_dir, max_bytes=10_000_000, seq_for_part=Seqs())[0]
    validate_part("GRO", part, tmp_path)


def test_dsg_empty_day_is_one_envelope_with_no_document(out_dir: Path, tmp_path: Path) -> None:
    seqs = Seqs()
    parts = build(header("DSG"), [], out_dir=out_dir, max_bytes=100, seq_for_part=seqs)
    assert len(parts) == 1 and seqs.calls == [1]
    assert parts[0].record_keys == () and parts[0].received == ()
    root = validate_part("DSG", parts[0], tmp_path).getroot()
    assert root.findtext(f"{{{DGE}}}Entete/{{{DGE}}}NbDoc") == "0"
    assert root.find(f"{{{DGE}}}Document") is None


# --- SGR -------------------------------------------------------------------------------


def test_sgr_builds_a_zip_with_index_and_scans(out_dir: Path, tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    records = [sgr(i, scans, size=500 + 100 * i) for i in range(3)]
    parts = build(
        header("SGR", "081", "811"), records, out_dir=out_dir, max_bytes=10_000_000, seq_for_part=Seqs()
    )
    assert len(parts) == 1
    part = parts[0]
    assert part.path.name == "SGR_081_20261123_000041.zip"
    check_part_metadata(part, out_dir)
    root = validate_part("SGR", part, tmp_path).getroot()
    with zipfile.ZipFile(part.path) as archive:
        infos = archive.infolist()
        assert [i.filename for i in infos] == [
            "CG_081_2026-11-23_pmiich.xml",
            "00001/IMG00001.pdf",
            "00002/IMG00002.pdf",
            "00003/IMG00003.pdf",
        ]
        assert infos[0].compress_type == zipfile.ZIP_DEFLATED
        assert {i.compress_type for i in infos[1:]} == {zipfile.ZIP_STORED}
        for index, record in enumerate(records, 1):
            assert archive.read(f"{index:05d}/IMG{index:05d}.pdf") == record.pdf.read_bytes()
        index_bytes = archive.read(infos[0])
    assert index_bytes.startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>\n<Racine ')
    assert etree.parse(io.BytesIO(index_bytes)).docinfo.encoding == "ISO-8859-1"
    for name in (i.filename for i in infos):
        assert "DUPONT" not in name and "scan" not in name
    assert root.findtext("IdentificationFlux/APPLIEME") == "SDP"
    assert root.findtext("IdentificationFlux/NUMSEQFLUX") == "41"
    assert [e.text for e in root.iter("NOMIMAGED")] == [f"/{i:05d}/IMG{i:05d}.pdf" for i in (1, 2, 3)]
    assert [e.text for e in root.iter("MATRICULE")] == [r.matricule for r in records]
    assert {e.text for e in root.iter("TYPEPARTE")} == {"CG"}
    assert root.findtext("TransmissionFlux/NBTOTDOSPMITRANSM") == "00003"
    # The routing commune stays home.
    assert b"35238" not in index_bytes


def test_sgr_refuses_a_scan_changed_since_it_was_checked(out_dir: Path, tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    record = sgr(0, scans)
    record.pdf.write_bytes(record.pdf.read_bytes() + b"more")
    with pytest.raises(InputFileError) as raised:
        build(header("SGR"), [record], out_dir=out_dir, max_bytes=10_000_000, seq_for_part=Seqs())
    assert raised.value.code == "PDF_CHANGED"
    assert list(out_dir.iterdir()) == []


def test_sgr_empty_day(out_dir: Path, tmp_path: Path) -> None:
    parts = build(header("SGR"), [], out_dir=out_dir, max_bytes=10, seq_for_part=Seqs())
    assert len(parts) == 1
    root = validate_part("SGR", parts[0], tmp_path).getroot()
    assert root.findtext("TransmissionFlux/NBTOTDOSPMITRANSM") == "00000"
    with zipfile.ZipFile(parts[0].path) as archive:
        assert archive.namelist() == ["CG_035_2026-11-23_pmiich.xml"]


# --- all flows: splitting, empty days, determinism ------------------------------------------


def make(flow: str, n: int, directory: Path) -> list:
    if flow == "GRO":
        return [gro(i) for i in range(n)]
    if flow == "DSG":
        return [dsg(i) for i in range(n)]
    scans = directory / "scans"
    scans.mkdir(exist_ok=True)
    return [sgr(i, scans, size=700 + 37 * i) for i in range(n)]


def count_in(flow: str, root: etree._Element) -> int:
    if flow == "DSG":
        return int(root.findtext(f"{{{DGE}}}Entete/{{{DGE}}}NbDoc"))
    return int(root.findtext("TransmissionFlux/NBTOTDOSPMITRANSM"))


def seq_in(flow: str, root: etree._Element) -> int:
    if flow == "DSG":
        return int(root.findtext(f"{{{DGE}}}Entete/{{{DGE}}}Identification").rsplit(".", 1)[1])
    return int(root.findtext("IdentificationFlux/NUMSEQFLUX"))


@pytest.mark.parametrize("flow", ["GRO", "DSG", "SGR"])
def test_parts_split_under_max_bytes(flow: str, out_dir: Path, tmp_path: Path) -> None:
    records = make(flow, 9, tmp_path)
    one = build(header(flow), records[:1], out_dir=out_dir, max_bytes=10_000_000, seq_for_part=Seqs())[0]
    for p in out_dir.iterdir():
        p.unlink()
    # Room for about three records a part.
    max_bytes = one.size + 2 * (one.size - 500) + 100 if flow != "SGR" else one.size * 3
    seqs = Seqs(100)
    parts = build(header(flow), records, out_dir=out_dir, max_bytes=max_bytes, seq_for_part=seqs)
    assert len(parts) >= 3
    assert [p.part for p in parts] == list(range(1, len(parts) + 1))
    assert seqs.calls == [p.part for p in parts]
    assert [p.seq for p in parts] == [100 + p.part for p in parts]
    assert len({p.path for p in parts}) == len(parts)
    keys = [k for p in parts for k in p.record_keys]
    assert keys == [r.key for r in records]  # all present, once, in order
    for part in parts:
        check_part_metadata(part, out_dir)
        assert part.size <= max_bytes
        root = validate_part(flow, part, tmp_path).getroot()
        assert count_in(flow, root) == len(part.record_keys)
        assert seq_in(flow, root) == part.seq
        assert f"_{part.seq:06d}." in part.path.name


@pytest.mark.parametrize("flow", ["GRO", "DSG", "SGR"])
def test_a_record_larger_than_max_bytes_goes_alone(flow: str, out_dir: Path, tmp_path: Path) -> None:
    records = make(flow, 3, tmp_path)
    parts = build(header(flow), records, out_dir=out_dir, max_bytes=50, seq_for_part=Seqs())
    assert [len(p.record_keys) for p in parts] == [1, 1, 1]
    for part in parts:
        validate_part(flow, part, tmp_path)


@pytest.mark.parametrize("flow", ["GRO", "DSG", "SGR"])
def test_empty_flow_is_one_part_with_zero_count(flow: str, out_dir: Path, tmp_path: Path) -> None:
    seqs = Seqs()
    parts = build(header(flow), iter([]), out_dir=out_dir, max_bytes=1_000, seq_for_part=seqs)
    assert len(parts) == 1 and seqs.calls == [1]
    assert (parts[0].part, parts[0].seq, parts[0].record_keys) == (1, 41, ())
    check_part_metadata(parts[0], out_dir)
    root = validate_part(flow, parts[0], tmp_path).getroot()
    assert count_in(flow, root) == 0


@pytest.mark.parametrize("flow", ["GRO", "DSG", "SGR"])
def test_same_inputs_give_identical_bytes(flow: str, tmp_path: Path) -> None:
    records = make(flow, 5, tmp_path)
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    a = build(header(flow), records, out_dir=first, max_bytes=10_000_000, seq_for_part=Seqs())
    b = build(header(flow), records, out_dir=second, max_bytes=10_000_000, seq_for_part=Seqs())
    assert [p.sha256 for p in a] == [p.sha256 for p in b]
    assert [p.path.read_bytes() for p in a] == [p.path.read_bytes() for p in b]
    # A rebuild into the same directory replaces the file with the same bytes.
    c = build(header(flow), records, out_dir=first, max_bytes=10_000_000, seq_for_part=Seqs())
    assert [p.sha256 for p in c] == [p.sha256 for p in a]
    assert sorted(p.name for p in first.iterdir()) == sorted(p.path.name for p in a)


def test_files_are_owner_only_whatever_the_umask(out_dir: Path) -> None:
    old = os.umask(0)
    try:
        parts = build(header("GRO"), [gro(0)], out_dir=out_dir, max_bytes=10_000_000, seq_for_part=Seqs())
    finally:
        os.umask(old)
    assert stat.S_IMODE(parts[0].path.stat().st_mode) == 0o600


def test_a_failed_build_leaves_no_file(out_dir: Path) -> None:
    def seq_for_part(part: int) -> int:
        if part == 2:
            raise RuntimeError("trace store unavailable")
        return part

    with pytest.raises(RuntimeError):
        build(
            header("GRO"),
            [gro(i) for i in range(3)],
            out_dir=out_dir,
            max_bytes=50,
            seq_for_part=seq_for_part,
        )
    assert list(out_dir.iterdir()) == []


def test_two_parts_with_one_sequence_number_are_refused(out_dir: Path) -> None:
    with pytest.raises(ValueError):
        build(
            header("GRO"), [gro(i) for i in range(2)], out_dir=out_dir, max_bytes=50, seq_for_part=lambda n: 7
        )
    assert list(out_dir.iterdir()) == []


def test_a_record_of_another_flow_is_refused(out_dir: Path) -> None:
    with pytest.raises(TypeError):
        build(header("GRO"), [dsg(0)], out_dir=out_dir, max_bytes=10_000_000, seq_for_part=Seqs())
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize(
    "change",
    [
        {"department": "020"},
        {"numorg": "35"},
        {"flow": "XYZ"},
        {"created_at": datetime(2026, 11, 23, 20, 0)},  # naive
    ],
)
def test_bad_headers_are_refused(change: dict, out_dir: Path) -> None:
    with pytest.raises(ValueError):
        build(
            dataclasses.replace(header("GRO"), **change),
            [],
            out_dir=out_dir,
            max_bytes=1000,
            seq_for_part=Seqs(),
        )


@pytest.mark.parametrize("bad", [0, -1, True])
def test_bad_sequence_numbers_are_refused(bad: int, out_dir: Path) -> None:
    with pytest.raises(ValueError):
        build(header("GRO"), [], out_dir=out_dir, max_bytes=1000, seq_for_part=lambda n: bad)


def test_created_at_is_written_in_paris_time(out_dir: Path) -> None:
    utc = datetime(2026, 7, 1, 10, 0, 0, tzinfo=ZoneInfo("UTC"))
    h = dataclasses.replace(header("DSG"), created_at=utc)
    part = build(h, [], out_dir=out_dir, max_bytes=1000, seq_for_part=Seqs())[0]
    root = etree.parse(str(part.path)).getroot()
    assert root.findtext(f"{{{DGE}}}Entete/{{{DGE}}}Temps") == "2026-07-01T12:00:00.000+02:00"


@pytest.mark.parametrize("layout_cls, factory", [(GroLayout, gro), (DsgLayout, dsg)])
def test_the_measure_is_the_written_bytes(layout_cls, factory) -> None:
    layout = layout_cls(header("DSG"))
    with Sizer(layout) as sizer:
        rendered = sizer.bytes_of(factory(3), 2, 7)
        assert len(rendered) == sizer.record(factory(3), 2, 7)
    assert rendered.startswith(b"\n    <")
