"""Faults a night must survive (docs/reliability.md): each test checks four things.

1. a clear error naming the cause; 2. nothing lost: once the fault is gone, every record of the
seeded day is delivered exactly once (fingerprints equal to a clean run of the same seed);
3. the other partners are unaffected (where the fault is one partner's); 4. the next run completes.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from support import BUSINESS_DATE, NOW, make_demo, open_delivered, record_fingerprints, run_cli
from support.sshd import FLOW_DIRS, HOST, PartnerPool, generate_key, require_tools

from flux_pmi.config.settings import load
from flux_pmi.core.clock import FixedClock
from flux_pmi.core.errors import ExitCode, StorageError, TraceError
from flux_pmi.jobs.night import Night
from flux_pmi.testing.mock import ScriptedPartner
from flux_pmi.trace.store import TraceStore
from flux_pmi.transport.registry import transport_for

FAULTY = "067"
OTHERS = ("035", "02A", "971")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, bytes]:
    """What a clean night of the same seeded day delivers: {dept/name: plaintext}."""
    root = tmp_path_factory.mktemp("reference") / "demo"
    make_demo(root)
    assert _night(root).run(BUSINESS_DATE).exit_code == ExitCode.OK
    return open_delivered(root)


@pytest.fixture
def expected(reference) -> Counter:
    fps = record_fingerprints(reference)
    assert sum(fps.values()) > 0 and max(fps.values()) == 1
    return fps


def _night(root: Path, now=NOW, **kw) -> Night:
    return Night(load(root / "flux-pmi.toml"), clock=FixedClock(now), sleep=lambda _s: None, **kw)


def _only(delivered: dict[str, bytes], depts) -> Counter:
    return record_fingerprints({n: d for n, d in delivered.items() if n.split("/")[0] in depts})


# -- disk full during a build -------------------------------------------------------------------------


def test_disk_full_during_a_build(demo, expected):
    root, _ = demo
    cfg = str(root / "flux-pmi.toml")
    full = run_cli("run", "--config", cfg, env_extra={"FLUX_PMI_ENOSPC_AT": "build:2"})
    assert full.returncode == ExitCode.UNDELIVERED, full.stdout + full.stderr
    assert "No space left on device" in full.stdout + full.stderr  # the cause, named
    # Only the département whose build hit the full disk waits; the others got their files.
    got = record_fingerprints(open_delivered(root))
    assert 0 < sum(got.values()) < sum(expected.values()) and max(got.values()) == 1
    again = run_cli("run", "--config", cfg)
    assert again.returncode == 0, again.stdout + again.stderr
    assert record_fingerprints(open_delivered(root)) == expected  # nothing lost, nothing twice
    assert run_cli("run", "--config", cfg).returncode == 0
    assert record_fingerprints(open_delivered(root)) == expected


def test_a_failing_path_is_named_by_its_configured_folder_only(demo):
    # "cannot build: No space left on device (in the archive folder /srv/...)": which disk to look at,
    # never the path itself (an SGR scan's name comes from upstream).
    root, _ = demo
    night = _night(root)
    archive = night.paths.archive
    assert night._folder_of(str(archive / "2026" / "11" / "23" / "DSG_035.xml.p7m")) == \
        f" (in the archive folder {archive})"
    assert night._folder_of(os.fsencode(night.paths.work / "batch-000001")) == \
        f" (in the work folder {night.paths.work})"
    assert night._folder_of(str(root / "inbox" / "SGR" / "Mme Dupont.zip")) == ""
    assert night._folder_of(None) == ""


# -- trace database locked by another process ---------------------------------------------------------

_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


def test_trace_database_locked_by_another_process(demo, expected):
    root, _ = demo
    settings = load(root / "flux-pmi.toml")
    TraceStore(settings.paths.trace).close()  # the store exists, as on any installation after day one
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(settings.paths.trace)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"  # handshake: the write lock is held now
        trace = TraceStore(settings.paths.trace, busy_timeout_ms=200)
        try:
            with pytest.raises(TraceError, match="locked by another process"):
                _night(root).run(BUSINESS_DATE, trace=trace)
        finally:
            trace.close()
        assert sum(record_fingerprints(open_delivered(root)).values()) == 0  # refused before any change
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        assert holder.wait(timeout=10) == 0
    report = _night(root).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.OK, report.problems
    assert record_fingerprints(open_delivered(root)) == expected


# -- a partner down, slow, refusing authentication, with a changed host key or a full disk -------------


def _set_transport(cfg: Path, params: dict) -> None:
    from support.toml import _inline

    text = cfg.read_text()
    head = f'[departments."{FAULTY}"]\n'
    start = text.index(head) + len(head)
    if text[start:].startswith("transport = "):
        text = text[:start] + text[start:].split("\n", 1)[1]
    cfg.write_text(text[:start] + f"transport = {_inline(params)}\n" + text[start:])


def _sftp_delivered(partner) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for d in FLOW_DIRS.values() for p in (partner.root / d).glob("*.p7m")}


def _open_partner(root: Path, partner) -> dict[str, bytes]:
    from flux_pmi.seal import certs, cms

    ca = certs.load_certificate(root / "pki" / "cnaf.crt")
    cert = certs.load_certificate(root / "pki" / f"{FAULTY}.crt")
    key = certs.load_private_key(root / "pki" / f"{FAULTY}.key", None)
    return {
        f"{FAULTY}/{name}": cms.open_sealed(
            data, recipient_cert=cert, recipient_key=key, trusted_signers=[ca]
        )
        for name, data in _sftp_delivered(partner).items()
    }


@pytest.mark.parametrize("fault", ["down", "slow", "auth", "hostkey", "disk-full"])
def test_a_partner_fault_leaves_the_others_alone_and_the_next_run_catches_up(
    demo, reference, expected, tmp_path, fault
):
    require_tools()
    root, _ = demo
    cfg = root / "flux-pmi.toml"
    keys = tmp_path / "keys"
    keys.mkdir()
    good = (keys / "id_ed25519", generate_key(keys / "id_ed25519"))
    stranger = (keys / "id_stranger", generate_key(keys / "id_stranger"))
    with PartnerPool(tmp_path / "partners") as pool, socket.socket() as silent:
        options = {"max_file_bytes": 1024} if fault == "disk-full" else {}
        partner = pool.start([FAULTY], good[1], **options)[FAULTY]
        kh = partner.write_known_hosts(root / "known_hosts", wrong=fault == "hostkey")
        params = partner.transport_params(good[0], kh, connect_timeout=1, timeout=5)
        if fault == "down":
            partner.stop()
            cause = f"partner {FAULTY}"
        elif fault == "slow":  # the kernel accepts the connection, nobody ever speaks SSH
            silent.bind((HOST, 0))
            silent.listen(8)
            params = {**params, "port": silent.getsockname()[1]}
            cause = f"partner {FAULTY}"
        elif fault == "auth":
            params = {**params, "key": str(stranger[0])}
            cause = "authentication refused"
        elif fault == "hostkey":
            cause = "host key CHANGED"
        else:
            cause = "refused the write"
        _set_transport(cfg, params)

        report = _night(root).run(BUSINESS_DATE)
        assert report.exit_code == ExitCode.UNDELIVERED
        problems = "\n".join(report.problems)
        assert cause in problems and FAULTY in problems, problems
        assert report.seconds < 120  # the fault costs timeouts, not the night
        delivered = open_delivered(root)
        assert _only(delivered, OTHERS) == _only(reference, OTHERS)  # the others got all theirs, once
        assert not any(n.startswith(FAULTY + "/") for n in delivered)  # the local drop is the others'
        assert _sftp_delivered(partner) == {}  # no whole file for the faulty partner, no partial one

        # The fault goes away.
        if fault == "down":
            partner.start()
        elif fault == "slow":
            _set_transport(cfg, partner.transport_params(good[0], kh, connect_timeout=1, timeout=5))
        elif fault == "auth":
            _set_transport(cfg, partner.transport_params(good[0], kh, connect_timeout=1, timeout=5))
        elif fault == "hostkey":
            partner.write_known_hosts(kh)  # the operator checks the new key and pins it
        else:
            partner.stop()
            partner.max_file_bytes = None
            partner.start()
        before = {p: p.stat().st_mtime_ns for p in (root / "drop").rglob("*.p7m")}
        again = _night(root).run(BUSINESS_DATE)
        assert again.exit_code == ExitCode.OK, again.problems
        assert {
            p: p.stat().st_mtime_ns for p in (root / "drop").rglob("*.p7m")
        } == before  # others: nothing again
        assert record_fingerprints({**open_delivered(root), **_open_partner(root, partner)}) == expected


# -- two runs at once ---------------------------------------------------------------------------------


def test_two_runs_at_once(demo, expected, tmp_path):
    root, _ = demo
    cfg = root / "flux-pmi.toml"
    cfg.write_text(cfg.read_text() + "\n[service]\nlock_wait_seconds = 0\n")
    fifo = tmp_path / "pause"
    os.mkfifo(fifo)
    env = {
        **os.environ,
        "FLUX_PMI_NOW": NOW.isoformat(),
        "FLUX_PMI_LOG_FORMAT": "json",
        "FLUX_PMI_PAUSE_AT": "claim",
        "FLUX_PMI_PAUSE_FIFO": str(fifo),
    }
    first = subprocess.Popen(
        [sys.executable, "-m", "flux_pmi.cli", "run", "--config", str(cfg)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in first.stderr:  # handshake: the first run holds the lock and is inside its work
            if line.startswith("paused at claim"):
                break
        second = run_cli("run", "--config", str(cfg))
        assert second.returncode == ExitCode.LOCKED
        assert "holds the lock" in second.stderr and f"pid {first.pid}" in second.stderr
    finally:
        with open(fifo, "w") as f:
            f.write("go\n")
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    assert record_fingerprints(open_delivered(root)) == expected  # one did the work, exactly once
    assert run_cli("run", "--config", str(cfg)).returncode == 0
    assert record_fingerprints(open_delivered(root)) == expected


# -- the clock goes back an hour ----------------------------------------------------------------------


def test_the_clock_goes_back_an_hour(demo, expected):
    root, _ = demo

    def down_067(settings, dept):
        return ScriptedPartner(down={FAULTY}).factory(settings, dept) if dept.code == FAULTY else transport_for(settings, dept)

    first = _night(root, transport_factory=down_067).run(BUSINESS_DATE)
    assert first.exit_code == ExitCode.UNDELIVERED and f"partner {FAULTY}" in "\n".join(first.problems)
    earlier = NOW - timedelta(hours=1)  # NTP steps the clock back; same business date
    second = _night(root, now=earlier).run(BUSINESS_DATE)
    assert second.exit_code == ExitCode.OK, second.problems
    assert second.totals().files == 0  # nothing built again: only the pending delivery
    assert record_fingerprints(open_delivered(root)) == expected
    third = _night(root, now=earlier).run(BUSINESS_DATE)
    assert third.exit_code == ExitCode.OK and third.totals().delivered == 0
    assert record_fingerprints(open_delivered(root)) == expected
    trace = TraceStore(load(root / "flux-pmi.toml").paths.trace)
    try:
        assert trace.to_deliver() == []
        seqs = trace.db.execute("SELECT flow, department, seq FROM emissions").fetchall()
        assert len(seqs) == len({tuple(r) for r in seqs}) == 12  # no sequence handed out twice
    finally:
        trace.close()


# -- the trace's volume fills up during a night ----------------------------------------------------------


@pytest.mark.timeout(180)  # the bug this guards against was a hang: fail, do not wait for the suite's limit
def test_trace_volume_full_during_a_night_then_freed(demo, expected):
    # A full trace volume used to end the night on a traceback (exit 1) and skip closing the
    # transports and the workers. It is exit 10 now, with the store named; once there is room,
    # the next run completes the night: nothing lost, nothing sent twice.
    root, _ = demo
    settings = load(root / "flux-pmi.toml")
    trace = TraceStore(settings.paths.trace)
    pages = trace.db.execute("PRAGMA page_count").fetchone()[0]
    trace.db.execute(f"PRAGMA max_page_count = {pages + 2}")  # SQLite's SQLITE_FULL, as from a full disk
    try:
        with pytest.raises(StorageError, match="database or disk is full") as raised:
            _night(root).run(BUSINESS_DATE, trace=trace)
        assert raised.value.exit_code == ExitCode.STORAGE
    finally:
        trace.close()
    got = record_fingerprints(open_delivered(root))
    assert sum(got.values()) < sum(expected.values()) and (not got or max(got.values()) == 1)
    report = _night(root).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.OK, report.problems
    assert record_fingerprints(open_delivered(root)) == expected


def test_a_full_disk_met_by_a_write_names_the_full_folders(demo, monkeypatch):
    # A write (not an open) that hits a full disk names no file: say which of our folders sit on a
    # volume with (nearly) nothing left, so that the operator knows which disk to look at.
    root, _ = demo
    night = _night(root)
    free = {night.paths.archive: 4096}

    def usage(path):
        return shutil._ntuple_diskusage(10 << 30, 10 << 30, free.get(Path(path), 5 << 30))

    monkeypatch.setattr(shutil, "disk_usage", usage)
    full = OSError(errno.ENOSPC, "No space left on device")
    assert night._full_folders(full) == f" (the archive folder {night.paths.archive} has 4 KiB free)"
    assert night._full_folders(OSError(errno.EIO, "Input/output error")) == ""
    free.clear()
    assert night._full_folders(full) == ""  # nothing nearly full: say nothing rather than guess
