"""What the three flow builders share: the header, the part, streaming, splitting, owner-only files.

build_dsg, build_gro and build_sgr import these; the dispatcher (build.build) imports the
builders. Keeping them apart from the dispatcher means no builder imports the module that
imports it.

- Streaming. Files are written one record at a time, as text (flows/xmlwrite.py, which
  writes what lxml's `xmlfile` would): a catch-up night may hold thousands of records and
  the tree is never built.
- Splitting. A part holds as many records as fit in `max_bytes`, header and trailer
  included. To know whether the next record fits *before* writing it, each record is
  first rendered in the root's namespace scope, and those very bytes are what the part
  then writes, so the measure is exact (the XML flows check it at the end of each part). A record that alone exceeds `max_bytes` is still written, alone in its
  part: refusing it would block a declaration that the law says must reach the PMI.
- Zero records give exactly one part with the header and a zero count: an empty day is
  then distinguishable, at the département, from a lost file.
- Sequence numbers come from `seq_for_part(part_no)`, asked once per part when the part
  starts (the orchestrator allocates them in its trace store; a rebuild gets the same).
- Files are plaintext personal data: created 0600 through `os.open`, written under a
  hidden temporary name and renamed only once complete, so a crash never leaves a half
  file under a final name. They are not synced: a part is rebuilt, with the same sequence
  number, until its sealed copy is archived (that one is synced), so a power cut costs a
  rebuild, not a file. Names carry the flow, the département, the date and the sequence
  number, never personal data. If a build fails, the files it already wrote in this call
  are removed too: it gives back every part or none.
- Determinism: the same records and header give the same bytes (the clock is injected
  as `header.created_at`; nothing reads the time or the environment).

The builders do not validate: the orchestrator runs `schemas.validate_*` on each part.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any, Protocol
from zoneinfo import ZoneInfo

from ..core.fsutil import atomic_file
from .records import Record
from .xmlwrite import Out

PARIS = ZoneInfo("Europe/Paris")


@dataclass(frozen=True, slots=True)
class FlowHeader:
    flow: str  # "DSG" | "SGR" | "GRO"
    department: str  # 3 characters, e.g. "035", "02A", "971"
    numorg: str  # the Caf NUMORG serving that department (e.g. "351")
    siret: str  # the département's SIRET (DSG Recepteur)
    business_date: date  # DTREF / the night's date
    created_at: datetime  # aware: DTCREAFLUX/HEUCREAFLUX, DSG Temps (an injected clock)

    @property
    def local_created_at(self) -> datetime:
        """created_at in Europe/Paris, as the formats write it."""
        return self.created_at.astimezone(PARIS)


@dataclass(frozen=True, slots=True)
class BuiltPart:
    path: Path  # plaintext output (.xml, or .zip for SGR), 0600, inside out_dir
    part: int  # 1-based
    seq: int
    record_keys: tuple[str, ...]  # record.key of each record in this part, in order
    received: tuple[date, ...]  # record.received of each, same order
    size: int
    sha256: str  # hex of the file bytes


@dataclass(frozen=True, slots=True)
class Target:
    """Where one build writes its parts: the folder, the ceiling of a part, and who numbers the parts."""

    out_dir: Path
    max_bytes: int
    seq_for_part: Callable[[int], int]


def output_name(header: FlowHeader, seq: int) -> str:
    """The file name of one part: technical fields only."""
    ext = "zip" if header.flow == "SGR" else "xml"
    return f"{header.flow}_{header.department}_{header.business_date:%Y%m%d}_{seq:06d}.{ext}"



# --- documents and their measure ---------------------------------------------------------


class Layout(Protocol):
    """One XML format: its envelope, how one record is written, and its trailer."""

    encoding: str
    declaration: bytes  # written verbatim: lxml's own uses single quotes, the samples double
    indent: str
    root_tag: str
    root_attrib: dict[str, str]

    @property
    def root_nsmap(self) -> dict[str, str] | None: ...  # read-only: a layout may fix it to a dict or None

    def header(self, out: Out, count: int, seq: int) -> None: ...

    def record(self, out: Out, record: Any, index: int, seq: int) -> None: ...

    def trailer(self, out: Out, count: int) -> None: ...


class HubeeUtf8Style:
    """How the HubEE samples of DSG and GRO write a document: UTF-8, standalone, four-space indent."""

    encoding = "UTF-8"
    declaration = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    indent = "    "


def _encode(layout: Layout, text: str) -> bytes:
    # A character the encoding cannot carry (ISO-8859-1's SGR index) is written as a reference.
    return text.encode(layout.encoding, "xmlcharrefreplace")


def frame(layout: Layout, records: Sequence[Any], seq: int, count: int) -> tuple[bytes, bytes]:
    """The document around its records: (declaration, root and header; trailer and root's end)."""
    out = Out(layout.indent)
    root = out.open_root(layout.root_tag, layout.root_attrib, layout.root_nsmap)
    start_part = getattr(layout, "start_part", None)
    if start_part is not None:  # a layout whose trailer depends on the part's records (GRO)
        start_part(records)
    layout.header(out, count, seq)
    head = layout.declaration + _encode(layout, root + out.take())
    layout.trailer(out, count)
    tail = _encode(layout, out.take() + "\n" + out.root_end(layout.root_tag) + "\n")
    return head, tail


def write_xml(
    fobj: IO[bytes],
    layout: Layout,
    records: Sequence[Any],
    seq: int,
    count: int | None = None,
    rendered: Callable[[Any, int, int], bytes] | None = None,
) -> None:
    """Write one complete document: declaration, header, the records, trailer.

    `count` defaults to len(records); it is given alone to measure an empty frame.
    `rendered(record, index, seq)` gives a record's bytes (a Sizer keeps those it measured).
    """
    count = len(records) if count is None else count
    head, tail = frame(layout, records, seq, count)
    fobj.write(head)
    render = rendered or Sizer(layout).rendered
    for index, record in enumerate(records, 1):
        fobj.write(render(record, index, seq))
    fobj.write(tail)


class Sizer:
    """Measures, byte for byte, what `write_xml` will write, and keeps the bytes it measured.

    Records are rendered in the root's namespace scope, as they are in the file. The bytes of
    the last measure of each record are kept until `rendered` hands them to the writer: a part
    holds at most `max_bytes` of them, and each record is rendered once, unless it moves to the
    next part (its index and the sequence number are in its content).
    """

    def __init__(self, layout: Layout):
        self.layout = layout
        self._out = Out(layout.indent)
        self._out.open_root(layout.root_tag, layout.root_attrib, layout.root_nsmap)
        self._kept: dict[int, tuple[int, int, bytes]] = {}

    def close(self) -> None:
        self._kept.clear()

    def __enter__(self) -> Sizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def frame(self, count: int, seq: int) -> int:
        """Size of a part holding `count` records, without the records themselves."""
        head, tail = frame(self.layout, (), seq, count)
        return len(head) + len(tail)

    def _render(self, record: Any, index: int, seq: int) -> bytes:
        self.layout.record(self._out, record, index, seq)
        return _encode(self.layout, self._out.take())

    def record(self, record: Any, index: int, seq: int) -> int:
        data = self._render(record, index, seq)
        self._kept[id(record)] = (index, seq, data)
        return len(data)

    def rendered(self, record: Any, index: int, seq: int) -> bytes:
        """The bytes of `record` at `index` in part `seq`: the measured ones when they are kept."""
        kept = self._kept.pop(id(record), None)
        if kept is not None and kept[0] == index and kept[1] == seq:
            return kept[2]
        return self._render(record, index, seq)

    def bytes_of(self, record: Any, index: int, seq: int) -> bytes:
        """The rendering itself (tests use it to check the measure)."""
        self.record(record, index, seq)
        return self._kept[id(record)][2]


# --- splitting into parts --------------------------------------------------------------


def plan_parts(
    records: Iterable[Any],
    target: Target,
    *,
    frame_cost: Callable[[int, int], int],
    record_cost: Callable[[Any, int, int], int],
    emit: Callable[[int, int, list[Any], int], BuiltPart],
) -> list[BuiltPart]:
    """Greedily fill parts up to `target.max_bytes` and emit each one when it is full.

    frame_cost(count, seq): the part's envelope for `count` records; record_cost(record,
    index, seq): one record at its 1-based `index` in the part. emit(part_no, seq,
    records, planned_size) writes the part. A record is moved to a new part only when
    the current part already has one: an oversized record goes alone in its part.
    """
    parts: list[BuiltPart] = []
    part_no, seq = 1, check_seq(target.seq_for_part(1))
    batch: list[Any] = []
    used = 0
    for record in records:
        cost = record_cost(record, len(batch) + 1, seq)
        if batch and frame_cost(len(batch) + 1, seq) + used + cost > target.max_bytes:
            parts.append(emit(part_no, seq, batch, frame_cost(len(batch), seq) + used))
            part_no, batch, used = part_no + 1, [], 0
            seq = check_seq(target.seq_for_part(part_no))
            # Re-measured: the index in the part and the sequence number are in the content.
            cost = record_cost(record, 1, seq)
        batch.append(record)
        used += cost
    parts.append(emit(part_no, seq, batch, frame_cost(len(batch), seq) + used))
    return parts


def check_seq(seq: int) -> int:
    if not isinstance(seq, int) or isinstance(seq, bool) or seq <= 0:
        raise ValueError("seq_for_part must return a positive integer")
    return seq


# --- owner-only, all-or-nothing files ----------------------------------------------------


class PartWriter:
    """Creates the parts of one build and removes them all if the build fails."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.written: list[Path] = []

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            for path in self.written:
                path.unlink(missing_ok=True)

    @contextmanager
    def create(self, name: str) -> Iterator[IO[bytes]]:
        """Yield a 0600 file opened for writing; on success it becomes out_dir/name."""
        final = self.out_dir / name
        if final in self.written:
            # Two parts would share a file name, the second replacing the first.
            raise ValueError("seq_for_part gave the same sequence number to two parts")
        # Not synced: a part is plaintext nothing trusts after a crash. Until its sealed copy is
        # archived (and that is synced), the next run rebuilds it, with the same sequence number.
        with atomic_file(final, create_parent=False, durable=False) as fobj:
            yield fobj
        self.written.append(final)

    def part(self, path: Path, part_no: int, seq: int, records: Sequence[Record]) -> BuiltPart:
        size, digest = _size_and_sha256(path)
        return BuiltPart(
            path=path,
            part=part_no,
            seq=seq,
            record_keys=tuple(r.key for r in records),
            received=tuple(r.received for r in records),
            size=size,
            sha256=digest,
        )


def _size_and_sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


# --- pieces shared by the two Cristal-family formats (GRO, SGR index) ---------------------


def cristal_identification_flux(
    out: Out, header: FlowHeader, *, applieme: str, typeflux: str, natflux: str, seq: int
) -> None:
    local = header.local_created_at
    with out.node("IdentificationFlux"):
        out.leaf("APPLIEME", applieme)
        out.leaf("NUMVERSIONAPPLIEME", "6200")
        out.leaf("TYPEFLUX", typeflux)
        out.leaf("NATFLUX", natflux)
        out.leaf("DTCREAFLUX", local.date().isoformat())
        # Cristal writes ten-thousandths of a second.
        out.leaf("HEUCREAFLUX", f"{local:%H:%M:%S}.{local.microsecond // 100:04d}")
        out.leaf("DTREF", header.business_date.isoformat())
        out.leaf("FONORG", "CAF")
        out.leaf("NUMORG", header.numorg)
        out.leaf("NUMSEQFLUX", str(seq))


class CristalCase(Protocol):
    """What identifies a case in Cristal's formats (a GroRecord, an SgrRecord)."""

    @property
    def numorg(self) -> str: ...

    @property
    def matricule(self) -> str: ...


def cristal_identification_dossier(out: Out, case: CristalCase, *, department: str, typeparte: str) -> None:
    with out.node("IdentificationDossier"):
        with out.node("Organisme"):
            out.leaf("FONORG", "CAF")
            out.leaf("NUMORG", case.numorg)
            out.leaf("MATRICULE", case.matricule)
        with out.node("Partenaire"):
            out.leaf("TYPEPARTE", typeparte)
            out.leaf("IDEPARTE", department)


def xml_part_emitter(
    header: FlowHeader, layout: Layout, writer: PartWriter, sizer: Sizer
) -> Callable[[int, int, list[Any], int], BuiltPart]:
    """The `emit` of plan_parts for a plain XML flow (GRO, DSG)."""

    def emit(part_no: int, seq: int, records: list[Any], planned: int) -> BuiltPart:
        name = output_name(header, seq)
        with writer.create(name) as fobj:
            write_xml(fobj, layout, records, seq, rendered=sizer.rendered)
            written = fobj.tell()
        if written != planned:
            # The splitting rests on this measure: a mismatch is a bug, not a data problem.
            raise RuntimeError(f"{name}: wrote {written} bytes, measured {planned}")
        return writer.part(writer.out_dir / name, part_no, seq, records)

    return emit


def build_xml(header: FlowHeader, layout: Layout, records: Iterable[Record], target: Target) -> list[BuiltPart]:
    """Build a plain XML flow (GRO, DSG) with `layout`."""
    with PartWriter(target.out_dir) as writer, Sizer(layout) as sizer:
        return plan_parts(
            records,
            target,
            frame_cost=sizer.frame,
            record_cost=sizer.record,
            emit=xml_part_emitter(header, layout, writer, sizer),
        )
