"""`flux-pmi receive` with HubEE as its drop (scope SI), against the stateful stand-in.

The whole night: flux-pmi sends over HubEE (tests/transport/test_hubee.py's demo set-up), the département's
`flux-pmi receive` pulls its notified cases, ingests them, posts SI_RECEIVED and deletes the
notifications; the sender's next night reads the case statuses as its acks. A hostile file is
refused with SI_INTG_ERROR and its reason; a status that could not be posted is posted by the next
run, without ingesting anything twice.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from support import BUSINESS_DATE, NOW
from support import hubee as test_hubee
from support.fake_hubee import FakeHubee
from support.hubee import BRANCH, REGISTRY, emissions, night, use_hubee

from flux_pmi.cli import main
from flux_pmi.config.settings import load
from flux_pmi.core.errors import ConfigError, ExitCode
from flux_pmi.core.names import emission_name
from flux_pmi.receive.config import HubeeDropConfig, load_receive
from flux_pmi.receive.drops import HubeeDropReader, open_drop
from flux_pmi.trace.journal import DeliveryJournal
from flux_pmi.trace.ledger import Ledger
from flux_pmi.transport import retry
from flux_pmi.transport.base import Delivery
from flux_pmi.transport.hubee import HubeeTransport, TokenCache, external_id

# The sending side's fixtures: a fresh copy of the demo installation, and the stand-in with the CNAF's clients.
demo_template, demo, hub = test_hubee.demo_template, test_hubee.demo, test_hubee.hub


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    """The transports' retry policy never really waits here, even in transports a night builds itself."""
    monkeypatch.setattr(retry, "pause", lambda _seconds: None)

DEPT = "035"
SI_CLIENT, SI_SECRET, SI_ENV = "cd035-pmi-si", "si-s3cret-035", "FLUX_TEST_HUBEE_SI_035"


def hubee_drop(root: Path, hub: FakeHubee, monkeypatch, dept: str = DEPT) -> Path:
    """The département's DEPT.toml, its [drop] turned to HubEE; its SI client known to the stand-in."""
    hub.add_client(SI_CLIENT, SI_SECRET, scope="SI", siret=REGISTRY[dept].siret, branch_code=BRANCH.get(dept))
    monkeypatch.setenv(SI_ENV, SI_SECRET)
    toml = root / "receive" / f"{dept}.toml"
    text = re.sub(
        r'\[drop\]\ntype = "local"\npath = "[^"]*"\n',
        f'[drop]\ntype = "hubee"\napi_url = "{hub.api_url}"\ntoken_url = "{hub.token_url}"\n'
        f'client_id = "{SI_CLIENT}"\nclient_secret_env = "{SI_ENV}"\ntimeout = 10\n',
        toml.read_text(),
    )
    toml.write_text(text)
    return toml


def receive(toml: Path, monkeypatch) -> int:
    monkeypatch.setenv("FLUX_PMI_NOW", NOW.isoformat())
    umask = os.umask(0o077)
    try:
        return main(["receive", "--config", str(toml), "--once"])
    finally:
        os.umask(umask)


def cases_of(hub: FakeHubee, dept: str) -> list[dict]:
    return [c for c in hub.cases.values() if c["recipient"]["companyRegister"] == REGISTRY[dept].siret]


def si_notifications(hub: FakeHubee) -> list[dict]:
    return [n for n in hub.notifications.values() if n["recipient"]["type"] == "SI"]


def test_the_drop_keys_are_loaded_and_checked(demo, hub, monkeypatch):
    root, _ = demo
    toml = hubee_drop(root, hub, monkeypatch)
    cfg = load_receive(toml)
    assert isinstance(cfg.drop, HubeeDropConfig)
    assert (cfg.drop.client_id, cfg.drop.client_secret, cfg.drop.timeout) == (
        SI_CLIENT,
        SI_SECRET.encode(),
        10.0,
    )
    assert cfg.drop.max_file_bytes == cfg.max_file_bytes and SI_SECRET not in repr(cfg)
    drop = open_drop(cfg.drop, DEPT)
    assert isinstance(drop, HubeeDropReader)
    drop.close()
    for edit, key in (
        (lambda t: t.replace("timeout = 10", "timeot = 10"), "drop.timeot"),
        (lambda t: t.replace('api_url = "http://', 'api_url = "ftp://'), "drop.api_url"),
        (lambda t: t.replace(f'client_secret_env = "{SI_ENV}"\n', ""), "drop.client_secret_env"),
        (lambda t: t.replace(f'client_id = "{SI_CLIENT}"', 'client_id = " "'), "drop.client_id"),
    ):
        bad = toml.with_name("bad.toml")
        bad.write_text(edit(toml.read_text()))
        with pytest.raises(ConfigError) as info:
            load_receive(bad)
        assert info.value.key == key


def test_a_night_over_hubee_is_received_ingested_and_acknowledged(demo, hub, monkeypatch):
    root, _ = demo
    cfg = use_hubee(root, hub, monkeypatch)
    assert night(cfg).run(BUSINESS_DATE).exit_code == ExitCode.OK
    toml = hubee_drop(root, hub, monkeypatch)
    assert len(si_notifications(hub)) == 9

    assert receive(toml, monkeypatch) == ExitCode.OK
    out = root / "received" / DEPT
    assert len(list(out.glob("*/*/records.csv"))) == 3 and len(list(out.glob("*/*/records.parquet"))) == 3
    ledger = Ledger(load_receive(toml).ledger)
    rows = ledger.files()
    ledger.close()
    assert sorted(r.flow for r in rows) == ["DSG", "GRO", "SGR"] and all(r.status == "ok" for r in rows)
    for case in cases_of(hub, DEPT):
        assert case["status"] == "SI_RECEIVED"
        (event,) = case["events"]
        assert (event["caseCurrentStatus"], event["caseNewStatus"], event["message"]) == (
            "HUBEE_NOTIFIED",
            "SI_RECEIVED",
            "OK: intégré",
        )
        assert event["transmitter"]["type"] == "SI" and event["notification"] is True
    assert len(hub.requests_to("DELETE", "^/teledossiers/v1/notifications/")) == 3
    left = si_notifications(hub)
    assert len(left) == 6 and all(n["recipient"]["companyRegister"] != REGISTRY[DEPT].siret for n in left)
    # Only SI requests for 035, and the others' cases were never read.
    others = {c["id"] for d in ("02A", "971") for c in cases_of(hub, d)}
    assert not [r for r in hub.requests if any(i in r.path for i in others) and r.client_id == SI_CLIENT]

    # Again: nothing new to take, nothing downloaded twice.
    downloads = len(hub.requests_to("GET", "/attachments/"))
    assert receive(toml, monkeypatch) == ExitCode.OK
    assert len(hub.requests_to("GET", "/attachments/")) == downloads

    # The sender's next night reads the case statuses as its acknowledgements.
    report = night(cfg).run(BUSINESS_DATE)
    assert report.acks.recorded_ok == 3 and report.acks.recorded_ko == 0 and report.acks.anomalies == 0
    for r in emissions(root):
        if r["department"] == DEPT:
            assert (r["status"], r["ack_status"], r["ack_code"]) == ("acknowledged", "OK", "SI_RECEIVED")
            assert r["acknowledged_at"] is not None
        else:
            assert r["status"] == "delivered" and r["acknowledged_at"] is None


def hostile_case(root: Path, hub: FakeHubee, tmp_path: Path) -> str:
    """A file sealed for 02A, sent to 035 under a 035 technical name, through HubEE's OSL side."""
    folder = next(f for f in hub.folders.values() if f["externalId"].startswith("CNAF-GRO-02A-"))
    data = hub.blobs[folder["attachments"][0]["id"]]
    name = emission_name("GRO", DEPT, BUSINESS_DATE, 99, 1, 1, 0)
    path = tmp_path / name
    path.write_bytes(data)
    import hashlib

    settings = load(root / "flux-pmi.toml")
    t = HubeeTransport(
        config=settings.hubee,
        department=DEPT,
        siret=REGISTRY[DEPT].siret,
        journal=DeliveryJournal(tmp_path / "hostile-trace.sqlite"),
        flows=("GRO",),
        branch_code=BRANCH[DEPT],
        tokens=TokenCache(),
    )
    t.deliver(Delivery(DEPT, "GRO", name, path, len(data), hashlib.sha256(data).hexdigest()))
    t.close()
    return hub.case_of(hub.folder_by_external_id(external_id(name)))["id"]


def test_a_file_sealed_for_another_departement_is_refused_with_si_intg_error(
    demo, hub, monkeypatch, tmp_path
):
    root, _ = demo
    cfg = use_hubee(root, hub, monkeypatch)
    assert night(cfg).run(BUSINESS_DATE).exit_code == ExitCode.OK
    hostile = hostile_case(root, hub, tmp_path)
    toml = hubee_drop(root, hub, monkeypatch)

    assert receive(toml, monkeypatch) == ExitCode.QUARANTINED
    case = hub.cases[hostile]
    assert case["status"] == "SI_INTG_ERROR"
    (event,) = case["events"]
    assert event["caseNewStatus"] == "SI_INTG_ERROR" and event["message"].startswith(
        "DECRYPT: déchiffrement impossible"
    )
    out = root / "received" / DEPT
    assert len(list(out.glob("*/*/records.csv"))) == 3  # the three good ones only
    assert not [p for p in out.rglob("*") if "000099" in p.name]
    assert not [n for n in si_notifications(hub) if n["caseId"] == hostile]


def test_a_status_not_posted_is_posted_by_the_next_run_without_ingesting_twice(demo, hub, monkeypatch):
    root, _ = demo
    cfg = use_hubee(root, hub, monkeypatch)
    assert night(cfg).run(BUSINESS_DATE).exit_code == ExitCode.OK
    toml = hubee_drop(root, hub, monkeypatch)
    hub.fail("POST", "/events$", 503, times=3)
    assert receive(toml, monkeypatch) == ExitCode.UNDELIVERED  # ingested, but HubEE not told
    out = root / "received" / DEPT
    assert len(list(out.glob("*/*/records.csv"))) == 3
    assert all(c["status"] == "HUBEE_NOTIFIED" for c in cases_of(hub, DEPT))
    assert (
        len([n for n in si_notifications(hub) if n["recipient"]["companyRegister"] == REGISTRY[DEPT].siret])
        == 3
    )

    downloads = len(hub.requests_to("GET", "/attachments/"))
    assert receive(toml, monkeypatch) == ExitCode.OK
    assert all(c["status"] == "SI_RECEIVED" for c in cases_of(hub, DEPT))
    assert len(list(out.glob("*/*/records.csv"))) == 3
    assert len(hub.requests_to("GET", "/attachments/")) == downloads  # decided before: not downloaded again
    assert not [n for n in si_notifications(hub) if n["recipient"]["companyRegister"] == REGISTRY[DEPT].siret]
