"""The HubEE adapter against the stateful stand-in (tests/support/fake_hubee.py): tokens, folders, uploads, acks.

Nothing sleeps: token expiry follows an injected clock shared by the adapter and the stand-in, the
night's backoff sleep is a no-op, and a hung request is cut by a short client timeout.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shutil
import socket
import stat
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from support import BUSINESS_DATE, NOW, record_fingerprints
from support import hubee as support_hubee
from support.fake_hubee import FakeHubee
from support.hubee import (
    BRANCH,
    CLIENT_IDS,
    DEPTS,
    FLOWS,
    HUB_NOW,
    REGISTRY,
    SECRET_ENV,
    SECRETS,
    emissions,
    night,
    use_hubee,
)

from flux_pmi import __version__
from flux_pmi.config.settings import Hubee, load
from flux_pmi.config.transports import HubeeConfig
from flux_pmi.core.clock import FixedClock
from flux_pmi.core.errors import ConfigError, ExitCode, TransportError
from flux_pmi.core.names import emission_name
from flux_pmi.jobs.night import Night
from flux_pmi.jobs.preflight import partner_findings
from flux_pmi.trace.journal import DeliveryJournal, JournalTransport, read_journal
from flux_pmi.transport import retry
from flux_pmi.transport.base import Delivery
from flux_pmi.transport.hubee import (
    MIME_TYPE,
    SHARED_TOKENS,
    HubeeTransport,
    NoAnswer,
    TokenCache,
    external_id,
)
from flux_pmi.transport.registry import transport_for
from flux_pmi.transport.retry import RetryPolicy

# The fixtures: a demo of DEPTS, the stand-in.
demo_template, demo, hub = support_hubee.demo_template, support_hubee.demo, support_hubee.hub
NO_WAIT = RetryPolicy(sleep=lambda _s: None)  # the retry policy, without its real pauses


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    """The transports' retry policy never really waits here, even in transports a night builds itself."""
    monkeypatch.setattr(retry, "pause", lambda _seconds: None)


class Ticker:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def hubee_config(hub: FakeHubee, **kw) -> Hubee:
    return Hubee(
        api_url=kw.pop("api_url", hub.api_url),
        token_url=hub.token_url,
        client_ids=dict(CLIENT_IDS),
        secrets={f: s.encode() for f, s in SECRETS.items()},
        timeout=kw.pop("timeout", 10.0),
        software_version=__version__,
        **kw,
    )


def make_transport(
    hub: FakeHubee, tmp_path: Path, *, dept: str = "035", tokens: TokenCache | None = None, **kw
):
    return HubeeTransport(
        config=hubee_config(hub, **{k: kw.pop(k) for k in ("timeout", "api_url") if k in kw}),
        department=dept,
        siret=REGISTRY[dept].siret,
        journal=kw.pop("journal", None) or DeliveryJournal(tmp_path / "trace.sqlite"),
        branch_code=kw.pop("branch_code", BRANCH.get(dept)),
        tokens=tokens if tokens is not None else TokenCache(),
        clock=FixedClock(NOW),
        retry=kw.pop("retry", NO_WAIT),
        **kw,
    )


def sealed_file(
    tmp_path: Path,
    flow: str = "GRO",
    dept: str = "035",
    seq: int = 1,
    reemission: int = 0,
    data: bytes | None = None,
) -> Delivery:
    """A stand-in for an archived .p7m: the adapter moves opaque bytes."""
    name = emission_name(flow, dept, BUSINESS_DATE, seq, 1, 1, reemission)
    data = data if data is not None else hashlib.sha512(name.encode()).digest() * 40
    path = tmp_path / "archive" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return Delivery(dept, flow, name, path, len(data), hashlib.sha256(data).hexdigest())


def b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def state(tmp_path: Path, dept: str = "035") -> dict:
    """The delivery journal's rows of a département, as {file name: {sha256, step, facts...}}."""
    path = tmp_path / "trace.sqlite"
    rows = read_journal(path, JournalTransport.HUBEE, dept) if path.exists() else {}
    return {name: {**e.facts, "sha256": e.sha256, "step": e.step} for name, e in rows.items()}


# -- the externalId ------------------------------------------------------------------------------------


def test_the_external_id_is_derived_from_the_emission_and_fits_with_its_case_suffix():
    assert external_id("GRO_035_20261123_000012.xml.p7m") == "CNAF-GRO-035-20261123-12"
    assert external_id("SGR_02A_20261123_000003_P2of3.zip.p7m") == "CNAF-SGR-02A-20261123-3"
    assert external_id("DSG_971_20261123_000012_R01.xml.p7m") == "CNAF-DSG-971-20261123-12R1"
    # Past what fits with the century, the date drops it; still unique, still within 27 + "-01".
    assert external_id("GRO_035_20261123_001234_R02.xml.p7m") == "CNAF-GRO-035-261123-1234R2"
    assert external_id("GRO_035_20261123_123456.xml.p7m") == "CNAF-GRO-035-261123-123456"
    assert external_id("GRO_035_20261123_999999_R9999.xml.p7m") == "CNAF-GRO-035-999999R9999"
    names = [
        emission_name(f, d, BUSINESS_DATE, s, 1, 1, r)
        for f in FLOWS
        for d in ("035", "02A")
        for s in (1, 12, 999, 1000, 99999, 100000, 999999)
        for r in (0, 1, 12, 99, 100, 9999)
    ]
    ids = [external_id(n) for n in names]
    assert len(set(ids)) == len(ids) and max(len(i) for i in ids) <= 27
    with pytest.raises(ValueError):
        external_id("notes.txt")


# -- tokens ----------------------------------------------------------------------------------------------


def test_the_token_request_is_client_credentials_with_basic_auth_and_scope_osl_one_client_per_demarche(
    hub, tmp_path
):
    t = make_transport(hub, tmp_path)
    t.deliver(sealed_file(tmp_path, "GRO"))
    t.deliver(sealed_file(tmp_path, "DSG"))
    t.deliver(sealed_file(tmp_path, "GRO", seq=2))
    t.close()
    tokens = hub.requests_to("POST", "^/token$")
    assert len(tokens) == 2  # one per démarche; the second GRO file reuses the first token
    seen = set()
    for r in tokens:
        assert r.headers["content-type"].startswith("application/x-www-form-urlencoded")
        assert parse_qs(r.body.decode()) == {"grant_type": ["client_credentials"], "scope": ["OSL"]}
        scheme, _, value = r.headers["authorization"].partition(" ")
        client_id, _, secret = base64.b64decode(value).decode().partition(":")
        assert scheme == "Basic" and secret == SECRETS[next(f for f in FLOWS if CLIENT_IDS[f] == client_id)]
        seen.add(client_id)
    assert seen == {CLIENT_IDS["GRO"], CLIENT_IDS["DSG"]}
    # Every API call went with the token of its own démarche.
    for r in hub.requests_to(path="^/teledossiers/"):
        flow = next(f for f in FLOWS if r.client_id == CLIENT_IDS[f])
        assert r.json is None or r.json.get("processCode", flow) == flow


def test_the_token_is_renewed_before_it_expires(tmp_path):
    ticker = Ticker()
    SHARED_TOKENS.clear()
    with FakeHubee(clock=ticker, token_lifetime=300) as hub:
        hub.add_client(CLIENT_IDS["GRO"], SECRETS["GRO"])
        t = make_transport(hub, tmp_path, tokens=TokenCache(clock=ticker))
        t.deliver(sealed_file(tmp_path, seq=1))
        ticker.t += 200  # 100 s left: still good
        t.deliver(sealed_file(tmp_path, seq=2))
        assert len(hub.requests_to("POST", "^/token$")) == 1
        ticker.t += 50  # 50 s left: under the 60 s margin, renewed before use
        t.deliver(sealed_file(tmp_path, seq=3))
        t.close()
        assert len(hub.requests_to("POST", "^/token$")) == 2
        assert all(r.status != 401 for r in hub.requests)  # never sent an expired token


def test_a_token_refused_by_the_api_is_renewed_once(hub, tmp_path):
    t = make_transport(hub, tmp_path)
    t.deliver(sealed_file(tmp_path, seq=1))
    hub.revoke_tokens()
    t.deliver(sealed_file(tmp_path, seq=2))
    t.close()
    assert [r.status for r in hub.requests_to("POST", "/folders$")] == [201, 401, 201]
    assert len(hub.requests_to("POST", "^/token$")) == 2


def test_a_token_endpoint_that_fails_for_a_moment_is_asked_again_after_a_jittered_pause(hub, tmp_path):
    pauses: list[float] = []
    hub.fail_token(times=2, status=503)
    t = make_transport(hub, tmp_path, retry=RetryPolicy(sleep=pauses.append))
    receipt = t.deliver(sealed_file(tmp_path))
    t.close()
    assert len(hub.requests_to("POST", "^/token$")) == 3 and receipt.reference in hub.folders
    assert (
        len(pauses) == 2 and 0.5 <= pauses[0] <= 1.0 and 1.0 <= pauses[1] <= 1.5
    )  # exponential, plus jitter


def test_wrong_client_credentials_are_a_permanent_error_and_nothing_is_created(hub, tmp_path):
    cfg = hubee_config(hub)
    object.__setattr__(cfg, "secrets", {f: b"wrong" for f in FLOWS})
    t = HubeeTransport(
        config=cfg,
        department="035",
        siret=REGISTRY["035"].siret,
        journal=DeliveryJournal(tmp_path / "trace.sqlite"),
        tokens=TokenCache(),
        clock=FixedClock(NOW),
        retry=NO_WAIT,
    )
    with pytest.raises(TransportError) as info:
        t.deliver(sealed_file(tmp_path))
    t.close()
    assert info.value.permanent and "HTTP 401" in info.value.reason and "invalid_client" in info.value.reason
    assert "wrong" not in str(info.value)
    assert len(hub.requests_to("POST", "^/token$")) == 1  # refused credentials are not asked again
    assert hub.folders == {} and hub.requests_to(path="^/teledossiers/") == []
    assert state(tmp_path) == {}


# -- one folder per emission -----------------------------------------------------------------------------


def test_a_file_becomes_one_completed_folder_with_technical_metadata_and_its_digest(hub, tmp_path):
    t = make_transport(hub, tmp_path)
    item = sealed_file(tmp_path, "SGR", seq=7)
    receipt = t.deliver(item)
    ext = "CNAF-SGR-035-20261123-7"
    posts = hub.requests_to("POST", "/folders$")
    assert len(posts) == 1 and posts[0].json == {
        "processCode": "SGR",
        "externalId": ext,
        "applicant": {"firstName": "CNAF", "lastName": "flux-pmi"},
        "cases": [
            {
                "externalId": ext + "-01",
                "recipient": {"type": "SI", "companyRegister": REGISTRY["035"].siret, "branchCode": "35238"},
            }
        ],
        "attachments": [
            {
                "fileName": item.file_name,
                "type": "SGR",
                "size": item.size,
                "mimeType": MIME_TYPE,
                "recipients": [ext + "-01"],
            }
        ],
    }
    folder = hub.folder_by_external_id(ext)
    assert receipt.reference == folder["id"] and not receipt.already_there
    att = folder["attachments"][0]
    (put,) = hub.requests_to("PUT", "/attachments/")
    assert put.path == f"/teledossiers/v1/folders/{folder['id']}/attachments/{att['id']}"
    assert put.headers["content-type"] == "application/octet-stream"
    assert put.headers["digest"] == b64sha(item.path.read_bytes())  # the spec's form: bare base64
    (patch,) = hub.requests_to("PATCH")
    assert patch.json == {"globalStatus": "HUBEE_COMPLETED"}
    assert hub.blobs[att["id"]] == item.path.read_bytes() and att["status"] == "RECEIVED"
    assert folder["globalStatus"] == "HUBEE_COMPLETED" and hub.case_of(folder)["status"] == "HUBEE_NOTIFIED"
    for r in hub.requests:  # the three partner headers on every call, token included
        assert (r.headers["editorname"], r.headers["applicationname"], r.headers["softwareversion"]) == (
            "CNAF",
            "flux-pmi",
            __version__,
        )
    entry = state(tmp_path)[item.file_name]
    assert entry["folder_id"] == folder["id"] and entry["case_id"] == folder["cases"][0]["id"]
    assert entry["attachment_id"] == att["id"] and entry["step"] == "completed"
    assert stat.S_IMODE(os.stat(tmp_path / "trace.sqlite").st_mode) == 0o600

    before = len(hub.requests)
    again = t.deliver(item)  # a rerun: HubEE has it already, nothing is asked
    t.close()
    assert again.already_there and again.reference == folder["id"] and len(hub.requests) == before


def test_without_a_branch_code_the_field_is_left_out(hub, tmp_path):
    t = make_transport(hub, tmp_path, dept="971")
    t.deliver(sealed_file(tmp_path, dept="971"))
    t.close()
    (post,) = hub.requests_to("POST", "/folders$")
    assert post.json["cases"][0]["recipient"] == {"type": "SI", "companyRegister": REGISTRY["971"].siret}


def test_a_hubee_that_requires_the_branch_code_refuses_the_folder_permanently(hub, tmp_path):
    hub.require_branch_code = True
    t = make_transport(hub, tmp_path, dept="971")
    with pytest.raises(TransportError) as info:
        t.deliver(sealed_file(tmp_path, dept="971"))
    t.close()
    assert info.value.permanent and "HTTP 400" in info.value.reason and "branchCode" in info.value.reason
    assert hub.folders == {} and state(tmp_path, "971") == {}


def test_a_reemission_is_a_new_folder_with_its_own_external_id(hub, tmp_path):
    t = make_transport(hub, tmp_path)
    t.deliver(sealed_file(tmp_path, seq=4))
    t.deliver(sealed_file(tmp_path, seq=4, reemission=1))
    t.close()
    assert hub.folder_by_external_id("CNAF-GRO-035-20261123-4") is not None
    assert hub.folder_by_external_id("CNAF-GRO-035-20261123-4R1") is not None and len(hub.folders) == 2


# -- errors: permanent or retried ---------------------------------------------------------------------------


@pytest.mark.parametrize("status,message", [(400, "Bad request"), (403, "Unauthorized user")])
def test_400_and_403_are_permanent_and_not_retried(hub, tmp_path, status, message):
    hub.fail("POST", "/folders$", status, times=5, body={"errors": [{"code": status, "message": message}]})
    t = make_transport(hub, tmp_path)
    item = sealed_file(tmp_path)
    with pytest.raises(TransportError) as info:
        t.deliver(item)
    t.close()
    assert info.value.permanent and f"HTTP {status}" in info.value.reason and message in info.value.reason
    assert "POST /folders" in info.value.reason and REGISTRY["035"].siret not in str(info.value)
    assert len(hub.requests_to("POST", "/folders$")) == 1 and state(tmp_path) == {}


@pytest.mark.parametrize("status", [404, 500, 503])
def test_404_and_5xx_are_retryable_and_the_retry_finishes_the_same_folder(hub, tmp_path, status):
    hub.fail_uploads(status=status)
    t = make_transport(hub, tmp_path)
    item = sealed_file(tmp_path)
    with pytest.raises(TransportError) as info:
        t.deliver(item)
    assert not info.value.permanent and f"HTTP {status}" in info.value.reason
    assert state(tmp_path)[item.file_name]["step"] == "created"
    receipt = t.deliver(item)
    t.close()
    assert len(hub.requests_to("POST", "/folders$")) == 1 and len(hub.folders) == 1
    assert receipt.reference == next(iter(hub.folders)) and not receipt.already_there
    assert [r.method for r in hub.requests_to(path="/folders/")] == ["PUT", "GET", "PUT", "PATCH"]


def test_a_failing_folder_creation_is_retryable_and_leaves_nothing_behind(hub, tmp_path):
    hub.fail("POST", "/folders$", 500)
    t = make_transport(hub, tmp_path)
    item = sealed_file(tmp_path)
    with pytest.raises(TransportError) as info:
        t.deliver(item)
    assert not info.value.permanent and state(tmp_path) == {}
    t.deliver(item)
    t.close()
    assert len(hub.folders) == 1


def test_a_timeout_is_retryable(hub, tmp_path):
    hub.fail("PUT", "/attachments/", "hang")
    t = make_transport(hub, tmp_path, timeout=0.3)
    item = sealed_file(tmp_path)
    with pytest.raises(NoAnswer) as info:
        t.deliver(item)
    hub.release()
    assert not info.value.permanent and "timeout" in info.value.reason
    t.deliver(item)
    t.close()
    assert len(hub.folders) == 1 and next(iter(hub.folders.values()))["globalStatus"] == "HUBEE_COMPLETED"


def test_an_unreachable_hubee_is_retryable_and_nothing_is_recorded(hub, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = make_transport(hub, tmp_path, api_url=f"http://127.0.0.1:{port}/teledossiers/v1")
    with pytest.raises(NoAnswer) as info:
        t.deliver(sealed_file(tmp_path))
    t.close()
    assert not info.value.permanent and not info.value.sent and state(tmp_path) == {}


@pytest.mark.parametrize("action", ["lose_answer", "close"])
def test_a_folder_creation_without_an_answer_is_held_for_an_operator_never_sent_twice(hub, tmp_path, action):
    hub.fail("POST", "/folders$", action)
    t = make_transport(hub, tmp_path)
    item = sealed_file(tmp_path)
    for _ in range(2):
        with pytest.raises(TransportError) as info:
            t.deliver(item)
        assert info.value.permanent and "CNAF-GRO-035-20261123-1" in info.value.reason
        assert f"flux-pmi journal 035 --transport hubee --forget {item.file_name} --reason" in info.value.reason
    t.close()
    assert len(hub.requests_to("POST", "/folders$")) == 1
    assert len(hub.folders) == (1 if action == "lose_answer" else 0)
    assert state(tmp_path)[item.file_name]["step"] == "posting"


def test_a_rerun_after_a_crash_between_the_folder_and_the_upload_finishes_that_folder(hub, tmp_path):
    hub.fail("PUT", "/attachments/", "close")  # the process "dies" with the upload unfinished
    item = sealed_file(tmp_path)
    first = make_transport(hub, tmp_path)
    with pytest.raises(NoAnswer):
        first.deliver(item)
    first.close()
    second = make_transport(hub, tmp_path)  # the next run
    receipt = second.deliver(item)
    second.close()
    assert len(hub.requests_to("POST", "/folders$")) == 1 and receipt.reference in hub.folders


def test_the_state_file_of_an_earlier_version_is_imported_once_and_no_folder_is_made_twice(hub, tmp_path):
    """An upgrade in the middle of an incident: what the JSON state file knew still holds."""
    hub.fail("PUT", "/attachments/", "close")  # a folder created, its upload unfinished
    unfinished, held = sealed_file(tmp_path, seq=1), sealed_file(tmp_path, seq=2)
    first = make_transport(hub, tmp_path)
    with pytest.raises(NoAnswer):
        first.deliver(unfinished)
    first.close()
    entry = state(tmp_path)[unfinished.file_name]
    work = tmp_path / "work"
    legacy = work / "hubee" / "035.json"
    legacy.parent.mkdir(parents=True)
    posting = {
        "sha256": held.sha256,
        "flow": "GRO",
        "external_id": external_id(held.file_name),
        "step": "posting",
    }
    legacy.write_text(
        json.dumps(
            {
                "department": "035",
                "files": {
                    unfinished.file_name: {**entry, "created_at": NOW.isoformat()},
                    held.file_name: {**posting, "created_at": NOW.isoformat()},
                },
            }
        )
    )
    other = tmp_path / "upgraded.sqlite"
    t = make_transport(hub, tmp_path, journal=DeliveryJournal(other, legacy_dir=work))
    assert not legacy.exists() and legacy.with_name("035.json.imported").is_file()
    receipt = t.deliver(unfinished)  # finishes the folder the earlier version created
    with pytest.raises(TransportError) as info:
        t.deliver(held)  # its POST got no answer then: held for an operator, never posted again
    t.close()
    assert receipt.reference == entry["folder_id"] and info.value.permanent
    assert len(hub.requests_to("POST", "/folders$")) == 1 and len(hub.folders) == 1
    rows = read_journal(other, JournalTransport.HUBEE, "035")
    assert rows[unfinished.file_name].step == "completed" and rows[held.file_name].step == "posting"


def test_a_completion_whose_answer_was_lost_is_not_sent_again(hub, tmp_path):
    hub.fail("PATCH", "/folders/", "lose_answer")
    t = make_transport(hub, tmp_path)
    item = sealed_file(tmp_path)
    with pytest.raises(NoAnswer):
        t.deliver(item)
    receipt = t.deliver(item)
    t.close()
    assert receipt.already_there and len(hub.requests_to("PATCH")) == 1 and len(hub.requests_to("PUT")) == 1


def test_an_upload_corrupted_in_transit_is_refused_reported_and_sent_again_next_time(hub, tmp_path):
    hub.corrupt_uploads = 1
    t = make_transport(hub, tmp_path)
    item = sealed_file(tmp_path)
    with pytest.raises(TransportError) as info:
        t.deliver(item)
    folder = next(iter(hub.folders.values()))
    assert info.value.permanent and "HTTP 400" in info.value.reason and "Digest" in info.value.reason
    assert folder["attachments"][0]["status"] == "CORRUPTED" and len(hub.requests_to("PUT")) == 1
    t.deliver(item)
    t.close()
    assert folder["attachments"][0]["status"] == "RECEIVED" and folder["globalStatus"] == "HUBEE_COMPLETED"
    assert hub.blobs[folder["attachments"][0]["id"]] == item.path.read_bytes()


def test_an_archive_copy_that_does_not_match_its_sha256_is_never_sent(hub, tmp_path):
    item = sealed_file(tmp_path)
    item.path.write_bytes(b"tampered" + item.path.read_bytes()[8:])
    t = make_transport(hub, tmp_path)
    with pytest.raises(TransportError) as info:
        t.deliver(item)
    t.close()
    assert info.value.permanent and hub.requests == []


def test_the_same_name_with_other_content_is_refused(hub, tmp_path):
    t = make_transport(hub, tmp_path)
    t.deliver(sealed_file(tmp_path, data=b"first" * 100))
    with pytest.raises(TransportError) as info:
        t.deliver(sealed_file(tmp_path, data=b"other" * 100))
    t.close()
    assert info.value.permanent and "other content" in info.value.reason and len(hub.folders) == 1


def test_an_earlier_seal_of_the_file_deposited_already_is_the_file_delivered_not_other_content(hub, tmp_path):
    """Deposited before a crash kept it out of the trace, then re-sealed for a renewed certificate: the
    folder holds the earlier seal; nothing is sent again and the receipt says which seal went."""
    t = make_transport(hub, tmp_path)
    first = sealed_file(tmp_path, data=b"first" * 100)
    t.deliver(first)
    resealed = sealed_file(tmp_path, data=b"again" * 100)
    receipt = t.deliver(dataclasses.replace(resealed, earlier=((first.sha256, first.size),)))
    t.close()
    assert receipt.already_there and receipt.earlier_sha256 == first.sha256
    assert len(hub.folders) == 1 and len(hub.requests_to("PUT")) == 1


@pytest.mark.parametrize("kept", [True, False], ids=["its bytes kept", "its bytes gone"])
def test_a_folder_begun_under_an_earlier_seal_is_finished_with_that_seal_never_another(hub, tmp_path, kept):
    """A deposit a crash interrupted (folder created, upload unfinished), then the file re-sealed for a
    renewed certificate: the folder is finished with the earlier seal's kept bytes (its digest is the
    one HubEE was told), not filled with the new one; without those bytes, an operator decides."""
    hub.fail("PUT", "/attachments/", "close")
    first = sealed_file(tmp_path, data=b"first" * 100)
    begun = make_transport(hub, tmp_path)
    with pytest.raises(NoAnswer):
        begun.deliver(first)
    begun.close()
    old = tmp_path / "kept.p7m"
    old.write_bytes(first.path.read_bytes())
    resealed = dataclasses.replace(sealed_file(tmp_path, data=b"again" * 100), earlier=((first.sha256, first.size),),
                                   earlier_paths=(old if kept else None,))
    t = make_transport(hub, tmp_path)
    if not kept:
        with pytest.raises(TransportError) as info:
            t.deliver(resealed)
        t.close()
        assert info.value.permanent and "journal --forget" in info.value.reason
        assert len(hub.folders) == 1
        return
    receipt = t.deliver(resealed)
    t.close()
    folder = next(iter(hub.folders.values()))
    assert receipt.earlier_sha256 == first.sha256 and len(hub.folders) == 1
    assert hub.blobs[folder["attachments"][0]["id"]] == b"first" * 100
    assert folder["globalStatus"] == "HUBEE_COMPLETED"


# -- acknowledgements from the case status ---------------------------------------------------------------


def test_case_statuses_become_acks_once_each(hub, tmp_path):
    t = make_transport(hub, tmp_path)
    items = [sealed_file(tmp_path, f) for f in FLOWS]
    for item in items:
        t.deliver(item)
    assert t.fetch_acks() == []  # HUBEE_NOTIFIED: nothing decided yet
    case = {i.flow: hub.case_of(hub.folder_by_external_id(external_id(i.file_name)))["id"] for i in items}
    taken = datetime(2026, 11, 23, 9, 15, tzinfo=UTC)
    hub.set_case_status(case["DSG"], "SI_RECEIVED", at=taken)
    hub.set_case_status(case["DSG"], "DONE", at=datetime(2026, 11, 24, tzinfo=UTC))
    hub.set_case_status(case["SGR"], "REFUSED", at=taken)
    acks = {a.name: a.decision for a in t.fetch_acks()}
    dsg, sgr = (f"{i.file_name}.ack.xml" for i in items[:2])
    assert sorted(acks) == sorted([dsg, sgr])
    assert (acks[dsg].status, acks[dsg].code, acks[dsg].at) == ("OK", "DONE", taken)  # the first taking in
    assert acks[dsg].sha256 == items[0].sha256 and acks[dsg].file_name == items[0].file_name
    assert (acks[sgr].status, acks[sgr].code) == ("KO", "REFUSED")
    # Offered again, the same, until acks.collect has recorded and removed them.
    assert {a.name: a.decision for a in t.fetch_acks()} == acks
    gets = len(hub.requests_to("GET", "/cases/"))
    for name in acks:
        t.remove_ack(name)
    assert t.fetch_acks() == []
    assert len(hub.requests_to("GET", "/cases/")) == gets + 1  # only the undecided GRO case is asked again
    t.close()


def test_an_integration_error_is_a_ko_and_a_closed_case_tells_from_its_events(hub, tmp_path):
    t = make_transport(hub, tmp_path)
    items = [sealed_file(tmp_path, "GRO", seq=s) for s in (1, 2, 3)]
    for item in items:
        t.deliver(item)
    cases = [hub.case_of(hub.folder_by_external_id(external_id(i.file_name)))["id"] for i in items]
    hub.set_case_status(cases[0], "SI_INTG_ERROR")
    hub.set_case_status(cases[1], "IN_PROGRESS")
    hub.set_case_status(cases[1], "CLOSED")
    hub.set_case_status(cases[2], "CLOSED")  # closed without ever saying: no ack, and no more asking
    acks = {a.decision.file_name: a.decision for a in t.fetch_acks() if a.decision}
    assert (acks[items[0].file_name].status, acks[items[0].file_name].code) == ("KO", "SI_INTG_ERROR")
    assert (acks[items[1].file_name].status, acks[items[1].file_name].code) == ("OK", "IN_PROGRESS")
    assert items[2].file_name not in acks and state(tmp_path)[items[2].file_name]["closed"]
    gets = len(hub.requests_to("GET", "/cases/"))
    t.fetch_acks()
    t.close()
    assert len(hub.requests_to("GET", "/cases/")) == gets


def test_an_unreachable_hubee_makes_fetch_acks_fail_once_not_per_case(hub, tmp_path):
    t = make_transport(hub, tmp_path)
    for seq in (1, 2, 3):
        t.deliver(sealed_file(tmp_path, seq=seq))
    hub.fail("GET", "/cases/", "close", times=10)
    with pytest.raises(NoAnswer):
        t.fetch_acks()
    t.close()
    assert len(hub.requests_to("GET", "/cases/")) == 1


# -- check -----------------------------------------------------------------------------------------------


def test_check_gets_a_token_per_demarche_and_reaches_the_api_without_sending_data(hub, tmp_path):
    t = make_transport(hub, tmp_path)
    results = t.check()
    t.close()
    assert all(r.ok and not r.warning for r in results)
    assert {r.what for r in results} == {f"HubEE token for {f}" for f in FLOWS} | {"HubEE API reachable"}
    assert hub.folders == {} and {r.method for r in hub.requests} == {"POST", "GET"}
    assert hub.requests_to("GET")[0].path == "/teledossiers/v1/notifications"


def test_check_reports_a_refused_token_and_a_missing_branch_code(hub, tmp_path):
    hub.fail_token(times=3, status=500)  # a 5xx is retried: three answers exhaust the policy's attempts
    t = make_transport(hub, tmp_path, dept="971")
    results = {r.what: r for r in t.check()}
    t.close()
    failed = [r for r in results.values() if not r.ok]
    assert len(failed) == 1 and "HTTP 500" in failed[0].detail
    assert results["no HubEE branch_code"].warning


# -- configuration ----------------------------------------------------------------------------------------


def test_the_hubee_table_is_loaded_with_its_secrets_kept_out_of_repr(demo, hub, monkeypatch):
    root, _ = demo
    settings = load(
        use_hubee(root, hub, monkeypatch, extra='applicant = { firstName = "CNAF", lastName = "PMI" }\n')
    )
    h = settings.hubee
    assert h.client_ids == CLIENT_IDS and h.secrets == {f: s.encode() for f, s in SECRETS.items()}
    assert (h.editor_name, h.application_name, h.software_version) == ("CNAF", "flux-pmi", __version__)
    assert h.applicant == {"firstName": "CNAF", "lastName": "PMI"} and h.timeout == 10
    assert not any(s in repr(settings) for s in SECRETS.values())
    assert settings.departments["035"].transport == HubeeConfig(type="hubee", branch_code="35238")
    t = transport_for(settings, settings.departments["035"])
    assert isinstance(t, HubeeTransport) and t.journal.path == settings.paths.trace
    t.close()


def test_secrets_may_come_from_owner_only_files(demo, hub, monkeypatch):
    root, _ = demo
    (root / "secrets").mkdir()
    for flow in FLOWS:
        p = root / "secrets" / f"hubee-{flow.lower()}"
        p.write_text(SECRETS[flow] + "\n")
        p.chmod(0o600)
    cfg = use_hubee(root, hub, monkeypatch, secrets="files")
    assert load(cfg).hubee.secrets["GRO"] == SECRETS["GRO"].encode()
    (root / "secrets" / "hubee-gro").chmod(0o640)
    with pytest.raises(ConfigError) as info:
        load(cfg)
    assert info.value.key == "hubee.client_secret_files.GRO" and "owner only" in info.value.expected


@pytest.mark.parametrize(
    "edit,key,expected",
    [
        (lambda t: t, "hubee.client_secret_env.GRO", "FLUX_TEST_HUBEE_GRO to be set"),
        (
            lambda t: t.replace('api_url = "http://127.0.0.1', 'api_url = "http://hubee.example'),
            "hubee.api_url",
            "https://",
        ),
        (lambda t: t.replace("timeout = 10", "timeot = 10"), "hubee.timeot", "unknown key"),
        (lambda t: t.replace(f'GRO = "{CLIENT_IDS["GRO"]}"', 'GRO = ""'), "hubee.client_ids", "client ids"),
        (lambda t: t.replace("client_secret_env", "client_secret"), "hubee.client_secret", "unknown key"),
        (
            lambda t: t.replace('branch_code = "35238"', 'branch_code = "35238-TOO-LONG"'),
            "departments.035.transport.branch_code",
            "code guichet",
        ),
        (
            lambda t: t.replace('type = "hubee" }', 'type = "hubee", secret = "x" }'),
            "defaults.transport.secret",
            "unknown key",
        ),
        (lambda t: t + 'editor_name = "' + "x" * 51 + '"\n', "hubee.editor_name", "50"),
        (lambda t: t[: t.index("\n[hubee]")], "hubee", "a [hubee] table"),
        (
            lambda t: t.replace(f', GRO = "{CLIENT_IDS["GRO"]}"', "").replace(
                f', GRO = "{SECRET_ENV["GRO"]}"', ""
            ),
            "hubee.client_ids",
            "a client id for GRO",
        ),
    ],
)
def test_hubee_configuration_errors_name_the_key(demo, hub, monkeypatch, edit, key, expected):
    root, _ = demo
    cfg = use_hubee(root, hub, monkeypatch)
    cfg.write_text(edit(cfg.read_text()))
    if key == "hubee.client_secret_env.GRO":
        monkeypatch.delenv(SECRET_ENV["GRO"])
    with pytest.raises(ConfigError) as info:
        load(cfg)
    assert info.value.key == key and expected in info.value.expected


def test_flux_pmi_check_runs_the_hubee_check(demo, hub, monkeypatch):
    root, _ = demo
    findings = partner_findings(load(use_hubee(root, hub, monkeypatch)))
    assert not [f for f in findings if not f.ok]
    assert sorted(f.scope for f in findings if f.warning) == ["02A", "971"]  # no branch_code
    assert hub.folders == {}


# -- nights over HubEE ---------------------------------------------------------------------------------------


def open_hubee_delivered(root: Path, hub: FakeHubee) -> dict[str, bytes]:
    """What HubEE holds for each département, opened with its key (support.open_delivered's twin)."""
    from flux_pmi.seal import certs, cms

    out: dict[str, bytes] = {}
    ca = certs.load_certificate(root / "pki" / "cnaf.crt")
    for folder in hub.folders.values():
        dept = folder["externalId"].split("-")[2]
        att = folder["attachments"][0]
        cert = certs.load_certificate(root / "pki" / f"{dept}.crt")
        key = certs.load_private_key(root / "pki" / f"{dept}.key", None)
        out[f"{dept}/{att['fileName']}"] = cms.open_sealed(
            hub.blobs[att["id"]], recipient_cert=cert, recipient_key=key, trusted_signers=[ca]
        )
    return out


def personal_values(root: Path) -> set[str]:
    from flux_pmi.demo.generate import generate_inbox

    again = generate_inbox(
        root / "regen-inbox", business_date=BUSINESS_DATE, departments=DEPTS, seed=7, bad=True
    )
    shutil.rmtree(root / "regen-inbox")
    return again.personal_values


def test_a_night_over_hubee_delivers_every_emission_as_one_folder_and_no_personal_data_leaves(
    demo, hub, monkeypatch
):
    root, result = demo
    cfg = use_hubee(root, hub, monkeypatch)
    report = night(cfg).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.OK, report.problems
    rows = emissions(root)
    assert len(rows) == 9 and all(r["status"] == "delivered" for r in rows)
    assert len(hub.folders) == 9 and len(hub.requests_to("POST", "/folders$")) == 9
    for r in rows:
        ext = external_id(r["file_name"])
        folder = hub.folder_by_external_id(ext)
        assert r["transport_ref"] == folder["id"]  # the folder id is kept in the trace
        assert folder["processCode"] == r["flow"] and folder["globalStatus"] == "HUBEE_COMPLETED"
        assert folder["applicant"] == {"firstName": "CNAF", "lastName": "flux-pmi"}
        case = hub.case_of(folder)
        expected = {"type": "SI", "companyRegister": REGISTRY[r["department"]].siret}
        if r["department"] in BRANCH:
            expected["branchCode"] = BRANCH[r["department"]]
        assert case["recipient"] == expected and case["externalId"] == ext + "-01"
        (att,) = folder["attachments"]
        assert (att["fileName"], att["type"], att["size"], att["mimeType"], att["recipients"]) == (
            r["file_name"],
            r["flow"],
            r["size"],
            MIME_TYPE,
            [ext + "-01"],
        )
        assert hashlib.sha256(hub.blobs[att["id"]]).hexdigest() == r["sha256"]
        (put,) = hub.requests_to("PUT", att["id"])
        assert put.headers["digest"] == b64sha(hub.blobs[att["id"]])
    delivered = open_hubee_delivered(root, hub)
    assert sorted({n.split("/")[0] for n in delivered}) == DEPTS
    fps = record_fingerprints(delivered)
    assert sum(fps.values()) == result.records - result.bad and max(fps.values()) == 1

    # Nothing that went to HubEE in clear (metadata, headers, the token request) names a person.
    values = personal_values(root)
    assert len(values) > 50
    hits = [
        (r.method, r.path, v)
        for r in hub.requests
        for v in values
        if v in r.path
        or v in json.dumps(r.headers, ensure_ascii=False)
        or (
            r.headers.get("content-type", "").startswith(("application/json", "application/x-www"))
            and (v.encode() in r.body or v in json.dumps(r.json, ensure_ascii=False))
        )
    ]
    journal = [
        e
        for d in DEPTS
        for e in read_journal(root / "trace" / "flux-pmi.sqlite", JournalTransport.HUBEE, d).values()
    ]
    assert len(journal) == 9
    hits += [
        ("journal", e.file_name, v)
        for e in journal
        for v in values
        if v in json.dumps([e.file_name, e.step, e.facts], ensure_ascii=False)
    ]
    hits += [
        ("sealed upload", n, v)
        for n, b in (
            (a["fileName"], hub.blobs[a["id"]]) for f in hub.folders.values() for a in f["attachments"]
        )
        for v in values
        if v.encode() in b
    ]
    assert hits == []

    before = len(hub.requests)
    again = night(cfg).run(BUSINESS_DATE)
    assert again.exit_code == ExitCode.OK and again.totals().delivered == 0
    assert len(hub.requests_to("POST", "/folders$")) == 9  # nothing created twice
    assert all(r.method == "POST" and r.path == "/token" or r.method == "GET" for r in hub.requests[before:])


def test_a_token_failure_leaves_everything_undelivered_and_nothing_created(demo, hub, monkeypatch):
    root, _ = demo
    cfg = use_hubee(root, hub, monkeypatch)
    hub.fail_token(times=1000)
    report = night(cfg).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.UNDELIVERED and report.undelivered == 9
    assert hub.folders == {} and hub.requests_to(path="^/teledossiers/") == []
    assert any("HubEE token for" in p and "HTTP 500" in p for p in report.problems)
    hub.clear_faults()
    assert night(cfg).run(BUSINESS_DATE).exit_code == ExitCode.OK and len(hub.folders) == 9


def test_a_500_during_an_upload_is_finished_by_the_next_run_in_the_same_folder(demo, hub, monkeypatch):
    root, _ = demo
    cfg = use_hubee(root, hub, monkeypatch, parallel=1)
    hub.fail_uploads(times=3)  # every attempt of the night at the first file (02A's DSG)
    report = night(cfg).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.UNDELIVERED and report.undelivered == 3  # 02A's queue stops there
    first = emissions(root)[0]
    assert (first["department"], first["flow"], first["status"], first["attempts"]) == (
        "02A",
        "DSG",
        "delivery-failed",
        3,
    )
    ext = external_id(first["file_name"])
    folder = hub.folder_by_external_id(ext)
    assert folder["globalStatus"] == "HUBEE_RECEIVED" and folder["attachments"][0]["status"] == "PENDING"
    assert any("HTTP 500" in p and "02A" in p for p in report.problems)

    again = night(cfg).run(BUSINESS_DATE)
    assert again.exit_code == ExitCode.OK, again.problems
    assert all(r["status"] == "delivered" for r in emissions(root))
    assert hub.folder_by_external_id(ext) is folder and folder["globalStatus"] == "HUBEE_COMPLETED"
    assert folder["attachments"][0]["status"] == "RECEIVED"
    posts = [r.json["externalId"] for r in hub.requests_to("POST", "/folders$")]
    assert posts.count(ext) == 1 and len(posts) == len(set(posts)) == 9


def test_404_and_5xx_are_retried_by_the_night_with_backoff(demo, hub, monkeypatch):
    root, _ = demo
    cfg = use_hubee(root, hub, monkeypatch, parallel=1)
    hub.fail("POST", "/folders$", 503)
    hub.fail("PUT", "/attachments/", 404)
    slept: list[float] = []
    report = Night(load(cfg), clock=FixedClock(NOW), sleep=slept.append).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.OK, report.problems
    # Exponential backoff (0.5 s, then 1 s) plus a jitter of up to half the base (jobs/deliver.py).
    assert len(slept) == 2 and 0.5 <= slept[0] <= 0.75 and 1.0 <= slept[1] <= 1.25
    assert emissions(root)[0]["attempts"] == 3
    assert len(hub.folders) == 9


def test_a_400_is_not_retried_by_the_night(demo, hub, monkeypatch):
    root, _ = demo
    cfg = use_hubee(root, hub, monkeypatch, parallel=1)
    hub.fail("POST", "/folders$", 400)
    report = night(cfg).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.UNDELIVERED and emissions(root)[0]["attempts"] == 1
    assert len(hub.requests_to("POST", "/folders$")) == 1 + 6  # 02A stopped at once; 035 and 971 went on
    assert any("HTTP 400" in p and "not retried" in p for p in report.problems)


def test_a_digest_mismatch_is_refused_by_hubee_reported_and_sent_again_next_night(demo, hub, monkeypatch):
    root, _ = demo
    cfg = use_hubee(root, hub, monkeypatch, parallel=1)
    hub.corrupt_uploads = 1
    report = night(cfg).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.UNDELIVERED
    assert any("Digest does not match" in p for p in report.problems)
    first = emissions(root)[0]
    assert first["status"] == "delivery-failed" and first["attempts"] == 1  # a 400: not insisted on tonight
    folder = hub.folder_by_external_id(external_id(first["file_name"]))
    assert folder["attachments"][0]["status"] == "CORRUPTED"
    assert night(cfg).run(BUSINESS_DATE).exit_code == ExitCode.OK
    assert folder["attachments"][0]["status"] == "RECEIVED" and len(hub.folders) == 9


def si_session(hub: FakeHubee, dept: str) -> httpx.Client:
    """The département's side, as its system would talk to HubEE (scope SI)."""
    hub.add_client(
        f"cd{dept}-si", "si-secret", scope="SI", siret=REGISTRY[dept].siret, branch_code=BRANCH.get(dept)
    )
    token = httpx.post(
        hub.token_url,
        auth=(f"cd{dept}-si", "si-secret"),
        data={"grant_type": "client_credentials", "scope": "SI"},
    ).json()["access_token"]
    return httpx.Client(base_url=hub.api_url, headers={"Authorization": f"Bearer {token}"})


def test_case_statuses_set_by_the_departement_become_acks_at_the_next_night(demo, hub, monkeypatch):
    root, _ = demo
    cfg = use_hubee(root, hub, monkeypatch)
    assert night(cfg).run(BUSINESS_DATE).exit_code == ExitCode.OK
    # 035 takes its files in through the SI scope: notification, download, digest, status, event.
    with si_session(hub, "035") as si:
        notes = si.get("/notifications", params={"maxResult": 50}).json()
        assert len(notes) == 3 and {n["processCode"] for n in notes} == set(FLOWS)
        for n in notes:
            case = si.get(f"/cases/{n['caseId']}").json()
            (att,) = case["attachments"]
            got = si.get(f"/cases/{case['id']}/attachments/{att['id']}")
            assert got.status_code == 200 and got.headers["digest"] == b64sha(got.content)
            assert si.patch(f"/cases/{case['id']}", json={"status": "SI_RECEIVED"}).status_code == 204
            event = si.post(
                f"/cases/{case['id']}/events",
                json={
                    "actionType": "STATUS_UPDATE",
                    "caseCurrentStatus": "HUBEE_NOTIFIED",
                    "caseNewStatus": "SI_RECEIVED",
                    "notification": True,
                    "message": "OK",
                },
            )
            assert event.status_code == 201
            assert si.delete(f"/notifications/{n['id']}").status_code == 204
        assert si.get("/notifications").json() == []
    # 02A's system refuses its DSG file.
    dsg_02a = next(r for r in emissions(root) if r["department"] == "02A" and r["flow"] == "DSG")
    refused = hub.case_of(hub.folder_by_external_id(external_id(dsg_02a["file_name"])))
    hub.set_case_status(refused["id"], "REFUSED")

    report = night(cfg).run(BUSINESS_DATE)
    assert report.acks.recorded_ok == 3 and report.acks.recorded_ko == 1 and report.acks.anomalies == 0
    rows = {(r["department"], r["flow"]): r for r in emissions(root)}
    for flow in FLOWS:
        r = rows[("035", flow)]
        assert (r["status"], r["ack_status"], r["ack_code"]) == ("acknowledged", "OK", "SI_RECEIVED")
        assert datetime.fromisoformat(r["acknowledged_at"]) == HUB_NOW
    r = rows[("02A", "DSG")]
    assert (r["status"], r["ack_status"], r["ack_code"]) == ("refused", "KO", "REFUSED")
    assert sum(1 for r in rows.values() if r["status"] == "delivered") == 5
    assert len(hub.folders) == 9  # a KO is not redelivered blindly (reemit_on_ko is off)

    gets = len(hub.requests_to("GET", "/cases/"))
    night(cfg).run(BUSINESS_DATE)
    assert len(hub.requests_to("GET", "/cases/")) == gets + 5  # only the undecided cases are asked again
