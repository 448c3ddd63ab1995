"""The batch spill (jobs/spill.py): owner-only, never read across runs, gone after the run.

A catch-up's batch is routed one input at a time into per-département spill files; these tests
hold it to what that costs in safety: plaintext personal data only in an owner-only folder, the
records read back in the order the builds expect, nothing left once the batch is processed, and
a crash between spilling and building redone by the next run with each record emitted once.
"""

from __future__ import annotations

import os
import pickle
import signal
import stat
import tarfile
from pathlib import Path

from support import make_demo, open_delivered, record_fingerprints, run_cli
from support.records import RENNES, gro_record

from flux_pmi.flows.records import Source
from flux_pmi.jobs.spill import Spill, load

DEPTS = "035,02A"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def test_spill_files_are_owner_only_read_back_sorted_and_removed(tmp_path):
    batch = tmp_path / "batch-000001"
    batch.mkdir()
    old = os.umask(0o022)  # a permissive umask must not widen the modes
    try:
        with Spill(batch) as spill:
            # appended in an order the builds do not want: b.csv before a.csv, line 3 before line 1
            for file, line in (("b.csv", 2), ("a.csv", 3), ("a.csv", 1)):
                spill.add("035", gro_record(line, RENNES, source=Source(file, line)))
            spill.add("02A", gro_record(9, RENNES))
            folder = batch / "spill"
            assert _mode(folder) == 0o700
            files = sorted(folder.iterdir())
            assert [p.name for p in files] == ["02A.pickle", "035.pickle"]
            assert all(_mode(p) == 0o600 and stat.S_ISREG(p.lstat().st_mode) for p in files)
            assert spill.departments() == {"035", "02A"}
            got = spill.records("035")
            assert [(r.source.file, r.source.line) for r in got] == [("a.csv", 1), ("a.csv", 3), ("b.csv", 2)]
            assert got[0] == gro_record(1, RENNES, source=Source("a.csv", 1))  # the record itself, not a copy's shape
            spill.discard("035")
            assert [p.name for p in folder.iterdir()] == ["02A.pickle"]
            assert spill.records("035") == []
        assert not folder.exists()
        assert sorted(p.name for p in batch.iterdir()) == []
    finally:
        os.umask(old)


def test_a_light_batch_stays_in_memory_and_a_heavy_one_moves_to_disk_whole(tmp_path):
    batch = tmp_path / "batch-000001"
    batch.mkdir()
    one = len(pickle.dumps(gro_record(1, RENNES, source=Source("a.csv", 1)), protocol=5))
    with Spill(batch, memory_bytes=3 * one + one // 2) as spill:
        for file, line in (("b.csv", 2), ("a.csv", 3), ("a.csv", 1)):
            spill.add("035", gro_record(line, RENNES, source=Source(file, line)))
        assert not (batch / "spill").exists()  # three records: held in memory, nothing written
        held = spill.source("035")
        assert isinstance(held, bytes)
        assert [(r.source.file, r.source.line) for r in load(held)] == [("a.csv", 1), ("a.csv", 3), ("b.csv", 2)]
        assert spill.records("02A") == []

        spill.add("02A", gro_record(9, RENNES, source=Source("a.csv", 9)))  # the fourth: past the allowance
        folder = batch / "spill"
        assert sorted(p.name for p in folder.iterdir()) == ["02A.pickle", "035.pickle"]
        assert all(_mode(p) == 0o600 for p in folder.iterdir())
        spill.add("035", gro_record(0, RENNES, source=Source("a.csv", 0)))  # and the next ones go there too
        assert spill.source("035") == folder / "035.pickle"
        assert [r.source.line for r in spill.records("035")] == [0, 1, 3, 2]
        assert [r.source.line for r in spill.records("02A")] == [9]
        assert spill.departments() == {"035", "02A"}
    assert not folder.exists()


def test_a_spill_left_by_a_crash_is_removed_never_read(tmp_path):
    batch = tmp_path / "batch-000001"
    (batch / "spill").mkdir(parents=True)
    (batch / "spill" / "035.pickle").write_bytes(b"not ours: a crashed run's, or planted")
    with Spill(batch) as spill:
        assert not (batch / "spill").exists()
        spill.add("035", gro_record(1, RENNES))
        assert [r.source for r in spill.records("035")] == [gro_record(1, RENNES).source]


def test_a_link_planted_as_the_spill_folder_is_removed_not_followed(tmp_path):
    batch = tmp_path / "batch-000001"
    batch.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("untouched")
    (batch / "spill").symlink_to(elsewhere, target_is_directory=True)
    with Spill(batch) as spill:
        spill.add("035", gro_record(1, RENNES))
        assert not (batch / "spill").is_symlink()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"]
    assert (elsewhere / "keep.txt").read_text() == "untouched"


def _spills(root: Path) -> list[Path]:
    return [p for p in (root / "work").rglob("spill") if p.is_dir()]


def test_crash_between_spill_and_build_then_rerun_emits_each_record_once(tmp_path):
    clean = tmp_path / "clean"
    make_demo(clean, departments=DEPTS)
    assert run_cli("run", "--config", str(clean / "flux-pmi.toml")).returncode == 0
    expected = record_fingerprints(open_delivered(clean))
    assert _spills(clean) == []  # a run that completes leaves none

    root = tmp_path / "demo"
    make_demo(root, departments=DEPTS)
    killed = run_cli("run", "--config", str(root / "flux-pmi.toml"), env_extra={"FLUX_PMI_CRASH_AT": "spilled:2"})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    # The second flow's batch, spilled, never built: a demo batch weighs far less than a file, so
    # its spill was held in the killed process's memory, and nothing of it is on disk.
    assert _spills(root) == [] and not [p for p in root.rglob("*.pickle")]

    rerun = run_cli("run", "--config", str(root / "flux-pmi.toml"))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    got = record_fingerprints(open_delivered(root))
    assert got == expected and set(got.values()) == {1}
    assert _spills(root) == []
    # nothing of the spill outlives the batch: not in work/, and not kept with the consumed input
    assert not [p for p in root.rglob("*.pickle")]
    kept = [p for p in (root / "consumed").rglob("*") if p.is_file() and tarfile.is_tarfile(p)]
    assert kept and not [n for p in kept for n in tarfile.open(p).getnames() if n.startswith("spill")]
