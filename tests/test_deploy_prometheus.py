"""deploy/prometheus and deploy/grafana against the real promtool and a real night's metrics file.

The alert rules are unit-tested by `promtool test rules` (deploy/prometheus/flux-pmi.rules.test.yml);
the metrics file of a demo night with one partner down and one held passes `promtool check metrics`;
and the rules and the dashboard name only metrics that file defines, each with a sample for every
département from the first write (an alert on a series that does not exist yet can never fire).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support import BUSINESS_DATE, NOW, make_demo

from flux_pmi.config.settings import load
from flux_pmi.core.clock import FixedClock
from flux_pmi.jobs.night import Night
from flux_pmi.report import metrics
from flux_pmi.testing.mock import ScriptedPartner
from flux_pmi.trace.store import TraceStore

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "flux-pmi.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "flux-pmi.rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "flux-pmi.json"
PROMTOOL = shutil.which("promtool")
_METRIC = re.compile(r"\bflux_pmi_[a-z0-9_]+")
PER_DEPARTMENT = ("flux_pmi_department_records_late", "flux_pmi_department_records_at_risk",
                  "flux_pmi_undelivered_emissions", "flux_pmi_unacknowledged_files", "flux_pmi_partner_failing",
                  "flux_pmi_department_held")


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    assert PROMTOOL, "promtool is missing: `make system-deps` installs the Debian package prometheus"
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def night_metrics(tmp_path_factory) -> str:
    """The metrics file after a demo night where 067 is down and 971 is held."""
    root = tmp_path_factory.mktemp("prom") / "demo"
    make_demo(root)
    settings = load(root / "flux-pmi.toml")
    settings = dataclasses.replace(settings, service=dataclasses.replace(settings.service,
                                                                         metrics_file=root / "flux-pmi.prom"))
    trace = TraceStore(settings.paths.trace)
    try:
        trace.hold("971", NOW, by="ops", reason="maintenance")
    finally:
        trace.close()
    Night(settings, clock=FixedClock(NOW), sleep=lambda _s: None,
          transport_factory=ScriptedPartner(down={"067"}).factory).run(BUSINESS_DATE)
    return metrics.write_metrics(settings, now=NOW, job="nightly").read_text(encoding="utf-8")


def samples(text: str) -> dict[str, list[str]]:
    """{family: its sample lines}, every family the file declares (HELP), with or without samples."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            out[line.split(" ")[2]] = []
        elif not line.startswith("#"):
            out[line.split("{")[0].split(" ")[0]].append(line)
    return out


def test_the_rules_pass_their_promtool_unit_tests():
    check = promtool("check", "rules", str(RULES))
    assert check.returncode == 0, check.stdout + check.stderr
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert b"SUCCESS" in tested.stdout


def test_a_real_night_s_metrics_file_passes_promtool_check_metrics(night_metrics):
    checked = promtool("check", "metrics", stdin=night_metrics.encode())
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), (
        checked.stdout + checked.stderr)
    # And promtool does fail the old shape: the check is not vacuous.
    old = "# HELP flux_pmi_certificate_expiry_days Days.\n# TYPE flux_pmi_certificate_expiry_days gauge\n" \
          'flux_pmi_certificate_expiry_days{scope="sender",role="signer"} 729\n'
    assert promtool("check", "metrics", stdin=old.encode()).returncode != 0


def test_the_night_shows_the_partner_down_and_the_held_one(night_metrics):
    fams = samples(night_metrics)
    assert 'flux_pmi_partner_failing{department="067"} 1' in fams["flux_pmi_partner_failing"]
    assert 'flux_pmi_partner_failing{department="971"} 0' in fams["flux_pmi_partner_failing"]  # held: not tried
    assert 'flux_pmi_department_held{department="971"} 1' in fams["flux_pmi_department_held"]
    delivered = {line.split('"')[1] for line in fams["flux_pmi_department_last_delivery_timestamp_seconds"]}
    assert delivered == {"02A", "035"}  # 067 down, 971 held
    assert all(line.endswith(f" {int(NOW.timestamp())}")
               for line in fams["flux_pmi_department_last_delivery_timestamp_seconds"])
    assert [float(line.split()[-1]) >= 0 for line in fams["flux_pmi_last_run_duration_seconds"]] == [True]


def _rule_exprs() -> list[str]:
    return re.findall(r"^\s+expr: (.+)$", RULES.read_text(encoding="utf-8"), flags=re.M)


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def test_rules_and_dashboard_name_only_metrics_the_file_defines(night_metrics):
    defined = set(samples(night_metrics))
    rules, board = _rule_exprs(), _dashboard_exprs()
    assert len(rules) == 9 and len(board) >= 20
    for expr in rules + board:
        unknown = set(_METRIC.findall(expr)) - defined
        assert not unknown, (expr, unknown)
    # Every metric the file defines is on the dashboard.
    assert defined <= {m for e in board for m in _METRIC.findall(e)}


def test_per_departement_alert_series_exist_for_every_departement_from_the_first_write(night_metrics):
    fams = samples(night_metrics)
    for name in PER_DEPARTMENT:
        assert {line.split('"')[1] for line in fams[name]} == {"02A", "035", "067", "971"}, name
    assert fams["flux_pmi_last_nightly_stale"] == ["flux_pmi_last_nightly_stale 0"]
