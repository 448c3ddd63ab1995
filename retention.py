"""The retention purge: what is older than the retention period leaves the disk and the trace.

The convention keeps the flows 3 months after transmission (annexe 2 §3) and the trace of
the exchanges at most 3 months (art. 5); personal data must not outlive their purpose
(RGPD). So one period, `[retention] months` (3 by default, never less: checked at load),
governs the archive, the trace rows and the consumed inbox material: a trace row is what
makes an archived file re-emittable, so the two go together.

Crash safety: the purge is a sequence of idempotent steps, in an order where every
intermediate state is one the rest of flux-pmi understands.
1. In one transaction, the emissions to purge are *marked* (`purged_at`). From then on
   nothing delivers them (`to_deliver` skips them) and `reemit` refuses them as purged,
   even though their files and rows are still there.
2. The archive day folders older than the cutoff are deleted (files of marked emissions only
   ever live there), then the consumed inbox material.
3. In one transaction, the rows are deleted (the marked emissions and everything hanging off
   them, then the runs, batches, requests... older than the cutoff by their own dates), and
   a `purges` row records what was done.
Killed anywhere, a rerun redoes the marking (a no-op), deletes what is left and finishes.
Deleting the rows first instead would leave files no row accounts for; deleting the files
first would leave rows promising a file that is gone.

Kept whatever their age: batches still being processed (not `done`) and their emissions,
which the night still owns; the `purges` rows themselves (no personal data, and they are
how `reemit` tells "purged" from "never emitted" after the fact).
"""

from __future__ import annotations

import calendar
import os
import shutil
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from . import faults
from .archive import ArchiveStore
from .clock import PARIS
from .config.settings import Settings
from .log import get as get_logger
from .trace.store import TraceStore

DUPLICATES_DIR = "duplicates"


def retention_cutoff(today: date, months: int) -> date:
    """`today` minus `months` calendar months, the day clamped to the month's end.

    Business dates strictly before the cutoff are outside retention: on 2026-11-23 with
    3 months, 2026-08-23 is still kept and 2026-08-22 is not. 2026-05-31 gives 2026-02-28.
    """
    if months < 0:
        raise ValueError("months must be >= 0")
    index = today.year * 12 + (today.month - 1) - months
    year, month = divmod(index, 12)
    month += 1
    return date(year, month, min(today.day, calendar.monthrange(year, month)[1]))


def last_purge_cutoff(trace: TraceStore) -> date | None:
    """The latest cutoff a purge applied: dates before it may be gone even if retention grew since."""
    row = trace.db.execute("SELECT MAX(archive_cutoff) FROM purges").fetchone()
    return date.fromisoformat(row[0]) if row and row[0] else None


@dataclass
class PurgeResult:
    cutoff: date
    archive_days: int = 0
    archive_files: int = 0  # sealed files (.p7m as delivered), originals and re-emissions
    emissions: int = 0
    undelivered: int = 0  # among `emissions`: purged although never delivered (reported as a warning)
    held: int = 0  # emissions older than the cutoff kept because their batch is still in progress
    rows: dict[str, int] = field(default_factory=dict)  # other trace rows deleted, by table
    consumed_dirs: int = 0
    duplicates: int = 0
    quarantined: int = 0  # quarantined input files (personal data) past the retention


def purge(
    settings: Settings, trace: TraceStore, archive: ArchiveStore, *, today: date, now: datetime
) -> PurgeResult:
    """Delete archive files, trace rows and consumed material older than the retention period."""
    log = get_logger("flux-pmi.retention")
    cutoff = retention_cutoff(today, settings.retention.months)
    result = PurgeResult(cutoff)
    held_days = _mark(trace, cutoff, now, result)

    for day, folder in _archive_days(archive.root):
        if day < cutoff and day not in held_days:
            result.archive_files += archive.purge_day(day)
            faults.point("purge-mid")
            result.archive_days += 1
            _remove_empty_parents(folder, archive.root)
    result.consumed_dirs, result.duplicates = _purge_consumed(settings.paths.consumed, cutoff)
    result.quarantined = _purge_quarantine(settings.paths.quarantine, cutoff)

    _delete_rows(trace, cutoff, now, result)
    log.info(
        "purge.done",
        cutoff=cutoff.isoformat(),
        archive_files=result.archive_files,
        emissions=result.emissions,
        consumed_dirs=result.consumed_dirs,
        duplicates=result.duplicates,
        quarantined=result.quarantined,
        held=result.held,
    )
    if result.undelivered:
        log.warning("purge.undelivered", cutoff=cutoff.isoformat(), emissions=result.undelivered)
    return result


def _mark(trace: TraceStore, cutoff: date, now: datetime, result: PurgeResult) -> set[date]:
    """Step 1: mark what goes; return the days whose folder must stay (an open batch owns them)."""
    c = cutoff.isoformat()
    open_batches = "SELECT id FROM batches WHERE state != 'done'"
    with trace.tx() as db:
        held = db.execute(
            f"SELECT DISTINCT business_date FROM emissions WHERE business_date < ? AND batch_id IN ({open_batches})",
            (c,),
        ).fetchall()
        result.held = db.execute(
            f"SELECT COUNT(*) FROM emissions WHERE business_date < ? AND batch_id IN ({open_batches})", (c,)
        ).fetchone()[0]
        held_days = {date.fromisoformat(r[0]) for r in held}
        marks = ",".join("?" * len(held_days))
        # A re-emission has no batch: it goes with its day unless that day is held.
        db.execute(
            "UPDATE emissions SET purged_at=? WHERE business_date < ? AND purged_at IS NULL"
            f" AND business_date NOT IN ({marks})",
            (now.isoformat(), c, *sorted(d.isoformat() for d in held_days)),
        )
    return held_days


def _archive_days(root: Path) -> list[tuple[date, Path]]:
    """The `<root>/YYYY/MM/DD` folders; anything else in the tree is not ours to judge."""
    days = []
    for year in _subdirs(root):
        for month in _subdirs(year):
            for day in _subdirs(month):
                try:
                    days.append((date(int(year.name), int(month.name), int(day.name)), day))
                except ValueError:
                    continue
    return sorted(days)


def _subdirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and p.name.isdigit())


def _remove_empty_parents(folder: Path, root: Path) -> None:
    for parent in (folder.parent, folder.parent.parent):
        if parent == root or root not in parent.parents:
            return
        try:
            parent.rmdir()
        except OSError:
            return  # not empty: younger days live there


def _purge_consumed(consumed: Path, cutoff: date) -> tuple[int, int]:
    """`consumed/<YYYY-MM-DD>/` by business date; `consumed/duplicates/` file by file, by mtime."""
    dirs = dups = 0
    if not consumed.is_dir():
        return 0, 0
    for entry in sorted(consumed.iterdir()):
        if entry.is_symlink() or not entry.is_dir() or entry.name == DUPLICATES_DIR:
            continue
        try:
            day = date.fromisoformat(entry.name)
        except ValueError:
            continue
        if day < cutoff:
            shutil.rmtree(entry)
            dirs += 1
    # A duplicate carries no business date. Its mtime is the upstream writer's (a rename keeps
    # it), so it can only make the duplicate look older than its setting aside: it then goes
    # early, which is the safe side for a copy of material already emitted.
    for path in (
        sorted((consumed / DUPLICATES_DIR).rglob("*")) if (consumed / DUPLICATES_DIR).is_dir() else []
    ):
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if (
            path.is_file()
            and not path.is_symlink()
            and datetime.fromtimestamp(st.st_mtime, PARIS).date() < cutoff
        ):
            path.unlink(missing_ok=True)
            dups += 1
    return dirs, dups


def _delete_rows(trace: TraceStore, cutoff: date, now: datetime, result: PurgeResult) -> None:
    """Step 3: the marked emissions and their dependants, then the other tables by their own dates."""
    c = cutoff.isoformat()
    gone = "SELECT id FROM emissions WHERE purged_at IS NOT NULL"
    rows: dict[str, int] = {}
    with trace.tx() as db:
        result.undelivered = db.execute(
            "SELECT COUNT(*) FROM emissions WHERE purged_at IS NOT NULL AND delivered_at IS NULL"
        ).fetchone()[0]
        rows["emission_events"] = db.execute(
            f"DELETE FROM emission_events WHERE emission_id IN ({gone})"
        ).rowcount
        rows["records"] = db.execute(f"DELETE FROM records WHERE emission_id IN ({gone})").rowcount
        rows["acks"] = db.execute(
            f"DELETE FROM acks WHERE emission_id IN ({gone})"
            " OR (emission_id IS NULL AND substr(received_at, 1, 10) < ?)",
            (c,),
        ).rowcount
        # Re-emissions first: they point at their original.
        result.emissions = db.execute(
            "DELETE FROM emissions WHERE purged_at IS NOT NULL AND reemission_no > 0"
        ).rowcount
        result.emissions += db.execute("DELETE FROM emissions WHERE purged_at IS NOT NULL").rowcount
        old_batches = (
            "SELECT id FROM batches WHERE business_date < ? AND state = 'done'"
            " AND id NOT IN (SELECT batch_id FROM emissions WHERE batch_id IS NOT NULL)"
        )
        rows["inbox_files"] = db.execute(
            f"DELETE FROM inbox_files WHERE batch_id IN ({old_batches})", (c,)
        ).rowcount
        rows["rejects"] = db.execute(
            f"DELETE FROM rejects WHERE batch_id IN ({old_batches}) OR substr(created_at, 1, 10) < ?", (c, c)
        ).rowcount
        rows["batches"] = db.execute(f"DELETE FROM batches WHERE id IN ({old_batches})", (c,)).rowcount
        rows["runs"] = db.execute(
            "DELETE FROM runs WHERE substr(started_at, 1, 10) < ? AND id NOT IN (SELECT run_id FROM batches)",
            (c,),
        ).rowcount
        rows["anomalies"] = db.execute("DELETE FROM anomalies WHERE substr(at, 1, 10) < ?", (c,)).rowcount
        rows["reemission_requests"] = db.execute(
            "DELETE FROM reemission_requests WHERE substr(requested_at, 1, 10) < ?", (c,)
        ).rowcount
        db.execute(
            "INSERT INTO purges(at, archive_cutoff, trace_cutoff, archive_files, emissions, consumed_dirs)"
            " VALUES (?,?,?,?,?,?)",
            (now.isoformat(), c, c, result.archive_files, result.emissions, result.consumed_dirs),
        )
    result.rows = rows


def _purge_quarantine(quarantine: Path, cutoff: date) -> int:
    """Quarantined input holds personal data too: it goes once its `.reason` is past the retention.

    The `.reason` file is written by flux-pmi when it quarantines, so its mtime is the date of
    the quarantine (the input's own mtime is the upstream writer's).
    """
    n = 0
    if not quarantine.is_dir():
        return 0
    for reason in sorted(quarantine.glob("*/*.reason")):
        try:
            st = reason.lstat()
        except FileNotFoundError:
            continue
        if reason.is_symlink() or datetime.fromtimestamp(st.st_mtime, PARIS).date() >= cutoff:
            continue
        material = reason.with_name(reason.name.removesuffix(".reason"))
        if material.is_dir() and not material.is_symlink():  # a folder set aside under an input's name
            shutil.rmtree(material, ignore_errors=True)
            n += 1
        elif os.path.lexists(material):  # a file, or a link / FIFO set aside as it was (never followed)
            material.unlink(missing_ok=True)
            n += 1
        reason.unlink(missing_ok=True)
    return n


def describe(result: PurgeResult) -> list[str]:
    """Operator-facing lines: counts only, never a name that could point at a person."""
    other = ", ".join(f"{k}={v}" for k, v in result.rows.items() if v)
    lines = [
        f"purge: cutoff {result.cutoff} (business dates before it are purged)",
        f"archive: {result.archive_files} file(s) in {result.archive_days} day folder(s)",
        f"trace: {result.emissions} emission(s)" + (f"; {other}" if other else ""),
        f"consumed: {result.consumed_dirs} day folder(s), {result.duplicates} set-aside duplicate(s)",
        f"quarantine: {result.quarantined} file(s)",
    ]
    if result.undelivered:
        lines.append(f"warning: {result.undelivered} purged emission(s) had never been delivered")
    if result.held:
        lines.append(
            f"kept: {result.held} emission(s) older than the cutoff whose batch is still in progress"
        )
    return lines
