"""Issue 12's guard rails: each ordinary operator mistake that once lost data with exit 0 is refused,
before anything changes, with a message naming the folder, the file or the date, and a documented code."""

from __future__ import annotations

import re
import shutil
from datetime import date
from pathlib import Path

import pytest
from support import BUSINESS_DATE, make_demo, run_cli
from support.readonly import run_cli_read_only

from flux_pmi.config.settings import load
from flux_pmi.core.errors import CertificateError, ExitCode
from flux_pmi.core.keyfiles import check_key_permissions
from flux_pmi.jobs.guards import purge_today_problem, run_date_problem
from flux_pmi.trace.store import TraceStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, departments="035,02A")
    return root


def _cfg(root: Path) -> str:
    return str(root / "flux-pmi.toml")


def _delivered(root: Path) -> list[Path]:
    return sorted((root / "drop").rglob("*.p7m")) if (root / "drop").exists() else []


def _inbox_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / "inbox").rglob("*") if p.is_file())


def _emissions(root: Path) -> int:
    db = root / "trace" / "flux-pmi.sqlite"
    if not db.exists():
        return 0
    trace = TraceStore(db)
    try:
        return trace.db.execute("SELECT count(*) FROM emissions").fetchone()[0]
    finally:
        trace.close()


def _no_traceback(proc) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr


# --- 1. a missing inbox, or one of its flow folders --------------------------------------------


def test_a_missing_inbox_refuses_to_run_and_sends_nothing(site, tmp_path):
    """Was: the inbox was created silently, and 101 départements got an empty "nothing today" flow."""
    gone = tmp_path / "share-not-mounted" / "inbox"
    cfg = site / "flux-pmi.toml"
    cfg.write_text(cfg.read_text().replace('inbox = "inbox"', f'inbox = "{gone}"'))
    proc = run_cli("run", "--config", str(cfg))
    assert proc.returncode == ExitCode.STORAGE == 10, proc.stdout + proc.stderr
    assert f"{gone}: inbox folder missing" in proc.stderr
    _no_traceback(proc)
    assert not gone.exists() and not gone.parent.exists()  # never created
    assert _delivered(site) == [] and _emissions(site) == 0

    check = run_cli("check", "--config", str(cfg))
    assert check.returncode == ExitCode.CHECK_FAILED
    assert re.search(rf"ERROR folders inbox DSG folder missing: {re.escape(str(gone / 'DSG'))}", check.stdout)


def test_a_missing_flow_folder_refuses_to_run_and_claims_nothing(site, tmp_path):
    before = _inbox_files(site)
    shutil.move(site / "inbox" / "SGR", tmp_path / "SGR-elsewhere")
    before = [f for f in before if not f.startswith("inbox/SGR")]
    proc = run_cli("run", "--config", _cfg(site))
    assert proc.returncode == ExitCode.STORAGE, proc.stdout + proc.stderr
    assert f"{site / 'inbox' / 'SGR'}: inbox folder missing" in proc.stderr
    assert "nothing was claimed or sent" in proc.stderr
    assert not (site / "inbox" / "SGR").exists()
    assert _inbox_files(site) == before  # DSG and GRO still wait in the inbox: nothing claimed
    assert _delivered(site) == [] and _emissions(site) == 0
    trace = TraceStore(site / "trace" / "flux-pmi.sqlite")
    try:  # the trace keeps the operator's code and reason, not a bug's (exit 1)
        last = trace.db.execute("SELECT exit_code, message FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        trace.close()
    assert last["exit_code"] == ExitCode.STORAGE and "inbox folder missing" in last["message"]
    check = run_cli("check", "--config", _cfg(site))
    assert check.returncode == ExitCode.CHECK_FAILED
    assert "ERROR folders inbox SGR folder missing" in check.stdout
    assert "ok    folders inbox DSG folder writable" in check.stdout

    # Put back, the night goes on as usual.
    shutil.move(tmp_path / "SGR-elsewhere", site / "inbox" / "SGR")
    again = run_cli("run", "--config", _cfg(site))
    assert again.returncode in (ExitCode.OK, ExitCode.QUARANTINED), again.stdout + again.stderr
    assert _delivered(site)


def test_the_demo_creates_the_three_flow_folders_even_for_an_empty_one(tmp_path):
    make_demo(tmp_path / "d", departments="971")
    assert all((tmp_path / "d" / "inbox" / f).is_dir() for f in ("DSG", "SGR", "GRO"))


# --- 2. dates ----------------------------------------------------------------------------------


@pytest.mark.parametrize("wild", ["2030-01-01", "2026-11-25", "2020-01-01", "2026-08-22"])
def test_a_wild_run_date_is_refused_before_anything_changes(site, wild):
    """Was: --date 2030-01-01 sent real records under a 2030 name; --date 2020-01-01 delivered files
    that its own purge then deleted from the trace and the archive."""
    before = _inbox_files(site)
    proc = run_cli("run", "--config", _cfg(site), "--date", wild)
    assert proc.returncode == ExitCode.USAGE, proc.stdout + proc.stderr
    assert f"run refused, nothing changed: --date {wild}" in proc.stderr
    _no_traceback(proc)
    assert not (site / "trace").exists()  # not even the lock or the trace store
    assert _inbox_files(site) == before and _delivered(site) == []


def test_the_date_bounds(site):
    settings = load(site / "flux-pmi.toml")
    today = date(2026, 11, 23)
    assert run_date_problem(date(2026, 11, 24), today, settings) is None  # a night started before midnight
    assert "ahead of today" in run_date_problem(date(2026, 11, 25), today, settings)
    assert run_date_problem(date(2026, 8, 23), today, settings) is None  # the retention keeps it still
    assert "older than the retention (3 months: before 2026-08-23)" in run_date_problem(
        date(2026, 8, 22), today, settings)
    assert purge_today_problem(date(2026, 11, 24), today) is None
    assert "ahead of the clock" in purge_today_problem(date(2026, 11, 25), today)
    assert purge_today_problem(date(2026, 1, 1), today) is None  # the past only keeps more


def test_purge_today_in_the_future_is_refused_and_deletes_nothing(site):
    """Was: `purge --today` took a future date and wiped the whole history, with no preview."""
    assert run_cli("run", "--config", _cfg(site), "--date", BUSINESS_DATE.isoformat()).returncode in (0, 5)
    archived = sorted((site / "archive").rglob("*.p7m"))
    rows = _emissions(site)
    assert archived and rows
    proc = run_cli("purge", "--config", _cfg(site), "--today", "2027-03-15")
    assert proc.returncode == ExitCode.USAGE, proc.stdout + proc.stderr
    assert "purge refused, nothing deleted: --today 2027-03-15" in proc.stderr
    assert sorted((site / "archive").rglob("*.p7m")) == archived and _emissions(site) == rows


# --- 3. demo into a folder that is not empty ---------------------------------------------------


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path):
    """Was: `flux-pmi demo DIR` overwrote an installation's config and pki/cnaf.key, and wrote fake
    records into its inbox."""
    site = tmp_path / "prod"
    (site / "pki").mkdir(parents=True)
    (site / "flux-pmi.toml").write_text("# the real configuration\n")
    (site / "pki" / "cnaf.key").write_text("the real key\n")
    proc = run_cli("demo", str(site), "--departments", "035")
    assert proc.returncode == ExitCode.USAGE, proc.stdout + proc.stderr
    assert "not empty" in proc.stderr and "--force" in proc.stderr
    _no_traceback(proc)
    assert (site / "flux-pmi.toml").read_text() == "# the real configuration\n"
    assert (site / "pki" / "cnaf.key").read_text() == "the real key\n"
    assert sorted(p.name for p in site.iterdir()) == ["flux-pmi.toml", "pki"]  # no inbox, no receive/

    forced = run_cli("demo", str(site), "--departments", "035", "--force")
    assert forced.returncode == ExitCode.OK, forced.stderr
    assert "[sender]" in (site / "flux-pmi.toml").read_text()


def test_demo_into_a_new_or_empty_folder_works(tmp_path):
    (tmp_path / "empty").mkdir()
    for d in ("empty", "new"):
        proc = run_cli("demo", str(tmp_path / d), "--departments", "035")
        assert proc.returncode == ExitCode.OK, proc.stderr


def test_make_demo_empties_its_folder_before_the_demo():
    recipe = (ROOT / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    lines = [line.strip() for line in recipe.splitlines()[1:]]
    assert lines.index("rm -rf $(DEMO)") < next(i for i, line in enumerate(lines) if " demo $(DEMO)" in line)


# --- 4. keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_owner_only_keys_pass(tmp_path, mode):
    key = tmp_path / "k"
    key.write_text("x")
    key.chmod(mode)
    check_key_permissions(key)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o610, 0o601])
def test_any_group_or_other_bit_is_refused(tmp_path, mode):
    key = tmp_path / "k"
    key.write_text("-----BEGIN PRIVATE KEY-----")
    key.chmod(mode)
    with pytest.raises(CertificateError, match=rf"{re.escape(str(key))}: sender key is readable by others "
                       rf"\(mode {mode:04o}\)") as exc:
        check_key_permissions(key, "sender key")
    assert exc.value.exit_code == ExitCode.USAGE and "PRIVATE" not in str(exc.value)


@pytest.mark.parametrize("key, what, scope", [("cnaf.key", "sender signing key", "sender"),
                                              ("archive.key", "archive key", "archive")])
def test_a_loose_sender_or_archive_key_is_refused_by_check_and_by_run(site, key, what, scope):
    """Was: a world-readable cnaf.key or archive.key was accepted."""
    path = site / "pki" / key
    path.chmod(0o644)
    check = run_cli("check", "--config", _cfg(site))
    assert check.returncode == ExitCode.CHECK_FAILED
    assert f"ERROR {scope:<7} {what} not owner-only: {path}: {what} is readable by others (mode 0644)" \
        in check.stdout
    before = _inbox_files(site)
    proc = run_cli("run", "--config", _cfg(site))
    assert proc.returncode == ExitCode.USAGE, proc.stdout + proc.stderr
    assert f"{path}: {what} is readable by others" in proc.stderr and "nothing was sent" in proc.stderr
    assert "PRIVATE KEY" not in proc.stdout + proc.stderr + check.stdout
    assert _inbox_files(site) == before and _delivered(site) == [] and _emissions(site) == 0
    path.chmod(0o600)
    assert run_cli("check", "--config", _cfg(site)).returncode == ExitCode.OK


def test_a_group_readable_sftp_client_key_is_refused_by_check_and_by_run(site):
    """The SFTP key was already refused at 0640, by its own rule: it is now the same rule, said the same
    way, and `run` refuses it before anything is sent to anyone."""
    key = site / "sftp_key"
    key.write_bytes((site / "pki" / "035.key").read_bytes())
    key.chmod(0o640)
    (site / "known_hosts").write_text("")
    cfg = site / "flux-pmi.toml"
    cfg.write_text(cfg.read_text().replace(
        '[departments."035"]\ncertificate = "pki/035.crt"\n',
        '[departments."035"]\ncertificate = "pki/035.crt"\n'
        'transport = { type = "sftp", host = "127.0.0.1", port = 9, user = "cnaf", key = "sftp_key", '
        'known_hosts = "known_hosts", directories = { DSG = "/in", SGR = "/in", GRO = "/in" }, '
        'connect_timeout = 1 }\n'))
    check = run_cli("check", "--config", str(cfg))
    assert check.returncode == ExitCode.CHECK_FAILED
    assert f"ERROR 035     SFTP client key not owner-only: {key}: SFTP client key is readable by others " \
           "(mode 0640)" in check.stdout
    proc = run_cli("run", "--config", str(cfg))
    assert proc.returncode == ExitCode.USAGE, proc.stdout + proc.stderr
    assert f"{key}: SFTP client key is readable by others" in proc.stderr
    assert _delivered(site) == [] and _emissions(site) == 0  # 02A (local) got nothing either


# --- 5. check tests every folder it writes to, as its user --------------------------------------


def test_check_lists_every_folder_it_writes_to(site):
    cfg = site / "flux-pmi.toml"
    (site / "prom").mkdir()
    cfg.write_text(cfg.read_text() + '\n[service]\nmetrics_file = "prom/flux-pmi.prom"\n')
    proc = run_cli("check", "--config", str(cfg))
    assert proc.returncode == ExitCode.OK, proc.stdout
    folders = dict(re.findall(r"^ok    folders (.+?) folder writable: (.+)$", proc.stdout, re.M))
    assert folders == {"trace": str(site / "trace"), "inbox DSG": str(site / "inbox" / "DSG"),
                       "inbox SGR": str(site / "inbox" / "SGR"), "inbox GRO": str(site / "inbox" / "GRO"),
                       "work": str(site / "work"), "archive": str(site / "archive"),
                       "reports": str(site / "reports"), "quarantine": str(site / "quarantine"),
                       "consumed": str(site / "consumed"), "local drop": str(site / "drop"),
                       "metrics": str(site / "prom")}
    assert not (site / "work").exists()  # check creates nothing
    assert not [p for p in site.rglob(".tmp-probe-*")]


def test_check_says_when_the_archive_folder_lacks_what_the_trace_archived(site, tmp_path):
    """An operator's typo in `[paths] archive` (a new, empty folder) made re-emission and the purge miss
    every archived file, while `check` said ok."""
    cfg = site / "flux-pmi.toml"
    assert run_cli("run", "--config", str(cfg)).returncode in (ExitCode.OK, ExitCode.QUARANTINED)
    good = run_cli("check", "--config", str(cfg))
    assert re.search(r"^ok    archive archive holds the \d+ latest archived file\(s\)", good.stdout, re.M), good.stdout
    typo = tmp_path / "archvie"
    typo.mkdir()
    cfg.write_text(cfg.read_text().replace('archive = "archive"', f'archive = "{typo}"'))
    proc = run_cli("check", "--config", str(cfg))
    assert proc.returncode == ExitCode.CHECK_FAILED, proc.stdout
    assert re.search(r"^ERROR archive archive holds none of the \d+ latest archived file\(s\): "
                     + re.escape(str(typo)) + r": missing e\.g\. \w+_\w{3}_\d{8}_\d{6}\.(xml|zip)\.p7m; "
                     r"wrong \[paths\] archive", proc.stdout, re.M), proc.stdout
    assert list(typo.iterdir()) == []  # check changed nothing


def test_check_finds_a_folder_its_user_cannot_write(site):
    """Root ignores mode bits, so a read-only bind mount is the honest test: os.access and a real
    probe file both see it. A metrics folder that does not exist is reported too."""
    (site / "archive").mkdir(exist_ok=True)
    cfg = site / "flux-pmi.toml"
    cfg.write_text(cfg.read_text() + '\n[service]\nmetrics_file = "no-such-folder/flux-pmi.prom"\n')
    proc = run_cli_read_only([site / "archive", site / "inbox" / "GRO"], "check", "--config", str(cfg))
    assert proc.returncode == ExitCode.CHECK_FAILED, proc.stdout + proc.stderr
    assert re.search(rf"ERROR folders archive folder unusable: {re.escape(str(site / 'archive'))}: not writable "
                     r"by root", proc.stdout), proc.stdout
    assert "ERROR folders inbox GRO folder unusable" in proc.stdout
    assert f"ERROR folders metrics folder unusable: {site / 'no-such-folder'}: does not exist" in proc.stdout
    assert "ok    folders inbox DSG folder writable" in proc.stdout


def test_a_folder_that_cannot_be_created_is_named_with_a_documented_code(site):
    """An OSError from a folder that is not writable: a message and exit 10, never a traceback."""
    proc = run_cli_read_only([site], "run", "--config", _cfg(site))
    assert proc.returncode == ExitCode.STORAGE, proc.stdout + proc.stderr
    assert f"flux-pmi: error: {site / 'trace'}" in proc.stderr and "Read-only file system" in proc.stderr
    _no_traceback(proc)
    check = run_cli_read_only([site], "check", "--config", _cfg(site))
    assert f"ERROR folders work folder unusable: {site / 'work'}: cannot be created: {site} is not writable" \
        in check.stdout


# --- work, quarantine or consumed on another file system than the inbox --------------------------


def test_a_work_folder_on_another_file_system_is_refused_before_anything_is_claimed(site, monkeypatch):
    # Inputs leave the inbox by rename (exactly once, crash-safe); a rename cannot cross file systems.
    # With work/ on a tmpfs, the claim stopped on its first file with EXDEV: a traceback, exit 1.
    from flux_pmi.core.errors import StorageError
    from flux_pmi.jobs import guards
    from flux_pmi.jobs.night import Night

    settings = load(site / "flux-pmi.toml")
    work = settings.paths.work
    real = guards._device
    # Two file systems cannot be mounted by a test: the work folder's is made to differ.
    monkeypatch.setattr(guards, "_device", lambda p: -1 if p == work or work in p.parents else real(p))
    assert guards.volume_problems(settings) == [
        f"work folder {work} is on another file system than the inbox folder {settings.paths.inbox / 'DSG'}"]
    before = _inbox_files(site)
    with pytest.raises(StorageError, match="cannot cross file systems") as raised:
        Night(settings).run(BUSINESS_DATE)
    assert raised.value.exit_code == ExitCode.STORAGE
    assert _inbox_files(site) == before and _emissions(site) == 0 and not _delivered(site)
    monkeypatch.setattr(guards, "_device", real)
    assert guards.volume_problems(settings) == []  # one file system: nothing to say


def test_a_folder_still_to_be_created_is_judged_by_the_file_system_it_will_be_created_on(tmp_path):
    from flux_pmi.jobs.guards import _device

    assert _device(tmp_path / "not" / "yet") == _device(tmp_path)
