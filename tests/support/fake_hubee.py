"""A stateful stand-in for the HubEE API (api_folder_v1.2.7), serving both ends of an exchange.

flux-pmi talks to HubEE as the online-service operator (scope OSL: create a folder, upload its
attachment, complete it, read its case back); a département's system talks to it as the recipient
(scope SI: list notifications, download, move the case through its statuses, delete the
notification). Tests of either side need one HubEE that remembers what the other did, so this is a
real HTTP server (http.server on 127.0.0.1, a free port, a background thread) keeping folders,
cases, attachments, events and notifications in memory, under the spec's paths and schemas.

It also records every request (method, path, headers, body), so a test can scan all the metadata
that left, and it takes scripted faults: a failing token endpoint, N answers with a given status on
matching requests, a connection dropped before or after the request was processed, a request that
hangs until released, an upload corrupted in transit.

Where the spec is silent the stand-in makes a choice and says so (docs/hubee.md, "The fake"):
a folder's cases are HUBEE_RECEIVED until the folder is completed; re-uploading a RECEIVED
attachment, completing a folder twice or with an attachment missing is a 400; a digest that does
not match the body is a 400 that marks the attachment CORRUPTED. Use:

    with FakeHubee() as hub:
        hub.add_client("cnaf-gro", "s3cret", scope="OSL", siret="18005000000017")
        hub.add_client("cd035", "s3cret", scope="SI", siret="22350001800013", branch_code="35238")
        ... hub.api_url, hub.token_url ...
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

BASE_PATH = "/teledossiers/v1"
TOKEN_PATH = "/token"
CASE_STATUSES = frozenset(
    {
        "HUBEE_NOTIFIED",
        "SENT",
        "SI_RECEIVED",
        "SI_INTG_ERROR",
        "IN_PROGRESS",
        "ADD_AWAITING",
        "REFUSED",
        "DONE",
        "CLOSED",
    }
)
FOLDER_STATUSES = frozenset(
    {
        "HUBEE_RECEIVED",
        "HUBEE_COMPLETED",
        "HUBEE_NOTIFIED",
        "SENT",
        "SI_RECEIVED",
        "IN_PROGRESS",
        "ADD_AWAITING",
        "REFUSED",
        "DONE",
        "CLOSED",
    }
)
UPLOAD_PATH = re.compile(rf"^{BASE_PATH}/folders/[^/]+/attachments/[^/]+$")
_ID = "([^/]+)"
# What flux-pmi and a département's system use of the spec, under BASE_PATH: (method, path, handler).
_ROUTES = [
    (verb, re.compile(f"^{path}$"), name)
    for verb, path, name in (
        ("POST", "/folders", "_create_folder"),
        ("GET", f"/folders/{_ID}", "_get_folder"),
        ("PATCH", f"/folders/{_ID}", "_patch_folder"),
        ("DELETE", f"/folders/{_ID}", "_delete_folder"),
        ("PUT", f"/folders/{_ID}/attachments/{_ID}", "_upload"),
        ("GET", f"/cases/{_ID}", "_get_case"),
        ("PATCH", f"/cases/{_ID}", "_patch_case"),
        ("GET", f"/cases/{_ID}/attachments/{_ID}", "_download"),
        ("POST", f"/cases/{_ID}/events", "_post_event"),
        ("GET", f"/cases/{_ID}/events/{_ID}", "_get_event"),
        ("PATCH", f"/cases/{_ID}/events/{_ID}", "_patch_event"),
        ("GET", "/notifications", "_list_notifications"),
        ("DELETE", f"/notifications/{_ID}", "_delete_notification"),
    )
]


@dataclass
class Recorded:
    """One request as it reached the stand-in."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any = None
    status: int = 0  # the status answered; 0 when the connection was dropped instead
    client_id: str | None = None


@dataclass
class Client:
    client_id: str
    secret: str
    scope: str  # OSL or SI
    organization: dict[str, str]  # OrganizationIdentifier: type, companyRegister, branchCode


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    action: int | str  # an HTTP status, or "close", "lose_answer", "hang"
    times: int
    body: Any = None
    when: Callable[[Recorded], bool] | None = None


class _Drop(Exception):
    """Close the connection without an answer."""


class _Answer(Exception):
    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        self.status, self.body, self.headers = status, body, headers or {}


def _error(status: int, message: str) -> _Answer:
    return _Answer(status, {"errors": [{"code": status, "message": message}]})


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds")


class FakeHubee:
    """The stand-in. Start and stop it with `with`; inspect and steer it through its attributes."""

    def __init__(
        self,
        *,
        token_lifetime: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        require_digest: bool = True,
        require_branch_code: bool = False,
    ):
        self.token_lifetime = token_lifetime
        self.clock = clock  # token expiry
        self.now = now  # the dates HubEE writes in folders, cases, events, notifications
        self.require_digest = require_digest
        # The spec lists branchCode as required in OrganizationIdentifier; HubEE's own examples omit it
        # in places. Off by default, so a test can show both behaviours.
        self.require_branch_code = require_branch_code
        self.clients: dict[str, Client] = {}
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> client id, expiry (clock)
        self.folders: dict[str, dict[str, Any]] = {}
        self.cases: dict[str, dict[str, Any]] = {}
        self.blobs: dict[str, bytes] = {}  # attachment id -> uploaded bytes
        self.notifications: dict[str, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.corrupt_uploads = 0  # flip a byte of the next N uploads before looking at them
        self._lock = threading.RLock()
        self._released = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> FakeHubee:
        fake = self

        class Handler(_Handler):
            hub = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hubee", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHubee:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_url(self) -> str:
        return self.base_url + BASE_PATH

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    # -- set-up and faults -------------------------------------------------------------------------

    def add_client(
        self,
        client_id: str,
        secret: str,
        *,
        scope: str = "OSL",
        siret: str = "18005000000017",
        branch_code: str | None = None,
    ) -> Client:
        org = {"type": scope, "companyRegister": siret}
        if branch_code:
            org["branchCode"] = branch_code
        client = Client(client_id, secret, scope, org)
        with self._lock:
            self.clients[client_id] = client
        return client

    def fail(
        self,
        method: str,
        path: str,
        action: int | str,
        *,
        times: int = 1,
        body: Any = None,
        when: Callable[[Recorded], bool] | None = None,
    ) -> None:
        """The next `times` requests matching method and path (a regex on the full path) get `action`.

        action: an HTTP status (with `body`, default the spec's Error shape), "close" (the connection
        drops unprocessed), "lose_answer" (processed, then the connection drops: the client cannot
        know), or "hang" (no answer until release() or stop()).
        """
        with self._lock:
            if action == "hang":
                self._released.clear()
            self.faults.append(Fault(method.upper(), re.compile(path), action, times, body, when))

    def fail_token(self, *, times: int = 1, status: int = 500) -> None:
        self.fail("POST", f"^{TOKEN_PATH}$", status, times=times)

    def fail_uploads(self, *, times: int = 1, status: int = 500) -> None:
        self.fail("PUT", UPLOAD_PATH.pattern, status, times=times)

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()
            self.corrupt_uploads = 0

    def release(self) -> None:
        """Let the requests held by a "hang" fault go (they end with a dropped connection)."""
        self._released.set()

    def revoke_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    # -- what the recipient does, without going through HTTP ---------------------------------------

    def set_case_status(
        self, case_id: str, status: str, *, at: datetime | None = None, message: str = ""
    ) -> None:
        """Move a case as the recipient's system would: the status, an event, a notification to the sender."""
        with self._lock:
            case = self.cases[case_id]
            self._add_event(
                case,
                case["recipient"],
                {
                    "actionType": "STATUS_UPDATE",
                    "message": message or None,
                    "notification": True,
                    "caseCurrentStatus": case["status"],
                    "caseNewStatus": status,
                },
                at=at,
            )

    # -- inspection --------------------------------------------------------------------------------

    def requests_to(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method.upper())
                and (path is None or re.search(path, r.path))
            ]

    def folder_by_external_id(self, external_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = [f for f in self.folders.values() if f["externalId"] == external_id]
        assert len(found) <= 1, f"{len(found)} folders with externalId {external_id}"
        return found[0] if found else None

    def case_of(self, folder: dict[str, Any]) -> dict[str, Any]:
        return self.cases[folder["cases"][0]["id"]]

    # -- the HTTP side -------------------------------------------------------------------------------

    def _fault_for(self, rec: Recorded) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if (
                    f.times > 0
                    and f.method == rec.method
                    and f.path.search(rec.path)
                    and (f.when is None or f.when(rec))
                ):
                    f.times -= 1
                    return f
        return None

    def handle(self, rec: Recorded) -> _Answer:
        with self._lock:
            self.requests.append(rec)
        fault = self._fault_for(rec)
        if fault is not None:
            if fault.action == "close":
                raise _Drop()
            if fault.action == "hang":
                self._released.wait(60)
                raise _Drop()
            if isinstance(fault.action, int):
                raise _Answer(
                    fault.action,
                    fault.body
                    if fault.body is not None
                    else {"errors": [{"code": fault.action, "message": "Injected fault"}]},
                )
        with self._lock:
            answer = self._route(rec)
        if fault is not None and fault.action == "lose_answer":
            raise _Drop()
        return answer

    def _route(self, rec: Recorded) -> _Answer:
        try:
            if rec.path == TOKEN_PATH and rec.method == "POST":
                return self._token(rec)
            if not rec.path.startswith(BASE_PATH + "/"):
                raise _error(404, "Resource not found")
            client = self._authenticate(rec)
            path = rec.path[len(BASE_PATH) :]
            method = rec.method
            if method == "POST" and rec.headers.get("x-http-method-override", "").upper() == "PATCH":
                method = "PATCH"  # the spec's POST twin of each PATCH
            known = False
            for verb, pattern, name in _ROUTES:
                m = pattern.match(path)
                if m is None:
                    continue
                known = True
                if verb == method:
                    return getattr(self, name)(client, rec, *m.groups())
            raise _error(405 if known else 404, "Method not allowed" if known else "Resource not found")
        except _Answer as answer:
            return answer

    # tokens

    def _token(self, rec: Recorded) -> _Answer:
        auth = rec.headers.get("authorization", "")
        client = None
        if auth.startswith("Basic "):
            try:
                cid, _, secret = base64.b64decode(auth[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                cid, secret = "", ""
            known = self.clients.get(cid)
            if known is not None and known.secret == secret:
                client = known
        if client is None:
            raise _Answer(
                401, {"error": "invalid_client", "error_description": "Client authentication failed"}
            )
        rec.client_id = client.client_id
        if not rec.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            raise _Answer(400, {"error": "invalid_request", "error_description": "form body expected"})
        form = {k: v[-1] for k, v in parse_qs(rec.body.decode("ascii", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            raise _Answer(400, {"error": "unsupported_grant_type"})
        if form.get("scope") != client.scope:
            raise _Answer(400, {"error": "invalid_scope"})
        token = uuid.uuid4().hex
        self.tokens[token] = (client.client_id, self.clock() + self.token_lifetime)
        return _Answer(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": int(self.token_lifetime),
                "scope": client.scope,
            },
        )

    def _authenticate(self, rec: Recorded) -> Client:
        auth = rec.headers.get("authorization", "")
        entry = self.tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
        if entry is None or entry[1] <= self.clock():
            raise _Answer(401, {"fault": {"code": 900901, "message": "Invalid Credentials"}})
        rec.client_id = entry[0]
        return self.clients[entry[0]]

    @staticmethod
    def _need(client: Client, *scopes: str) -> None:
        if client.scope not in scopes:
            raise _error(403, "Unauthorized user")

    @staticmethod
    def _same_org(org: dict[str, Any], client: Client) -> bool:
        mine = client.organization
        if org.get("companyRegister") != mine["companyRegister"]:
            return False
        return (
            not mine.get("branchCode") or not org.get("branchCode") or org["branchCode"] == mine["branchCode"]
        )

    # folders

    def _create_folder(self, client: Client, rec: Recorded) -> _Answer:
        self._need(client, "OSL")
        body = rec.json
        if not isinstance(body, dict):
            raise _error(
                400,
                "Bad Request : Validation failed. [ERROR][REQUEST][POST /teledossiers/v1/folders @body]"
                " a JSON object is expected",
            )
        missing = [
            k for k in ("applicant", "attachments", "cases", "externalId", "processCode") if k not in body
        ]
        if missing:
            raise self._invalid("@body", missing)
        for key, cap in (("externalId", 30), ("processCode", 30)):
            if not isinstance(body[key], str) or not body[key] or len(body[key]) > cap:
                raise _error(
                    400,
                    f"Bad Request : Validation failed. [ERROR][REQUEST][POST /teledossiers/v1/folders "
                    f"@body.{key}] a string of 1 to {cap} characters is expected",
                )
        applicant = body["applicant"]
        if not isinstance(applicant, dict) or [k for k in ("firstName", "lastName") if not applicant.get(k)]:
            raise self._invalid("@body.applicant", ["firstName", "lastName"])
        cases = body["cases"]
        if not isinstance(cases, list) or not cases:
            raise self._invalid("@body.cases", ["items"])
        case_ids: dict[str, str] = {}
        now = _iso(self.now())
        folder_id = str(uuid.uuid4())
        stored_cases = []
        for i, c in enumerate(cases):
            recipient = c.get("recipient") if isinstance(c, dict) else None
            need = (
                ["externalId", "recipient"]
                if not isinstance(c, dict)
                else [k for k in ("externalId", "recipient") if k not in c]
            )
            if need:
                raise self._invalid(f"@body.cases[{i}]", need)
            need = [
                k
                for k in ("type", "companyRegister") + (("branchCode",) if self.require_branch_code else ())
                if not isinstance(recipient, dict) or not recipient.get(k)
            ]
            if need:
                raise self._invalid(f"@body.cases[{i}].recipient", need)
            if not re.fullmatch(r"[0-9]{14}", str(recipient["companyRegister"])):
                raise _error(
                    400,
                    f"Bad Request : Validation failed. [ERROR][REQUEST][POST /teledossiers/v1/folders "
                    f'@body.cases[{i}].recipient.companyRegister] ECMA 262 regex "[0-9]{{14}}" '
                    "does not match input string",
                )
            if not isinstance(c["externalId"], str) or len(c["externalId"]) > 30:
                raise _error(
                    400, "Bad Request : Validation failed. case externalId longer than 30 characters"
                )
            case_id = str(uuid.uuid4())
            case_ids[c["externalId"]] = case_id
            stored = {
                "id": case_id,
                "status": "HUBEE_RECEIVED",
                "recipient": dict(recipient),
                "externalId": c["externalId"],
                "processCode": body["processCode"],
                "createDateTime": now,
                "updateDateTime": None,
                "transmissionDateTime": None,
                "closeDateTime": None,
                "partnerAttributes": c.get("partnerAttributes"),
                "applicant": dict(applicant),
                "attachments": [],
                "events": [],
                "folderId": folder_id,
                "transmitter": dict(client.organization),
            }
            stored_cases.append(stored)
        atts = body["attachments"]
        if not isinstance(atts, list) or not atts:
            raise self._invalid("@body.attachments", ["items"])
        stored_atts = []
        for i, a in enumerate(atts):
            need = [
                k
                for k in ("fileName", "type", "size", "mimeType", "recipients")
                if not isinstance(a, dict) or k not in a
            ]
            if need:
                raise self._invalid(f"@body.attachments[{i}]", need)
            if not isinstance(a["size"], int) or a["size"] < 0:
                raise _error(400, f"Bad Request : Validation failed. @body.attachments[{i}].size: an integer")
            unknown = (
                [r for r in a["recipients"] if r not in case_ids]
                if isinstance(a["recipients"], list)
                else [1]
            )
            if unknown or not a["recipients"]:
                raise _error(
                    400, f"Bad Request : attachments[{i}].recipients must name the cases' externalId"
                )
            stored_atts.append(
                {
                    "id": str(uuid.uuid4()),
                    "status": "PENDING",
                    "fileName": a["fileName"],
                    "type": a["type"],
                    "size": a["size"],
                    "mimeType": a["mimeType"],
                    "recipients": list(a["recipients"]),
                }
            )
        for case in stored_cases:
            case["attachments"] = [a["id"] for a in stored_atts if case["externalId"] in a["recipients"]]
            self.cases[case["id"]] = case
        folder = {
            "id": folder_id,
            "globalStatus": "HUBEE_RECEIVED",
            "processCode": body["processCode"],
            "createDateTime": now,
            "closeDateTime": None,
            "applicant": dict(applicant),
            "externalId": body["externalId"],
            "updateDateTime": None,
            "partnerInfo": {
                k: rec.headers.get(k.lower()) for k in ("editorName", "applicationName", "softwareVersion")
            },
            "cases": [{"id": c["id"], "externalId": c["externalId"]} for c in stored_cases],
            "attachments": stored_atts,
            "owner": client.client_id,
        }
        self.folders[folder_id] = folder
        return _Answer(201, self._folder_view(folder))

    @staticmethod
    def _invalid(where: str, missing: list[str]) -> _Answer:
        names = ",".join(f'"{m}"' for m in missing)
        return _error(
            400,
            f"Bad Request : Validation failed.\n[ERROR][REQUEST][POST /teledossiers/v1/folders {where}]"
            f" Object has missing required properties ([{names}])",
        )

    def _folder_view(self, folder: dict[str, Any]) -> dict[str, Any]:
        view = {k: v for k, v in folder.items() if k != "owner"}
        view["cases"] = [
            {
                k: self.cases[c["id"]][k]
                for k in (
                    "id",
                    "status",
                    "recipient",
                    "externalId",
                    "updateDateTime",
                    "transmissionDateTime",
                    "partnerAttributes",
                )
            }
            for c in folder["cases"]
        ]
        view["attachments"] = [dict(a) for a in folder["attachments"]]
        return view

    def _owned_folder(self, client: Client, folder_id: str) -> dict[str, Any]:
        self._need(client, "OSL")
        folder = self.folders.get(folder_id)
        if folder is None:
            raise _error(404, "Folder is not found")
        if (
            folder["owner"] != client.client_id
            and self.clients[folder["owner"]].organization != client.organization
        ):
            raise _error(403, "Unauthorized user")
        return folder

    def _get_folder(self, client: Client, rec: Recorded, folder_id: str) -> _Answer:
        return _Answer(200, self._folder_view(self._owned_folder(client, folder_id)))

    def _patch_folder(self, client: Client, rec: Recorded, folder_id: str) -> _Answer:
        folder = self._owned_folder(client, folder_id)
        body = rec.json if isinstance(rec.json, dict) else {}
        status = body.get("globalStatus")
        if status not in FOLDER_STATUSES:
            raise _error(400, "Bad request")
        now = _iso(self.now())
        if status == "HUBEE_COMPLETED":
            if folder["globalStatus"] != "HUBEE_RECEIVED":
                raise _error(400, "Folder already completed")
            if any(a["status"] != "RECEIVED" for a in folder["attachments"]):
                raise _error(400, "Attachments are not all received")
            for ref in folder["cases"]:
                case = self.cases[ref["id"]]
                case.update(status="HUBEE_NOTIFIED", transmissionDateTime=now, updateDateTime=now)
                self._notify(case["recipient"], folder, case, None, now)
        folder.update(globalStatus=status, updateDateTime=now)
        if body.get("closeDateTime"):
            folder["closeDateTime"] = body["closeDateTime"]
        return _Answer(204)

    def _delete_folder(self, client: Client, rec: Recorded, folder_id: str) -> _Answer:
        folder = self._owned_folder(client, folder_id)
        if folder["globalStatus"] != "HUBEE_RECEIVED" or any(
            n["caseId"] in {c["id"] for c in folder["cases"]} for n in self.notifications.values()
        ):
            raise _error(400, "Bad request")
        for ref in folder["cases"]:
            self.cases.pop(ref["id"], None)
        for a in folder["attachments"]:
            self.blobs.pop(a["id"], None)
        del self.folders[folder_id]
        return _Answer(204)

    def _upload(self, client: Client, rec: Recorded, folder_id: str, attachment_id: str) -> _Answer:
        folder = self._owned_folder(client, folder_id)
        att = next((a for a in folder["attachments"] if a["id"] == attachment_id), None)
        if att is None:
            raise _error(404, "Binary meta-data is not found")
        if folder["globalStatus"] != "HUBEE_RECEIVED":
            raise _error(400, "Folder is not open for upload")
        if att["status"] == "RECEIVED":
            raise _error(400, "Attachment already received")
        if not rec.headers.get("content-type", "").startswith("application/octet-stream"):
            raise _error(400, "Bad request: application/octet-stream expected")
        body = rec.body
        if self.corrupt_uploads > 0 and body:
            self.corrupt_uploads -= 1
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        digest = rec.headers.get("digest")
        if digest is None:
            if self.require_digest:
                raise _error(400, "Bad request: digest header missing")
        else:
            # The spec's example is the bare base64; RFC 3230's "SHA-256=" prefix is tolerated.
            value = digest.split("=", 1)[1] if digest.lower().startswith("sha-256=") else digest
            if value != base64.b64encode(hashlib.sha256(body).digest()).decode():
                att["status"] = "CORRUPTED"
                raise _error(400, "Digest does not match the file")
        if len(body) != att["size"]:
            att["status"] = "CORRUPTED"
            raise _error(400, "File size does not match the declared size")
        self.blobs[attachment_id] = body
        att["status"] = "RECEIVED"
        folder["updateDateTime"] = _iso(self.now())
        return _Answer(204)

    # cases

    def _visible_case(self, client: Client, case_id: str) -> dict[str, Any]:
        case = self.cases.get(case_id)
        if case is None:
            raise _error(404, "Case is not found")
        if client.scope == "OSL":
            owner = self.clients[self.folders[case["folderId"]]["owner"]]
            if owner.organization != client.organization:
                raise _error(403, "Unauthorized user")
        elif not self._same_org(case["recipient"], client) or case["status"] == "HUBEE_RECEIVED":
            raise _error(403, "Unauthorized user")
        return case

    def _case_view(self, case: dict[str, Any], *, lite: bool = False) -> dict[str, Any]:
        folder = self.folders[case["folderId"]]
        view = {
            k: v for k, v in case.items() if k not in ("folderId", "transmitter", "attachments", "events")
        }
        view["attachments"] = [
            {k: a[k] for k in ("id", "status", "fileName", "type", "size", "mimeType")}
            for a in folder["attachments"]
            if a["id"] in case["attachments"]
        ]
        if not lite:
            view["events"] = [dict(e) for e in case["events"]]
        return view

    def _get_case(self, client: Client, rec: Recorded, case_id: str) -> _Answer:
        case = self._visible_case(client, case_id)
        return _Answer(200, self._case_view(case, lite=rec.query.get("lite", [""])[-1] == "true"))

    def _patch_case(self, client: Client, rec: Recorded, case_id: str) -> _Answer:
        case = self._visible_case(client, case_id)
        status = rec.json.get("status") if isinstance(rec.json, dict) else None
        if status not in CASE_STATUSES:
            raise _error(400, "Bad request")
        case.update(status=status, updateDateTime=_iso(self.now()))
        return _Answer(204)

    def _download(self, client: Client, rec: Recorded, case_id: str, attachment_id: str) -> _Answer:
        case = self._visible_case(client, case_id)
        if attachment_id not in case["attachments"] or attachment_id not in self.blobs:
            raise _error(404, "File is not found")
        data = self.blobs[attachment_id]
        return _Answer(
            200,
            data,
            {
                "Content-Type": "application/octet-stream",
                "digest": base64.b64encode(hashlib.sha256(data).digest()).decode(),
            },
        )

    def _post_event(self, client: Client, rec: Recorded, case_id: str) -> _Answer:
        case = self._visible_case(client, case_id)
        body = rec.json if isinstance(rec.json, dict) else None
        if body is None:
            raise _error(400, "Bad request")
        new = body.get("caseNewStatus")
        if new is not None and new not in CASE_STATUSES:
            raise _error(400, "Bad request")
        event = self._add_event(case, client.organization, body)
        return _Answer(201, dict(event))

    def _add_event(
        self,
        case: dict[str, Any],
        transmitter: dict[str, Any],
        body: dict[str, Any],
        *,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        now = _iso(at or self.now())
        event = {
            "id": str(uuid.uuid4()),
            "transmitter": dict(transmitter),
            "message": body.get("message"),
            "comment": body.get("comment"),
            "actionType": body.get("actionType"),
            "author": body.get("author"),
            "notification": bool(body.get("notification")),
            "createDateTime": now,
            "updateDateTime": now,
            "status": "SENT",
            "caseCurrentStatus": body.get("caseCurrentStatus") or case["status"],
            "caseNewStatus": body.get("caseNewStatus"),
            "partnerAttributes": body.get("partnerAttributes"),
            "attachments": [],
        }
        case["events"].append(event)
        if event["caseNewStatus"]:
            case.update(status=event["caseNewStatus"], updateDateTime=now)
        if event["notification"]:
            folder = self.folders[case["folderId"]]
            # An event by the recipient notifies the sender, and the other way round.
            to = case["transmitter"] if transmitter.get("type") == "SI" else case["recipient"]
            self._notify(to, folder, case, event["id"], now)
        return event

    def _get_event(self, client: Client, rec: Recorded, case_id: str, event_id: str) -> _Answer:
        case = self._visible_case(client, case_id)
        event = next((e for e in case["events"] if e["id"] == event_id), None)
        if event is None:
            raise _error(404, "event is not found")
        return _Answer(200, dict(event))

    def _patch_event(self, client: Client, rec: Recorded, case_id: str, event_id: str) -> _Answer:
        case = self._visible_case(client, case_id)
        event = next((e for e in case["events"] if e["id"] == event_id), None)
        if event is None:
            raise _error(404, "event is not found")
        status = rec.json.get("status") if isinstance(rec.json, dict) else None
        if not isinstance(status, str) or len(status) > 12:
            raise _error(400, "Bad request")
        event.update(status=status, updateDateTime=_iso(self.now()))
        return _Answer(204)

    # notifications

    def _notify(
        self, to: dict[str, Any], folder: dict[str, Any], case: dict[str, Any], event_id: str | None, now: str
    ) -> None:
        nid = str(uuid.uuid4())
        transmitter = case["recipient"] if to is case["transmitter"] else case["transmitter"]
        self.notifications[nid] = {
            "id": nid,
            "recipient": dict(to),
            "transmitter": dict(transmitter),
            "processCode": folder["processCode"],
            "caseId": case["id"],
            "eventId": event_id,
            "dateTime": now,
        }

    def _list_notifications(self, client: Client, rec: Recorded) -> _Answer:
        self._need(client, "OSL", "SI")
        try:
            cap = int(float(rec.query.get("maxResult", ["0"])[-1]))
        except ValueError:
            raise _error(400, "Bad Request : Validation failed. @query.maxResult is not a number") from None
        codes = set(rec.query.get("processCode", []))
        found = [
            dict(n)
            for n in self.notifications.values()
            if self._same_org(n["recipient"], client)
            and n["recipient"].get("type") == client.scope
            and (not codes or n["processCode"] in codes)
        ]
        return _Answer(200, found[:cap] if cap > 0 else found)

    def _delete_notification(self, client: Client, rec: Recorded, notification_id: str) -> _Answer:
        self._need(client, "OSL", "SI")
        n = self.notifications.get(notification_id)
        if n is None:
            raise _error(404, "Notification is not found")
        if not self._same_org(n["recipient"], client):
            raise _error(403, "Unauthorized user")
        del self.notifications[notification_id]
        return _Answer(204)


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHubee
    protocol_version = "HTTP/1.1"  # keep-alive, as HubEE's gateway does
    timeout = 30  # an idle kept-alive connection ends its thread eventually

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _serve(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        parsed = None
        if headers.get("content-type", "").startswith("application/json") and body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        rec = Recorded(self.command, split.path, parse_qs(split.query), headers, body, parsed)
        try:
            answer = self.hub.handle(rec)
        except _Answer as exc:
            answer = exc
        except _Drop:
            self.close_connection = True
            return
        rec.status = answer.status
        if isinstance(answer.body, bytes):
            payload = answer.body
        elif answer.body is None:
            payload = b""
        else:
            payload = json.dumps(answer.body).encode()
            answer.headers.setdefault("Content-Type", "application/json")
        self.send_response(answer.status)
        for k, v in answer.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve
