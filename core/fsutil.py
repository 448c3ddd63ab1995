"""Atomic, owner-only file writes: the one way flux-pmi puts bytes on disk.

Write under a hidden temporary name, fsync, rename, fsync the folder: a reader (or
a crash) sees either nothing or the whole file under its final name, never a part.
Files that may hold personal data are created 0600 and their folders 0700.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pwd
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import StorageError

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


def state_dir(path: Path, what: str) -> Path:
    """Create `path` owner-only, but only inside a folder that exists.

    The trace and its lock live in `<state>/trace/`. When `<state>` itself is missing, it is an
    unmounted share or a wrong `[paths]`: creating a fresh state there would let `hold`, `purge` or
    `reemit` answer from an empty trace (a hold lost when the share comes back). StorageError, exit 10.
    """
    if not path.is_dir() and not path.parent.is_dir():
        raise StorageError(path.parent, f"missing, so the {what} cannot be opened (an unmounted share, or a "
                           "wrong [paths]?): nothing was done. Mount it or create it, or fix [paths]")
    if path.is_dir() and (owner := path.stat().st_uid) != (me := os.geteuid()):
        # `sudo flux-pmi run` by hand, say: what it created (the trace's journal, archive folders, the
        # lock) would belong to root, and the service user's next nights would stop on them.
        raise StorageError(path, f"belongs to {_user_name(owner)}, and this command runs as {_user_name(me)}: "
                           f"run it as {_user_name(owner)} (sudo -u {_user_name(owner)} flux-pmi ...); nothing "
                           "was done (what it would create here would stop that user's next runs)")
    return private_dir(path)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, create_parent: bool = True) -> None:
    with atomic_file(path, mode=mode, create_parent=create_parent) as fh:
        fh.write(data)


@contextmanager
def atomic_file(path: Path, *, mode: int = 0o600, create_parent: bool = True,
                durable: bool = True) -> Iterator[BinaryIO]:
    """`atomic_write` for a writer that streams (memory bounded by what it holds, not the file).

    `durable=False` skips both fsyncs, for a file nothing trusts after a crash (a plaintext part,
    rebuilt by the next run until its sealed copy is archived): still complete under its final
    name or absent, for a crash of the process, not for a power cut.
    """
    if create_parent:
        private_dir(path.parent)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)  # a leftover of a crashed process with the same pid: O_EXCL needs it gone
    # Exclusive and never through a link: a link planted under the temporary name is refused, not written.
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode)
    try:
        os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
        with os.fdopen(fd, "w+b") as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


@contextmanager
def synced_file(path: Path) -> Iterator[BinaryIO]:
    """A new owner-only file, its bytes synced when the block ends; removed if the block fails.

    For a file handed on by its name once complete (a worker's sealed copy, which the archive
    then renames and syncs its folder): no temporary name, no rename, no folder sync of its own,
    which `atomic_file` needs only for a file read under its final name by whoever comes next.
    """
    path.unlink(missing_ok=True)  # a leftover of a crashed worker: O_EXCL needs it gone
    fh = exclusive_file(path)
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def exclusive_dir(path: Path) -> None:
    """Create one owner-only folder; something already under its name (a link, say) is refused, not reused."""
    os.mkdir(path, 0o700)
    os.chmod(path, 0o700)  # the umask may only have taken bits away; make it exact


def exclusive_file(path: Path) -> BinaryIO:
    """Create an owner-only file for writing: exclusive, never through a link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def remove_path(path: Path, *, quiet: bool = False) -> None:
    """Remove a folder, or whatever was put under its name (a link is removed, never followed)."""
    try:
        if path.is_symlink() or (os.path.lexists(path) and not path.is_dir()):
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)
    except OSError:
        # While unwinding another error, that error is the one to report.
        if not quiet:
            raise


def remove_temp_files(root: Path) -> int:
    """Delete leftovers of writes a crash interrupted (they never had a final name)."""
    n = 0
    if root.exists():
        for p in root.rglob(f"{TMP_PREFIX}*"):
            if p.is_file():
                p.unlink(missing_ok=True)
                n += 1
    return n


# -- names and files from outside ------------------------------------------------------------
# Upstream systems choose the names in the inbox (and senders those in a drop). A name is bytes
# to the kernel but str to Python: bytes that are not UTF-8 come back surrogate-escaped and make
# SQLite, the logs and the reports fail. A name is only used as it is when it is "storable".

NAME_MAX = 255  # bytes per path component (Linux, ext4/xfs/tmpfs)
# C0 and C1 controls, and what reorders or breaks a line on screen (bidirectional overrides and
# isolates, line and paragraph separators): a name holding one could pass for another in a log.
_CONTROL = frozenset(chr(c) for c in (*range(0x20), *range(0x7F, 0xA0), 0x200E, 0x200F, 0x2028, 0x2029,
                                      *range(0x202A, 0x202F), *range(0x2066, 0x206A)))


def storable_name(name: str) -> bool:
    """A name that can go into the trace, a log line and a report as it is: UTF-8, no control character."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return bool(name) and "/" not in name and not _CONTROL.intersection(name)


def name_digest(name: str) -> str:
    """SHA-256 of a name's original bytes: evidence of a name that cannot itself be written down."""
    return hashlib.sha256(os.fsencode(name)).hexdigest()


def open_regular(path: Path) -> int:
    """Open a file for reading only if it is a regular file, never through a final symlink.

    O_NONBLOCK: a FIFO swapped in after a listing must not hang the night on open().
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def free_name(folder: Path, base: str, companions: tuple[str, ...] = ()) -> str:
    """`base`, or `base.2`, `base.3`...: the first that neither exists in `folder` nor has a companion
    (`<name><suffix>` for each suffix of `companions`) there. Setting material aside never overwrites."""
    n, name = 1, base
    while any(os.path.lexists(folder / (name + s)) for s in ("", *companions)):
        n += 1
        name = f"{base}.{n}"
    return name
