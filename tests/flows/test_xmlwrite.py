"""The text writer against its oracle, lxml's `xmlfile`: the same documents give the same bytes."""

from __future__ import annotations

import io
import random
from contextlib import contextmanager

import pytest
from lxml import etree

from flux_pmi.flows.xmlwrite import Out

A, B = "urn:example:a", "urn:example:b"
ALPHABET = "abcXYZ 09-_.:;/&<>\"'\r\n\t\u00e9\u00c9\u0152\u20ac\u00ff\u4e2d\U0001f600"


class LxmlOut:
    """The previous writer, kept here as the oracle: lxml's incremental writer with the same indenting."""

    def __init__(self, xf, indent: str, depth: int = 1):
        self.xf, self.indent, self.depth = xf, indent, depth

    def _newline(self) -> None:
        self.xf.write("\n" + self.indent * self.depth)

    def leaf(self, tag, text="", attrib=None):
        self._newline()
        with self.xf.element(tag, attrib or {}):
            if text:
                self.xf.write(text)

    @contextmanager
    def node(self, tag, attrib=None, nsmap=None):
        self._newline()
        with self.xf.element(tag, attrib or {}, nsmap=nsmap):
            self.depth += 1
            yield
            self.depth -= 1
            self._newline()


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 12)))


def document(out, rng: random.Random, tags: list[str]) -> None:
    """A seeded random body: leaves with text and attributes, nested nodes, one with its own namespaces."""
    for _ in range(rng.randrange(1, 6)):
        kind = rng.random()
        if kind < 0.5:
            attrib = {rng.choice(["R", "Nature", f"{{{B}}}k"]): random_text(rng)} if rng.random() < 0.4 else None
            out.leaf(rng.choice(tags), random_text(rng), attrib)
        elif kind < 0.8:
            with out.node(rng.choice(tags), {"V": random_text(rng)} if rng.random() < 0.3 else None):
                out.leaf(rng.choice(tags), random_text(rng))
        else:
            # A later prefix for a URI already in scope wins, as in the DSG's dsgcnaf:DSGCNAF.
            with out.node(f"{{{B}}}Inner", {"Version": "1"}, nsmap=rng.choice([{"zz": A, "b": B, "AA": A}, {"ns2": B, "c": A}])):
                out.leaf(f"{{{A}}}Leaf", random_text(rng))
                out.leaf(f"{{{B}}}Leaf", random_text(rng))


ROOTS = [
    ("UTF-8", "    ", {"ns2": B, "ns3": A}, {}),
    ("ISO-8859-1", "", {"xsi": "http://www.w3.org/2001/XMLSchema-instance", "q": A, "r": B},
     {"{http://www.w3.org/2001/XMLSchema-instance}noNamespaceSchemaLocation": "x.xsd"}),
]


def through_lxml(encoding, indent, nsmap, attrib, seed) -> bytes:
    buf = io.BytesIO()
    with etree.xmlfile(buf, encoding=encoding) as xf:
        with xf.element("Root", attrib, nsmap=nsmap):
            document(LxmlOut(xf, indent), random.Random(seed), ["Plain", f"{{{A}}}Qualified"])
            xf.write("\n")
    return buf.getvalue()


def through_text(encoding, indent, nsmap, attrib, seed) -> bytes:
    out = Out(indent)
    start = out.open_root("Root", attrib, nsmap)
    document(out, random.Random(seed), ["Plain", f"{{{A}}}Qualified"])
    return (start + out.take() + "\n" + out.root_end("Root")).encode(encoding, "xmlcharrefreplace")


@pytest.mark.parametrize("encoding, indent, nsmap, attrib", ROOTS)
@pytest.mark.parametrize("seed", range(60))
def test_the_same_bytes_as_lxml(encoding, indent, nsmap, attrib, seed) -> None:
    assert through_text(encoding, indent, nsmap, attrib, seed) == through_lxml(encoding, indent, nsmap, attrib, seed)


@pytest.mark.parametrize("bad", ["a\x00b", "\x01", "x\x1fy", "\ud800", "\ufffe"])
def test_what_xml_cannot_carry_is_refused_as_lxml_refuses_it(bad: str) -> None:
    with pytest.raises(ValueError), etree.xmlfile(io.BytesIO()) as xf, xf.element("R"):
        xf.write(bad)
    out = Out("")
    out.open_root("R", {}, None)
    with pytest.raises(ValueError, match="XML compatible"):
        out.leaf("T", bad)
    with pytest.raises(ValueError, match="XML compatible"):
        out.leaf("T", "ok", {"a": bad})


def test_a_namespace_without_a_prefix_in_scope_is_a_layout_bug() -> None:
    out = Out("")
    out.open_root("R", {}, None)
    with pytest.raises(ValueError, match="no prefix in scope"):
        out.leaf(f"{{{A}}}T", "x")
