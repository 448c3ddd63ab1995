"""Local drop: one folder per département, the embedded default.

It is also the shape of a relay or Transfer CFT pick-up folder: the partner (or the
relay) takes `<root>/<dept>/<file>.p7m` once `<file>.p7m.sha256` sits beside it. Both
are published by upload.py's routine (temporary name, fsync, check, rename, marker last),
the one SFTP uses too. Acks come back in `<root>/<dept>/acks/`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from ..config.settings import Department, Settings
from ..core.errors import TransportError
from ..core.fsutil import TMP_PREFIX, fsync_dir, private_dir
from .base import AckFile, CheckResult, Delivery, Receipt, Transport
from .upload import Entry, Source, publish

ACK_DIR = "acks"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class LocalFolder:
    """upload.RemoteFolder over a local folder."""

    kind = "drop"

    def __init__(self, folder: Path, department: str):
        self.folder, self.department = folder, department

    def where(self, name: str) -> str:
        return str(self.folder / name)

    def temp_name(self, name: str) -> str:
        return f"{TMP_PREFIX}{name}"

    def open_ahead(self, temps: Sequence[str]) -> None:
        pass  # no round trip to save: `write` opens them

    def remove_temps(self, name: str) -> None:
        for stale in self.folder.glob(f"{TMP_PREFIX}{name}*"):
            stale.unlink(missing_ok=True)

    def stat(self, name: str) -> Entry | None:
        try:
            st = os.stat(self.folder / name)
        except FileNotFoundError:
            return None
        return Entry(st.st_size, stat.S_ISREG(st.st_mode))

    def read_small(self, name: str, limit: int) -> bytes | None:
        try:
            with (self.folder / name).open("rb") as fh:
                return fh.read(limit + 1)
        except FileNotFoundError:
            return None

    def sha256(self, name: str) -> str:
        return file_sha256(self.folder / name)

    def remove(self, name: str, *, wait: bool = True) -> None:
        (self.folder / name).unlink(missing_ok=True)

    def write(self, files: Sequence[tuple[str, Source]]) -> list[Entry]:
        return [self._write(tmp, src) for tmp, src in files]

    def _write(self, tmp: str, src: Source) -> Entry:
        fd = os.open(self.folder / tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
            st = os.fstat(out.fileno())
        return Entry(st.st_size, stat.S_ISREG(st.st_mode))

    def rename(self, tmp: str, final: str) -> None:
        os.replace(self.folder / tmp, self.folder / final)
        fsync_dir(self.folder)


class LocalDrop(Transport):
    name = "local"

    def __init__(self, department: str, root: Path):
        self.department = department
        self.root = Path(root)

    @classmethod
    def from_config(cls, settings: Settings, dept: Department) -> LocalDrop:
        return cls(dept.code, dept.transport.path("root", settings.base))

    @property
    def folder(self) -> Path:
        return self.root / self.department

    def _missing_root(self) -> str | None:
        # The root itself appears on the first run (under [paths] state), but a chain of missing folders
        # is an unmounted share or a typo: files "delivered" into folders made in its place would never
        # reach the partner, yet be traced as delivered.
        if self.root.is_dir() or self.root.parent.is_dir():
            return None
        return (f"local drop root {self.root}: its folder {self.root.parent} is missing (an unmounted share?); "
                "nothing is created there: mount it, or fix the transport's root")

    def _error(self, exc: OSError) -> TransportError:
        """The one place a file system error becomes a transport error."""
        return TransportError(self.department, f"local drop: {exc.strerror or exc}")

    def deliver(self, item: Delivery) -> Receipt:
        missing = self._missing_root()
        if missing:
            raise TransportError(self.department, missing)
        try:
            fs = LocalFolder(private_dir(self.folder), self.department)
            with item.path.open("rb") as src:
                return publish(fs, item, src)
        except OSError as exc:
            raise self._error(exc) from exc

    def fetch_acks(self) -> list[AckFile]:
        folder = self.folder / ACK_DIR
        try:
            if not folder.is_dir():
                return []
            return [AckFile(self.department, p.name, p.read_bytes()) for p in sorted(folder.iterdir())
                    if p.is_file() and not p.name.startswith(".")]
        except OSError as exc:
            raise self._error(exc) from exc

    def remove_ack(self, name: str) -> None:
        try:
            (self.folder / ACK_DIR / name).unlink(missing_ok=True)
        except OSError as exc:
            raise self._error(exc) from exc

    def check(self) -> list[CheckResult]:
        folder = self.folder
        missing = self._missing_root()
        if missing:
            return [CheckResult(self.department, False, "local drop root missing", missing)]
        try:
            private_dir(folder)
            probe = folder / f"{TMP_PREFIX}check"
            probe.write_bytes(b"")
            probe.unlink()
            return [CheckResult(self.department, True, "local drop writable", str(folder))]
        except OSError as exc:
            return [CheckResult(self.department, False, "local drop not writable", f"{folder}: {exc.strerror}")]
