"""The demo inbox generator: reproducible bytes, contract-shaped files, valid NIRs, known bad records.

The end-to-end tests and the demo rely on this generator to say what a correct pipeline must
deliver and reject, so its own output is checked against docs/input-contract.md here.
Most tests use a small département subset (with Corsica and overseas codes) for speed; one
test generates the national day.
"""

from __future__ import annotations

import csv
import io
import re
import stat
import time
import zlib
from datetime import date, timedelta
from pathlib import Path

import pytest
from lxml import etree
from stdnum.fr import nir as stdnum_nir

from flux_pmi.demo import generate as gen
from flux_pmi.demo.pdf import one_page_pdf
from flux_pmi.flows import codes

BUSINESS_DATE = date(2026, 11, 20)  # a Friday
SUBSET = ["035", "048", "02A", "02B", "974", "976"]

NS = {
    "dsgcnaf": "urn:cnamts:dsgcnaf",
    "beneficiaire": "urn:siram:beneficiaire",
    "partenairesante": "urn:siram:partenairesante",
}

# docs/input-contract.md, DSG: the elements in this order.
DSG_ORDER = [
    "dsgcnaf:Identification",
    "dsgcnaf:Date",
    "dsgcnaf:BENEFICIAIRE",
    "beneficiaire:NomFamille",
    "beneficiaire:NomUsage",
    "beneficiaire:Prenom",
    "beneficiaire:NIR",
    "beneficiaire:Adresse",
    "beneficiaire:Destinataire",
    "beneficiaire:PointRemise",
    "beneficiaire:Complement",
    "beneficiaire:NumeroVoie",
    "beneficiaire:IndiceRepetition",
    "beneficiaire:TypeVoie",
    "beneficiaire:NomVoie",
    "beneficiaire:MentionDistribution",
    "beneficiaire:CodePostal",
    "beneficiaire:Localite",
    "beneficiaire:CodePays",
    "beneficiaire:CodeInsee",
    "beneficiaire:Telephone",
    "beneficiaire:DateNai",
    "beneficiaire:Rang",
    "beneficiaire:MAT",
    "beneficiaire:DateDPG",
    "dsgcnaf:RectifDPG",
    "beneficiaire:NbEnfANaitre",
    "dsgcnaf:RectifNbEnfANaitre",
    "beneficiaire:DateExamen",
    "dsgcnaf:PARTENAIRE",
    "partenairesante:Numero",
    "partenairesante:PRESTATAIRE",
    "partenairesante:Numero",
    "partenairesante:NomFamille",
    "partenairesante:Prenom",
]

EXPECTED_BAD = sorted(gen.BAD_PLAN)

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


# --- helpers -----------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _working_days_between(earlier: date, later: date) -> int:
    count, day = 0, earlier
    while day < later:
        day += timedelta(days=1)
        if day.weekday() < 5:
            count += 1
    return count


def _read_csv(path: Path) -> list[dict[str, str]]:
    text = path.read_bytes().decode("iso-8859-1")
    return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=";"))


def _bad_at(summary: gen.GenerationSummary) -> dict[tuple[str, str, int], str]:
    return {(b.flow, b.file, b.line): b.reason for b in summary.bad}


def _xml_date(text: str) -> date:
    return date.fromisoformat(text[:10])


def _check_pdf_structure(data: bytes) -> None:
    """Header, trailer, and an xref whose every offset lands on its object."""
    assert data.startswith(b"%PDF-1.4\n")
    assert data.endswith(b"%%EOF")
    match = re.search(rb"startxref\n(\d+)\n%%EOF$", data)
    assert match
    xref_at = int(match.group(1))
    head = re.match(rb"xref\n0 (\d+)\n", data[xref_at:])
    assert head
    count = int(head.group(1))
    table = data[xref_at + head.end() : xref_at + head.end() + 20 * count]
    entries = [table[i * 20 : (i + 1) * 20] for i in range(count)]
    assert entries[0] == b"0000000000 65535 f \n"
    for number, entry in enumerate(entries[1:], start=1):
        assert re.fullmatch(rb"\d{10} 00000 n \n", entry)
        assert data[int(entry[:10]) :].startswith(b"%d 0 obj\n" % number)
    assert data[xref_at + head.end() + 20 * count :].startswith(
        b"trailer\n<< /Size %d /Root 1 0 R >>" % count
    )
    # Every stream is exactly /Length long.
    for stream in re.finditer(rb"/Length (\d+) >>\nstream\n", data):
        end = stream.end() + int(stream.group(1))
        assert data[end : end + len(b"\nendstream")] == b"\nendstream"
    image = re.search(rb"/Width (\d+) /Height (\d+) .*?/Length (\d+) >>\nstream\n", data)
    assert image
    width, height, length = (int(g) for g in image.groups())
    pixels = zlib.decompress(data[image.end() : image.end() + length])
    assert len(pixels) == width * height


@pytest.fixture(scope="module")
def day(tmp_path_factory) -> tuple[Path, gen.GenerationSummary]:
    inbox = tmp_path_factory.mktemp("subset") / "inbox"
    summary = gen.generate_inbox(inbox, business_date=BUSINESS_DATE, departments=SUBSET, seed=7)
    return inbox, summary


# --- reproducibility ---------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_whatever_the_department_order(tmp_path, day):
    inbox, summary = day
    again = gen.generate_inbox(
        tmp_path / "again", business_date=BUSINESS_DATE, departments=list(reversed(SUBSET)), seed=7
    )
    first, second = _tree(inbox), _tree(tmp_path / "again")
    assert first.keys() == second.keys()
    assert all(first[name] == second[name] for name in first)
    assert again == summary


def test_another_seed_or_day_gives_other_data(tmp_path, day):
    inbox, _ = day
    reference = _tree(inbox)
    gen.generate_inbox(tmp_path / "s8", business_date=BUSINESS_DATE, departments=SUBSET, seed=8)
    other_seed = _tree(tmp_path / "s8")
    gro = "GRO/GRO_20261120.csv"
    assert other_seed[gro] != reference[gro]
    assert other_seed["DSG/DSG_20261120_000001.xml"] != reference["DSG/DSG_20261120_000001.xml"]
    next_day = gen.generate_inbox(
        tmp_path / "d2", business_date=date(2026, 11, 23), departments=SUBSET, seed=7
    )
    assert next_day.personal_values.isdisjoint({v for v in day[1].personal_values if stdnum_nir.is_valid(v)})


# --- DSG ---------------------------------------------------------------------------------


def test_dsg_documents_follow_the_contract_and_route_to_their_department(day):
    inbox, summary = day
    dsg_bad = {b.file: b.reason for b in summary.bad if b.flow == "DSG"}
    per_department: dict[str, int] = {}
    files = sorted((inbox / "DSG").glob("*.xml"))
    assert len(files) == summary.per_flow["DSG"]
    for path in files:
        data = path.read_bytes()
        assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
        assert b"<!DOCTYPE" not in data and b"<!ENTITY" not in data
        root = etree.fromstring(data, _PARSER)
        assert root.tag == "{urn:cnamts:dsgcnaf}DSGCNAF"
        assert root.get("Nature") == "DSGCNAF" and root.get("Version") == "00.03"
        names = [etree.QName(e).localname for e in root.iter() if e is not root]
        prefixes = [e.prefix + ":" + n for e, n in zip(list(root.iter())[1:], names, strict=True)]
        assert prefixes == DSG_ORDER

        def text(xpath: str, root=root) -> str:
            return root.findtext(xpath, namespaces=NS) or ""

        dept = codes.department_of_commune(text(".//beneficiaire:CodeInsee"))
        assert dept in SUBSET
        per_department[dept] = per_department.get(dept, 0) + 1
        assert re.fullmatch(r"\d{14}d\d{20}", text("dsgcnaf:Identification"))
        assert re.fullmatch(r"0[67]\d{8}", text(".//beneficiaire:Telephone"))
        assert text(".//beneficiaire:CodePays") == "F"
        reason = dsg_bad.get(path.name)
        if reason:
            # The bad record's line is the faulty element's, where the parser points.
            line = next(b.line for b in summary.bad if b.file == path.name)
            faulty = {"NIR_KEY": b"<beneficiaire:NIR>", "DATE_ORDER": b"<beneficiaire:DateDPG>"}[reason]
            assert data.splitlines()[line - 1].strip().startswith(faulty)
        nir = text(".//beneficiaire:NIR")
        assert stdnum_nir.is_valid(nir) is (reason != "NIR_KEY")
        born = date.fromisoformat(text(".//beneficiaire:DateNai"))
        assert nir[:5] == f"2{born:%y%m}"
        assert 18 <= (BUSINESS_DATE - born).days / 365.25 <= 45
        stamp = text("dsgcnaf:Date")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0[12]:00", stamp)
        received = _xml_date(stamp)
        assert received.weekday() < 5
        assert 1 <= _working_days_between(received, BUSINESS_DATE) <= 6
        exam = _xml_date(text(".//beneficiaire:DateExamen"))
        start = _xml_date(text(".//beneficiaire:DateDPG"))
        assert exam <= received
        if reason == "DATE_ORDER":
            assert start > exam
        else:
            assert 6 * 7 <= (exam - start).days <= 14 * 7
        for flag in ("dsgcnaf:RectifDPG", "dsgcnaf:RectifNbEnfANaitre"):
            assert text(f".//{flag}") in ("true", "false")
        assert int(text(".//beneficiaire:Rang")) >= 1 and int(text(".//beneficiaire:NbEnfANaitre")) >= 1
        ps = root.find("dsgcnaf:PARTENAIRE/partenairesante:Numero", NS)
        assert (ps.get("R"), len(ps.text)) in {("ADELI", 9), ("RPPS", 11)} and ps.text.isdigit()
    assert per_department == {d: n["DSG"] for d, n in summary.per_department.items() if n["DSG"]}


def test_dsg_escapes_markup_in_values(tmp_path):
    record = {
        tag: "x"
        for tag in (
            "Identification Date NomFamille NomUsage Prenom NIR CodeInsee Telephone DateNai Rang "
            "DateDPG RectifDPG NbEnfANaitre RectifNbEnfANaitre DateExamen"
        ).split()
    }
    record["NomVoie"] = 'DE L\'ÉGLISE & <DU> "PORT"'
    record["ps"] = ("1", "ADELI", "2", "A", "B")
    root = etree.fromstring(gen.dsg_xml(record), _PARSER)
    assert root.findtext(".//beneficiaire:NomVoie", namespaces=NS) == record["NomVoie"]


# --- GRO ---------------------------------------------------------------------------------


def test_gro_extract_is_latin1_with_all_columns_and_the_extra_personal_ones(day):
    inbox, summary = day
    raw = (inbox / "GRO" / "GRO_20261120.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # accented names: a reader with the wrong encoding must notice
    header = raw.decode("iso-8859-1").split("\r\n", 1)[0].split(";")
    assert set(gen.GRO_CONTRACT_COLUMNS) <= set(header)
    for extra in ("NIR", "NUMTEL", "ADRMEL"):
        assert 0 < header.index(extra) < len(header) - 3  # in the middle, not tacked on at the end
    rows = _read_csv(inbox / "GRO" / "GRO_20261120.csv")
    assert len(rows) == summary.per_flow["GRO"]
    assert any(c in raw for c in (b"\xe9", b"\xe8", b"\xe7", b"\xeb", b"\xc9", b"\xc8", b"\xc7", b"\xcb"))


def test_gro_rows_obey_the_contract_except_the_planned_faults(day):
    inbox, summary = day
    bad = _bad_at(summary)
    motifs = set()
    for line, row in enumerate(_read_csv(inbox / "GRO" / "GRO_20261120.csv"), start=2):
        reason = bad.get(("GRO", "GRO_20261120.csv", line))
        assert stdnum_nir.is_valid(row["NIR"])
        assert re.fullmatch(r"0[67]\d{8}", row["NUMTEL"])
        received = date.fromisoformat(row["DTRECEP"])
        if reason == "DATE_FUTURE":
            assert received > BUSINESS_DATE
        else:
            assert 1 <= _working_days_between(received, BUSINESS_DATE) <= 6
        dept = codes.department_of_commune(row["NUMCOM"])
        if reason == "COMMUNE_UNKNOWN":
            assert dept is None
        else:
            assert dept in SUBSET and codes.department_of_numorg(row["NUMORG"]) == dept
        assert bool(codes.MATRICULE_RE.match(row["MATRICULE"])) is (reason != "MATRICULE_SHAPE")
        assert (row["QUAL"] in codes.QUAL) is (reason != "CODE_UNKNOWN")
        assert row["SITUPRO"] in codes.SITUPRO and row["TYPEADR"] in codes.TYPEADR
        assert row["ETATADR"] == "VC" and codes.POSTCODE_RE.match(row["CODEPOS"])
        assert row["TYPEDTNAI"] in codes.TYPEDTNAI
        dtnai = row["DTNAI"]
        if row["TYPEDTNAI"] == "J":
            assert dtnai.endswith("-00") and not dtnai.endswith("-00-00")
        elif row["TYPEDTNAI"] == "O":
            assert dtnai.endswith("-00-00")
        else:
            assert 18 <= (BUSINESS_DATE - date.fromisoformat(dtnai)).days / 365.25 <= 45
        assert row["NIR"][1:3] == dtnai[2:4]
        motif = row["MOTITRANSMDOSPMI"]
        motifs.add(motif)
        assert motif in codes.MOTIF
        start = date.fromisoformat(row["DTDEBGRO"])
        if motif == "02":
            assert row["DTDECLGRO"] == "" and start < received
        else:
            declared = date.fromisoformat(row["DTDECLGRO"])
            assert 6 * 7 <= (declared - start).days <= 14 * 7 and declared <= received
        if motif == "03":
            assert codes.department_of_numorg(row["NUMORGCED"]) not in (None, dept)
            assert codes.MATRICULE_RE.match(row["MATRICULECED"])
        else:
            assert row["NUMORGCED"] == row["MATRICULECED"] == ""
        assert date.fromisoformat(row["DTEMM"]) <= received
        assert 0 <= int(row["NBENFCHAPF"]) <= 30
    assert "01" in motifs


# --- SGR ---------------------------------------------------------------------------------


def test_sgr_index_names_real_pdfs_of_about_80_kb(day):
    inbox, summary = day
    bad = _bad_at(summary)
    index = inbox / "SGR" / "SGR_20261120_index.csv"
    raw = index.read_bytes()
    assert raw.decode("iso-8859-1").split("\r\n", 1)[0].split(";") == list(gen.SGR_COLUMNS)
    rows = _read_csv(index)
    assert len(rows) == summary.per_flow["SGR"] >= 3
    seen = 0
    for line, row in enumerate(rows, start=2):
        reason = bad.get(("SGR", index.name, line))
        relative = row["FICHIER"]
        assert not relative.startswith("/") and ".." not in relative
        assert re.fullmatch(r"scans/20261120/\d{6}\.pdf", relative)
        received = date.fromisoformat(row["DTRECEP"])
        assert received <= date.fromisoformat(row["DTCREASDP"]) < BUSINESS_DATE
        assert codes.department_of_commune(row["NUMCOM"]) == codes.department_of_numorg(row["NUMORG"])
        assert codes.MATRICULE_RE.match(row["MATRICULE"])
        pdf = inbox / "SGR" / relative
        if reason == "PDF_MISSING":
            assert not pdf.exists()
            continue
        data = pdf.read_bytes()
        if reason == "PDF_NOT_PDF":
            assert not data.startswith(b"%PDF-") and data.decode("ascii")
            continue
        assert 70_000 <= len(data) <= 90_000
        _check_pdf_structure(data)
        seen += 1
    assert summary.pdf_bytes == sum(p.stat().st_size for p in (inbox / "SGR" / "scans").rglob("*.pdf"))
    assert seen >= 1


def test_one_page_pdf_is_well_formed_reproducible_and_sized():
    import random

    for target in (20_000, 80_000, 150_000):
        data = one_page_pdf(random.Random(3), target)
        _check_pdf_structure(data)
        assert abs(len(data) - target) < target * 0.02
        assert b"/MediaBox [0 0 595 842]" in data and b"/Count 1" in data
    assert one_page_pdf(random.Random(3)) == one_page_pdf(random.Random(3))
    assert one_page_pdf(random.Random(3)) != one_page_pdf(random.Random(4))


# --- bad records, volumes, subset --------------------------------------------------------


def test_the_planned_bad_records_are_listed_with_their_reason(day):
    _, summary = day
    assert sorted((b.flow, b.reason) for b in summary.bad) == EXPECTED_BAD
    assert set(gen.REASONS) == {b.reason for b in summary.bad}
    assert len({(b.flow, b.file, b.line) for b in summary.bad}) == len(summary.bad)
    for flow in ("DSG", "GRO", "SGR"):
        total = sum(n[flow] for n in summary.per_department.values())
        valid = sum(n[flow] for n in summary.valid_per_department.values())
        assert total == summary.per_flow[flow]
        assert total - valid == sum(1 for b in summary.bad if b.flow == flow)


def test_the_flow_parsers_reject_exactly_the_planned_bad_records(day):
    """Generator and parsers agree: every good record passes, each bad one gets its reason."""
    from flux_pmi.flows.parse import parse_file

    inbox, summary = day
    rejects, valid = [], 0
    for flow, pattern in (("DSG", "*.xml"), ("GRO", "*.csv"), ("SGR", "*.csv")):
        for path in sorted((inbox / flow).glob(pattern)):
            result = parse_file(
                flow, path, display_name=path.name, today=BUSINESS_DATE, inbox_root=inbox / "SGR"
            )
            valid += len(result.records)
            rejects += [(r.flow, r.source.file, r.source.line, r.code) for r in result.rejects]
    assert sorted(rejects) == sorted(tuple(b) for b in summary.bad)
    assert valid == sum(sum(n.values()) for n in summary.valid_per_department.values())


def test_without_bad_records_everything_is_valid(tmp_path):
    summary = gen.generate_inbox(
        tmp_path / "inbox", business_date=BUSINESS_DATE, departments=["056"], seed=1, bad=False
    )
    assert summary.bad == []
    assert summary.valid_per_department == summary.per_department
    for path in (tmp_path / "inbox" / "DSG").glob("*.xml"):
        nir = etree.fromstring(path.read_bytes(), _PARSER).findtext(".//beneficiaire:NIR", namespaces=NS)
        assert stdnum_nir.is_valid(nir)


def test_only_the_requested_departments_get_records(day):
    inbox, summary = day
    assert set(summary.per_department) == set(SUBSET)
    numorgs = {row["NUMORG"] for row in _read_csv(inbox / "GRO" / "GRO_20261120.csv")}
    numorgs |= {row["NUMORG"] for row in _read_csv(inbox / "SGR" / "SGR_20261120_index.csv")}
    assert {codes.department_of_numorg(n) for n in numorgs} <= set(SUBSET)
    # Small and large départements keep their national share when generated alone.
    assert 1 <= sum(summary.per_department["048"].values()) <= 10
    assert 15 <= sum(summary.valid_per_department["974"].values()) <= 80


def test_unknown_department_and_overwrite_are_refused(tmp_path, day):
    with pytest.raises(ValueError):
        gen.generate_inbox(tmp_path / "x", business_date=BUSINESS_DATE, departments=["099"], seed=1)
    with pytest.raises(ValueError):
        gen.generate_inbox(tmp_path / "x", business_date=BUSINESS_DATE, departments=[], seed=1)
    # Short codes are accepted: "35" is 035, "2a" is 02A.
    summary = gen.generate_inbox(
        tmp_path / "y", business_date=BUSINESS_DATE, departments=["48", "2a"], seed=1
    )
    assert set(summary.per_department) == {"048", "02A"}
    with pytest.raises(FileExistsError):
        gen.generate_inbox(tmp_path / "y", business_date=BUSINESS_DATE, departments=["048", "02A"], seed=1)


def test_registry_and_volume_table_cover_the_same_departments():
    assert set(gen.load_departments()) == set(gen.POPULATION_K) == set(codes.RECIPIENTS)
    assert 60 <= gen.daily_volume("013") <= 120 and 1.5 <= gen.daily_volume("048") <= 4


# --- personal data hygiene -----------------------------------------------------------------


def test_files_are_owner_only_and_no_temporary_file_is_left(day):
    inbox, _ = day
    for path in [inbox, *inbox.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path
        assert not path.name.startswith(".")


def test_personal_values_are_complete_long_enough_and_never_in_file_names(day):
    inbox, summary = day
    values = summary.personal_values
    assert values and all(len(v) >= 5 for v in values)
    places = {d.commune_name.upper() for d in gen.load_departments().values()}
    assert not {v.upper() for v in values} & places
    rows = _read_csv(inbox / "GRO" / "GRO_20261120.csv")
    assert {r["NIR"] for r in rows} <= values
    assert {r["NUMTEL"] for r in rows} <= values
    assert {r["NOMVOIE"] for r in rows if len(r["NOMVOIE"]) >= 5} <= values
    assert {r["ADRMEL"] for r in rows if r["ADRMEL"]} <= values
    for path in (inbox / "DSG").glob("*.xml"):
        root = etree.fromstring(path.read_bytes(), _PARSER)
        for tag in ("NIR", "NomFamille", "DateNai", "Telephone"):
            value = root.findtext(f".//beneficiaire:{tag}", namespaces=NS)
            assert len(value) < 5 or value in values
    for name in summary.files:
        assert not any(v in name for v in values)


# --- the national day ----------------------------------------------------------------------


def test_national_day_volumes_and_speed(tmp_path):
    started = time.perf_counter()
    summary = gen.generate_inbox(
        tmp_path / "inbox", business_date=BUSINESS_DATE, departments=list(codes.RECIPIENTS), seed=2026
    )
    elapsed = time.perf_counter() - started
    assert elapsed < 30
    assert 2_000 <= summary.total <= 3_200
    share = {flow: n / summary.total for flow, n in summary.per_flow.items()}
    assert 0.40 <= share["DSG"] <= 0.50 and 0.35 <= share["GRO"] <= 0.45 and 0.11 <= share["SGR"] <= 0.19
    assert len(summary.per_department) == 102 and all(
        sum(n.values()) for n in summary.per_department.values()
    )
    large = sum(summary.per_department["013"].values())
    small = sum(summary.per_department["048"].values())
    assert 55 <= large <= 110 and 1 <= small <= 8
    assert 300 <= summary.per_flow["SGR"] <= 500 and summary.pdf_bytes < 45_000_000
    assert len(list((tmp_path / "inbox" / "DSG").glob("*.xml"))) == summary.per_flow["DSG"]
