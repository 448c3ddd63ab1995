"""The parsers on the real upstream shapes: DGE envelopes, Cristal GRO XML, SDP SGR zips.

Each test starts from a HubEE sample (unchanged, or changed in one place) and checks what
the parser makes of it: records, a record-level reject (the rest goes on), or a whole-file
refusal, never with a personal value in a message. Hostile input (XXE, entity expansion,
zip slip, zip bomb, encrypted zip, fake or missing PDF, nested folders) keeps its guarantees.
"""

from __future__ import annotations

import io
import random
import stat
import subprocess
import zipfile
import zlib
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from flux_pmi.core.errors import InputFileError
from flux_pmi.flows import check
from flux_pmi.flows.parse import Limits, parse_file
from flux_pmi.inbox.claim import candidates

HUBEE = Path("/work/shared/reference/hubee")
TODAY = date(2026, 11, 23)
DSG = (HUBEE / "DSG.xml").read_bytes()
GRO = (HUBEE / "GRO.xml").read_bytes()
SGR_ZIP = (HUBEE / "SGR.zip").read_bytes()
with zipfile.ZipFile(io.BytesIO(SGR_ZIP)) as _z:
    SGR_INDEX = _z.read("CG_081_2022-01-02_pmiich.xml")
    PDF = _z.read("IMG00001.pdf")
INDEX_NAME = "CG_081_2022-01-02_pmiich.xml"
PERSONAL = ["DU CLOCHER", "TAGNON", "1990-03-03", "063052900000000", "073819400000000", "LORIENT"]


def parse(tmp_path: Path, flow: str, name: str, data: bytes, limits: Limits | None = None):
    path = tmp_path / name
    path.write_bytes(data)
    return parse_file(flow, path, display_name=name, today=TODAY, inbox_root=tmp_path, limits=limits)


def scan_bytes(record) -> bytes:
    """The scan a record names, read where the record says its bytes are (a zip's: its member's
    data at its offset, inflated and checked against its CRC), as the build will copy them."""
    if record.member is None:
        return record.pdf.read_bytes()
    with record.pdf.open("rb") as fh:
        fh.seek(record.member.offset)
        raw = fh.read(record.member.compress_size)
    data = zlib.decompress(raw, -15) if record.member.compress_type == zipfile.ZIP_DEFLATED else raw
    assert zlib.crc32(data) == record.member.crc and len(data) == record.pdf_size
    return data


def refused(tmp_path: Path, flow: str, name: str, data: bytes, limits: Limits | None = None) -> InputFileError:
    with pytest.raises(InputFileError) as caught:
        parse(tmp_path, flow, name, data, limits)
    for value in PERSONAL:
        assert value not in str(caught.value)
    assert caught.value.code in check.FILE_REASONS
    return caught.value


def only_reject(result):
    assert result.records == [] and len(result.rejects) == 1, result
    (rejected,) = result.rejects
    for value in PERSONAL:
        assert value not in rejected.message
    assert rejected.code in check.REASONS
    return rejected


def make_zip(members: list[tuple[str, bytes]], *, compress=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compress) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


# --- DSG: the DGE envelope -------------------------------------------------------------------


def test_dsg_sample_is_one_declaration_without_nir_or_phone(tmp_path):
    result = parse(tmp_path, "DSG", "DSG.xml", DSG)
    (record,) = result.records
    assert result.rejects == []
    assert (record.nir, record.telephone, record.commune_code) == ("", "", "08435")
    assert (record.addressed_to, record.addressed_siret) == ("008", "22080004900011")
    assert record.received == date(2022, 1, 29)  # dsgcnaf:Date, local date in Paris
    assert record.date_dpg == "2021-12-03+01:00" and not record.is_rectification


def test_dsg_nir_when_present_is_checked(tmp_path):
    bad = DSG.replace(b"<beneficiaire:Adresse>", b"<beneficiaire:NIR>290031234567800</beneficiaire:NIR>"
                      b"<beneficiaire:Adresse>")
    assert only_reject(parse(tmp_path, "DSG", "d.xml", bad)).code in {"NIR_KEY", "NIR_BIRTH_MISMATCH"}


def test_dsg_received_uses_paris_local_date(tmp_path):
    late = DSG.replace(b"<dsgcnaf:Date>2022-01-29T08:40:05.000+01:00",
                       b"<dsgcnaf:Date>2022-01-28T23:30:00.000Z")
    (record,) = parse(tmp_path, "DSG", "d.xml", late).records
    assert record.received == date(2022, 1, 29)


def test_dsg_one_bad_document_does_not_refuse_the_envelope(tmp_path):
    start, end = DSG.index(b"    <ns3:Document>"), DSG.index(b"</Agregat>")
    doc = DSG[start:end]
    long_street = doc.replace(b"DU CLOCHER", b"DU CLOCHER" + b" X" * 100)
    envelope = DSG[:start].replace(b"<ns3:NbDoc>1<", b"<ns3:NbDoc>2<") + long_street + doc + DSG[end:]
    result = parse(tmp_path, "DSG", "d.xml", envelope)
    assert len(result.records) == 1
    (rejected,) = result.rejects
    assert rejected.code == "FIELD_TOO_LONG" and "NomVoie" in rejected.message
    assert rejected.source.line > DSG[:start].count(b"\n")


@pytest.mark.parametrize("change, code", [
    ((b"<ns3:NbDoc>1<", b"<ns3:NbDoc>2<"), "XML_SHAPE"),
    ((b'PGMD_Profil="SORTIEDGE"', b'PGMD_Profil="ENTREEDGE"'), "XML_SHAPE"),
    ((b"<Agregat ", b"<Autre "), "XML_ROOT"),
])
def test_dsg_envelope_frame_errors_refuse_the_file(tmp_path, change, code):
    data = DSG.replace(*change)
    if code == "XML_ROOT":
        data = data.replace(b"</Agregat>", b"</Autre>")
    assert refused(tmp_path, "DSG", "d.xml", data).code == code


def test_dsg_envelope_xxe_and_entity_expansion_are_refused_unparsed(tmp_path):
    xxe = DSG.replace(b"<Agregat ", b'<!DOCTYPE Agregat [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n<Agregat ', 1)
    assert refused(tmp_path, "DSG", "x.xml", xxe.replace(b"TAGNON", b"&x;")).code == "XML_DTD"
    lol = DSG.replace(b"<Agregat ", b'<!DOCTYPE Agregat [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
                      b"\n<Agregat ", 1)
    assert refused(tmp_path, "DSG", "l.xml", lol).code == "XML_DTD"


# --- GRO: Cristal's XML ----------------------------------------------------------------------

PERSONNE = (b"<Personne><QUAL>MME</QUAL><NOM></NOM><NOMNAI>MARTIN</NOMNAI><PRENOMS>ANNE</PRENOMS>"
            b"<DTNAI>1990-03-03</DTNAI><TYPEDTNAI>N</TYPEDTNAI><NOMCOMNAI>VANNES</NOMCOMNAI>"
            b"<SITUPRO>ACT</SITUPRO><NIR>290035612345678</NIR></Personne>")


def gro_case(commune: bytes = b"56121", *, person: bool = True, idepart: bytes = b"056") -> bytes:
    start, end = GRO.index(b"    <InfoSuiviGrossessePMI>"), GRO.index(b"    <Anomalie>")
    case = GRO[start:end].replace(b"<NUMCOM>56121", b"<NUMCOM>" + commune)
    case = case.replace(b"<IDEPARTE>056", b"<IDEPARTE>" + idepart)
    if person:
        case = case.replace(b"<DonneesAdministratives>", b"<DonneesAdministratives>" + PERSONNE)
        case = case.replace(b"<NBENFCHAPF>0</NBENFCHAPF>",
                            b"<NBENFCHAPF>0</NBENFCHAPF><DTDECLGRO>2022-02-01</DTDECLGRO>"
                            b"<DTDEBGRO>2021-12-01</DTDEBGRO>")
    return case


def gro_file(body: bytes, trailer: bytes = b"") -> bytes:
    start = GRO.index(b"    <InfoSuiviGrossessePMI>")
    return GRO[:start] + body + b"<TransmissionFlux>" + trailer + b"</TransmissionFlux></Racine>"


def test_gro_sample_anomaly_case_is_delivered_without_person(tmp_path):
    (record,) = parse(tmp_path, "GRO", "GRO.xml", GRO).records
    assert record.anomalies == ("DOSSIER SANS PERSONNES",)
    assert (record.qual, record.nomnai, record.has_person) == ("", "", False)
    assert (record.commune_code, record.idepart) == ("56121", "056")
    assert record.received == date(2022, 2, 10)  # DTREF: the case has no DTDECLGRO


def test_gro_cases_for_several_departements_and_receipt_date(tmp_path):
    data = gro_file(gro_case() + gro_case(b"35238", idepart=b"056"), b"<NBTOTDOSPMITRANSM>2</NBTOTDOSPMITRANSM>")
    result = parse(tmp_path, "GRO", "g.xml", data)
    assert result.rejects == []
    assert [r.commune_code for r in result.records] == ["56121", "35238"]
    # The earliest real date: the declaration date, before DTREF.
    assert {r.received for r in result.records} == {date(2022, 2, 1)}
    assert all(r.has_person and r.anomalies == () for r in result.records)
    assert all(not hasattr(r, "nir") for r in result.records)  # the NIR in Personne is never read


def test_gro_a_mutation_counts_from_the_day_this_caf_recorded_it_not_its_old_declaration(tmp_path):
    """A mutation prenante's DTDECLGRO is the declaration to the Caf she left, months back: counting
    the 8 working days from it would make every mutation late on arrival."""
    mutation = (gro_case().replace(b"<MOTITRANSMDOSPMI>01", b"<MOTITRANSMDOSPMI>03")
                .replace(b"<DTDECLGRO>2022-02-01", b"<DTDECLGRO>2021-10-01")
                .replace(b"<DTDEBGRO>2021-12-01</DTDEBGRO>", b"<DTDEBGRO>2021-09-01</DTDEBGRO><MutationPrenante>"
                         b"<NUMORG>351</NUMORG><MATRICULE>123456700000000</MATRICULE></MutationPrenante>"))
    data = gro_file(gro_case() + mutation, b"<NBTOTDOSPMITRANSM>2</NBTOTDOSPMITRANSM>")
    result = parse(tmp_path, "GRO", "g.xml", data)
    assert result.rejects == []
    declaration, moved = result.records
    assert (declaration.motif, declaration.received) == ("01", date(2022, 2, 1))  # its DTDECLGRO
    assert (moved.motif, moved.received) == ("03", date(2022, 2, 10))  # DTREF, not 2021-10-01
    assert moved.dtdeclgro == date(2021, 10, 1)  # still carried as annexe 1 asks


def test_gro_an_unmarked_case_without_person_is_refused_alone(tmp_path):
    data = gro_file(gro_case(person=False) + gro_case(), b"<NBTOTDOSPMITRANSM>2</NBTOTDOSPMITRANSM>")
    result = parse(tmp_path, "GRO", "g.xml", data)
    assert len(result.records) == 1
    assert [r.code for r in result.rejects] == ["FIELD_MISSING"]


def test_gro_overlong_field_rejects_its_case_only(tmp_path):
    long = gro_case().replace(b"<NOMVOIE>DU GENERAL DE GAULLE", b"<NOMVOIE>" + b"A" * 100_000)
    result = parse(tmp_path, "GRO", "g.xml", gro_file(long + gro_case()))
    assert len(result.records) == 1 and [r.code for r in result.rejects] == ["FIELD_TOO_LONG"]


@pytest.mark.parametrize("data", [
    gro_file(b"<Anomalie><LIBANO>X</LIBANO></Anomalie>" + gro_case()),
    gro_file(gro_case(), b"<NBTOTDOSPMITRANSMANO>1</NBTOTDOSPMITRANSMANO>"),
    gro_file(gro_case(), b"<NBTOTDOSPMITRANSM>3</NBTOTDOSPMITRANSM>"),
    GRO.replace(b"<APPLIEME>CRI<", b"<APPLIEME>SDP<"),
    GRO.replace(b"<DTREF>2022-02-10<", b"<DTREF>10/02/2022<"),
])
def test_gro_frame_errors_refuse_the_file(tmp_path, data):
    assert refused(tmp_path, "GRO", "g.xml", data).code == "XML_SHAPE"


def test_gro_xml_must_be_utf8_without_dtd(tmp_path):
    latin = GRO.replace(b'encoding="UTF-8"', b'encoding="ISO-8859-1"')
    assert refused(tmp_path, "GRO", "g.xml", latin).code == "XML_ENCODING"
    xxe = GRO.replace(b"<Racine>", b'<!DOCTYPE Racine [<!ENTITY x SYSTEM "file:///etc/passwd">]><Racine>')
    assert refused(tmp_path, "GRO", "x.xml", xxe).code == "XML_DTD"




# --- SGR: the SDP zip ------------------------------------------------------------------------


def test_sgr_sample_resolves_the_root_pdf_and_keeps_its_bytes(tmp_path):
    (record,) = parse(tmp_path, "SGR", "SGR.zip", SGR_ZIP).records
    assert scan_bytes(record) == PDF
    assert record.member.compress_type == zipfile.ZIP_DEFLATED  # as the sample holds it, copied as is
    assert (record.idepart, record.image, record.num_com) == ("081", "/00001/IMG00001.pdf", "")
    assert record.received == date(2021, 12, 31)  # DTCREASDP, before DTREF
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SGR.zip"]  # nothing extracted


def test_sgr_exact_path_wins_over_a_basename_match(tmp_path):
    other = PDF.replace(b"%PDF-", b"%PDF-", 1) + b"\n%%EOF\n"
    data = make_zip([(INDEX_NAME, SGR_INDEX), ("IMG00001.pdf", PDF), ("00001/IMG00001.pdf", other)])
    (record,) = parse(tmp_path, "SGR", "s.zip", data).records
    assert scan_bytes(record) == other


def index_with(n: int, names: list[bytes]) -> bytes:
    start, end = SGR_INDEX.index(b"<InfoSuiviGrossessePMI>"), SGR_INDEX.index(b"<TransmissionFlux>")
    case = SGR_INDEX[start:end]
    cases = b"".join(case.replace(b"/00001/IMG00001.pdf", name) for name in names)
    return (SGR_INDEX[:start] + cases + SGR_INDEX[end:]).replace(b"<NBTOTDOSPMITRANSM>00001<",
                                                                   b"<NBTOTDOSPMITRANSM>%05d<" % n)


@pytest.mark.parametrize("member, data, code", [
    ("IMG00002.pdf", PDF, "PDF_MISSING"),  # the case's scan is missing
    ("IMG00001.pdf", b"<html>not a pdf</html>%%EOF", "PDF_NOT_PDF"),
    ("00001/", b"", "PDF_MISSING"),  # a folder where the scan should be
    ("../IMG00001.pdf", PDF, "PATH_TRAVERSAL"),  # zip slip: never matched, never extracted
    ("/IMG00001.pdf", PDF, "PATH_TRAVERSAL"),
    ("IMG00001.pdf", b"%PDF-" + b"\0" * (3 * 1024 * 1024) + b"%%EOF", "ZIP_BOMB"),
])
def test_sgr_bad_scan_is_refused_alone(tmp_path, member, data, code):
    index = index_with(2, [b"/00001/IMG00001.pdf", b"/00002/GOOD.pdf"])
    zdata = make_zip([(INDEX_NAME, index), (member, data), ("00002/GOOD.pdf", PDF)])
    result = parse(tmp_path, "SGR", "s.zip", zdata, Limits(max_pdf_bytes=4 * 1024 * 1024))
    assert [r.image for r in result.records] == ["/00002/GOOD.pdf"]
    (rejected,) = result.rejects
    assert rejected.code == code, rejected
    assert not list(tmp_path.rglob("IMG00001.pdf")) and not (tmp_path.parent / "IMG00001.pdf").exists()


def test_sgr_nested_folders_are_found_by_exact_path(tmp_path):
    index = index_with(1, [b"/a/b/c/d/IMG1.pdf"])
    (record,) = parse(tmp_path, "SGR", "s.zip", make_zip([(INDEX_NAME, index), ("a/b/c/d/IMG1.pdf", PDF)])).records
    assert scan_bytes(record) == PDF


def test_sgr_too_large_scan_is_refused_alone(tmp_path):
    result = parse(tmp_path, "SGR", "s.zip", SGR_ZIP, Limits(max_pdf_bytes=1000))
    assert only_reject(result).code == "PDF_TOO_LARGE"


def _encrypt_member(zdata: bytes, name: str) -> bytes:
    """Set the 'encrypted' flag of one member (local header and central directory)."""
    buf = bytearray(zdata)
    with zipfile.ZipFile(io.BytesIO(zdata)) as z:
        info = z.getinfo(name)
    buf[info.header_offset + 6] |= 0x1
    at = 0
    while (at := buf.find(b"PK\x01\x02", at)) >= 0:
        name_len = int.from_bytes(buf[at + 28:at + 30], "little")
        if buf[at + 46:at + 46 + name_len] == name.encode():
            buf[at + 8] |= 0x1
        at += 4
    return bytes(buf)


def test_sgr_encrypted_scan_is_refused_alone_and_encrypted_index_refuses_the_file(tmp_path):
    zdata = make_zip([(INDEX_NAME, SGR_INDEX), ("IMG00001.pdf", PDF)])
    assert only_reject(parse(tmp_path, "SGR", "s.zip", _encrypt_member(zdata, "IMG00001.pdf"))).code == \
        "PDF_ENCRYPTED"
    assert refused(tmp_path, "SGR", "t.zip", _encrypt_member(zdata, INDEX_NAME)).code == "ZIP_INVALID"


def test_sgr_scan_stored_as_a_symbolic_link_is_refused_alone(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(INDEX_NAME, SGR_INDEX)
        link = zipfile.ZipInfo("IMG00001.pdf")
        link.create_system, link.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, b"%PDF-/../../etc/passwd %%EOF")  # even one that would pass for a PDF
    reject = only_reject(parse(tmp_path, "SGR", "s.zip", buf.getvalue()))
    assert (reject.code, reject.message) == ("ZIP_INVALID", "NOMIMAGED: the member is a symbolic link, not a scan")


@pytest.mark.parametrize("data, code", [
    (b"PK\x03\x04 not really a zip", "ZIP_INVALID"),
    (make_zip([("IMG00001.pdf", PDF)]), "ZIP_INDEX"),
    (make_zip([(INDEX_NAME, SGR_INDEX), ("x/" + INDEX_NAME, SGR_INDEX)]), "ZIP_INDEX"),
    (make_zip([(INDEX_NAME, SGR_INDEX.replace(b"<APPLIEME>SDP<", b"<APPLIEME>CRI<"))]), "XML_SHAPE"),
    (make_zip([(INDEX_NAME, SGR_INDEX.replace(b"<Racine ", b'<!DOCTYPE Racine [<!ENTITY x SYSTEM '
                                              b'"file:///etc/passwd">]><Racine '))]), "XML_DTD"),
    (make_zip([(INDEX_NAME, b'<?xml version="1.0" encoding="ISO-8859-1"?>\n<Racine>' + b" " * 3_000_000
                + b"</Racine>")]), "ZIP_BOMB"),
    (make_zip([(f"f{i}.pdf", b"") for i in range(30)] + [(INDEX_NAME, SGR_INDEX)]), "ZIP_BOMB"),
])
def test_sgr_unreadable_zip_refuses_the_file(tmp_path, data, code):
    limits = Limits(max_input_bytes=2_000_000, max_zip_members=20)
    assert refused(tmp_path, "SGR", "s.zip", data, limits).code == code


def test_sgr_index_is_read_as_iso_8859_1(tmp_path):
    # A byte that is not UTF-8 (é in ISO-8859-1): fine, since the index declares ISO-8859-1.
    index = SGR_INDEX.replace(b"</Racine>", b"<!-- d\xe9partement -->\n</Racine>")
    (record,) = parse(tmp_path, "SGR", "s.zip", make_zip([(INDEX_NAME, index), ("IMG00001.pdf", PDF)])).records
    assert record.idepart == "081"


# --- claim: which names are taken ------------------------------------------------------------


def test_claim_takes_the_real_and_secondary_extensions(tmp_path):
    names = {"DSG": ["a.xml", "b.XML", "c.csv", "d.zip"], "GRO": ["a.xml", "b.csv", "c.zip"],
             "SGR": ["a.zip", "b.csv", "c.xml", "d.pdf", "e.zip.part"]}
    for flow, files in names.items():
        (tmp_path / flow).mkdir()
        for name in files:
            (tmp_path / flow / name).write_bytes(b"x")
    taken = {flow: [p.name for p in candidates(tmp_path, flow)] for flow in names}
    assert taken == {"DSG": ["a.xml", "b.XML"], "GRO": ["a.xml", "b.csv"], "SGR": ["a.zip", "b.csv"]}


@pytest.mark.parametrize("tail, accepted", [
    (b"%%EOF\n", True),  # the end-of-file mark straddles two of the extraction's 1 MiB reads
    (b"%%EOF\n" + b"junk" * 300, False),  # a mark, but not within the scan's last KiB
])
def test_sgr_scan_is_checked_as_it_is_extracted(tmp_path, tail, accepted):
    body = random.Random(7).randbytes((1 << 20) - 2 - len(b"%PDF-"))  # incompressible: no ratio refusal
    data = b"%PDF-" + body + tail
    index = index_with(1, [b"/00001/IMG00001.pdf"])
    result = parse(tmp_path, "SGR", "s.zip", make_zip([(INDEX_NAME, index), ("00001/IMG00001.pdf", data)]),
                   Limits(max_pdf_bytes=4 * 1024 * 1024))
    if accepted:
        (record,) = result.records
        assert scan_bytes(record) == data and record.pdf_size == len(data)
    else:
        assert only_reject(result).code == "PDF_NOT_PDF"


class _Unseekable(io.RawIOBase):
    """A pipe, say: zipfile then writes each member's sizes and CRC after its data (a data descriptor)."""

    def __init__(self, sink: io.BytesIO):
        self.sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self.sink.write(data)


@pytest.mark.parametrize("seekable", [True, False])
def test_sgr_scans_are_copied_into_our_zip_as_the_zip_holds_them(tmp_path, seekable):
    """Deflated or stored, sizes in the local header or in a data descriptor, an extra field in the
    local header: the built zip holds each member's very bytes, and every reader gets the scan back."""
    from flux_pmi.flows.build import FlowHeader, build
    from flux_pmi.schemas import validate_sgr_zip

    scans = [b"%PDF-1.4\n" + b"scan %d of a Cerfa form\n" % i * (400 * (i + 1)) + b"%%EOF\n" for i in range(3)]
    names = [f"{i:05d}/IMG{i:05d}.pdf" for i in (1, 2, 3)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf if seekable else _Unseekable(buf), "w") as z:
        z.writestr(INDEX_NAME, index_with(3, [b"/" + n.encode() for n in names]), zipfile.ZIP_DEFLATED)
        z.writestr(names[0], scans[0], zipfile.ZIP_DEFLATED)
        z.writestr(names[1], scans[1], zipfile.ZIP_STORED)
        with_extra = zipfile.ZipInfo(names[2], date_time=(2022, 1, 2, 19, 46, 0))
        with_extra.extra = b"\xfe\xca\x04\x00abcd"  # an unknown field: skipped, as zipfile skips it
        z.writestr(with_extra, scans[2], zipfile.ZIP_DEFLATED)
    records = parse(tmp_path, "SGR", "s.zip", buf.getvalue()).records
    assert [scan_bytes(r) for r in records] == scans
    out = tmp_path / "out"
    out.mkdir()
    header = FlowHeader(flow="SGR", department="081", numorg="811", siret="22810001800013",
                        business_date=date(2022, 1, 3), created_at=datetime(2022, 1, 3, 4, tzinfo=UTC))
    (part,) = build(header, records, out_dir=out, max_bytes=10_000_000, seq_for_part=lambda n: n)
    validate_sgr_zip(part.path)
    subprocess.run(["unzip", "-tqq", str(part.path)], check=True)  # Info-ZIP checks every CRC
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as source, zipfile.ZipFile(part.path) as built:
        for name, scan in zip(names, scans, strict=True):
            theirs, ours = source.getinfo(name), built.getinfo(name)
            assert built.read(name) == scan
            assert (ours.compress_type, ours.CRC, ours.compress_size) == (
                theirs.compress_type, theirs.CRC, theirs.compress_size)
            assert not ours.flag_bits & 0x08  # our sizes are in the local header
    assert part.path.stat().st_size < sum(len(s) for s in scans)  # deflated scans stay deflated


def test_sgr_member_copy_refuses_a_zip_cut_short_since_the_parse(tmp_path):
    from flux_pmi.flows.build import FlowHeader, build

    big = b"%PDF-1.4\n" + random.Random(3).randbytes(200_000) + b"\n%%EOF\n"
    data = make_zip([(INDEX_NAME, index_with(1, [b"/00001/IMG00001.pdf"])), ("00001/IMG00001.pdf", big)])
    (record,) = parse(tmp_path, "SGR", "s.zip", data).records
    with record.pdf.open("r+b") as fh:
        fh.truncate(record.member.offset + 1000)
    out = tmp_path / "out"
    out.mkdir()
    header = FlowHeader(flow="SGR", department="081", numorg="811", siret="22810001800013",
                        business_date=date(2022, 1, 3), created_at=datetime(2022, 1, 3, 4, tzinfo=UTC))
    with pytest.raises(InputFileError) as raised:
        build(header, [record], out_dir=out, max_bytes=10_000_000, seq_for_part=lambda n: n)
    assert raised.value.code == "PDF_CHANGED"
