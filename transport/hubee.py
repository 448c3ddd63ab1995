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

A folder must never be created twice. The trace's delivery journal (trace/journal.py) records each
file's folder, case and attachment ids as soon as HubEE answers the POST, before the upload; a later
attempt or run reads the folder back and finishes what is left instead of creating another. A POST
that got no answer leaves HubEE's side unknown: that file is then held for an operator rather than
risk a duplicate (docs/hubee.md, "Idempotency"). The HTTP calls, tokens and error mapping are shared
with the receiving side (transport/hubee_client.py, transport/oauth2.py).

Acknowledgements come from the case status (GET /cases/{caseId}): SI_RECEIVED, IN_PROGRESS,
ADD_AWAITING or DONE make an OK ack, SI_INTG_ERROR or REFUSED a KO one, in the format every other
transport hands to acks.collect.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from .. import __version__
from ..config.settings import Department, Hubee, Settings
from ..config.transports import HubeeConfig
from ..core import names
from ..core.clock import Clock, from_environment
from ..core.errors import ConfigError, TraceError, TransportError
from ..core.log import get as get_logger
from ..trace.journal import DeliveryJournal, HubeeStep, JournalEntry, JournalTransport
from .base import AckDecision, AckFile, AckStatus, CheckResult, Delivery, Receipt, Transport
from .hubee_client import HubeeApi, NoAnswer, error_detail
from .oauth2 import (
    DEFAULT_TOKEN_LIFETIME,
    RENEW_MARGIN,
    SHARED_TOKENS,
    ClientCredentials,
    OAuth2Client,
    TokenCache,
    TokenError,
)
from .retry import RetryPolicy

__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "RENEW_MARGIN",
    "SHARED_TOKENS",
    "HubeeTransport",
    "NoAnswer",
    "TokenCache",
    "TokenError",
    "error_detail",
    "external_id",
]

SCOPE = "OSL"
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

# One département's journal rows are shared by the transports of one process (acks, then deliveries,
# and `check`): each read-modify-write of them holds this lock.
_STATE_LOCKS: dict[tuple[Path, str], threading.Lock] = {}
_STATE_LOCKS_GUARD = threading.Lock()
# What the journal row holds besides its sha256, step and creation time.
_FACTS = (
    "flow",
    "external_id",
    "folder_id",
    "case_id",
    "attachment_id",
    "completed_at",
    "ack",
    "ack_handed",
    "closed",
)


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


def _state_lock(path: Path, department: str) -> threading.Lock:
    with _STATE_LOCKS_GUARD:
        return _STATE_LOCKS.setdefault((path, department), threading.Lock())


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    # A date without an offset cannot be placed on our timeline; HubEE runs on UTC.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _pick(items: Any, key: str, value: Any) -> dict[str, Any]:
    """The item of a folder's list whose `key` is `value`, else the only item, else {}."""
    found = [i for i in items or [] if isinstance(i, dict)]
    return next((i for i in found if i.get(key) == value), found[0] if len(found) == 1 else {})


def _entry(row: JournalEntry) -> dict[str, Any]:
    return {**row.facts, "sha256": row.sha256, "step": HubeeStep(row.step), "created_at": row.created_at}


class HubeeTransport(Transport):
    """One département reached through HubEE, the CNAF acting as online-service operator (OSL).

    It owns its delivery journal (closed with it).
    """

    name = "hubee"

    def __init__(
        self,
        *,
        config: Hubee,
        department: str,
        siret: str,
        journal: DeliveryJournal,
        flows: Iterable[str] = ("DSG", "SGR", "GRO"),
        branch_code: str | None = None,
        keep_days: int = 4 * 31,
        tokens: TokenCache | None = None,
        clock: Clock | None = None,
        http_transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
    ):
        if not re.fullmatch(r"[0-9]{14}", siret or ""):
            raise ValueError(f"the département's SIRET must be 14 digits, not {siret!r}")
        self.config = config
        self.department = department
        self.siret = siret
        self.flows = tuple(flows)
        self.branch_code = branch_code or None
        self.journal = journal
        self.keep_days = keep_days
        self.tokens = tokens if tokens is not None else SHARED_TOKENS
        self.retry = retry if retry is not None else RetryPolicy()
        self.clock = clock or Clock()
        self.log = get_logger("flux-pmi.transport.hubee")
        self.api = HubeeApi(
            api_url=config.api_url,
            timeout=config.timeout,
            headers={
                "editorName": config.editor_name,
                "applicationName": config.application_name,
                "softwareVersion": config.software_version or __version__,
            },
            partner=department,
            http_transport=http_transport,
            retry=self.retry,
        )
        self.api_url = self.api.api_url
        self.http = self.api.http
        self._oauth: dict[str, OAuth2Client] = {}
        self._lock = _state_lock(self.journal.path.resolve(), department)

    @classmethod
    def from_config(cls, settings: Settings, dept: Department, **kw: Any) -> HubeeTransport:
        """The département's [transport] table and the shared [hubee] one, validated when loaded."""
        t = dept.transport
        if settings.hubee is None:
            raise ConfigError(settings.file, "hubee", f"a [hubee] table: département {dept.code} uses HubEE")
        return cls(
            config=settings.hubee,
            department=dept.code,
            siret=dept.siret,
            flows=dept.flows,
            branch_code=t.branch_code if isinstance(t, HubeeConfig) else None,
            journal=kw.pop("journal", None)
            or DeliveryJournal(settings.paths.trace, legacy_dir=settings.paths.work),
            # Past the retention the trace forgets the emission: its HubEE ids are of no more use.
            keep_days=settings.retention.months * 31 + 31,
            clock=kw.pop("clock", None) or from_environment(),
            **kw,
        )

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

    def _client(self, flow: str) -> OAuth2Client:
        client = self._oauth.get(flow)
        if client is None:
            client_id = self._client_id(flow)
            client = self._oauth[flow] = OAuth2Client(
                self.http,
                ClientCredentials(
                    self.config.token_url, client_id, self.config.secrets[flow].decode(), SCOPE
                ),
                partner=self.department,
                label=f"HubEE token for {flow} (client {client_id})",
                tokens=self.tokens,
                retry=self.retry,
                detail=error_detail,
            )
        return client

    def _token(self, flow: str) -> str:
        return self._client(flow).token()

    def _call(self, flow: str, method: str, path: str, **kw: Any) -> httpx.Response:
        """One API call with the démarche's token; a 401 renews the token once and tries again."""
        return self.api.call(self._client(flow), method, path, **kw)

    def _failure(self, r: httpx.Response, what: str) -> TransportError:
        return self.api.failure(r, what)

    def _json(self, r: httpx.Response, what: str) -> dict[str, Any]:
        body: dict[str, Any] = self.api.json(r, what, dict)
        return body

    # -- state ---------------------------------------------------------------------------------

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            rows = self.journal.entries(JournalTransport.HUBEE, self.department)
        except TraceError as exc:
            raise TransportError(
                self.department, f"HubEE: delivery journal unreadable ({exc})", permanent=True
            ) from None
        return {row.file_name: _entry(row) for row in rows}

    def _save(self, name: str, entry: dict[str, Any]) -> None:
        """One step change, in one transaction; files past the retention are forgotten on the way."""
        facts = {k: entry[k] for k in _FACTS if entry.get(k) is not None}
        self.journal.put(
            JournalTransport.HUBEE,
            self.department,
            name,
            sha256=entry["sha256"],
            step=entry["step"],
            facts=facts,
            created_at=entry["created_at"],
        )
        horizon = (self.clock.now() - timedelta(days=self.keep_days)).isoformat()
        self.journal.prune(JournalTransport.HUBEE, self.department, horizon)

    def _forget(self, name: str) -> None:
        self.journal.remove(JournalTransport.HUBEE, self.department, name)

    # -- delivery --------------------------------------------------------------------------------

    def deliver(self, item: Delivery) -> Receipt:
        try:
            ext = external_id(item.file_name)
        except ValueError as exc:
            raise TransportError(item.department, f"HubEE: {exc}", permanent=True) from None
        self._client_id(item.flow)
        with self._lock:
            entry = self._load().get(item.file_name)
            if entry is not None:
                known = entry.get("sha256")
                if known in {d for d, _size in item.earlier}:
                    # An earlier seal of this very file, deposited (or begun) before a crash kept it out
                    # of the trace, then re-sealed for a renewed certificate: that folder is the file.
                    return self._earlier_seal(item, entry, str(known))
                if known != item.sha256:
                    raise TransportError(
                        item.department,
                        f"HubEE: {item.file_name} was already sent with other content "
                        f"(folder {entry.get('folder_id') or 'unknown'})",
                        permanent=True,
                    )
                if entry.get("step") == HubeeStep.COMPLETED:
                    return Receipt(item.file_name, already_there=True, reference=entry["folder_id"])
                if entry.get("step") == HubeeStep.POSTING:
                    raise self._unknown_folder(item, entry)
            data = self._read(item)
            if entry is None:
                entry = self._create(item, ext)
                self._upload(item, entry, data)
                self._complete(item, entry)
                return Receipt(item.file_name, reference=entry["folder_id"])
            return self._resume(item, entry, data)

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

    def _create(self, item: Delivery, ext: str) -> dict[str, Any]:
        # Written before the POST: a crash while it is in flight must not end in a second folder.
        entry: dict[str, Any] = {
            "sha256": item.sha256,
            "flow": item.flow,
            "external_id": ext,
            "step": HubeeStep.POSTING,
            "created_at": self.clock.now().isoformat(),
        }
        self._save(item.file_name, entry)
        folder = self._json(self._post_folder(item, entry), "POST /folders")
        folder_id = folder.get("id")
        if not isinstance(folder_id, str) or not folder_id:
            raise self._unknown_folder(item, entry, "the answer carries no folder id")
        case = _pick(folder.get("cases"), "externalId", ext + CASE_SUFFIX)
        att = _pick(folder.get("attachments"), "fileName", item.file_name)
        entry.update(
            folder_id=folder_id, case_id=case.get("id"), attachment_id=att.get("id"), step=HubeeStep.CREATED
        )
        self._save(item.file_name, entry)
        self.log.debug(
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

    def _post_folder(self, item: Delivery, entry: dict[str, Any]) -> httpx.Response:
        """POST /folders; the journal's row goes when HubEE surely created nothing, stays when it may have."""
        try:
            r = self._call(item.flow, "POST", "/folders", json=self.folder_body(item, entry["external_id"]))
        except NoAnswer as exc:
            if exc.sent:
                raise self._unknown_folder(item, entry, exc.reason) from None
            self._forget(item.file_name)
            raise
        except TransportError:
            self._forget(item.file_name)  # no token: nothing was asked of HubEE
            raise
        if r.status_code == 504:
            # The gateway gave up waiting for HubEE, which may still have created the folder.
            raise self._unknown_folder(item, entry, "HTTP 504 from the gateway")
        if r.status_code not in (200, 201):
            self._forget(item.file_name)  # HubEE answered no: nothing was created
            raise self._failure(r, "POST /folders")
        return r

    def _unknown_folder(self, item: Delivery, entry: dict[str, Any], why: str = "") -> TransportError:
        return TransportError(
            item.department,
            f"HubEE POST /folders for {item.file_name} ended without a usable answer"
            + (f" ({why})" if why else "")
            + f": HubEE may hold a folder with externalId {entry.get('external_id')}. Not sent again, to avoid a "
            f"duplicate: look it up in the HubEE portal, delete it if it exists, then forget its row in the delivery "
            f"journal: flux-pmi journal {item.department} --transport hubee --forget {item.file_name} --reason ...",
            permanent=True,
        )

    def _upload(self, item: Delivery, entry: dict[str, Any], data: bytes) -> None:
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
        entry["step"] = HubeeStep.UPLOADED
        self._save(item.file_name, entry)

    def _complete(self, item: Delivery, entry: dict[str, Any]) -> None:
        path = f"/folders/{entry['folder_id']}"
        r = self._call(item.flow, "PATCH", path, json={"globalStatus": FOLDER_COMPLETED})
        if r.status_code not in (200, 204):
            raise self._failure(r, f"PATCH {path}")
        self._done(item, entry)

    def _done(self, item: Delivery, entry: dict[str, Any]) -> None:
        entry.update(step=HubeeStep.COMPLETED, completed_at=self.clock.now().isoformat())
        self._save(item.file_name, entry)
        self.log.debug(
            "hubee.folder_completed",
            department=item.department,
            file=item.file_name,
            folder=entry["folder_id"],
        )

    def _earlier_seal(self, item: Delivery, entry: dict[str, Any], known: str) -> Receipt:
        """The folder holds an earlier seal of `item`: done, or finished with that seal's kept bytes."""
        if entry.get("step") == HubeeStep.COMPLETED:
            return Receipt(item.file_name, already_there=True, reference=entry["folder_id"], earlier_sha256=known)
        if entry.get("step") == HubeeStep.POSTING:
            raise self._unknown_folder(item, entry)
        at = [d for d, _size in item.earlier].index(known)
        path = item.earlier_paths[at] if at < len(item.earlier_paths) else None
        if path is None:
            raise TransportError(item.department, f"HubEE: {item.file_name} was begun in folder "
                                 f"{entry.get('folder_id') or 'unknown'} under its earlier seal, whose bytes "
                                 "are no longer kept: `flux-pmi journal --forget` once that folder is closed",
                                 permanent=True)
        earlier = dataclasses.replace(item, sha256=known, size=item.earlier[at][1], path=path, earlier=(),
                                      earlier_paths=())
        receipt = self._resume(earlier, entry, self._read(earlier))
        return dataclasses.replace(receipt, earlier_sha256=known)

    def _resume(self, item: Delivery, entry: dict[str, Any], data: bytes) -> Receipt:
        """A folder created before (a retry, or a rerun after a crash): finish it, never create another."""
        folder_id = entry["folder_id"]
        path = f"/folders/{folder_id}"
        r = self._call(item.flow, "GET", path)
        if r.status_code != 200:
            raise self._failure(r, f"GET {path}")
        folder = self._json(r, f"GET {path}")
        if not entry.get("case_id") or not entry.get("attachment_id"):
            self._read_back_ids(item, entry, folder, path)
        status = folder.get("globalStatus")
        if status and status != FOLDER_OPEN:
            self._done(item, entry)
            return Receipt(item.file_name, already_there=True, reference=folder_id)
        att: dict[str, Any] = next(
            (a for a in folder.get("attachments") or [] if a.get("id") == entry["attachment_id"]), {}
        )
        self.log.debug(
            "hubee.resume",
            department=item.department,
            file=item.file_name,
            folder=folder_id,
            attachment_status=att.get("status"),
        )
        if att.get("status") != ATTACHMENT_RECEIVED:
            self._upload(item, entry, data)
        self._complete(item, entry)
        return Receipt(item.file_name, reference=folder_id)

    def _read_back_ids(
        self, item: Delivery, entry: dict[str, Any], folder: dict[str, Any], path: str
    ) -> None:
        """The case and attachment ids the POST's answer lacked, from the folder read back."""
        ext = entry.get("external_id")
        case: dict[str, Any] = next(
            (c for c in folder.get("cases") or [] if c.get("externalId") == f"{ext}{CASE_SUFFIX}"), {}
        )
        att: dict[str, Any] = next(
            (a for a in folder.get("attachments") or [] if a.get("fileName") == item.file_name), {}
        )
        entry.update(case_id=case.get("id"), attachment_id=att.get("id"))
        if not entry["case_id"] or not entry["attachment_id"]:
            raise TransportError(
                item.department,
                f"HubEE GET {path}: no case or attachment for {item.file_name}",
                permanent=True,
            )
        self._save(item.file_name, entry)

    # -- acknowledgements ----------------------------------------------------------------------------

    def fetch_acks(self) -> list[AckFile]:
        with self._lock:
            files = self._load()
            out: list[AckFile] = []
            errors: list[TransportError] = []
            changed: set[str] = set()
            for name, entry in sorted(files.items()):
                if entry.get("step") != HubeeStep.COMPLETED or entry.get("ack_handed") or entry.get("closed"):
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
                    if ack is not None or entry.get("closed"):
                        changed.add(name)
                    if ack is None:
                        continue
                    # Kept, so that the same ack (same date) is offered until acks.collect has recorded it.
                    entry["ack"] = ack
                decision = AckDecision(
                    name, entry["sha256"], AckStatus(ack["status"]), ack["code"], datetime.fromisoformat(ack["at"])
                )
                out.append(AckFile(self.department, names.ack_name(name), decision=decision))
            for name in changed:
                self._save(name, files[name])
        if errors and not out:
            raise errors[0]
        for err in errors:
            self.log.warning("hubee.case_unread", department=self.department, error=err.reason)
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

    def remove_ack(self, name: str) -> None:
        with self._lock:
            files = self._load()
            for file_name, entry in files.items():
                if names.ack_name(file_name) == name:
                    entry["ack_handed"] = self.clock.now().isoformat()
                    self._save(file_name, entry)
                    return

    # -- check -----------------------------------------------------------------------------------

    def check(self) -> list[CheckResult]:
        out: list[CheckResult] = []
        usable: str | None = None
        for flow in self.flows:
            client_id = self.config.client_ids.get(flow, "?")
            try:
                self._token(flow)
            except TransportError as exc:
                out.append(CheckResult(self.department, False, f"HubEE token for {flow} not obtained", exc.reason))
                continue
            usable = usable or flow
            out.append(
                CheckResult(self.department, True, f"HubEE token for {flow}", f"client {client_id}, scope {SCOPE}")
            )
        if usable is not None:
            # Read-only, and open to the OSL scope: proves the API, the token and our headers are accepted.
            try:
                r = self._call(usable, "GET", "/notifications", params={"maxResult": 1})
            except TransportError as exc:
                out.append(CheckResult(self.department, False, "HubEE API not reachable", exc.reason))
            else:
                if r.status_code == 200:
                    out.append(CheckResult(self.department, True, "HubEE API reachable", self.api_url))
                else:
                    out.append(
                        CheckResult(
                            self.department,
                            False,
                            "HubEE API refused the check",
                            self._failure(r, "GET /notifications").reason,
                        )
                    )
        if not self.branch_code:
            out.append(
                CheckResult(
                    self.department,
                    True,
                    "no HubEE branch_code",
                    "the spec lists recipient.branchCode as required: set the code guichet from the subscription",
                    warning=True,
                )
            )
        try:
            self._load()
        except TransportError as exc:
            out.append(CheckResult(self.department, False, "HubEE delivery journal unreadable", exc.reason))
        return out

    def close(self) -> None:
        self.api.close()
        self.journal.close()
