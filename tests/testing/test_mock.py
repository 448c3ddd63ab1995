"""The transport double: a handler function answers each call, as with httpx's MockTransport."""

from __future__ import annotations

import hashlib

import pytest

from flux_pmi.core.errors import TransportError
from flux_pmi.testing.mock import Call, MockTransport, Request, ScriptedPartner
from flux_pmi.transport.base import AckFile, Checkable, CheckResult, Delivery, Receipt


def _item(tmp_path, dept: str = "035", name: str = "GRO_035_20261123_000001.xml.p7m") -> Delivery:
    path = tmp_path / name
    path.write_bytes(b"sealed")
    return Delivery(dept, "GRO", name, path, 6, hashlib.sha256(b"sealed").hexdigest())


def test_every_call_reaches_the_handler_as_a_request_and_its_answer_comes_back(tmp_path):
    seen: list[Request] = []
    ack = AckFile("035", "ACK_x.xml", b"<ack/>")

    def handler(request: Request):
        seen.append(request)
        return {
            Call.DELIVER: Receipt("x", reference="r1"),
            Call.FETCH_ACKS: [ack],
            Call.REMOVE_ACK: None,
            Call.CHECK: [CheckResult("035", True, "fine")],
        }[request.call]

    item = _item(tmp_path)
    with MockTransport(handler, "035") as t:
        assert t.deliver(item) == Receipt("x", reference="r1")
        assert t.fetch_acks() == [ack]
        t.remove_ack("ACK_x.xml")
        assert isinstance(t, Checkable) and t.check() == [CheckResult("035", True, "fine")]
    assert t.closed
    assert [(r.call, r.department) for r in seen] == [(c, "035") for c in Call]
    assert seen[0].item == item and seen[2].name == "ACK_x.xml"


def test_a_handler_raising_is_the_transport_raising_and_a_wrong_answer_is_a_type_error(tmp_path):
    def down(request: Request):
        raise TransportError(request.department, "partner down")

    with pytest.raises(TransportError, match="partner down"):
        MockTransport(down, "067").deliver(_item(tmp_path, "067"))
    with pytest.raises(TypeError):
        MockTransport(lambda r: None, "035").deliver(_item(tmp_path))


def test_the_scripted_partner_fails_first_goes_down_and_queues_acks(tmp_path):
    partner = ScriptedPartner(fail_first={"035": 1}, down={"067"})
    t035, t067 = partner.transport("035"), partner.transport("067")
    item = _item(tmp_path)
    with pytest.raises(TransportError, match="transient"):
        t035.deliver(item)
    assert not t035.deliver(item).already_there and t035.deliver(item).already_there
    assert partner.received == {"035": {item.file_name: b"sealed"}} and partner.attempts["035"] == 3
    with pytest.raises(TransportError, match="partner down"):
        t067.deliver(_item(tmp_path, "067", "GRO_067_20261123_000001.xml.p7m"))
    assert [r.ok for r in t067.check()] == [False] and [r.ok for r in t035.check()] == [True]
    partner.acks["035"].append(AckFile("035", "ACK_a.xml", b"a"))
    assert [a.name for a in t035.fetch_acks()] == ["ACK_a.xml"] and t067.fetch_acks() == []
    t035.remove_ack("ACK_a.xml")
    assert t035.fetch_acks() == [] and not partner.closed
    t035.close()
    t067.close()
    assert partner.closed
