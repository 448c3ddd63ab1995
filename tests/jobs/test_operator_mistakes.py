"""An operator's mistakes on a bad night get a clear answer with a documented exit code, never a
traceback, and lose, duplicate or misroute nothing: odd bytes in --reason, an empty --by, a wrong code."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
from support import make_demo, run_cli

from flux_pmi.core.clock import PARIS
from flux_pmi.core.errors import ConfigError, ExitCode
from flux_pmi.jobs import holds

NOW = datetime(2026, 11, 23, 4, 0, tzinfo=PARIS)
# Bytes a terminal or a paste can put in argv: not UTF-8 (\xff), a C1 CSI (\xc2\x9b), ESC, a newline,
# a Unicode line separator and a bidi override; and a formula-like start.
ODD_REASON = "=cmd|calc\nx\x1b[31m\udcff\x9b2J\u2028y\u202eevil"


def _demo(tmp_path: Path) -> Path:
    root = tmp_path / "demo"
    make_demo(root)
    return root


def _db(root: Path) -> sqlite3.Connection:
    return sqlite3.connect(root / "trace" / "flux-pmi.sqlite")


def test_hold_reason_with_bytes_that_are_not_utf8_is_stored_as_one_clean_line(tmp_path):
    root = _demo(tmp_path)
    lines = holds.hold(root / "flux-pmi.toml", "035", by="op", reason=ODD_REASON, now=NOW)
    assert "held" in lines[0]
    reason = _db(root).execute("SELECT reason FROM holds WHERE department='035'").fetchone()[0]
    assert reason.startswith("=cmd|calc x")
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF
                   or c in "\u2028\u202e" for c in reason)
    status = run_cli("status", "--config", str(root / "flux-pmi.toml"))
    assert status.returncode in (ExitCode.OK, ExitCode.STALE), status.stderr
    assert "Traceback" not in status.stderr and "\x1b" not in status.stdout


def test_reemit_reason_that_is_not_utf8_is_not_a_traceback(tmp_path):
    root = _demo(tmp_path)
    config = str(root / "flux-pmi.toml")
    assert run_cli("run", "--config", config).returncode == ExitCode.OK
    r = run_cli("reemit", "--config", config, "--flow", "DSG", "--department", "035", "--date", "2026-11-23",
                "--reason", ODD_REASON)
    assert "Traceback" not in r.stderr
    assert r.returncode == ExitCode.OK, r.stdout + r.stderr
    reason, status = _db(root).execute("SELECT reason, status FROM reemission_requests").fetchone()
    assert status == "done" and reason.startswith("=cmd|calc x") and "\x1b" not in reason


@pytest.mark.parametrize("command", ["hold", "resume"])
def test_an_empty_by_is_refused_not_replaced_by_the_os_user(tmp_path, command):
    root = _demo(tmp_path)
    fn = holds.hold if command == "hold" else holds.resume
    kw = {"reason": ""} if command == "hold" else {}
    with pytest.raises(ConfigError, match="--by"):
        fn(root / "flux-pmi.toml", "035", by="", now=NOW, **kw)
    trace = root / "trace" / "flux-pmi.sqlite"
    assert not trace.exists() or _db(root).execute("SELECT count(*) FROM holds").fetchone()[0] == 0


def test_reemit_with_an_empty_by_is_refused(tmp_path):
    root = _demo(tmp_path)
    config = str(root / "flux-pmi.toml")
    assert run_cli("run", "--config", config).returncode == ExitCode.OK
    r = run_cli("reemit", "--config", config, "--flow", "DSG", "--department", "035", "--date", "2026-11-23",
                "--by", "")
    assert r.returncode == ExitCode.USAGE and "--by" in r.stderr, r.stdout + r.stderr
    assert _db(root).execute("SELECT count(*) FROM reemission_requests").fetchone()[0] == 0


def test_holding_an_unknown_code_names_it_and_does_not_offer_all(tmp_path):
    root = _demo(tmp_path)
    r = run_cli("hold", "69X", "--config", str(root / "flux-pmi.toml"))
    assert r.returncode == ExitCode.USAGE
    assert "'69X'" in r.stderr and "or all" not in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("command", [["check"], ["status", "--json"], ["run"], ["hold", "035"]])
def test_a_config_saved_as_latin1_or_a_folder_is_a_usage_error_not_a_traceback(tmp_path, command):
    root = _demo(tmp_path)
    latin = root / "latin.toml"
    latin.write_bytes((root / "flux-pmi.toml").read_bytes() + "# Dé partement\n".encode("latin-1"))
    for config in (latin, root):
        r = run_cli(*command, "--config", str(config))
        assert r.returncode == ExitCode.USAGE, r.stderr
        assert "Traceback" not in r.stderr and str(config) in r.stderr


def test_status_does_not_say_ok_for_a_night_killed_with_sigkill(tmp_path):
    root = _demo(tmp_path)
    config = str(root / "flux-pmi.toml")
    assert run_cli("run", "--config", config, env_extra={"FLUX_PMI_CRASH_AT": "delivered:2"}).returncode == -9
    text = run_cli("status", "--config", config).stdout
    [line] = [x for x in text.splitlines() if x.startswith("  last run ")]  # the summary's line
    verdict = line.removeprefix("  last run ").strip()
    assert "status died" in line and not verdict.startswith("OK"), line
    assert run_cli("run", "--config", config).returncode == ExitCode.OK
    text = run_cli("status", "--config", config).stdout
    assert "  OK: run 2" in text


def test_a_missing_drop_root_is_not_created_its_files_wait_and_go_once_it_is_back(tmp_path):
    # An unmounted share: files "delivered" into a folder created in its place never reach the partner.
    root = _demo(tmp_path)
    config = root / "flux-pmi.toml"
    share = tmp_path / "mnt" / "share"
    config.write_text(config.read_text().replace('root = "drop"', f'root = "{share}"'))
    check = run_cli("check", "--config", str(config), "--quiet")
    assert check.returncode == ExitCode.CHECK_FAILED and "local drop root" in check.stdout, check.stdout
    r = run_cli("run", "--config", str(config))
    assert r.returncode == ExitCode.UNDELIVERED and "local drop root" in r.stdout, r.stdout + r.stderr
    assert not share.parent.exists()
    share.parent.mkdir()
    assert run_cli("run", "--config", str(config)).returncode == ExitCode.OK
    delivered = sorted(p.name for p in share.glob("*/*.p7m"))
    assert len(delivered) == 12 and all("_R" not in n for n in delivered)


def test_a_nir_or_phone_pasted_in_a_reason_is_masked_before_it_is_traced_or_shown(tmp_path):
    root = _demo(tmp_path)
    config = str(root / "flux-pmi.toml")
    r = run_cli("hold", "035", "--config", config, "--reason", "Mme X NIR 2 96 03 92 050 832 31 tel 0601020304",
                "--by", "ops 0601020304")
    assert r.returncode == ExitCode.OK, r.stderr
    (reason, by), = _db(root).execute("SELECT reason, held_by FROM holds").fetchall()
    assert (reason, by) == ("Mme X NIR [masked] tel [masked]", "ops [masked]")
    assert "0601020304" not in r.stdout + r.stderr and "832 31" not in r.stdout + r.stderr


def test_a_day_that_does_not_exist_is_named_as_such(tmp_path):
    root = _demo(tmp_path)
    r = run_cli("run", "--config", str(root / "flux-pmi.toml"), "--date", "2026-02-30")
    assert r.returncode == ExitCode.USAGE and "no such day: '2026-02-30'" in r.stderr


@pytest.mark.parametrize("command", [["run"], ["purge"], ["hold", "035"], ["resume", "035"], ["status", "--json"],
                                     ["reemit", "--flow", "DSG", "--department", "035", "--date", "2026-11-23"],
                                     ["journal", "035", "--transport", "cft"], ["history"]])
def test_an_unmounted_state_folder_is_refused_and_no_phantom_state_is_created(tmp_path, command):
    """Answering from a fresh, empty trace would lie: a hold stored there is lost when the share returns."""
    root = _demo(tmp_path)
    state = tmp_path / "mnt" / "flux"  # its parent missing too: nothing mounted there
    cfg = root / "flux-pmi.toml"
    cfg.write_text(cfg.read_text().replace("[paths]\n", f'[paths]\nstate = "{state}"\n', 1))
    r = run_cli(*command, "--config", str(cfg))
    assert r.returncode == ExitCode.STORAGE, r.stdout + r.stderr
    assert f"{state}: missing" in r.stderr and "nothing was done" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "mnt").exists()


def test_status_nagios_says_critical_when_the_state_folder_is_missing(tmp_path):
    root = _demo(tmp_path)
    cfg = root / "flux-pmi.toml"
    cfg.write_text(cfg.read_text().replace("[paths]\n", f'[paths]\nstate = "{tmp_path / "gone" / "flux"}"\n', 1))
    r = run_cli("status", "--nagios", "--config", str(cfg))
    assert r.returncode == 2 and r.stdout.startswith("FLUX-PMI CRITICAL - ") and "missing" in r.stdout


def test_a_damaged_trace_is_exit_10_for_run_and_critical_for_the_probe(tmp_path):
    # A disk fault or a copy cut short: it used to be a bare "file is not a database", exit 1 (a bug's
    # code), and Nagios read exit 1 as a mere WARNING.
    root = _demo(tmp_path)
    cfg = str(root / "flux-pmi.toml")
    assert run_cli("run", "--config", cfg).returncode == ExitCode.OK
    trace = root / "trace" / "flux-pmi.sqlite"
    trace.write_bytes(trace.read_bytes()[:5000])  # cut short: the schema page survives, the rest is gone
    for extra in ("-wal", "-shm"):
        trace.with_name(trace.name + extra).unlink(missing_ok=True)
    r = run_cli("run", "--config", cfg)
    assert r.returncode == ExitCode.STORAGE and "restore it from the last backup" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    probe = run_cli("status", "--nagios", "--config", cfg)
    assert probe.returncode == 2 and probe.stdout.startswith("FLUX-PMI CRITICAL - "), probe.stdout + probe.stderr


def test_an_unusable_reports_folder_is_refused_before_anything_is_claimed_or_sent(tmp_path):
    root = _demo(tmp_path)
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports").rmdir()
    (root / "reports").write_text("not a folder\n")
    inputs = sorted(p.name for p in (root / "inbox").rglob("*") if p.is_file())
    r = run_cli("run", "--config", str(root / "flux-pmi.toml"))
    assert r.returncode == ExitCode.STORAGE, r.stdout + r.stderr
    assert f"{root / 'reports'}: reports folder not a folder: nothing was claimed or sent" in r.stderr
    assert sorted(p.name for p in (root / "inbox").rglob("*") if p.is_file()) == inputs
    assert not [p for p in (root / "drop").rglob("*") if p.is_file()]
    (root / "reports").unlink()
    again = run_cli("run", "--config", str(root / "flux-pmi.toml"))
    assert again.returncode == ExitCode.OK, again.stdout + again.stderr
    assert "rejects report:" in again.stdout  # the demo day's rejects, reported by the run that did the work


def test_entries_the_night_does_not_take_are_named_logged_and_left_where_they_are(tmp_path):
    # A declaration in the wrong flow folder, or under a name flux-pmi does not take, misses its
    # deadline if nobody sees it: each one is named on stdout and in the log, every night, and left
    # in place (an upstream tool may still own it). A writer's temporary is left out on purpose.
    root = _demo(tmp_path)
    config = str(root / "flux-pmi.toml")
    inbox = root / "inbox"
    (inbox / "DSG" / "DGESDSGA_20261120_0005.xml").rename(inbox / "SGR" / "DGESDSGA_20261120_0005.xml")
    (inbox / "SGR" / "SDP_971_20261120.zip").rename(inbox / "DSG" / "SDP_971_20261120.zip")
    (inbox / "GRO" / "noext").write_bytes(b"?")
    (inbox / "SGR" / "plainsub").mkdir()
    (inbox / "SGR" / "plainsub" / "DGESDSGA_20261120_0006.xml").write_bytes(b"<Agregat/>")
    (inbox / "DSG" / "DGESDSGA_20261120_0007.xml.tmp").write_bytes(b"<Agr")  # being written
    (inbox / "DSG" / ".hidden.xml").write_bytes(b"<Agr")  # being written, the other way
    left = {"SGR/DGESDSGA_20261120_0005.xml", "DSG/SDP_971_20261120.zip", "GRO/noext", "SGR/plainsub"}
    ignored = {"DSG/DGESDSGA_20261120_0007.xml.tmp", "DSG/.hidden.xml"}

    plan = run_cli("run", "--config", config, "--dry-run")
    assert plan.returncode == ExitCode.OK, plan.stdout + plan.stderr
    named = {line.split(": ", 1)[1].split(" (")[0] for line in plan.stdout.splitlines()
             if line.startswith("  not taken, would stay in the inbox: ")}
    assert named == left, plan.stdout

    r = run_cli("run", "--config", config)
    assert r.returncode == ExitCode.OK, r.stdout + r.stderr  # the exit code says what the run did, not this
    named = {line.removeprefix("not taken, left in the inbox: ").split(" (")[0] for line in r.stdout.splitlines()
             if line.startswith("not taken, left in the inbox: ")}
    assert named == left, r.stdout
    assert "DSG/SDP_971_20261120.zip (not a .xml for DSG; .zip is for SGR: the wrong folder?)" in r.stdout
    assert "not taken: 4 inbox entries no run will read" in r.stdout
    events = [json.loads(line) for line in r.stderr.splitlines() if '"inbox.not_taken"' in line]
    assert {f"{e['flow']}/{e['file']}" for e in events} == left
    assert all(e["level"] == "warning" and e["reason"] for e in events)
    assert all((inbox / name).exists() for name in left | ignored)
    assert not any(n in r.stdout + r.stderr for n in ("0007.xml.tmp", ".hidden.xml"))

    # Nothing was taken, so the next night names them again.
    again = run_cli("run", "--config", config)
    assert again.returncode == ExitCode.OK and "not taken: 4 inbox entries" in again.stdout, again.stdout


@pytest.mark.parametrize("command", [["run"], ["status"], ["hold", "035"], ["purge"]])
def test_a_command_run_as_another_user_than_the_states_owner_is_refused(tmp_path, monkeypatch, capsys, command):
    # `sudo flux-pmi run` by hand on a server: root would create the trace's journal, archive folders and
    # the lock as root, and the service user's next nights would stop on them. Refused, nothing created.
    from flux_pmi import cli

    root = _demo(tmp_path)
    cfg = str(root / "flux-pmi.toml")
    assert cli.main(["run", "--config", cfg]) == ExitCode.OK
    before = sorted(str(p) for p in root.rglob("*"))
    owner = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: owner + 4242)  # someone else than the state's owner
    capsys.readouterr()
    assert cli.main([*command, "--config", cfg]) == ExitCode.STORAGE
    err = capsys.readouterr().err
    assert f"this command runs as uid {owner + 4242}" in err and "nothing was done" in err, err
    assert sorted(str(p) for p in root.rglob("*")) == before
