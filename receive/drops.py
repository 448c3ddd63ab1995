"""Where a département's files arrive, seen from the receiving side: a local folder, its SFTP server, or HubEE.

Both say the same three things: which files are *ready* (a sealed `<name>.p7m` once
`<name>.p7m.sha256`, which the sender writes last, sits beside it; an unsealed HubEE
`.xml` or `.zip` as soon as it is there under its final name), their bytes, and where an
acknowledgement goes back. Files are left where they are: the ledger remembers what was
taken, and the retention removes them (with their `.sha256`) once their time is up.

A name is only ever used to find the file again in the same folder: names with a path
separator, a NUL or a leading dot (an upload in progress) are not taken. Output folder
names never come from here (pipeline.py builds them from the ledger).
"""

from __future__ import annotations

import abc
import base64
import binascii
import errno
import hashlib
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..core.errors import StorageError, TransportError
from ..core.fsutil import atomic_write, name_digest, private_dir, storable_name
from ..core.log import get as get_logger
from ..core.names import EmissionName
from ..core.names import parse as parse_technical_name
from ..schemas.ack import parse_ack
from ..transport.base import AckStatus
from ..transport.local import ACK_DIR
from ..transport.upload import MARKER_SUFFIX, MAX_MARKER_BYTES  # the sender's marker, read back here
from .config import DropConfig, HubeeDropConfig, LocalDropConfig, SftpDropConfig

__all__ = [
    "MARKER_SUFFIX",
    "Drop",
    "DropFile",
    "HubeeDropReader",
    "LocalDropReader",
    "SftpDropReader",
    "is_safe_name",
    "open_drop",
]


_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
UNSEALED_SUFFIXES = (".xml", ".zip")


def is_safe_name(name: str) -> bool:
    """A plain basename a drop may hand us: UTF-8, no path, no control character, not hidden."""
    return (bool(name) and len(name) <= 255 and not name.startswith(".") and not _UNSAFE.search(name)
            and storable_name(name))


def stand_in(name: str) -> str:
    """The technical name a listed file whose own name cannot be stored (not UTF-8) goes under."""
    return f"unnamed-{name_digest(name)[:16]}"


@dataclass(frozen=True, slots=True)
class DropFile:
    name: str
    folder: str  # the folder it was listed in ('' for a local drop, the remote path for SFTP)
    size: int
    mtime: int
    sealed: bool  # a .p7m (else an unsealed .xml / .zip, HubEE's formats)
    # (size, mtime) of its `.sha256`, None when there is none. The marker's bytes are read only
    # for a file the ledger does not know yet: a drop keeps months of files, polled every minute.
    marker_stat: tuple[int, int] | None
    # Why it cannot be taken at all, from its listing alone ('' when it can): the file is refused
    # unread under `name`, a stand-in (its own name would make the ledger, the logs and acks fail).
    unusable: str = ""

    @property
    def technical(self) -> EmissionName | None:
        return parse_technical_name(self.name)


class Drop(abc.ABC):
    kind: str = "drop"
    # What the last `list_ready` saw and no receive will take: "name: why", for the operator.
    left: list[str] = []  # noqa: RUF012 - replaced, never mutated, by each listing

    @property
    @abc.abstractmethod
    def where(self) -> str: ...

    @abc.abstractmethod
    def list_ready(self) -> list[DropFile]:
        """Ready files, sorted by name (hence by flow, date and sequence for technical names)."""

    @abc.abstractmethod
    def read(self, item: DropFile, max_bytes: int) -> bytes:
        """The file's bytes; more than `max_bytes` means over the cap (the rest is not read)."""

    @abc.abstractmethod
    def read_marker(self, item: DropFile) -> bytes | None:
        """The `.sha256` beside `item` (at most MAX_MARKER_BYTES + 1 bytes), None when it is gone."""

    @abc.abstractmethod
    def write_ack(self, name: str, data: bytes) -> None:
        """Publish an ack atomically where the sender collects it (it ignores hidden names)."""

    @abc.abstractmethod
    def remove(self, item: DropFile) -> None:
        """Remove a file and its `.sha256` (retention); what is already gone is not an error."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Drop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# A sealed file whose marker is this late was not left by a delivery in progress (the sender writes
# the marker right after the rename): said as not taken, with why.
MARKER_LATE_SECONDS = 3600


def shown(name: str) -> str:
    """A listed name as an operator may read it: itself when it is a plain one, else its stand-in."""
    return name if is_safe_name(name) else stand_in(name)


def _ready(names: dict[str, tuple[int, int]], folder: str, *, now: float,
           per_second: int = 1) -> tuple[list[DropFile], list[str]]:
    """Ready files from a folder's {name: (size, mtime)}: `.p7m` with their marker, unsealed files;
    and what no receive will take there, "name: why" (`now` and the mtimes in 1/`per_second` s)."""
    out, left = [], []
    for name, (size, mtime) in sorted(names.items()):
        if name.startswith("."):
            continue  # a writer's temporary, by convention
        if not storable_name(name):
            # Set aside with a reason, not skipped in silence nor stopping the files behind it.
            sealed = name.endswith(".p7m")
            if (sealed and name + MARKER_SUFFIX in names) or name.endswith(UNSEALED_SUFFIXES):
                out.append(DropFile(stand_in(name), folder, size, mtime, sealed, None, "NAME_ENCODING"))
            else:
                left.append(f"{stand_in(name)}: a name that is not UTF-8")
            continue
        if not is_safe_name(name):
            left.append(f"{shown(name)}: a name with a control character or over 255 bytes")
            continue
        marker = names.get(name + MARKER_SUFFIX)
        if name.endswith(".p7m"):
            if marker is None:
                # The marker is written last: without it the file may still be arriving.
                if now - mtime > MARKER_LATE_SECONDS * per_second:
                    left.append(f"{name}: no {MARKER_SUFFIX} beside it for over an hour (a delivery interrupted, "
                                "which the sender's next run completes; or not the CNAF's)")
                continue
            out.append(DropFile(name, folder, size, mtime, True, marker))
        elif name.endswith(UNSEALED_SUFFIXES):
            out.append(DropFile(name, folder, size, mtime, False, marker))
        elif not name.endswith(MARKER_SUFFIX):
            left.append(f"{name}: neither a sealed .p7m nor an .xml or .zip")
    return out, left


class LocalDropReader(Drop):
    """`<path>/<file>` + `<file>.sha256`, acks written into `<path>/acks/` (transport/local.py's layout)."""

    kind = "local"

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def where(self) -> str:
        return str(self.path)

    def list_ready(self) -> list[DropFile]:
        if not self.path.is_dir():
            # Said, not read as an empty folder: an unmounted share would otherwise be "nothing arrived"
            # night after night, while the CNAF's files wait on the share.
            raise StorageError(self.path, "missing or not a folder (an unmounted share, or a wrong [drop] "
                               "path?): nothing was taken")
        names: dict[str, tuple[int, int]] = {}
        others: list[str] = []
        with os.scandir(self.path) as it:
            for entry in it:
                if entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    names[entry.name] = (st.st_size, st.st_mtime_ns)
                elif not entry.name.startswith(".") and not (entry.name == ACK_DIR and entry.is_dir(follow_symlinks=False)):
                    what = "a symbolic link" if entry.is_symlink() else "a folder" if entry.is_dir() else "not a file"
                    others.append(f"{shown(entry.name)}: {what}, never read")
        ready, left = _ready(names, "", now=time.time_ns(), per_second=10**9)
        self.left = sorted(left + others)
        return ready

    def _read(self, name: str, max_bytes: int) -> bytes:
        # O_NOFOLLOW: the listing skipped symlinks; one swapped in since is not followed either.
        fd = os.open(self.path / name, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            return fh.read(max_bytes + 1)

    def read(self, item: DropFile, max_bytes: int) -> bytes:
        return self._read(item.name, max_bytes)

    def read_marker(self, item: DropFile) -> bytes | None:
        try:
            return self._read(item.name + MARKER_SUFFIX, MAX_MARKER_BYTES)
        except FileNotFoundError:
            return None

    def write_ack(self, name: str, data: bytes) -> None:
        atomic_write(private_dir(self.path / ACK_DIR) / name, data)

    def remove(self, item: DropFile) -> None:
        listed = self._listed_as(item.name)
        for name in (listed, listed + MARKER_SUFFIX):
            (self.path / name).unlink(missing_ok=True)

    def _listed_as(self, name: str) -> str:
        """The name in the folder of a file the ledger knows under `name` (its stand-in, maybe)."""
        if name.startswith("unnamed-") and not os.path.lexists(self.path / name):
            try:
                return next((n for n in os.listdir(self.path) if not storable_name(n) and stand_in(n) == name), name)
            except OSError:
                return name
        return name


class SftpDropReader(Drop):
    """The département's SFTP server: one folder per flow (or one for all), acks into `ack_directory`."""

    kind = "sftp"

    def __init__(self, cfg: SftpDropConfig, department: str):
        from ..transport.sftp_client import SftpClient  # paramiko loads only for an SFTP drop

        self.cfg = cfg
        self.client = SftpClient(
            department,
            host=cfg.host,
            port=cfg.port,
            user=cfg.user,
            key=cfg.key,
            known_hosts=cfg.known_hosts,
            passphrase=cfg.key_passphrase,
            connect_timeout=cfg.connect_timeout,
            timeout=cfg.timeout,
        )

    @property
    def where(self) -> str:
        return f"sftp://{self.cfg.user}@{self.cfg.host}:{self.cfg.port}"

    def list_ready(self) -> list[DropFile]:
        out: list[DropFile] = []
        left: list[str] = []
        for folder in sorted(set(self.cfg.directories.values())):
            ready, stray = _ready({f.name: (f.size, f.mtime) for f in self.client.list_files(folder)}, folder,
                                  now=time.time())
            out += ready
            left += [f"{folder}/{why}" for why in stray]
        self.left = left
        return sorted(out, key=lambda f: (f.name, f.folder))

    def read(self, item: DropFile, max_bytes: int) -> bytes:
        return self.client.download(item.folder, item.name, max_bytes)

    def read_marker(self, item: DropFile) -> bytes | None:
        try:
            return self.client.download(item.folder, item.name + MARKER_SUFFIX, MAX_MARKER_BYTES)
        except TransportError as exc:
            if isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOENT:
                return None  # removed since the listing
            raise

    def write_ack(self, name: str, data: bytes) -> None:
        self.client.upload_bytes(self.cfg.ack_directory, name, data)

    def remove(self, item: DropFile) -> None:
        for name in (item.name, item.name + MARKER_SUFFIX):
            self.client.remove(item.folder, name)

    def close(self) -> None:
        self.client.close()


# -- HubEE (scope SI) -----------------------------------------------------------------------------

HUBEE_FLOWS = ("DSG", "GRO", "SGR")  # the three démarches (HubEE processCode) flux-pmi carries
HUBEE_SCOPE = "SI"
HUBEE_NEW = frozenset(
    {"HUBEE_NOTIFIED", "SENT"}
)  # case statuses that still wait for the département's system
HUBEE_RECEIVED, HUBEE_INTG_ERROR = "SI_RECEIVED", "SI_INTG_ERROR"
HUBEE_MAX_NOTIFICATIONS = 100  # per listing; the rest comes at the next poll, once these are deleted
HUBEE_MAX_MESSAGE = 1000  # Event.message maxLength
# Refusals the drop makes itself, before the pipeline (a case it cannot hand over as one file).
HUBEE_REFUSALS = {
    "NAME": "nom de fichier non conforme",
    "ATTACHMENTS": "un télédossier flux-pmi porte exactement un fichier",
}
_NO_DIGEST = "0" * 64


@dataclass
class _HubeeCase:
    name: str
    case_id: str
    attachment_id: str
    notification_id: str
    status: str


def _digest_hex(value: str | None) -> str | None:
    """The `digest` header (base64 SHA-256, optionally `SHA-256=`-prefixed) as hex; None when absent or unusable."""
    if not value:
        return None
    if value.lower().startswith("sha-256="):
        value = value.split("=", 1)[1]
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


def _ns(value: Any) -> int:
    try:
        return int(datetime.fromisoformat(str(value)).timestamp() * 1_000_000_000)
    except (TypeError, ValueError):
        return 0


class HubeeDropReader(Drop):
    """HubEE as the département's drop: its system (scope SI) takes the cases flux-pmi addressed to it.

    `list_ready` polls GET /notifications (the three démarches only) and reads each notified case
    (GET /cases/{id}); a case carries one attachment, the sealed .p7m under its technical name. The
    `.sha256` is replaced by HubEE itself: `read_marker` downloads the attachment (GET
    /cases/{id}/attachments/{id}) and makes the marker line from the download's `digest` header
    (from the bytes when HubEE sends none: the CMS signature still protects them); bytes whose size
    differs from the attachment's metadata get a marker they cannot match (INTEGRITY). Then the
    pipeline verifies, decrypts, validates and ingests as for any drop.

    The ack is the case status: `write_ack` posts an event SI_RECEIVED (OK, DUPLICATE) or
    SI_INTG_ERROR (the KO code and its fixed label, never content), then deletes the notification.
    The sender reads the case status as its ack (transport/hubee.py). Restart safety: the ledger
    keeps each decision; a status not yet posted is posted at the next run (the notification is
    still there), and a notification whose case is already decided is only deleted. A case that
    cannot be one file (no technical name, not exactly one attachment) is refused here:
    SI_INTG_ERROR, nothing ingested. `remove` does nothing: the folder is the sender's, HubEE purges it.
    """

    kind = "hubee"

    def __init__(self, cfg: HubeeDropConfig, department: str, *, http_transport: Any = None):
        # httpx loads only for a HubEE drop.
        from .. import __version__
        from ..transport.hubee_client import HubeeApi, error_detail
        from ..transport.oauth2 import ClientCredentials, OAuth2Client, TokenCache

        self.cfg = cfg
        self.department = department
        self.log = get_logger("flux-pmi.receive.hubee").bind(department=department)
        self.api = HubeeApi(
            api_url=cfg.api_url,
            timeout=cfg.timeout,
            headers={
                "editorName": "CNAF",
                "applicationName": "flux-pmi-receive",
                "softwareVersion": __version__,
            },
            partner=department,
            http_transport=http_transport,
        )
        self.api_url = self.api.api_url
        self.http = self.api.http
        self.oauth = OAuth2Client(
            self.http,
            ClientCredentials(cfg.token_url, cfg.client_id, cfg.client_secret.decode(), HUBEE_SCOPE),
            partner=department,
            label=f"HubEE token (client {cfg.client_id})",
            tokens=TokenCache(),
            detail=error_detail,
        )
        self._cases: dict[str, _HubeeCase] = {}  # file name -> its case, from the last listing
        self._settled: set[str] = set()  # names whose case was already decided (status posted)
        self._data: dict[str, bytes] = {}  # downloaded by read_marker, handed out by read

    @property
    def where(self) -> str:
        return f"hubee {self.api_url}"

    # -- HTTP (transport/hubee_client.py: the token, the call, what a failure means) -------------

    def _fail(self, reason: str, *, permanent: bool = False) -> TransportError:
        return TransportError(self.department, f"HubEE {reason}", permanent=permanent)

    def _call(self, method: str, path: str, ok: tuple[int, ...], **kw: Any) -> Any:
        """One API call with the SI token (a 401 renews it once); a status outside `ok` is a TransportError."""
        return self.api.expect(self.api.call(self.oauth, method, path, **kw), f"{method} {path}", *ok)

    def _json(self, r: Any, what: str, kind: type) -> Any:
        return self.api.json(r, what, kind)

    # -- listing -------------------------------------------------------------------------------

    def list_ready(self) -> list[DropFile]:
        self._cases, self._settled, self._data = {}, set(), {}
        r = self._call(
            "GET",
            "/notifications",
            (200,),
            params={"maxResult": HUBEE_MAX_NOTIFICATIONS, "processCode": list(HUBEE_FLOWS)},
        )
        out: list[DropFile] = []
        for n in self._json(r, "GET /notifications", list):
            if (
                not isinstance(n, dict)
                or n.get("processCode") not in HUBEE_FLOWS
                or not isinstance(n.get("id"), str)
            ):
                continue  # another démarche's: not ours to touch
            item = self._notified(n)
            if item is not None:
                out.append(item)
        return sorted(out, key=lambda f: (f.name, f.folder))

    def _notified(self, n: dict[str, Any]) -> DropFile | None:
        case_id = n.get("caseId")
        if not isinstance(case_id, str) or n.get("eventId"):
            # An event on a case (not a new case): nothing to take in for flux-pmi.
            self.log.info("receive.hubee_notification_skipped", notification=n["id"], event=n.get("eventId"))
            self._delete_notification(n["id"])
            return None
        case = self._json(
            self._call("GET", f"/cases/{case_id}", (200,), params={"lite": "true"}), "GET /cases", dict
        )
        status = str(case.get("status") or "")
        atts = [a for a in case.get("attachments") or [] if isinstance(a, dict)]
        names = [str(a.get("fileName") or "") for a in atts]
        if status not in HUBEE_NEW:
            # Decided already (a status posted before a crash, or by hand): only the notification is left.
            self._settled.update(names)
            self._delete_notification(n["id"])
            return None
        if len(atts) != 1:
            self._refuse(case_id, status, n["id"], "ATTACHMENTS")
            return None
        att, name = atts[0], names[0]
        t = parse_technical_name(name) if is_safe_name(name) else None
        if t is None or not t.sealed or not t.fits or t.flow != n["processCode"]:
            self._refuse(case_id, status, n["id"], "NAME")
            return None
        if att.get("status") not in (None, "RECEIVED") or not isinstance(att.get("id"), str):
            return None  # not uploaded (yet): not ready
        if name in self._cases:
            return None  # the same name in two cases: the second waits for the first to be decided
        self._cases[name] = _HubeeCase(name, case_id, att["id"], n["id"], status)
        declared_size = att.get("size")
        size = declared_size if isinstance(declared_size, int) else 0
        mtime = _ns(n.get("dateTime"))
        return DropFile(name, case_id, size, mtime, True, (0, mtime))

    # -- reading -------------------------------------------------------------------------------

    def _download(self, item: DropFile, cap: int) -> tuple[bytes, str | None]:
        import httpx

        from ..transport.hubee_client import NoAnswer
        from ..transport.oauth2 import no_answer_kind

        found = self._case(item.name)
        path = f"/cases/{found.case_id}/attachments/{found.attachment_id}"
        r = self.api.call(self.oauth, "GET", path, stream=True)
        try:
            if r.status_code != 200:
                r.read()
                raise self.api.failure(r, f"GET {path}")
            chunks, got = [], 0
            for chunk in r.iter_bytes():
                chunks.append(chunk)
                got += len(chunk)
                if got > cap:
                    break  # more than asked: the rest is not read
            return b"".join(chunks)[: cap + 1], r.headers.get("digest")
        except httpx.HTTPError as exc:
            raise NoAnswer(self.department, f"HubEE GET {path}: no answer ({no_answer_kind(exc)})", sent=True) from None
        finally:
            r.close()

    def read_marker(self, item: DropFile) -> bytes | None:
        limit = self.cfg.max_file_bytes
        if limit and item.size > limit:
            return f"{_NO_DIGEST}  {item.name}\n".encode()  # not downloaded: the pipeline refuses TOO_LARGE
        data, digest = self._download(item, item.size)
        self._data[item.name] = data
        declared = _digest_hex(digest) if digest is not None else hashlib.sha256(data).hexdigest()
        if declared is None or len(data) != item.size:
            declared = _NO_DIGEST  # a digest HubEE cannot have meant, or a size off its metadata: INTEGRITY
        return f"{declared}  {item.name}\n".encode()

    def read(self, item: DropFile, max_bytes: int) -> bytes:
        data = self._data.pop(item.name, None)
        if data is None:
            data, _ = self._download(item, max_bytes)
        return data[: max_bytes + 1]

    # -- the status, in place of an ack file ------------------------------------------------------

    def _case(self, name: str) -> _HubeeCase:
        found = self._cases.get(name)
        if found is None:
            raise self._fail(f"{name}: no notified case carries it")
        return found

    def write_ack(self, name: str, data: bytes) -> None:
        ack = parse_ack(data)
        if ack.file_name not in self._cases and ack.file_name not in self._settled:
            self.list_ready()  # a decision of an earlier run whose status was not posted: find its case again
        found = self._cases.get(ack.file_name)
        if found is None:
            if ack.file_name not in self._settled:
                self.log.warning("receive.hubee_case_gone", file=ack.file_name, code=ack.code)
            return  # decided already, or no longer notified: nothing left to say
        status = HUBEE_RECEIVED if ack.status == AckStatus.OK else HUBEE_INTG_ERROR
        self._post_status(found.case_id, found.status, status, f"{ack.code}: {ack.text}")
        self._delete_notification(found.notification_id)
        del self._cases[ack.file_name]
        self._settled.add(ack.file_name)
        self.log.info(
            "receive.hubee_status", file=ack.file_name, case=found.case_id, status=status, code=ack.code
        )

    def _post_status(self, case_id: str, current: str, new: str, message: str) -> None:
        body = {
            "actionType": "STATUS_UPDATE",
            "caseCurrentStatus": current,
            "caseNewStatus": new,
            "message": message[:HUBEE_MAX_MESSAGE],
            "notification": True,
        }
        self._call("POST", f"/cases/{case_id}/events", (200, 201), json=body)

    def _delete_notification(self, notification_id: str) -> None:
        self._call("DELETE", f"/notifications/{notification_id}", (200, 204, 404))  # 404: gone already

    def _refuse(self, case_id: str, current: str, notification_id: str, code: str) -> None:
        self.log.warning(
            "receive.refused", file=f"hubee case {case_id}", code=code, reason=HUBEE_REFUSALS[code]
        )
        self._post_status(case_id, current, HUBEE_INTG_ERROR, f"{code}: {HUBEE_REFUSALS[code]}")
        self._delete_notification(notification_id)

    def remove(self, item: DropFile) -> None:
        """Nothing to remove: the folder is the sender's, and HubEE purges it."""

    def close(self) -> None:
        self.api.close()


def open_drop(cfg: DropConfig, department: str) -> Drop:
    if isinstance(cfg, LocalDropConfig):
        return LocalDropReader(cfg.path)
    if isinstance(cfg, HubeeDropConfig):
        return HubeeDropReader(cfg, department)
    return SftpDropReader(cfg, department)
