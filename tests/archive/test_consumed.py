"""The kept (encrypted) input of a finished batch: each file enveloped on its own, restored exactly.

A catch-up gathers many days in one batch: enveloping the whole batch at once held all of it in
memory (several copies). Each file is now enveloped alone, so memory follows the largest input,
not the number of days; a kept input written by an older version (one envelope over the whole
tar) is still restored.
"""

from __future__ import annotations

import io
import tarfile
from datetime import date

import pytest

from flux_pmi.archive import consumed
from flux_pmi.core.errors import ArchiveError

DAY = date(2026, 11, 23)


def encrypt(data: bytes) -> bytes:  # reversible, and no plaintext left in clear
    return b"ENV" + bytes(b ^ 0x5A for b in data)


def decrypt(data: bytes) -> bytes:
    assert data.startswith(b"ENV"), "not one of our envelopes"
    return bytes(b ^ 0x5A for b in data[3:])


@pytest.fixture
def batch(tmp_path):
    src = tmp_path / "work" / "batch-000007"
    files = {"GRO/a.csv": b"NIR 2850575123456 one\n" * 50, "SGR/b.zip": bytes(range(256)) * 40,
             "DSG/c.xml": b"<x>secret</x>"}
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "out").mkdir()
    (src / "out" / "built.xml").write_bytes(b"built plaintext, never kept")
    (src / "SGR" / "b.zip.scans").mkdir()  # the zip's scans as a parse extracted them: in the zip already
    (src / "SGR" / "b.zip.scans" / "00001.pdf").write_bytes(b"%PDF extracted scan, never kept")
    return src, files


def test_each_file_is_enveloped_alone_and_restored_exactly(tmp_path, batch):
    src, files = batch
    seen: list[int] = []

    def counting(data: bytes) -> bytes:
        seen.append(len(data))
        return encrypt(data)

    kept = consumed.keep(src, tmp_path / "consumed", 7, DAY, counting)
    assert not src.exists() and kept.name == "batch-000007.tar.p7m" and kept.stat().st_mode & 0o077 == 0
    assert sorted(seen) == sorted(len(d) for d in files.values())  # one file per call, never the batch
    raw = kept.read_bytes()
    assert b"secret" not in raw and b"2850575123456" not in raw and b"built plaintext" not in raw
    assert b"extracted scan" not in raw
    with tarfile.open(kept) as tar:
        assert sorted(tar.getnames()) == sorted(f"{rel}.p7m" for rel in files)
    out = consumed.restore(tmp_path / "consumed", 7, tmp_path / "replay", decrypt)
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


def test_a_kept_input_of_the_older_format_is_still_restored(tmp_path, batch):
    src, files = batch
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel, data in files.items():
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    old = consumed.kept_path(tmp_path / "consumed", DAY, 7)
    old.parent.mkdir(parents=True)
    old.write_bytes(encrypt(buf.getvalue()))  # the whole tar in one envelope
    out = consumed.restore(tmp_path / "consumed", 7, tmp_path / "replay", decrypt)
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


def test_a_member_pointing_outside_is_refused(tmp_path):
    kept = consumed.kept_path(tmp_path / "consumed", DAY, 9)
    kept.parent.mkdir(parents=True)
    with tarfile.open(kept, mode="w") as tar:
        data = encrypt(b"x")
        info = tarfile.TarInfo("../escape.p7m")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ArchiveError, match="unexpected member path"):
        consumed.restore(tmp_path / "consumed", 9, tmp_path / "replay", decrypt)
    assert not (tmp_path / "escape").exists()
