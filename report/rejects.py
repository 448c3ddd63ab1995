"""The rejects report: one CSV per run that operators open in a spreadsheet.

It exists apart from the night because what it carries comes from outside (file names,
values quoted in messages): a cell that starts like a formula (`=`, `+`, `-`, `@`, or a
tab or carriage return before one) is run by Excel or LibreOffice when the file is
opened. Every cell is neutralised as OWASP advises ("CSV injection"): a single quote is
put in front, which the spreadsheet shows as text and a reader of the raw CSV can strip.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..core.fsutil import atomic_write

COLUMNS = ("flow", "department", "file", "line", "code", "message")
# Rows of the report that are warnings, not rejects: the record was still delivered
# (docs/input-contract.md). The night's summary and the metrics leave them out of their counts.
WARNING_CODES = ("ADDRESSING_MISMATCH",)
# The ASCII triggers, and their full-width forms (some spreadsheets fold them to ASCII).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralise(value: object) -> str:
    """A cell's text that no spreadsheet evaluates: `'` in front of what starts like a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def render(rows: Iterable[Sequence[object]]) -> bytes:
    """The report's bytes: `;`-separated UTF-8, a header, one neutralised row per reject."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";", lineterminator="\n")
    w.writerow(COLUMNS)
    # A lone CR is not quoted by the csv module (only the line terminator's characters are): as LF it is.
    w.writerows([neutralise(v).replace("\r\n", "\n").replace("\r", "\n") for v in row] for row in rows)
    return buf.getvalue().encode("utf-8")


def write(path: Path, rows: Iterable[Sequence[object]]) -> Path:
    """Write the report atomically, owner-only (it names input files)."""
    atomic_write(path, render(rows))
    return path
