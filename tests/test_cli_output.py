"""What the command line prints where nobody watches (cron mail), and what `--help` says.

A clean national night on a pipe fits on one screen, stdout and stderr together; `--quiet` prints
nothing when nothing needs a person; every command describes itself and lists the exit codes,
which are the table of docs/operations.md, generated from the ExitCode enum.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from support import BUSINESS_DATE, make_demo, run_cli

from flux_pmi import cli
from flux_pmi.core.errors import ExitCode

ROOT = Path(__file__).resolve().parents[1]
SCREEN = 20


def _lines(proc) -> list[str]:
    return (proc.stdout + proc.stderr).splitlines()


def test_a_clean_national_night_on_a_pipe_fits_on_one_screen(tmp_path, monkeypatch):
    monkeypatch.delenv("FLUX_PMI_LOG_LEVEL", raising=False)  # the default an unattended run gets
    root = tmp_path / "national"
    make_demo(root, departments="all")
    config = str(root / "flux-pmi.toml")

    night = run_cli("run", "--config", config, "--date", BUSINESS_DATE.isoformat())
    assert night.returncode == ExitCode.OK, night.stdout + night.stderr
    out = _lines(night)
    assert len(out) <= SCREEN, "\n".join(out)
    assert any(line.startswith(f"TOTAL {BUSINESS_DATE}") and "delivered=306" in line for line in out)
    assert any(line.startswith("rejects report: ") for line in out)  # the demo has bad records on purpose
    assert "\r" not in night.stdout + night.stderr  # no progress line on a pipe

    received = run_cli("receive", "--config-dir", str(root / "receive"), "--once")
    assert received.returncode == ExitCode.OK, received.stdout + received.stderr
    assert len(_lines(received)) <= SCREEN, received.stdout + received.stderr
    assert received.stdout.splitlines()[-1].startswith("outputs (CSV and Parquet): ")

    # The night again: nothing to send, nothing that needs a person, so --quiet says nothing at all.
    again = run_cli("run", "--quiet", "--config", config, "--date", BUSINESS_DATE.isoformat())
    assert again.returncode == ExitCode.OK and again.stdout + again.stderr == ""


def test_verbose_adds_a_line_per_flow_and_department(demo):
    root, _ = demo
    proc = run_cli("run", "--verbose", "--config", str(root / "flux-pmi.toml"), "--date", BUSINESS_DATE.isoformat())
    assert proc.returncode == ExitCode.OK, proc.stdout + proc.stderr
    per_file = [line for line in proc.stdout.splitlines() if re.match(r"^(DSG|SGR|GRO) (035|02A|067|971) ", line)]
    assert len(per_file) == 12


def test_the_log_level_is_an_option_and_an_environment_variable(demo):
    root, _ = demo
    args = ("check", "--config", str(root / "flux-pmi.toml"))
    assert '"lock.' not in run_cli(*args).stderr
    debug = run_cli("--log-level", "debug", "run", "--config", str(root / "flux-pmi.toml"),
                    "--date", BUSINESS_DATE.isoformat())
    assert '"event": "lock.acquired"' in debug.stderr and '"event": "run.start"' in debug.stderr
    info = run_cli("run", "--config", str(root / "flux-pmi.toml"), "--date", BUSINESS_DATE.isoformat(),
                   env_extra={"FLUX_PMI_LOG_LEVEL": "info"})
    assert '"event": "run.start"' in info.stderr and '"lock.acquired"' not in info.stderr
    bad = run_cli(*args, env_extra={"FLUX_PMI_LOG_LEVEL": "chatty"})
    assert bad.returncode == ExitCode.USAGE and "FLUX_PMI_LOG_LEVEL" in bad.stderr


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = cli._parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _docs_exit_codes() -> dict[int, str]:
    """The first table of docs/operations.md: code -> name."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n### ", 1)[0]
    return {int(code): name for code, name in re.findall(r"^\| (\d+) \| ([A-Z_]+) \|", section, re.M)}


def test_every_exit_code_has_a_documented_meaning_in_the_enum():
    meanings = cli.exit_code_meanings()
    assert set(meanings) == set(ExitCode)
    for code, meaning in meanings.items():
        assert meaning != code.name.lower().replace("_", " "), f"{code.name} needs a comment in core/errors.py"


def test_the_help_lists_the_same_exit_codes_as_docs_operations():
    docs = _docs_exit_codes()
    assert docs == {int(c): c.name for c in ExitCode}, "docs/operations.md's table and ExitCode differ"
    epilog = cli.exit_codes_epilog()
    listed = dict((int(c), n) for c, n in re.findall(r"^\s+(\d+)\s+([A-Z_]+)\s", epilog, re.M))
    assert listed == docs


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_command_describes_itself_and_lists_its_exit_codes(name, capsys):
    sub = _commands()[name]
    assert sub.description and len(sub.description) > 40, name
    with pytest.raises(SystemExit) as done:
        cli.main([name, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert sub.description.split()[0] in text and "exit codes (docs/operations.md):" in text
    for code in ExitCode:
        assert re.search(rf"^\s+{int(code)}\s+{code.name}\s", text, re.M), (name, code.name)


def test_entries_not_taken_are_printed_even_quiet_twenty_at_most_then_counted_exit_unchanged():
    from flux_pmi.jobs.night import NightReport

    report = NightReport(1, BUSINESS_DATE)
    report.not_taken = [("SGR", f"DGESDSGA_20261120_{i:04d}.xml", "not a .zip or .csv for SGR") for i in range(25)]
    lines = cli.run_summary(report, quiet=True)
    named = [line for line in lines if line.startswith("not taken, left in the inbox: SGR/DGESDSGA_")]
    assert len(named) == 20 and named[0].endswith("_0000.xml (not a .zip or .csv for SGR)")
    assert "  ... and 5 more: the log (inbox.not_taken)" in lines
    assert lines[-1].startswith("not taken: 25 inbox entries no run will read: move each into its flow folder")
    assert report.exit_code == ExitCode.OK and not any(line.startswith("exit ") for line in lines)
