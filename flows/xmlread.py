"""Reading inbox XML (DSG, Cristal's GRO, the SGR index) safely, and the frame Cristal's formats share.

`load_xml` refuses DTDs, entities and foreign encodings from the raw bytes before a parser
sees them; `XmlFields` reads field values with the line each came from, so a reject points at
its element; `cristal_frame` and `read_identification` read what Cristal and the scanning
chain's files have in common.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from typing import Protocol, cast

from lxml import etree

from ..core.errors import InputFileError
from . import check
from .check import Invalid

_XML_DECL = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([^\"']*)[\"']")
_FOREIGN_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
# Any "&name" other than the five predefined entities is an entity reference.
_ENTITY_REF = re.compile(rb"&(?!(?:lt|gt|amp|quot|apos);)(?=[^\s#;&<])")
_LATIN1_NAMES = {b"iso-8859-1", b"iso8859-1", b"latin-1", b"latin1"}


class _LastError(Protocol):
    type_name: str


class _ErrorLog(Protocol):
    """What we read of lxml's parse error log (lxml-stubs leave it untyped)."""

    last_error: _LastError | None


class _DocInfo(Protocol):
    doctype: str  # omitted by lxml-stubs


def sourceline(el: etree._Element | None) -> int | None:
    """The line `el` starts on, when lxml knows it (lxml-stubs leave `sourceline` untyped)."""
    return None if el is None else cast("int | None", el.sourceline)


def line_at(el: etree._Element | None, default: int) -> int:
    """The line `el` starts on, else `default`: what a reject or a refusal points at."""
    return sourceline(el) or default


def text_of(el: etree._Element | None) -> str:
    """All the text inside `el` (a count, say), stripped; "" when there is no such element."""
    # Parsed from bytes, lxml gives str: itertext's bytes are for other inputs.
    return "" if el is None else "".join(cast("Iterator[str]", el.itertext())).strip()


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
        last = cast(_ErrorLog, exc.error_log).last_error
        kind = last.type_name if last else "syntax error"
        raise InputFileError(
            display_name, exc.lineno or None, f"not well-formed XML ({kind})", code="XML_MALFORMED"
        ) from None
    # Belt and braces: the byte scan above should have made these impossible.
    if cast(_DocInfo, root.getroottree().docinfo).doctype or next(root.iter(etree.Entity), None) is not None:
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
        # {parent: {tag: [children]}}: a parent's children are walked once, not once per field
        # looked up under it (findall parses its path and walks them again each time). Keyed by
        # the element itself, which keeps lxml's proxy, hence its identity, alive meanwhile.
        self._children: dict[etree._Element, dict[str, list[etree._Element]]] = {}

    def line(self, field: str | None) -> int:
        return self.lines.get(field or "", 1)

    def element(self, parent, ns: str | None, name: str, field: str, at: int):
        """The single child `name` of `parent`, or None; records its line (or `at`)."""
        if parent is None:
            self.lines[field] = at
            return None
        found = self._by_tag(parent).get(f"{{{ns}}}{name}" if ns else name, [])
        if len(found) > 1:
            self.lines[field] = line_at(found[1], at)
            raise Invalid("FIELD_REPEATED", f"{field}: must appear once", field)
        if not found:
            self.lines[field] = line_at(parent, at)
            return None
        self.lines[field] = line_at(found[0], at)
        return found[0]

    def _by_tag(self, parent: etree._Element) -> dict[str, list[etree._Element]]:
        children = self._children.get(parent)
        if children is None:
            children = self._children[parent] = {}
            for child in parent:
                if isinstance(child.tag, str):  # comments and processing instructions have no name
                    children.setdefault(child.tag, []).append(child)
        return children

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
        raise InputFileError(display_name, line_at(root, 1), "root element is not Racine", code="XML_ROOT")
    fluxes = root.findall("IdentificationFlux")
    if len(fluxes) != 1:
        raise InputFileError(display_name, 1, "exactly one IdentificationFlux expected", code="XML_SHAPE")
    flux = fluxes[0]
    for name, expected in (("APPLIEME", appli), ("NATFLUX", natflux)):
        if (flux.findtext(name) or "").strip() != expected:
            raise InputFileError(display_name, line_at(flux, 1),
                                 f"IdentificationFlux: {name} must be {expected}", code="XML_SHAPE")
    found = []
    for name in ("DTREF", "DTCREAFLUX"):
        try:
            found.append(check.parse_date((flux.findtext(name) or "").strip(), name))
        except Invalid:
            raise InputFileError(display_name, line_at(flux, 1), f"IdentificationFlux: {name} is not a date",
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
