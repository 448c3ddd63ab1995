"""core/fsutil.py's `synced_file`: a worker's sealed copy, written once under its own name.

It skips `atomic_file`'s temporary and rename, so what it must still hold is checked here:
owner-only whatever the umask, never written through a link, and nothing left when the writer
fails midway (a half-written sealed copy must never be handed to the archive).
"""

from __future__ import annotations

import os
import stat

import pytest

from flux_pmi.core.fsutil import synced_file


def test_a_synced_file_is_owner_only_and_replaces_a_leftover(tmp_path):
    path = tmp_path / "0001.xml.sealed.p7m"
    path.write_bytes(b"a crashed worker's leftover")
    old = os.umask(0o022)
    try:
        with synced_file(path) as fh:
            fh.write(b"sealed bytes")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"sealed bytes"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "0001.xml.sealed.p7m"
    with pytest.raises(RuntimeError), synced_file(path) as fh:
        fh.write(b"half")
        raise RuntimeError("the envelope failed")
    assert not path.exists()


def test_a_link_under_the_name_is_removed_never_written_through(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"untouched")
    path = tmp_path / "0001.xml.sealed.p7m"
    path.symlink_to(target)
    with synced_file(path) as fh:
        fh.write(b"sealed bytes")
    assert target.read_bytes() == b"untouched"
    assert not path.is_symlink() and path.read_bytes() == b"sealed bytes"
