"""A recipient certificate copied from one département's table to another's is refused for both.

Found by hand: giving 067 the certificate of 035 passed `check` and `run`, and 067's declarations
were sealed for 035's PMI (who alone could open them). Two départements of one organisation (one
SIRET, a single collectivity) may share a key; two organisations may not. Which table is wrong cannot
be told: both wait, their records kept, until each has its own; then each gets its day's file once.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
from support import BUSINESS_DATE, NOW

from flux_pmi.config.settings import load
from flux_pmi.core.clock import FixedClock
from flux_pmi.core.errors import ExitCode, RefusedError
from flux_pmi.jobs.guards import shared_recipient_keys
from flux_pmi.jobs.night import Night
from flux_pmi.jobs.preflight import run_checks

SIRET = "22350000000003"  # a valid SIRET (python-stdnum)


def _set(root, code: str, key: str, value: str) -> None:
    cfg = root / "flux-pmi.toml"
    text = cfg.read_text()
    start = text.index(f'[departments."{code}"]\n')
    end = text.find("\n[", start + 1)
    end = len(text) if end < 0 else end
    table = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", text[start:end])
    cfg.write_text(text[:start] + table + text[end:])


def _night(root) -> Night:
    return Night(load(root / "flux-pmi.toml"), clock=FixedClock(NOW), sleep=lambda _s: None)


def _files(root, code: str) -> Counter:
    return Counter(p.name.split("_")[0] for p in (root / "drop" / code).glob("*.p7m"))


def test_a_certificate_copied_to_another_departement_sends_nothing_to_either(demo):
    root, _ = demo
    good = (root / "flux-pmi.toml").read_text()
    _set(root, "067", "certificate", '"pki/035.crt"')
    settings = load(root / "flux-pmi.toml")
    assert set(shared_recipient_keys(settings)) == {"035", "067"}

    errors = {f.scope: f for f in run_checks(settings, NOW) if not f.ok}
    assert set(errors) == {"035", "067"} and all("certificate key shared" in f.what for f in errors.values())

    report = _night(root).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.UNDELIVERED and report.unsendable == ["035", "067"]
    assert any(p.startswith("département 067: its certificate") and "035" in p for p in report.problems)
    assert not _files(root, "035") and not _files(root, "067")  # neither built nor sent
    assert _files(root, "02A") and _files(root, "971")  # the others go on
    assert report.parked > 0  # their records are kept

    (root / "flux-pmi.toml").write_text(good)
    again = _night(root).run(BUSINESS_DATE)
    assert again.exit_code == ExitCode.OK, again.problems
    assert again.replayed == report.parked
    # The day's file of each flow comes from the replay: no "nothing today" file before it.
    for code in ("035", "067"):
        assert _files(root, code) == Counter({"DSG": 1, "GRO": 1, "SGR": 1}), code


def test_one_organisation_may_use_one_key_for_two_departements(demo):
    root, _ = demo
    for code in ("035", "067"):
        _set(root, code, "siret", f'"{SIRET}"')
        _set(root, code, "siret_demo", "false")
    _set(root, "067", "certificate", '"pki/035.crt"')
    settings = load(root / "flux-pmi.toml")
    assert shared_recipient_keys(settings) == {}
    assert not [f for f in run_checks(settings, NOW) if not f.ok]


def test_reemit_and_any_delivery_refuse_a_departement_whose_key_is_shared(demo):
    # The night leaves such a département out; a re-emission or a `retry` must not seal its files
    # again for the other PMI's key (the delivery re-seals a waiting file for the configured one).
    from flux_pmi.jobs import reemit
    from flux_pmi.jobs.deliver import Deliverer
    from flux_pmi.trace.store import TraceStore

    root, _ = demo
    settings = load(root / "flux-pmi.toml")
    with TraceStore(settings.paths.trace) as trace:
        trace.hold("067", NOW, by="ops", reason="migration")
    assert _night(root).run(BUSINESS_DATE).exit_code == ExitCode.OK
    _set(root, "067", "certificate", '"pki/035.crt"')
    settings = load(root / "flux-pmi.toml")
    clock = FixedClock(NOW)
    with TraceStore(settings.paths.trace) as trace:
        trace.resume("067", NOW, by="ops")
        waiting = {e.file_name: e.sha256 for e in trace.to_deliver() if e.department == "067"}
        assert waiting
        with pytest.raises(RefusedError, match="département 067: its certificate .* same key as that of 035"):
            reemit.request(settings, trace, reemit.ReemitRequest(
                flows=["GRO"], departments=["067"], date_from=BUSINESS_DATE, by="ops", reason="x"),
                clock=clock, deliverer=Deliverer(settings, clock=clock, sleep=lambda _s: None))
        run_id = trace.start_run("retry", None, NOW)
        done = Deliverer(settings, clock=clock, sleep=lambda _s: None).deliver(trace, run_id)
        assert not [e for e in done.delivered if e.department == "067"] and not done.resealed
        assert any(p.startswith("département 067: its certificate") for p in done.problems)
        assert {e.file_name: e.sha256 for e in trace.to_deliver() if e.department == "067"} == waiting
    assert not _files(root, "067")
