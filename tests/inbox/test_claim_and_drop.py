"""Claiming inbox material exactly once, and the atomic local drop."""

from __future__ import annotations

import hashlib
import os
import stat
from datetime import date, datetime

import pytest

from flux_pmi.core.clock import PARIS
from flux_pmi.core.errors import TransportError
from flux_pmi.inbox import claim as inbox
from flux_pmi.trace.store import TraceStore
from flux_pmi.transport.base import Delivery
from flux_pmi.transport.local import LocalDrop

NOW = datetime(2026, 11, 23, 4, 0, tzinfo=PARIS)
DAY = date(2026, 11, 23)


@pytest.fixture
def env(tmp_path):
    trace = TraceStore(tmp_path / "t.sqlite")
    run = trace.start_run("run", DAY, NOW)
    dirs = {k: tmp_path / k for k in ("inbox", "work", "consumed")}
    (dirs["inbox"] / "GRO").mkdir(parents=True)
    yield trace, run, dirs
    trace.close()


def _claim(trace, run, dirs, flow="GRO"):
    return inbox.claim(trace, inbox=dirs["inbox"], work=dirs["work"], consumed=dirs["consumed"], flow=flow,
                       business_date=DAY, run_id=run, now=NOW)


def _drop(dirs, **files: bytes):
    """Files dropped in the GRO inbox folder (names with a dot: `_drop(dirs, **{"a.csv": b"x"})`)."""
    g = dirs["inbox"] / "GRO"
    for name, data in files.items():
        (g / name).write_bytes(data)
    return g


def test_claim_moves_files_and_ignores_partial_writes(env):
    trace, run, dirs = env
    g = _drop(dirs, **{"a.csv": b"x", ".b.csv": b"hidden", "c.csv.part": b"partial"})
    batch, dups = _claim(trace, run, dirs)
    assert dups == [] and (batch.dir / "a.csv").read_bytes() == b"x"
    assert sorted(p.name for p in g.iterdir()) == [".b.csv", "c.csv.part"]


def test_same_bytes_dropped_again_are_set_aside_not_claimed(env):
    trace, run, dirs = env
    g = dirs["inbox"] / "GRO"
    (g / "a.csv").write_bytes(b"same")
    batch, _ = _claim(trace, run, dirs)
    trace.set_batch_state(batch.id, "done", NOW)
    (g / "again.csv").write_bytes(b"same")
    batch2, dups = _claim(trace, run, dirs)
    assert batch2 is None and dups == ["again.csv"]
    assert list((dirs["consumed"] / "duplicates" / "GRO").iterdir())


def test_the_same_bytes_under_two_names_in_one_claim_are_taken_once(env):
    # Before, both were taken, and every record of the second was rejected as DUPLICATE.
    trace, run, dirs = env
    # Two empty files: each is judged (EMPTY) by the parse, not set aside.
    g = _drop(dirs, **{"b.csv": b"same", "a.csv": b"same", "c.csv": b"other", "e1.csv": b"", "e2.csv": b""})
    batch, dups = _claim(trace, run, dirs)
    assert dups == ["b.csv"]  # the first name is taken
    assert sorted(p.name for p in batch.dir.iterdir()) == ["a.csv", "c.csv", "e1.csv", "e2.csv"]
    (aside,) = (dirs["consumed"] / "duplicates" / "GRO").iterdir()
    assert aside.name.startswith("b.csv.") and aside.read_bytes() == b"same"
    assert not list(g.iterdir())


def test_a_claim_interrupted_after_the_trace_write_is_finished_by_the_next_run(env):
    trace, run, dirs = env
    g = dirs["inbox"] / "GRO"
    (g / "a.csv").write_bytes(b"1")
    (g / "b.csv").write_bytes(b"2")
    # the trace knows the batch, but the crash happened before any file moved
    entries = [(n, "input", hashlib.sha256(p.read_bytes()).hexdigest(), 1) for n, p in
               (("a.csv", g / "a.csv"), ("b.csv", g / "b.csv"))]
    batch_id = trace.create_batch("GRO", DAY, run, NOW, entries)
    # ...and one file had moved when it stopped
    inbox.batch_dir(dirs["work"], batch_id, "GRO").mkdir(parents=True)
    os.replace(g / "a.csv", inbox.batch_dir(dirs["work"], batch_id, "GRO") / "a.csv")
    inbox.finish_claim(trace, batch_id, inbox=dirs["inbox"], work=dirs["work"], flow="GRO", now=NOW)
    d = inbox.batch_dir(dirs["work"], batch_id, "GRO")
    assert sorted(p.name for p in d.iterdir()) == ["a.csv", "b.csv"]
    assert [r["state"] for r in trace.open_batches()] == ["claimed"]
    # nothing is left in the inbox to be claimed a second time
    assert _claim(trace, run, dirs) == (None, [])


def test_sgr_claim_takes_the_scans_its_index_names_and_nothing_unsafe(env):
    trace, run, dirs = env
    s = dirs["inbox"] / "SGR"
    (s / "scans").mkdir(parents=True)
    (s / "scans" / "1.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    (s / "scans" / "orphan.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    (s / "idx.csv").write_bytes(b"DTRECEP;FICHIER\n2026-11-20;scans/1.pdf\n2026-11-20;../../etc/passwd\n")
    batch, _ = _claim(trace, run, dirs, flow="SGR")
    assert (batch.dir / "scans" / "1.pdf").exists() and (s / "scans" / "orphan.pdf").exists()
    kinds = sorted((r["name"], r["kind"]) for r in trace.batch_files(batch.id))
    assert kinds == [("idx.csv", "input"), ("scans/1.pdf", "scan")]


def _delivery(tmp_path, data=b"sealed bytes", name="GRO_035_20261123_000001.xml.p7m"):
    src = tmp_path / "src.p7m"
    src.write_bytes(data)
    return Delivery("035", "GRO", name, src, len(data), hashlib.sha256(data).hexdigest())


def test_local_drop_is_atomic_idempotent_and_writes_the_sha256_marker(tmp_path):
    drop = LocalDrop("035", tmp_path / "drop")
    item = _delivery(tmp_path)
    r1 = drop.deliver(item)
    r2 = drop.deliver(item)  # a rerun after a crash
    folder = tmp_path / "drop" / "035"
    assert not r1.already_there and r2.already_there
    assert sorted(p.name for p in folder.iterdir()) == [item.file_name, item.file_name + ".sha256"]
    assert (folder / (item.file_name + ".sha256")).read_text() == f"{item.sha256}  {item.file_name}\n"
    assert stat.S_IMODE((folder / item.file_name).stat().st_mode) == 0o600


def test_local_drop_refuses_to_overwrite_a_different_file(tmp_path):
    drop = LocalDrop("035", tmp_path / "drop")
    drop.deliver(_delivery(tmp_path, b"one"))
    with pytest.raises(TransportError) as info:
        drop.deliver(_delivery(tmp_path, b"two"))
    assert info.value.permanent


def test_local_drop_rewrites_a_missing_marker_after_a_crash(tmp_path):
    drop = LocalDrop("035", tmp_path / "drop")
    item = _delivery(tmp_path)
    drop.deliver(item)
    (tmp_path / "drop" / "035" / (item.file_name + ".sha256")).unlink()
    drop.deliver(item)
    assert (tmp_path / "drop" / "035" / (item.file_name + ".sha256")).exists()


def test_local_drop_removes_what_an_interrupted_delivery_left_and_publishes_once(tmp_path):
    drop = LocalDrop("035", tmp_path / "drop")
    item = _delivery(tmp_path)
    folder = tmp_path / "drop" / "035"
    folder.mkdir(parents=True)
    (folder / f".tmp-{item.file_name}").write_bytes(b"half a fi")  # killed mid-copy
    (folder / f".tmp-{item.file_name}.sha256").write_bytes(b"")  # killed mid-marker
    (folder / f"{item.file_name}.sha256").write_bytes(b"a marker without its file")
    assert not drop.deliver(item).already_there
    assert sorted(p.name for p in folder.iterdir()) == [item.file_name, item.file_name + ".sha256"]
    assert (folder / item.file_name).read_bytes() == b"sealed bytes"


def test_local_drop_refuses_a_marker_naming_another_digest_and_an_archive_that_is_not_its_digest(tmp_path):
    drop = LocalDrop("035", tmp_path / "drop")
    item = _delivery(tmp_path)
    drop.deliver(item)
    marker = tmp_path / "drop" / "035" / (item.file_name + ".sha256")
    marker.write_text(f"{'0' * 64}  {item.file_name}\n")
    with pytest.raises(TransportError, match="another digest") as info:
        drop.deliver(item)
    assert info.value.permanent
    other = _delivery(tmp_path, name="GRO_035_20261123_000002.xml.p7m")
    other.path.write_bytes(b"sealed bytez")  # same size, other bytes than the trace recorded
    with pytest.raises(TransportError, match="SHA-256") as info:
        drop.deliver(other)
    assert info.value.permanent and not (tmp_path / "drop" / "035" / other.file_name).exists()
    assert not list((tmp_path / "drop" / "035").glob(".tmp-*"))
