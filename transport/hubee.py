"""HubEE: deliver each sealed file as a HubEE folder (télédossier) to the département's PMI, and read its status back.

HubEE, the State exchange hub, is one of the transports the convention's annexe 2 names. The CNAF is
the online-service operator (scope OSL) of three démarches, GRO, SGR and DSG; the département's
information system (scope SI) is the recipient. For each emission this adapter:

1. gets an OAuth2 token (client credentials, one client id per démarche, renewed before it expires);
2. creates a folder (POST /folders): one case addressed to the département (its SIRET), one
   attachment described by technical metadata only (file name, flow, size, MIME type);
3. uploads the sealed .p7m (PUT /folders/{folderId}/attachments/{attachmentId}, with its SHA-256 in
   the `digest` header);
4. marks the folder HUBEE_COMPLETED (PATCH /folders/{folderId}), which is what makes HubEE notify
   the recipient.

HubEE metadata is not end-to-end encrypted, so nothing in it comes from a record: the applicant the
spec requires is the sender's technical identity from the configuration.

A folder must never be created twice. A small state file per département (work/hubee/<dept>.json,
written atomically) records each file's folder, case and attachment ids as soon as HubEE answers the
POST, before the upload; a later attempt or run reads the folder back and finishes what is left
instead of creating another. A POST that got no answer leaves HubEE's side unknown: that file is then
held for an operator rather than risk a duplicate (docs/hubee.md, "Idempotency").

Acknowledgements come from the case status (GET /cases/{caseId}): SI_RECEIVED, IN_PROGRESS,
ADD_AWAITING or DONE make an OK ack, SI_INTG_ERROR or REFUSED a KO one, in the format every other
transport hands to acks.collect.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from .. import __version__
from ..config.settings import Department, Hubee, Settings
from ..core import names
from ..core.clock import Clock, from_environment
from ..core.errors import ConfigError, TransportError
from ..core.fsutil import atomic_write, private_dir
from ..core.log import get as get_logger
from .base import AckDecision, AckFile, AckStatus, CheckResult, Delivery, Receipt, Transport

SCOPE = "OSL"
# Renew a token this long before it expires: a request started on a nearly expired token could
# reach HubEE after its end.
RENEW_MARGIN = 60.0
DEFAULT_TOKEN_LIFETIME = 300.0  # when the token answer has no expires_in: assume short
# Folder.externalId and Case.externalId are both capped at 30 characters (the Folder.cases item says
# 100, the Case schema 30: the stricter wins). The case's id is the folder's plus CASE_SUFFIX.
EXTERNAL_ID_MAX = 30
CASE_SUFFIX = "-01"
# What the attachment is (RFC 8551): CMS enveloped data. The upload itself is application/octet-stream.
MIME_TYPE = "application/pkcs7-mime"
FOLDER_OPEN = "HUBEE_RECEIVED"  # created, attachments not all uploaded or folder not completed
FOLDER_COMPLETED = "HUBEE_COMPLETED"
ATTACHMENT_RECEIVED = "RECEIVED"
# Case statuses that say the recipient's system took the file into account, or refused it.
# ADD_AWAITING ("waiting for more from the applicant") comes after SI_RECEIVED: the file was taken in.
OK_STATUSES = frozenset({"SI_RECEIVED", "IN_PROGRESS", "ADD_AWAITING", "DONE"})
KO_STATUSES = frozenset({"SI_INTG_ERROR", "REFUSED"})
CLOSED = "CLOSED"
MAX_ERROR_CHARS = 200

_SPACES = re.compile(r"\s+")

# Connection failures where the request never left: sending it again cannot duplicate anything.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
# State files are shared by the transports of one process (acks, then deliveries, and `check`).
_STATE_LOCKS: dict[Path, threading.Lock] = {}
_STATE_LOCKS_GUARD = threading.Lock()


def external_id(file_name: str) -> str:
    """The folder's externalId: CNAF-<flow>-<dept>-<YYYYMMDD>-<seq>[R<n>], at most 27 characters.

    seq has no leading zeros; a re-emission adds R<n>. When that does not fit (seq past 999 with a
    re-emission, past 99999 without), the date loses its century (YYMMDD); past that (seq and
    re-emission numbers no night reaches), the date goes: the sequence alone is unique per flow and
    département. The case's externalId is this plus "-01", within the spec's 30 characters. The
    three shapes differ in their number of fields, so different emissions never share an id.
    """
    n = names.parse(file_name)
    if n is None or not n.sealed:
        raise ValueError(f"{file_name} is not a flux-pmi emission name")
    day = f"{n.business_date:%Y%m%d}"
    tail = str(n.seq) + (f"R{n.reemission_no}" if n.reemission_no else "")
    for stamp in (f"{day}-", f"{day[2:]}-", ""):
        ext = f"CNAF-{n.flow}-{n.department}-{stamp}{tail}"
        if len(ext) + len(CASE_SUFFIX) <= EXTERNAL_ID_MAX:
            return ext
    raise AssertionError("unreachable: 13 + 6 + 1 + 4 characters fit")  # pragma: no cover


class NoAnswer(TransportError):
    """HubEE did not answer. `sent` is False when the request provably never left this machine."""

    def __init__(self, partner: str, reason: str, *, sent: bool):
        super().__init__(partner, reason)
        self.sent = sent


class TokenError(TransportError):
    """No token: nothing else can be asked of HubEE until this is fixed."""


class TokenCache:
    """Tokens per (token URL, client id), shared by the transports of a process.

    A national night builds ~100 HubEE transports; sharing means three token requests, not three hundred.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._tokens: dict[tuple[str, str], tuple[str, float, float]] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: tuple[str, str], fetch: Callable[[], tuple[str, float]]) -> str:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        # One fetch per client at a time: parallel départements wait for it rather than all asking.
        with lock:
            hit = self._tokens.get(key)
            if hit is not None and hit[1] - self.clock() > hit[2]:
                return hit[0]
            token, lifetime = fetch()
            # A token shorter-lived than twice the margin would be renewed at every call: halve instead.
            self._tokens[key] = (token, self.clock() + lifetime, min(RENEW_MARGIN, lifetime / 2))
            return token

    def drop(self, key: tuple[str, str], token: str) -> None:
        with self._guard:
            if self._tokens.get(key, ("",))[0] == token:
                del self._tokens[key]

    def clear(self) -> None:
        with self._guard:
            self._tokens.clear()


SHARED_TOKENS = TokenCache()


def _state_lock(path: Path) -> threading.Lock:
    with _STATE_LOCKS_GUARD:
        return _STATE_LOCKS.setdefault(path, threading.Lock())


def _error_detail(response: httpx.Response) -> str:
    """The code and message of the spec's Error body, single-line and capped; never our request."""
    try:
        body = json.loads(response.content[: 64 * 1024])
    except ValueError:
        return ""
    first: Any = None
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        first = body["errors"][0]
    elif isinstance(body, dict) and "error" in body:  # OAuth2 token endpoint: {"error": "invalid_client"}
        first = {"code": body.get("error"), "message": body.get("error_description") or ""}
    if not isinstance(first, dict):
        return ""
    code = str(first.get("code", "")).strip()
    message = _SPACES.sub(" ", "".join(c for c in str(first.get("message", "")) if c.isprintable())).strip()
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return ": ".join(p for p in (code, message) if p)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    # A date without an offset cannot be placed on our timeline; HubEE runs on UTC.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class HubeeTransport(Transport):
    """One département reached through HubEE, the CNAF acting as online-service operator (OSL)."""

    name = "hubee"

    def __init__(
        self,
        *,
        config: Hubee,
        department: str,
        siret: str,
        state_dir: Path,
        flows: Iterable[str] = ("DSG", "SGR", "GRO"),
        branch_code: str | None = None,
        keep_days: int = 4 * 31,
        tokens: TokenCache | None = None,
        clock: Clock | None = None,
        http_transport: httpx.BaseTransport | None = None,
    ):
        if not re.fullmatch(r"[0-9]{14}", siret or ""):
            raise ValueError(f"the département's SIRET must be 14 digits, not {siret!r}")
        self.config = config
        self.department = department
        self.siret = siret
        self.flows = tuple(flows)
        self.branch_code = branch_code or None
        self.state_dir = Path(state_dir)
        self.keep_days = keep_days
        self.tokens = tokens if tokens is not None else SHARED_TOKENS
        self.clock = clock or Clock()
        self.api_url = config.api_url.rstrip("/")
        self.log = get_logger("flux-pmi.transport.hubee")
        self.http = httpx.Client(
            timeout=httpx.Timeout(config.timeout),
            headers={
                "editorName": config.editor_name,
                "applicationName": config.application_name,
                "softwareVersion": config.software_version or __version__,
            },
            follow_redirects=False,  # a redirect would carry the bearer token somewhere unplanned
            transport=http_transport,
        )
        self._lock = _state_lock(self.state_file().resolve())

    @classmethod
    def from_config(cls, settings: Settings, dept: Department, **kw: Any) -> HubeeTransport:
        if settings.hubee is None:
            raise ConfigError(settings.file, "hubee", f"a [hubee] table: département {dept.code} uses HubEE")
        try:
            return cls(
                config=settings.hubee,
                department=dept.code,
                siret=dept.siret,
                flows=dept.flows,
                branch_code=dept.transport.params.get("branch_code"),
                state_dir=kw.pop("state_dir", settings.paths.work / "hubee"),
                # Past the retention the trace forgets the emission: its HubEE ids are of no more use.
                keep_days=settings.retention.months * 31 + 31,
                clock=kw.pop("clock", None) or from_environment(),
                **kw,
            )
        except ValueError as exc:
            raise ConfigError(settings.file, f"departments.{dept.code}", str(exc)) from exc

    # -- HTTP --------------------------------------------------------------------------------

    def _client_id(self, flow: str) -> str:
        client_id = self.config.client_ids.get(flow)
        if client_id is None:
            raise TransportError(
                self.department,
                f"HubEE: no client id for démarche {flow} in [hubee] client_ids",
                permanent=True,
            )
        return client_id

    def _token(self, flow: str) -> str:
        client_id = self._client_id(flow)
        return self.tokens.get((self.config.token_url, client_id), lambda: self._fetch_token(flow, client_id))

    def _fetch_token(self, flow: str, client_id: str) -> tuple[str, float]:
        what = f"HubEE token for {flow} (client {client_id})"
        try:
            r = self.http.post(
                self.config.token_url,
                auth=(client_id, self.config.secrets[flow]),
                data={"grant_type": "client_credentials", "scope": SCOPE},
            )
        except httpx.HTTPError as exc:
            raise TokenError(self.department, f"{what}: no answer ({_kind(exc)})") from None
        if r.status_code != 200:
            detail = _error_detail(r)
            # 400 (invalid_scope, invalid_request) and 401 (invalid_client) are the credentials' fault.
            permanent = r.status_code in (400, 401, 403)
            raise TokenError(
                self.department,
                f"{what}: HTTP {r.status_code}" + (f" ({detail})" if detail else ""),
                permanent=permanent,
            )
        try:
            body = r.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, KeyError, TypeError):
            raise TokenError(self.department, f"{what}: the answer holds no access_token") from None
        if not isinstance(token, str) or not token:
            raise TokenError(self.department, f"{what}: the answer holds no access_token")
        return token, max(lifetime, 1.0)

    def _call(self, flow: str, method: str, path: str, **kw: Any) -> httpx.Response:
        """One API call with the démarche's token; a 401 renews the token once and tries again."""
        url = self.api_url + path
        key = (self.config.token_url, self._client_id(flow))
        headers = kw.pop("headers", {})
        for attempt in (1, 2):
            token = self._token(flow)
            try:
                r = self.http.request(
                    method, url, headers={**headers, "Authorization": f"Bearer {token}"}, **kw
                )
            except httpx.HTTPError as exc:
                raise NoAnswer(
                    self.department,
                    f"HubEE {method} {path}: no answer ({_kind(exc)})",
                    sent=not isinstance(exc, _NOT_SENT),
                ) from None
            if r.status_code == 401 and attempt == 1:
                self.tokens.drop(key, token)
                continue
            return r
        return r  # pragma: no cover - the loop returns

    def _failure(self, r: httpx.Response, what: str) -> TransportError:
        status = r.status_code
        # 404 may be the gateway's, 408/429/5xx are HubEE's passing trouble: retried. Any other 4xx
        # (400 validation, 401 after a fresh token, 403 scope or subscription) will not cure itself.
        permanent = 400 <= status < 500 and status not in (404, 408, 429)
        detail = _error_detail(r)
        return TransportError(
            self.department,
            f"HubEE {what}: HTTP {status}"
            + (f" ({detail})" if detail else "")
            + (", not retried" if permanent else ""),
            permanent=permanent,
        )

    def _json(self, r: httpx.Response, what: str) -> dict[str, Any]:
        try:
            body = r.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise TransportError(self.department, f"HubEE {what}: HTTP {r.status_code} without a JSON object")
        return body

    # -- state ---------------------------------------------------------------------------------

    def state_file(self) -> Path:
        return self.state_dir / f"{self.department}.json"

    def _load(self) -> dict[str, dict[str, Any]]:
        path = self.state_file()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return dict(data["files"])
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TransportError(
                self.department, f"HubEE state file {path} unreadable ({type(exc).__name__})", permanent=True
            ) from None

    def _save(self, files: dict[str, dict[str, Any]]) -> None:
        horizon = (self.clock.now() - timedelta(days=self.keep_days)).isoformat()
        kept = {n: e for n, e in files.items() if str(e.get("created_at", "9999")) >= horizon}
        files.clear()
        files.update(kept)
        private_dir(self.state_dir)
        data = {"department": self.department, "files": files}
        atomic_write(self.state_file(), json.dumps(data, indent=1, sort_keys=True).encode())

    # -- delivery --------------------------------------------------------------------------------

    def deliver(self, item: Delivery) -> Receipt:
        try:
            ext = external_id(item.file_name)
        except ValueError as exc:
            raise TransportError(item.department, f"HubEE: {exc}", permanent=True) from None
        self._client_id(item.flow)
        with self._lock:
            files = self._load()
            entry = files.get(item.file_name)
            if entry is not None:
                if entry.get("sha256") != item.sha256:
                    raise TransportError(
                        item.department,
                        f"HubEE: {item.file_name} was already sent with other content "
                        f"(folder {entry.get('folder_id') or 'unknown'})",
                        permanent=True,
                    )
                if entry.get("step") == "completed":
                    return Receipt(item.file_name, already_there=True, reference=entry["folder_id"])
                if entry.get("step") == "posting":
                    raise self._unknown_folder(item, entry)
            data = self._read(item)
            if entry is None:
                entry = self._create(item, ext, files)
                self._upload(item, entry, files, data)
                self._complete(item, entry, files)
                return Receipt(item.file_name, reference=entry["folder_id"])
            return self._resume(item, entry, files, data)

    def _read(self, item: Delivery) -> bytes:
        try:
            data = item.path.read_bytes()
        except OSError as exc:
            raise TransportError(item.department, f"HubEE: cannot read {item.path}: {exc.strerror}") from None
        if len(data) != item.size or hashlib.sha256(data).hexdigest() != item.sha256:
            raise TransportError(
                item.department,
                f"HubEE: the archived {item.file_name} does not match its size and SHA-256",
                permanent=True,
            )
        return data

    def folder_body(self, item: Delivery, ext: str) -> dict[str, Any]:
        """The folder's metadata: technical values only (HubEE does not encrypt them end to end)."""
        case_ext = ext + CASE_SUFFIX
        recipient = {"type": "SI", "companyRegister": self.siret}
        if self.branch_code:
            recipient["branchCode"] = self.branch_code
        return {
            "processCode": item.flow,
            "externalId": ext,
            "applicant": dict(self.config.applicant),
            "cases": [{"externalId": case_ext, "recipient": recipient}],
            "attachments": [
                {
                    "fileName": item.file_name,
                    "type": item.flow,
                    "size": item.size,
                    "mimeType": MIME_TYPE,
                    "recipients": [case_ext],
                }
            ],
        }

    def _create(self, item: Delivery, ext: str, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
        # Written before the POST: a crash while it is in flight must not end in a second folder.
        entry: dict[str, Any] = {
            "sha256": item.sha256,
            "flow": item.flow,
            "external_id": ext,
            "step": "posting",
            "created_at": self.clock.now().isoformat(),
        }
        files[item.file_name] = entry
        self._save(files)
        try:
            r = self._call(item.flow, "POST", "/folders", json=self.folder_body(item, ext))
        except NoAnswer as exc:
            if exc.sent:
                raise self._unknown_folder(item, entry, exc.reason) from None
            del files[item.file_name]
            self._save(files)
            raise
        except TransportError:
            del files[item.file_name]  # no token: nothing was asked of HubEE
            self._save(files)
            raise
        if r.status_code == 504:
            # The gateway gave up waiting for HubEE, which may still have created the folder.
            raise self._unknown_folder(item, entry, "HTTP 504 from the gateway")
        if r.status_code not in (200, 201):
            del files[item.file_name]  # HubEE answered no: nothing was created
            self._save(files)
            raise self._failure(r, "POST /folders")
        folder = self._json(r, "POST /folders")
        folder_id = folder.get("id")
        if not isinstance(folder_id, str) or not folder_id:
            raise self._unknown_folder(item, entry, "the answer carries no folder id")
        entry["folder_id"] = folder_id
        cases = [c for c in folder.get("cases") or [] if isinstance(c, dict)]
        atts = [a for a in folder.get("attachments") or [] if isinstance(a, dict)]
        case = next(
            (c for c in cases if c.get("externalId") == ext + CASE_SUFFIX),
            cases[0] if len(cases) == 1 else {},
        )
        att = next(
            (a for a in atts if a.get("fileName") == item.file_name), atts[0] if len(atts) == 1 else {}
        )
        entry.update(case_id=case.get("id"), attachment_id=att.get("id"), step="created")
        self._save(files)
        self.log.info(
            "hubee.folder_created",
            department=item.department,
            file=item.file_name,
            folder=folder_id,
            external_id=ext,
        )
        if not entry["case_id"] or not entry["attachment_id"]:
            raise TransportError(
                item.department,
                f"HubEE POST /folders: folder {folder_id} created without a case or attachment id in the answer; "
                "the next attempt reads them back",
            )
        return entry

    def _unknown_folder(self, item: Delivery, entry: dict[str, Any], why: str = "") -> TransportError:
        return TransportError(
            item.department,
            f"HubEE POST /folders for {item.file_name} ended without a usable answer"
            + (f" ({why})" if why else "")
            + f": HubEE may hold a folder with externalId {entry.get('external_id')}. Not sent again, to avoid a "
            f"duplicate: look it up in the HubEE portal, delete it if it exists, then remove {item.file_name} "
            f"from {self.state_file()}",
            permanent=True,
        )

    def _upload(
        self, item: Delivery, entry: dict[str, Any], files: dict[str, dict[str, Any]], data: bytes
    ) -> None:
        folder_id, attachment_id = entry["folder_id"], entry["attachment_id"]
        path = f"/folders/{folder_id}/attachments/{attachment_id}"
        # The spec's example: the bare base64 of the SHA-256, no "sha-256=" prefix.
        digest = base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
        r = self._call(
            item.flow,
            "PUT",
            path,
            content=data,
            headers={"Content-Type": "application/octet-stream", "digest": digest},
        )
        if r.status_code not in (200, 204):
            raise self._failure(r, f"PUT {path}")
        entry["step"] = "uploaded"
        self._save(files)

    def _complete(self, item: Delivery, entry: dict[str, Any], files: dict[str, dict[str, Any]]) -> None:
        path = f"/folders/{entry['folder_id']}"
        r = self._call(item.flow, "PATCH", path, json={"globalStatus": FOLDER_COMPLETED})
        if r.status_code not in (200, 204):
            raise self._failure(r, f"PATCH {path}")
        self._done(item, entry, files)

    def _done(self, item: Delivery, entry: dict[str, Any], files: dict[str, dict[str, Any]]) -> None:
        entry.update(step="completed", completed_at=self.clock.now().isoformat())
        self._save(files)
        self.log.info(
            "hubee.folder_completed",
            department=item.department,
            file=item.file_name,
            folder=entry["folder_id"],
        )

    def _resume(
        self, item: Delivery, entry: dict[str, Any], files: dict[str, dict[str, Any]], data: bytes
    ) -> Receipt:
        """A folder created before (a retry, or a rerun after a crash): finish it, never create another."""
        folder_id = entry["folder_id"]
        path = f"/folders/{folder_id}"
        r = self._call(item.flow, "GET", path)
        if r.status_code != 200:
            raise self._failure(r, f"GET {path}")
        folder = self._json(r, f"GET {path}")
        if not entry.get("case_id") or not entry.get("attachment_id"):
            ext = entry.get("external_id")
            case = next(
                (c for c in folder.get("cases") or [] if c.get("externalId") == f"{ext}{CASE_SUFFIX}"), {}
            )
            att = next(
                (a for a in folder.get("attachments") or [] if a.get("fileName") == item.file_name), {}
            )
            entry.update(case_id=case.get("id"), attachment_id=att.get("id"))
            if not entry["case_id"] or not entry["attachment_id"]:
                raise TransportError(
                    item.department,
                    f"HubEE GET {path}: no case or attachment for {item.file_name}",
                    permanent=True,
                )
            self._save(files)
        status = folder.get("globalStatus")
        if status and status != FOLDER_OPEN:
            self._done(item, entry, files)
            return Receipt(item.file_name, already_there=True, reference=folder_id)
        att = next((a for a in folder.get("attachments") or [] if a.get("id") == entry["attachment_id"]), {})
        self.log.info(
            "hubee.resume",
            department=item.department,
            file=item.file_name,
            folder=folder_id,
            attachment_status=att.get("status"),
        )
        if att.get("status") != ATTACHMENT_RECEIVED:
            self._upload(item, entry, files, data)
        self._complete(item, entry, files)
        return Receipt(item.file_name, reference=folder_id)

    # -- acknowledgements ----------------------------------------------------------------------------

    def fetch_acks(self, department: str) -> list[AckFile]:
        with self._lock:
            files = self._load()
            out: list[AckFile] = []
            errors: list[TransportError] = []
            changed = False
            for name, entry in sorted(files.items()):
                if entry.get("step") != "completed" or entry.get("ack_handed") or entry.get("closed"):
                    continue
                ack = entry.get("ack")
                if ack is None:
                    try:
                        ack = self._case_ack(name, entry)
                    except TransportError as exc:
                        errors.append(exc)
                        if isinstance(exc, NoAnswer | TokenError):
                            break  # HubEE is out of reach: asking for every other case would only wait longer
                        continue
                    changed = changed or ack is not None or bool(entry.get("closed"))
                    if ack is None:
                        continue
                    # Kept, so that the same ack (same date) is offered until acks.collect has recorded it.
                    entry["ack"] = ack
                decision = AckDecision(
                    name, entry["sha256"], AckStatus(ack["status"]), ack["code"], datetime.fromisoformat(ack["at"])
                )
                out.append(AckFile(department, names.ack_name(name), decision=decision))
            if changed:
                self._save(files)
        if errors and not out:
            raise errors[0]
        for exc in errors:
            self.log.warning("hubee.case_unread", department=department, error=exc.reason)
        return out

    def _case_ack(self, name: str, entry: dict[str, Any]) -> dict[str, str] | None:
        """The ack a case's status makes, or None while the recipient has not decided."""
        path = f"/cases/{entry['case_id']}"
        r = self._call(entry["flow"], "GET", path)
        if r.status_code != 200:
            raise self._failure(r, f"GET {path}")
        case = self._json(r, f"GET {path}")
        status = case.get("status")
        events = [e for e in case.get("events") or [] if isinstance(e, dict)]
        if status == CLOSED:
            # Closed: what the recipient decided before closing is in the case's events.
            decided = [e for e in events if e.get("caseNewStatus") in OK_STATUSES | KO_STATUSES]
            decided.sort(
                key=lambda e: _parse_time(e.get("createDateTime")) or datetime.min.replace(tzinfo=UTC)
            )
            if not decided:
                entry["closed"] = self.clock.now().isoformat()
                self.log.warning(
                    "hubee.case_closed_undecided",
                    department=self.department,
                    file=name,
                    case=entry["case_id"],
                )
                return None
            status = decided[-1]["caseNewStatus"]
        if status in OK_STATUSES:
            kind, statuses = "OK", OK_STATUSES
        elif status in KO_STATUSES:
            kind, statuses = "KO", KO_STATUSES
        else:
            return None  # HUBEE_NOTIFIED, SENT: not taken into account yet
        # The date of taking into account: the first event that moved the case into such a status,
        # else the case's last update, else now.
        times = sorted(
            t
            for e in events
            if e.get("caseNewStatus") in statuses
            if (t := _parse_time(e.get("createDateTime"))) is not None
        )
        at = times[0] if times else _parse_time(case.get("updateDateTime")) or self.clock.now()
        self.log.info(
            "hubee.case_status", department=self.department, file=name, case=entry["case_id"], status=status
        )
        return {"status": kind, "code": status, "at": at.isoformat()}

    def remove_ack(self, department: str, name: str) -> None:
        with self._lock:
            files = self._load()
            for file_name, entry in files.items():
                if names.ack_name(file_name) == name:
                    entry["ack_handed"] = self.clock.now().isoformat()
                    self._save(files)
                    return

    # -- check -----------------------------------------------------------------------------------

    def check(self, department: str) -> list[CheckResult]:
        out: list[CheckResult] = []
        usable: str | None = None
        for flow in self.flows:
            client_id = self.config.client_ids.get(flow, "?")
            try:
                self._token(flow)
            except TransportError as exc:
                out.append(CheckResult(department, False, f"HubEE token for {flow} not obtained", exc.reason))
                continue
            usable = usable or flow
            out.append(
                CheckResult(department, True, f"HubEE token for {flow}", f"client {client_id}, scope {SCOPE}")
            )
        if usable is not None:
            # Read-only, and open to the OSL scope: proves the API, the token and our headers are accepted.
            try:
                r = self._call(usable, "GET", "/notifications", params={"maxResult": 1})
            except TransportError as exc:
                out.append(CheckResult(department, False, "HubEE API not reachable", exc.reason))
            else:
                if r.status_code == 200:
                    out.append(CheckResult(department, True, "HubEE API reachable", self.api_url))
                else:
                    out.append(
                        CheckResult(
                            department,
                            False,
                            "HubEE API refused the check",
                            self._failure(r, "GET /notifications").reason,
                        )
                    )
        if not self.branch_code:
            out.append(
                CheckResult(
                    department,
                    True,
                    "no HubEE branch_code",
                    "the spec lists recipient.branchCode as required: set the code guichet from the subscription",
                    warning=True,
                )
            )
        try:
            self._load()
        except TransportError as exc:
            out.append(CheckResult(department, False, "HubEE state file unreadable", exc.reason))
        return out

    def close(self) -> None:
        self.http.close()


def _kind(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout, {type(exc).__name__}"
    return type(exc).__name__
