"""Write one extracted flow file as the département's tables and scans, all or nothing.

What the PMI's applications ingest is a folder per delivered file:

    <dest>/records.csv              the rows, for people and spreadsheets
    <dest>/records.parquet          the same rows, for programs
    <dest>/scans/<record_key>/scan.pdf   SGR only: one folder per record

The folder is built under a hidden sibling name (`.staging-<name>`), synced, then renamed
into place: an ingesting job that sees `<dest>` sees all of it, and a crash or an error
leaves no `<dest>` at all (a leftover staging folder is removed by the next attempt). An
existing `<dest>` is never touched or merged into: the caller decides what a second
delivery of the same file means.

These files are personal data under professional secrecy: files are created 0600 and
folders 0700 from the start (not chmod-ed afterwards), and no name from the delivered
file is ever used as a path: scan folders are named by the record_key.

The CSV is for French spreadsheets: UTF-8 with a BOM (without it Excel reads it as
Windows-1252 and breaks every accent), `;` as separator, CRLF line ends. A cell that
starts with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, so that a
spreadsheet shows it as text instead of running it as a formula; the sender refuses such
names already, this is defence in depth. The Parquet file keeps the values unchanged.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..core.fsutil import exclusive_dir as _mkdir
from ..core.fsutil import exclusive_file as _create
from ..core.fsutil import fsync_dir, private_dir
from ..core.fsutil import remove_path as _remove
from .extract import COLUMNS, RECORD_KEY, Extracted, open_zip, scan_chunks, scan_file

__all__ = ["FORMATS", "write_outputs"]

FORMATS = ("csv", "parquet")
CSV_NAME = "records.csv"
PARQUET_NAME = "records.parquet"
STAGING_PREFIX = ".staging-"

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def write_outputs(
    extracted: Extracted,
    plain: bytes,
    dest: Path,
    *,
    formats: Iterable[str] = FORMATS,
) -> list[Path]:
    """Create the folder `dest` (which must not exist) with the outputs; return their paths."""
    formats = tuple(formats)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown output format(s) {', '.join(unknown)}; expected csv and/or parquet")
    dest = Path(dest)
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, "output folder already exists", str(dest))
    # The scans are read from `plain` by member name: it must be the very file extracted.
    if hashlib.sha256(plain).hexdigest() != extracted.content_sha256:
        raise ValueError("plain is not the file these rows were extracted from")
    _check_keys(extracted)

    parent = private_dir(dest.parent)
    staging = parent / f"{STAGING_PREFIX}{dest.name}"
    _remove(staging)
    _mkdir(staging)
    written: list[str] = []
    try:
        columns = COLUMNS[extracted.flow]
        if "csv" in formats:
            _write_csv(staging / CSV_NAME, columns, extracted.rows)
            written.append(CSV_NAME)
        if "parquet" in formats:
            _write_parquet(staging / PARQUET_NAME, columns, extracted.rows)
            written.append(PARQUET_NAME)
        if extracted.scans:
            written += _write_scans(staging, extracted, plain)
        fsync_dir(staging)
        # Checked again: something may have appeared while we wrote, and rename(2) would
        # silently replace an empty folder.
        if os.path.lexists(dest):
            raise FileExistsError(errno.EEXIST, "output folder already exists", str(dest))
        os.rename(staging, dest)
    except BaseException:
        _remove(staging, quiet=True)
        raise
    fsync_dir(parent)
    return [dest / name for name in written]


def _check_keys(extracted: Extracted) -> None:
    # record_key names a folder: it must be the digest-and-rank shape extract() makes.
    keys = [row.get("record_key", "") for row in extracted.rows] + [s.record_key for s in extracted.scans]
    if not all(RECORD_KEY.fullmatch(key) for key in keys):
        raise ValueError("a record_key is not of the form <12 hex>-<rank>")
    if len({s.record_key for s in extracted.scans}) != len(extracted.scans):
        raise ValueError("two scans share a record_key")


def neutralise(value: str) -> str:
    """The CSV form of a cell: a leading `'` keeps a spreadsheet from running it as a formula."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    with _create(path) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
        writer = csv.writer(text, delimiter=";", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([neutralise(row[name]) for name in columns])
        text.flush()
        os.fsync(raw.fileno())


def _write_parquet(path: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    # Built column by column with an explicit dtype so that an empty file keeps string columns.
    frame = pd.DataFrame({name: pd.array([row[name] for row in rows], dtype="string") for name in columns})
    with _create(path) as fh:
        frame.to_parquet(fh, index=False, engine="pyarrow")
        fh.flush()
        os.fsync(fh.fileno())


def _write_scans(staging: Path, extracted: Extracted, plain: bytes) -> list[str]:
    written: list[str] = []
    scans_dir = staging / "scans"
    _mkdir(scans_dir)
    with open_zip(plain) as archive:
        for scan in extracted.scans:
            relative = scan_file(scan.record_key)
            target = staging / relative
            _mkdir(target.parent)
            with _create(target) as fh:
                # extract() vetted scan.size against the limits: it is the cap here.
                for chunk in scan_chunks(archive, scan, scan.size):
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(target.parent)
            written.append(relative)
    fsync_dir(scans_dir)
    return written
