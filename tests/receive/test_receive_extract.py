"""Tests of the département-side reader and writer (receive.extract, receive.output).

The HubEE samples and our own files come out as the right rows, CSV and Parquet; hostile
files (XXE, billion laughs, zip traversal, zip bombs, fake PDFs, missing scans) are
refused with their code and without their content; an output folder appears whole or
not at all, and owner-only.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import stat
import zipfile
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from support import BUSINESS_DATE, NOW, make_demo, open_delivered, record_fingerprints
from support.records import AJACCIO, dsg_record, gro_record, sgr_record

from flux_pmi.config.settings import load
from flux_pmi.core.clock import FixedClock
from flux_pmi.core.errors import ExitCode
from flux_pmi.flows.build import FlowHeader, build
from flux_pmi.flows.records import DsgRecord, GroRecord, SgrRecord
from flux_pmi.jobs.night import Night
from flux_pmi.receive import output
from flux_pmi.receive.extract import COLUMNS, Extracted, ExtractError, Scan, ZipLimits, extract, open_scan
from flux_pmi.receive.output import neutralise, write_outputs

HUBEE = Path(__file__).resolve().parents[1] / "data" / "hubee"  # copies of shared/reference/hubee
PARIS = ZoneInfo("Europe/Paris")
CREATED = datetime(2026, 11, 23, 20, 14, 35, 516_000, tzinfo=PARIS)
SECRET = "MARIESECRETE"
PDF = b"%PDF-1.4\n" + b"A" * 500 + b"\n%%EOF\n"


# --- helpers -----------------------------------------------------------------------------


def sample(name: str) -> bytes:
    return (HUBEE / name).read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hubee_index(nomimaged: str = "/00001/IMG00001.pdf") -> bytes:
    """The HubEE SGR index (ISO-8859-1), its one case pointing at `nomimaged`."""
    with zipfile.ZipFile(HUBEE / "SGR.zip") as archive:
        data = archive.read("CG_081_2022-01-02_pmiich.xml")
    return data.replace(b"/00001/IMG00001.pdf", nomimaged.encode("latin-1"))


INDEX_NAME = "CG_081_2022-01-02_pmiich.xml"


def make_zip(members: list[tuple[str, bytes]]) -> bytes:
    """A zip holding `members` under exactly the names given (zipfile keeps them verbatim)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2022, 1, 2, 19, 46, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buf.getvalue()


def sgr_zip(*scans: tuple[str, bytes], nomimaged: str = "/00001/IMG00001.pdf") -> bytes:
    return make_zip([(INDEX_NAME, hubee_index(nomimaged)), *scans])


def refused(data: bytes, code: str, **kw) -> ExtractError:
    with pytest.raises(ExtractError) as raised:
        extract(data, **kw)
    assert raised.value.code == code, str(raised.value)
    return raised.value


def modes(root: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def read_back(dest: Path, flow: str) -> tuple[list[dict[str, str]], pd.DataFrame]:
    raw = (dest / "records.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert raw.count(b"\r\n") == raw.count(b"\n")
    with open(dest / "records.csv", encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=";")
        assert tuple(reader.fieldnames) == COLUMNS[flow]
        rows = list(reader)
    frame = pd.read_parquet(dest / "records.parquet")
    assert tuple(frame.columns) == COLUMNS[flow]
    assert all(pd.api.types.is_string_dtype(dtype) for dtype in frame.dtypes)
    return rows, frame


def written_as_read(extracted: Extracted, plain: bytes, dest: Path) -> list[Path]:
    """Write the outputs, read them back, check they hold the rows and are owner-only."""
    paths = write_outputs(extracted, plain, dest)
    expected = ["records.csv", "records.parquet"] + [
        f"scans/{s.record_key}/scan.pdf" for s in extracted.scans
    ]
    assert [str(p.relative_to(dest)) for p in paths] == expected
    rows, frame = read_back(dest, extracted.flow)
    assert rows == [{k: neutralise(v) for k, v in row.items()} for row in extracted.rows]
    assert frame.to_dict("records") == extracted.rows
    for name, mode in modes(dest).items():
        assert mode == (0o700 if (dest / name).is_dir() else 0o600), name
    assert not (dest.parent / f".staging-{dest.name}").exists()
    return paths


# --- the HubEE samples -------------------------------------------------------------------

GRO_PERSON = (
    "qual", "nom_usage", "nom_famille", "prenoms", "date_naissance", "type_date_naissance",
    "commune_naissance", "situation_pro",
)  # fmt: skip


def test_hubee_gro_sample(tmp_path: Path) -> None:
    data = sample("GRO.xml")
    e = extract(data)
    assert (e.flow, e.department, e.seq, e.business_date, e.scans) == (
        "GRO",
        "056",
        None,
        date(2022, 2, 10),
        [],
    )
    assert e.content_sha256 == sha(data)
    [row] = e.rows
    assert tuple(row) == COLUMNS["GRO"]
    assert row["record_key"] == f"{sha(data)[:12]}-00001"
    assert {k: row[k] for k in ("numorg", "matricule", "allocataire", "departement")} == {
        "numorg": "561",
        "matricule": "063052900000000",
        "allocataire": "0630529",
        "departement": "056",
    }
    # "DOSSIER SANS PERSONNES": no Personne, so empty person columns; Cristal's padding goes.
    assert row["anomalie"] == "DOSSIER SANS PERSONNES"
    assert all(row[name] == "" for name in GRO_PERSON)
    assert (row["seq"], row["business_date"]) == ("", "2022-02-10")
    assert (row["adresse_type"], row["adresse_date_effet"], row["adresse_etat"]) == ("D", "2021-01-01", "VC")
    assert (row["numero_voie"], row["type_voie"], row["nom_voie"]) == ("78", "AVENUE", "DU GENERAL DE GAULLE")
    assert (row["code_commune"], row["code_postal"], row["commune"]) == ("56121", "56100", "LORIENT")
    assert (row["motif"], row["motif_libelle"], row["nb_enfants_charge"]) == ("01", "declaration", "0")
    assert row["date_declaration"] == row["mutation_matricule"] == row["compl_adresse"] == ""
    written_as_read(e, data, tmp_path / "out" / "gro")


def test_hubee_dsg_sample(tmp_path: Path) -> None:
    data = sample("DSG.xml")
    e = extract(data)
    # Its Identification (CNAF.DGESDSGA.P22AAAA3) is not ours: no seq, the date from Temps.
    assert (e.flow, e.department, e.seq, e.business_date) == ("DSG", "008", None, date(2022, 1, 30))
    [row] = e.rows
    assert tuple(row) == COLUMNS["DSG"]
    assert row["identification"] == "08002781800019d88000250510001320064"
    assert row["date_declaration"] == "2022-01-29T08:40:05.000+01:00"
    assert (row["code_insee"], row["code_postal"], row["localite"]) == ("08435", "08300", "TAGNON")
    assert (row["numero_voie"], row["type_voie"], row["nom_voie"]) == ("1", "RUE", "DU CLOCHER")
    assert (row["date_debut_grossesse"], row["rectif_date_debut"]) == ("2021-12-03+01:00", "false")
    assert (row["nb_enfants_a_naitre"], row["rectif_nb_enfants"]) == ("1", "false")
    assert (row["date_examen"], row["date_naissance"], row["rang"]) == ("2022-01-29+01:00", "1990-03-03", "1")
    assert (row["ps_numero"], row["ps_numero_type"], row["ps_numero_am"]) == (
        "511019861",
        "ADELI",
        "511019861",
    )
    assert row["nir"] == row["telephone"] == row["point_remise"] == ""
    written_as_read(e, data, tmp_path / "out" / "dsg")


def test_hubee_sgr_sample_finds_the_scan_at_the_zip_root(tmp_path: Path) -> None:
    data = sample("SGR.zip")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        pdf = archive.read("IMG00001.pdf")
    e = extract(data)
    assert (e.flow, e.department, e.seq, e.business_date) == ("SGR", "081", None, date(2022, 1, 1))
    key = f"{sha(data)[:12]}-00001"
    assert e.scans == [Scan(key, "IMG00001.pdf", len(pdf))]
    assert e.rows == [
        {
            "record_key": key,
            "seq": "",
            "business_date": "2022-01-01",
            "numorg": "811",
            "matricule": "073819400000000",
            "allocataire": "0738194",
            "departement": "081",
            "date_scan": "2021-12-31",
            "scan_file": f"scans/{key}/scan.pdf",
            "scan_size": str(len(pdf)),
        }
    ]
    assert open_scan(data, e.scans[0]) == pdf
    dest = tmp_path / "out" / "sgr"
    paths = written_as_read(e, data, dest)
    assert paths[2].read_bytes() == pdf
    assert dest / e.rows[0]["scan_file"] == paths[2]


def test_sgr_index_is_decoded_by_its_own_iso_8859_1_declaration() -> None:
    # A Latin-1 byte (é = 0xE9) in the index: read right only if the declaration is honoured.
    index = hubee_index().replace(b"<Racine", "<!-- numérisé -->\n<Racine".encode("latin-1"), 1)
    assert b"\xe9" in index
    assert extract(make_zip([(INDEX_NAME, index), ("IMG00001.pdf", PDF)])).rows[0]["matricule"] == (
        "073819400000000"
    )
    as_utf8 = index.replace(b'encoding="ISO-8859-1"', b'encoding="UTF-8"')
    refused(make_zip([(INDEX_NAME, as_utf8), ("IMG00001.pdf", PDF)]), "ENCODING")


def test_extraction_is_deterministic() -> None:
    data = sample("SGR.zip")
    assert extract(data) == extract(data)


# --- our own files -----------------------------------------------------------------------


class Seqs:
    def __init__(self, base: int = 40):
        self.base = base

    def __call__(self, part: int) -> int:
        return self.base + part


def header(flow: str) -> FlowHeader:
    return FlowHeader(
        flow=flow,
        department="02A",
        numorg="201",
        siret="22200001800013",
        business_date=BUSINESS_DATE,
        created_at=CREATED,
    )


def gro(i: int, **over) -> GroRecord:
    # Accents and characters that CSV and XML both escape: what the département reads back must match.
    return gro_record(i, AJACCIO, **{"prenoms": f"PRÉNOM{i} SECOND",
                                     "nom_voie": 'DE L\'ÉGLISE & DU <MARCHÉ>; côté "mer"', **over})


def dsg(i: int, **over) -> DsgRecord:
    return dsg_record(i, AJACCIO, address={"complement": "APPT 3", "indice_repetition": "B"},
                      **{"prenom": f"PRÉNOM{i}", "telephone": "+33 6 01 02 03 04", "rang": i + 1,
                         "nb_enf_a_naitre": 1 + i, "ps_numero": "10001234567", "ps_numero_type": "RPPS", **over})


def sgr(i: int, directory: Path, **over) -> SgrRecord:
    pdf = directory / f"scan DUPONT {i}.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + bytes([65 + i]) * (300 + i) + b"\n%%EOF\n")
    return sgr_record(i, AJACCIO, pdf, **{"dtcreasdp": date(2026, 11, 20 - i), **over})


def built(flow: str, records: list, tmp_path: Path, max_bytes: int = 10_000_000) -> list[bytes]:
    out = tmp_path / f"built-{flow}"
    out.mkdir()
    parts = build(header(flow), records, out_dir=out, max_bytes=max_bytes, seq_for_part=Seqs())
    return [part.path.read_bytes() for part in parts]


def test_our_gro_comes_out_field_by_field(tmp_path: Path) -> None:
    records = [
        gro(0),
        gro(1, motif="03", numorg_ced="561", matricule_ced="063052900000000"),
        gro(2, motif="02", dtdeclgro=None, typedtnai="O", dtnai="1992-00-00", typeadr="P", etatadr=""),
    ]
    [data] = built("GRO", records, tmp_path)
    e = extract(data)
    assert (e.flow, e.department, e.seq, e.business_date, e.scans) == ("GRO", "02A", 41, BUSINESS_DATE, [])
    assert len(e.rows) == 3
    for i, (r, row) in enumerate(zip(records, e.rows, strict=True), 1):
        assert row == {
            "record_key": f"{sha(data)[:12]}-{i:05d}",
            "seq": "41",
            "business_date": "2026-11-23",
            "numorg": r.numorg,
            "matricule": r.matricule,
            "allocataire": r.matricule[:7],
            "departement": "02A",
            "qual": r.qual,
            "nom_usage": r.nom,
            "nom_famille": r.nomnai,
            "prenoms": r.prenoms,
            "date_naissance": r.dtnai,
            "type_date_naissance": r.typedtnai,
            "commune_naissance": r.nomcomnai,
            "situation_pro": r.situpro,
            "adresse_type": r.typeadr,
            "adresse_date_effet": r.dtemm.isoformat(),
            "adresse_etat": r.etatadr,
            "compl_identite": r.compl_ide_adr,
            "compl_adresse": r.compl_adr,
            "numero_voie": r.num_voie,
            "type_voie": r.lib_type_voie,
            "nom_voie": r.nom_voie,
            "lieu_dit": r.lieu_dist,
            "code_commune": r.num_com,
            "code_postal": r.code_pos,
            "commune": r.nom_com,
            "motif": r.motif,
            "motif_libelle": {
                "01": "declaration",
                "02": "birth-without-declaration",
                "03": "mutation-prenante",
            }[r.motif],
            "nb_enfants_charge": str(r.nbenfchapf),
            "date_declaration": r.dtdeclgro.isoformat() if r.dtdeclgro else "",
            "date_debut_grossesse": r.dtdebgro.isoformat(),
            "mutation_numorg": r.numorg_ced,
            "mutation_matricule": r.matricule_ced,
            "anomalie": "",
        }
    written_as_read(e, data, tmp_path / "out" / "gro")


def test_our_gro_parts_each_carry_their_own_seq(tmp_path: Path) -> None:
    parts = built("GRO", [gro(i) for i in range(5)], tmp_path, max_bytes=4000)
    assert len(parts) > 1
    extracted = [extract(p) for p in parts]
    assert [e.seq for e in extracted] == list(range(41, 41 + len(parts)))
    assert [r["matricule"] for e in extracted for r in e.rows] == [gro(i).matricule for i in range(5)]
    for e in extracted:
        # Each part is its own file: its own digest, its records ranked from 1.
        assert e.rows[0]["record_key"] == f"{e.content_sha256[:12]}-00001"
        assert {r["seq"] for r in e.rows} == {str(e.seq)}


def test_our_dsg_comes_out_field_by_field(tmp_path: Path) -> None:
    records = [dsg(0), dsg(1, nir="", telephone="", ps_numero_am="", ps_nom="", ps_prenom="")]
    [data] = built("DSG", records, tmp_path)
    e = extract(data)
    assert (e.flow, e.department, e.seq, e.business_date, e.scans) == ("DSG", "02A", 41, BUSINESS_DATE, [])
    for i, (r, row) in enumerate(zip(records, e.rows, strict=True), 1):
        a = r.adresse
        assert row == {
            "record_key": f"{sha(data)[:12]}-{i:05d}",
            "seq": "41",
            "business_date": "2026-11-23",
            "identification": r.identification,
            "date_declaration": r.date,
            "nom_famille": r.nom_famille,
            "nom_usage": r.nom_usage,
            "prenom": r.prenom,
            "nir": r.nir,
            "telephone": r.telephone,
            "adresse_destinataire": a.destinataire,
            "point_remise": a.point_remise,
            "complement": a.complement,
            "numero_voie": a.numero_voie,
            "indice_repetition": a.indice_repetition,
            "type_voie": a.type_voie,
            "nom_voie": a.nom_voie,
            "mention_distribution": a.mention_distribution,
            "code_postal": a.code_postal,
            "localite": a.localite,
            "code_pays": a.code_pays,
            "code_insee": a.code_insee,
            "date_naissance": r.date_nai,
            "rang": str(r.rang),
            "date_debut_grossesse": r.date_dpg,
            "rectif_date_debut": "true" if r.rectif_dpg else "false",
            "nb_enfants_a_naitre": str(r.nb_enf_a_naitre),
            "rectif_nb_enfants": "true" if r.rectif_nb_enf_a_naitre else "false",
            "date_examen": r.date_examen,
            "ps_numero": r.ps_numero,
            "ps_numero_type": r.ps_numero_type,
            "ps_numero_am": r.ps_numero_am,
            "ps_nom": r.ps_nom,
            "ps_prenom": r.ps_prenom,
        }
    dest = tmp_path / "out" / "dsg"
    written_as_read(e, data, dest)
    # The phone starts with "+": the CSV shows it as text, the Parquet keeps it as is.
    rows, frame = read_back(dest, "DSG")
    assert rows[0]["telephone"] == "'+33 6 01 02 03 04"
    assert frame["telephone"][0] == "+33 6 01 02 03 04"


def test_our_sgr_comes_out_with_its_scans(tmp_path: Path) -> None:
    scans_dir = tmp_path / "scans-in"
    scans_dir.mkdir()
    records = [sgr(i, scans_dir) for i in range(3)]
    [data] = built("SGR", records, tmp_path)
    e = extract(data)
    assert (e.flow, e.department, e.seq, e.business_date) == ("SGR", "02A", 41, BUSINESS_DATE)
    keys = [f"{sha(data)[:12]}-{i:05d}" for i in range(1, 4)]
    assert e.scans == [
        Scan(k, f"{i:05d}/IMG{i:05d}.pdf", r.pdf_size)
        for i, (k, r) in enumerate(zip(keys, records, strict=True), 1)
    ]
    assert [
        (r["record_key"], r["matricule"], r["date_scan"], r["seq"], r["departement"]) for r in e.rows
    ] == [(k, r.matricule, r.dtcreasdp.isoformat(), "41", "02A") for k, r in zip(keys, records, strict=True)]
    dest = tmp_path / "out" / "sgr"
    paths = written_as_read(e, data, dest)
    for record, row, path in zip(records, e.rows, paths[2:], strict=True):
        assert path == dest / row["scan_file"]
        assert path.read_bytes() == record.pdf.read_bytes()
        assert row["scan_size"] == str(record.pdf_size)
    # No name of the source scans reached the output.
    assert not [p for p in dest.rglob("*") if "DUPONT" in p.name]


def test_empty_days_extract_to_empty_tables(tmp_path: Path) -> None:
    for flow in ("GRO", "DSG", "SGR"):
        [data] = built(flow, [], tmp_path)
        e = extract(data)
        assert (e.flow, e.seq, e.rows, e.scans) == (flow, 41, [], [])
        # Only the DSG envelope names its receiver when it holds no record.
        assert e.department == ("02A" if flow == "DSG" else None)
        dest = tmp_path / "out" / flow
        written_as_read(e, data, dest)
        assert (dest / "records.csv").read_bytes().count(b"\r\n") == 1


def test_a_demo_night_extracts_every_delivered_record(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    make_demo(root)
    report = Night(load(root / "flux-pmi.toml"), clock=FixedClock(NOW), sleep=lambda _s: None).run(
        BUSINESS_DATE
    )
    assert report.exit_code == ExitCode.OK, report.problems
    delivered = open_delivered(root)
    assert delivered
    dsg_ids: list[str] = []
    total = 0
    for name, plain in sorted(delivered.items()):
        folder, file_name = name.split("/")
        flow, department, day, seq = file_name.split(".")[0].split("_")[:4]
        e = extract(plain)
        assert (e.flow, e.seq, e.business_date) == (flow, int(seq), BUSINESS_DATE), name
        assert e.department in (department, None) and department == folder
        assert e.department == department or not e.rows
        assert all(r["seq"] == seq.lstrip("0") and r["business_date"] == "2026-11-23" for r in e.rows)
        if flow in ("GRO", "SGR"):
            assert all(r["departement"] == department for r in e.rows)
        if flow == "DSG":
            dsg_ids += [r["identification"] for r in e.rows]
        total += len(e.rows)
        dest = tmp_path / "received" / folder / file_name
        paths = written_as_read(e, plain, dest)
        if flow == "SGR":
            with zipfile.ZipFile(io.BytesIO(plain)) as archive:
                for scan, path in zip(e.scans, paths[2:], strict=True):
                    assert path.read_bytes() == archive.read(scan.member)
    fingerprints = record_fingerprints(delivered)
    assert total == sum(fingerprints.values())
    assert sorted(dsg_ids) == sorted(key[1] for key in fingerprints if key[0] == "DSG")


# --- hostile XML -------------------------------------------------------------------------

BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE Racine [<!ENTITY a "aaaaaaaaaa">'
    + b"".join(
        b'<!ENTITY %s "%s">' % (chr(98 + i).encode(), (b"&" + chr(97 + i).encode() + b";") * 10)
        for i in range(8)
    )
    + b"]>\n<Racine>&i;</Racine>"
)
HOSTILE_XML = {
    "xxe": b'<?xml version="1.0"?>\n<!DOCTYPE Racine [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    b"<Racine><IdentificationFlux><APPLIEME>CRI</APPLIEME>&x;</IdentificationFlux></Racine>",
    "xxe in a DSG": b'<?xml version="1.0"?>\n<!DOCTYPE Agregat [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    b"<Agregat>&x;</Agregat>",
    "billion laughs": BILLION_LAUGHS,
    "internal entity": b'<?xml version="1.0"?>\n<!DOCTYPE Racine [<!ENTITY s "' + SECRET.encode() + b'">]>\n'
    b"<Racine>&s;</Racine>",
    "external DTD": b'<?xml version="1.0"?>\n<!DOCTYPE Racine SYSTEM "http://127.0.0.1:9/x.dtd">\n<Racine/>',
    "undeclared entity": b"<Racine>&x;</Racine>",
}


@pytest.mark.parametrize("name", list(HOSTILE_XML))
def test_dtd_and_entities_are_refused_never_expanded(name: str) -> None:
    error = refused(HOSTILE_XML[name], "XML_DTD")
    assert SECRET not in str(error) and "root:" not in str(error) and "aaaa" not in str(error)


def test_an_xxe_inside_the_sgr_index_is_refused_too() -> None:
    index = (
        hubee_index()
        .replace(b"<Racine", b'<!DOCTYPE Racine [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n<Racine', 1)
        .replace(b"<NUMORG>811</NUMORG>\n</Ident", b"<NUMORG>&x;</NUMORG>\n</Ident")
    )
    refused(make_zip([(INDEX_NAME, index), ("IMG00001.pdf", PDF)]), "XML_DTD")


def test_malformed_or_invalid_xml_is_a_schema_error_without_values() -> None:
    gro = sample("GRO.xml")
    refused(gro[: len(gro) // 2], "SCHEMA")
    error = refused(gro.replace(b"<IDEPARTE>056<", f"<IDEPARTE>{SECRET}<".encode()), "SCHEMA")
    assert SECRET not in str(error)
    error = refused(gro.replace(b"<NOMCOM>LORIENT<", f"<NOMCOM>{SECRET}<BAD>".encode()), "SCHEMA")
    assert SECRET not in str(error)
    # A count that disagrees with the cases: a truncated or altered file.
    dsg = sample("DSG.xml").replace(b"<ns3:NbDoc>1<", b"<ns3:NbDoc>2<")
    refused(dsg, "SCHEMA")


def test_latin_1_bytes_in_a_utf_8_file_are_an_encoding_error() -> None:
    data = sample("GRO.xml").replace(b"LORIENT", b"LORI\xe9NT" + SECRET.encode())
    error = refused(data, "ENCODING")
    assert SECRET not in str(error) and "0xE9" not in str(error)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        b"%PDF-1.4\n",
        b"<Other/>",
        b'<Racine xmlns="urn:x"><IdentificationFlux><APPLIEME>CRI</APPLIEME></IdentificationFlux></Racine>',
        hubee_index(),  # an SGR index alone, without its zip
    ],
)
def test_anything_else_is_an_unknown_format(data: bytes) -> None:
    refused(data, "UNKNOWN_FORMAT")


# --- hostile zips ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../evil.pdf",
        "00001/../../evil.pdf",
        "/abs/evil.pdf",
        "00001\\evil.pdf",
        "C:/evil.pdf",
        "C:evil.pdf",
        "./evil.pdf",
        "00001//evil.pdf",
    ],
)
def test_member_names_that_could_escape_are_refused(name: str) -> None:
    error = refused(sgr_zip(("IMG00001.pdf", PDF), (name, PDF)), "ZIP_TRAVERSAL")
    assert "evil" not in str(error)


def test_a_traversal_named_by_nomimaged_is_refused_before_it_is_resolved() -> None:
    refused(sgr_zip(("../IMG00001.pdf", PDF)), "ZIP_TRAVERSAL")


def test_a_zip_bomb_is_refused_from_its_directory() -> None:
    # 64 MiB of zeros deflate to ~64 KiB: twice the member cap, ratio ~1000. Written in
    # chunks, so the test never holds the inflated member in memory.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(INDEX_NAME, hubee_index())
        info = zipfile.ZipInfo("IMG00001.pdf", date_time=(2022, 1, 2, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as member:
            member.write(b"%PDF-")
            chunk = bytes(1 << 20)
            for _ in range(64):
                member.write(chunk)
    assert len(buf.getvalue()) < 200_000
    refused(buf.getvalue(), "ZIP_BOMB")


def test_a_member_too_compressed_is_refused_even_under_the_size_cap() -> None:
    refused(sgr_zip(("IMG00001.pdf", b"%PDF-" + bytes(2 << 20))), "ZIP_BOMB")


def test_zip_limits_are_each_enforced() -> None:
    data = sgr_zip(("IMG00001.pdf", PDF))
    extract(data)
    refused(data, "ZIP_BOMB", limits=ZipLimits(max_members=1))
    refused(data, "ZIP_BOMB", limits=ZipLimits(max_member_bytes=len(PDF) - 1))
    refused(data, "ZIP_BOMB", limits=ZipLimits(max_total_bytes=len(PDF) + 100))
    many = sgr_zip(("IMG00001.pdf", PDF), *[(f"x/{i}", b"") for i in range(20)])
    refused(many, "ZIP_BOMB", limits=ZipLimits(max_members=20))


def _lie_about_size(data: bytes, name: str, size: int) -> bytes:
    """Rewrite the uncompressed size that the local header and the central directory declare."""
    out = bytearray(data)
    encoded = name.encode()
    for signature, offset, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        at = out.find(signature)
        while at != -1:
            if out[at + name_at : at + name_at + len(encoded)] == encoded:
                out[at + offset : at + offset + 4] = size.to_bytes(4, "little")
            at = out.find(signature, at + 1)
    return bytes(out)


def test_a_header_that_understates_a_member_never_inflates_past_it() -> None:
    real = b"%PDF-" + bytes(100_000)
    data = _lie_about_size(sgr_zip(("IMG00001.pdf", real)), "IMG00001.pdf", 1000)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.getinfo("IMG00001.pdf").file_size == 1000
    # Reading stops at the declared 1000 bytes, whose checksum then fails.
    refused(data, "ZIP_INVALID")


def test_a_scan_that_is_not_a_pdf_is_refused() -> None:
    error = refused(sgr_zip(("IMG00001.pdf", f"just text, {SECRET}".encode())), "PDF_NOT_PDF")
    assert SECRET not in str(error)
    refused(sgr_zip(("IMG00001.pdf", b"")), "PDF_NOT_PDF")
    refused(sgr_zip(("IMG00001.pdf", b"%PD")), "PDF_NOT_PDF")


def test_a_nomimaged_without_its_member_is_refused() -> None:
    refused(sgr_zip(("IMG00001.pdf", PDF), nomimaged="/00002/IMG00002.pdf"), "SCAN_MISSING")
    refused(sgr_zip(), "SCAN_MISSING")
    # Two members with the base name and neither at the exact path: ambiguous.
    refused(sgr_zip(("a/IMG00001.pdf", PDF), ("b/IMG00001.pdf", PDF)), "SCAN_MISSING")


def test_the_exact_path_wins_over_a_base_name_match() -> None:
    other = PDF.replace(b"A", b"B")
    data = sgr_zip(("IMG00001.pdf", other), ("00001/IMG00001.pdf", PDF))
    e = extract(data)
    assert e.scans[0].member == "00001/IMG00001.pdf"
    assert open_scan(data, e.scans[0]) == PDF


def test_the_index_must_be_there_once_and_the_zip_readable() -> None:
    index = hubee_index()
    refused(make_zip([("IMG00001.pdf", PDF)]), "ZIP_INVALID")
    refused(make_zip([(INDEX_NAME, index), ("x/CG_082_2022-01-02_pmiich.xml", index), ("IMG00001.pdf", PDF)]),
            "ZIP_INVALID")  # fmt: skip
    refused(b"PK\x03\x04" + b"\x00" * 100, "ZIP_INVALID")
    with pytest.warns(UserWarning, match="Duplicate name"):
        twice = make_zip([(INDEX_NAME, index), ("IMG00001.pdf", PDF), ("IMG00001.pdf", PDF)])
    refused(twice, "ZIP_INVALID")


def test_an_invalid_index_is_a_schema_error() -> None:
    refused(sgr_zip(("IMG00001.pdf", PDF), nomimaged="/etc/passwd"), "SCHEMA")


def test_open_scan_rechecks_what_it_reads() -> None:
    data = sgr_zip(("IMG00001.pdf", PDF), ("notes.txt", b"plain text"))
    e = extract(data)
    with pytest.raises(ExtractError) as raised:
        open_scan(data, Scan(e.scans[0].record_key, "gone.pdf", 10))
    assert raised.value.code == "SCAN_MISSING"
    with pytest.raises(ExtractError) as raised:
        open_scan(data, Scan(e.scans[0].record_key, "notes.txt", len(b"plain text")))
    assert raised.value.code == "PDF_NOT_PDF"
    with pytest.raises(ExtractError) as raised:
        open_scan(data, e.scans[0], limits=ZipLimits(max_member_bytes=10))
    assert raised.value.code == "ZIP_BOMB"


# --- writing the outputs -----------------------------------------------------------------


def test_an_existing_output_folder_is_refused_and_left_alone(tmp_path: Path) -> None:
    data = sample("GRO.xml")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        write_outputs(extract(data), data, dest)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    assert not (tmp_path / ".staging-out").exists()


def test_a_failure_mid_write_leaves_no_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = sample("SGR.zip")
    e = extract(data)
    dest = tmp_path / "out" / "sgr"
    staging = dest.parent / f".staging-{dest.name}"
    seen: list[str] = []

    def failing(archive, scan, cap):
        seen.extend(sorted(p.name for p in staging.iterdir()))
        raise OSError("no space left on device")

    monkeypatch.setattr(output, "scan_chunks", failing)
    with pytest.raises(OSError, match="no space"):
        write_outputs(e, data, dest)
    assert {"records.csv", "records.parquet"} <= set(seen)  # the tables were written first
    assert not dest.exists() and not staging.exists()
    monkeypatch.undo()
    written_as_read(e, data, dest)


def test_a_scan_missing_at_write_time_leaves_no_output_folder(tmp_path: Path) -> None:
    data = sample("SGR.zip")
    e = extract(data)
    broken = dataclasses.replace(e, scans=[dataclasses.replace(e.scans[0], member="00001/IMG00001.pdf")])
    dest = tmp_path / "out"
    with pytest.raises(ExtractError) as raised:
        write_outputs(broken, data, dest)
    assert raised.value.code == "SCAN_MISSING"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_leftover_staging_folder_is_replaced(tmp_path: Path) -> None:
    data = sample("DSG.xml")
    staging = tmp_path / ".staging-out"
    (staging / "scans").mkdir(parents=True)
    (staging / "scans" / "stale.pdf").write_bytes(b"old")
    written_as_read(extract(data), data, tmp_path / "out")
    assert not staging.exists()
    assert not (tmp_path / "out" / "scans").exists()


def test_outputs_refuse_a_mismatched_plaintext_or_format(tmp_path: Path) -> None:
    data = sample("GRO.xml")
    e = extract(data)
    with pytest.raises(ValueError):
        write_outputs(e, sample("DSG.xml"), tmp_path / "a")
    with pytest.raises(ValueError):
        write_outputs(e, data, tmp_path / "b", formats=("csv", "xlsx"))
    with pytest.raises(ValueError):
        write_outputs(
            dataclasses.replace(e, rows=[{**e.rows[0], "record_key": "../x"}]), data, tmp_path / "c"
        )
    assert sorted(tmp_path.iterdir()) == []
    paths = write_outputs(e, data, tmp_path / "d", formats=("csv",))
    assert [p.name for p in paths] == ["records.csv"] and sorted(
        p.name for p in (tmp_path / "d").iterdir()
    ) == ["records.csv"]


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(tmp_path: Path) -> None:
    data = sample("GRO.xml")
    e = extract(data)
    hostile = {
        "nom_usage": '=HYPERLINK("http://x")',
        "nom_famille": "+SUM(A1)",
        "prenoms": "-2+3",
        "commune_naissance": "@cmd",
        "compl_adresse": "\tTAB",
        "lieu_dit": "\rCR",
        "nom_voie": 'RUE A=B; "C"',
        "commune": "L'ORIENT",
    }
    row = {**e.rows[0], **hostile}
    dest = tmp_path / "out"
    write_outputs(dataclasses.replace(e, rows=[row]), data, dest)
    rows, frame = read_back(dest, "GRO")
    assert {k: rows[0][k] for k in hostile} == {
        "nom_usage": '\'=HYPERLINK("http://x")',
        "nom_famille": "'+SUM(A1)",
        "prenoms": "'-2+3",
        "commune_naissance": "'@cmd",
        "compl_adresse": "'\tTAB",
        "lieu_dit": "'\rCR",
        "nom_voie": 'RUE A=B; "C"',
        "commune": "L'ORIENT",
    }
    assert {k: frame[k][0] for k in hostile} == hostile


def test_output_files_and_folders_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    data = sample("SGR.zip")
    old = os.umask(0)
    try:
        dest = tmp_path / "new" / "parent" / "out"
        write_outputs(extract(data), data, dest)
    finally:
        os.umask(old)
    assert set(modes(dest).values()) == {0o700, 0o600}
    for name, mode in modes(dest).items():
        assert mode == (0o700 if (dest / name).is_dir() else 0o600), name
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
