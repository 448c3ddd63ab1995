"""SGR: the scanning chain's zip (APPLIEME SDP, the primary SGR shape) into SgrRecords.

One zip per Caf, as HubEE's SGR.zip shows: an index `CG_<dept>_<YYYY-MM-DD>_pmiich.xml` in
ISO-8859-1 (root `Racine`, IdentificationFlux APPLIEME SDP / NATFLUX P, one
InfoSuiviGrossessePMI per case with Organisme, Partenaire IDEPARTE and DossierPMI
NOMIMAGED / DTCREASDP, then TransmissionFlux NBTOTDOSPMITRANSM) plus the PDF scans. The
index has no commune: each case routes on its IDEPARTE.

The zip is hostile until proven otherwise. Nothing is extracted: each case's scan is read
through once, inflated as a bounded stream (its size capped, its CRC checked by zipfile, its
`%PDF-` head and `%%EOF` end checked as any scan's), and the record keeps where its bytes sit
in the zip (`ZipMember`: offset, sizes, CRC, compression). The builder copies those bytes as
they are into our zip, so the delivered PDF is byte-identical to the one in the zip, and a
deflated scan is neither inflated to disk nor stored again at a third more bytes.

Finding a case's scan: NOMIMAGED names e.g. `/00001/IMG00001.pdf` while the sample's PDF
sits at the zip root, so the exact path (without its leading `/`) is tried first, then a
member with the same base name if exactly one has it. Members whose names are unsafe
(absolute, `..`, backslash, control characters) are never matched: a case that would
resolve to one is PATH_TRAVERSAL.

Refusals. Whole file (InputFileError): not a zip or unreadable directory (ZIP_INVALID),
too many members (ZIP_BOMB), no index or several (ZIP_INDEX), an encrypted or unreadable
index (ZIP_INVALID), an index inflating beyond its cap (ZIP_BOMB), an index that is not
XML we trust or has the wrong frame (XML_*). One case (a reject, the others go on): its
scan is missing or ambiguous (PDF_MISSING), a directory (PDF_MISSING), encrypted
(PDF_ENCRYPTED), too large (PDF_TOO_LARGE), inflating beyond the ratio or the zip's total
(ZIP_BOMB), corrupt (ZIP_INVALID), not a PDF (PDF_NOT_PDF).

Receipt date (the 8-working-day clock): the earliest of the case's DTCREASDP (the day the
scan was indexed) and the flow's DTREF and DTCREAFLUX. The paper reached the Caf on or
before the day it was scanned, so the deadline is never later than what these dates prove.
"""

from __future__ import annotations

import re
import stat
import struct
import zipfile
import zlib
from datetime import date
from pathlib import Path

from ..core.errors import InputFileError
from . import check, codes
from .check import Invalid
from .parse_common import Limits, ParseResult, check_file_size, reject
from .records import SgrRecord, Source, ZipMember
from .xmlread import XmlFields, cristal_frame, line_at, load_xml, read_identification, sourceline, text_of

FLOW = "SGR"
INDEX_NAME = re.compile(r"CG_[0-9A-Z]{3}_[0-9]{4}-[0-9]{2}-[0-9]{2}_pmiich\.xml")
MAX_INDEX_BYTES = 64 * 1024 * 1024
_RATIO_FLOOR = 1024 * 1024  # below this, a high ratio (a page of zeros) is harmless
_CHUNK = 1 << 20
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError)
_ALLOWED = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
# A member's local header, as zipfile reads it (its structFileHeader, which its stubs leave out).
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_LOCAL_MAGIC = b"PK\x03\x04"
_NAME_LENGTH, _EXTRA_LENGTH = 10, 11


def _basename(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


def _safe_name(info: zipfile.ZipInfo) -> bool:
    name = info.filename
    if not name or name != info.orig_filename or any(ord(c) < 32 for c in name):
        return False
    if name.startswith("/") or "\\" in name or re.match(r"[A-Za-z]:", name):
        return False
    parts = name.rstrip("/").split("/")
    return not any(part in ("", ".", "..") for part in parts)


def _stream(archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, code: str, what: str):
    """Yield the member's bytes, never more than `cap` whatever its header says."""
    got = 0
    try:
        with archive.open(info) as fh:
            while chunk := fh.read(min(_CHUNK, cap + 1 - got)):
                got += len(chunk)
                if got > cap:
                    raise Invalid(code, f"{what}: inflates beyond {cap} bytes", "NOMIMAGED")
                yield chunk
    except _ZIP_ERRORS as exc:
        raise Invalid("ZIP_INVALID", f"{what}: unreadable ({type(exc).__name__})", "NOMIMAGED") from None
    if got != info.file_size:
        raise Invalid("ZIP_INVALID", f"{what}: its size disagrees with its header", "NOMIMAGED")


def _read_index(archive: zipfile.ZipFile, display_name: str, limits: Limits) -> bytes:
    infos = [i for i in archive.infolist() if not i.is_dir() and INDEX_NAME.fullmatch(_basename(i.filename))]
    if len(infos) != 1:
        what = "no" if not infos else "more than one"
        raise InputFileError(display_name, None, f"{what} CG_<dept>_<date>_pmiich.xml index", code="ZIP_INDEX")
    info = infos[0]
    if info.flag_bits & 0x1:
        raise InputFileError(display_name, None, "the index is encrypted", code="ZIP_INVALID")
    if info.compress_type not in _ALLOWED:
        raise InputFileError(display_name, None, "the index uses an unsupported compression", code="ZIP_INVALID")
    cap = min(MAX_INDEX_BYTES, limits.max_input_bytes)
    try:
        return b"".join(_stream(archive, info, cap, "ZIP_BOMB", "index"))
    except Invalid as invalid:
        code = "ZIP_BOMB" if invalid.code == "ZIP_BOMB" else "ZIP_INVALID"
        raise InputFileError(display_name, None, invalid.message, code=code) from None


def parse_sgr_zip(path: Path, *, display_name: str, today: date, limits: Limits) -> ParseResult:
    check_file_size(path, display_name, limits)
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS:
        raise InputFileError(display_name, None, "not a readable zip file", code="ZIP_INVALID") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_zip_members:
            raise InputFileError(display_name, None, f"more than {limits.max_zip_members} members",
                                 code="ZIP_BOMB")
        root = load_xml(_read_index(archive, display_name, limits), display_name, latin1=True)
        flux_dates = cristal_frame(root, display_name, appli="SDP", natflux="P")
        cases = root.findall("InfoSuiviGrossessePMI")
        if len(cases) > limits.max_records_per_file:
            raise InputFileError(display_name, None, f"more than {limits.max_records_per_file} records",
                                 code="TOO_LARGE")
        count_el = root.find("TransmissionFlux/NBTOTDOSPMITRANSM")
        declared = text_of(count_el)
        # Bounded before int(): a 5000-digit count made int() raise ValueError and crash the night.
        if declared and not (declared.isascii() and declared.isdigit() and len(declared) <= 9
                             and int(declared) == len(cases)):
            raise InputFileError(display_name, sourceline(count_el),
                                 "NBTOTDOSPMITRANSM disagrees with the cases", code="XML_SHAPE")

        safe: dict[str, list[zipfile.ZipInfo]] = {}
        safe_base: dict[str, list[zipfile.ZipInfo]] = {}
        unsafe: set[str] = set()
        for info in infos:
            if _safe_name(info):
                safe.setdefault(info.filename.rstrip("/"), []).append(info)
                safe_base.setdefault(_basename(info.filename), []).append(info)
            else:
                unsafe.add(info.filename)
                unsafe.add(_basename(info.filename))

        zip_path = path.resolve()
        budget = [limits.max_zip_total_bytes]
        result = ParseResult()
        for case in cases:
            line = line_at(case, 1)
            doc = XmlFields()
            try:
                record = _case(case, doc, Source(display_name, line), today, flux_dates, archive, zip_path,
                               safe, safe_base, unsafe, limits, budget)
            except Invalid as invalid:
                result.rejects.append(reject(FLOW, display_name, doc.line(invalid.field), invalid))
            else:
                result.records.append(record)
        return result




def _case(case, doc: XmlFields, source: Source, today: date, flux_date: date, archive: zipfile.ZipFile,
          zip_path: Path, safe, safe_base, unsafe: set[str], limits: Limits, budget: list[int]) -> SgrRecord:
    line = source.line
    read_identification(case, doc, line)
    pmi = doc.element(case, None, "DossierPMI", "DossierPMI", line)
    doc.text(pmi, None, "NOMIMAGED", "NOMIMAGED", doc.line("DossierPMI"))
    doc.text(pmi, None, "DTCREASDP", "DTCREASDP", doc.line("DossierPMI"))
    v = doc.values
    check.check_lengths(v)
    check.check_texts(v, frozenset())
    for name in ("NUMORG", "MATRICULE", "IDEPARTE", "NOMIMAGED", "DTCREASDP"):
        check.require(v[name], name)
    check.check_numorg(v["NUMORG"], "NUMORG")
    check.check_matricule(v["MATRICULE"], "MATRICULE")
    if codes.recipient_of_idepart(v["IDEPARTE"]) is None:
        raise Invalid("CODE_UNKNOWN", "IDEPARTE: not a served département", "IDEPARTE")
    dtcreasdp = check.not_future(check.parse_date(v["DTCREASDP"], "DTCREASDP"), "DTCREASDP", today)
    received = min(dtcreasdp, flux_date)

    info = _resolve(v["NOMIMAGED"], safe, safe_base, unsafe)
    member, size = _scan(archive, info, limits, budget)
    return SgrRecord(
        source=source,
        received=received,
        numorg=v["NUMORG"],
        matricule=v["MATRICULE"],
        num_com="",
        dtcreasdp=dtcreasdp,
        pdf=zip_path,
        pdf_size=size,
        idepart=v["IDEPARTE"],
        image=v["NOMIMAGED"],
        member=member,
    )


def _resolve(nomimaged: str, safe, safe_base, unsafe: set[str]) -> zipfile.ZipInfo:
    wanted = nomimaged.removeprefix("/")
    if ".." in wanted.split("/") or "\\" in wanted:
        raise Invalid("PATH_TRAVERSAL", "NOMIMAGED: must not hold '..' or a backslash", "NOMIMAGED")
    exact = safe.get(wanted, [])
    if len(exact) == 1:
        return exact[0]
    candidates = [] if exact else safe_base.get(_basename(wanted), [])
    if len(candidates) == 1:
        return candidates[0]
    if not exact and not candidates and (wanted in unsafe or _basename(wanted) in unsafe):
        raise Invalid("PATH_TRAVERSAL", "NOMIMAGED: names a member whose name is unsafe", "NOMIMAGED")
    why = "names no member of the zip" if not (exact or candidates) else "matches several members"
    raise Invalid("PDF_MISSING", f"NOMIMAGED: {why}", "NOMIMAGED")


_UNIX = 3  # ZipInfo.create_system: the mode bits in external_attr are Unix ones


def _scan(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits, budget: list[int]) -> tuple[ZipMember, int]:
    """Read a case's scan through and check it; where its bytes sit in the zip, and its size."""
    if info.is_dir():
        raise Invalid("PDF_MISSING", "NOMIMAGED: names a folder of the zip", "NOMIMAGED")
    if info.flag_bits & 0x1:
        raise Invalid("PDF_ENCRYPTED", "NOMIMAGED: the scan is encrypted", "NOMIMAGED")
    if info.create_system == _UNIX and stat.S_ISLNK(info.external_attr >> 16):
        # Its bytes are a path, not a scan: said as such, rather than as a PDF without its header.
        raise Invalid("ZIP_INVALID", "NOMIMAGED: the member is a symbolic link, not a scan", "NOMIMAGED")
    if info.compress_type not in _ALLOWED:
        raise Invalid("ZIP_INVALID", "NOMIMAGED: unsupported compression", "NOMIMAGED")
    if info.file_size > limits.max_pdf_bytes:
        raise Invalid("PDF_TOO_LARGE", f"NOMIMAGED: the scan exceeds {limits.max_pdf_bytes} bytes", "NOMIMAGED")
    if info.file_size >= _RATIO_FLOOR and info.file_size > limits.max_zip_ratio * max(info.compress_size, 1):
        raise Invalid("ZIP_BOMB", f"NOMIMAGED: compression ratio above {limits.max_zip_ratio:g}", "NOMIMAGED")
    if info.file_size > budget[0]:
        raise Invalid("ZIP_BOMB", "NOMIMAGED: the zip's scans inflate beyond the total allowed", "NOMIMAGED")
    budget[0] -= info.file_size
    head, tail, size = b"", b"", 0
    # zipfile checks the member's local header and, at its end, its CRC: a scan that reads
    # through is the bytes the index names, intact.
    for chunk in _stream(archive, info, min(limits.max_pdf_bytes, info.file_size), "ZIP_BOMB", "scan"):
        size += len(chunk)
        if len(head) < len(check.PDF_HEAD):
            head = (head + chunk)[:len(check.PDF_HEAD)]
        tail = chunk[-check.PDF_TAIL:] if len(chunk) >= check.PDF_TAIL else (tail + chunk)[-check.PDF_TAIL:]
    check.check_pdf_bytes(head, tail, "NOMIMAGED")
    return ZipMember(_data_offset(archive, info), info.compress_size, info.CRC, info.compress_type), size


def _data_offset(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """Where the member's data starts: after its local header, its name and its extra field,
    which is where zipfile started reading it."""
    assert archive.fp is not None
    archive.fp.seek(info.header_offset)
    header = archive.fp.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_MAGIC:
        raise Invalid("ZIP_INVALID", "NOMIMAGED: the scan's local header is unreadable", "NOMIMAGED")
    fields = _LOCAL_HEADER.unpack(header)
    return info.header_offset + _LOCAL_HEADER.size + fields[_NAME_LENGTH] + fields[_EXTRA_LENGTH]
