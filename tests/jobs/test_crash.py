"""Prove it survives: SIGKILL the nightly run at many named fault points, rerun, compare with a clean run.

Each kill point is `faults.point(name)` reached at its N-th passage (the kill is asserted: -9).
After the rerun, on a seeded day with two départements (one by SFTP for the SFTP points):
every record delivered exactly once, under one file identity; the trace's delivered files
are exactly the files in the drops; only `*.p7m` and matching `*.p7m.sha256` are visible.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
import shutil
import signal
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest
from support import BUSINESS_DATE, NOW, make_demo, open_delivered, record_fingerprints, run_cli
from support.sshd import FLOW_DIRS, PartnerPool, generate_key, require_tools

from flux_pmi.archive import ArchiveStore
from flux_pmi.core.clock import PARIS
from flux_pmi.core.names import ack_name
from flux_pmi.schemas.ack import build_ack
from flux_pmi.trace.store import TraceStore

DEPTS = "035,02A"
SFTP_DEPT = "02A"

LOCAL_POINTS = [
    "claim:2", "claim-move:5", "parse:3", "spilled:2", "build:2", "validated:3", "sealed:4", "archive-mid:3",
    "archived-file:5", "archived:6", "batch-done:1", "deliver:4", "drop-before-rename:3",
    "drop-before-marker:4", "delivered:5", "delivered-traced:6", "purge:1",
]  # fmt: skip
SFTP_POINTS = [
    "sftp-uploaded:3",
    "sftp-before-rename:3",
    "sftp-before-marker:2",
    "deliver:2",
    "delivered-traced:2",
]



def _soak_points(rounds: int, seed: int = 2026) -> list[str]:
    """FLUX_PMI_SOAK=N (by hand: `FLUX_PMI_SOAK=200 .venv/bin/python -m pytest tests/jobs/test_crash.py`)
    adds N seeded kills, each at a point drawn from LOCAL_POINTS and a passage drawn from 1 to the
    listed one, which is known to be reached."""
    rng = random.Random(seed)
    out = []
    for _ in range(rounds):
        name, _, top = rng.choice(LOCAL_POINTS).partition(":")
        out.append(f"{name}:{rng.randint(1, int(top or 1))}")
    return out


SOAK_POINTS = _soak_points(int(os.environ.get("FLUX_PMI_SOAK", "0")))
LATER = datetime(2027, 3, 23, 4, 0, tzinfo=PARIS)  # > 3 months after the demo day: its archive is purged


def _args(root: Path, day=BUSINESS_DATE) -> tuple[str, ...]:
    return ("run", "--config", str(root / "flux-pmi.toml"), "--date", day.isoformat())


def _kill(root: Path, point: str, env: dict[str, str] | None = None, day=BUSINESS_DATE) -> None:
    killed = run_cli(*_args(root, day), env_extra={"FLUX_PMI_CRASH_AT": point, **(env or {})})
    assert killed.returncode == -signal.SIGKILL, f"{point} was never reached: {killed.stdout}{killed.stderr}"


def _rerun(root: Path, env: dict[str, str] | None = None, day=BUSINESS_DATE) -> None:
    rerun = run_cli(*_args(root, day), env_extra=env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr


def _visible_files_are_final(folder: Path) -> list[Path]:
    """Only `*.p7m` with a `*.p7m.sha256` marker naming its digest: no temporary under any name."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.parent.name != "acks"]
    bad = [p for p in files if not p.name.endswith((".p7m", ".p7m.sha256")) or p.name.startswith(".")]
    assert bad == [], f"temporary or stray files left visible: {bad}"
    sealed = [p for p in files if p.name.endswith(".p7m")]
    for p in sealed:
        marker = p.with_name(p.name + ".sha256")
        assert marker.read_text() == f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n", p
    assert len(files) == 2 * len(sealed)
    return sealed


def _reported(root: Path) -> list[tuple[str, ...]]:
    """Every row of every rejects report the runs wrote, duplicates kept."""
    rows = []
    for report in (root / "reports").glob("rejects-*.csv"):
        with report.open(newline="", encoding="utf-8") as fh:
            rows += [tuple(r) for r in list(csv.reader(fh, delimiter=";"))[1:]]
    return sorted(rows)


def _check(root: Path, clean: dict, partner=None) -> None:
    # Each reject in exactly one report, whichever run wrote it: a run killed before its report
    # leaves its rejects to the next one's, and a rerun does not report them again.
    assert _reported(root) == clean["reported"]
    seen = root / "seen"  # every département's files side by side, as open_delivered reads them
    shutil.rmtree(seen, ignore_errors=True)
    for p in _visible_files_are_final(root / "drop"):
        (seen / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, seen / p.parent.name / p.name)
    if partner is not None:
        for flow_dir in FLOW_DIRS.values():
            for p in _visible_files_are_final(partner.root / flow_dir):
                (seen / SFTP_DEPT).mkdir(parents=True, exist_ok=True)
                shutil.copy(p, seen / SFTP_DEPT / p.name)
    delivered = open_delivered(root, "seen")
    assert record_fingerprints(delivered) == clean["fingerprints"]
    files_of = defaultdict(set)  # no record under two different file identities
    for name, data in delivered.items():
        for fp in record_fingerprints({name: data}):
            files_of[fp].add(name)
    assert [fp for fp, names in files_of.items() if len(names) > 1] == []
    assert set(delivered) == clean["files"]  # the same file identities as the clean night
    trace = TraceStore(root / "trace" / "flux-pmi.sqlite")
    names = {
        f"{r['department']}/{r['file_name']}"
        for r in trace.db.execute(
            "SELECT department, file_name FROM emissions WHERE status IN ('delivered', 'acknowledged')"
        )
    }
    trace.close()
    assert names == set(delivered)
    assert not list((root / "inbox").rglob("*.xml")) and not list((root / "inbox").rglob("*.csv"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("clean") / "demo"
    make_demo(root, departments=DEPTS)
    _rerun(root)
    delivered = open_delivered(root)
    reported = _reported(root)
    assert reported, "the demo day has deliberate rejects: the clean night must report them"
    return {"fingerprints": record_fingerprints(delivered), "files": set(delivered), "reported": reported}


@pytest.mark.parametrize("point", LOCAL_POINTS + SOAK_POINTS)
def test_sigkill_then_rerun_local_drop(tmp_path, point, clean):
    root = tmp_path / "demo"
    make_demo(root, departments=DEPTS)
    _kill(root, point)
    _rerun(root)
    _check(root, clean)


@pytest.fixture(scope="module")
def client_key(tmp_path_factory) -> tuple[Path, str]:
    require_tools()
    d = tmp_path_factory.mktemp("client-key")
    return d / "id_ed25519", generate_key(d / "id_ed25519")


@pytest.mark.parametrize("point", SFTP_POINTS)
def test_sigkill_then_rerun_sftp(tmp_path, point, clean, client_key):
    root = tmp_path / "demo"
    make_demo(root, departments=DEPTS)
    with PartnerPool(tmp_path / "partners") as pool:
        partner = pool.start([SFTP_DEPT], [client_key[1]])[SFTP_DEPT]
        kh = partner.write_known_hosts(root / "known_hosts")
        params = partner.transport_params(client_key[0], kh, connect_timeout=5, timeout=10)
        inline = "{ " + ", ".join(
            f"{k} = {json.dumps(v) if not isinstance(v, dict) else '{ ' + ', '.join(f'{a} = {json.dumps(b)}' for a, b in v.items()) + ' }'}"
            for k, v in params.items()
        ) + " }"  # fmt: skip
        cfg = root / "flux-pmi.toml"
        header = f'[departments."{SFTP_DEPT}"]\n'
        assert header in cfg.read_text()
        cfg.write_text(cfg.read_text().replace(header, f"{header}transport = {inline}\n"))
        _kill(root, point)
        _rerun(root)
        _check(root, clean, partner)


def test_sigkill_mid_purge_leaves_no_row_pointing_at_a_deleted_archive(tmp_path, clean):
    root = tmp_path / "demo"
    make_demo(root, departments=DEPTS)
    _rerun(root)
    archive = ArchiveStore(root / "archive")
    before = len(list(archive.day_dir(BUSINESS_DATE).glob("*.p7m")))
    later = {"FLUX_PMI_NOW": LATER.isoformat()}
    _kill(root, "purge-mid:1", later, day=LATER.date())
    # killed after deleting the first file, before the rows
    assert len(list(archive.day_dir(BUSINESS_DATE).glob("*.p7m"))) < before
    _rerun(root, later, day=LATER.date())
    trace = TraceStore(root / "trace" / "flux-pmi.sqlite")
    rows = list(trace.db.execute("SELECT business_date, file_name FROM emissions"))
    purges = trace.db.execute("SELECT count(*) FROM purges").fetchone()[0]
    trace.close()
    missing = [
        r["file_name"]
        for r in rows
        if not archive.sealed_path(datetime.fromisoformat(r["business_date"]).date(), r["file_name"]).exists()
    ]
    assert missing == []
    assert not [r for r in rows if r["business_date"] == BUSINESS_DATE.isoformat()]
    assert purges >= 1
    # the purge never touches what the départements received
    assert record_fingerprints(open_delivered(root)) == clean["fingerprints"]
    _visible_files_are_final(root / "drop")


def test_sigkill_between_recording_an_ack_and_removing_it_records_it_once(tmp_path, clean):
    root = tmp_path / "demo"
    make_demo(root, departments=DEPTS)
    _rerun(root)
    sent = [p for p in (root / "drop").rglob("*.p7m")]
    assert len(sent) == len(clean["files"])
    for p in sent:
        folder = p.parent / "acks"
        folder.mkdir(exist_ok=True)
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        (folder / ack_name(p.name)).write_bytes(
            build_ack(p.name, digest, "OK", "OK", "pris en compte", NOW)
        )
    _kill(root, "ack-recorded:2")
    _rerun(root)
    assert not [p for p in (root / "drop").rglob("acks/*") if p.is_file()]
    trace = TraceStore(root / "trace" / "flux-pmi.sqlite")
    recorded = [
        r["emission_id"] for r in trace.db.execute("SELECT emission_id FROM acks WHERE outcome='recorded'")
    ]
    statuses = {r["status"] for r in trace.db.execute("SELECT status FROM emissions")}
    trace.close()
    assert sorted(recorded) == sorted(set(recorded)) and len(recorded) == len(sent)
    assert statuses == {"acknowledged"}
    _check(root, clean)


# -- with worker processes (jobs/prepare.py): the same points, the same outcome --------------------

WORKER_POINTS = ["build:2", "validated:3", "sealed:4", "archive-mid:3", "archived-file:5", "archived:6"]


def with_workers(root: Path) -> None:
    """Every batch built by two worker processes, however small (the default waits for 8 jobs)."""
    config = root / "flux-pmi.toml"
    config.write_text(config.read_text() + "\n[build]\nprocesses = 2\nmin_jobs = 1\n")


@pytest.mark.parametrize("point", WORKER_POINTS)
def test_sigkill_while_workers_build_then_rerun(tmp_path, point, clean):
    root = tmp_path / "demo"
    make_demo(root, departments=DEPTS)
    with_workers(root)
    _kill(root, point)
    _rerun(root)
    _check(root, clean)
    assert not [p for p in (root / "work").rglob("*") if p.is_file() and "batch-" in str(p)], \
        "a worker's plaintext or sealed copy outlived the run"


def test_a_worker_killed_while_keeping_an_input_leaves_no_plaintext_behind(tmp_path, clean):
    """A done batch's input is enveloped in a worker; that worker killed, the run keeps it itself."""
    root = tmp_path / "demo"
    make_demo(root, departments=DEPTS)
    with_workers(root)
    first = run_cli(*_args(root), env_extra={"FLUX_PMI_CRASH_AT": "keep"})
    assert first.returncode in (0, 3), first.stdout + first.stderr  # 3: the next batch's jobs died with it
    assert "consumed.worker_lost" in first.stdout + first.stderr
    trace = TraceStore(root / "trace" / "flux-pmi.sqlite")
    done = [b.id for b in trace.done_batches()]
    trace.close()
    assert done and all(list((root / "consumed").glob(f"*/batch-{b:06d}.tar.p7m")) for b in done)
    assert not [b for b in done if (root / "work" / f"batch-{b:06d}").exists()], "a done batch left in clear"
    _rerun(root)
    _check(root, clean)


def test_a_worker_killed_mid_build_leaves_its_files_for_the_next_run(tmp_path, clean):
    """The kill is the worker's own (the run survives it): its départements wait, exit 3, then the rerun sends them once."""
    root = tmp_path / "demo"
    make_demo(root, departments=DEPTS)
    with_workers(root)
    first = run_cli(*_args(root), env_extra={"FLUX_PMI_CRASH_AT": "prepare"})
    assert first.returncode == 3, first.stdout + first.stderr
    assert "a worker process died" in first.stdout + first.stderr
    # The headline counts what was not built as such, not as emissions (there are none yet).
    assert re.search(r"^exit 3: .*\d+ département file\(s\) not built; the next run retries$",
                     first.stdout, flags=re.M), first.stdout
    assert _reported(root) == clean["reported"]  # the first run finished: its report has every reject
    rerun = run_cli(*_args(root))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    # The rerun parses the open batch again and finds the same rejects: already reported, not counted again.
    assert re.search(r"^TOTAL \S+ +records=\d+ rejects=0 ", rerun.stdout, flags=re.M), rerun.stdout
    assert "rejects report:" not in rerun.stdout
    _check(root, clean)


def test_a_duplicate_input_is_noted_even_when_the_run_dies_setting_it_aside(tmp_path, clean):
    root = tmp_path / "demo"
    make_demo(root, departments=DEPTS)
    again = {p.relative_to(root / "inbox"): p.read_bytes() for p in (root / "inbox").rglob("*") if p.is_file()}
    _rerun(root)
    for rel, data in again.items():  # the same bytes dropped again, the next night
        (root / "inbox" / rel).write_bytes(data)
    _kill(root, "duplicate-noted:1")
    _rerun(root)
    trace = TraceStore(root / "trace" / "flux-pmi.sqlite")
    noted = {r["file"] for r in trace.db.execute("SELECT file FROM anomalies WHERE kind='duplicate-input'")}
    trace.close()
    assert noted == {rel.name for rel in again}  # each one, the one being moved when the run died included
    assert not [p for p in (root / "inbox").rglob("*") if p.is_file()]
    _check(root, clean)  # nothing sent twice
