"""DSG: DGE envelopes (Assurance Maladie's exchange platform) of DSGCNAF declarations, into DsgRecords.

The primary shape is the DGE envelope HubEE's DSG.xml shows: root `Agregat`, one
`ns3:Entete` (PGMD_Profil SORTIEDGE, NbDoc, Recepteur: the département's SIRET and
quality CGDnnn), then one `ns3:Document` per declaration (Mindex, Trace, Donnee holding a
`dsgcnaf:DSGCNAF`). Each Document is one record, checked and routed on its own
CodeInsee: an envelope may hold declarations for several départements. The Recepteur is
kept on the record only so that the router can warn when it disagrees with the route
(ADDRESSING_MISMATCH); it never decides. A bare `dsgcnaf:DSGCNAF` document (the shape this
project first defined) is still read, as the documented secondary shape.

Two ways to fail. A file that cannot be read as XML we trust is quarantined
(InputFileError, see xmlread.load_xml): encoding, DTD/entities, not well-formed, a root
that is neither (XML_ROOT), an envelope frame that is wrong (XML_SHAPE: no or two Entete,
a profile other than SORTIEDGE, an NbDoc that disagrees with the Documents). A readable
declaration whose content fails a check is a reject at the line of the offending element
(of its parent when it is missing); the other Documents go on.

Decisions: a missing or empty RectifDPG / RectifNbEnfANaitre means "not rectified"
(false). NIR, Telephone, NomUsage, the address parts other than CodeInsee, and PRESTATAIRE
are optional: annexe 1 allows them, the real sample lacks the NIR and the phone; when
present they are checked and carried. Nothing else of the envelope (Mindex, Trace,
Producteur) is carried: the builder writes its own.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from lxml import etree

from ..core.errors import InputFileError
from . import check
from .check import Invalid
from .parse_common import Limits, ParseResult, read_bytes, reject
from .records import DsgAddress, DsgRecord, Source
from .xmlread import XmlFields, line_at, load_xml, text_of

FLOW = "DSG"
DGE = "urn:ops:rncps:dge"
ENVELOPE_TAGS = ("Agregat", f"{{{DGE}}}Agregat")

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
    "CodeInsee",
    "DateNai",
    "Rang",
    "DateDPG",
    "NbEnfANaitre",
    "DateExamen",
    "PARTENAIRE/Numero",
)

_AM_ID = re.compile(r"[A-Za-z0-9]{1,20}")


_QUALITE = re.compile(r"CGD([0-9]{2}[0-9AB]|[0-9]{2}M|97[0-9])")


def parse_dsg(path: Path, *, display_name: str, today: date, limits: Limits) -> ParseResult:
    root = load_xml(read_bytes(path, display_name, limits), display_name)
    result = ParseResult()
    if root.tag == ROOT_TAG:
        _one(result, root, Source(display_name, 1), today, "", "")
        return result
    if root.tag not in ENVELOPE_TAGS:
        raise InputFileError(
            display_name, line_at(root, 1), "root element is neither Agregat nor dsgcnaf:DSGCNAF",
            code="XML_ROOT",
        )
    addressed_to, siret = _entete(root, display_name)
    documents = root.findall(f"{{{DGE}}}Document")
    if len(documents) > limits.max_records_per_file:
        raise InputFileError(
            display_name, None, f"more than {limits.max_records_per_file} records", code="TOO_LARGE"
        )
    for document in documents:
        line = line_at(document, 1)
        found = document.findall(f"{{{DGE}}}Donnee/{ROOT_TAG}")
        if len(found) != 1:
            what = "no" if not found else "more than one"
            result.rejects.append(
                reject(FLOW, display_name, line,
                       Invalid("FIELD_MISSING" if not found else "FIELD_REPEATED",
                               f"Document: {what} Donnee/dsgcnaf:DSGCNAF", "Donnee"))
            )
            continue
        _one(result, found[0], Source(display_name, line), today, addressed_to, siret)
    return result


def _one(result: ParseResult, root: etree._Element, source: Source, today: date, addressed_to: str,
         siret: str) -> None:
    doc = XmlFields()
    try:
        result.records.append(dsg_record(root, doc, source, today, addressed_to=addressed_to, siret=siret))
    except Invalid as invalid:
        result.rejects.append(reject(FLOW, source.file, doc.line(invalid.field), invalid))


def _entete(root: etree._Element, display_name: str) -> tuple[str, str]:
    """Check the envelope's frame; return its Recepteur (département code from CGDnnn, SIRET)."""
    entetes = root.findall(f"{{{DGE}}}Entete")
    if len(entetes) != 1:
        raise InputFileError(display_name, line_at(root, 1), "the envelope needs exactly one Entete",
                             code="XML_SHAPE")
    entete = entetes[0]
    at = line_at(entete, 1)
    if entete.get("PGMD_Profil") != "SORTIEDGE":
        raise InputFileError(display_name, at, "Entete: PGMD_Profil must be SORTIEDGE", code="XML_SHAPE")
    nbdoc_el = entete.find(f"{{{DGE}}}NbDoc")
    nbdoc = text_of(nbdoc_el)
    count = len(root.findall(f"{{{DGE}}}Document"))
    # Bounded before int(): a 5000-digit count made int() raise ValueError and crash the night.
    if nbdoc and not (nbdoc.isascii() and nbdoc.isdigit() and len(nbdoc) <= 9 and int(nbdoc) == count):
        at = line_at(nbdoc_el, at)
        raise InputFileError(display_name, at, f"Entete: NbDoc disagrees with the {count} Document(s)",
                             code="XML_SHAPE")
    qualite = (entete.findtext(f"{{{DGE}}}Recepteur/{{{DGE}}}Qualite") or "").strip()
    m = _QUALITE.fullmatch(qualite)
    siret = ""
    for ident in entete.findall(f"{{{DGE}}}Recepteur/{{{DGE}}}Identite"):
        if ident.get("R") == "SIRET":
            siret = (ident.text or "").strip()
    return (m[1] if m else ""), (siret if siret.isascii() and siret.isdigit() and len(siret) == 14 else "")


def load_dsg(data: bytes, display_name: str) -> etree._Element:
    """A bare DSGCNAF document (kept for callers of the secondary shape)."""
    root = load_xml(data, display_name)
    if root.tag != ROOT_TAG:
        raise InputFileError(
            display_name, line_at(root, 1), "root element is not dsgcnaf:DSGCNAF", code="XML_ROOT"
        )
    return root


def dsg_record(root: etree._Element, doc: XmlFields, source: Source, today: date, *, addressed_to: str = "",
               siret: str = "") -> DsgRecord:
    """Extract and check the declaration (first failure raises Invalid), then build it."""
    top = line_at(root, 1)
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
    doc.text(partner, PS, "Numero", "PARTENAIRE/Numero", doc.lines["PARTENAIRE"], attr="R")
    provider = doc.element(partner, PS, "PRESTATAIRE", "PRESTATAIRE", doc.lines["PARTENAIRE"])
    for name in ("Numero", "NomFamille", "Prenom"):
        doc.text(provider, PS, name, f"PRESTATAIRE/{name}", doc.lines["PRESTATAIRE"])

    v = doc.values
    check.check_lengths(v)
    check.check_texts(v, FREE_TEXT)
    for name in REQUIRED:
        check.require(v[name], name)

    check.check_identifier(v["Identification"], "Identification")
    received = check.not_future(check.parse_received_datetime(v["Date"], "Date"), "Date", today)
    if v["NIR"]:
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
    if v["NIR"]:
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
        addressed_to=addressed_to,
        addressed_siret=siret,
    )
