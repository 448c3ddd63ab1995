"""Validate built files against the XSDs of the three flows before anything leaves.

Nothing that fails validation is sent, so this is the last fence between a builder bug
and a département. Three rules shape it:

- Each XSD is compiled once per process (a module-level cache): a night validates a few
  hundred files and compiling the DSG set (five files, one per namespace) is the slow part.
- Documents are parsed with a hardened parser: no DTD loading, no entity expansion, no
  network, no huge-tree mode; and a document that declares a DOCTYPE at all is refused,
  since none of our formats has one and an internal subset is how entity tricks start.
- Error messages never echo element text or attribute values, which may be personal
  data (names, NIR, addresses) and end up in logs and traces. lxml's message is kept
  only when it is one of the forms that carry names alone; otherwise the message is
  rebuilt from the line, the element path and the kind of failure.
"""

from __future__ import annotations

import os
import re
import threading
import zipfile
from collections.abc import Iterable
from io import BytesIO
from pathlib import Path
from typing import IO, Protocol, cast

from lxml import etree

from ..core.errors import SchemaError

__all__ = ["KINDS", "validate_bytes", "validate_file", "validate_sgr_zip", "xsd_path"]

_DIR = Path(__file__).resolve().parent

# The top-level schema of each kind; the others are reached by xs:include / xs:import.
# ACK is the other way round: the acknowledgement a receiver sends back (docs/acks.md).
_TOP = {"GRO": "gro.xsd", "DSG": "dsg.xsd", "SGR": "sgr.xsd", "ACK": "ack.xsd"}
KINDS = tuple(_TOP)

# An SGR index is a few hundred bytes per case: anything this big is not one of ours.
_MAX_INDEX_BYTES = 64 * 1024 * 1024
_SGR_INDEX_NAME = re.compile(r"CG_[^/]*_pmiich\.xml")

_lock = threading.Lock()
# From this size on, a valid file is validated as a stream (`validate_file`); below it, its tree
# is a few MB, and building it costs half the CPU of the stream's per-element bookkeeping.
STREAM_FROM = 1024 * 1024
_schemas: dict[str, etree.XMLSchema] = {}


def xsd_path(kind: str) -> Path:
    """The top-level XSD of `kind` ("GRO", "DSG", "SGR": the SGR index, or "ACK"), e.g. for xmllint."""
    try:
        return _DIR / _TOP[kind]
    except KeyError:
        raise ValueError(f"unknown schema kind {kind!r}; expected one of {', '.join(KINDS)}") from None


class _NothingExternal(etree.Resolver):
    """Answers every external reference (DTD, entity) with an empty document.

    load_dtd=False and resolve_entities=False are not enough: libxml2 still opens an
    external DTD subset or a parameter entity named by a file path (seen with 2.14), which
    would let a document make us read /dev/zero or a FIFO. Nothing is ever fetched.
    """

    def resolve(self, url, pubid, context):
        return self.resolve_empty(context)


class _SchemaFilesOnly(etree.Resolver):
    """For compiling our XSDs: their xs:include / xs:import name sibling files only."""

    def resolve(self, url, pubid, context):
        path = Path(url.removeprefix("file://")) if url else None
        if path is not None and path.resolve().parent == _DIR and path.suffix == ".xsd":
            return self.resolve_filename(str(path.resolve()), context)
        return self.resolve_empty(context)


def _parser(resolver: etree.Resolver | None = None) -> etree.XMLParser:
    # A fresh parser per call: lxml parsers must not be shared between threads.
    parser = etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_blank_text=False,
        collect_ids=False,
    )
    parser.resolvers.add(resolver or _NothingExternal())
    return parser


def _schema(kind: str) -> etree.XMLSchema:
    path = xsd_path(kind)
    with _lock:
        schema = _schemas.get(kind)
        if schema is None:
            schema = etree.XMLSchema(etree.parse(str(path), _parser(_SchemaFilesOnly())))
            _schemas[kind] = schema
        return schema


# --- messages without values ---------------------------------------------------------

# libxml2 messages that name elements, attributes or types and never a value.
_VALUE_FREE = re.compile(
    r"This element is not expected\."
    r"|Missing child element\(s\)\."
    r"|The attribute '[^']*' is required but missing\."
    r"|The attribute '[^']*' is not allowed\."
    r"|Character content other than whitespace is not allowed"
    r"|Element content is not allowed, because the content type is a simple type"
    r"|No matching global declaration available for the validation root\."
)
# Forms that do quote the value: even a whitelisted message is rebuilt if it has one.
_QUOTES_VALUE = re.compile(r"The value '|is not a valid value|has a length of|is not an element of the set")
_SUBJECT = re.compile(r"^Element '(?P<element>[^']+)'(?:, attribute '(?P<attribute>[^']+)')?:")
_FACET = re.compile(r"^Element '[^']+'(?:, attribute '[^']+')?: \[facet '(?P<facet>\w+)'\]")
# The type is the last quoted token, after the value: anchor at the end so that a value
# which happens to contain the same words is never taken for the type name.
_TYPE = re.compile(r"of the (?:local )?(?:atomic|list|union) type '(?P<type>[^']+)'\.?$")


class _LogEntry(Protocol):
    """What we read of lxml's log entries, which lxml-stubs leave untyped."""

    line: int
    level: int
    type_name: str
    message: str | None
    path: str | None


class _DocInfo(Protocol):
    """lxml's DocInfo as we read it (lxml-stubs omit doctype)."""

    doctype: str
    internalDTD: object | None
    externalDTD: object | None


def _entries(error_log: object) -> Iterable[_LogEntry]:
    return cast("Iterable[_LogEntry]", error_log)


def _describe(entry: _LogEntry) -> str:
    """One validation error as `line N: /path: what`, with no value from the document."""
    message = (entry.message or "").strip()
    where = f"line {entry.line}: {entry.path or '?'}"
    if _VALUE_FREE.search(message) and not _QUOTES_VALUE.search(message):
        return f"{where}: {message}"
    subject = _SUBJECT.match(message)
    if subject and subject.group("attribute"):
        name = f"attribute '{subject.group('attribute')}' of element '{subject.group('element')}'"
    elif subject:
        name = f"element '{subject.group('element')}'"
    else:
        name = "element"
    facet = _FACET.match(message)
    typ = _TYPE.search(message)
    if facet:
        why = f"value rejected by the '{facet.group('facet')}' facet"
    elif typ:
        why = f"value is not a valid {typ.group('type')}"
    else:
        why = f"invalid ({entry.type_name})"
    return f"{where}: {name}: {why}"


# --- validation ---------------------------------------------------------------------


def _parse(what: str, source: IO[bytes]) -> etree._ElementTree:
    parser = _parser()
    try:
        tree = etree.parse(source, parser)
    except (etree.XMLSyntaxError, OSError):
        # lxml raises OSError, not XMLSyntaxError, when parsing from a file fails on an
        # external reference. A message may quote bytes of the content ("Bytes: 0xE9
        # 0x20..."): keep only where and which error, from this parser's own log.
        errors = [
            f"line {e.line}: not well-formed XML ({e.type_name})"
            for e in _entries(parser.error_log)
            if e.level >= etree.ErrorLevels.ERROR
        ]
        raise SchemaError(what, errors or ["not well-formed XML"]) from None
    docinfo = cast(_DocInfo, tree.docinfo)
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise SchemaError(what, ["line 1: a DOCTYPE/DTD is not allowed"])
    return tree


def _validate_tree(kind: str, what: str, tree: etree._ElementTree) -> None:
    schema = _schema(kind)
    # The error log lives on the schema object: keep a validation and its reading together.
    with _lock:
        if schema.validate(tree):
            return
        errors = [_describe(e) for e in _entries(schema.error_log)]
    raise SchemaError(what, errors or ["invalid"])


def validate_bytes(kind: str, data: bytes) -> None:
    """Validate one document of `kind` held in memory; raise SchemaError if it fails."""
    xsd_path(kind)
    what = f"{kind} document"
    _validate_tree(kind, what, _parse(what, BytesIO(data)))


def validate_file(kind: str, path: Path | str) -> None:
    """Validate the XML file at `path` as `kind`; raise SchemaError if it fails.

    A file of `STREAM_FROM` bytes or more is read as a stream first, the elements dropped as
    they are validated: a 16 MiB part's tree is some 90 MB, and a worker would keep that much
    of its heap once freed. Only a document that fails is read again whole, for the errors as
    `_validate_tree` words them. A smaller file is read whole at once: it costs half the CPU.
    """
    xsd_path(kind)
    path = Path(path)
    what = f"{kind} {path.name}"
    # An open file, not a path string: lxml would take a string for a URL.
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size >= STREAM_FROM and _valid_as_a_stream(kind, fh):
            return
        fh.seek(0)
        tree = _parse(what, fh)
    _validate_tree(kind, what, tree)


def _valid_as_a_stream(kind: str, source: IO[bytes]) -> bool:
    """True when the document is well-formed, has no DOCTYPE and is valid, never held whole."""
    schema = _schema(kind)
    events = etree.iterparse(source, events=("end",), schema=schema, resolve_entities=False, load_dtd=False,
                             dtd_validation=False, no_network=True, huge_tree=False, remove_blank_text=False,
                             collect_ids=False)
    events.resolvers.add(_NothingExternal())  # as `_parser` does: nothing is ever read from elsewhere
    try:
        with _lock:  # the schema is shared, as in `_validate_tree`
            for _event, element in events:
                element.clear(keep_tail=True)
                parent = element.getparent()
                if parent is not None:
                    while element.getprevious() is not None:
                        del parent[0]
    except (etree.XMLSyntaxError, OSError):
        return False
    docinfo = cast(_DocInfo, events.root.getroottree().docinfo)
    return not (docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None)


def validate_sgr_zip(path: Path | str) -> None:
    """Validate an SGR zip: one `CG_*_pmiich.xml` index at the root, valid against sgr.xsd,
    and exactly the PDFs it names (each NOMIMAGED `/00001/IMG00001.pdf` is the member
    `00001/IMG00001.pdf`; no member is named twice or left unnamed).

    Our layout is checked literally: the HubEE sample, whose PDF sits at the zip root,
    does not pass (a reader of such files must cope; our files need not).
    """
    path = Path(path)
    what = f"SGR {path.name}"
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SchemaError(what, [f"not a readable zip ({type(exc).__name__})"]) from None
    with archive:
        infos = archive.infolist()
        indexes = [i for i in infos if _SGR_INDEX_NAME.fullmatch(i.filename)]
        if len(indexes) != 1:
            raise SchemaError(what, [f"expected exactly one CG_*_pmiich.xml index, found {len(indexes)}"])
        index = indexes[0]
        if index.file_size > _MAX_INDEX_BYTES:
            raise SchemaError(what, [f"{index.filename}: index larger than {_MAX_INDEX_BYTES} bytes"])
        with archive.open(index) as fh:
            data = fh.read(_MAX_INDEX_BYTES + 1)
        if len(data) > _MAX_INDEX_BYTES:
            raise SchemaError(what, [f"{index.filename}: index larger than {_MAX_INDEX_BYTES} bytes"])
        inner = f"{what}/{index.filename}"
        tree = _parse(inner, BytesIO(data))
        _validate_tree("SGR", inner, tree)

        members = {i.filename: i for i in infos if i is not index}
        errors: list[str] = []
        named: set[str] = set()
        for element in tree.iter("NOMIMAGED"):
            member = (element.text or "").lstrip("/")
            if member in named:
                errors.append(f"line {element.sourceline}: NOMIMAGED names a member already named")
            elif member not in members:
                errors.append(f"line {element.sourceline}: NOMIMAGED names no member of the zip")
            else:
                named.add(member)
                with archive.open(members[member]) as fh:
                    if fh.read(5) != b"%PDF-":
                        errors.append(f"line {element.sourceline}: the member it names is not a PDF")
        stray = sorted(set(members) - named)
        if stray:
            errors.append(f"{len(stray)} member(s) not named by the index")
        if errors:
            raise SchemaError(what, errors)
