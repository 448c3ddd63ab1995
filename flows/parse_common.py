"""What every inbox parser shares: the size limits, the result, the refusal and the bounded read.

The flow-specific parsers (parse_dsg, parse_gro, parse_gro_xml, parse_sgr, parse_sgr_zip) and
the dispatcher (parse.parse_file) all import these; they live apart from the dispatcher so that
no parser has to import the module that imports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import InputFileError
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

