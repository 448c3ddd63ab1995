"""Build the output files of one flow for one département and one night.

`build()` turns the checked, routed and sorted records of one (flow, département, date)
into one or more numbered files ("parts") in `out_dir`, ready to be validated, sealed,
archived and sent. The format of each flow lives in build_gro.py, build_dsg.py and
build_sgr.py; what they share (streaming, splitting into parts, owner-only all-or-nothing
files, determinism) lives in build_common.py, whose docstring tells the decisions.

The builders do not validate: the orchestrator runs `schemas.validate_*` on each part.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from . import codes
from .build_common import BuiltPart, FlowHeader, Target, output_name
from .build_dsg import build_dsg
from .build_gro import build_gro
from .build_sgr import build_sgr
from .records import FLOWS, DsgRecord, GroRecord, Record, SgrRecord

__all__ = ["BuiltPart", "FlowHeader", "build", "output_name"]

_NUMORG = re.compile(r"[0-9]{3}")

R = TypeVar("R", DsgRecord, GroRecord, SgrRecord)


def build(
    header: FlowHeader,
    records: Iterable[Record],
    *,
    out_dir: Path,
    max_bytes: int,
    seq_for_part: Callable[[int], int],
) -> list[BuiltPart]:
    """Write the parts of `header.flow` for `records` (already sorted) into `out_dir`."""
    _check_header(header)
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ValueError(f"out_dir {out_dir} is not a directory")
    target = Target(out_dir, max_bytes, seq_for_part)
    if header.flow == "GRO":
        return build_gro(header, _typed(header.flow, records, GroRecord), target)
    if header.flow == "DSG":
        return build_dsg(header, _typed(header.flow, records, DsgRecord), target)
    return build_sgr(header, _typed(header.flow, records, SgrRecord), target)


def _check_header(header: FlowHeader) -> None:
    if header.flow not in FLOWS:
        raise ValueError(f"unknown flow {header.flow!r}")
    if header.department not in codes.RECIPIENTS:
        raise ValueError("header.department is not a département on 3 characters")
    if not _NUMORG.fullmatch(header.numorg):
        raise ValueError("header.numorg must be 3 digits")
    if header.flow == "DSG" and not re.fullmatch(r"[0-9]{14}", header.siret):
        raise ValueError("header.siret must be 14 digits for a DSG flow")
    if header.created_at.tzinfo is None or header.created_at.utcoffset() is None:
        raise ValueError("header.created_at must be timezone-aware")


def _typed(flow: str, records: Iterable[Record], expected: type[R]) -> Iterator[R]:
    # A record of another flow here is a routing bug: stop before it reaches a file.
    for record in records:
        if not isinstance(record, expected):
            raise TypeError(f"a {type(record).__name__} was given to the {flow} builder")
        yield record
