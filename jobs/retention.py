"""The retention purge: what is past its retention leaves the disk and the trace.

The convention sets two counts (config: `[retention]`):
- `archive_months` (3 at least, annexe 2 §3): an archived file is kept that long after its
  LAST transmission: the latest `delivered_at` among the emission and its re-emissions. A
  file never delivered (waiting for a partner, a held one included) is never purged.
- `trace_months` (3 at most, art. 5): the emission rows go that long after their last
  transmission (a re-emission is possible only while they are there); the other rows (runs,
  rejects, requests, anomalies...) that long after their own date. Consumed input (kept
  encrypted only, see archive/consumed.py), set-aside duplicates and quarantined input
  follow the trace: they are personal data.
When archive_months is longer, an archived file outlives its rows; it is then dated by its
mtime, which the delivery sets to the transmission (night.py `_stamp_transmission`).

Never purged: the `sequences` table (a sequence never goes back nor repeats), the `purges`
rows, the kept input of a batch whose records are parked for a département not enabled yet,
and batches still in progress with their emissions.

Crash safety: the purge is a sequence of idempotent steps, in an order where every
intermediate state is one the rest of flux-pmi understands.
1. In one transaction, the emissions to purge are *marked* (`purged_at`). From then on
   nothing delivers them (`to_deliver` skips them) and `reemit` refuses them as purged,
   even though their files and rows are still there.
2. The files of marked emissions past the archive retention are deleted, then the files no
   row accounts for (older than the archive retention by their date), then the consumed,
   duplicate and quarantined input.
3. In one transaction, the rows are deleted (the marked emissions and everything hanging off
   them, then the runs, batches, requests... older than the cutoff by their own dates), and
   a `purges` row records what was done.
Killed anywhere, a rerun redoes the marking (a no-op), deletes what is left and finishes.

`dry_run` computes the same counts and changes nothing: the row deletions are done in a
transaction that is rolled back, and no file is touched.
"""

from __future__ import annotations

import calendar
import os
import shutil
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from ..archive import ArchiveStore
from ..archive.consumed import SUFFIX as KEPT_SUFFIX
from ..archive.store import ARCHIVE_SUFFIX, SEALED_SUFFIX
from ..config.settings import Settings
from ..core.clock import PARIS
from ..core.log import get as get_logger
from ..testing import faults
from ..trace.lifecycle import TO_DELIVER
from ..trace.store import TraceStore

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


class _DryRun(Exception):
    """Raised inside the rows transaction of a dry run so that it is rolled back."""


@dataclass
class PurgeResult:
    cutoff: date  # the trace cutoff (trace_months)
    archive_cutoff: date | None = None  # archive_months, counted from the last transmission
    dry_run: bool = False
    archive_days: int = 0
    archive_files: int = 0  # sealed files (.p7m as delivered), originals and re-emissions
    emissions: int = 0
    undelivered: int = 0  # among `emissions`: purged although never delivered (reported as a warning)
    held: int = 0  # emissions older than the cutoff kept because their batch is still in progress
    parked: int = 0  # kept consumed batches older than the cutoff, kept because records wait in them
    rows: dict[str, int] = field(default_factory=dict)  # other trace rows deleted, by table
    consumed_dirs: int = 0
    duplicates: int = 0
    quarantined: int = 0  # quarantined input files (personal data) past the retention


def purge(
    settings: Settings, trace: TraceStore, archive: ArchiveStore, *, today: date, now: datetime,
    dry_run: bool = False,
) -> PurgeResult:
    """Delete archive files, trace rows and consumed material past their retention (see the module doc)."""
    log = get_logger("flux-pmi.retention")
    cutoff = retention_cutoff(today, settings.retention.trace_months)
    archive_cutoff = retention_cutoff(today, settings.retention.archive_months)
    result = PurgeResult(cutoff, archive_cutoff, dry_run)
    marked = _mark(trace, cutoff, now, result, dry_run=dry_run)

    days: set[Path] = set()
    for row in marked:
        if row["last"] is not None and row["last"][:10] < archive_cutoff.isoformat() and row["file_name"]:
            day = date.fromisoformat(row["business_date"])
            if dry_run:
                result.archive_files += int(archive.sealed_path(day, row["file_name"]).exists())
            else:
                result.archive_files += archive.purge_file(day, row["file_name"])
                faults.point("purge-mid")
            days.add(archive.day_dir(day))
    named = {r[0] for r in trace.db.execute("SELECT file_name FROM emissions WHERE file_name IS NOT NULL")}
    for day, folder in _archive_days(archive.root):
        if day >= archive_cutoff:
            continue
        for sealed in sorted(folder.glob("*" + SEALED_SUFFIX)):
            if sealed.name.endswith(ARCHIVE_SUFFIX):
                continue
            name = sealed.name.removesuffix(SEALED_SUFFIX)
            if name in named or _local_day(sealed) >= archive_cutoff:
                continue
            result.archive_files += 1
            days.add(folder)
            if not dry_run:
                archive.purge_file(day, name)
    for folder in sorted(days):
        if folder.is_dir() and not any(folder.iterdir()):
            result.archive_days += 1
            if not dry_run:
                folder.rmdir()
                _remove_empty_parents(folder, archive.root)
    keep = trace.parked_batches()
    result.consumed_dirs, result.duplicates, result.parked = _purge_consumed(
        settings.paths.consumed, cutoff, keep, dry_run=dry_run)
    result.quarantined = _purge_quarantine(settings.paths.quarantine, cutoff, dry_run=dry_run)

    try:
        _delete_rows(trace, cutoff, archive_cutoff, now, result, keep, dry_run=dry_run)
    except _DryRun:
        pass
    log.info(
        "purge.dry_run" if dry_run else "purge.done",
        cutoff=cutoff.isoformat(),
        archive_cutoff=archive_cutoff.isoformat(),
        archive_files=result.archive_files,
        emissions=result.emissions,
        consumed_dirs=result.consumed_dirs,
        duplicates=result.duplicates,
        quarantined=result.quarantined,
        held=result.held,
        parked=result.parked,
    )
    return result


def _local_day(path: Path) -> date:
    return datetime.fromtimestamp(path.stat().st_mtime, PARIS).date()


# An emission group is an original and its re-emissions (same flow, département, sequence): it
# is purged as a whole, from its last transmission, and only when none of it still has to go.
_GROUPS = f"""
SELECT flow, department, seq, MAX(delivered_at) AS last,
       SUM(CASE WHEN archived_at IS NULL
                  OR (status IN ({",".join(repr(str(s)) for s in TO_DELIVER)}) AND COALESCE(ack_status, '') != 'KO')
                  OR (batch_id IS NOT NULL AND batch_id IN (SELECT id FROM batches WHERE state != 'done'))
                THEN 1 ELSE 0 END) AS busy
FROM emissions GROUP BY flow, department, seq
"""


def _mark(trace: TraceStore, cutoff: date, now: datetime, result: PurgeResult, *, dry_run: bool) -> list[Any]:
    """Step 1: mark the groups whose last transmission is past the trace retention; return the marked rows
    (with their group's `last`), already marked ones included (a purge interrupted after marking)."""
    with trace.tx() as db:
        return _mark_in(db, cutoff, now, result, write=not dry_run)


def _mark_in(db: Any, cutoff: date, now: datetime, result: PurgeResult, *, write: bool) -> list[dict[str, Any]]:
    c = cutoff.isoformat()
    groups = db.execute(_GROUPS).fetchall()
    result.held = db.execute(
        "SELECT COUNT(*) FROM emissions WHERE business_date < ?"
        " AND batch_id IN (SELECT id FROM batches WHERE state != 'done')", (c,)).fetchone()[0]
    due = [g for g in groups if g["last"] is not None and g["last"][:10] < c and not g["busy"]]
    last = {(g["flow"], g["department"], g["seq"]): g["last"] for g in groups}
    if write:
        db.executemany(
            "UPDATE emissions SET purged_at=? WHERE flow=? AND department=? AND seq=? AND purged_at IS NULL",
            [(now.isoformat(), g["flow"], g["department"], g["seq"]) for g in due])
    keys = {(g["flow"], g["department"], g["seq"]) for g in due}
    rows = [r for r in db.execute("SELECT * FROM emissions ORDER BY id")
            if r["purged_at"] is not None or (r["flow"], r["department"], r["seq"]) in keys]
    return [{**dict(r), "last": last.get((r["flow"], r["department"], r["seq"]))} for r in rows]


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


def _purge_consumed(consumed: Path, cutoff: date, keep: set[int], *, dry_run: bool) -> tuple[int, int, int]:
    """`consumed/<YYYY-MM-DD>/` by business date (a batch whose records are parked stays);
    `consumed/duplicates/` file by file, by mtime. Returns (batches or folders, duplicates, kept as parked)."""
    dirs = parked = 0
    if not consumed.is_dir():
        return 0, 0, 0
    for entry in sorted(consumed.iterdir()):
        if entry.is_symlink() or not entry.is_dir() or entry.name == DUPLICATES_DIR:
            continue
        try:
            day = date.fromisoformat(entry.name)
        except ValueError:
            continue
        if day < cutoff:
            gone, kept = _purge_consumed_day(entry, keep, dry_run=dry_run)
            dirs, parked = dirs + gone, parked + kept
    return dirs, _purge_duplicates(consumed / DUPLICATES_DIR, cutoff, dry_run=dry_run), parked


def _purge_consumed_day(entry: Path, keep: set[int], *, dry_run: bool) -> tuple[int, int]:
    """One business date's kept batches, but those whose records are parked. Returns (removed, kept)."""
    dirs = parked = 0
    for item in sorted(entry.iterdir()):
        stem = item.name.removesuffix(KEPT_SUFFIX)
        batch_id = int(stem.removeprefix("batch-")) if stem.removeprefix("batch-").isdigit() else None
        if batch_id is not None and batch_id in keep:
            parked += 1
            continue
        dirs += 1
        if not dry_run:
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)
            else:
                item.unlink(missing_ok=True)
    if not dry_run and not any(entry.iterdir()):
        entry.rmdir()
    return dirs, parked


def _purge_duplicates(folder: Path, cutoff: date, *, dry_run: bool) -> int:
    # A duplicate carries no business date. Its mtime is the upstream writer's (a rename keeps
    # it), so it can only make the duplicate look older than its setting aside: it then goes
    # early, which is the safe side for a copy of material already emitted.
    dups = 0
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if path.is_file() and not path.is_symlink() and datetime.fromtimestamp(st.st_mtime, PARIS).date() < cutoff:
            dups += 1
            if not dry_run:
                path.unlink(missing_ok=True)
    return dups


def _delete_rows(trace: TraceStore, cutoff: date, archive_cutoff: date, now: datetime, result: PurgeResult,
                 keep: set[int], *, dry_run: bool) -> None:
    """Step 3: the marked emissions and their dependants, then the other tables by their own dates."""
    c = cutoff.isoformat()
    gone = "SELECT id FROM emissions WHERE purged_at IS NOT NULL"
    rows: dict[str, int] = {}
    kept = ",".join(str(int(b)) for b in sorted(keep)) or "-1"
    with trace.tx() as db:
        if dry_run:  # the marks step 1 would have made, in this transaction only
            _mark_in(db, cutoff, now, PurgeResult(cutoff), write=True)
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
            f" AND id NOT IN ({kept})"  # parked records: the batch is replayed under its id
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
        rows["holds"] = db.execute(
            "DELETE FROM holds WHERE resumed_at IS NOT NULL AND substr(resumed_at, 1, 10) < ?", (c,)
        ).rowcount
        rows["parked"] = db.execute(
            "DELETE FROM parked WHERE closed_at IS NOT NULL AND substr(closed_at, 1, 10) < ?", (c,)
        ).rowcount
        db.execute(
            "INSERT INTO purges(at, archive_cutoff, trace_cutoff, archive_files, emissions, consumed_dirs)"
            " VALUES (?,?,?,?,?,?)",
            (now.isoformat(), archive_cutoff.isoformat(), c, result.archive_files, result.emissions,
             result.consumed_dirs),
        )
        result.rows = rows
        if dry_run:
            raise _DryRun


def _purge_quarantine(quarantine: Path, cutoff: date, *, dry_run: bool = False) -> int:
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
            n += 1
            if not dry_run:
                shutil.rmtree(material, ignore_errors=True)
        elif os.path.lexists(material):  # a file, or a link / FIFO set aside as it was (never followed)
            n += 1
            if not dry_run:
                material.unlink(missing_ok=True)
        if not dry_run:
            reason.unlink(missing_ok=True)
    return n


def describe(result: PurgeResult) -> list[str]:
    """Operator-facing lines: counts only, never a name that could point at a person."""
    other = ", ".join(f"{k}={v}" for k, v in result.rows.items() if v)
    lines = [
        ("dry run, nothing changed: " if result.dry_run else "")
        + f"purge: trace cutoff {result.cutoff}, archive cutoff {result.archive_cutoff}"
        " (last transmission before them; other rows and input by their own date)",
        ("would delete " if result.dry_run else "") + f"archive: {result.archive_files} file(s),"
        f" {result.archive_days} day folder(s) emptied",
        f"trace: {result.emissions} emission(s)" + (f"; {other}" if other else ""),
        f"consumed: {result.consumed_dirs} batch(es), {result.duplicates} set-aside duplicate(s)"
        + (f"; {result.parked} batch(es) kept: their records are parked" if result.parked else ""),
        f"quarantine: {result.quarantined} file(s)",
    ]
    if result.undelivered:
        lines.append(f"warning: {result.undelivered} purged emission(s) had never been delivered")
    if result.held:
        lines.append(
            f"kept: {result.held} emission(s) older than the cutoff whose batch is still in progress"
        )
    return lines
