"""Keeps each emitted file for the retention period, encrypted at rest.

Two copies per emission, both CMS-enveloped so nothing is readable on disk:
- `<name>.p7m`, exactly the bytes delivered to the département (re-emission as is);
- `<name>.archive.p7m`, the signed plaintext enveloped for the sender's own archive
  certificate, so a re-emission can be re-sealed when the département's certificate
  has changed since.
Layout: `<root>/<business date YYYY/MM/DD>/<name>...`, which makes the purge by date cheap.

A file re-sealed for a renewed certificate while it waited keeps its earlier delivered copy
beside the new one (`<name>.p7m.<digest>.superseded`) until the emission is delivered: a delivery
that a crash kept out of the trace may have left that one at the partner, and then it is the copy
the partner holds, so it becomes the archived one again.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from datetime import date
from pathlib import Path

from ..core.errors import ArchiveError
from ..core.fsutil import atomic_write, fsync_dir, private_dir, remove_temp_files
from ..testing import faults

SEALED_SUFFIX = ".p7m"
ARCHIVE_SUFFIX = ".archive.p7m"
SUPERSEDED_SUFFIX = ".superseded"


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


class ArchiveStore:
    def __init__(self, root: Path):
        self.root = private_dir(Path(root))

    def day_dir(self, business_date: date) -> Path:
        return self.root / f"{business_date:%Y}" / f"{business_date:%m}" / f"{business_date:%d}"

    def put(self, business_date: date, name: str, sealed: bytes, archive_copy: bytes) -> Path:
        """Store both copies; the sealed one is written last, so its presence means both are there."""
        day = private_dir(self.day_dir(business_date))
        atomic_write(day / f"{name}{ARCHIVE_SUFFIX}", archive_copy)
        faults.point("archive-mid")
        atomic_write(day / f"{name}{SEALED_SUFFIX}", sealed)
        return day / f"{name}{SEALED_SUFFIX}"

    def adopt(self, business_date: date, name: str, sealed: Path, archive_copy: Path) -> Path:
        """`put` for copies already written and synced (by a worker): moved in, the sealed one last.

        A rename when the work folder is on the archive's file system (then one sync of the
        folder makes both names last), a synced copy otherwise.
        """
        day = private_dir(self.day_dir(business_date))
        moved = _move_in(archive_copy, day / f"{name}{ARCHIVE_SUFFIX}")
        faults.point("archive-mid")
        moved = _move_in(sealed, day / f"{name}{SEALED_SUFFIX}") or moved
        if moved:
            fsync_dir(day)
        return day / f"{name}{SEALED_SUFFIX}"

    def sealed_path(self, business_date: date, name: str) -> Path:
        return self.day_dir(business_date) / f"{name}{SEALED_SUFFIX}"

    def archive_copy_path(self, business_date: date, name: str) -> Path:
        return self.day_dir(business_date) / f"{name}{ARCHIVE_SUFFIX}"

    def superseded_path(self, business_date: date, name: str, sha256: str) -> Path:
        return self.day_dir(business_date) / f"{name}{SEALED_SUFFIX}.{sha256[:16]}{SUPERSEDED_SUFFIX}"

    def keep_superseded(self, business_date: date, name: str, sha256: str) -> None:
        """Before the delivered copy is replaced by a re-seal: keep it (a hard link), if it is the one
        whose digest is `sha256` (a re-seal a crash left untraced is not, and was never sent)."""
        kept = self.superseded_path(business_date, name, sha256)
        sealed = self.sealed_path(business_date, name)
        if kept.exists() or not sealed.exists():
            return
        with sealed.open("rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() != sha256:
                return
        os.link(sealed, kept)
        fsync_dir(kept.parent)

    def restore_superseded(self, business_date: date, name: str, sha256: str) -> None:
        """The partner holds the earlier seal `sha256`: it becomes the delivered copy again."""
        kept = self.superseded_path(business_date, name, sha256)
        if kept.exists():
            os.replace(kept, self.sealed_path(business_date, name))
            fsync_dir(kept.parent)

    def drop_superseded(self, business_date: date, name: str) -> None:
        """The emission is delivered as re-sealed: its earlier copies were never the partner's."""
        day = self.day_dir(business_date)
        for old in day.glob(f"{_glob_escape(name)}{SEALED_SUFFIX}.*{SUPERSEDED_SUFFIX}"):
            old.unlink(missing_ok=True)

    def purge_file(self, business_date: date, name: str) -> int:
        """Delete one emission's copies; 1 if its sealed file was there."""
        sealed = self.sealed_path(business_date, name)
        n = int(sealed.exists())
        sealed.unlink(missing_ok=True)  # the sealed one first: its absence means "gone" (see put)
        self.archive_copy_path(business_date, name).unlink(missing_ok=True)
        self.drop_superseded(business_date, name)
        return n

    def get_sealed(self, business_date: date, name: str) -> bytes:
        return self._read(self.sealed_path(business_date, name))

    def get_archive_copy(self, business_date: date, name: str) -> bytes:
        return self._read(self.day_dir(business_date) / f"{name}{ARCHIVE_SUFFIX}")

    def _read(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise ArchiveError(f"archived file missing: {path.relative_to(self.root)}") from exc

    def purge_day(self, business_date: date) -> int:
        day = self.day_dir(business_date)
        if not day.exists():
            return 0
        n = sum(1 for p in day.iterdir() if p.name.endswith(SEALED_SUFFIX) and not p.name.endswith(ARCHIVE_SUFFIX))
        shutil.rmtree(day)
        return n

    def cleanup(self) -> int:
        return remove_temp_files(self.root)


def _move_in(src: Path, dst: Path) -> bool:
    """Rename `src` to `dst` (True), or copy it there, synced, when they are on two file systems (False)."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        atomic_write(dst, src.read_bytes())  # another file system: a synced copy (one file's bytes)
        src.unlink(missing_ok=True)
        return False
    return True
