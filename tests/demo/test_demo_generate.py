"""The demo inbox generator: reproducible bytes, upstream-shaped files, valid NIRs, known bad records.

The end-to-end tests and the demo rely on this generator to say what a correct pipeline must
deliver and reject, so its own output is checked here: the real shapes (DGE envelopes,
Cristal XML, SDP zips) against the HubEE samples' shapes and the repository's XSDs, and the
legacy shapes (shapes="legacy", still used by tests/support (make_demo)) against the old contract.
Most tests use a small département subset (with Corsica and overseas codes) for speed; one
test generates the national day.
"""

from __future__ import annotations

import csv
import io
import re
import stat
import time
import zipfile
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
    summary = gen.generate_inbox(inbox, business_date=BUSINESS_DATE, departments=SUBSET, seed=7, shapes="legacy")
    return inbox, summary


# --- reproducibility ---------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_whatever_the_department_order(tmp_path, day):
    inbox, summary = day
    again = gen.generate_inbox(
        tmp_path / "again", business_date=BUSINESS_DATE, departments=list(reversed(SUBSET)), seed=7, shapes="legacy"
    )
    first, second = _tree(inbox), _tree(tmp_path / "again")
    assert first.keys() == second.keys()
    assert all(first[name] == second[name] for name in first)
    assert again == summary


def test_another_seed_or_day_gives_other_data(tmp_path, day):
    inbox, _ = day
    reference = _tree(inbox)
    gen.generate_inbox(tmp_path / "s8", business_date=BUSINESS_DATE, departments=SUBSET, seed=8, shapes="legacy")
    other_seed = _tree(tmp_path / "s8")
    gro = "GRO/GRO_20261120.csv"
    assert other_seed[gro] != reference[gro]
    assert other_seed["DSG/DSG_20261120_000001.xml"] != reference["DSG/DSG_20261120_000001.xml"]
    next_day = gen.generate_inbox(
        tmp_path / "d2", business_date=date(2026, 11, 23), departments=SUBSET, seed=7, shapes="legacy"
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
        tmp_path / "inbox", business_date=BUSINESS_DATE, departments=["056"], seed=1, bad=False, shapes="legacy"
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
    documents = 0
    for path in (tmp_path / "inbox" / "DSG").glob("*.xml"):
        count = len(etree.fromstring(path.read_bytes(), _PARSER).findall(f"{{{DGE}}}Document"))
        assert 1 <= count <= gen.DGE_MAX_DOCUMENTS
        documents += count
    assert documents == summary.per_flow["DSG"]
    # One Cristal file and one scanning-chain zip per Caf at most: the day's files, not one per record.
    assert len(list((tmp_path / "inbox" / "GRO").glob("*.xml"))) <= 101
    assert len(list((tmp_path / "inbox" / "SGR").glob("*.zip"))) <= 101


# --- real shapes: DGE envelopes, Cristal XML, SDP zips -------------------------------------

DGE = "urn:ops:rncps:dge"
FLOW_DAY = date(2026, 11, 19)  # the working day before BUSINESS_DATE: the upstream files' day


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> tuple[Path, gen.GenerationSummary]:
    inbox = tmp_path_factory.mktemp("real") / "inbox"
    summary = gen.generate_inbox(inbox, business_date=BUSINESS_DATE, departments=SUBSET, seed=7)
    return inbox, summary


def _dsg_documents(path: Path) -> tuple[etree._Element, list[etree._Element]]:
    root = etree.fromstring(path.read_bytes(), _PARSER)
    return root, root.findall(f"{{{DGE}}}Document")


def _sgr_zips(inbox: Path):
    for path in sorted((inbox / "SGR").glob("*.zip")):
        with zipfile.ZipFile(path) as archive:
            yield path, archive


def test_real_is_the_default_reproducible_and_draws_the_legacy_people(tmp_path, real, day):
    inbox, summary = real
    assert summary.shapes == "real"
    again = gen.generate_inbox(tmp_path / "again", business_date=BUSINESS_DATE, departments=list(reversed(SUBSET)),
                               seed=7, shapes="real")
    assert _tree(inbox) == _tree(tmp_path / "again") and again == summary
    # The same records as the legacy shapes: their people, plus the one anomaly case's address.
    legacy = day[1]
    assert legacy.personal_values <= summary.personal_values
    assert len(summary.personal_values - legacy.personal_values) <= 1
    assert summary.per_flow == {**legacy.per_flow, "GRO": legacy.per_flow["GRO"] + 1}
    assert sorted((b.flow, b.reason) for b in summary.bad) == EXPECTED_BAD
    assert sorted(_tree(inbox)) == sorted(summary.files)


def test_real_file_names_are_technical(real):
    inbox, summary = real
    day = f"{FLOW_DAY:%Y%m%d}"
    numorgs = {d.numorg for c, d in gen.load_departments().items() if c in SUBSET}
    for name in summary.files:
        flow, base = name.split("/")
        pattern = {"DSG": rf"DGESDSGA_{day}_\d{{4}}\.xml", "GRO": rf"CRI_(\d{{3}})_{day}\.xml",
                   "SGR": rf"SDP_(\d{{3}})_{day}\.zip"}[flow]
        match = re.fullmatch(pattern, base)
        assert match, name
        if match.groups():
            assert match.group(1) in numorgs
        assert not any(v in name for v in summary.personal_values)


def test_dge_envelopes_validate_and_are_addressed_like_the_sample(real):
    inbox, summary = real
    from flux_pmi import schemas

    registry = gen.load_departments()
    per_department: dict[str, int] = {}
    warnings = set()
    with_nir = with_phone = 0
    departments_per_envelope = []
    for path in sorted((inbox / "DSG").glob("*.xml")):
        schemas.validate_file("DSG", path)
        data = path.read_bytes()
        assert data.startswith(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>')
        root, documents = _dsg_documents(path)
        assert root.tag == "Agregat"
        head = root.find(f"{{{DGE}}}Entete")
        assert head.get("PGMD_Profil") == "SORTIEDGE"
        assert int(head.findtext(f"{{{DGE}}}NbDoc")) == len(documents) <= gen.DGE_MAX_DOCUMENTS
        receiver = head.find(f"{{{DGE}}}Recepteur")
        identity = receiver.find(f"{{{DGE}}}Identite")
        addressed = receiver.findtext(f"{{{DGE}}}Qualite").removeprefix("CGD")
        assert identity.get("R") == "SIRET" and identity.text == registry[addressed].siret
        departments = set()
        for document in documents:
            inner = document.find(f"{{{DGE}}}Donnee/{{{NS['dsgcnaf']}}}DSGCNAF")
            ident = inner.findtext("dsgcnaf:Identification", namespaces=NS)
            assert document.findtext(f"{{{DGE}}}Mindex/{{{DGE}}}Identification") == ident
            assert document.findtext(f"{{{DGE}}}Mindex/{{{DGE}}}Temps") == inner.findtext("dsgcnaf:Date", namespaces=NS)
            insee = inner.find(".//beneficiaire:CodeInsee", NS)
            dept = codes.department_of_commune(insee.text)
            departments.add(dept)
            per_department[dept] = per_department.get(dept, 0) + 1
            if dept != addressed:
                warnings.add((path.name, insee.sourceline))
            nir = inner.findtext(".//beneficiaire:NIR", namespaces=NS)
            if nir is not None:
                with_nir += 1
                bad = (path.name, inner.find(".//beneficiaire:NIR", NS).sourceline)
                assert stdnum_nir.is_valid(nir) is (bad not in {(b.file, b.line) for b in summary.bad})
            phone = inner.findtext(".//beneficiaire:Telephone", namespaces=NS)
            if phone is not None:
                with_phone += 1
                assert re.fullmatch(r"0[67]\d{8}", phone)
            # No earlier day was given: nothing may claim to rectify an emitted declaration.
            assert inner.findtext(".//dsgcnaf:RectifDPG", namespaces=NS) == "false"
            assert inner.findtext(".//dsgcnaf:RectifNbEnfANaitre", namespaces=NS) == "false"
        departments_per_envelope.append(len(departments))
    assert per_department == {d: n["DSG"] for d, n in summary.per_department.items() if n["DSG"]}
    assert warnings == {(w.file, w.line) for w in summary.warnings if w.flow == "DSG"} != set()
    assert {w.reason for w in summary.warnings if w.flow == "DSG"} == {gen.WARNING_RECEPTEUR}
    assert max(departments_per_envelope) >= 3  # DGE's diffusion may mix départements
    assert departments_per_envelope.count(1) >= len(departments_per_envelope) // 2
    total = summary.per_flow["DSG"]
    assert 1 <= with_nir < total / 2 and 1 <= with_phone < total / 2


def _strip_input_only(root: etree._Element) -> etree._Element:
    """The Cristal file as our output shape holds it: without the NIR Cristal's own data carries."""
    copy = etree.fromstring(etree.tostring(root))
    for nir in copy.iter("NIR"):
        nir.getparent().remove(nir)
    return copy


def test_cristal_files_follow_the_sample_and_validate_without_the_nir(real):
    inbox, summary = real
    from flux_pmi import schemas
    from flux_pmi.core.errors import SchemaError

    bad = _bad_at(summary)
    files = sorted((inbox / "GRO").glob("*.xml"))
    assert files
    cases_seen = anomalies = stale = mutations = 0
    accented = False
    per_department: dict[str, int] = {}
    for path in files:
        data = path.read_bytes()
        assert data.startswith(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>')
        accented |= data.decode("utf-8") != data.decode("utf-8").encode("ascii", "ignore").decode()
        root = etree.fromstring(data, _PARSER)
        numorg = root.findtext("IdentificationFlux/NUMORG")
        assert path.name == f"CRI_{numorg}_{FLOW_DAY:%Y%m%d}.xml"
        assert [root.findtext(f"IdentificationFlux/{t}") for t in ("APPLIEME", "TYPEFLUX", "NATFLUX", "DTREF")] == [
            "CRI", "H", "G", FLOW_DAY.isoformat()]
        # The NIR is input only: our GRO schema refuses it, and accepts the rest.
        if root.find(".//NIR") is not None:
            with pytest.raises(SchemaError):
                schemas.validate_bytes("GRO", data)
        cases = root.findall("InfoSuiviGrossessePMI")
        # A planted fault may be a schema fault too (QUAL, MATRICULE): leave its case out of that check.
        ends = [c.sourceline for c in cases[1:]] + [len(data.splitlines()) + 1]
        faulty = {i for i, (case, end) in enumerate(zip(cases, ends, strict=True))
                  if any(f == path.name and case.sourceline < line < end for (_, f, line) in bad)}
        clean = _strip_input_only(root)
        for i, case in reversed(list(enumerate(clean.findall("InfoSuiviGrossessePMI")))):
            if i in faulty:
                clean.remove(case)
        schemas.validate_bytes("GRO", etree.tostring(clean))
        labels = [e.text for e in root.findall("Anomalie/LIBANO")]
        assert set(labels) <= {" DOSSIER SANS PERSONNES"}  # the sample's label, leading space included
        without_person = [c for c in cases if c.find("DonneesAdministratives/Personne") is None]
        assert len(without_person) == len(labels)
        assert root.findtext("TransmissionFlux/NBTOTDOSPMITRANSMANO") == (str(len(labels)) if labels else None)
        normal = len(cases) - len(labels)
        assert root.findtext("TransmissionFlux/NBTOTDOSPMITRANSM") == (str(normal) if normal else None)
        anomalies += len(labels)
        for case in cases:
            cases_seen += 1
            assert case.findtext("IdentificationDossier/Organisme/NUMORG") == numorg
            commune = case.find(".//NUMCOM")
            dept = codes.department_of_commune(commune.text)
            if bad.get(("GRO", path.name, commune.sourceline)) == "COMMUNE_UNKNOWN":
                assert dept is None
                dept = codes.department_of_numorg(numorg)
            assert dept in SUBSET
            per_department[dept] = per_department.get(dept, 0) + 1
            idepart = case.find("IdentificationDossier/Partenaire/IDEPARTE")
            expected_warning = ("GRO", path.name, idepart.sourceline, gen.WARNING_IDEPARTE)
            assert (idepart.text != dept) is (gen.BadRecord(*expected_warning) in summary.warnings)
            person = case.find("DonneesAdministratives/Personne")
            if person is not None:
                assert stdnum_nir.is_valid(person.findtext("NIR"))
                assert person.findtext("NIR")[1:3] == person.findtext("DTNAI")[2:4]
            mutation = case.find("DossierPMI/MutationPrenante")
            assert (mutation is not None) is (case.findtext("DossierPMI/MOTITRANSMDOSPMI") == "03")
            if mutation is not None:
                mutations += 1
                previous = codes.department_of_numorg(mutation.findtext("NUMORG"))
                assert previous not in (None, dept)
                stale += idepart.text == previous
            assert case.findtext(".//LIBTYPEVOIE") in set(gen.people.STREET_TYPE_LABELS.values())
    assert accented  # UTF-8 for real: a reader with another encoding must notice
    assert anomalies == 1
    assert cases_seen == summary.per_flow["GRO"]
    assert per_department == {d: n["GRO"] for d, n in summary.per_department.items() if n["GRO"]}
    assert 1 <= stale <= mutations
    assert stale == sum(1 for w in summary.warnings if w.flow == "GRO")


def test_sdp_zips_hold_a_latin1_index_and_the_scans_it_names(real):
    inbox, summary = real
    from flux_pmi import schemas
    from flux_pmi.core.errors import SchemaError

    bad = _bad_at(summary)
    at_root = cases_seen = 0
    registry = gen.load_departments()
    for path, archive in _sgr_zips(inbox):
        assert archive.testzip() is None
        names = archive.namelist()
        index_name = names[0]
        dept = re.fullmatch(rf"CG_(\w{{3}})_{FLOW_DAY.isoformat()}_pmiich\.xml", index_name).group(1)
        assert path.name == f"SDP_{registry[dept].numorg}_{FLOW_DAY:%Y%m%d}.zip"
        assert all(not n.startswith("/") and ".." not in n for n in names)
        assert all(stat.S_IMODE(i.external_attr >> 16) == 0o600 for i in archive.infolist())
        index = archive.read(index_name)
        assert index.startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>')
        schemas.validate_bytes("SGR", index)
        root = etree.fromstring(index, _PARSER)
        assert root.findtext("IdentificationFlux/APPLIEME") == "SDP"
        cases = root.findall("InfoSuiviGrossessePMI")
        assert root.findtext("TransmissionFlux/NBTOTDOSPMITRANSM") == f"{len(cases):05d}"
        flawed = False
        for case in cases:
            cases_seen += 1
            assert case.findtext(".//IDEPARTE") == dept
            assert codes.department_of_numorg(case.findtext(".//Organisme/NUMORG")) == dept
            assert date.fromisoformat(case.findtext(".//DTCREASDP")) <= FLOW_DAY
            image = case.find("DossierPMI/NOMIMAGED")
            member = image.text.lstrip("/")
            reason = bad.get(("SGR", path.name, image.sourceline))
            flawed |= reason is not None
            candidates = [n for n in (member, member.rsplit("/", 1)[1]) if n in names]
            if reason == "PDF_MISSING":
                assert candidates == []
                continue
            assert len(candidates) == 1
            at_root += "/" not in candidates[0]
            data = archive.read(candidates[0])
            if reason == "PDF_NOT_PDF":
                assert not data.startswith(b"%PDF-")
                continue
            _check_pdf_structure(data)
        # Our own zip validator is literal about the layout: it passes exactly the sound, foldered ones.
        literal = not flawed and all("/" in n for n in names[1:])
        if literal:
            schemas.validate_sgr_zip(path)
        else:
            with pytest.raises(SchemaError):
                schemas.validate_sgr_zip(path)
    assert at_root >= 1  # like the sample, a scan at the zip root although NOMIMAGED names a folder
    assert cases_seen == summary.per_flow["SGR"]
    assert summary.pdf_bytes > 0


def test_real_planted_records_sit_where_the_summary_says(real):
    inbox, summary = real
    element = {"NIR_KEY": "NIR", "DATE_ORDER": "DateDPG", "COMMUNE_UNKNOWN": "NUMCOM",
               "MATRICULE_SHAPE": "MATRICULE", "CODE_UNKNOWN": "QUAL", "PDF_MISSING": "NOMIMAGED",
               "PDF_NOT_PDF": "NOMIMAGED"}
    assert len({(b.file, b.line) for b in summary.bad}) == len(summary.bad) == len(gen.BAD_PLAN)
    for b in summary.bad:
        if b.flow == "SGR":
            with zipfile.ZipFile(inbox / "SGR" / b.file) as archive:
                text = archive.read(archive.namelist()[0]).decode("iso-8859-1")
        else:
            text = (inbox / b.flow / b.file).read_text("utf-8")
        line = text.splitlines()[b.line - 1].strip()
        tag = re.match(r"<(?:\w+:)?(\w+)>", line).group(1)
        if b.reason == "DATE_FUTURE":
            assert tag in ("DTDECLGRO", "DTDEBGRO")
            assert date.fromisoformat(re.search(r">(.*)<", line).group(1)) > BUSINESS_DATE
        else:
            assert tag == element[b.reason]
        if b.reason == "COMMUNE_UNKNOWN":
            assert codes.department_of_commune(re.search(r">(.*)<", line).group(1)) is None
    for flow in ("DSG", "GRO", "SGR"):
        total = sum(n[flow] for n in summary.per_department.values())
        valid = sum(n[flow] for n in summary.valid_per_department.values())
        assert total - valid == sum(1 for b in summary.bad if b.flow == flow)


def test_real_without_bad_records_everything_is_valid_and_schema_clean(tmp_path):
    from flux_pmi import schemas

    summary = gen.generate_inbox(tmp_path / "inbox", business_date=BUSINESS_DATE, departments=["056", "081"],
                                 seed=1, bad=False)
    assert summary.bad == [] and summary.valid_per_department == summary.per_department
    for path in (tmp_path / "inbox" / "GRO").glob("*.xml"):
        schemas.validate_bytes("GRO", etree.tostring(_strip_input_only(etree.parse(str(path)).getroot())))
    for path in (tmp_path / "inbox" / "DSG").glob("*.xml"):
        schemas.validate_file("DSG", path)
        for nir in etree.parse(str(path)).iter(f"{{{NS['beneficiaire']}}}NIR"):
            assert stdnum_nir.is_valid(nir.text)


def test_rectifications_come_only_from_an_earlier_generated_day(tmp_path):
    earlier = date(2026, 11, 19)
    gen.generate_inbox(tmp_path / "d1", business_date=earlier, departments=SUBSET, seed=7)
    second = gen.generate_inbox(tmp_path / "d2", business_date=BUSINESS_DATE, departments=SUBSET, seed=7,
                                rectify_from=earlier)
    plain = gen.generate_inbox(tmp_path / "d2-plain", business_date=BUSINESS_DATE, departments=SUBSET, seed=7)

    def declarations(inbox: Path) -> dict[str, etree._Element]:
        out = {}
        for path in sorted((inbox / "DSG").glob("*.xml")):
            for document in _dsg_documents(path)[1]:
                inner = document.find(f"{{{DGE}}}Donnee/{{{NS['dsgcnaf']}}}DSGCNAF")
                out.setdefault(inner.findtext("dsgcnaf:Identification", namespaces=NS), inner)
        return out

    emitted, now = declarations(tmp_path / "d1"), declarations(tmp_path / "d2")
    assert 1 <= len(second.rectifications) <= gen.RECTIFICATIONS_MAX
    assert second.per_flow["DSG"] == plain.per_flow["DSG"] + len(second.rectifications)
    assert sum(n["DSG"] for n in second.valid_per_department.values()) == sum(
        n["DSG"] for n in plain.valid_per_department.values()) + len(second.rectifications)
    flagged = {i: e for i, e in now.items() if "true" in (e.findtext(".//dsgcnaf:RectifDPG", namespaces=NS),
                                                           e.findtext(".//dsgcnaf:RectifNbEnfANaitre", namespaces=NS))}
    assert len(flagged) == len(second.rectifications)
    for ident, rectified in flagged.items():
        original = emitted[ident]  # it was emitted on the earlier day, under the same Identification
        flag = next(f for f in ("RectifDPG", "RectifNbEnfANaitre")
                    if rectified.findtext(f".//dsgcnaf:{f}", namespaces=NS) == "true")
        field = {"RectifDPG": "DateDPG", "RectifNbEnfANaitre": "NbEnfANaitre"}[flag]
        value = f".//beneficiaire:{field}"
        assert rectified.findtext(value, namespaces=NS) != original.findtext(value, namespaces=NS)
        for same in (".//beneficiaire:NomFamille", ".//beneficiaire:DateNai", ".//beneficiaire:CodeInsee"):
            assert rectified.findtext(same, namespaces=NS) == original.findtext(same, namespaces=NS)
        name = rectified.findtext(".//beneficiaire:NomFamille", namespaces=NS)
        assert len(name) < 5 or name in second.personal_values  # the earlier day's person, now in this inbox
    assert {r.reason for r in second.rectifications} <= {"RectifDPG", "RectifNbEnfANaitre"}
    with pytest.raises(ValueError):
        gen.generate_inbox(tmp_path / "x", business_date=BUSINESS_DATE, departments=SUBSET, seed=7,
                           shapes="legacy", rectify_from=earlier)
    with pytest.raises(ValueError):
        gen.generate_inbox(tmp_path / "y", business_date=BUSINESS_DATE, departments=SUBSET, seed=7,
                           rectify_from=BUSINESS_DATE)


def test_real_files_are_owner_only_and_hold_no_temporary_file(real):
    inbox, _ = real
    for path in [inbox, *inbox.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
        assert not path.name.startswith(".")
    assert {p.parent.name for p in inbox.rglob("*") if p.is_file()} == {"DSG", "GRO", "SGR"}


def test_legacy_stays_selectable_and_unknown_shapes_are_refused(tmp_path):
    with pytest.raises(ValueError):
        gen.generate_inbox(tmp_path / "x", business_date=BUSINESS_DATE, departments=["056"], seed=1, shapes="csv")
    assert gen.main([str(tmp_path / "cli"), "--date", "2026-11-20", "--departments", "056", "--shapes", "legacy"]) == 0
    assert list((tmp_path / "cli" / "GRO").glob("*.csv")) and not list((tmp_path / "cli" / "SGR").glob("*.zip"))
