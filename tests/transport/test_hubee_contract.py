"""The HubEE adapters against DINUM's spec, through Prism: every request they make is validated.

Both ends: the CNAF's HubeeTransport (scope OSL: create the folder, upload the attachment with its
digest, complete the folder, read the case) and the département's HubeeDropReader (scope SI: list
notifications, read the case, download the attachment, post the status event, delete the
notification). A request the spec rejects fails the test (tests/support/prism.py). The token endpoint is not
a path of the spec (only `tokenUrl: /token` of its security scheme): the stateful fake serves it.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from support import BUSINESS_DATE, NOW
from support.fake_hubee import FakeHubee
from support.prism import prism

from flux_pmi import __version__
from flux_pmi.config.settings import Hubee, load_registry
from flux_pmi.core.clock import FixedClock
from flux_pmi.core.names import ack_name, emission_name
from flux_pmi.receive.config import HubeeDropConfig
from flux_pmi.receive.drops import DropFile, HubeeDropReader, _HubeeCase
from flux_pmi.schemas.ack import build_ack
from flux_pmi.trace.journal import DeliveryJournal
from flux_pmi.transport.base import Delivery
from flux_pmi.transport.hubee import HubeeTransport, TokenCache

CNAF_SIRET = "18005000000017"
DEPT = "035"
SIRET = load_registry()[DEPT].siret
HUB_NOW = datetime(2026, 11, 23, 3, 30, tzinfo=UTC)


@pytest.fixture
def hub():
    with FakeHubee(now=lambda: HUB_NOW) as fake:
        # Both with a branchCode: the spec requires it in every OrganizationIdentifier HubEE answers with.
        fake.add_client("cnaf-pmi-gro", "osl-secret", scope="OSL", siret=CNAF_SIRET, branch_code="75001")
        fake.add_client("cd035-si", "si-secret", scope="SI", siret=SIRET, branch_code="35238")
        yield fake


def sender(hub: FakeHubee, api_url: str, tmp_path) -> HubeeTransport:
    cfg = Hubee(
        api_url=api_url,
        token_url=hub.token_url,
        client_ids={"GRO": "cnaf-pmi-gro"},
        secrets={"GRO": b"osl-secret"},
        timeout=30.0,
        software_version=__version__,
    )
    return HubeeTransport(
        config=cfg,
        department=DEPT,
        siret=SIRET,
        journal=DeliveryJournal(tmp_path / "trace.sqlite"),
        flows=("GRO",),
        branch_code="35238",
        tokens=TokenCache(),
        clock=FixedClock(NOW),
    )


def receiver(hub: FakeHubee, api_url: str) -> HubeeDropReader:
    cfg = HubeeDropConfig(
        api_url=api_url,
        token_url=hub.token_url,
        client_id="cd035-si",
        client_secret=b"si-secret",
        timeout=30.0,
        max_file_bytes=1 << 20,
    )
    return HubeeDropReader(cfg, DEPT)


def delivery(tmp_path) -> Delivery:
    name = emission_name("GRO", DEPT, BUSINESS_DATE, 1, 1, 1, 0)
    # Opaque bytes (the adapters move them unopened), ASCII: Prism's proxy re-encodes a binary body as
    # text on its way through, which would break the digest; the request's shape is what is tested here.
    data = base64.b64encode(hashlib.sha512(name.encode()).digest() * 20)
    path = tmp_path / name
    path.write_bytes(data)
    return Delivery(DEPT, "GRO", name, path, len(data), hashlib.sha256(data).hexdigest())


def ack(item: Delivery, status: str = "OK", code: str = "OK") -> bytes:
    return build_ack(
        item.file_name, item.sha256, status, code, "intégré", datetime(2026, 11, 23, 5, tzinfo=UTC)
    )


def test_both_ends_of_an_exchange_make_only_requests_the_spec_accepts(hub, tmp_path):
    """Prism between the adapters and the stateful fake: validated requests, real state behind them."""
    item = delivery(tmp_path)
    with prism("proxy", upstream=hub.api_url) as p:
        t = sender(hub, p.base_url, tmp_path)
        drop = receiver(hub, p.base_url)
        for client in (t.http, drop.http):
            client.event_hooks["response"].append(p.watch)
        try:
            # OSL: POST /folders, PUT the attachment with its digest, PATCH the folder completed.
            receipt = t.deliver(item)
            assert receipt.reference in hub.folders
            assert t.fetch_acks() == []  # GET /cases/{id}: not decided yet
            # SI: GET /notifications, GET /cases/{id}, GET the attachment, POST the event, DELETE the notification.
            (ready,) = drop.list_ready()
            assert ready.name == item.file_name and ready.size == item.size
            marker = drop.read_marker(ready)
            assert marker.split()[0].decode() == item.sha256
            assert drop.read(ready, 1 << 20) == item.path.read_bytes()
            drop.write_ack(ack_name(item.file_name), ack(item))
            assert hub.notifications == {} or all(
                n["recipient"]["type"] == "OSL" for n in hub.notifications.values()
            )
            # OSL: the case status is the ack.
            (got,) = t.fetch_acks()
            assert got.decision is not None and got.decision.code == "SI_RECEIVED"
        finally:
            t.close()
            drop.close()
    wanted = [
        ("POST", "/folders"),
        ("PUT", "/attachments/"),
        ("PATCH", "/folders/"),
        ("GET", "/cases/"),
        ("GET", "/notifications"),
        ("GET", "/attachments/"),
        ("POST", "/events"),
        ("DELETE", "/notifications/"),
    ]
    for method, part in wanted:
        assert any(s.method == method and part in s.path for s in p.seen), (method, part, p.seen)
    assert p.request_violations() == []
    assert [(s.method, s.path, s.status) for s in p.seen if not 200 <= s.status < 300] == []


def test_each_adapter_request_is_accepted_by_the_spec_mock(hub, tmp_path):
    """Prism alone (answers generated from the spec): the same requests, one by one."""
    item = delivery(tmp_path)
    with prism("mock") as p:
        t = sender(hub, p.base_url, tmp_path)
        drop = receiver(hub, p.base_url)
        for client in (t.http, drop.http):
            client.event_hooks["response"].append(p.watch)
        try:
            ext = "CNAF-GRO-035-20261123-1"
            assert t._call("GRO", "POST", "/folders", json=t.folder_body(item, ext)).status_code == 201
            folder_id, att_id, case_id = (str(uuid.uuid4()) for _ in range(3))
            data = item.path.read_bytes()
            digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
            r = t._call(
                "GRO",
                "PUT",
                f"/folders/{folder_id}/attachments/{att_id}",
                content=data,
                headers={"Content-Type": "application/octet-stream", "digest": digest},
            )
            assert r.status_code in (200, 204)
            assert t._call(
                "GRO", "PATCH", f"/folders/{folder_id}", json={"globalStatus": "HUBEE_COMPLETED"}
            ).status_code in (200, 204)
            assert t._call("GRO", "GET", f"/cases/{case_id}").status_code == 200
            drop.list_ready()  # generated notifications: of no démarche of ours, hence left alone
            drop._cases[item.file_name] = _HubeeCase(
                item.file_name, case_id, att_id, str(uuid.uuid4()), "HUBEE_NOTIFIED"
            )
            listed = DropFile(item.file_name, case_id, item.size, 0, True, (0, 0))
            assert drop.read_marker(listed) is not None
            drop.write_ack(ack_name(item.file_name), ack(item, "KO", "DECRYPT"))
        finally:
            t.close()
            drop.close()
    assert {(s.method, s.path.split("/")[1]) for s in p.seen} >= {
        ("POST", "folders"),
        ("PUT", "folders"),
        ("PATCH", "folders"),
        ("GET", "cases"),
        ("GET", "notifications"),
        ("POST", "cases"),
        ("DELETE", "notifications"),
    }
    assert p.request_violations() == []
    assert [(s.method, s.path, s.status) for s in p.seen if s.status >= 400] == []


def test_prism_rejects_a_request_the_spec_does_not_allow():
    """The harness itself: a request breaking the spec is caught, so a silent pass means a valid request."""
    with prism("mock") as p, httpx.Client(event_hooks={"response": [p.watch]}) as c:
        c.delete(f"{p.base_url}/notifications/not-a-uuid", headers={"Authorization": "Bearer x"})
        c.get(
            f"{p.base_url}/notifications", params={"maxResult": "many"}, headers={"Authorization": "Bearer x"}
        )
    assert len(p.request_violations()) == 2 and all(s.status in (400, 422) for s in p.seen)
