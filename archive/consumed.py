"""Consumed input, kept only encrypted: what a later replay needs, never readable at rest.

Once a batch is done its input (the raw upstream files, with what annexe 1 forbids to send:
the GRO extract's NIR, phones, e-mails) has no business staying in clear on disk. It is
still needed in one case: records of a département that was not enabled were parked, and
enabling the département later must emit them from that very input. So a finished batch's
material becomes `<consumed>/<business date>/batch-NNNNNN.tar.p7m`, a tar of its files each
enveloped on its own for the CNAF's own archive certificate (`<path>.p7m`), and the plaintext
is deleted. One file at a time: memory stays bounded by the largest input, however many days
a catch-up gathers in one batch. A kept input of an older version (the whole tar enveloped at
once) is still restored.

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
from ..core.fsutil import atomic_file, atomic_write, private_dir

SUFFIX = ".tar.p7m"
OUT_DIR = "out"  # built plaintext of the batch: never kept
MEMBER_SUFFIX = ".p7m"  # each kept file, enveloped on its own


class KeptInputMissing(ArchiveError):
    """A batch's kept input is not there (purged, or removed by hand): its parked records are lost."""


def kept_path(consumed: Path, business_date: date, batch_id: int) -> Path:
    return consumed / business_date.isoformat() / f"batch-{batch_id:06d}{SUFFIX}"


def find(consumed: Path, batch_id: int) -> Path | None:
    """The kept (encrypted) input of a batch, whatever its day folder."""
    matches = sorted(consumed.glob(f"*/batch-{batch_id:06d}{SUFFIX}")) if consumed.is_dir() else []
    return matches[0] if matches else None


DERIVED_SUFFIX = ".scans"  # an SGR zip's scans as the parse extracted them: in the zip already


def _material(src: Path) -> list[Path]:
    """The batch's files worth keeping: never the build's `out/`, nor a symlink, nor what a parse derives.

    An SGR zip's extracted scans are its own bytes a second time (every parse extracts them
    again): keeping them doubled the work and the size of the kept SGR input.
    """
    return [p for p in sorted(src.rglob("*"))
            if p.relative_to(src).parts[0] != OUT_DIR and not p.is_symlink() and p.is_file()
            and not any(part.endswith(DERIVED_SUFFIX) for part in p.relative_to(src).parts[:-1])]


def _write_kept(src: Path, material: list[Path], dst: Path, encrypt: Callable[[bytes], bytes]) -> None:
    """Each file enveloped on its own into a tar, written atomically (fsutil)."""
    with atomic_file(dst) as fh, tarfile.open(fileobj=fh, mode="w") as tar:
        for path in material:
            sealed = encrypt(path.read_bytes())
            info = tarfile.TarInfo(path.relative_to(src).as_posix() + MEMBER_SUFFIX)
            info.size, info.mode, info.mtime = len(sealed), 0o600, int(path.stat().st_mtime)
            tar.addfile(info, io.BytesIO(sealed))


def keep(src: Path, consumed: Path, batch_id: int, business_date: date, encrypt: Callable[[bytes], bytes]) -> Path:
    """Encrypt a finished batch's folder into the consumed store, then delete the plaintext.

    Safe to call again after a crash: the encrypted file is written atomically under its final
    name before the plaintext goes, and writing it again gives the same content.
    """
    dst = kept_path(consumed, business_date, batch_id)
    if src.exists():
        material = _material(src)
        # Only a build's `out/` left (a replay killed midway): never let it replace the kept input.
        if material or not dst.exists():
            _write_kept(src, material, dst, encrypt)
        shutil.rmtree(src)
    return dst


def restore(consumed: Path, batch_id: int, dst: Path, decrypt: Callable[[bytes], bytes]) -> Path:
    """Give a kept batch's material back under `dst` (owner-only); ArchiveError when it is gone."""
    kept = find(consumed, batch_id)
    if kept is None:
        raise KeptInputMissing(f"consumed input of batch {batch_id} is not kept (purged?)")
    private_dir(dst)
    if tarfile.is_tarfile(kept):
        with tarfile.open(kept, mode="r") as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith(MEMBER_SUFFIX):
                    fh = tar.extractfile(member)
                    assert fh is not None
                    _restore_one(batch_id, dst, member.name.removesuffix(MEMBER_SUFFIX), decrypt(fh.read()))
        return dst
    # An older version's: the whole tar enveloped at once.
    with tarfile.open(fileobj=io.BytesIO(decrypt(kept.read_bytes())), mode="r") as tar:
        for member in tar.getmembers():
            if member.isfile():
                fh = tar.extractfile(member)
                assert fh is not None
                _restore_one(batch_id, dst, member.name, fh.read())
    return dst


def _restore_one(batch_id: int, dst: Path, name: str, data: bytes) -> None:
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise ArchiveError(f"consumed input of batch {batch_id}: unexpected member path")
    atomic_write(dst / rel, data)


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
