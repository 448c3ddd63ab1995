"""A département taken out of the config while files wait for it, or records are kept for it.

Found by hand: 035 held, its three files waiting, then its table deleted from the config. `check`
said nothing of it (every line ok), and `resume 035` answered that the next run delivers its files,
which it cannot: the run says "not enabled" and exits 3, and only `status` lists the files. Now
`check` warns for such a département, and `resume` says why its files still wait.
"""

from __future__ import annotations

from collections import Counter

from support import BUSINESS_DATE, NOW

from flux_pmi.config.settings import load
from flux_pmi.core.clock import FixedClock
from flux_pmi.core.errors import ExitCode
from flux_pmi.jobs.holds import hold, resume
from flux_pmi.jobs.night import Night
from flux_pmi.jobs.preflight import run_checks


def _without(root, code: str) -> str:
    """Delete the département's table from the config; the config as it was."""
    cfg = root / "flux-pmi.toml"
    text = cfg.read_text()
    start = text.index(f'[departments."{code}"]\n')
    end = text.find("\n[", start + 1)
    cfg.write_text(text[:start] + (text[end + 1:] if end >= 0 else ""))
    return text


def _night(root) -> Night:
    return Night(load(root / "flux-pmi.toml"), clock=FixedClock(NOW), sleep=lambda _s: None)


def _warnings(root) -> dict[str, str]:
    return {f.scope: f.what for f in run_checks(load(root / "flux-pmi.toml"), NOW)
            if f.warning and f.what.startswith("not enabled")}


def _files(root, code: str) -> Counter:
    return Counter(p.name.split("_")[0] for p in (root / "drop" / code).glob("*.p7m"))


def test_a_held_departement_taken_out_of_the_config_is_named_by_check_and_resume(demo):
    root, _ = demo
    cfg = root / "flux-pmi.toml"
    hold(cfg, "035", by="ops", reason="PMI migration", now=NOW)
    assert _night(root).run(BUSINESS_DATE).held == {"035": 3}
    assert "035" not in _warnings(root)  # held, and still in the config: nothing to warn of

    good = _without(root, "035")
    assert _warnings(root)["035"] == "not enabled, yet 3 file(s) wait for it"
    lines = resume(cfg, "035", by="ops", now=NOW)
    assert "not enabled" in lines[-1] and "3 waiting file(s) wait" in lines[-1], lines
    report = _night(root).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.UNDELIVERED and not _files(root, "035")

    cfg.write_text(good)
    assert "035" not in _warnings(root)
    assert _night(root).run(BUSINESS_DATE).exit_code == ExitCode.OK
    assert _files(root, "035") == Counter({"DSG": 1, "GRO": 1, "SGR": 1})


def test_records_kept_for_a_departement_out_of_the_config_are_named_by_check(demo):
    root, _ = demo
    good = _without(root, "067")
    report = _night(root).run(BUSINESS_DATE)
    assert report.parked > 0
    assert _warnings(root)["067"] == f"not enabled, yet {report.parked} record(s) are kept for it"

    (root / "flux-pmi.toml").write_text(good)
    assert _night(root).run(BUSINESS_DATE).replayed == report.parked
    assert "067" not in _warnings(root)
