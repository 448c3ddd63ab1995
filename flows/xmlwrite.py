"""Writing the output XML as text, byte for byte as lxml's `xmlfile` would, several times faster.

Why it exists: a national night writes about a million elements, and a catch-up several times
that. Through lxml's incremental writer each element costs a context manager, a Clark-name
parse and a namespace lookup, and building was half of a night's CPU (docs/performance.md).
The formats need no more than elements, attributes, text and namespace prefixes, so this
writer joins strings and resolves prefixes once per tag and scope.

It follows the rules of lxml's `xmlfile` (the oracle: tests/flows/test_xmlwrite.py writes the
same random documents through both and compares the bytes):
- a `{uri}local` name takes the prefix its URI has in scope; a declaration maps URIs to
  prefixes in the order given, a later prefix for the same URI winning; an element declares
  its namespaces sorted by prefix, before its attributes (a URI with no prefix in scope is
  a bug of a layout: refused, where lxml would invent `ns0`);
- text escapes `& < >` and carriage return, attribute values also `"`, tab and newlines;
- a character XML 1.0 cannot carry (a control character, a lone surrogate) is refused with
  ValueError, as lxml refuses it, instead of writing a file no parser would read;
- a character the file's encoding cannot carry becomes a character reference.
"""

from __future__ import annotations

import re

_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Whatever needs a second look in text: the common value (a date, a code, a name) has none of it.
_TEXT_SUSPECT = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_TEXT_SPECIAL = re.compile("[&<>\r]")
_ATTR_SPECIAL = re.compile('[&<>"\r\n\t]')
_TEXT_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"}
_ATTR_ESCAPES = {**_TEXT_ESCAPES, '"': "&quot;", "\n": "&#10;", "\t": "&#9;"}


def _checked(value: str) -> str:
    if _INVALID.search(value):
        # lxml's own words, so an operator meets one message whichever writer refused.
        raise ValueError("All strings must be XML compatible: Unicode or ASCII, no NULL bytes or control characters")
    return value


def escape_text(value: str) -> str:
    if _TEXT_SUSPECT.search(value) is None:
        return value
    value = _checked(value)
    return _TEXT_SPECIAL.sub(lambda m: _TEXT_ESCAPES[m.group()], value)


def escape_attribute(value: str) -> str:
    value = _checked(value)
    if _ATTR_SPECIAL.search(value) is None:
        return value
    return _ATTR_SPECIAL.sub(lambda m: _ATTR_ESCAPES[m.group()], value)


class _Scope:
    """The namespaces in scope (URI -> prefix) and the qualified names already resolved in it."""

    __slots__ = ("prefixes", "names", "inner")

    def __init__(self, prefixes: dict[str, str]):
        self.prefixes = prefixes
        self.names: dict[str, str] = {}
        # The scopes opened inside this one, by their declarations: a record's node that declares
        # namespaces (DSG's dsgcnaf:DSGCNAF) then resolves its names once per document, not per record.
        self.inner: dict[tuple[tuple[str, str], ...], tuple[_Scope, str]] = {}

    def enter(self, nsmap: dict[str, str]) -> tuple[_Scope, str]:
        """The scope inside an element declaring `nsmap`, and those declarations as they are written."""
        key = tuple(nsmap.items())
        found = self.inner.get(key)
        if found is None:
            # One declaration per URI, with the prefix that won it (as lxml does).
            final = {uri: prefix for prefix, uri in nsmap.items()}
            decls = "".join(f' xmlns:{prefix}="{escape_attribute(uri)}"'
                            for prefix, uri in sorted((p, u) for u, p in final.items()))
            found = self.inner[key] = (_Scope(_prefixes(self.prefixes, nsmap)), decls)
        return found


class Out:
    """Writes elements into a list of strings, indenting as the HubEE samples do.

    `leaf` writes an element with its text, `node` an element whose children are written
    inside the `with` block, one level deeper. `take()` hands back what was written since
    the last `take()`, as one string.
    """

    def __init__(self, indent: str, depth: int = 1, nsmap: dict[str, str] | None = None):
        self.indent, self.depth = indent, depth
        self._parts: list[str] = []
        self._scope = _Scope(_prefixes({}, nsmap))
        self._newlines: dict[int, str] = {}

    def take(self) -> str:
        text = "".join(self._parts)
        self._parts.clear()
        return text

    def _newline(self) -> str:
        line = self._newlines.get(self.depth)
        if line is None:
            line = self._newlines[self.depth] = "\n" + self.indent * self.depth
        return line

    def _name(self, tag: str, scope: _Scope) -> str:
        name = scope.names.get(tag)
        if name is None:
            name = scope.names[tag] = _qualify(tag, scope.prefixes)
        return name

    def _start(self, tag: str, attrib: dict[str, str] | None, nsmap: dict[str, str] | None) -> tuple[str, _Scope]:
        scope, decls = self._scope, ""
        if nsmap:
            scope, decls = scope.enter(nsmap)
        attrs = "".join(f' {self._name(k, scope)}="{escape_attribute(v)}"' for k, v in (attrib or {}).items())
        return f"<{self._name(tag, scope)}{decls}{attrs}>", scope

    def leaf(self, tag: str, text: str = "", attrib: dict[str, str] | None = None) -> None:
        name = self._name(tag, self._scope)
        start, _ = self._start(tag, attrib, None) if attrib else (f"<{name}>", None)
        self._parts.append(f"{self._newline()}{start}{escape_text(text) if text else ''}</{name}>")

    def node(self, tag: str, attrib: dict[str, str] | None = None, nsmap: dict[str, str] | None = None) -> _Node:
        start, scope = self._start(tag, attrib, nsmap)
        self._parts.append(self._newline() + start)
        return _Node(self, self._name(tag, scope), scope)

    def open_root(self, tag: str, attrib: dict[str, str], nsmap: dict[str, str] | None) -> str:
        """The root's start tag (no newline before it); its namespaces stay in scope for every element."""
        start, self._scope = self._start(tag, attrib, nsmap)
        return start

    def root_end(self, tag: str) -> str:
        return f"</{self._name(tag, self._scope)}>"


class _Node:
    """One `Out.node` block: its children one level deeper, in its scope, then its end tag.

    A class rather than a generator-based context manager: a night opens some thirty thousand of
    them, and the generator's machinery cost more than the writing.
    """

    __slots__ = ("out", "name", "scope", "outer")

    def __init__(self, out: Out, name: str, scope: _Scope):
        self.out, self.name, self.scope, self.outer = out, name, scope, out._scope

    def __enter__(self) -> None:
        self.out._scope = self.scope
        self.out.depth += 1

    def __exit__(self, exc_type: object, *_: object) -> None:
        out = self.out
        out.depth -= 1
        out._scope = self.outer
        if exc_type is None:
            out._parts.append(f"{out._newline()}</{self.name}>")


def _prefixes(outer: dict[str, str], nsmap: dict[str, str] | None) -> dict[str, str]:
    if not nsmap:
        return outer
    if None in nsmap:
        raise ValueError("a default namespace is not supported by this writer")
    inner = dict(outer)
    inner.update((uri, prefix) for prefix, uri in nsmap.items())
    return inner


def _qualify(tag: str, prefixes: dict[str, str]) -> str:
    """`{uri}local` -> `prefix:local`: every namespace the formats use is declared by the layouts."""
    if not tag.startswith("{"):
        return tag
    uri, _, local = tag[1:].partition("}")
    prefix = prefixes.get(uri)
    if prefix is None:
        raise ValueError(f"namespace {uri} has no prefix in scope")
    return f"{prefix}:{local}"
