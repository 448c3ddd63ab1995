"""Consumed input, kept only encrypted: what a later replay needs, never readable at rest.

Once a batch is done its input (the raw upstream files, with what annexe 1 forbids to send:
the GRO extract's NIR, phones, e-mails) has no business staying in clear on disk. It is
still needed in one case: records of a département that was not enabled were parked, and
enabling the département later must emit them from that very input. So a finished batch's
material becomes one tar enveloped for the CNAF's own archive certificate,
`<consumed>/<business date>/batch-NNNNNN.tar.p7m`, and the plaintext is deleted.

The encryption itself is given by the caller (the night has the certificates): this stage
must not import the sealing stage above it. `restore` gives the material back into a work
folder, only for a process holding the archive key.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Callable
from datetime import date
from pathlib import Path

from ..core.errors import ArchiveError
from ..core.fsutil import atomic_write, private_dir

SUFFIX = ".tar.p7m"
OUT_DIR = "out"  # built plaintext of the batch: never kept


class KeptInputMissing(ArchiveError):
    """A batch's kept input is not there (purged, or removed by hand): its parked records are lost."""


def kept_path(consumed: Path, business_date: date, batch_id: int) -> Path:
    return consumed / business_date.isoformat() / f"batch-{batch_id:06d}{SUFFIX}"


def find(consumed: Path, batch_id: int) -> Path | None:
    """The kept (encrypted) input of a batch, whatever its day folder."""
    matches = sorted(consumed.glob(f"*/batch-{batch_id:06d}{SUFFIX}")) if consumed.is_dir() else []
    return matches[0] if matches else None


def _tar(src: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(src.rglob("*")):
            rel = path.relative_to(src)
            if rel.parts[0] == OUT_DIR or path.is_symlink() or not path.is_file():
                continue
            info = tar.gettarinfo(str(path), arcname=rel.as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o600
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


def keep(src: Path, consumed: Path, batch_id: int, business_date: date, encrypt: Callable[[bytes], bytes]) -> Path:
    """Encrypt a finished batch's folder into the consumed store, then delete the plaintext.

    Safe to call again after a crash: the encrypted file is written atomically under its final
    name before the plaintext goes, and writing it again gives the same content.
    """
    dst = kept_path(consumed, business_date, batch_id)
    if src.exists():
        material = _tar(src)
        # Only a build's `out/` left (a replay killed midway): never let it replace the kept input.
        if not dst.exists() or any(True for p in src.rglob("*") if p.is_file()
                                   and p.relative_to(src).parts[0] != OUT_DIR):
            private_dir(dst.parent)
            atomic_write(dst, encrypt(material))
        shutil.rmtree(src)
    return dst


def restore(consumed: Path, batch_id: int, dst: Path, decrypt: Callable[[bytes], bytes]) -> Path:
    """Give a kept batch's material back under `dst` (owner-only); ArchiveError when it is gone."""
    kept = find(consumed, batch_id)
    if kept is None:
        raise KeptInputMissing(f"consumed input of batch {batch_id} is not kept (purged?)")
    data = decrypt(kept.read_bytes())
    private_dir(dst)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            rel = Path(member.name)
            if rel.is_absolute() or ".." in rel.parts:
                raise ArchiveError(f"consumed input of batch {batch_id}: unexpected member path")
            target = dst / rel
            fh = tar.extractfile(member)
            assert fh is not None
            atomic_write(target, fh.read())
    return dst


def seal_plaintext_leftovers(consumed: Path, encrypt: Callable[[bytes], bytes]) -> int:
    """Encrypt what an older version left in clear: `<date>/batch-N/` folders and set-aside duplicates.

    A duplicate is a byte copy of input already consumed, kept as evidence that it came again:
    it becomes `<name>.p7m`, dated (mtime) as the file was, for the purge.
    """
    n = 0
    if not consumed.is_dir():
        return 0
    for day in sorted(p for p in consumed.iterdir() if p.is_dir() and not p.is_symlink()):
        if day.name == "duplicates":
            for path in sorted(day.rglob("*")):
                if path.is_file() and not path.is_symlink() and not path.name.endswith(".p7m"):
                    st = path.stat()
                    out = path.with_name(path.name + ".p7m")
                    atomic_write(out, encrypt(path.read_bytes()))
                    os.utime(out, (st.st_atime, st.st_mtime))
                    path.unlink()
                    n += 1
            continue
        try:
            business_date = date.fromisoformat(day.name)
        except ValueError:
            continue
        for batch in sorted(p for p in day.iterdir() if p.is_dir() and p.name.startswith("batch-")):
            try:
                batch_id = int(batch.name.removeprefix("batch-"))
            except ValueError:
                continue
            keep(batch, consumed, batch_id, business_date, encrypt)
            n += 1
    return n
