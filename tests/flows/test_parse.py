"""Parsing the three flows from real files: records, rejects, quarantine, and no leaks.

Every input is built here (DSG with lxml, GRO/SGR as ISO-8859-1 CSV) around one
invented person whose values are then hunted for in every message we produce.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from datetime import date
from pathlib import Path

import pytest
from lxml import etree

from flux_pmi.core.errors import InputFileError
from flux_pmi.flows import check, codes
from flux_pmi.flows import parse_dsg as parse_dsg_module
from flux_pmi.flows.parse import Limits, ParseResult, parse_file
from flux_pmi.flows.parse_gro import COLUMNS as GRO_COLUMNS
from flux_pmi.flows.parse_sgr import COLUMNS as SGR_COLUMNS
from flux_pmi.flows.records import DsgAddress, DsgRecord, GroRecord, SgrRecord, Source

TODAY = date(2026, 11, 25)


def make_nir(sex: str = "2", yy: str = "90", mm: str = "03", dept: str = "35", rest: str = "238042") -> str:
    """A NIR with a correct key: 97 - (first 13 digits mod 97), 2A -> 19 and 2B -> 18."""
    body = f"{sex}{yy}{mm}{dept}{rest}"
    numeric = body[:5] + {"2A": "19", "2B": "18"}.get(dept, dept) + body[7:]
    return body + f"{97 - int(numeric) % 97:02d}"


# The invented person. None of these strings may ever appear in a message.
NOM = "Zelphinard"
NOM_USAGE = "Quimperlot"
PRENOM = "Ysoline"
NIR = make_nir()
PHONE = "0611223344"
STREET = "DES GLYCINES MAUVES"
BIRTH = "1990-03-07"
PS_NOM = "Vorbeliane"
PERSONAL = [
    NOM,
    NOM_USAGE,
    PRENOM,
    NIR,
    NIR[:7],
    NIR[-8:],
    PHONE,
    STREET,
    "GLYCINES",
    BIRTH,
    "1990-03",
    PS_NOM,
]


def assert_no_personal_data(text: str) -> None:
    for value in PERSONAL:
        assert value not in text, f"personal value leaked into: {text!r}"


# --- DSG builder ------------------------------------------------------------------------

D, B, P = "urn:cnamts:dsgcnaf", "urn:siram:beneficiaire", "urn:siram:partenairesante"
NSMAP = {"dsgcnaf": D, "beneficiaire": B, "partenairesante": P}
ADDRESS = {
    "Destinataire": "",
    "PointRemise": "",
    "Complement": "",
    "NumeroVoie": "17",
    "IndiceRepetition": "",
    "TypeVoie": "RUE",
    "NomVoie": STREET,
    "MentionDistribution": "",
    "CodePostal": "35000",
    "Localite": "RENNES",
    "CodePays": "F",
    "CodeInsee": "35238",
}
DSG = {
    "Identification": "08002781800019d88000250510001320064",
    "Date": "2026-11-20T08:40:05.000+01:00",
    "NomFamille": NOM,
    "NomUsage": NOM_USAGE,
    "Prenom": PRENOM,
    "NIR": NIR,
    **ADDRESS,
    "Telephone": PHONE,
    "DateNai": BIRTH,
    "Rang": "1",
    "DateDPG": "2026-09-03+02:00",
    "RectifDPG": "false",
    "NbEnfANaitre": "1",
    "RectifNbEnfANaitre": "false",
    "DateExamen": "2026-11-19+01:00",
    "Numero": "511019861",
    "Numero/@R": "ADELI",
    "AM": "511019861",
    "PsNom": PS_NOM,
    "PsPrenom": "Castorine",
}
DROP = object()  # an override that removes the element


def dsg_xml(**overrides) -> bytes:
    """A DSGCNAF document as the input contract shows it; an override of DROP removes the element."""
    v = {**DSG, **overrides}

    def leaf(parent, ns, name, key=None):
        value = v[key or name]
        if value is DROP:
            return None
        el = etree.SubElement(parent, f"{{{ns}}}{name}")
        el.text = value
        return el

    root = etree.Element(f"{{{D}}}DSGCNAF", nsmap=NSMAP, Nature="DSGCNAF", Version="00.03")
    leaf(root, D, "Identification")
    leaf(root, D, "Date")
    benef = etree.SubElement(root, f"{{{D}}}BENEFICIAIRE")
    for name in ("NomFamille", "NomUsage", "Prenom", "NIR"):
        leaf(benef, B, name)
    address = etree.SubElement(benef, f"{{{B}}}Adresse")
    for name in ADDRESS:
        leaf(address, B, name)
    for name in ("Telephone", "DateNai", "Rang"):
        leaf(benef, B, name)
    mat = etree.SubElement(benef, f"{{{B}}}MAT")
    leaf(mat, B, "DateDPG")
    leaf(mat, D, "RectifDPG")
    leaf(mat, B, "NbEnfANaitre")
    leaf(mat, D, "RectifNbEnfANaitre")
    leaf(mat, B, "DateExamen")
    partner = etree.SubElement(root, f"{{{D}}}PARTENAIRE")
    numero = leaf(partner, P, "Numero")
    if numero is not None and v["Numero/@R"] is not DROP:
        numero.set("R", v["Numero/@R"])
    provider = etree.SubElement(partner, f"{{{P}}}PRESTATAIRE")
    am = leaf(provider, P, "Numero", "AM")
    if am is not None:
        am.set("R", "AM")
    leaf(provider, P, "NomFamille", "PsNom")
    leaf(provider, P, "Prenom", "PsPrenom")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def line_of(xml: bytes, needle: str) -> int:
    """The first line of `xml` that contains `needle`."""
    return next(n for n, text in enumerate(xml.decode("utf-8").splitlines(), start=1) if needle in text)


def parse(
    flow: str, path: Path, *, inbox_root: Path | None = None, limits: Limits | None = None
) -> ParseResult:
    return parse_file(
        flow,
        path,
        display_name=path.name,
        today=TODAY,
        inbox_root=inbox_root or path.parent,
        limits=limits or Limits(),
    )


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def dsg_result(tmp_path: Path, xml: bytes) -> ParseResult:
    return parse("DSG", write(tmp_path, "dsg-0001.xml", xml))


def dsg_reject(tmp_path: Path, **overrides):
    result = dsg_result(tmp_path, dsg_xml(**overrides))
    assert result.records == [] and len(result.rejects) == 1, result
    return result.rejects[0]


def file_error(flow: str, path: Path, **kwargs) -> InputFileError:
    with pytest.raises(InputFileError) as caught:
        parse(flow, path, **kwargs)
    return caught.value


# --- DSG --------------------------------------------------------------------------------


def test_dsg_valid_record_has_every_field(tmp_path: Path):
    result = dsg_result(tmp_path, dsg_xml())
    assert result.rejects == []
    assert result.records == [
        DsgRecord(
            source=Source("dsg-0001.xml", 1),
            received=date(2026, 11, 20),
            identification="08002781800019d88000250510001320064",
            date="2026-11-20T08:40:05.000+01:00",
            nom_famille=NOM,
            nom_usage=NOM_USAGE,
            prenom=PRENOM,
            nir=NIR,
            adresse=DsgAddress(
                destinataire="",
                point_remise="",
                complement="",
                numero_voie="17",
                indice_repetition="",
                type_voie="RUE",
                nom_voie=STREET,
                mention_distribution="",
                code_postal="35000",
                localite="RENNES",
                code_pays="F",
                code_insee="35238",
            ),
            telephone=PHONE,
            date_nai=BIRTH,
            rang=1,
            date_dpg="2026-09-03+02:00",
            rectif_dpg=False,
            nb_enf_a_naitre=1,
            rectif_nb_enf_a_naitre=False,
            date_examen="2026-11-19+01:00",
            ps_numero="511019861",
            ps_numero_type="ADELI",
            ps_numero_am="511019861",
            ps_nom=PS_NOM,
            ps_prenom="Castorine",
        )
    ]


def test_dsg_variants_accepted(tmp_path: Path):
    record = dsg_result(
        tmp_path,
        dsg_xml(
            Date="2026-11-19T23:30:00Z",  # already the 20th in Paris
            RectifDPG=DROP,  # absent: not rectified
            RectifNbEnfANaitre="true",
            NbEnfANaitre="2",
            Rang="2",
            Telephone=DROP,
            NomUsage=DROP,
            CodePostal="",
            **{"Numero": "10001234567", "Numero/@R": "RPPS"},
        ),
    ).records[0]
    assert record.received == date(2026, 11, 20)
    assert (record.rectif_dpg, record.rectif_nb_enf_a_naitre, record.nb_enf_a_naitre, record.rang) == (
        False,
        True,
        2,
        2,
    )
    assert (record.telephone, record.nom_usage, record.ps_numero_type) == ("", "", "RPPS")


def test_dsg_values_are_stripped_and_case_kept(tmp_path: Path):
    record = dsg_result(tmp_path, dsg_xml(NomFamille="  de La Tour  ", Prenom="\n  Anne-Lise\n")).records[0]
    assert (record.nom_famille, record.prenom) == ("de La Tour", "Anne-Lise")


@pytest.mark.parametrize(
    "nir, commune",
    [
        (make_nir(dept="2A", rest="004123"), "2A004"),
        (make_nir(dept="2B", rest="033123"), "2B033"),
        (make_nir(dept="97", rest="411123"), "97411"),
        (make_nir(dept="97", rest="611123"), "97611"),
    ],
)
def test_dsg_corsica_and_overseas(tmp_path: Path, nir: str, commune: str):
    record = dsg_result(tmp_path, dsg_xml(NIR=nir, CodeInsee=commune, CodePostal="20000")).records[0]
    assert (
        record.nir == nir
        and codes.department_of_commune(record.commune_code)
        == {
            "2A004": "02A",
            "2B033": "02B",
            "97411": "974",
            "97611": "976",
        }[commune]
    )


def test_dsg_routes_by_commune_not_postcode(tmp_path: Path):
    # A postal code of the Hautes-Alpes on a commune of the Alpes-de-Haute-Provence: not refused.
    record = dsg_result(tmp_path, dsg_xml(CodeInsee="04033", CodePostal="05110")).records[0]
    assert codes.department_of_commune(record.commune_code) == "004"


def test_dsg_missing_element_points_at_its_parent(tmp_path: Path):
    xml = dsg_xml(Prenom=DROP)
    rejected = dsg_result(tmp_path, xml).rejects[0]
    assert (rejected.code, rejected.source.line) == ("FIELD_MISSING", line_of(xml, "BENEFICIAIRE>"))
    assert rejected.flow == "DSG" and rejected.source.file == "dsg-0001.xml"


def test_dsg_empty_element_points_at_itself(tmp_path: Path):
    xml = dsg_xml(DateExamen="")
    rejected = dsg_result(tmp_path, xml).rejects[0]
    assert (rejected.code, rejected.source.line) == ("FIELD_MISSING", line_of(xml, "DateExamen"))


def test_dsg_bad_value_points_at_its_element(tmp_path: Path):
    xml = dsg_xml(NbEnfANaitre="0")
    rejected = dsg_result(tmp_path, xml).rejects[0]
    assert (rejected.code, rejected.source.line) == ("VALUE_RANGE", line_of(xml, "NbEnfANaitre>"))


def test_dsg_repeated_and_nested_elements(tmp_path: Path):
    xml = dsg_xml().replace(
        b"<beneficiaire:Rang>1", b"<beneficiaire:Rang>1</beneficiaire:Rang><beneficiaire:Rang>2"
    )
    assert dsg_result(tmp_path, xml).rejects[0].code == "FIELD_REPEATED"
    rejected = dsg_result(tmp_path, xml).rejects[0]
    assert rejected.source.line == line_of(xml, "<beneficiaire:Rang>")
    assert_no_personal_data(rejected.message)
    xml = dsg_xml().replace(b"<beneficiaire:Rang>1<", b"<beneficiaire:Rang>1<beneficiaire:x/><")
    assert dsg_result(tmp_path, xml).rejects[0].code == "TEXT_INVALID"
    xml = dsg_xml().replace(
        NOM.encode(), NOM.encode() + b"</beneficiaire:NomFamille><beneficiaire:NomFamille>x", 1
    )
    rejected = dsg_result(tmp_path, xml).rejects[0]
    assert rejected.code == "FIELD_REPEATED"
    assert_no_personal_data(rejected.message)


def test_dsg_unknown_elements_are_ignored(tmp_path: Path):
    xml = dsg_xml().replace(b"<dsgcnaf:PARTENAIRE>", b"<dsgcnaf:Autre>x</dsgcnaf:Autre><dsgcnaf:PARTENAIRE>")
    assert len(dsg_result(tmp_path, xml).records) == 1


XXE = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE dsgcnaf:DSGCNAF [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<dsgcnaf:DSGCNAF xmlns:dsgcnaf="urn:cnamts:dsgcnaf"><dsgcnaf:Identification>&xxe;</dsgcnaf:Identification>
</dsgcnaf:DSGCNAF>
"""
LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<dsgcnaf:DSGCNAF xmlns:dsgcnaf="urn:cnamts:dsgcnaf">&lol9;</dsgcnaf:DSGCNAF>
"""


@pytest.mark.parametrize(
    "xml, line",
    [
        (XXE, 2),
        (LAUGHS, 2),
        (b'<!DOCTYPE x SYSTEM "http://example.invalid/x.dtd"><x/>', 1),
        (dsg_xml().replace(b"RENNES", b"&ext;"), None),  # a reference with no declaration at all
        (b"<x>\n<!ENTITY a 'b'>\n</x>", 2),
    ],
)
def test_dsg_dtd_and_entities_refused_before_parsing(tmp_path: Path, monkeypatch, xml: bytes, line):
    def no_parsing(*args, **kwargs):
        raise AssertionError("the parser must not see a DTD or an entity")

    monkeypatch.setattr(parse_dsg_module.etree, "fromstring", no_parsing)
    err = file_error("DSG", write(tmp_path, "d.xml", xml))
    assert err.code == "XML_DTD"
    if line:
        assert err.line == line


def test_dsg_malformed_names_the_line(tmp_path: Path):
    xml = dsg_xml().replace(b"</beneficiaire:Localite>", b"</beneficiaire:Ville>")
    err = file_error("DSG", write(tmp_path, "d.xml", xml))
    assert (err.code, err.line) == ("XML_MALFORMED", line_of(xml, "Localite"))
    assert_no_personal_data(str(err))


def test_dsg_root_must_be_dsgcnaf_or_a_dge_envelope(tmp_path: Path):
    # An Agregat without the DGE envelope's Entete is not an envelope we trust.
    body = dsg_xml().split(b"?>", 1)[1]
    wrapped = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Agregat><Document><Donnee>'
        + body
        + b"</Donnee></Document></Agregat>"
    )
    assert file_error("DSG", write(tmp_path, "d.xml", wrapped)).code == "XML_SHAPE"
    assert file_error("DSG", write(tmp_path, "f.xml", b"<Racine/>")).code == "XML_ROOT"
    other_ns = dsg_xml().replace(b'xmlns:dsgcnaf="urn:cnamts:dsgcnaf"', b'xmlns:dsgcnaf="urn:other"')
    assert file_error("DSG", write(tmp_path, "e.xml", other_ns)).code == "XML_ROOT"


@pytest.mark.parametrize(
    "data",
    [
        dsg_xml().replace(b"encoding='UTF-8'", b"encoding='ISO-8859-1'"),
        b"\xff\xfe" + dsg_xml().decode().replace("encoding='UTF-8'", "encoding='UTF-16'").encode("utf-16-le"),
        dsg_xml().replace(b"RENNES", b"R\xc9NNES"),  # a Latin-1 byte in a UTF-8 document
        dsg_xml().replace(b"RENNES", b"RE\x00NNES"),
    ],
)
def test_dsg_encoding(tmp_path: Path, data: bytes):
    err = file_error("DSG", write(tmp_path, "d.xml", data))
    assert err.code == "XML_ENCODING"


def test_dsg_utf8_bom_and_no_declaration_accepted(tmp_path: Path):
    assert dsg_result(tmp_path, b"\xef\xbb\xbf" + dsg_xml()).records
    assert dsg_result(tmp_path, dsg_xml().split(b"?>", 1)[1]).records


def test_empty_and_too_large_files(tmp_path: Path):
    for flow in ("DSG", "GRO", "SGR"):
        assert file_error(flow, write(tmp_path, f"{flow}.empty", b"")).code == "EMPTY"
    big = write(tmp_path, "big.xml", dsg_xml())
    assert file_error("DSG", big, limits=Limits(max_input_bytes=100)).code == "TOO_LARGE"
    assert file_error(
        "GRO", write(tmp_path, "big.csv", gro_csv()), limits=Limits(max_input_bytes=100)
    ).code == ("TOO_LARGE")


def test_unknown_flow(tmp_path: Path):
    with pytest.raises(ValueError):
        parse("XYZ", write(tmp_path, "x", b"x"))


# --- GRO builder ------------------------------------------------------------------------

GRO = {
    "DTRECEP": "2026-11-20",
    "NUMORG": "351",
    "MATRICULE": "123456700000000",
    "QUAL": "MME",
    "NOM": NOM_USAGE,
    "NOMNAI": NOM,
    "PRENOMS": PRENOM + " Éléonore",
    "DTNAI": BIRTH,
    "TYPEDTNAI": "N",
    "NOMCOMNAI": "Saint-Brieuc",
    "SITUPRO": "ACT",
    "DTEMM": "2024-01-01",
    "TYPEADR": "D",
    "ETATADR": "VC",
    "COMPLIDEADR": "",
    "COMPLADR": "Bât. B",
    "NUMVOIE": "17",
    "LIBTYPEVOIE": "RUE",
    "NOMVOIE": STREET,
    "LIEUDIST": "",
    "NUMCOM": "35238",
    "CODEPOS": "35000",
    "NOMCOM": "RENNES",
    "DTDECLGRO": "2026-11-18",
    "DTDEBGRO": "2026-09-03",
    "NBENFCHAPF": "1",
    "MOTITRANSMDOSPMI": "01",
    "NUMORGCED": "",
    "MATRICULECED": "",
}
# What a real Cristal extract also carries, and what must never be read.
GRO_EXTRAS = {"NIR": NIR, "NUMTEL": PHONE, "MAIL": "ysoline.zelphinard@example.invalid"}


def csv_bytes(header: list[str], rows: list[list[str]], *, encoding: str = "iso-8859-1") -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=";", quotechar='"', lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode(encoding)


def gro_csv(*rows: dict, extras: bool = True, **kwargs) -> bytes:
    header = list(GRO_EXTRAS) + list(reversed(GRO_COLUMNS)) if extras else list(GRO_COLUMNS)
    full = [{**GRO, **GRO_EXTRAS, **row} for row in (rows or ({},))]
    return csv_bytes(header, [[r[name] for name in header] for r in full], **kwargs)


def gro_result(tmp_path: Path, *rows: dict) -> ParseResult:
    return parse("GRO", write(tmp_path, "gro-20261120.csv", gro_csv(*rows)))


def gro_reject(tmp_path: Path, **overrides):
    result = gro_result(tmp_path, overrides)
    assert result.records == [] and len(result.rejects) == 1, result
    return result.rejects[0]


# --- GRO --------------------------------------------------------------------------------


def test_gro_valid_record_has_every_field(tmp_path: Path):
    result = gro_result(tmp_path, {})
    assert result.rejects == []
    assert result.records == [
        GroRecord(
            source=Source("gro-20261120.csv", 2),
            received=date(2026, 11, 20),
            numorg="351",
            matricule="123456700000000",
            qual="MME",
            nom=NOM_USAGE,
            nomnai=NOM,
            prenoms=PRENOM + " Éléonore",
            dtnai=BIRTH,
            typedtnai="N",
            nomcomnai="Saint-Brieuc",
            situpro="ACT",
            dtemm=date(2024, 1, 1),
            typeadr="D",
            etatadr="VC",
            compl_ide_adr="",
            compl_adr="Bât. B",
            num_voie="17",
            lib_type_voie="RUE",
            nom_voie=STREET,
            lieu_dist="",
            num_com="35238",
            code_pos="35000",
            nom_com="RENNES",
            dtdeclgro=date(2026, 11, 18),
            dtdebgro=date(2026, 9, 3),
            nbenfchapf=1,
            motif="01",
            numorg_ced="",
            matricule_ced="",
        )
    ]


def test_gro_extra_columns_never_reach_the_record(tmp_path: Path):
    record = gro_result(tmp_path, {}).records[0]
    names = {f.name.lower() for f in dataclasses.fields(GroRecord)}
    assert not names & {"nir", "numtel", "mail", "telephone", "phone", "email"}
    text = repr(record) + repr(dataclasses.asdict(record))
    for value in GRO_EXTRAS.values():
        assert value not in text


def test_gro_partial_birth_dates_mutation_and_birth_without_declaration(tmp_path: Path):
    result = gro_result(
        tmp_path,
        {"DTNAI": "1990-03-00", "TYPEDTNAI": "J"},
        {"DTNAI": "1990-00-00", "TYPEDTNAI": "O"},
        {"MOTITRANSMDOSPMI": "03", "NUMORGCED": "561", "MATRICULECED": "765432100000000"},
        {"MOTITRANSMDOSPMI": "02", "DTDECLGRO": "", "DTDEBGRO": ""},
        {"MOTITRANSMDOSPMI": "02", "DTDECLGRO": "2026-11-18", "DTDEBGRO": "2025-12-01"},  # span not checked
        {"NUMCOM": "2A004", "CODEPOS": "20000", "NUMORG": "201"},
        {"NUMCOM": "97411", "CODEPOS": "97400", "NUMORG": "974"},
        {"NOM": "", "CODEPOS": "", "ETATADR": "", "NOMCOMNAI": ""},
    )
    assert result.rejects == []
    assert [r.source.line for r in result.records] == list(range(2, 10))
    assert result.records[3].dtdeclgro is None and result.records[3].dtdebgro is None
    assert result.records[2].matricule_ced == "765432100000000"


def test_gro_routes_by_commune_not_postcode(tmp_path: Path):
    record = gro_result(tmp_path, {"NUMCOM": "04033", "CODEPOS": "05110"}).records[0]
    assert codes.department_of_commune(record.commune_code) == "004"


def test_gro_quoted_separator_and_newline_keep_line_numbers(tmp_path: Path):
    data = gro_csv(
        {"NOMVOIE": "DES LILAS; ET DES ROSES"}, {"COMPLADR": "Bât. B\r\nEscalier 2"}, {"QUAL": "XX"}, {}
    )
    result = parse("GRO", write(tmp_path, "g.csv", data))
    assert result.records[0].nom_voie == "DES LILAS; ET DES ROSES"
    # The second record's address line contains a newline: it is refused (control character).
    assert [(r.source.line, r.code) for r in result.rejects] == [(3, "TEXT_INVALID"), (5, "CODE_UNKNOWN")]
    assert [r.source.line for r in result.records] == [2, 6]


def test_gro_blank_lines_are_skipped_but_counted(tmp_path: Path):
    data = gro_csv({}, {}).replace(b"\r\n", b"\r\n\r\n", 1)
    assert [r.source.line for r in parse("GRO", write(tmp_path, "g.csv", data)).records] == [3, 4]


@pytest.mark.parametrize("cut", ["truncate", "extra"])
def test_gro_row_shape_quarantines_the_file(tmp_path: Path, cut: str):
    lines = gro_csv({}, {}, {}).split(b"\r\n")
    lines[2] = lines[2].rsplit(b";", 1)[0] if cut == "truncate" else lines[2] + b";x"
    err = file_error("GRO", write(tmp_path, "g.csv", b"\r\n".join(lines)))
    assert (err.code, err.line) == ("CSV_SHAPE", 3)
    assert_no_personal_data(str(err))


def test_gro_broken_quoting(tmp_path: Path):
    data = gro_csv({}) + b'2026-11-20;"unterminated\r\n'
    err = file_error("GRO", write(tmp_path, "g.csv", data))
    assert (err.code, err.line) == ("CSV_SHAPE", 3)


def test_gro_header(tmp_path: Path):
    header = list(GRO_COLUMNS)
    missing = csv_bytes([h for h in header if h != "NUMCOM"], [])
    err = file_error("GRO", write(tmp_path, "a.csv", missing))
    assert (err.code, err.line) == ("CSV_HEADER", 1) and "NUMCOM" in err.reason
    duplicate = csv_bytes(header + ["NOM"], [])
    assert file_error("GRO", write(tmp_path, "b.csv", duplicate)).code == "CSV_HEADER"
    empty_name = csv_bytes(header + [""], [])
    assert file_error("GRO", write(tmp_path, "c.csv", empty_name)).code == "CSV_HEADER"
    assert file_error("GRO", write(tmp_path, "d.csv", b"\r\n\r\n")).code == "CSV_HEADER"
    # A header-less file: its first row is personal data, which the message must not echo.
    headless = gro_csv({}, {}).split(b"\r\n", 1)[1]
    err = file_error("GRO", write(tmp_path, "e.csv", headless.replace(b"2026-11-18", b"2026-11-20")))
    assert err.code == "CSV_HEADER"
    assert_no_personal_data(str(err))


def test_gro_header_only_gives_nothing(tmp_path: Path):
    result = parse("GRO", write(tmp_path, "g.csv", csv_bytes(list(GRO_COLUMNS), [])))
    assert result == ParseResult([], [])


@pytest.mark.parametrize(
    "data, line",
    [
        (b"\xef\xbb\xbf" + gro_csv({}), 1),
        (gro_csv({}, encoding="utf-8"), None),  # "Éléonore", "Bât." in UTF-8
        (gro_csv({}, encoding="utf-16"), 1),
        (gro_csv({}, {}).replace(b"RENNES", b"REN\x00NES"), 2),
    ],
)
def test_gro_encoding(tmp_path: Path, data: bytes, line):
    err = file_error("GRO", write(tmp_path, "g.csv", data))
    assert (err.code, err.line) == ("ENCODING", line)


def test_gro_latin1_accents_and_ascii_accepted(tmp_path: Path):
    assert gro_result(tmp_path, {}).records[0].prenoms.endswith("Éléonore")
    ascii_only = gro_csv({"PRENOMS": "Ysoline", "COMPLADR": ""})
    assert parse("GRO", write(tmp_path, "a.csv", ascii_only)).records


def test_gro_cp1252_character_is_a_control_in_latin1(tmp_path: Path):
    data = gro_csv({"NOMNAI": "Lœuf"}, encoding="cp1252")
    assert parse("GRO", write(tmp_path, "g.csv", data)).rejects[0].code == "TEXT_INVALID"


def test_gro_too_many_records(tmp_path: Path):
    path = write(tmp_path, "g.csv", gro_csv({}, {}, {}))
    assert parse("GRO", path, limits=Limits(max_records_per_file=3)).records
    err = file_error("GRO", path, limits=Limits(max_records_per_file=2))
    assert (err.code, err.line) == ("TOO_LARGE", 4)


# --- SGR --------------------------------------------------------------------------------

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
SGR = {
    "DTRECEP": "2026-11-20",
    "NUMORG": "351",
    "MATRICULE": "123456700000000",
    "NUMCOM": "35238",
    "DTCREASDP": "2026-11-21",
    "FICHIER": "00001/IMG00001.pdf",
}


def sgr_batch(tmp_path: Path, *rows: dict) -> tuple[Path, Path]:
    root = tmp_path / "batch"
    write(root, "00001/IMG00001.pdf", PDF)
    full = [{**SGR, **row} for row in (rows or ({},))]
    index = write(
        root,
        "CG_035_2026-11-21.csv",
        csv_bytes(list(SGR_COLUMNS), [[r[c] for c in SGR_COLUMNS] for r in full]),
    )
    return root, index


def sgr_result(tmp_path: Path, *rows: dict, limits: Limits | None = None) -> ParseResult:
    root, index = sgr_batch(tmp_path, *rows)
    return parse("SGR", index, inbox_root=root, limits=limits)


def test_sgr_valid_record_has_every_field(tmp_path: Path):
    result = sgr_result(tmp_path, {})
    assert result.rejects == []
    assert result.records == [
        SgrRecord(
            source=Source("CG_035_2026-11-21.csv", 2),
            received=date(2026, 11, 20),
            numorg="351",
            matricule="123456700000000",
            num_com="35238",
            dtcreasdp=date(2026, 11, 21),
            pdf=(tmp_path / "batch" / "00001" / "IMG00001.pdf").resolve(),
            pdf_size=len(PDF),
        )
    ]


def test_sgr_record_checks(tmp_path: Path):
    (tmp_path / "outside.pdf").write_bytes(PDF)
    result = sgr_result(
        tmp_path,
        {"FICHIER": "../outside.pdf"},
        {"FICHIER": str((tmp_path / "outside.pdf").resolve())},
        {"FICHIER": "00001/IMG00009.pdf"},
        {"DTCREASDP": "2026-11-19"},
        {"DTCREASDP": "2026-11-26"},
        {"NUMCOM": "20004"},
        {"FICHIER": ""},
        {},
        limits=Limits(max_pdf_bytes=1 << 20),
    )
    assert [(r.source.line, r.code) for r in result.rejects] == [
        (2, "PATH_TRAVERSAL"),
        (3, "PATH_TRAVERSAL"),
        (4, "PDF_MISSING"),
        (5, "DATE_ORDER"),
        (6, "DATE_FUTURE"),
        (7, "COMMUNE_UNKNOWN"),
        (8, "FIELD_MISSING"),
    ]
    assert [r.source.line for r in result.records] == [9]


def test_sgr_pdf_size_and_content(tmp_path: Path):
    root, _ = sgr_batch(tmp_path)
    write(root, "00001/NOTPDF.pdf", b"GIF89a" + b"x" * 10)
    result = sgr_result(
        tmp_path, {"FICHIER": "00001/NOTPDF.pdf"}, {}, limits=Limits(max_pdf_bytes=len(PDF) - 1)
    )
    assert [r.code for r in result.rejects] == ["PDF_NOT_PDF", "PDF_TOO_LARGE"]


def test_sgr_file_errors(tmp_path: Path):
    root, index = sgr_batch(tmp_path)
    data = index.read_bytes()
    write(root, "a.csv", data.replace(b"FICHIER", b"IMAGE", 1))
    assert file_error("SGR", root / "a.csv", inbox_root=root).code == "CSV_HEADER"
    write(root, "b.csv", data.rstrip(b"\r\n") + b";extra\r\n")
    err = file_error("SGR", root / "b.csv", inbox_root=root)
    assert (err.code, err.line) == ("CSV_SHAPE", 2)
    write(root, "c.csv", b"\xef\xbb\xbf" + data)
    assert file_error("SGR", root / "c.csv", inbox_root=root).code == "ENCODING"


def test_sgr_symlinked_scan_refused(tmp_path: Path):
    root, _ = sgr_batch(tmp_path)
    os.symlink(root / "00001" / "IMG00001.pdf", root / "00001" / "link.pdf")
    assert sgr_result(tmp_path, {"FICHIER": "00001/link.pdf"}).rejects[0].code == "PDF_MISSING"


# --- every reason code, and no personal data in any message -----------------------------

# (flow, overrides, expected code): together they cover every record-level reason code.
REJECT_CASES = [
    ("DSG", {"NomFamille": ""}, "FIELD_MISSING"),
    ("DSG", {"Prenom": DROP}, "FIELD_MISSING"),
    ("DSG", {"NomFamille": NOM + "\u202e"}, "TEXT_INVALID"),
    ("DSG", {"NomVoie": STREET + "\t1"}, "TEXT_INVALID"),
    ("DSG", {"NomVoie": "=" + STREET}, "TEXT_INVALID"),
    ("DSG", {"Prenom": "@" + PRENOM}, "TEXT_INVALID"),
    ("DSG", {"NIR": NIR[:14]}, "NIR_FORMAT"),
    ("DSG", {"NIR": "5" + NIR[1:13] + "00"}, "NIR_KEY"),
    ("DSG", {"NIR": make_nir(sex="6")}, "NIR_FORMAT"),
    ("DSG", {"NIR": make_nir(mm="13")}, "NIR_MONTH"),
    ("DSG", {"NIR": make_nir(yy="91")}, "NIR_BIRTH_MISMATCH"),
    ("DSG", {"DateNai": "1990-02-30"}, "DATE_INVALID"),
    ("DSG", {"Date": "2026-11-20 08:40"}, "DATE_INVALID"),
    ("DSG", {"DateNai": "2027-03-07"}, "DATE_FUTURE"),
    ("DSG", {"DateExamen": "2026-11-26+01:00"}, "DATE_FUTURE"),
    ("DSG", {"Date": "2026-11-26T00:30:00+01:00"}, "DATE_FUTURE"),
    ("DSG", {"DateDPG": "2026-11-20+01:00"}, "DATE_ORDER"),
    ("DSG", {"DateDPG": "2025-11-20+01:00"}, "DATE_RANGE"),
    ("DSG", {"DateNai": "2018-03-07", "NIR": make_nir(yy="18")}, "DATE_RANGE"),
    ("DSG", {"DateNai": "1950-03-07", "NIR": make_nir(yy="50")}, "DATE_RANGE"),
    ("DSG", {"RectifDPG": "oui"}, "CODE_UNKNOWN"),
    ("DSG", {"Numero/@R": "AM"}, "CODE_UNKNOWN"),
    ("DSG", {"Numero": "51101986"}, "VALUE_RANGE"),
    ("DSG", {"Rang": "0"}, "VALUE_RANGE"),
    ("DSG", {"NbEnfANaitre": "10"}, "VALUE_RANGE"),
    ("DSG", {"Telephone": PHONE + "x"}, "VALUE_RANGE"),
    ("DSG", {"CodeInsee": "99350"}, "COMMUNE_UNKNOWN"),
    ("DSG", {"CodePostal": "3500"}, "POSTCODE_SHAPE"),
    ("GRO", {"NOMNAI": ""}, "FIELD_MISSING"),
    ("GRO", {"DTDECLGRO": ""}, "FIELD_MISSING"),
    ("GRO", {"NOMVOIE": "-" + STREET}, "TEXT_INVALID"),
    ("GRO", {"PRENOMS": PRENOM + "\x85"}, "TEXT_INVALID"),
    ("GRO", {"DTNAI": "1990-03-00"}, "DATE_INVALID"),
    ("GRO", {"DTNAI": BIRTH, "TYPEDTNAI": "O"}, "DATE_INVALID"),
    ("GRO", {"DTEMM": "01/01/2024"}, "DATE_INVALID"),
    ("GRO", {"DTRECEP": "2026-11-26"}, "DATE_FUTURE"),
    ("GRO", {"DTDECLGRO": "2026-11-26", "DTRECEP": "2026-11-25"}, "DATE_FUTURE"),
    ("GRO", {"DTNAI": "2027-00-00", "TYPEDTNAI": "O"}, "DATE_FUTURE"),
    ("GRO", {"DTDEBGRO": "2026-11-19"}, "DATE_ORDER"),
    ("GRO", {"DTDEBGRO": "2025-12-01"}, "DATE_RANGE"),
    ("GRO", {"DTNAI": "1959-00-00", "TYPEDTNAI": "O"}, "DATE_RANGE"),
    ("GRO", {"QUAL": "MLLE"}, "CODE_UNKNOWN"),
    ("GRO", {"TYPEDTNAI": "X"}, "CODE_UNKNOWN"),
    ("GRO", {"TYPEADR": "X"}, "CODE_UNKNOWN"),
    ("GRO", {"SITUPRO": "XXX"}, "CODE_UNKNOWN"),
    ("GRO", {"MOTITRANSMDOSPMI": "04"}, "CODE_UNKNOWN"),
    ("GRO", {"ETATADR": "v"}, "CODE_UNKNOWN"),
    ("GRO", {"NBENFCHAPF": "31"}, "VALUE_RANGE"),
    ("GRO", {"MATRICULE": "1234567"}, "MATRICULE_SHAPE"),
    ("GRO", {"NUMORG": "961"}, "NUMORG_SHAPE"),
    ("GRO", {"NUMCOM": "2C004"}, "COMMUNE_UNKNOWN"),
    ("GRO", {"CODEPOS": "3500A"}, "POSTCODE_SHAPE"),
    ("GRO", {"MOTITRANSMDOSPMI": "03"}, "MUTATION_FIELDS"),
    ("GRO", {"NUMORGCED": "561", "MATRICULECED": "765432100000000"}, "MUTATION_FIELDS"),
    ("SGR", {"NUMCOM": ""}, "FIELD_MISSING"),
    ("SGR", {"MATRICULE": "12345670000000\x01"}, "TEXT_INVALID"),
    ("SGR", {"DTRECEP": "2026-13-01"}, "DATE_INVALID"),
    ("SGR", {"DTCREASDP": "2026-11-26"}, "DATE_FUTURE"),
    ("SGR", {"DTCREASDP": "2026-11-19"}, "DATE_ORDER"),
    ("SGR", {"MATRICULE": "12345670000000A"}, "MATRICULE_SHAPE"),
    ("SGR", {"NUMORG": "35"}, "NUMORG_SHAPE"),
    ("SGR", {"NUMCOM": "97511"}, "COMMUNE_UNKNOWN"),
    ("SGR", {"FICHIER": "../x.pdf"}, "PATH_TRAVERSAL"),
    ("SGR", {"FICHIER": "/00001/IMG00001.pdf"}, "PATH_TRAVERSAL"),
    ("SGR", {"FICHIER": "00001/IMG00002.pdf"}, "PDF_MISSING"),
    ("SGR", {"FICHIER": "00001/big.pdf"}, "PDF_TOO_LARGE"),
    ("SGR", {"FICHIER": "00001/fake.pdf"}, "PDF_NOT_PDF"),
    ("SGR", {"FICHIER": "00001/empty.pdf"}, "PDF_NOT_PDF"),
]


def run_case(tmp_path: Path, flow: str, overrides: dict):
    if flow == "DSG":
        return dsg_reject(tmp_path, **overrides)
    if flow == "GRO":
        return gro_reject(tmp_path, **overrides)
    root, _ = sgr_batch(tmp_path)
    write(root, "00001/big.pdf", PDF + b"%" * 200 + b"\n%%EOF\n")
    write(root, "00001/fake.pdf", b"<html>" + NOM.encode() + b"</html>%%EOF")
    write(root, "00001/empty.pdf", b"")
    result = sgr_result(tmp_path, overrides, limits=Limits(max_pdf_bytes=200))
    assert result.records == [] and len(result.rejects) == 1, result
    return result.rejects[0]


@pytest.mark.parametrize("flow, overrides, code", REJECT_CASES)
def test_reject_codes_carry_no_personal_data(tmp_path: Path, flow: str, overrides: dict, code: str):
    rejected = run_case(tmp_path, flow, overrides)
    assert (rejected.flow, rejected.code) == (flow, code), rejected
    assert rejected.message and rejected.code in check.REASONS
    assert_no_personal_data(rejected.message)
    assert_no_personal_data(str(rejected.source))
    for value in overrides.values():
        if isinstance(value, str) and len(value) >= 4:
            assert value not in rejected.message


# Covered by tests/flows/test_parse_real.py (the real shapes: long fields, zips).
REAL_SHAPE_REASONS = {"FIELD_TOO_LONG", "PDF_ENCRYPTED", "ZIP_BOMB", "ZIP_INVALID"}
REAL_SHAPE_FILE_REASONS = {"XML_SHAPE", "ZIP_INVALID", "ZIP_INDEX", "ZIP_BOMB"}


def test_reject_cases_cover_every_reason_code():
    assert {code for _, _, code in REJECT_CASES} | {"FIELD_REPEATED"} | REAL_SHAPE_REASONS == set(check.REASONS)


def test_file_errors_carry_no_personal_data(tmp_path: Path):
    """Every whole-file code, each from a file full of the person's data."""
    gro = gro_csv({}, {})
    lines = gro.split(b"\r\n")
    cases = [
        ("DSG", dsg_xml()[:-40], "XML_MALFORMED"),
        ("DSG", dsg_xml().replace(b"encoding='UTF-8'", b'encoding="latin-1"'), "XML_ENCODING"),
        ("DSG", dsg_xml().replace(STREET.encode(), b"&street;"), "XML_DTD"),
        ("DSG", XXE.replace(b"&xxe;", NOM.encode()), "XML_DTD"),
        ("DSG", b"<" + NOM.encode() + b">" + NIR.encode() + b"</" + NOM.encode() + b">", "XML_ROOT"),
        ("DSG", b"", "EMPTY"),
        ("DSG", dsg_xml() + b" " * 5000, "TOO_LARGE"),
        ("GRO", b"\xef\xbb\xbf" + gro, "ENCODING"),
        ("GRO", gro.decode("latin-1").encode("utf-8"), "ENCODING"),
        ("GRO", gro.replace(NOM.encode(), NOM.encode() + b"\x00"), "ENCODING"),
        ("GRO", b"\r\n".join(lines[1:]), "CSV_HEADER"),
        (
            "GRO",
            b"\r\n".join([lines[0] + b";" + NOM.encode() + b";" + NOM.encode()] + lines[1:]),
            "CSV_HEADER",
        ),
        ("GRO", b"\r\n".join(lines[:2] + [lines[2] + b";" + NIR.encode()]), "CSV_SHAPE"),
        ("GRO", gro + b'"' + NOM.encode() + b";" + NIR.encode(), "CSV_SHAPE"),
        ("GRO", b"", "EMPTY"),
    ]
    for flow, data, code in cases:
        path = write(tmp_path, f"case-{code.lower()}.{flow.lower()}", data)
        err = file_error(flow, path, limits=Limits(max_input_bytes=5000))
        assert err.code == code, (flow, code, err)
        assert err.code in check.FILE_REASONS
        assert_no_personal_data(str(err))
        assert_no_personal_data(err.reason)
    assert {code for _, _, code in cases} | REAL_SHAPE_FILE_REASONS == set(check.FILE_REASONS)


def test_gro_csv_overlong_field_no_longer_quarantines_the_file(tmp_path):
    data = gro_csv({"NOMVOIE": "A" * 200_000}, {})
    result = parse("GRO", write(tmp_path, "g.csv", data))
    assert len(result.records) == 1 and [r.code for r in result.rejects] == ["FIELD_TOO_LONG"]
