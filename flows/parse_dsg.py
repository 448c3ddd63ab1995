"""DSG: one DSGCNAF XML document per declaration, into a DsgRecord.

The file is the record, so there are two ways to fail. A file that cannot be read as
XML we trust is quarantined (InputFileError): wrong encoding (XML_ENCODING), any
DOCTYPE, entity declaration or entity reference (XML_DTD: refused from the raw bytes
before a parser sees them, so nothing is ever expanded or fetched), not well-formed
(XML_MALFORMED, with the line; the parser's own text is not quoted, only its error
type, since it may echo content), a root that is not dsgcnaf:DSGCNAF (XML_ROOT; the
HubEE envelope `Agregat` is refused too). A readable document whose content fails a
check is a reject, at the line of the offending element (of its parent when it is
missing), like a bad CSV row.

Decisions: elements are looked up by namespace and name under their expected parent;
an expected element that appears twice is refused (FIELD_REPEATED: which one would we
send?), an element holding child elements where text is expected is TEXT_INVALID,
and unknown elements are ignored (never read). Values are stripped of surrounding XML
whitespace. A missing or empty RectifDPG / RectifNbEnfANaitre means "not rectified"
(false): the flow only has to say when it rectifies. Telephone, NomUsage, the address
parts other than CodeInsee, and PRESTATAIRE are optional.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from lxml import etree

from ..errors import InputFileError
from . import check
from .check import Invalid
from .parse import Limits, ParseResult, read_bytes, reject
from .records import DsgAddress, DsgRecord, Source

FLOW = "DSG"

DSGCNAF = "urn:cnamts:dsgcnaf"
BENEF = "urn:siram:beneficiaire"
PS = "urn:siram:partenairesante"
ROOT_TAG = f"{{{DSGCNAF}}}DSGCNAF"

ADDRESS_PARTS = (
    "Destinataire",
    "PointRemise",
    "Complement",
    "NumeroVoie",
    "IndiceRepetition",
    "TypeVoie",
    "NomVoie",
    "MentionDistribution",
    "CodePostal",
    "Localite",
    "CodePays",
    "CodeInsee",
)

# Free text that ends up in the départements' files: the formula-prefix rule applies.
FREE_TEXT = frozenset(
    {"NomFamille", "NomUsage", "Prenom", "PRESTATAIRE/NomFamille", "PRESTATAIRE/Prenom"}
    | (set(ADDRESS_PARTS) - {"CodePostal", "CodePays", "CodeInsee"})
)
REQUIRED = (
    "Identification",
    "Date",
    "NomFamille",
    "Prenom",
    "NIR",
    "CodeInsee",
    "DateNai",
    "Rang",
    "DateDPG",
    "NbEnfANaitre",
    "DateExamen",
    "PARTENAIRE/Numero",
)

_XML_DECL = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([^\"']*)[\"']")
_FOREIGN_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
# Any "&name" other than the five predefined entities is an entity reference.
_ENTITY_REF = re.compile(rb"&(?!(?:lt|gt|amp|quot|apos);)(?=[^\s#;&<])")
_AM_ID = re.compile(r"[A-Za-z0-9]{1,20}")


def parse_dsg(path: Path, *, display_name: str, today: date, limits: Limits) -> ParseResult:
    root = load_dsg(read_bytes(path, display_name, limits), display_name)
    result = ParseResult()
    doc = _Doc()
    try:
        result.records.append(dsg_record(root, doc, Source(display_name, 1), today))
    except Invalid as invalid:
        result.rejects.append(reject(FLOW, display_name, doc.line(invalid.field), invalid))
    return result


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def load_dsg(data: bytes, display_name: str) -> etree._Element:
    """Parse the bytes as a safe DSGCNAF document or raise InputFileError."""
    if data.startswith(_FOREIGN_BOMS):
        raise InputFileError(
            display_name, 1, "UTF-16/32 byte-order mark: UTF-8 expected", code="XML_ENCODING"
        )
    decl = _XML_DECL.match(data.removeprefix(b"\xef\xbb\xbf"))
    if decl and decl[1].lower() != b"utf-8":
        raise InputFileError(display_name, 1, "declared encoding is not UTF-8", code="XML_ENCODING")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise InputFileError(
            display_name, _line_of(data, nul), "NUL byte: UTF-8 expected", code="XML_ENCODING"
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(
            display_name, _line_of(data, exc.start), "bytes that are not UTF-8", code="XML_ENCODING"
        ) from None
    for marker in (b"<!DOCTYPE", b"<!ENTITY"):
        at = data.find(marker)
        if at >= 0:
            raise InputFileError(
                display_name, _line_of(data, at), "DOCTYPE or entity declaration refused", code="XML_DTD"
            )
    ref = _ENTITY_REF.search(data)
    if ref:
        raise InputFileError(
            display_name, _line_of(data, ref.start()), "entity reference refused", code="XML_DTD"
        )

    parser = etree.XMLParser(
        resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False, dtd_validation=False
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        kind = exc.error_log.last_error.type_name if exc.error_log.last_error else "syntax error"
        raise InputFileError(
            display_name, exc.lineno or None, f"not well-formed XML ({kind})", code="XML_MALFORMED"
        ) from None
    # Belt and braces: the byte scan above should have made these impossible.
    if root.getroottree().docinfo.doctype or next(root.iter(etree.Entity), None) is not None:
        raise InputFileError(display_name, 1, "DOCTYPE or entity refused", code="XML_DTD")
    if root.tag != ROOT_TAG:
        raise InputFileError(
            display_name, root.sourceline or 1, "root element is not dsgcnaf:DSGCNAF", code="XML_ROOT"
        )
    return root


class _Doc:
    """Field values and the line each came from, so a reject points at its element."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.lines: dict[str, int] = {}
        self.attrs: dict[str, str] = {}

    def line(self, field: str | None) -> int:
        return self.lines.get(field or "", 1)

    def element(self, parent: etree._Element | None, ns: str, name: str, field: str, at: int):
        """The single child `name` of `parent`, or None; records its line (or `at`)."""
        if parent is None:
            self.lines[field] = at
            return None
        found = parent.findall(f"{{{ns}}}{name}")
        if len(found) > 1:
            self.lines[field] = found[1].sourceline or at
            raise Invalid("FIELD_REPEATED", f"{field}: must appear once", field)
        if not found:
            self.lines[field] = parent.sourceline or at
            return None
        self.lines[field] = found[0].sourceline or at
        return found[0]

    def text(self, parent: etree._Element | None, ns: str, name: str, field: str, at: int) -> str:
        el = self.element(parent, ns, name, field, at)
        value = ""
        if el is not None:
            if len(el):
                raise Invalid("TEXT_INVALID", f"{field}: must hold text only", field)
            value = (el.text or "").strip(" \t\r\n")
            if field == "PARTENAIRE/Numero":
                self.attrs[field] = (el.get("R") or "").strip(" \t\r\n")
        self.values[field] = value
        return value


def dsg_record(root: etree._Element, doc: _Doc, source: Source, today: date) -> DsgRecord:
    """Extract and check the declaration (first failure raises Invalid), then build it."""
    top = root.sourceline or 1
    doc.text(root, DSGCNAF, "Identification", "Identification", top)
    doc.text(root, DSGCNAF, "Date", "Date", top)
    benef = doc.element(root, DSGCNAF, "BENEFICIAIRE", "BENEFICIAIRE", top)
    at = doc.lines["BENEFICIAIRE"]
    for name in ("NomFamille", "NomUsage", "Prenom", "NIR"):
        doc.text(benef, BENEF, name, name, at)
    address = doc.element(benef, BENEF, "Adresse", "Adresse", at)
    for name in ADDRESS_PARTS:
        doc.text(address, BENEF, name, name, doc.lines["Adresse"])
    for name in ("Telephone", "DateNai", "Rang"):
        doc.text(benef, BENEF, name, name, at)
    mat = doc.element(benef, BENEF, "MAT", "MAT", at)
    at_mat = doc.lines["MAT"]
    doc.text(mat, BENEF, "DateDPG", "DateDPG", at_mat)
    doc.text(mat, DSGCNAF, "RectifDPG", "RectifDPG", at_mat)
    doc.text(mat, BENEF, "NbEnfANaitre", "NbEnfANaitre", at_mat)
    doc.text(mat, DSGCNAF, "RectifNbEnfANaitre", "RectifNbEnfANaitre", at_mat)
    doc.text(mat, BENEF, "DateExamen", "DateExamen", at_mat)
    partner = doc.element(root, DSGCNAF, "PARTENAIRE", "PARTENAIRE", top)
    doc.text(partner, PS, "Numero", "PARTENAIRE/Numero", doc.lines["PARTENAIRE"])
    provider = doc.element(partner, PS, "PRESTATAIRE", "PRESTATAIRE", doc.lines["PARTENAIRE"])
    for name in ("Numero", "NomFamille", "Prenom"):
        doc.text(provider, PS, name, f"PRESTATAIRE/{name}", doc.lines["PRESTATAIRE"])

    v = doc.values
    check.check_texts(v, FREE_TEXT)
    for name in REQUIRED:
        check.require(v[name], name)

    check.check_identifier(v["Identification"], "Identification")
    received = check.not_future(check.parse_received_datetime(v["Date"], "Date"), "Date", today)
    check.check_nir(v["NIR"], None, "NIR")
    if v["CodePostal"]:
        check.check_postcode(v["CodePostal"], "CodePostal")
    check.check_commune(v["CodeInsee"], "CodeInsee")
    if v["Telephone"]:
        check.check_phone(v["Telephone"], "Telephone")
    born = check.not_future(check.parse_xs_date(v["DateNai"], "DateNai"), "DateNai", today)
    rang = check.parse_int(v["Rang"], "Rang", 1, 99)
    dpg = check.parse_xs_date(v["DateDPG"], "DateDPG")
    rectif_dpg = check.parse_bool(v["RectifDPG"] or "false", "RectifDPG")
    nb_enf = check.parse_int(v["NbEnfANaitre"], "NbEnfANaitre", 1, 9)
    rectif_nb = check.parse_bool(v["RectifNbEnfANaitre"] or "false", "RectifNbEnfANaitre")
    examen = check.not_future(check.parse_xs_date(v["DateExamen"], "DateExamen"), "DateExamen", today)
    check.check_pregnancy(dpg, examen, "DateDPG", "DateExamen")
    check.check_age(born, born, examen, "DateNai", "DateExamen")
    check.check_nir(v["NIR"], born, "NIR")
    kind = doc.attrs.get("PARTENAIRE/Numero", "")
    check.check_ps_id(v["PARTENAIRE/Numero"], kind, "PARTENAIRE/Numero")
    if v["PRESTATAIRE/Numero"] and not _AM_ID.fullmatch(v["PRESTATAIRE/Numero"]):
        raise Invalid(
            "VALUE_RANGE", "PRESTATAIRE/Numero: must be 1 to 20 letters or digits", "PRESTATAIRE/Numero"
        )

    return DsgRecord(
        source=source,
        received=received,
        identification=v["Identification"],
        date=v["Date"],
        nom_famille=v["NomFamille"],
        nom_usage=v["NomUsage"],
        prenom=v["Prenom"],
        nir=v["NIR"],
        adresse=DsgAddress(
            destinataire=v["Destinataire"],
            point_remise=v["PointRemise"],
            complement=v["Complement"],
            numero_voie=v["NumeroVoie"],
            indice_repetition=v["IndiceRepetition"],
            type_voie=v["TypeVoie"],
            nom_voie=v["NomVoie"],
            mention_distribution=v["MentionDistribution"],
            code_postal=v["CodePostal"],
            localite=v["Localite"],
            code_pays=v["CodePays"],
            code_insee=v["CodeInsee"],
        ),
        telephone=v["Telephone"],
        date_nai=v["DateNai"],
        rang=rang,
        date_dpg=v["DateDPG"],
        rectif_dpg=rectif_dpg,
        nb_enf_a_naitre=nb_enf,
        rectif_nb_enf_a_naitre=rectif_nb,
        date_examen=v["DateExamen"],
        ps_numero=v["PARTENAIRE/Numero"],
        ps_numero_type=kind,
        ps_numero_am=v["PRESTATAIRE/Numero"],
        ps_nom=v["PRESTATAIRE/NomFamille"],
        ps_prenom=v["PRESTATAIRE/Prenom"],
    )
