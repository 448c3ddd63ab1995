"""The structured log: the level an operator chooses, the run id on every event of a run (the
delivery workers' too), one `emission.delivered` per delivered file whatever the transport, an
error for a final delivery failure, and the lock's acquire/release kept out of the way (debug)."""

from __future__ import annotations

import io
import json

import pytest
import structlog
from structlog.testing import capture_logs
from support import BUSINESS_DATE, NOW

from flux_pmi.config.settings import load
from flux_pmi.core import log
from flux_pmi.core.clock import FixedClock
from flux_pmi.core.errors import ConfigError, ExitCode
from flux_pmi.core.lock import run_lock
from flux_pmi.jobs.night import Night
from flux_pmi.testing.mock import ScriptedPartner


@pytest.fixture
def json_log():
    """Every event at debug, as JSON lines in a buffer; structlog's defaults restored afterwards."""
    buf = io.StringIO()
    log.configure(json=True, stream=buf, level="debug")
    try:
        yield lambda: [json.loads(line) for line in buf.getvalue().splitlines()]
    finally:
        structlog.reset_defaults()


def test_the_level_comes_from_the_option_then_the_environment_then_the_default(monkeypatch):
    monkeypatch.delenv(log.LEVEL_ENV, raising=False)
    assert log.choose_level(None) == "warning"
    assert log.choose_level(None, default="info") == "info"
    monkeypatch.setenv(log.LEVEL_ENV, "DEBUG")
    assert log.choose_level(None) == "debug"
    assert log.choose_level("error") == "error"  # the command line wins
    monkeypatch.setenv(log.LEVEL_ENV, "loud")
    with pytest.raises(ConfigError, match="FLUX_PMI_LOG_LEVEL"):
        log.choose_level(None)


def test_below_the_level_nothing_is_written():
    buf = io.StringIO()
    log.configure(json=True, stream=buf, level="warning")
    try:
        log.get().info("quiet.event")
        log.get().warning("loud.event")
    finally:
        structlog.reset_defaults()
    assert [json.loads(line)["event"] for line in buf.getvalue().splitlines()] == ["loud.event"]


def test_every_event_of_a_night_carries_its_run_id_and_each_delivery_is_one_event(demo, json_log):
    root, _ = demo
    # One partner down (its files fail), one failing once (retried: logged on a delivery worker thread).
    double = ScriptedPartner(down={"067"}, fail_first={"035": 1})
    report = Night(load(root / "flux-pmi.toml"), clock=FixedClock(NOW), sleep=lambda _s: None,
                   transport_factory=double.factory).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.UNDELIVERED
    events = json_log()
    names = [e["event"] for e in events]
    start, end = names.index("run.start"), names.index("run.end")
    run = events[start:end + 1]
    assert len(run) > 20 and all(e.get("run_id") == report.run_id for e in run), \
        [e["event"] for e in run if e.get("run_id") != report.run_id]
    assert {e["department"] for e in run if e["event"] == "deliver.retry"} == {"035", "067"}  # on worker threads
    log.get().info("after.the.run")
    assert "run_id" not in json_log()[-1]  # cleared at the end

    delivered = [e for e in run if e["event"] == "emission.delivered"]
    assert len(delivered) == report.totals().delivered == sum(len(v) for v in double.received.values())
    assert {(e["flow"], e["department"]) for e in delivered} == {
        (flow, d) for flow in ("DSG", "GRO", "SGR") for d in ("035", "02A", "971")}
    for e in delivered:
        assert e["level"] == "info" and e["transport"] and e["bytes"] > 0 and e["seconds"] >= 0 and e["seq"] >= 1
    failed = [e for e in run if e["event"] == "emission.delivery_failed"]
    assert {e["department"] for e in failed} == {"067"} and {e["level"] for e in failed} == {"error"}


def test_lock_acquire_and_release_are_debug(demo):
    root, _ = demo
    with capture_logs() as logs, run_lock(load(root / "flux-pmi.toml"), "run"):
        pass
    assert {e["event"]: e["log_level"] for e in logs} == {"lock.acquired": "debug", "lock.released": "debug"}


@pytest.mark.parametrize("text, expected", [
    ("x_296039205083231_y", "x_[masked]_y"),  # `_` is a word character: \b let these through
    ("nir2960392050832", "nir[masked]"),
    ("2 96 03 92 050 832 31", "[masked]"),  # as people write a NIR
    ("HAMIDOU_Celine_296039205083231_0601020304.xml", "HAMIDOU_Celine_[masked]_[masked].xml"),
    ("tel 06.01.02.03.04 or +33 6 01 02 03 04", "tel [masked] or [masked]"),
    ("sha256 ab29603920508323199ffe", "sha256 ab29603920508323199ffe"),  # a digest's digits are not a NIR
    ("DSG_035_20261123_000001.xml.p7m", "DSG_035_20261123_000001.xml.p7m"),
    ("CNAF.DGESDSGA.035.20261123.000001", "CNAF.DGESDSGA.035.20261123.000001"),
])
def test_the_last_defence_masks_nir_and_phone_shapes_wherever_they_sit(text, expected):
    assert log.mask_personal(text) == expected


def test_masking_reaches_inside_lists_and_mappings():
    event = {"event": "x", "files": ["a_2960392050832_b.xml"], "extra": {"reason": "call 0601020304"}, "n": 3}
    assert log.mask_personal_shapes(None, "info", event) == {
        "event": "x", "files": ["a_[masked]_b.xml"], "extra": {"reason": "call [masked]"}, "n": 3}
