"""Atomic, owner-only file writes: the one way flux-pmi puts bytes on disk.

Write under a hidden temporary name, fsync, rename, fsync the folder: a reader (or
a crash) sees either nothing or the whole file under its final name, never a part.
Files that may hold personal data are created 0600 and their folders 0700.
"""

from __future__ import annotations

import os
from pathlib import Path

TMP_PREFIX = ".tmp-"


def private_dir(path: Path) -> Path:
    """Create `path` and any missing parent owner-only (mkdir's parents=True would use the umask)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            pass
    return path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, create_parent: bool = True) -> None:
    if create_parent:
        private_dir(path.parent)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_temp_files(root: Path) -> int:
    """Delete leftovers of writes a crash interrupted (they never had a final name)."""
    n = 0
    if root.exists():
        for p in root.rglob(f"{TMP_PREFIX}*"):
            if p.is_file():
                p.unlink(missing_ok=True)
                n += 1
    return n
