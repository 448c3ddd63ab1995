"""Read one decrypted flow file (GRO, DSG or SGR) into rows and scan references.

This is where bytes from outside first meet the département's systems, so it trusts
nothing, including our own sender's output:

- The flow is told by the content, never by the file name: a zip (`PK\\x03\\x04`) is an
  SGR; an XML `Racine` whose APPLIEME is CRI is a GRO; an `Agregat` is a DSG.
- XML is parsed only by the hardened parser of `flux_pmi.schemas` (no DTD, no entity,
  no network, no huge tree, a DOCTYPE refused) and validated against our XSDs before a
  single value is read. DTD and entity tricks come out as XML_DTD, never expanded.
- An SGR zip is judged on its central directory before any member is read: names
  (no absolute path, `..`, backslash, drive letter), member count, declared sizes and
  compression ratio. Members are then read as bounded streams, so a header that lies
  about a size cannot make us decompress more than it declared. Nothing is written to
  disk here and no name from the zip ever becomes a file name.
- The real HubEE sample puts its PDF at the zip root while its index says
  `/00001/IMG00001.pdf`: a NOMIMAGED that names no member is resolved by its base name,
  provided exactly one member has it.
- Every scan is read through in full here (size, CRC, `%PDF-`), so a file that will not
  write out is refused now, when the receiver decides between OK and KO.
- Error messages carry a code, a line or a rank, never a value from the file and never
  a member name (a scan's name could be a person's).

Each record gets a `record_key` built from the file's digest and its rank, not from
anything the file names: it heads every row and names the record's scan folder.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from io import BytesIO

from lxml import etree

from .. import schemas
from ..core import errors
from ..core.errors import SchemaError
from ..flows import codes

__all__ = [
    "CODES",
    "COLUMNS",
    "ExtractError",
    "Extracted",
    "Scan",
    "ZipLimits",
    "extract",
    "open_scan",
]

CODES = frozenset(
    {
        "SCHEMA",
        "XML_DTD",
        "ZIP_TRAVERSAL",
        "ZIP_BOMB",
        "ZIP_INVALID",
        "PDF_NOT_PDF",
        "SCAN_MISSING",
        "UNKNOWN_FORMAT",
        "ENCODING",
    }
)

ZIP_MAGIC = b"PK\x03\x04"
PDF_MAGIC = b"%PDF-"

DGE = "urn:ops:rncps:dge"
DSGCNAF = "urn:cnamts:dsgcnaf"
BENEF = "urn:siram:beneficiaire"
PS = "urn:siram:partenairesante"
_NS = {"dge": DGE, "c": DSGCNAF, "b": BENEF, "p": PS}

# Our DSG Entete/Identification; HubEE's own (CNAF.DGESDSGA.P22AAAA3) does not match and
# then carries no sequence number.
_DSG_IDENTIFICATION = re.compile(
    r"CNAF\.DGESDSGA\.(?P<department>[0-9A-Z]{3})\.(?P<date>[0-9]{8})\.(?P<seq>[0-9]{6,})"
)
_SGR_INDEX = re.compile(r"CG_[^/]*_pmiich\.xml")
_DRIVE = re.compile(r"[A-Za-z]:")
RECORD_KEY = re.compile(r"[0-9a-f]{12}-[0-9]{5,}")

# Below this declared size a member is not judged on its ratio: a few hundred KB of
# repetitive XML or a small blank page can compress very well and still be harmless;
# the size caps bound what any member can cost.
_RATIO_FLOOR = 1 << 20
_CHUNK = 1 << 16
_ALLOWED_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
# What zipfile may raise on a damaged or hostile archive; none of them carries our data.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    RuntimeError,
    NotImplementedError,
    ValueError,
    struct.error,
)

# libxml2 error types (as schemas reports them) that mean a DTD or entity was tried.
_DTD_MARKERS = (
    "DOCTYPE",
    "RESOURCE_LIMIT",
    "UNDECLARED_ENTITY",
    "ENTITY_LOOP",
    "EXT_ENTITY",
    "ENTITY_PE",
    "PEREF",
    "IO_",
)
_ENCODING_MARKERS = ("ENCODING", "INVALID_CHAR")


@dataclass(frozen=True)
class ZipLimits:
    """What an SGR zip may cost us, judged on its central directory and again when read."""

    max_members: int = 10_000
    max_total_bytes: int = 512 * 1024 * 1024  # sum of uncompressed sizes
    max_member_bytes: int = 32 * 1024 * 1024
    max_ratio: float = 100.0  # uncompressed / compressed per member (zip bomb)


class ExtractError(errors.FluxError):
    """A delivered file cannot be read. `code` is one of CODES; `message` has no content value."""

    def __init__(self, code: str, message: str):
        if code not in CODES:
            raise ValueError(f"unknown extract error code {code!r}")
        self.code, self.message = code, message
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True)
class Scan:
    record_key: str
    member: str  # the zip member holding the PDF (never used as a file name)
    size: int  # its uncompressed size, as declared and as read


@dataclass(frozen=True)
class Extracted:
    flow: str  # "DSG" | "SGR" | "GRO", detected from content
    department: str | None  # IDEPARTE (GRO/SGR) / DSG Recepteur Qualite CGDnnn
    seq: int | None  # NUMSEQFLUX / from the DSG Identification; None when absent (HubEE samples)
    business_date: date | None  # DTREF / from the DSG Identification or Entete Temps
    rows: list[dict[str, str]]  # one per record, keys = COLUMNS[flow], all str ("" when absent)
    scans: list[Scan]  # SGR only, in record order
    content_sha256: str  # hex digest of the plaintext


# The columns that open every Cristal-family row (GRO, SGR): the record and the case it is.
_CRISTAL_CASE = ("record_key", "seq", "business_date", "numorg", "matricule", "allocataire", "departement")

COLUMNS: dict[str, tuple[str, ...]] = {
    "GRO": (
        *_CRISTAL_CASE,
        "qual",
        "nom_usage",
        "nom_famille",
        "prenoms",
        "date_naissance",
        "type_date_naissance",
        "commune_naissance",
        "situation_pro",
        "adresse_type",
        "adresse_date_effet",
        "adresse_etat",
        "compl_identite",
        "compl_adresse",
        "numero_voie",
        "type_voie",
        "nom_voie",
        "lieu_dit",
        "code_commune",
        "code_postal",
        "commune",
        "motif",
        "motif_libelle",
        "nb_enfants_charge",
        "date_declaration",
        "date_debut_grossesse",
        "mutation_numorg",
        "mutation_matricule",
        "anomalie",
    ),
    "DSG": (
        "record_key",
        "seq",
        "business_date",
        "identification",
        "date_declaration",
        "nom_famille",
        "nom_usage",
        "prenom",
        "nir",
        "telephone",
        "adresse_destinataire",
        "point_remise",
        "complement",
        "numero_voie",
        "indice_repetition",
        "type_voie",
        "nom_voie",
        "mention_distribution",
        "code_postal",
        "localite",
        "code_pays",
        "code_insee",
        "date_naissance",
        "rang",
        "date_debut_grossesse",
        "rectif_date_debut",
        "nb_enfants_a_naitre",
        "rectif_nb_enfants",
        "date_examen",
        "ps_numero",
        "ps_numero_type",
        "ps_numero_am",
        "ps_nom",
        "ps_prenom",
    ),
    "SGR": (
        *_CRISTAL_CASE,
        "date_scan",
        "scan_file",
        "scan_size",
    ),
}


def scan_file(record_key: str) -> str:
    """Where write_outputs puts a record's scan, relative to the output folder."""
    return f"scans/{record_key}/scan.pdf"


# --- entry points ------------------------------------------------------------------------


def extract(plain: bytes, *, limits: ZipLimits = ZipLimits()) -> Extracted:
    """Detect the flow of `plain`, check it whole and return its rows (and scans for SGR)."""
    plain = bytes(plain)
    digest = hashlib.sha256(plain).hexdigest()
    if plain.startswith(ZIP_MAGIC):
        return _extract_sgr(plain, digest, limits)
    if not _looks_like_xml(plain):
        raise ExtractError("UNKNOWN_FORMAT", "neither an SGR zip nor an XML document")
    tree = _parse("document", plain)
    root = tree.getroot()
    if root.tag == "Racine" and _text(root, "IdentificationFlux/APPLIEME") == "CRI":
        _validate("GRO", plain)
        return _extract_gro(root, digest)
    if root.tag == "Agregat":
        _validate("DSG", plain)
        return _extract_dsg(root, digest)
    raise ExtractError("UNKNOWN_FORMAT", "XML root is not a GRO Racine nor a DSG Agregat")


def open_scan(plain: bytes, scan: Scan, *, limits: ZipLimits = ZipLimits()) -> bytes:
    """The bytes of one scan of an SGR zip, read bounded and checked again to be a PDF."""
    with open_zip(bytes(plain)) as archive:
        return b"".join(scan_chunks(archive, scan, min(scan.size, limits.max_member_bytes)))


def open_zip(plain: bytes) -> zipfile.ZipFile:
    """The zip in `plain`, read from memory; its members are to be read via scan_chunks."""
    try:
        return zipfile.ZipFile(BytesIO(plain))
    except _ZIP_ERRORS as exc:
        raise ExtractError("ZIP_INVALID", f"not a readable zip ({type(exc).__name__})") from None


def scan_chunks(archive: zipfile.ZipFile, scan: Scan, cap: int) -> Iterator[bytes]:
    """Stream one scan named by `scan` (as extract() found it), at most `cap` bytes."""
    try:
        info = archive.getinfo(scan.member)
    except KeyError:
        raise ExtractError("SCAN_MISSING", f"record {scan.record_key}: its scan is not in the zip") from None
    _check_name(info, 0)
    _check_member(info, 0)
    if info.file_size != scan.size:
        raise ExtractError("ZIP_INVALID", f"record {scan.record_key}: the scan's size changed")
    return _member_chunks(archive, info, cap, pdf=True, what=f"record {scan.record_key}: scan")


# --- XML -----------------------------------------------------------------------------------


def _looks_like_xml(data: bytes) -> bool:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16: let the parser judge it
        return True
    return data.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n").startswith(b"<")


def _parse(what: str, data: bytes) -> etree._ElementTree:
    # schemas._parse is the hardened parser validate_bytes uses; validate_bytes does not
    # hand its tree back, and the root must be seen to know which schema applies.
    try:
        return schemas._parse(what, BytesIO(data))
    except SchemaError as exc:
        text = " ".join(exc.errors)
        if any(marker in text for marker in _DTD_MARKERS):
            code = "XML_DTD"
        elif any(marker in text for marker in _ENCODING_MARKERS):
            code = "ENCODING"
        else:
            code = "SCHEMA"
        raise ExtractError(code, f"{what}: " + "; ".join(exc.errors[:5])) from None


def _validate(kind: str, data: bytes) -> None:
    try:
        schemas.validate_bytes(kind, data)
    except SchemaError as exc:
        # schemas builds these messages without any value from the document.
        raise ExtractError("SCHEMA", f"{kind}: does not validate: " + "; ".join(exc.errors[:5])) from None


def _text(element: etree._Element | None, path: str) -> str:
    if element is None:
        return ""
    # Cristal pads some fields with spaces (TYPEPARTE "CG  ", LIBANO " DOSSIER ...").
    return (element.findtext(path, default="", namespaces=_NS) or "").strip()


def _date(text: str, what: str) -> date | None:
    if not text:
        return None
    try:
        # xs:date may carry an offset (2021-12-03+01:00): the day is the first 10 characters.
        return date.fromisoformat(text[:10])
    except ValueError:
        raise ExtractError("SCHEMA", f"{what} is not a date") from None


def _seq(text: str) -> int | None:
    return int(text) if text else None


def _check_count(declared: str, found: int, what: str) -> None:
    # A count that disagrees with the records means a truncated or altered file.
    if declared and int(declared) != found:
        raise ExtractError("SCHEMA", f"{what} declares {int(declared)} record(s) but holds {found}")


def _record_key(digest: str, index: int) -> str:
    return f"{digest[:12]}-{index:05d}"


def _one_department(values: list[str], what: str) -> str | None:
    found = set(values)
    if len(found) > 1:
        raise ExtractError("SCHEMA", f"{what}: the records name {len(found)} different départements")
    return found.pop() if found else None


def _common(key: str, seq: int | None, business: date | None) -> dict[str, str]:
    return {
        "record_key": key,
        "seq": "" if seq is None else str(seq),
        "business_date": "" if business is None else business.isoformat(),
    }


def _cristal_case(case: etree._Element) -> dict[str, str]:
    matricule = _text(case, "IdentificationDossier/Organisme/MATRICULE")
    return {
        "numorg": _text(case, "IdentificationDossier/Organisme/NUMORG"),
        "matricule": matricule,
        "allocataire": matricule[:7],
        "departement": _text(case, "IdentificationDossier/Partenaire/IDEPARTE"),
    }


def _extract_gro(root: etree._Element, digest: str) -> Extracted:
    seq = _seq(_text(root, "IdentificationFlux/NUMSEQFLUX"))
    business = _date(_text(root, "IdentificationFlux/DTREF"), "GRO DTREF")
    cases = root.findall("InfoSuiviGrossessePMI")
    _check_count(_text(root, "TransmissionFlux/NBTOTDOSPMITRANSM"), len(cases), "GRO")
    rows: list[dict[str, str]] = []
    for index, case in enumerate(cases, 1):
        # An Anomalie qualifies the case it follows (Cristal's layout, as in HubEE's sample).
        libano: list[str] = []
        sibling = case.getnext()
        while sibling is not None and (sibling.tag == "Anomalie" or not isinstance(sibling.tag, str)):
            if sibling.tag == "Anomalie":  # (comments and processing instructions are skipped)
                libano.extend((e.text or "").strip() for e in sibling.findall("LIBANO"))
            sibling = sibling.getnext()
        anomalie = " | ".join(text for text in libano if text)
        person = case.find("DonneesAdministratives/Personne")
        address = case.find("DonneesAdministratives/Adresse")
        pmi = case.find("DossierPMI")
        motif = _text(pmi, "MOTITRANSMDOSPMI")
        row = _common(_record_key(digest, index), seq, business) | _cristal_case(case)
        row |= {
            "qual": _text(person, "QUAL"),
            "nom_usage": _text(person, "NOM"),
            "nom_famille": _text(person, "NOMNAI"),
            "prenoms": _text(person, "PRENOMS"),
            "date_naissance": _text(person, "DTNAI"),
            "type_date_naissance": _text(person, "TYPEDTNAI"),
            "commune_naissance": _text(person, "NOMCOMNAI"),
            "situation_pro": _text(person, "SITUPRO"),
            "adresse_type": _text(address, "TroncCommunAdresse/TYPEADR"),
            "adresse_date_effet": _text(address, "TroncCommunAdresse/DTEMM"),
            "adresse_etat": _text(address, "TroncCommunAdresse/ETATADR"),
            "compl_identite": _text(address, "AdresseDetailleeFrance/COMPLIDEADR"),
            "compl_adresse": _text(address, "AdresseDetailleeFrance/COMPLADR"),
            "numero_voie": _text(address, "AdresseDetailleeFrance/NUMVOIE"),
            "type_voie": _text(address, "AdresseDetailleeFrance/LIBTYPEVOIE"),
            "nom_voie": _text(address, "AdresseDetailleeFrance/NOMVOIE"),
            "lieu_dit": _text(address, "AdresseDetailleeFrance/LIEUDIST"),
            "code_commune": _text(address, "AdresseDetailleeFrance/NUMCOM"),
            "code_postal": _text(address, "AdresseDetailleeFrance/CODEPOS"),
            "commune": _text(address, "AdresseDetailleeFrance/NOMCOM"),
            "motif": motif,
            "motif_libelle": codes.MOTIF.get(motif, ""),
            "nb_enfants_charge": _text(pmi, "NBENFCHAPF"),
            "date_declaration": _text(pmi, "DTDECLGRO"),
            "date_debut_grossesse": _text(pmi, "DTDEBGRO"),
            "mutation_numorg": _text(pmi, "MutationPrenante/NUMORG"),
            "mutation_matricule": _text(pmi, "MutationPrenante/MATRICULE"),
            "anomalie": anomalie,
        }
        rows.append(_ordered("GRO", row))
    department = _one_department([r["departement"] for r in rows], "GRO")
    return Extracted("GRO", department, seq, business, rows, [], digest)


def _extract_dsg(root: etree._Element, digest: str) -> Extracted:
    entete = root.find("dge:Entete", _NS)
    identification = _text(entete, "dge:Identification")
    qualite = _text(entete, "dge:Recepteur/dge:Qualite")
    department = qualite[3:] if qualite.startswith("CGD") else None
    ours = _DSG_IDENTIFICATION.fullmatch(identification)
    if ours:
        seq: int | None = int(ours["seq"])
        business: date | None
        try:
            business = date(int(ours["date"][:4]), int(ours["date"][4:6]), int(ours["date"][6:]))
        except ValueError:
            raise ExtractError("SCHEMA", "DSG Entete Identification carries an impossible date") from None
        if ours["department"] != department:
            raise ExtractError(
                "SCHEMA", "DSG Entete Identification and Recepteur name different départements"
            )
    else:
        seq = None
        business = _date(_text(entete, "dge:Temps"), "DSG Entete Temps")
    documents = root.findall("dge:Document", _NS)
    _check_count(_text(entete, "dge:NbDoc"), len(documents), "DSG")
    rows: list[dict[str, str]] = []
    for index, document in enumerate(documents, 1):
        d = document.find("dge:Donnee/c:DSGCNAF", _NS)
        ps = None if d is None else d.find("c:PARTENAIRE/p:Numero", _NS)
        if d is None or ps is None:  # the schema requires both: a validated document has them
            raise ExtractError("SCHEMA", f"DSG Document {index} has no DSGCNAF or no PARTENAIRE Numero")
        row = _common(_record_key(digest, index), seq, business)
        row |= {
            "identification": _text(d, "c:Identification"),
            "date_declaration": _text(d, "c:Date"),
            "nom_famille": _text(d, "c:BENEFICIAIRE/b:NomFamille"),
            "nom_usage": _text(d, "c:BENEFICIAIRE/b:NomUsage"),
            "prenom": _text(d, "c:BENEFICIAIRE/b:Prenom"),
            "nir": _text(d, "c:BENEFICIAIRE/b:NIR"),
            "telephone": _text(d, "c:BENEFICIAIRE/b:Telephone"),
            "adresse_destinataire": _text(d, "c:BENEFICIAIRE/b:Adresse/b:Destinataire"),
            "point_remise": _text(d, "c:BENEFICIAIRE/b:Adresse/b:PointRemise"),
            "complement": _text(d, "c:BENEFICIAIRE/b:Adresse/b:Complement"),
            "numero_voie": _text(d, "c:BENEFICIAIRE/b:Adresse/b:NumeroVoie"),
            "indice_repetition": _text(d, "c:BENEFICIAIRE/b:Adresse/b:IndiceRepetition"),
            "type_voie": _text(d, "c:BENEFICIAIRE/b:Adresse/b:TypeVoie"),
            "nom_voie": _text(d, "c:BENEFICIAIRE/b:Adresse/b:NomVoie"),
            "mention_distribution": _text(d, "c:BENEFICIAIRE/b:Adresse/b:MentionDistribution"),
            "code_postal": _text(d, "c:BENEFICIAIRE/b:Adresse/b:CodePostal"),
            "localite": _text(d, "c:BENEFICIAIRE/b:Adresse/b:Localite"),
            "code_pays": _text(d, "c:BENEFICIAIRE/b:Adresse/b:CodePays"),
            "code_insee": _text(d, "c:BENEFICIAIRE/b:Adresse/b:CodeInsee"),
            "date_naissance": _text(d, "c:BENEFICIAIRE/b:DateNai"),
            "rang": _text(d, "c:BENEFICIAIRE/b:Rang"),
            "date_debut_grossesse": _text(d, "c:BENEFICIAIRE/b:MAT/b:DateDPG"),
            "rectif_date_debut": _text(d, "c:BENEFICIAIRE/b:MAT/c:RectifDPG"),
            "nb_enfants_a_naitre": _text(d, "c:BENEFICIAIRE/b:MAT/b:NbEnfANaitre"),
            "rectif_nb_enfants": _text(d, "c:BENEFICIAIRE/b:MAT/c:RectifNbEnfANaitre"),
            "date_examen": _text(d, "c:BENEFICIAIRE/b:MAT/b:DateExamen"),
            "ps_numero": (ps.text or "").strip(),
            "ps_numero_type": ps.get("R", "").strip(),
            "ps_numero_am": _text(d, "c:PARTENAIRE/p:PRESTATAIRE/p:Numero"),
            "ps_nom": _text(d, "c:PARTENAIRE/p:PRESTATAIRE/p:NomFamille"),
            "ps_prenom": _text(d, "c:PARTENAIRE/p:PRESTATAIRE/p:Prenom"),
        }
        rows.append(_ordered("DSG", row))
    return Extracted("DSG", department, seq, business, rows, [], digest)


def _ordered(flow: str, row: dict[str, str]) -> dict[str, str]:
    # A column added to COLUMNS but not filled (or the reverse) is a bug: fail loudly.
    if set(row) != set(COLUMNS[flow]):
        raise AssertionError(f"{flow} row keys differ from COLUMNS")
    return {name: row[name] for name in COLUMNS[flow]}


# --- SGR zip -------------------------------------------------------------------------------


def _extract_sgr(plain: bytes, digest: str, limits: ZipLimits) -> Extracted:
    with open_zip(plain) as archive:
        infos = _checked_infos(archive, limits)
        indexes = [i for i in infos if not i.is_dir() and _SGR_INDEX.fullmatch(_basename(i.filename))]
        if len(indexes) != 1:
            raise ExtractError(
                "ZIP_INVALID", f"expected exactly one CG_*_pmiich.xml index, found {len(indexes)}"
            )
        index = indexes[0]
        # The index keeps its own XML declaration (ISO-8859-1): the parser decodes it.
        data = b"".join(
            _member_chunks(
                archive, index, min(index.file_size, limits.max_member_bytes), pdf=False, what="index"
            )
        )
        root = _parse("SGR index", data).getroot()
        _validate("SGR", data)
        seq = _seq(_text(root, "IdentificationFlux/NUMSEQFLUX"))
        business = _date(_text(root, "IdentificationFlux/DTREF"), "SGR DTREF")
        cases = root.findall("InfoSuiviGrossessePMI")
        _check_count(_text(root, "TransmissionFlux/NBTOTDOSPMITRANSM"), len(cases), "SGR")

        files = [i for i in infos if not i.is_dir() and i is not index]
        by_name = {i.filename: i for i in files}
        by_base: dict[str, list[zipfile.ZipInfo]] = {}
        for info in files:
            by_base.setdefault(_basename(info.filename), []).append(info)

        rows: list[dict[str, str]] = []
        scans: list[Scan] = []
        used: set[str] = set()
        for rank, case in enumerate(cases, 1):
            key = _record_key(digest, rank)
            info = _resolve(_text(case, "DossierPMI/NOMIMAGED"), by_name, by_base, rank)
            if info.filename in used:
                raise ExtractError("ZIP_INVALID", f"case {rank}: its scan is already another case's")
            used.add(info.filename)
            scan = Scan(key, info.filename, info.file_size)
            # Read it through now (size, CRC, %PDF-): a scan that cannot be written out
            # must fail here, before the receiver answers OK.
            for _chunk in _member_chunks(
                archive,
                info,
                min(info.file_size, limits.max_member_bytes),
                pdf=True,
                what=f"case {rank}: scan",
            ):
                pass
            row = _common(key, seq, business) | _cristal_case(case)
            row |= {
                "date_scan": _text(case, "DossierPMI/DTCREASDP"),
                "scan_file": scan_file(key),
                "scan_size": str(info.file_size),
            }
            rows.append(_ordered("SGR", row))
            scans.append(scan)
    department = _one_department([r["departement"] for r in rows], "SGR")
    return Extracted("SGR", department, seq, business, rows, scans, digest)


def _basename(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


def _resolve(
    nomimaged: str,
    by_name: dict[str, zipfile.ZipInfo],
    by_base: dict[str, list[zipfile.ZipInfo]],
    rank: int,
) -> zipfile.ZipInfo:
    exact = by_name.get(nomimaged.removeprefix("/"))
    if exact is not None:
        return exact
    # HubEE's sample: the index names /00001/IMG00001.pdf, the zip holds IMG00001.pdf.
    candidates = by_base.get(_basename(nomimaged), [])
    if len(candidates) == 1:
        return candidates[0]
    why = "names no member of the zip" if not candidates else "matches several members"
    raise ExtractError("SCAN_MISSING", f"case {rank}: NOMIMAGED {why}")


def _checked_infos(archive: zipfile.ZipFile, limits: ZipLimits) -> list[zipfile.ZipInfo]:
    """The central directory, refused as a whole before any member is read."""
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise ExtractError("ZIP_BOMB", f"{len(infos)} members, more than {limits.max_members}")
    for n, info in enumerate(infos, 1):
        _check_name(info, n)
    seen: set[str] = set()
    total = 0
    for n, info in enumerate(infos, 1):
        if info.filename in seen:
            # Two members under one name: which one a reader gets depends on the reader.
            raise ExtractError("ZIP_INVALID", f"member {n}: its name is used twice")
        seen.add(info.filename)
        _check_member(info, n)
        if info.file_size > limits.max_member_bytes:
            raise ExtractError("ZIP_BOMB", f"member {n}: declares more than {limits.max_member_bytes} bytes")
        if info.file_size >= _RATIO_FLOOR and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise ExtractError("ZIP_BOMB", f"member {n}: compression ratio above {limits.max_ratio:g}")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise ExtractError("ZIP_BOMB", f"members declare more than {limits.max_total_bytes} bytes in all")
    return infos


def _check_name(info: zipfile.ZipInfo, n: int) -> None:
    # The name itself is never echoed: it could be a person's name.
    name = info.orig_filename
    where = f"member {n}" if n else "member"
    if not name or name != info.filename or any(ord(c) < 32 for c in name):
        raise ExtractError("ZIP_TRAVERSAL", f"{where}: name is empty or holds control characters")
    if name.startswith("/") or _DRIVE.match(name):
        raise ExtractError("ZIP_TRAVERSAL", f"{where}: name is an absolute path")
    if "\\" in name:
        raise ExtractError("ZIP_TRAVERSAL", f"{where}: name holds a backslash")
    parts = name[:-1].split("/") if info.is_dir() else name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ExtractError("ZIP_TRAVERSAL", f"{where}: name holds an empty, '.' or '..' component")


def _check_member(info: zipfile.ZipInfo, n: int) -> None:
    where = f"member {n}" if n else "member"
    if info.flag_bits & 0x1:
        raise ExtractError("ZIP_INVALID", f"{where}: encrypted")
    if info.compress_type not in _ALLOWED_COMPRESSION:
        raise ExtractError(
            "ZIP_INVALID", f"{where}: compression method {info.compress_type} is not supported"
        )
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise ExtractError("ZIP_INVALID", f"{where}: stored with two different sizes")


def _member_chunks(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, *, pdf: bool, what: str
) -> Iterator[bytes]:
    """Yield the member's bytes; never more than `cap` of them, whatever its headers say.

    For a PDF nothing is yielded before its first 5 bytes are seen to be `%PDF-`.
    """
    try:
        fh = archive.open(info)
    except _ZIP_ERRORS as exc:
        raise ExtractError("ZIP_INVALID", f"{what}: unreadable ({type(exc).__name__})") from None
    got = 0
    head = b""
    checked = not pdf
    with fh:
        while True:
            try:
                chunk = fh.read(min(_CHUNK, cap + 1 - got))
            except _ZIP_ERRORS as exc:
                raise ExtractError("ZIP_INVALID", f"{what}: unreadable ({type(exc).__name__})") from None
            if not chunk:
                break
            got += len(chunk)
            if got > cap:
                raise ExtractError("ZIP_BOMB", f"{what}: inflates beyond {cap} bytes")
            if not checked:
                head += chunk
                if len(head) < len(PDF_MAGIC):
                    continue
                if not head.startswith(PDF_MAGIC):
                    raise ExtractError("PDF_NOT_PDF", f"{what}: not a PDF")
                checked, chunk, head = True, head, b""
            yield chunk
    if not checked:
        raise ExtractError("PDF_NOT_PDF", f"{what}: not a PDF")
    if got != info.file_size:
        raise ExtractError("ZIP_INVALID", f"{what}: holds {got} bytes, its header says {info.file_size}")
