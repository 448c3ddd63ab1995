"""Reading the inbox files into typed records: the limits, the result, the dispatcher.

This is the only door between what upstream systems drop (docs/input-contract.md) and
the rest of the pipeline. It decides, per file, whether the whole file is unreadable
(`errors.InputFileError`: the caller quarantines it) or, per record, whether a record
is refused (`Reject`, with a value-free message; the rest of the file goes on). The
flow-specific parsers live in parse_dsg / parse_gro / parse_sgr; the parts they share live
beside them: parse_common (size limits, the result, the refusal), xmlread (the hardened XML
loader) and csvread (the ISO-8859-1 CSV reader).

Which shape a file is, is decided by its extension (inbox/claim.py only claims these):
DSG `.xml` (a DGE envelope `Agregat`, or a bare `dsgcnaf:DSGCNAF`: the root decides), GRO
`.xml` (Cristal's XML, the primary shape) or `.csv` (the secondary CSV extract), SGR
`.zip` (the scanning chain's zip, primary) or `.csv` (the secondary CSV index beside its
PDFs). See docs/input-contract.md.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from .parse_common import Limits, ParseResult
from .parse_dsg import parse_dsg
from .parse_gro import parse_gro
from .parse_gro_xml import parse_gro_xml
from .parse_sgr import parse_sgr
from .parse_sgr_zip import parse_sgr_zip

__all__ = ["Limits", "ParseResult", "parse_file"]


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
    if flow == "DSG":
        return parse_dsg(path, display_name=display_name, today=today, limits=limits)
    if flow == "GRO":
        if suffix == ".xml":
            return parse_gro_xml(path, display_name=display_name, today=today, limits=limits)
        return parse_gro(path, display_name=display_name, today=today, limits=limits)
    if flow == "SGR":
        if suffix == ".zip":
            return parse_sgr_zip(path, display_name=display_name, today=today, limits=limits)
        return parse_sgr(path, display_name=display_name, today=today, inbox_root=inbox_root, limits=limits)
    raise ValueError(f"unknown flow {flow!r}")

