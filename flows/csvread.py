"""Reading an ISO-8859-1, semicolon-separated inbox CSV (GRO and SGR secondary shapes), hostile input first.

The decisions:
- Encoding: the contract says ISO-8859-1, in which every byte sequence decodes, so a
  wrong producer would go unnoticed and names would be silently mangled. We refuse a
  byte-order mark (UTF-8, UTF-16), NUL bytes (a UTF-16 or binary file), and a file
  that is valid UTF-8 *and* holds multi-byte sequences (UTF-8 where Latin-1 is
  expected). A pure-ASCII file is fine either way.
- Line numbers are physical lines (the header is line 1); a record whose quoted field
  holds a newline is reported at the line where it starts. Blank lines are skipped.
- Header names are matched exactly (surrounding spaces stripped, case kept). A missing
  contract column, an empty column name or a duplicated name quarantines the file.
  Header messages name only contract columns: if a producer forgot the header, its
  first row is personal data and must not be echoed.
- Only the contract's columns are copied out of each row; other columns (a real GRO
  extract's NIR, phone, e-mail) are never put in any object.
- A field longer than the csv module's default ceiling (128 KiB) is read, then refused
  by its record's length check (FIELD_TOO_LONG): one over-long field must not
  quarantine the valid rows around it. The file-size ceiling still bounds memory.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from pathlib import Path

from ..core.errors import InputFileError
from .parse_common import Limits, check_file_size

_BOMS = {
    codecs.BOM_UTF8: "a UTF-8 byte-order mark",
    codecs.BOM_UTF16_LE: "a UTF-16 byte-order mark",
    codecs.BOM_UTF16_BE: "a UTF-16 byte-order mark",
}
_CHUNK = 1 << 20


def check_latin1(path: Path, display_name: str, limits: Limits) -> None:
    """Refuse a CSV that is evidently not ISO-8859-1, streaming so memory stays flat."""
    check_file_size(path, display_name, limits)
    decoder = codecs.getincrementaldecoder("utf-8")()
    utf8_valid, multibyte, total, line = True, False, 0, 1
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            if total == 0:
                for bom, what in _BOMS.items():
                    if chunk.startswith(bom):
                        raise InputFileError(display_name, 1, f"{what}: ISO-8859-1 expected", code="ENCODING")
            total += len(chunk)
            if total > limits.max_input_bytes:
                raise InputFileError(
                    display_name, None, f"the file exceeds {limits.max_input_bytes} bytes", code="TOO_LARGE"
                )
            nul = chunk.find(b"\x00")
            if nul >= 0:
                where = line + chunk.count(b"\n", 0, nul)
                raise InputFileError(
                    display_name,
                    where,
                    "NUL byte: ISO-8859-1 text expected (UTF-16 or binary?)",
                    code="ENCODING",
                )
            line += chunk.count(b"\n")
            if utf8_valid:
                multibyte = multibyte or not chunk.isascii()
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    utf8_valid = False
    if total == 0:
        raise InputFileError(display_name, None, "the file is empty", code="EMPTY")
    if utf8_valid:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8_valid = False
    if utf8_valid and multibyte:
        raise InputFileError(display_name, None, "UTF-8 text: ISO-8859-1 expected", code="ENCODING")


def read_csv(
    path: Path, display_name: str, columns: tuple[str, ...], limits: Limits
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (start line, {contract column: value stripped of surrounding spaces}) per record.

    Raises InputFileError (ENCODING, CSV_HEADER, CSV_SHAPE, TOO_LARGE, EMPTY) as soon as
    the file shows it cannot be read as a whole.
    """
    check_latin1(path, display_name, limits)
    # Raised, never lowered (process-wide): an over-long field is a record's problem.
    if csv.field_size_limit() < limits.max_input_bytes:
        csv.field_size_limit(limits.max_input_bytes)
    with open(path, encoding="iso-8859-1", newline="") as fh:
        reader = csv.reader(fh, delimiter=";", quotechar='"', doublequote=True, strict=True)
        previous = 0  # reader.line_num after the previous row: the next row starts on the line after
        try:
            header: list[str] = []
            for row in reader:
                previous = reader.line_num
                if row:
                    header = row
                    break
            index = _header_index(header, columns, display_name, previous)
            width = len(header)
            count = 0
            for row in reader:
                start, previous = previous + 1, reader.line_num
                if not row:
                    continue
                if len(row) != width:
                    raise InputFileError(
                        display_name,
                        start,
                        f"{len(row)} fields where the header has {width}",
                        code="CSV_SHAPE",
                    )
                count += 1
                if count > limits.max_records_per_file:
                    raise InputFileError(
                        display_name,
                        start,
                        f"more than {limits.max_records_per_file} records",
                        code="TOO_LARGE",
                    )
                yield start, {name: row[i].strip(" ") for name, i in index.items()}
        except csv.Error:
            raise InputFileError(
                display_name, previous + 1, "broken quoting or oversized field", code="CSV_SHAPE"
            ) from None


def _header_index(
    header: list[str], columns: tuple[str, ...], display_name: str, line: int
) -> dict[str, int]:
    if not header:
        raise InputFileError(display_name, None, "no header row", code="CSV_HEADER")
    names = [name.strip(" ") for name in header]
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if not name:
            raise InputFileError(
                display_name, line, f"empty column name at position {position}", code="CSV_HEADER"
            )
        if name in seen:
            # Name it only if it is a contract column: an unknown "name" may be personal data.
            what = f"column {name}" if name in columns else f"the column at position {position}"
            raise InputFileError(display_name, line, f"{what} appears twice", code="CSV_HEADER")
        seen[name] = position - 1
    missing = [name for name in columns if name not in seen]
    if missing:
        raise InputFileError(
            display_name, line, f"missing required column(s): {', '.join(missing)}", code="CSV_HEADER"
        )
    return {name: seen[name] for name in columns}
