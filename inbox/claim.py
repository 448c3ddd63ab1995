"""Takes input material out of the inbox exactly once.

A claim is recorded in the trace *before* any file moves (batch state `claiming`),
then each file is renamed into the batch's work folder, then the batch becomes
`claimed`. A crash in between is finished by the next run from the trace, so a file
is never read twice nor forgotten. The same bytes dropped again (same SHA-256) are
recognised and set aside, never emitted twice.

Upstream writers use a hidden or `.tmp`/`.part` name while writing: those are left alone.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path, PurePosixPath

from .. import faults
from ..fsutil import fsync_dir, private_dir
from ..trace.store import TraceStore

PATTERNS = {"DSG": ".xml", "GRO": ".csv", "SGR": ".csv"}
IGNORED_SUFFIXES = (".tmp", ".part", ".reason")


@dataclass(frozen=True, slots=True)
class Batch:
    id: int
    flow: str
    business_date: date
    dir: Path  # the claimed material: <work>/batch-<id>/<FLOW>/


def batch_dir(work: Path, batch_id: int, flow: str) -> Path:
    return work / f"batch-{batch_id:06d}" / flow


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def candidates(inbox: Path, flow: str) -> list[Path]:
    folder = inbox / flow
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.is_symlink() and not p.name.startswith(".")
                  and p.name.lower().endswith(PATTERNS[flow]) and not p.name.endswith(IGNORED_SUFFIXES))


def _scans_named_by(index: Path, folder: Path) -> list[str]:
    """The PDFs an SGR index names that are safe to move (the parser judges the rest)."""
    try:
        text = index.read_bytes().decode("iso-8859-1")
        rows = csv.DictReader(io.StringIO(text), delimiter=";")
        names = [r.get("FICHIER") or "" for r in rows]
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    safe = []
    for name in names:
        rel = PurePosixPath(name.strip())
        if not name.strip() or rel.is_absolute() or ".." in rel.parts or "\\" in name:
            continue
        p = folder / rel
        if p.is_file() and not p.is_symlink():
            safe.append(rel.as_posix())
    return sorted(set(safe))


def _move(src: Path, dst: Path) -> None:
    private_dir(dst.parent)
    os.replace(src, dst)


def claim(trace: TraceStore, *, inbox: Path, work: Path, consumed: Path, flow: str, business_date: date,
          run_id: int, now: datetime) -> tuple[Batch | None, list[str]]:
    """Claim the flow's new inbox files into one batch. Returns (batch or None, names set aside as duplicates)."""
    folder = inbox / flow
    entries: list[tuple[str, str, str, int]] = []
    duplicates: list[str] = []
    taken_scans: set[str] = set()
    for path in candidates(inbox, flow):
        digest = _sha256(path)
        if trace.known_input(flow, digest) is not None:
            dup_dir = private_dir(consumed / "duplicates" / flow)
            _move(path, dup_dir / f"{path.name}.{digest[:12]}")
            duplicates.append(path.name)
            continue
        entries.append((path.name, "input", digest, path.stat().st_size))
        if flow == "SGR":
            for rel in _scans_named_by(path, folder):
                if rel not in taken_scans:
                    taken_scans.add(rel)
                    scan = folder / rel
                    entries.append((rel, "scan", _sha256(scan), scan.stat().st_size))
    if not entries:
        return None, duplicates
    batch_id = trace.create_batch(flow, business_date, run_id, now, entries)
    finish_claim(trace, batch_id, inbox=inbox, work=work, flow=flow, now=now)
    return Batch(batch_id, flow, business_date, batch_dir(work, batch_id, flow)), duplicates


def finish_claim(trace: TraceStore, batch_id: int, *, inbox: Path, work: Path, flow: str, now: datetime) -> None:
    """Move the files of a `claiming` batch; safe to call again after a crash midway."""
    target = private_dir(batch_dir(work, batch_id, flow))
    for row in trace.batch_files(batch_id):
        src, dst = inbox / flow / row["name"], target / row["name"]
        if not dst.exists() and src.exists():
            _move(src, dst)
            faults.point("claim-move")
    fsync_dir(target)
    if (inbox / flow).exists():
        fsync_dir(inbox / flow)
    trace.set_batch_state(batch_id, "claimed", now)


def quarantine(src: Path, quarantine_root: Path, flow: str, name: str, code: str, reason: str) -> Path:
    """Set a whole unreadable input file aside, with a `.reason` file an operator can read."""
    folder = private_dir(quarantine_root / flow)
    dst = folder / name
    if src.exists():
        _move(src, dst)
    (folder / f"{name}.reason").write_text(f"{code}: {reason}\n", encoding="utf-8")
    return dst


def retire_batch(work: Path, consumed: Path, batch_id: int, business_date: date,
                 keep: Callable[[Path], object] | None = None) -> None:
    """Move a finished batch's material to `consumed/<date>/` (kept until the purge).

    With `keep` (the night's: archive/consumed.keep), the material is handed to it instead,
    to be kept encrypted only: plaintext consumed input must not stay readable at rest.
    """
    src = work / f"batch-{batch_id:06d}"
    if keep is not None:
        keep(src)
        return
    if src.exists():
        dst = private_dir(consumed / business_date.isoformat()) / src.name
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(src, dst)
