"""Local drop: one folder per département, the embedded default.

It is also the shape of a relay or Transfer CFT pick-up folder: the partner (or the
relay) takes `<root>/<dept>/<file>.p7m` once `<file>.p7m.sha256` sits beside it. The
`.sha256` is written last and is the completion marker; both appear atomically
(temporary name, fsync, rename). Acks come back in `<root>/<dept>/acks/`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from ..core.errors import TransportError
from ..core.fsutil import TMP_PREFIX, atomic_write, fsync_dir, private_dir
from ..testing import faults
from .base import AckFile, CheckResult, Delivery, Receipt, Transport

ACK_DIR = "acks"


def sha256_line(digest: str, name: str) -> bytes:
    """The `sha256sum` format, so a receiver can run `sha256sum -c`."""
    return f"{digest}  {name}\n".encode()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class LocalDrop(Transport):
    name = "local"

    def __init__(self, root: Path):
        self.root = Path(root)

    def folder(self, department: str) -> Path:
        return self.root / department

    def _missing_root(self) -> str | None:
        # The root itself appears on the first run (under [paths] state), but a chain of missing folders
        # is an unmounted share or a typo: files "delivered" into folders made in its place would never
        # reach the partner, yet be traced as delivered.
        if self.root.is_dir() or self.root.parent.is_dir():
            return None
        return (f"local drop root {self.root}: its folder {self.root.parent} is missing (an unmounted share?); "
                "nothing is created there: mount it, or fix the transport's root")

    def deliver(self, item: Delivery) -> Receipt:
        missing = self._missing_root()
        if missing:
            raise TransportError(item.department, missing)
        try:
            folder = private_dir(self.folder(item.department))
            final = folder / item.file_name
            marker = folder / f"{item.file_name}.sha256"
            for stale in folder.glob(f"{TMP_PREFIX}{item.file_name}*"):
                stale.unlink(missing_ok=True)  # a write a crash interrupted: never under a final name
            already = final.exists() and file_sha256(final) == item.sha256
            if final.exists() and not already:
                raise TransportError(item.department, f"{item.file_name} already exists with other content",
                                     permanent=True)
            if not already:
                tmp = folder / f"{TMP_PREFIX}{item.file_name}"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as out, item.path.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                    out.flush()
                    os.fsync(out.fileno())
                if file_sha256(tmp) != item.sha256:
                    tmp.unlink(missing_ok=True)
                    raise TransportError(item.department, f"{item.file_name}: copy does not match its SHA-256")
                faults.point("drop-before-rename")
                os.replace(tmp, final)
                fsync_dir(folder)
                faults.point("drop-before-marker")
            if not marker.exists() or marker.read_bytes() != sha256_line(item.sha256, item.file_name):
                atomic_write(marker, sha256_line(item.sha256, item.file_name))
            return Receipt(item.file_name, already_there=already, reference=str(final))
        except OSError as exc:
            raise TransportError(item.department, f"local drop: {exc.strerror or exc}") from exc

    def fetch_acks(self, department: str) -> list[AckFile]:
        folder = self.folder(department) / ACK_DIR
        if not folder.is_dir():
            return []
        return [AckFile(department, p.name, p.read_bytes()) for p in sorted(folder.iterdir())
                if p.is_file() and not p.name.startswith(".")]

    def remove_ack(self, department: str, name: str) -> None:
        (self.folder(department) / ACK_DIR / name).unlink(missing_ok=True)

    def check(self, department: str) -> list[CheckResult]:
        folder = self.folder(department)
        missing = self._missing_root()
        if missing:
            return [CheckResult(department, False, "local drop root missing", missing)]
        try:
            private_dir(folder)
            probe = folder / f"{TMP_PREFIX}check"
            probe.write_bytes(b"")
            probe.unlink()
            return [CheckResult(department, True, "local drop writable", str(folder))]
        except OSError as exc:
            return [CheckResult(department, False, "local drop not writable", f"{folder}: {exc.strerror}")]
