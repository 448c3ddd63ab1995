"""SFTP delivery to a département's own server, with its host key pinned.

Many départements run an SFTP server for the files they receive. This adapter puts
each sealed file there the way the local drop does: under a hidden temporary name,
checked, renamed into place, then `<file>.sha256` (the `sha256sum` line) written last
as the completion marker. A receiver listing the folder never sees a partial file
under its final name, and a rerun after a crash finds what is already there and
sends nothing twice.

The partner's host key is pinned: only the configured known_hosts file is trusted,
an unknown or changed key stops the connection during the key exchange, before
authentication, so not one byte of a file leaves (errors.HostKeyError, permanent).
Only the configured client key is offered (no agent, no ~/.ssh).

The receiving side (receive/drops.py) pulls from a département's server through the
same class and the same pinned connection: list_files, download, remove, upload_bytes.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import logging
import posixpath
import secrets
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import paramiko
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_HANDLE,
    CMD_INIT,
    CMD_NAME,
    CMD_OPENDIR,
    CMD_READDIR,
    CMD_VERSION,
    SFTPError,
)

from ..config.settings import Department, Settings
from ..config.transports import SftpConfig
from ..core import keyfiles
from ..core.errors import ArchiveError, CertificateError, ConfigError, HostKeyError, TransportError
from ..core.fsutil import storable_name
from ..core.log import get as get_logger
from ..testing import faults
from .base import AckFile, CheckResult, Delivery, Receipt, Transport

# paramiko logs every transport event and a traceback per failed connection; ours say it once, without noise.
logging.getLogger("paramiko").setLevel(logging.WARNING)

DEFAULT_PORT = 22
DEFAULT_CONNECT_TIMEOUT = 20.0
DEFAULT_TIMEOUT = 60.0
MAX_ACK_BYTES = 1 << 20
CHUNK = 1 << 20
# Pipelined write requests in flight before their statuses are collected: enough to fill a
# long link, few enough that a refused write is noticed early.
WRITE_WINDOW = 64
CHECK_PREFIX = ".flux-pmi-check-"


def sha256_line(digest: str, name: str) -> bytes:
    """The `sha256sum` format, so a receiver can run `sha256sum -c` (same as the local drop)."""
    return f"{digest}  {name}\n".encode()


def key_fingerprint(key: paramiko.PKey) -> str:
    """`SHA256:...`, as `ssh-keygen -l` and the partner's own tools print it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")



def listdir_attr(sftp: paramiko.SFTPClient, path: str) -> list[paramiko.SFTPAttributes]:
    """A folder's entries, whatever bytes their names hold.

    paramiko's own listdir_attr decodes every name as strict UTF-8, so one name that is not
    UTF-8 fails the whole listing and every good file behind it waits. Here such a name comes
    back surrogate-escaped, one entry the caller sets aside (fsutil.storable_name), and the
    rest of the folder is read. Same requests as paramiko's (OPENDIR, READDIR until EOF, CLOSE).
    """
    t, msg = sftp._request(CMD_OPENDIR, sftp._adjust_cwd(path))
    if t != CMD_HANDLE:
        raise SFTPError("Expected handle")
    handle = msg.get_binary()
    entries = []
    try:
        while True:
            try:
                t, msg = sftp._request(CMD_READDIR, handle)
            except EOFError:
                break
            if t != CMD_NAME:
                raise SFTPError("Expected name response")
            for _ in range(msg.get_int()):
                filename = msg.get_string().decode("utf-8", "surrogateescape")
                longname = msg.get_string().decode("utf-8", "replace")
                attr = paramiko.SFTPAttributes._from_msg(msg, filename, longname)
                if filename not in (".", ".."):
                    entries.append(attr)
    finally:
        sftp._request(CMD_CLOSE, handle)
    return entries

@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file of a remote listing (the receiving side's pull)."""

    name: str
    size: int
    mtime: int


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, hostname: str, key: paramiko.PKey):
        super().__init__(f"Server {hostname!r} not found in known_hosts")
        self.key = key


class _PinnedOnly(paramiko.RejectPolicy):
    """RejectPolicy, keeping the key the server offered so the operator can compare it out of band."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise _UnknownHostKey(hostname, key)


class _Sftp(paramiko.SFTPClient):
    """paramiko's SFTP client, plus the extensions the server announces (paramiko reads and drops them)."""

    extensions: dict[str, bytes]

    def _send_version(self) -> int:
        msg = paramiko.Message()
        msg.add_int(3)
        self._send_packet(CMD_INIT, msg)
        t, data = self._read_packet()
        if t != CMD_VERSION:
            raise SFTPError("Incompatible sftp protocol")
        reply = paramiko.Message(data)
        version = reply.get_int()
        self.extensions = {}
        try:
            while reply.get_remainder():
                name = reply.get_text()
                self.extensions[name] = reply.get_binary()
        except Exception:  # a malformed list only costs the extensions, not the session
            self.extensions = {}
        return version

    def fsync(self, handle: bytes) -> None:
        """The data on the partner's disk before the rename publishes it (OpenSSH extension)."""
        self._request(CMD_EXTENDED, "fsync@openssh.com", handle)


class SftpTransport(Transport):
    """One département's SFTP server; one connection, opened on first use, reused, closed by close()."""

    name = "sftp"

    def __init__(
        self,
        department: str,
        *,
        host: str,
        user: str,
        key: Path,
        known_hosts: Path,
        directories: dict[str, Any],
        port: int = DEFAULT_PORT,
        passphrase: bytes | None = None,
        ack_directory: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        self.department = department
        self.host, self.port, self.user = host, int(port), user
        self.key_path, self.known_hosts = Path(key), Path(known_hosts)
        self._passphrase = passphrase
        self.directories = dict(directories)
        self.ack_directory = ack_directory
        self.connect_timeout, self.timeout = float(connect_timeout), float(timeout)
        self.log = get_logger("flux-pmi.sftp")
        self._client: paramiko.SSHClient | None = None
        self._sftp_client: _Sftp | None = None
        self._pkey: paramiko.PKey | None = None

    @classmethod
    def from_config(cls, settings: Settings, dept: Department) -> SftpTransport:
        """The département's [transport] table, validated when the configuration was loaded."""
        t = dept.transport
        if not isinstance(t, SftpConfig):
            raise ConfigError(settings.file, f"departments.{dept.code}.transport.type", "sftp")
        t.require_flows(settings.file, f"departments.{dept.code}.transport", dept.flows)
        return cls(
            dept.code,
            host=t.host,
            port=t.port,
            user=t.user,
            key=t.path("key", settings.base),
            known_hosts=t.path("known_hosts", settings.base),
            passphrase=t.secret,
            directories=t.directories,
            ack_directory=t.ack_directory,
            connect_timeout=t.connect_timeout or DEFAULT_CONNECT_TIMEOUT,
            timeout=t.timeout or settings.delivery.timeout_seconds,  # [delivery] timeout_seconds by default
        )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    # -- connection --------------------------------------------------------------------------

    def _load_key(self) -> paramiko.PKey:
        """The configured client key, or a permanent error: retrying cannot fix a key file."""
        if self._pkey is not None:
            return self._pkey
        path = self.key_path
        try:
            path.stat()
        except OSError as exc:
            raise TransportError(
                self.department, f"SFTP client key {path} cannot be read ({exc.strerror})", permanent=True
            ) from exc
        try:
            keyfiles.check_key_permissions(path, "SFTP client key")  # the one rule for every key flux-pmi holds
        except CertificateError as exc:
            raise TransportError(self.department, str(exc), permanent=True) from None
        try:
            self._pkey = paramiko.PKey.from_path(path, self._passphrase)  # positional: renamed in 5.0
        except (
            paramiko.PasswordRequiredException,
            TypeError,
        ) as exc:  # TypeError: cryptography's way to say it
            raise TransportError(
                self.department,
                f"SFTP client key {path} needs a passphrase: set key_passphrase_env or key_passphrase_file",
                permanent=True,
            ) from exc
        except (paramiko.SSHException, ValueError, OSError) as exc:
            raise TransportError(
                self.department,
                f"SFTP client key {path} cannot be loaded (wrong passphrase, "
                f"or not an ed25519/RSA key: {type(exc).__name__})",
                permanent=True,
            ) from exc
        return self._pkey

    def _tcp(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=self.connect_timeout)

    def _handshake(self, sock: socket.socket, pkey: paramiko.PKey) -> paramiko.SSHClient:
        """Key exchange, pinned host key check, then authentication. Raises paramiko's exceptions."""
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(self.known_hosts))  # this partner's pin only, never ~/.ssh/known_hosts
            client.set_missing_host_key_policy(_PinnedOnly())  # never AutoAddPolicy
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                pkey=pkey,
                sock=sock,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                channel_timeout=self.timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except BaseException:
            client.close()
            sock.close()
            raise
        return client

    def _open_sftp(self, client: paramiko.SSHClient) -> _Sftp:
        transport = client.get_transport()
        assert transport is not None
        sftp = _Sftp.from_transport(transport)
        assert sftp is not None
        sftp.get_channel().settimeout(self.timeout)
        return sftp

    def _sftp(self) -> _Sftp:
        """The open session, or a new one. Errors come out as TransportError/HostKeyError."""
        if self._sftp_client is not None and self._client is not None:
            t = self._client.get_transport()
            if t is not None and t.is_active():
                return self._sftp_client
            self._drop()
        pkey = self._load_key()
        if not self.known_hosts.is_file():
            raise HostKeyError(
                self.department,
                f"no pinned host key for {self.where}: known_hosts file "
                f"{self.known_hosts} does not exist; nothing sent",
            )
        started = time.monotonic()
        try:
            client = self._handshake(self._tcp(), pkey)
        except Exception as exc:
            raise self._connect_error(exc) from exc
        try:
            sftp = self._open_sftp(client)
        except Exception as exc:
            client.close()
            raise TransportError(
                self.department, f"SFTP subsystem refused on {self.where} ({type(exc).__name__}: {exc})"
            ) from exc
        self._client, self._sftp_client = client, sftp
        transport = client.get_transport()
        server_key = transport.get_remote_server_key() if transport else None
        self.log.info(
            "sftp.connected",
            department=self.department,
            host=self.host,
            port=self.port,
            host_key=key_fingerprint(server_key) if server_key else "",
            seconds=round(time.monotonic() - started, 3),
        )
        return sftp

    def _connect_error(self, exc: BaseException) -> TransportError:
        """What went wrong before the session existed, said for the operator."""
        d, where = self.department, self.where
        if isinstance(exc, paramiko.BadHostKeyException):
            msg = (
                f"host key CHANGED for {where}: pinned {exc.expected_key.get_name()} "
                f"{key_fingerprint(exc.expected_key)} ({self.known_hosts}), offered {exc.key.get_name()} "
                f"{key_fingerprint(exc.key)}; refused, nothing sent. Confirm the new key with the partner "
                "out of band before changing the pin"
            )
            self.log.error(
                "sftp.host_key_changed",
                department=d,
                host=self.host,
                port=self.port,
                pinned=key_fingerprint(exc.expected_key),
                offered=key_fingerprint(exc.key),
            )
            return HostKeyError(d, msg)
        if isinstance(exc, _UnknownHostKey):
            msg = (
                f"unknown host key for {where}: {self.known_hosts} pins no key for it, the server offered "
                f"{exc.key.get_name()} {key_fingerprint(exc.key)}; refused, nothing sent. Pin it only after "
                "checking that fingerprint with the partner"
            )
            self.log.error(
                "sftp.host_key_unknown",
                department=d,
                host=self.host,
                port=self.port,
                offered=key_fingerprint(exc.key),
            )
            return HostKeyError(d, msg)
        if isinstance(exc, paramiko.AuthenticationException):
            return TransportError(
                d,
                f"authentication refused by {where} for user {self.user!r} with key "
                f"{self.key_path.name} ({type(exc).__name__})",
                permanent=True,
            )
        if isinstance(exc, TimeoutError):
            return TransportError(d, f"connection to {where} timed out after {self.connect_timeout:g}s")
        if isinstance(exc, ConnectionRefusedError):
            return TransportError(d, f"connection to {where} refused (server down?)")
        if isinstance(exc, socket.gaierror):
            return TransportError(d, f"cannot resolve {self.host} ({exc.strerror})")
        if isinstance(exc, OSError):
            return TransportError(d, f"cannot connect to {where}: {exc.strerror or exc}")
        if isinstance(exc, paramiko.SSHException | EOFError):
            return TransportError(d, f"SSH session with {where} failed: {exc}")
        return TransportError(d, f"SSH session with {where} failed ({type(exc).__name__}: {exc})")

    def _drop(self) -> None:
        """Forget the connection: after a timeout or a dropped link its state cannot be trusted."""
        sftp, client = self._sftp_client, self._client
        self._sftp_client = self._client = None
        for thing in (sftp, client):
            try:
                if thing is not None:
                    thing.close()
            except Exception:  # closing a dead session may fail; there is nothing left to release
                pass

    def close(self) -> None:
        self._drop()

    def _remote_error(self, exc: BaseException, doing: str) -> TransportError:
        """An error inside the session. SFTP statuses keep the session; anything else drops it."""
        d, where = self.department, self.where
        if isinstance(exc, TimeoutError):
            self._drop()
            return TransportError(d, f"{doing} on {where}: no answer within {self.timeout:g}s")
        if isinstance(exc, paramiko.SSHException | EOFError | ConnectionError):
            self._drop()
            return TransportError(d, f"{doing} on {where}: connection lost ({type(exc).__name__})")
        if isinstance(exc, OSError):
            code = exc.errno
            if code == errno.EACCES:
                return TransportError(d, f"{doing} on {where}: permission denied", permanent=True)
            if code == errno.ENOENT:
                return TransportError(
                    d,
                    f"{doing} on {where}: no such file or directory (is the remote folder there?)",
                    permanent=True,
                )
            # SSH_FX_FAILURE is all OpenSSH says for ENOSPC, EDQUOT, EFBIG: worth another try later.
            return TransportError(
                d,
                f"{doing} on {where}: the server refused the write or the operation "
                f"({exc.strerror or exc}); disk full or quota reached?",
            )
        self._drop()
        return TransportError(d, f"{doing} on {where}: {type(exc).__name__}: {exc}")

    # -- small SFTP helpers ----------------------------------------------------------------

    @staticmethod
    def _stat(sftp: _Sftp, path: str) -> paramiko.SFTPAttributes | None:
        try:
            return sftp.stat(path)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    @staticmethod
    def _remove_quiet(sftp: _Sftp, path: str) -> None:
        try:
            sftp.remove(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise

    @staticmethod
    def _read_small(sftp: _Sftp, path: str, limit: int) -> bytes | None:
        try:
            with sftp.open(path, "rb") as fh:
                data = fh.read(limit + 1)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        return data

    def _rename(self, sftp: _Sftp, src: str, dst: str) -> None:
        if "posix-rename@openssh.com" in sftp.extensions:
            sftp.posix_rename(src, dst)
        else:
            # Plain SFTP rename refuses to replace a name; we remove nothing, so a clash fails loud.
            sftp.rename(src, dst)

    def _upload(self, sftp: _Sftp, src: BinaryIO, tmp: str, final: str, size: int, sha256: str) -> None:
        """Stream `src` to `tmp`, check every write status, the size and the digest, then rename to `final`.

        paramiko's pipelined writes drop the server's statuses, so they are collected here:
        a refused write (disk full) is an error, not a hole in the file.
        """
        h = hashlib.sha256()
        try:
            with sftp.open(tmp, "wb") as fr:
                pending = getattr(fr, "_reqs", None)
                fr.set_pipelined(pending is not None)  # without that hook, wait for each write instead
                for chunk in iter(lambda: src.read(CHUNK), b""):
                    fr.write(chunk)
                    faults.point("sftp-uploaded")
                    h.update(chunk)
                    if pending is not None and len(pending) > WRITE_WINDOW:
                        self._collect(sftp, pending, WRITE_WINDOW // 2)
                fr.flush()
                if pending is not None:
                    self._collect(sftp, pending, 0)
                if "fsync@openssh.com" in sftp.extensions:
                    sftp.fsync(fr.handle)
            got = sftp.stat(tmp).st_size
            if got != size:
                raise TransportError(
                    self.department,
                    f"{posixpath.basename(final)}: the server holds {got} "
                    f"bytes of {size} after the upload; disk full?",
                )
            if h.hexdigest() != sha256:
                # The archive gave other bytes than the trace recorded: publish nothing.
                raise TransportError(
                    self.department,
                    f"{posixpath.basename(final)}: the archived file does "
                    "not match its recorded SHA-256; not delivered",
                    permanent=True,
                )
        except BaseException:
            try:
                self._remove_quiet(sftp, tmp)
            except Exception:  # the session may be gone; the next delivery removes the stale temp
                pass
            raise
        faults.point("sftp-before-rename")
        self._rename(sftp, tmp, final)

    @staticmethod
    def _collect(sftp: _Sftp, pending: Any, keep: int) -> None:
        while len(pending) > keep:
            sftp._read_response(pending.popleft())  # raises IOError on an error status

    def _remote_sha256(self, sftp: _Sftp, path: str) -> str:
        h = hashlib.sha256()
        with sftp.open(path, "rb") as fh:
            fh.prefetch()
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                h.update(chunk)
        return h.hexdigest()

    # -- the interface ---------------------------------------------------------------------

    def deliver(self, item: Delivery) -> Receipt:
        folder = self.directories.get(item.flow)
        if not isinstance(folder, str) or not folder:
            raise TransportError(
                item.department,
                f"no remote directory configured for flow {item.flow} (transport.directories)",
                permanent=True,
            )
        if "/" in item.file_name or item.file_name.startswith("."):
            raise TransportError(item.department, f"refusing file name {item.file_name!r}", permanent=True)
        try:
            src = item.path.open("rb")
        except OSError as exc:
            raise ArchiveError(
                f"{item.file_name}: sealed file unreadable in the archive ({exc.strerror})"
            ) from exc
        with src:
            for attempt in (1, 2):
                reused = self._sftp_client is not None
                sftp = self._sftp()
                try:
                    return self._deliver(sftp, item, folder, src)
                except TransportError:
                    raise
                except (paramiko.SSHException, EOFError, ConnectionError) as exc:
                    if not reused or attempt == 2:
                        raise self._remote_error(exc, f"delivering {item.file_name}") from exc
                    # The kept connection died while idle (server restart, idle timeout): delivery is
                    # idempotent, so start again once on a fresh one rather than spend a retry and its backoff.
                    self._drop()
                    self.log.info("sftp.reconnect", department=item.department, reason=type(exc).__name__)
                    src.seek(0)
                except Exception as exc:
                    raise self._remote_error(exc, f"delivering {item.file_name}") from exc
        raise AssertionError("unreachable")

    def _deliver(self, sftp: _Sftp, item: Delivery, folder: str, src: BinaryIO) -> Receipt:
        name, started = item.file_name, time.monotonic()
        final = posixpath.join(folder, name)
        marker = f"{final}.sha256"
        expected = sha256_line(item.sha256, name)
        # Leftovers of an interrupted delivery: a temporary never carried the final name.
        self._remove_quiet(sftp, posixpath.join(folder, f".{name}.part"))
        self._remove_quiet(sftp, posixpath.join(folder, f".{name}.sha256.part"))
        attrs = self._stat(sftp, final)
        if attrs is not None:
            return self._already_there(sftp, item, final, marker, expected, attrs)
        # A marker without its file describes nothing a receiver could take: not beside the new one.
        self._remove_quiet(sftp, marker)
        self._upload(sftp, src, posixpath.join(folder, f".{name}.part"), final, item.size, item.sha256)
        faults.point("sftp-before-marker")
        self._write_marker(sftp, folder, name, marker, expected)
        self.log.info(
            "sftp.delivered",
            department=item.department,
            file=name,
            bytes=item.size,
            seconds=round(time.monotonic() - started, 3),
        )
        return Receipt(name, already_there=False, reference=final)

    def _write_marker(self, sftp: _Sftp, folder: str, name: str, marker: str, line: bytes) -> None:
        self._upload(
            sftp,
            io.BytesIO(line),
            posixpath.join(folder, f".{name}.sha256.part"),
            marker,
            len(line),
            hashlib.sha256(line).hexdigest(),
        )

    def _already_there(
        self,
        sftp: _Sftp,
        item: Delivery,
        final: str,
        marker: str,
        expected: bytes,
        attrs: paramiko.SFTPAttributes,
    ) -> Receipt:
        name = item.file_name
        if attrs.st_mode is not None and not stat.S_ISREG(attrs.st_mode):
            raise TransportError(
                item.department,
                f"{name}: something that is not a file sits under this name on the server",
                permanent=True,
            )
        if attrs.st_size != item.size:
            raise TransportError(
                item.department,
                f"{name}: a different file already sits under this name "
                f"({attrs.st_size} bytes, ours {item.size})",
                permanent=True,
            )
        current = self._read_small(sftp, marker, 4096)
        if current == expected:
            self.log.info("sftp.already_there", department=item.department, file=name)
            return Receipt(name, already_there=True, reference=final)
        if current is not None:
            raise TransportError(
                item.department,
                f"{name}: a different file already sits under this name (its .sha256 names another digest)",
                permanent=True,
            )
        # Renamed into place, then interrupted before the marker: make sure it is ours, then complete it.
        if self._remote_sha256(sftp, final) != item.sha256:
            raise TransportError(
                item.department,
                f"{name}: a different file already sits under this name (same size, other SHA-256)",
                permanent=True,
            )
        self._write_marker(sftp, posixpath.dirname(final), name, marker, expected)
        self.log.info("sftp.marker_completed", department=item.department, file=name)
        return Receipt(name, already_there=True, reference=final)

    def fetch_acks(self, department: str) -> list[AckFile]:
        if not self.ack_directory:
            return []
        sftp = self._sftp()
        try:
            out = []
            for a in sorted(listdir_attr(sftp, self.ack_directory), key=lambda a: a.filename):
                if a.filename.startswith(".") or a.st_mode is None or not stat.S_ISREG(a.st_mode):
                    continue
                if not storable_name(a.filename):  # not ours: an ack is named after our file
                    self.log.warning("sftp.ack_name_unusable", department=department)
                    continue
                if (a.st_size or 0) > MAX_ACK_BYTES:
                    self.log.warning(
                        "sftp.ack_too_big",
                        department=department,
                        file=a.filename,
                        bytes=a.st_size,
                        limit=MAX_ACK_BYTES,
                    )
                    continue
                data = self._read_small(sftp, posixpath.join(self.ack_directory, a.filename), MAX_ACK_BYTES)
                if data is None:
                    continue  # taken away between the listing and the read
                if len(data) > MAX_ACK_BYTES:
                    self.log.warning(
                        "sftp.ack_too_big", department=department, file=a.filename, limit=MAX_ACK_BYTES
                    )
                    continue
                out.append(AckFile(department, a.filename, data))
            return out
        except TransportError:
            raise
        except Exception as exc:
            raise self._remote_error(exc, f"reading acks in {self.ack_directory}") from exc

    def remove_ack(self, department: str, name: str) -> None:
        if not self.ack_directory:
            return
        if not name or "/" in name or name.startswith("."):
            raise TransportError(department, f"refusing to remove ack {name!r}", permanent=True)
        sftp = self._sftp()
        try:
            self._remove_quiet(sftp, posixpath.join(self.ack_directory, name))
        except Exception as exc:
            raise self._remote_error(exc, f"removing ack {name}") from exc

    # -- pulling: the receiving side (receive/drops.py) reads its own server through the same
    # pinned connection. Names are plain basenames: a server cannot steer us out of a folder.

    @staticmethod
    def _basename(name: str) -> str:
        if not name or "/" in name or "\\" in name or "\0" in name or name in (".", ".."):
            raise ValueError(f"refusing remote file name {name!r}")
        return name

    def list_files(self, folder: str) -> list[RemoteFile]:
        """The regular files of `folder` (hidden ones, i.e. uploads in progress, left out), by name."""
        sftp = self._sftp()
        try:
            entries = listdir_attr(sftp, folder)
        except Exception as exc:
            raise self._remote_error(exc, f"listing {folder}") from exc
        out = [
            RemoteFile(a.filename, a.st_size or 0, int(a.st_mtime or 0))
            for a in entries
            if not a.filename.startswith(".") and a.st_mode is not None and stat.S_ISREG(a.st_mode)
        ]
        return sorted(out, key=lambda f: f.name)

    def download(self, folder: str, name: str, max_bytes: int) -> bytes:
        """The whole file, read into memory; at most `max_bytes` + 1 bytes are read, so a caller
        that finds more than `max_bytes` knows it is over its cap without fetching the rest."""
        path = posixpath.join(folder, self._basename(name))
        sftp = self._sftp()
        try:
            with sftp.open(path, "rb") as fh:
                fh.prefetch()
                chunks, got = [], 0
                while got <= max_bytes:
                    chunk = fh.read(min(CHUNK, max_bytes + 1 - got))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    got += len(chunk)
            return b"".join(chunks)
        except Exception as exc:
            raise self._remote_error(exc, f"reading {path}") from exc

    def remove(self, folder: str, name: str) -> None:
        """Remove a file; one already gone is not an error."""
        path = posixpath.join(folder, self._basename(name))
        sftp = self._sftp()
        try:
            self._remove_quiet(sftp, path)
        except Exception as exc:
            raise self._remote_error(exc, f"removing {path}") from exc

    def upload_bytes(self, folder: str, name: str, data: bytes) -> None:
        """Write `data` as `folder/name`: hidden temporary, size and digest checked, renamed into place
        (replacing an older file of that name, so that writing the same thing twice is harmless)."""
        name = self._basename(name)
        final = posixpath.join(folder, name)
        sftp = self._sftp()
        try:
            if "posix-rename@openssh.com" not in sftp.extensions:
                self._remove_quiet(sftp, final)  # a plain SFTP rename refuses to replace a name
            self._upload(
                sftp,
                io.BytesIO(data),
                posixpath.join(folder, f".{name}.part"),
                final,
                len(data),
                hashlib.sha256(data).hexdigest(),
            )
        except TransportError:
            raise
        except Exception as exc:
            raise self._remote_error(exc, f"writing {final}") from exc

    def check(self, department: str) -> list[CheckResult]:
        """Connection, pinned host key, authentication, and each folder writable; no data is sent."""
        results: list[CheckResult] = []

        def add(ok: bool, what: str, detail: str = "") -> None:
            results.append(CheckResult(department, ok, what, detail))

        try:
            pkey = self._load_key()
        except TransportError as exc:
            add(False, "SFTP client key", exc.reason)
            return results
        add(True, "SFTP client key", f"{self.key_path} ({pkey.get_name()})")
        if not self.known_hosts.is_file():
            add(False, f"host key of {self.where}", f"known_hosts file {self.known_hosts} does not exist")
            return results
        try:
            sock = self._tcp()
        except OSError as exc:
            add(False, f"TCP connection to {self.where}", self._connect_error(exc).reason)
            return results
        add(True, f"TCP connection to {self.where}")
        try:
            client = self._handshake(sock, pkey)
        except paramiko.AuthenticationException as exc:
            add(True, f"host key of {self.where}", "matches the pinned key")
            add(False, f"authentication as {self.user}", self._connect_error(exc).reason)
            return results
        except Exception as exc:
            err = self._connect_error(exc)
            hostkey = isinstance(err, HostKeyError)
            add(
                False,
                f"host key of {self.where}" if hostkey else f"SSH session with {self.where}",
                err.reason,
            )
            return results
        try:
            transport = client.get_transport()
            key = transport.get_remote_server_key() if transport else None
            add(
                True,
                f"host key of {self.where}",
                f"matches the pinned key {key_fingerprint(key) if key else ''}",
            )
            add(True, f"authentication as {self.user}")
            try:
                sftp = self._open_sftp(client)
            except Exception as exc:
                add(False, "SFTP subsystem", f"{type(exc).__name__}: {exc}")
                return results
            try:
                for flow, folder in sorted(self.directories.items()):
                    add(*self._check_writable(sftp, flow, folder))
                for flow in ("DSG", "SGR", "GRO"):
                    if flow not in self.directories:
                        add(False, f"{flow} directory", "none configured (transport.directories)")
                if self.ack_directory:
                    add(*self._check_readable(sftp, self.ack_directory))
            finally:
                sftp.close()
        finally:
            client.close()
        return results

    def _check_writable(self, sftp: _Sftp, flow: str, folder: Any) -> tuple[bool, str, str]:
        what = f"{flow} directory {folder}"
        if not isinstance(folder, str) or not folder:
            return False, f"{flow} directory", "not a path (transport.directories)"
        try:
            attrs = self._stat(sftp, folder)
            if attrs is None:
                return False, what, "does not exist on the server"
            if attrs.st_mode is not None and not stat.S_ISDIR(attrs.st_mode):
                return False, what, "is not a directory"
            # A zero-byte file, created and deleted: proves the right to write without sending any data.
            probe = posixpath.join(folder, CHECK_PREFIX + secrets.token_hex(8))
            sftp.open(probe, "wb").close()
            sftp.remove(probe)
            return True, what, "exists and is writable"
        except (TimeoutError, paramiko.SSHException, EOFError) as exc:
            return False, what, f"no answer ({type(exc).__name__})"
        except OSError as exc:
            return False, what, f"not writable ({exc.strerror or exc})"

    def _check_readable(self, sftp: _Sftp, folder: str) -> tuple[bool, str, str]:
        what = f"ack directory {folder}"
        try:
            sftp.listdir(folder)
            return True, what, "readable"
        except (TimeoutError, paramiko.SSHException, EOFError) as exc:
            return False, what, f"no answer ({type(exc).__name__})"
        except OSError as exc:
            return False, what, f"not readable ({exc.strerror or exc})"
