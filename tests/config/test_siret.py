"""A département's SIRET is its DSG receiver identity and names its HubEE folders: it is set in
flux-pmi.toml from the acte d'adhésion, and nothing is sent to an enabled département whose SIRET
is still the registry's placeholder (the demo marks its own stand-ins as demo values)."""

from __future__ import annotations

import pytest
from support import BUSINESS_DATE, NOW

from flux_pmi.config.settings import load, load_registry
from flux_pmi.core.clock import FixedClock
from flux_pmi.core.errors import ConfigError, ExitCode
from flux_pmi.jobs.night import Night
from flux_pmi.jobs.preflight import run_checks

REAL = "22350000000003"  # a valid SIRET (python-stdnum), not the registry's


def _undemo(root, code: str, siret_line: str = "") -> None:
    """The département's SIRET as an operator leaves it: the demo's marker gone, `siret_line` instead."""
    cfg = root / "flux-pmi.toml"
    placeholder = load_registry()[code].siret
    old = f'siret = "{placeholder}"  # the registry placeholder: a DEMO value\nsiret_demo = true\n'
    text = cfg.read_text()
    assert old in text
    cfg.write_text(text.replace(old, siret_line))


def test_the_demo_marks_its_placeholder_sirets_as_demo_values(demo):
    root, _ = demo
    s = load(root / "flux-pmi.toml")
    for code in ("035", "02A", "067", "971"):
        d = s.departments[code]
        assert d.siret == load_registry()[code].siret and d.siret_demo and not d.siret_placeholder


def test_siret_is_set_per_departement_and_checked_like_the_registry(demo):
    root, _ = demo
    _undemo(root, "035", f'siret = "{REAL}"\n')
    d = load(root / "flux-pmi.toml").departments["035"]
    assert d.siret == REAL and not d.siret_placeholder and not d.siret_demo
    _undemo(root, "02A", 'siret = "22350000000004"\n')  # the Luhn key is wrong
    with pytest.raises(ConfigError, match=r'departments\.02A\.siret.*valid 14-digit SIRET'):
        load(root / "flux-pmi.toml")


def test_run_sends_nothing_to_a_placeholder_siret_and_delivers_it_once_the_siret_is_set(demo):
    root, _ = demo
    _undemo(root, "067")
    settings = load(root / "flux-pmi.toml")
    assert settings.departments["067"].siret_placeholder

    check = run_checks(settings, NOW)
    (error,) = [f for f in check if not f.ok]
    assert error.scope == "067" and "placeholder" in error.what and '[departments."067"] siret' in error.detail

    report = Night(settings, clock=FixedClock(NOW), sleep=lambda _s: None).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.UNDELIVERED and report.unsendable == ["067"]
    assert any('[departments."067"] siret' in p and "placeholder" in p for p in report.problems)
    assert not list((root / "drop" / "067").glob("*.p7m"))  # not built, not sent
    assert all(list((root / "drop" / c).glob("*.p7m")) for c in ("035", "02A", "971"))  # the others go on
    assert report.parked > 0  # its records are kept

    _undemo_set(root, "067")
    again = Night(load(root / "flux-pmi.toml"), clock=FixedClock(NOW), sleep=lambda _s: None).run(BUSINESS_DATE)
    assert again.exit_code == ExitCode.OK and again.replayed == report.parked
    assert list((root / "drop" / "067").glob("*.p7m"))


def _undemo_set(root, code: str) -> None:
    cfg = root / "flux-pmi.toml"
    header = f'[departments."{code}"]\n'
    cfg.write_text(cfg.read_text().replace(header, header + f'siret = "{REAL}"\n'))
