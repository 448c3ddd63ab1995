"""Tests of the XSDs and of schemas/__init__.py: the HubEE samples validate unchanged
(with lxml and with the system xmllint), mutated samples fail in both, hostile documents
(DTD, entities) are refused by the parser, and error messages never echo a value.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from lxml import etree

from flux_pmi import schemas
from flux_pmi.core.errors import SchemaError

HUBEE = Path(__file__).resolve().parents[1] / "data" / "hubee"  # copies of shared/reference/hubee
XMLLINT = "/usr/bin/xmllint"
SGR_INDEX = "CG_081_2022-01-02_pmiich.xml"
SECRET = "ZQXSECRETQZ"  # a value that must never appear in an error message


def gro_sample() -> bytes:
    return (HUBEE / "GRO.xml").read_bytes()


def dsg_sample() -> bytes:
    return (HUBEE / "DSG.xml").read_bytes()


def sgr_sample() -> bytes:
    with zipfile.ZipFile(HUBEE / "SGR.zip") as archive:
        return archive.read(SGR_INDEX)


SAMPLES = {"GRO": gro_sample, "DSG": dsg_sample, "SGR": sgr_sample}


def xmllint_ok(kind: str, path: Path) -> bool:
    run = subprocess.run(
        [XMLLINT, "--noout", "--nonet", "--schema", str(schemas.xsd_path(kind)), str(path)],
        capture_output=True,
        check=False,
    )
    return run.returncode == 0


def mutate(data: bytes, old: str, new: str, encoding: str = "utf-8") -> bytes:
    old_b, new_b = old.encode(encoding), new.encode(encoding)
    assert old_b in data, f"mutation anchor not found: {old!r}"
    return data.replace(old_b, new_b, 1)


# --- the samples ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["GRO", "DSG", "SGR"])
def test_hubee_samples_validate_unchanged(kind: str, tmp_path: Path) -> None:
    data = SAMPLES[kind]()
    schemas.validate_bytes(kind, data)
    path = tmp_path / f"{kind}.xml"
    path.write_bytes(data)
    schemas.validate_file(kind, path)
    assert xmllint_ok(kind, path)


@pytest.mark.parametrize("kind", ["GRO", "DSG"])
def test_a_valid_file_is_validated_as_a_stream_an_invalid_one_read_whole_for_its_errors(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed_whole: list[str] = []
    real_parse = schemas._parse

    def whole(what, source):
        parsed_whole.append(what)
        return real_parse(what, source)

    monkeypatch.setattr(schemas, "_parse", whole)
    monkeypatch.setattr(schemas, "STREAM_FROM", 0)  # the samples are small: streamed as a 16 MiB part is
    path = tmp_path / f"{kind}.xml"
    path.write_bytes(SAMPLES[kind]())
    schemas.validate_file(kind, path)
    assert parsed_whole == []  # never held whole: a 16 MiB part's tree is some 90 MB
    old, new = next(iter({"GRO": GRO_MUTATIONS, "DSG": DSG_MUTATIONS}[kind].values()))
    path.write_bytes(mutate(SAMPLES[kind](), old, new))
    with pytest.raises(SchemaError) as raised:
        schemas.validate_file(kind, path)
    with pytest.raises(SchemaError) as from_bytes:  # the same words as the whole-tree validation's
        schemas.validate_bytes(kind, path.read_bytes())
    assert parsed_whole == [f"{kind} {path.name}", f"{kind} document"]
    assert raised.value.errors == from_bytes.value.errors
    monkeypatch.setattr(schemas, "STREAM_FROM", 1 << 40)  # below the threshold: read whole at once
    path.write_bytes(SAMPLES[kind]())
    schemas.validate_file(kind, path)
    assert parsed_whole[2:] == [f"{kind} {path.name}"]


def test_sgr_sample_is_iso_8859_1() -> None:
    data = sgr_sample()
    assert data.startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>')


def test_xsd_paths_exist_and_unknown_kind_is_refused() -> None:
    for kind in schemas.KINDS:
        assert schemas.xsd_path(kind).is_file()
    with pytest.raises(ValueError):
        schemas.xsd_path("XYZ")
    with pytest.raises(ValueError):
        schemas.validate_bytes("XYZ", gro_sample())


def test_schemas_are_compiled_once() -> None:
    assert schemas._schema("DSG") is schemas._schema("DSG")


def test_every_schema_file_is_local_and_has_no_wildcard() -> None:
    xs = "{http://www.w3.org/2001/XMLSchema}"
    directory = schemas.xsd_path("GRO").parent
    files = sorted(directory.glob("*.xsd"))
    assert {f.name for f in files} >= {"common.xsd", "gro.xsd", "sgr.xsd", "dsg.xsd", "dge.xsd"}
    for path in files:
        tree = etree.parse(str(path))
        assert not list(tree.iter(f"{xs}any", f"{xs}anyAttribute")), path.name
        for ref in tree.iter(f"{xs}import", f"{xs}include"):
            assert (directory / ref.get("schemaLocation")).is_file()
            assert "/" not in ref.get("schemaLocation")


def test_gro_schema_declares_no_nir() -> None:
    for name in ("gro.xsd", "common.xsd"):
        text = (schemas.xsd_path("GRO").parent / name).read_text()
        assert 'name="NIR"' not in text


# --- mutated samples fail ---------------------------------------------------------------

GRO_MUTATIONS = {
    "bad IDEPARTE": ("<IDEPARTE>056<", "<IDEPARTE>56<"),
    "IDEPARTE 020": ("<IDEPARTE>056<", "<IDEPARTE>020<"),
    "TYPEADR X": ("<TYPEADR>D<", "<TYPEADR>X<"),
    "NIR in Organisme": ("</MATRICULE>", "</MATRICULE><NIR>290033523804212</NIR>"),
    "NIR in DossierPMI": (
        "<NBENFCHAPF>0</NBENFCHAPF>",
        "<NBENFCHAPF>0</NBENFCHAPF><NIR>290033523804212</NIR>",
    ),
    "NIR in Personne": (
        "<DonneesAdministratives>",
        "<DonneesAdministratives><Personne><QUAL>MME</QUAL><NOM>A</NOM><NOMNAI>B</NOMNAI>"
        "<PRENOMS>C</PRENOMS><DTNAI>1990-01-00</DTNAI><TYPEDTNAI>J</TYPEDTNAI><NOMCOMNAI/>"
        "<SITUPRO>ACT</SITUPRO><NIR>290033523804212</NIR></Personne>",
    ),
    "unknown element": ("<DTREF>", "<FOO>1</FOO><DTREF>"),
    "unknown attribute": ("<Racine>", '<Racine foo="1">'),
    "APPLIEME of SGR": ("<APPLIEME>CRI<", "<APPLIEME>SDP<"),
    "TYPEFLUX": ("<TYPEFLUX>H<", "<TYPEFLUX>J<"),
    "MATRICULE short": ("<MATRICULE>063052900000000<", "<MATRICULE>06305290<"),
    "NUMORG 4 chars": (
        "<NUMORG>561</NUMORG>\n    </IdentificationFlux>",
        "<NUMORG>5611</NUMORG></IdentificationFlux>",
    ),
    "NUMCOM": ("<NUMCOM>56121<", "<NUMCOM>5612<"),
    "NUMCOM 2C": ("<NUMCOM>56121<", "<NUMCOM>2C121<"),
    "CODEPOS": ("<CODEPOS>56100<", "<CODEPOS>5610A<"),
    "motif 04": ("<MOTITRANSMDOSPMI>01<", "<MOTITRANSMDOSPMI>04<"),
    "TYPEPARTE": ("<TYPEPARTE>CG  <", "<TYPEPARTE>CGX<"),
    "date": ("<DTEMM>2021-01-01<", "<DTEMM>2021-13-01<"),
    "hour": ("<HEUCREAFLUX>20:14:35.0000<", "<HEUCREAFLUX>20:14:35<"),
    "NUMSEQFLUX 0": (
        "</NUMORG>\n    </IdentificationFlux>",
        "</NUMORG><NUMSEQFLUX>0</NUMSEQFLUX></IdentificationFlux>",
    ),
    "order": (
        "<FONORG>CAF</FONORG>\n        <NUMORG>561</NUMORG>",
        "<NUMORG>561</NUMORG><FONORG>CAF</FONORG>",
    ),
    "missing TransmissionFlux": ("<TransmissionFlux>", "<X>"),
}

DSG_MUTATIONS = {
    "Identite R": ('<ns3:Identite R="SIRET">', '<ns3:Identite R="FOO">'),
    "Numero R": ('<partenairesante:Numero R="ADELI">', '<partenairesante:Numero R="AM">'),
    "RectifDPG 1": ("<dsgcnaf:RectifDPG>false<", "<dsgcnaf:RectifDPG>1<"),
    "RectifDPG wrong namespace": (
        "<dsgcnaf:RectifDPG>false</dsgcnaf:RectifDPG>",
        "<beneficiaire:RectifDPG>false</beneficiaire:RectifDPG>",
    ),
    "bad NIR": (
        "<beneficiaire:Adresse>",
        "<beneficiaire:NIR>29003352380</beneficiaire:NIR><beneficiaire:Adresse>",
    ),
    "NIR after Adresse": (
        "<beneficiaire:DateNai>",
        "<beneficiaire:NIR>290033523804212</beneficiaire:NIR><beneficiaire:DateNai>",
    ),
    "CodeInsee": ("<beneficiaire:CodeInsee>08435<", "<beneficiaire:CodeInsee>8435<"),
    "DateExamen": ("<beneficiaire:DateExamen>2022-01-29+01:00<", "<beneficiaire:DateExamen>29/01/2022<"),
    "Temps": ("<ns3:Temps>2022-01-30T12:15:35.516+01:00<", "<ns3:Temps>2022-01-30<"),
    "Rang 0": ("<beneficiaire:Rang>1<", "<beneficiaire:Rang>0<"),
    "PGMD_Profil": ('PGMD_Profil="SORTIEDGE"', 'PGMD_Profil="ENTREE"'),
    "missing Nature": ('Nature="DSGCNAF" ', ""),
    "Qualite": ("<ns3:Qualite>CGD008<", "<ns3:Qualite>CGD8<"),
    "unknown element": ("<ns3:NbDoc>", "<ns3:Foo/><ns3:NbDoc>"),
    "no namespace Entete": ("<ns3:Entete ", "<Entete "),
}

SGR_MUTATIONS = {
    "TYPEFLUX": ("<TYPEFLUX>J<", "<TYPEFLUX>H<"),
    "NOMIMAGED": ("<NOMIMAGED>/00001/IMG00001.pdf<", "<NOMIMAGED>../etc/passwd<"),
    "IDEPARTE": ("<IDEPARTE>081<", "<IDEPARTE>81<"),
    "count not padded": ("<NBTOTDOSPMITRANSM>00001<", "<NBTOTDOSPMITRANSM>1<"),
    "unknown element": ("<DTCREASDP>", "<NIR>290033523804212</NIR><DTCREASDP>"),
    "GRO content": (
        "<DTCREASDP>2021-12-31</DTCREASDP>",
        "<DTCREASDP>2021-12-31</DTCREASDP><NBENFCHAPF>0</NBENFCHAPF>",
    ),
}


def _cases():
    for name, (old, new) in GRO_MUTATIONS.items():
        yield pytest.param("GRO", old, new, id=f"GRO-{name}")
    for name, (old, new) in DSG_MUTATIONS.items():
        yield pytest.param("DSG", old, new, id=f"DSG-{name}")
    for name, (old, new) in SGR_MUTATIONS.items():
        yield pytest.param("SGR", old, new, id=f"SGR-{name}")


@pytest.mark.parametrize("kind, old, new", list(_cases()))
def test_mutated_samples_fail_in_lxml_and_xmllint(kind: str, old: str, new: str, tmp_path: Path) -> None:
    encoding = "latin-1" if kind == "SGR" else "utf-8"
    data = mutate(SAMPLES[kind](), old, new, encoding)
    with pytest.raises(SchemaError) as raised:
        schemas.validate_bytes(kind, data)
    assert raised.value.errors and all(e.startswith("line ") for e in raised.value.errors)
    path = tmp_path / "mutated.xml"
    path.write_bytes(data)
    with pytest.raises(SchemaError):
        schemas.validate_file(kind, path)
    assert not xmllint_ok(kind, path)


@pytest.mark.parametrize(
    "kind, old, new",
    [
        ("GRO", "<TYPEPARTE>CG  <", "<TYPEPARTE>CG<"),
        ("SGR", "<TYPEPARTE>CG<", "<TYPEPARTE>CG  <"),
        ("GRO", "<IDEPARTE>056<", "<IDEPARTE>02A<"),
        ("GRO", "<IDEPARTE>056<", "<IDEPARTE>976<"),
        ("GRO", "<NUMCOM>56121<", "<NUMCOM>2B033<"),
        (
            "GRO",
            "</NUMORG>\n    </IdentificationFlux>",
            "</NUMORG><NUMSEQFLUX>12</NUMSEQFLUX></IdentificationFlux>",
        ),
        (
            "SGR",
            "</NUMORG>\r\n</IdentificationFlux>",
            "</NUMORG><NUMSEQFLUX>3</NUMSEQFLUX></IdentificationFlux>",
        ),
        (
            "DSG",
            '<partenairesante:Numero R="ADELI">511019861<',
            '<partenairesante:Numero R="RPPS">10001234567<',
        ),
        (
            "DSG",
            "<beneficiaire:Adresse>",
            "<beneficiaire:NIR>290032A00412345</beneficiaire:NIR><beneficiaire:Adresse>",
        ),
        (
            "DSG",
            "<beneficiaire:DateNai>",
            "<beneficiaire:Telephone>+33 6.01.02.03.04</beneficiaire:Telephone><beneficiaire:DateNai>",
        ),
        # What the parsers let through as optional must not block a file.
        ("GRO", "<CODEPOS>56100<", "<CODEPOS><"),
        ("GRO", "<ETATADR>VC<", "<ETATADR><"),
        ("DSG", "<beneficiaire:CodePostal>08300<", "<beneficiaire:CodePostal><"),
        ("DSG", '<partenairesante:Numero R="AM">511019861<', '<partenairesante:Numero R="AM"><'),
    ],
)
def test_allowed_variants_validate(kind: str, old: str, new: str, tmp_path: Path) -> None:
    encoding = "latin-1" if kind == "SGR" else "utf-8"
    data = mutate(SAMPLES[kind](), old, new, encoding)
    schemas.validate_bytes(kind, data)
    path = tmp_path / "variant.xml"
    path.write_bytes(data)
    assert xmllint_ok(kind, path)


def test_dsg_without_prestataire_is_valid() -> None:
    data = dsg_sample()
    start = data.index(b"<partenairesante:PRESTATAIRE>")
    end = data.index(b"</partenairesante:PRESTATAIRE>") + len(b"</partenairesante:PRESTATAIRE>")
    schemas.validate_bytes("DSG", data[:start] + data[end:])


def test_dsg_envelope_without_documents_is_valid() -> None:
    data = dsg_sample()
    start, end = data.index(b"    <ns3:Document>"), data.index(b"</Agregat>")
    empty = mutate(data[:start] + data[end:], "<ns3:NbDoc>1<", "<ns3:NbDoc>0<")
    schemas.validate_bytes("DSG", empty)


def test_gro_person_with_unknown_day_validates() -> None:
    person = (
        "<Personne><QUAL>MME</QUAL><NOM></NOM><NOMNAI>B</NOMNAI><PRENOMS>C</PRENOMS>"
        "<DTNAI>1990-00-00</DTNAI><TYPEDTNAI>O</TYPEDTNAI><NOMCOMNAI></NOMCOMNAI>"
        "<SITUPRO>ETU</SITUPRO></Personne>"
    )
    data = mutate(gro_sample(), "<DonneesAdministratives>", "<DonneesAdministratives>" + person)
    schemas.validate_bytes("GRO", data)
    with pytest.raises(SchemaError):
        schemas.validate_bytes("GRO", data.replace(b"<QUAL>MME<", b"<QUAL>MLLE<"))


# --- hostile documents -------------------------------------------------------------------


HOSTILE = {
    "internal entity": b'<?xml version="1.0"?>\n<!DOCTYPE Racine [<!ENTITY s "' + SECRET.encode() + b'">]>\n'
    b"<Racine>&s;</Racine>",
    "external entity": b'<?xml version="1.0"?>\n<!DOCTYPE Racine [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    b"<Racine><IdentificationFlux>&x;</IdentificationFlux></Racine>",
    "external DTD": b'<?xml version="1.0"?>\n<!DOCTYPE Racine SYSTEM "http://127.0.0.1:9/x.dtd">\n<Racine/>',
    "billion laughs": b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
    + b"".join(
        b'<!ENTITY %s "%s">' % (chr(98 + i).encode(), (b"&" + chr(97 + i).encode() + b";") * 10)
        for i in range(8)
    )
    + b"]>\n<Racine>&i;</Racine>",
    "empty doctype": b'<?xml version="1.0"?>\n<!DOCTYPE Racine>\n<Racine/>',
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_dtd_and_entities_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(SchemaError) as raised:
        schemas.validate_bytes("GRO", HOSTILE[name])
    message = str(raised.value) + " ".join(raised.value.errors)
    # Refused as a DOCTYPE, or earlier by libxml2 itself (amplification limit, no network).
    assert any(why in message for why in ("DOCTYPE", "ERR_RESOURCE_LIMIT", "IO_NETWORK_ATTEMPT"))
    assert SECRET not in message and "root:" not in message
    path = tmp_path / "hostile.xml"
    path.write_bytes(HOSTILE[name])
    with pytest.raises(SchemaError):
        schemas.validate_file("GRO", path)


def test_external_references_are_never_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # libxml2 opens an external DTD or parameter entity given as a path even with
    # load_dtd=False: the parser's resolver must answer instead, with nothing.
    dtd = tmp_path / "x.dtd"
    dtd.write_text(f'<!ENTITY s "{SECRET}">')
    asked: list[str] = []
    original = schemas._NothingExternal.resolve

    def spy(self, url, pubid, context):
        asked.append(url)
        return original(self, url, pubid, context)

    monkeypatch.setattr(schemas._NothingExternal, "resolve", spy)
    documents = [
        f'<?xml version="1.0"?>\n<!DOCTYPE Racine SYSTEM "{dtd}">\n<Racine>&s;</Racine>',
        f'<?xml version="1.0"?>\n<!DOCTYPE Racine [<!ENTITY % p SYSTEM "file://{dtd}"> %p;]>\n<Racine>&s;</Racine>',
    ]
    for document in documents:
        with pytest.raises(SchemaError) as raised:
            schemas.validate_bytes("GRO", document.encode())
        assert SECRET not in str(raised.value)
    assert len(asked) == 2 and all(str(dtd) in url for url in asked)


def test_malformed_xml_is_reported_without_its_bytes() -> None:
    data = gro_sample().replace(b"<NOMCOM>LORIENT<", b"<NOMCOM>\xe9" + SECRET.encode() + b"\xff<", 1)
    assert SECRET.encode() in data
    with pytest.raises(SchemaError) as raised:
        schemas.validate_bytes("GRO", data)
    assert SECRET not in str(raised.value)
    assert "0xE9" not in str(raised.value) and "0xFF" not in str(raised.value)
    assert raised.value.errors[0].startswith("line ")


# --- messages carry no value -------------------------------------------------------------

LEAKS = [
    ("GRO", "<IDEPARTE>056<", f"<IDEPARTE>{SECRET}<"),
    ("GRO", "<TYPEADR>D<", f"<TYPEADR>{SECRET}<"),
    ("GRO", "<DTEMM>2021-01-01<", f"<DTEMM>{SECRET}<"),
    ("GRO", "<NBENFCHAPF>0<", f"<NBENFCHAPF>{SECRET}<"),
    ("GRO", "<MATRICULE>063052900000000<", f"<MATRICULE>{SECRET}<"),
    ("GRO", "<Partenaire>", f"<Partenaire>{SECRET}"),
    ("GRO", "<RGADR>1<", f"<RGADR><x>{SECRET}</x><"),
    ("DSG", "<beneficiaire:DateNai>1990-03-03<", f"<beneficiaire:DateNai>{SECRET}<"),
    ("DSG", '<partenairesante:Numero R="ADELI">', f'<partenairesante:Numero R="{SECRET}">'),
    ("DSG", "<beneficiaire:Adresse>", f"<beneficiaire:NIR>{SECRET}</beneficiaire:NIR><beneficiaire:Adresse>"),
    ("DSG", "<beneficiaire:Rang>1<", f"<beneficiaire:Rang>{'9' * 40}{SECRET}<"),
    ("DSG", '<ns3:Entete Profil_Version="01.02"', f'<ns3:Entete Profil_Version="{SECRET}"'),
    ("DSG", "<dsgcnaf:RectifDPG>false<", f"<dsgcnaf:RectifDPG>{SECRET}<"),
    # A value crafted to look like the end of an lxml message must not fool the rewriting.
    ("DSG", "<beneficiaire:DateNai>1990-03-03<", f"<beneficiaire:DateNai>x' of the atomic type '{SECRET}<"),
    ("SGR", "<DTCREASDP>2021-12-31<", f"<DTCREASDP>{SECRET}<"),
]


@pytest.mark.parametrize("kind, old, new", LEAKS)
def test_error_messages_do_not_echo_values(kind: str, old: str, new: str) -> None:
    encoding = "latin-1" if kind == "SGR" else "utf-8"
    data = mutate(SAMPLES[kind](), old, new, encoding)
    with pytest.raises(SchemaError) as raised:
        schemas.validate_bytes(kind, data)
    text = str(raised.value) + "\n".join(raised.value.errors)
    assert SECRET not in text
    assert "9999999999" not in text
    for error in raised.value.errors:
        assert error.startswith("line ")


def test_error_names_the_element_and_line() -> None:
    data = mutate(gro_sample(), "<IDEPARTE>056<", "<IDEPARTE>999<")
    with pytest.raises(SchemaError) as raised:
        schemas.validate_bytes("GRO", data)
    (error,) = raised.value.errors
    assert error.startswith(
        "line 23: /Racine/InfoSuiviGrossessePMI/IdentificationDossier/Partenaire/IDEPARTE"
    )
    assert "IDEPARTE" in error and "pattern" in error and "999" not in error


def test_structural_messages_keep_lxml_wording() -> None:
    data = mutate(gro_sample(), "</MATRICULE>", "</MATRICULE><NIR>290033523804212</NIR>")
    with pytest.raises(SchemaError) as raised:
        schemas.validate_bytes("GRO", data)
    (error,) = raised.value.errors
    assert "Element 'NIR': This element is not expected." in error
    assert "290033523804212" not in error


# --- the SGR zip -------------------------------------------------------------------------


def _repack(tmp_path: Path, members: dict[str, bytes], name: str = "sgr.zip") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


def _sample_pdf() -> bytes:
    with zipfile.ZipFile(HUBEE / "SGR.zip") as archive:
        return archive.read("IMG00001.pdf")


def test_sgr_zip_with_our_layout_validates(tmp_path: Path) -> None:
    path = _repack(tmp_path, {SGR_INDEX: sgr_sample(), "00001/IMG00001.pdf": _sample_pdf()})
    schemas.validate_sgr_zip(path)


def test_hubee_sample_zip_layout_is_not_ours(tmp_path: Path) -> None:
    # Its PDF sits at the root although NOMIMAGED names a folder: a reader copes, we do not emit that.
    copy = tmp_path / "SGR.zip"
    shutil.copy(HUBEE / "SGR.zip", copy)
    with pytest.raises(SchemaError) as raised:
        schemas.validate_sgr_zip(copy)
    assert any("names no member" in e for e in raised.value.errors)


@pytest.mark.parametrize(
    "members, expected",
    [
        ({"00001/IMG00001.pdf": b"%PDF-1.4 %%EOF"}, "exactly one"),
        (
            {SGR_INDEX: b"", "CG_082_2022-01-02_pmiich.xml": b"", "00001/IMG00001.pdf": b"%PDF-"},
            "exactly one",
        ),
        ({SGR_INDEX: "sample", "00001/IMG00001.pdf": b"not a pdf"}, "not a PDF"),
        ({SGR_INDEX: "sample", "00001/IMG00001.pdf": b"%PDF-1.4", "extra.txt": b"x"}, "not named"),
        ({SGR_INDEX: "sample"}, "names no member"),
    ],
)
def test_bad_sgr_zips_are_refused(members: dict, expected: str, tmp_path: Path) -> None:
    members = {k: (sgr_sample() if v == "sample" else v) for k, v in members.items()}
    path = _repack(tmp_path, members)
    with pytest.raises(SchemaError) as raised:
        schemas.validate_sgr_zip(path)
    assert any(expected in e for e in raised.value.errors)


def test_sgr_zip_with_invalid_index_is_refused(tmp_path: Path) -> None:
    index = mutate(sgr_sample(), "<TYPEFLUX>J<", "<TYPEFLUX>H<", "latin-1")
    path = _repack(tmp_path, {SGR_INDEX: index, "00001/IMG00001.pdf": _sample_pdf()})
    with pytest.raises(SchemaError):
        schemas.validate_sgr_zip(path)


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(b"not a zip")
    with pytest.raises(SchemaError):
        schemas.validate_sgr_zip(path)
