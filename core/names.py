"""The emission file-name grammar, built and parsed in one place.

A sealed file travels under a technical name only (no personal data ever reaches a file
name): flow, département, business date, sequence, and for a split file its part, for a
re-emission its copy number. The sender builds these names, the HubEE adapter derives its
externalId from them, the receiving side recognises them, the ack names them
(schemas/ack.xsd holds the same grammar as patterns). Before this module each of those
places had its own regular expression; now they all read the one below.

It sits in `core` so that transports, the trace, the jobs and the receiving side may all use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

__all__ = ["ACK_SUFFIX", "EmissionName", "ack_name", "build", "emission_name", "parse"]

ACK_SUFFIX = ".ack.xml"

_GRAMMAR = re.compile(
    r"^(?P<flow>DSG|GRO|SGR)_(?P<department>0[0-9]{2}|02[AB]|97[1-6]|69M)_(?P<date>[0-9]{8})_(?P<seq>[0-9]{6})"
    r"(?:_P(?P<part>[1-9][0-9]*)of(?P<parts>[1-9][0-9]*))?(?:_R(?P<reemission>[0-9]{2,4}))?"
    r"\.(?P<ext>xml|zip)(?P<sealed>\.p7m)?$"
)


@dataclass(frozen=True, slots=True)
class EmissionName:
    """One emission's technical name, as its fields."""

    flow: str  # DSG, SGR or GRO
    department: str  # registry code: 035, 02A, 971, 69M
    business_date: date
    seq: int
    part: int = 1
    parts: int = 1
    reemission_no: int = 0  # 0 for the original, n for its `_Rnn` copy
    ext: str = ""  # "xml" or "zip"; empty: the flow's own (SGR travels as a zip)
    sealed: bool = True  # a `.p7m`; HubEE's receiving side also sees the unsealed formats

    @property
    def extension(self) -> str:
        return self.ext or ("zip" if self.flow == "SGR" else "xml")

    @property
    def fits(self) -> bool:
        """The extension is the flow's own (an SGR is a zip, the others XML)."""
        return (self.flow == "SGR") == (self.extension == "zip")

    @property
    def is_original(self) -> bool:
        return self.reemission_no == 0

    def __str__(self) -> str:
        return build(self)


def build(name: EmissionName) -> str:
    """The file name of `name`'s fields."""
    stem = f"{name.flow}_{name.department}_{name.business_date:%Y%m%d}_{name.seq:06d}"
    if name.parts > 1:
        stem += f"_P{name.part}of{name.parts}"
    if name.reemission_no:
        stem += f"_R{name.reemission_no:02d}"
    return f"{stem}.{name.extension}" + (".p7m" if name.sealed else "")


def parse(file_name: str) -> EmissionName | None:
    """The fields of a technical name; None for any other name (a calendar-impossible date included)."""
    m = _GRAMMAR.match(file_name)
    if m is None:
        return None
    try:
        day = datetime.strptime(m["date"], "%Y%m%d").date()
    except ValueError:
        return None
    return EmissionName(
        flow=m["flow"],
        department=m["department"],
        business_date=day,
        seq=int(m["seq"]),
        part=int(m["part"] or 1),
        parts=int(m["parts"] or 1),
        reemission_no=int(m["reemission"] or 0),
        ext=m["ext"],
        sealed=bool(m["sealed"]),
    )


def emission_name(flow: str, department: str, business_date: date, seq: int, part: int, parts: int,
                  reemission_no: int = 0) -> str:
    """Technical file names only: flow, département, date, sequence (and part / re-emission)."""
    return build(EmissionName(flow, department, business_date, seq, part, parts, reemission_no))


def ack_name(file_name: str) -> str:
    """The name a receiver gives the ack of `file_name`."""
    return file_name + ACK_SUFFIX
