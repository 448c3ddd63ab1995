"""Reading the inbox files into typed records: the limits, the result, the dispatcher.

This is the only door between what upstream systems drop (docs/input-contract.md) and
the rest of the pipeline. It decides, per file, whether the whole file is unreadable
(`errors.InputFileError`: the caller quarantines it) or, per record, whether a record
is refused (`Reject`, with a value-free message; the rest of the file goes on). The
flow-specific parsers live in parse_dsg / parse_gro / parse_sgr; the helpers here are
the parts they share: size limits, the hardened XML loader and the ISO-8859-1 CSV reader.

Which shape a file is, is decided by its extension (inbox/claim.py only claims these):
DSG `.xml` (a DGE envelope `Agregat`, or a bare `dsgcnaf:DSGCNAF`: the root decides), GRO
`.xml` (Cristal's XML, the primary shape) or `.csv` (the secondary CSV extract), SGR
`.zip` (the scanning chain's zip, primary) or `.csv` (the secondary CSV index beside its
PDFs). See docs/input-contract.md.

CSV reading, the decisions:
- Encoding: the contract says ISO-8859-1, in which every byte sequence decodes, so a
  wrong producer would go unnoticed and names would be silently mangled. We refuse a
  byte-order mark (UTF-8, UTF-16), NUL bytes (a UTF-16 or binary file), and a file
  that is valid UTF-8 *and* holds multi-byte sequences (UTF-8 where Latin-1 is
  expected). A pure-ASCII file is fine either way.
- Line numbers are physical lines (the header is line 1); a record whose quoted field
  holds a newline is reported at the line where it starts. Blank lines are skipped.
- Header names are matched exactly (surrounding spaces stripped, case kept). A missing
  contract column, an empty column name or a duplicated name quarantines the file.
  Header messages name only contract columns: if a producer forgot the header, its
  first row is personal data and must not be echoed.
- Only the contract's columns are copied out of each row; other columns (a real GRO
  extract's NIR, phone, e-mail) are never put in any object.
- A field longer than the csv module's default ceiling (128 KiB) is read, then refused
  by its record's length check (FIELD_TOO_LONG): one over-long field must not
  quarantine the valid rows around it. The file-size ceiling still bounds memory.
"""

from __future__ import annotations

import codecs
import csv
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from lxml import etree

from ..core.errors import InputFileError
from . import check
from .check import Invalid
from .records import Record, Reject, Source


@dataclass(frozen=True, slots=True)
class Limits:
    """Ceilings that keep one bad or hostile file from exhausting the night's run."""

    max_input_bytes: int = 256 * 1024 * 1024
    max_pdf_bytes: int = 5 * 1024 * 1024
    max_records_per_file: int = 200_000
    # An SGR zip: what its members may inflate to, in all and relative to their compressed size.
    max_zip_members: int = 10_000
    max_zip_total_bytes: int = 1024 * 1024 * 1024
    max_zip_ratio: float = 100.0


@dataclass
class ParseResult:
    records: list[Record] = field(default_factory=list)  # valid records, in file order
    rejects: list[Reject] = field(default_factory=list)  # refused records, in file order


def parse_file(
    flow: str,
    path: Path,
    *,
    display_name: str,
    today: date,
    inbox_root: Path,
    limits: Limits | None = None,
) -> ParseResult:
    """Parse one inbox file of `flow` (DSG, GRO or SGR).

    `display_name` names the file in sources and messages; `today` is the processing day
    (dates after it are refused); `inbox_root` is the folder SGR FICHIER paths are
    relative to. Raises InputFileError when the whole file must be quarantined.
    """
    limits = limits or Limits()
    suffix = path.suffix.lower()
    # Imported here: the flow modules import this one for Limits, ParseResult and helpers.
    if flow == "DSG":
        from .parse_dsg import parse_dsg

        return parse_dsg(path, display_name=display_name, today=today, limits=limits)
    if flow == "GRO":
        if suffix == ".xml":
            from .parse_gro_xml import parse_gro_xml

            return parse_gro_xml(path, display_name=display_name, today=today, limits=limits)
        from .parse_gro import parse_gro

        return parse_gro(path, display_name=display_name, today=today, limits=limits)
    if flow == "SGR":
        if suffix == ".zip":
            from .parse_sgr_zip import parse_sgr_zip

            return parse_sgr_zip(path, display_name=display_name, today=today, work_root=inbox_root,
                                 limits=limits)
        from .parse_sgr import parse_sgr

        return parse_sgr(path, display_name=display_name, today=today, inbox_root=inbox_root, limits=limits)
    raise ValueError(f"unknown flow {flow!r}")


def reject(flow: str, file: str, line: int, invalid: Invalid) -> Reject:
    return Reject(flow, Source(file, line), invalid.code, invalid.message)


def check_file_size(path: Path, display_name: str, limits: Limits) -> int:
    """EMPTY for a zero-byte file, TOO_LARGE beyond the input ceiling; returns the size."""
    size = os.stat(path).st_size
    if size == 0:
        raise InputFileError(display_name, None, "the file is empty", code="EMPTY")
    if size > limits.max_input_bytes:
        raise InputFileError(
            display_name, None, f"the file exceeds {limits.max_input_bytes} bytes", code="TOO_LARGE"
        )
    return size


def read_bytes(path: Path, display_name: str, limits: Limits) -> bytes:
    """The whole file, bounded: a file that grows after the size check is still refused."""
    check_file_size(path, display_name, limits)
    with open(path, "rb") as fh:
        data = fh.read(limits.max_input_bytes + 1)
    if not data:
        raise InputFileError(display_name, None, "the file is empty", code="EMPTY")
    if len(data) > limits.max_input_bytes:
        raise InputFileError(
            display_name, None, f"the file exceeds {limits.max_input_bytes} bytes", code="TOO_LARGE"
        )
    return data


_BOMS = {
    codecs.BOM_UTF8: "a UTF-8 byte-order mark",
    codecs.BOM_UTF16_LE: "a UTF-16 byte-order mark",
    codecs.BOM_UTF16_BE: "a UTF-16 byte-order mark",
}
_CHUNK = 1 << 20


def check_latin1(path: Path, display_name: str, limits: Limits) -> None:
    """Refuse a CSV that is evidently not ISO-8859-1, streaming so memory stays flat."""
    check_file_size(path, display_name, limits)
    decoder = codecs.getincrementaldecoder("utf-8")()
    utf8_valid, multibyte, total, line = True, False, 0, 1
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            if total == 0:
                for bom, what in _BOMS.items():
                    if chunk.startswith(bom):
                        raise InputFileError(display_name, 1, f"{what}: ISO-8859-1 expected", code="ENCODING")
            total += len(chunk)
            if total > limits.max_input_bytes:
                raise InputFileError(
                    display_name, None, f"the file exceeds {limits.max_input_bytes} bytes", code="TOO_LARGE"
                )
            nul = chunk.find(b"\x00")
            if nul >= 0:
                where = line + chunk.count(b"\n", 0, nul)
                raise InputFileError(
                    display_name,
                    where,
                    "NUL byte: ISO-8859-1 text expected (UTF-16 or binary?)",
                    code="ENCODING",
                )
            line += chunk.count(b"\n")
            if utf8_valid:
                multibyte = multibyte or not chunk.isascii()
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    utf8_valid = False
    if total == 0:
        raise InputFileError(display_name, None, "the file is empty", code="EMPTY")
    if utf8_valid:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8_valid = False
    if utf8_valid and multibyte:
        raise InputFileError(display_name, None, "UTF-8 text: ISO-8859-1 expected", code="ENCODING")


def read_csv(
    path: Path, display_name: str, columns: tuple[str, ...], limits: Limits
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (start line, {contract column: value stripped of surrounding spaces}) per record.

    Raises InputFileError (ENCODING, CSV_HEADER, CSV_SHAPE, TOO_LARGE, EMPTY) as soon as
    the file shows it cannot be read as a whole.
    """
    check_latin1(path, display_name, limits)
    # Raised, never lowered (process-wide): an over-long field is a record's problem.
    if csv.field_size_limit() < limits.max_input_bytes:
        csv.field_size_limit(limits.max_input_bytes)
    with open(path, encoding="iso-8859-1", newline="") as fh:
        reader = csv.reader(fh, delimiter=";", quotechar='"', doublequote=True, strict=True)
        previous = 0  # reader.line_num after the previous row: the next row starts on the line after
        try:
            header: list[str] = []
            for row in reader:
                previous = reader.line_num
                if row:
                    header = row
                    break
            index = _header_index(header, columns, display_name, previous)
            width = len(header)
            count = 0
            for row in reader:
                start, previous = previous + 1, reader.line_num
                if not row:
                    continue
                if len(row) != width:
                    raise InputFileError(
                        display_name,
                        start,
                        f"{len(row)} fields where the header has {width}",
                        code="CSV_SHAPE",
                    )
                count += 1
                if count > limits.max_records_per_file:
                    raise InputFileError(
                        display_name,
                        start,
                        f"more than {limits.max_records_per_file} records",
                        code="TOO_LARGE",
                    )
                yield start, {name: row[i].strip(" ") for name, i in index.items()}
        except csv.Error:
            raise InputFileError(
                display_name, previous + 1, "broken quoting or oversized field", code="CSV_SHAPE"
            ) from None


def _header_index(
    header: list[str], columns: tuple[str, ...], display_name: str, line: int
) -> dict[str, int]:
    if not header:
        raise InputFileError(display_name, None, "no header row", code="CSV_HEADER")
    names = [name.strip(" ") for name in header]
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if not name:
            raise InputFileError(
                display_name, line, f"empty column name at position {position}", code="CSV_HEADER"
            )
        if name in seen:
            # Name it only if it is a contract column: an unknown "name" may be personal data.
            what = f"column {name}" if name in columns else f"the column at position {position}"
            raise InputFileError(display_name, line, f"{what} appears twice", code="CSV_HEADER")
        seen[name] = position - 1
    missing = [name for name in columns if name not in seen]
    if missing:
        raise InputFileError(
            display_name, line, f"missing required column(s): {', '.join(missing)}", code="CSV_HEADER"
        )
    return {name: seen[name] for name in columns}


# --- XML -------------------------------------------------------------------------------

_XML_DECL = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([^\"']*)[\"']")
_FOREIGN_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
# Any "&name" other than the five predefined entities is an entity reference.
_ENTITY_REF = re.compile(rb"&(?!(?:lt|gt|amp|quot|apos);)(?=[^\s#;&<])")
_LATIN1_NAMES = {b"iso-8859-1", b"iso8859-1", b"latin-1", b"latin1"}


def line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def load_xml(data: bytes, display_name: str, *, latin1: bool = False) -> etree._Element:
    """Parse bytes as a safe XML document (no DTD, no entity, nothing fetched) or raise InputFileError.

    UTF-8 is expected; with `latin1`, a document that declares ISO-8859-1 is read as such
    (the SDP index), and one that declares UTF-8 must be UTF-8. Every other declared
    encoding is refused. DOCTYPE, entity declarations and references are refused from the
    raw bytes, before a parser sees them. The parser's own text is never quoted: it may
    echo content.
    """
    if data.startswith(_FOREIGN_BOMS):
        raise InputFileError(
            display_name, 1, "UTF-16/32 byte-order mark: UTF-8 expected", code="XML_ENCODING"
        )
    decl = _XML_DECL.match(data.removeprefix(b"\xef\xbb\xbf"))
    declared = decl[1].lower() if decl else b"utf-8"
    is_latin1 = latin1 and declared in _LATIN1_NAMES and not data.startswith(b"\xef\xbb\xbf")
    if declared != b"utf-8" and not is_latin1:
        expected = "UTF-8 or ISO-8859-1" if latin1 else "UTF-8"
        raise InputFileError(display_name, 1, f"declared encoding is not {expected}", code="XML_ENCODING")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise InputFileError(
            display_name, line_of(data, nul), "NUL byte: text expected", code="XML_ENCODING"
        )
    if not is_latin1:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputFileError(
                display_name, line_of(data, exc.start), "bytes that are not UTF-8", code="XML_ENCODING"
            ) from None
    for marker in (b"<!DOCTYPE", b"<!ENTITY"):
        at = data.find(marker)
        if at >= 0:
            raise InputFileError(
                display_name, line_of(data, at), "DOCTYPE or entity declaration refused", code="XML_DTD"
            )
    ref = _ENTITY_REF.search(data)
    if ref:
        raise InputFileError(
            display_name, line_of(data, ref.start()), "entity reference refused", code="XML_DTD"
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
    return root


class XmlFields:
    """Field values read from XML and the line each came from, so a reject points at its element.

    Elements are looked up by (optional) namespace and name under their expected parent; one
    that appears twice is FIELD_REPEATED (which would we send?), one holding child elements
    where text is expected is TEXT_INVALID. Unknown elements are never read.
    """

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.lines: dict[str, int] = {}
        self.attrs: dict[str, str] = {}

    def line(self, field: str | None) -> int:
        return self.lines.get(field or "", 1)

    def element(self, parent, ns: str | None, name: str, field: str, at: int):
        """The single child `name` of `parent`, or None; records its line (or `at`)."""
        if parent is None:
            self.lines[field] = at
            return None
        found = parent.findall(f"{{{ns}}}{name}" if ns else name)
        if len(found) > 1:
            self.lines[field] = found[1].sourceline or at
            raise Invalid("FIELD_REPEATED", f"{field}: must appear once", field)
        if not found:
            self.lines[field] = parent.sourceline or at
            return None
        self.lines[field] = found[0].sourceline or at
        return found[0]

    def text(self, parent, ns: str | None, name: str, field: str, at: int, *, attr: str | None = None,
             strip: bool = True) -> str:
        el = self.element(parent, ns, name, field, at)
        value = ""
        if el is not None:
            if len(el):
                raise Invalid("TEXT_INVALID", f"{field}: must hold text only", field)
            value = el.text or ""
            if strip:
                value = value.strip(" \t\r\n")
            if attr:
                self.attrs[field] = (el.get(attr) or "").strip(" \t\r\n")
        self.values[field] = value
        return value


def cristal_frame(root: etree._Element, display_name: str, *, appli: str, natflux: str) -> date:
    """Check the frame Cristal and the scanning chain share (root `Racine`, one IdentificationFlux
    naming its application and nature) and return the flow's earliest date, DTREF or DTCREAFLUX:
    the day the case was extracted at the latest, hence a bound on its receipt date."""
    if root.tag != "Racine":
        raise InputFileError(display_name, root.sourceline or 1, "root element is not Racine", code="XML_ROOT")
    fluxes = root.findall("IdentificationFlux")
    if len(fluxes) != 1:
        raise InputFileError(display_name, 1, "exactly one IdentificationFlux expected", code="XML_SHAPE")
    flux = fluxes[0]
    for name, expected in (("APPLIEME", appli), ("NATFLUX", natflux)):
        if (flux.findtext(name) or "").strip() != expected:
            raise InputFileError(display_name, flux.sourceline or 1,
                                 f"IdentificationFlux: {name} must be {expected}", code="XML_SHAPE")
    found = []
    for name in ("DTREF", "DTCREAFLUX"):
        try:
            found.append(check.parse_date((flux.findtext(name) or "").strip(), name))
        except Invalid:
            raise InputFileError(display_name, flux.sourceline or 1, f"IdentificationFlux: {name} is not a date",
                                 code="XML_SHAPE") from None
    return min(found)


def read_identification(case: etree._Element, doc: XmlFields, line: int) -> str:
    """A Cristal or SDP case's IdentificationDossier (Organisme NUMORG and MATRICULE, Partenaire
    IDEPARTE) into `doc`, the shape both share; returns IDEPARTE."""
    ident = doc.element(case, None, "IdentificationDossier", "IdentificationDossier", line)
    at = doc.line("IdentificationDossier")
    org = doc.element(ident, None, "Organisme", "Organisme", at)
    doc.text(org, None, "NUMORG", "NUMORG", doc.line("Organisme"))
    doc.text(org, None, "MATRICULE", "MATRICULE", doc.line("Organisme"))
    partner = doc.element(ident, None, "Partenaire", "Partenaire", at)
    return doc.text(partner, None, "IDEPARTE", "IDEPARTE", doc.line("Partenaire"))
