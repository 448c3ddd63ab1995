"""One pinned SSH/SFTP connection to a partner's server, shared by the delivery adapter and the receive side.

Both sides talk to a département's SFTP server the same way: the partner's host key is
pinned (only the configured known_hosts file is trusted; an unknown or changed key stops
the connection during the key exchange, before authentication, so not one byte of a file
leaves: errors.HostKeyError, permanent), only the configured client key is offered (no
agent, no ~/.ssh), one connection is opened on first use, reused, and dropped as soon as
its state cannot be trusted. `SftpClient.error` is the one place where paramiko's and the
OS's errors become TransportErrors.

The delivery adapter (sftp.py) publishes through `SftpFolder`, upload.py's RemoteFolder
over a session; the receiving side (receive/drops.py) pulls with `list_files`, `download`,
`remove` and `upload_bytes`. Names are plain basenames: a server cannot steer us out of a folder.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import logging
import posixpath
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, cast

import paramiko
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_INIT,
    CMD_NAME,
    CMD_OPEN,
    CMD_OPENDIR,
    CMD_READDIR,
    CMD_REMOVE,
    CMD_STATUS,
    CMD_VERSION,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTPError,
    int64,
)

from ..core import keyfiles
from ..core.errors import CertificateError, HostKeyError, TransportError
from ..core.log import get as get_logger
from ..testing import faults
from .upload import Entry, Source, put

# paramiko logs every transport event and a traceback per failed connection; ours say it once, without noise.
logging.getLogger("paramiko").setLevel(logging.WARNING)

DEFAULT_PORT = 22
DEFAULT_CONNECT_TIMEOUT = 20.0
DEFAULT_TIMEOUT = 60.0
CHUNK = 1 << 20
# Pipelined write requests in flight before their statuses are collected: enough to fill a
# long link, few enough that a refused write is noticed early.
WRITE_WINDOW = 64
WRITE_FLAGS = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC
# A WRITE's framing around its data: length, type, request id, handle length, offset, data length.
WRITE_FRAMING = 4 + 1 + 4 + 4 + 8 + 4
# What paramiko's channel keeps of each SSH packet for itself (Channel._wait_for_send_window).
CHANNEL_RESERVE = 64
MAX_WRITE = 32768  # what every SFTP server takes in one WRITE (paramiko's own size)
# The most data one WRITE carries when the server says it takes more (limits@openssh.com; OpenSSH
# takes 255 KiB): a file then costs a few times fewer requests and answers, each of which is
# Python on both sides. The bytes in flight stay those of WRITE_WINDOW writes of MAX_WRITE.
LARGE_WRITE = 256 * 1024
LIMITS = "limits@openssh.com"
# The errors of a link that died (server restart, idle timeout), as opposed to an SFTP status.
LINK_ERRORS = (paramiko.SSHException, EOFError, ConnectionError)


def key_fingerprint(key: paramiko.PKey) -> str:
    """`SHA256:...`, as `ssh-keygen -l` and the partner's own tools print it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def _raw(sftp: paramiko.SFTPClient) -> Any:
    """paramiko's request layer, which its type stubs leave out (the listing and write statuses need it)."""
    return sftp


def listdir_attr(sftp: paramiko.SFTPClient, path: str) -> list[paramiko.SFTPAttributes]:
    """A folder's entries, whatever bytes their names hold.

    paramiko's own listdir_attr decodes every name as strict UTF-8, so one name that is not
    UTF-8 fails the whole listing and every good file behind it waits. Here such a name comes
    back surrogate-escaped, one entry the caller sets aside (fsutil.storable_name), and the
    rest of the folder is read. Same requests as paramiko's (OPENDIR, READDIR until EOF, CLOSE).
    """
    raw = _raw(sftp)
    t, msg = raw._request(CMD_OPENDIR, raw._adjust_cwd(path))
    if t != CMD_HANDLE:
        raise SFTPError("Expected handle")
    handle = msg.get_binary()
    entries = []
    try:
        while True:
            try:
                t, msg = raw._request(CMD_READDIR, handle)
            except EOFError:
                break
            if t != CMD_NAME:
                raise SFTPError("Expected name response")
            for _ in range(msg.get_int()):
                filename = msg.get_string().decode("utf-8", "surrogateescape")
                longname = msg.get_string().decode("utf-8", "replace")
                attr = paramiko.SFTPAttributes._from_msg(msg, filename, longname)  # type: ignore[attr-defined]
                if filename not in (".", ".."):
                    entries.append(attr)
    finally:
        raw._request(CMD_CLOSE, handle)
    return entries


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file of a remote listing (the receiving side's pull)."""

    name: str
    size: int
    mtime: int


class _Pins:
    """The keys a known_hosts file pins, read once per version of the file, looked up once per name.

    A national installation pins about 100 partners in one file. paramiko's own
    `load_host_keys` parses every line (and builds every key) at each connection, then matches
    the name against every entry (an HMAC per hashed one): quadratic in the partners, about a
    tenth of a night's CPU. The file is read again as soon as it changes (inode, size or mtime),
    so an operator's edit counts from the next connection, as before.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, tuple[tuple[int, int, int], paramiko.HostKeys, dict[str, dict[str, paramiko.PKey]]]] = {}

    def lookup(self, known_hosts: Path, name: str) -> dict[str, paramiko.PKey]:
        """{key type: key} pinned for `name` (paramiko's `[host]:port` form off port 22); {} for none."""
        st = known_hosts.stat()
        version = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._files.get(str(known_hosts))
            if cached is None or cached[0] != version:
                cached = self._files[str(known_hosts)] = (version, paramiko.HostKeys(str(known_hosts)), {})
            _version, host_keys, found = cached
            if name not in found:
                entry = host_keys.lookup(name)
                found[name] = dict(entry) if entry is not None else {}
            return found[name]


PINS = _Pins()


def hostkey_name(host: str, port: int) -> str:
    """How paramiko (and OpenSSH) name a server in known_hosts."""
    return host if port == DEFAULT_PORT else f"[{host}]:{port}"


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, hostname: str, key: paramiko.PKey):
        super().__init__(f"Server {hostname!r} not found in known_hosts")
        self.key = key


class _PinnedOnly(paramiko.RejectPolicy):
    """RejectPolicy, keeping the key the server offered so the operator can compare it out of band."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        raise _UnknownHostKey(hostname, key)


class _GcmFirst(paramiko.Transport):
    """paramiko's transport, offering AES-GCM before AES-CTR, and waking less often when idle.

    paramiko lists aes*-ctr first and pairs it with HMAC-SHA2: two passes over every byte on
    each side. AES-GCM authenticates as it encrypts (OpenSSH has offered it since 6.2), which
    costs a fifth to a third less CPU per byte here, on both ends. A server that does
    not offer it still gets CTR: only the order changes, nothing weaker is added.
    """

    _offered: tuple[str, ...] = vars(paramiko.Transport)["_preferred_ciphers"]  # private in the stubs
    _preferred_ciphers = (
        *(c for c in _offered if c.endswith("-gcm@openssh.com")),
        *(c for c in _offered if not c.endswith("-gcm@openssh.com")),
    )
    # How often the transport's reading thread wakes when its socket is quiet, to see whether it was
    # closed: paramiko's 0.1 s, times a hundred partners connected for the whole run, was thousands
    # of wake-ups a night, each taking the run's interpreter lock. A close does not wait for it
    # (paramiko marks the packetizer closed first), and a handshake's timeouts are in seconds.
    _active_check_timeout = 0.5


class Sftp(paramiko.SFTPClient):
    """paramiko's SFTP client, plus the extensions the server announces (paramiko reads and drops them)."""

    extensions: dict[str, bytes]
    write_limit: int = 0  # the most data a WRITE may carry, when the server says (limits@openssh.com)

    def _send_version(self) -> int:
        raw = _raw(self)
        msg = paramiko.Message()
        msg.add_int(3)
        raw._send_packet(CMD_INIT, msg)
        t, data = raw._read_packet()
        if t != CMD_VERSION:
            raise SFTPError("Incompatible sftp protocol")
        reply = paramiko.Message(data)
        version: int = reply.get_int()
        self.extensions = {}
        try:
            while reply.get_remainder():
                name = reply.get_text()
                self.extensions[name] = reply.get_binary()
        except Exception:  # a malformed list only costs the extensions, not the session
            self.extensions = {}
        self.write_limit = self._ask_write_limit() if LIMITS in self.extensions else 0
        return version

    def _ask_write_limit(self) -> int:
        """How much data one WRITE may carry, as the server says (0: the protocol's 32 KiB).

        limits@openssh.com answers max-packet-length, max-read-length, max-write-length and
        max-open-handles; a WRITE must fit both its length and the packet's.
        """
        try:
            t, msg = _raw(self)._request(CMD_EXTENDED, LIMITS)
            if t != CMD_EXTENDED_REPLY:
                return 0
            packet, _read, write = msg.get_int64(), msg.get_int64(), msg.get_int64()
        except (OSError, SFTPError, paramiko.SSHException, EOFError):  # refused, or malformed: 32 KiB then
            return 0
        return max(0, min(write, packet - 1024)) if packet else max(0, write)

    def stat_or_none(self, path: str) -> paramiko.SFTPAttributes | None:
        try:
            return self.stat(path)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def remove_quiet(self, path: str) -> None:
        try:
            self.remove(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise

    def remove_unawaited(self, path: str) -> None:
        """Ask the server to remove `path` without waiting for its answer (one round trip saved).

        For names whose removal is housekeeping, whatever its status (gone already, say): the
        server handles requests on one name in the order they came, so an open or a rename of
        that name sent afterwards finds it removed, and the answer is read and dropped by paramiko
        while it waits for a later one.
        """
        raw = _raw(self)
        raw._async_request(type(None), CMD_REMOVE, raw._adjust_cwd(path))

    def read_small(self, path: str, limit: int) -> bytes | None:
        try:
            with self.open(path, "rb") as fh:
                data: bytes = fh.read(limit + 1)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        return data


class _Kept:
    """Where paramiko puts the answers it reads while waiting for another one.

    Requests sent with `type(None)` as their owner have their answers dropped in that case; ours
    must be read, whatever order they are waited for in (the opens sent ahead of a stat, say).
    """

    def __init__(self) -> None:
        self.answers: dict[int, tuple[int, Any]] = {}

    def _async_response(self, t: int, msg: Any, num: int) -> None:  # paramiko's callback name
        self.answers[num] = (t, msg)


class SftpFolder:
    """upload.RemoteFolder over one folder of an open session.

    The server answers the requests of a session in the order they came (OpenSSH's sftp-server
    does), so requests whose answers do not decide anything are sent without waiting, and those
    that do are sent together and their answers read in order: a delivery (file and marker) costs
    four round trips (stat with both opens; writes, fsyncs and sizes; two renames), not a dozen.
    """

    kind = "sftp"

    def __init__(self, sftp: Sftp, folder: str, department: str):
        self.sftp, self.folder, self.department = sftp, folder, department
        self._raw = _raw(sftp)
        self._ahead: dict[str, int] = {}  # temporary -> its OPEN request, sent ahead (open_ahead)
        self._kept = _Kept()

    def _answer(self, num: int) -> tuple[int, Any]:
        """The answer to request `num` (one of ours, sent with `self._kept`); an error status raises IOError."""
        kept = self._kept.answers.pop(num, None)
        if kept is None:
            return self._raw._read_response(num)
        t, msg = kept
        if t == CMD_STATUS:
            self._raw._convert_status(msg)
        return t, msg

    def where(self, name: str) -> str:
        return posixpath.join(self.folder, name)

    def temp_name(self, name: str) -> str:
        return f".{name}.part"

    def open_ahead(self, temps: Sequence[str]) -> None:
        for tmp in temps:
            self._ahead[tmp] = self._send_open(tmp)

    def _send_open(self, tmp: str) -> int:
        raw = self._raw
        return int(raw._async_request(self._kept, CMD_OPEN, raw._adjust_cwd(self.where(tmp)), WRITE_FLAGS,
                                      paramiko.SFTPAttributes()))

    def _release_ahead(self) -> None:
        """Close the handles opened ahead (an open file descriptor each, in sftp-server)."""
        ahead, self._ahead = list(self._ahead.values()), {}
        try:
            self._close_unawaited(self._handles(ahead))
        except (OSError, SFTPError):  # one refused: `_handles` closed the others
            pass

    def remove_temps(self, name: str) -> None:
        self._release_ahead()
        # The last removal awaited: its answer comes after all the requests above (handled in order),
        # so nothing is left pending when a delivery ends here (refused) and the session closes.
        self.sftp.remove_unawaited(self.where(self.temp_name(name)))
        try:
            self.sftp.remove(self.where(self.temp_name(f"{name}.sha256")))
        except OSError:  # gone already (the usual answer), or not ours to remove: housekeeping either way
            pass

    def stat(self, name: str) -> Entry | None:
        try:
            attrs = self.sftp.stat_or_none(self.where(name))
        except OSError as exc:
            # An error status keeps the session (SftpClient.error): what was opened ahead is let go.
            # A timeout or a lost link drops it, and its handles with it: no second wait here.
            if not isinstance(exc, TimeoutError | ConnectionError):
                self._release_ahead()
            raise
        if attrs is None:
            return None
        return Entry(attrs.st_size or 0, attrs.st_mode is None or stat.S_ISREG(attrs.st_mode))

    def read_small(self, name: str, limit: int) -> bytes | None:
        return self.sftp.read_small(self.where(name), limit)

    def sha256(self, name: str) -> str:
        h = hashlib.sha256()
        with self.sftp.open(self.where(name), "rb") as fh:
            fh.prefetch()
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                h.update(chunk)
        return h.hexdigest()

    def remove(self, name: str, *, wait: bool = True) -> None:
        if wait:
            self.sftp.remove_quiet(self.where(name))
        else:
            self.sftp.remove_unawaited(self.where(name))

    def write(self, files: Sequence[tuple[str, Source]]) -> list[Entry]:
        """All the temporaries opened at once, their bytes streamed in pipelined writes, then each
        one's fsync (OpenSSH extension: on the partner's disk before a rename publishes it), fstat
        and close sent together, and every answer that matters read in order: the write statuses
        too, which paramiko's own pipelined writes drop, so a refused write (disk full) is an
        error, not a hole in the file."""
        opens = [self._ahead.pop(tmp) if tmp in self._ahead else self._send_open(tmp) for tmp, _src in files]
        handles = self._handles(opens)
        awaited: deque[int] = deque()
        open_handles = list(handles)
        try:
            for handle, (_tmp, src) in zip(handles, files, strict=True):
                self._send_data(handle, src, awaited)
            sizes = [self._sync_size_close(h, awaited, open_handles) for h in handles]
            return self._answers(awaited, sizes)
        except BaseException:
            self._close_unawaited(open_handles)
            raise

    def _handles(self, opens: list[int]) -> list[bytes]:
        """The handles of the opens sent, each answer read (an open refused, the others are closed)."""
        handles, error = [], None
        for num in opens:
            try:
                t, msg = self._answer(num)
                if t != CMD_HANDLE:
                    raise SFTPError("Expected handle")
                handles.append(msg.get_binary())
            except (OSError, SFTPError) as exc:
                error = error or exc
        if error is not None:
            self._close_unawaited(handles)
            raise error
        return handles

    def _close_unawaited(self, handles: list[bytes]) -> None:
        for handle in handles:
            try:
                self._raw._async_request(type(None), CMD_CLOSE, handle)
            except Exception:  # the session is gone, and its handles with it
                pass

    def _write_size(self, handle: bytes) -> int:
        """The most data a WRITE carries in whole SSH channel packets (never one more, nearly empty):
        one packet's worth, or as many full packets as the server's limit allows (`LARGE_WRITE`)."""
        room = getattr(self.sftp.sock, "out_max_packet_size", 0) - CHANNEL_RESERVE
        framing = WRITE_FRAMING + len(handle)
        if room - framing < 1024:
            return MAX_WRITE
        limit = min(self.sftp.write_limit, LARGE_WRITE)
        packets = (limit + framing) // room
        if packets < 2:
            return min(MAX_WRITE, room - framing)
        return packets * room - framing

    def _send_data(self, handle: bytes, src: Source, awaited: deque[int]) -> None:
        raw, step, offset = self._raw, self._write_size(handle), 0
        window = max(4, WRITE_WINDOW * MAX_WRITE // step)  # the same bytes in flight, whatever the step
        for chunk in iter(lambda: src.read(max(1, CHUNK // step) * step), b""):
            for i in range(0, len(chunk), step):
                piece = chunk[i:i + step]
                awaited.append(raw._async_request(self._kept, CMD_WRITE, handle, int64(offset), piece))
                offset += len(piece)
                if len(awaited) > window:
                    self._answers(awaited, [], keep=window // 2)
            faults.point("sftp-uploaded")

    def _sync_size_close(self, handle: bytes, awaited: deque[int], open_handles: list[bytes]) -> int:
        """fsync, fstat, close, sent; returns the fstat's request. The close is awaited only without
        fsync: then its status is the last word on the data (a delayed write error); after an fsync
        and an fstat that checked the size, nothing it could say changes what the rename publishes."""
        raw = self._raw
        synced = "fsync@openssh.com" in self.sftp.extensions
        if synced:
            awaited.append(raw._async_request(self._kept, CMD_EXTENDED, "fsync@openssh.com", handle))
        size = raw._async_request(self._kept, CMD_FSTAT, handle)
        awaited.append(size)
        close = raw._async_request(self._kept if not synced else type(None), CMD_CLOSE, handle)
        open_handles.remove(handle)
        if not synced:
            awaited.append(close)
        return size

    def _answers(self, awaited: deque[int], sizes: list[int], keep: int = 0) -> list[Entry]:
        """Read the answers of `awaited`, oldest first, until `keep` are left: an error status raises
        IOError (paramiko's mapping); the fstats among them (`sizes`) come back as entries, in order."""
        entries = []
        while len(awaited) > keep:
            num = awaited.popleft()
            t, msg = self._answer(num)
            if num in sizes:
                if t != CMD_ATTRS:
                    raise SFTPError("Expected attributes")
                attrs = paramiko.SFTPAttributes._from_msg(msg)  # type: ignore[attr-defined]
                entries.append(Entry(attrs.st_size or 0, True))
        return entries

    def rename(self, tmp: str, final: str) -> None:
        src, dst = self.where(tmp), self.where(final)
        if "posix-rename@openssh.com" in self.sftp.extensions:
            self.sftp.posix_rename(src, dst)
        else:
            # Plain SFTP rename refuses to replace a name; we remove nothing, so a clash fails loud.
            self.sftp.rename(src, dst)


def _basename(name: str) -> str:
    if not name or "/" in name or "\\" in name or "\0" in name or name in (".", ".."):
        raise ValueError(f"refusing remote file name {name!r}")
    return name


class SftpClient:
    """One département's SFTP server; one connection, opened on first use, reused, closed by close()."""

    def __init__(
        self,
        department: str,
        *,
        host: str,
        user: str,
        key: Path,
        known_hosts: Path,
        port: int = DEFAULT_PORT,
        passphrase: bytes | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        self.department = department
        self.host, self.port, self.user = host, int(port), user
        self.key_path, self.known_hosts = Path(key), Path(known_hosts)
        self._passphrase = passphrase
        self.connect_timeout, self.timeout = float(connect_timeout), float(timeout)
        self.log = get_logger("flux-pmi.sftp")
        self._client: paramiko.SSHClient | None = None
        self._sftp_client: Sftp | None = None
        self._pkey: paramiko.PKey | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """A session is kept from an earlier call (it may have died since, unnoticed)."""
        return self._sftp_client is not None

    # -- connection --------------------------------------------------------------------------

    def load_key(self) -> paramiko.PKey:
        """The configured client key, or a permanent error: retrying cannot fix a key file."""
        if self._pkey is None:
            self._pkey = self._read_key()
        return self._pkey

    def _read_key(self) -> paramiko.PKey:
        path, d = self.key_path, self.department
        try:
            path.stat()
        except OSError as exc:
            raise TransportError(d, f"SFTP client key {path} cannot be read ({exc.strerror})", permanent=True) from exc
        try:
            keyfiles.check_key_permissions(path, "SFTP client key")  # the one rule for every key flux-pmi holds
        except CertificateError as exc:
            raise TransportError(d, str(exc), permanent=True) from None
        try:
            return paramiko.PKey.from_path(path, self._passphrase)  # type: ignore[arg-type]  # bytes work; positional: renamed in 5.0
        except (paramiko.PasswordRequiredException, TypeError) as exc:  # TypeError: cryptography's way to say it
            raise TransportError(
                d,
                f"SFTP client key {path} needs a passphrase: set key_passphrase_env or key_passphrase_file",
                permanent=True,
            ) from exc
        except (paramiko.SSHException, ValueError, OSError) as exc:
            raise TransportError(
                d,
                f"SFTP client key {path} cannot be loaded (wrong passphrase, "
                f"or not an ed25519/RSA key: {type(exc).__name__})",
                permanent=True,
            ) from exc

    def tcp(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=self.connect_timeout)

    def handshake(self, sock: socket.socket, pkey: paramiko.PKey) -> paramiko.SSHClient:
        """Key exchange, pinned host key check, then authentication. Raises paramiko's exceptions."""
        client = paramiko.SSHClient()
        try:
            # This partner's pin only, from the configured file, never ~/.ssh/known_hosts.
            name = hostkey_name(self.host, self.port)
            pinned = client.get_host_keys()
            for key_type, key in PINS.lookup(self.known_hosts, name).items():
                pinned.add(name, key_type, key)
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
                transport_factory=cast(Any, _GcmFirst),  # the stubs type the factory as a narrower protocol
            )
        except BaseException:
            client.close()
            sock.close()
            raise
        return client

    def open_sftp(self, client: paramiko.SSHClient) -> Sftp:
        transport = client.get_transport()
        assert transport is not None
        sftp = Sftp.from_transport(transport)
        assert sftp is not None
        sftp.get_channel().settimeout(self.timeout)  # type: ignore[union-attr]
        return sftp

    def session(self) -> Sftp:
        """The open session, or a new one. Errors come out as TransportError/HostKeyError."""
        if self._sftp_client is not None and self._client is not None:
            t = self._client.get_transport()
            if t is not None and t.is_active():
                return self._sftp_client
            self.drop()
        pkey = self.load_key()
        if not self.known_hosts.is_file():
            raise HostKeyError(
                self.department,
                f"no pinned host key for {self.where}: known_hosts file "
                f"{self.known_hosts} does not exist; nothing sent",
            )
        started = time.monotonic()
        try:
            client = self.handshake(self.tcp(), pkey)
        except Exception as exc:
            raise self.error(exc) from exc
        try:
            sftp = self.open_sftp(client)
        except Exception as exc:
            client.close()
            raise TransportError(
                self.department, f"SFTP subsystem refused on {self.where} ({type(exc).__name__}: {exc})"
            ) from exc
        self._client, self._sftp_client = client, sftp
        self.log.info(
            "sftp.connected",
            department=self.department,
            host=self.host,
            port=self.port,
            host_key=self.server_key_fingerprint(client),
            cipher=self.cipher(client),
            seconds=round(time.monotonic() - started, 3),
        )
        return sftp

    @staticmethod
    def server_key_fingerprint(client: paramiko.SSHClient) -> str:
        transport = client.get_transport()
        key = transport.get_remote_server_key() if transport else None
        return key_fingerprint(key) if key else ""

    @staticmethod
    def cipher(client: paramiko.SSHClient) -> str:
        """The cipher negotiated for what we send."""
        transport = client.get_transport()
        return str(getattr(transport, "local_cipher", "")) if transport else ""

    def drop(self) -> None:
        """Forget the connection: after a timeout or a dropped link its state cannot be trusted."""
        sftp, client = self._sftp_client, self._client
        self._sftp_client, self._client = None, None
        for thing in (sftp, client):
            try:
                if thing is not None:
                    thing.close()
            except Exception:  # closing a dead session may fail; there is nothing left to release
                pass

    def close(self) -> None:
        self.drop()

    # -- the one error mapping ------------------------------------------------------------------

    def error(self, exc: BaseException, doing: str | None = None) -> TransportError:
        """paramiko's and the OS's errors, said for the operator as a TransportError (or HostKeyError).

        Without `doing`, `exc` came while connecting (before the session existed); with it, from
        inside the session: an SFTP status keeps the session, anything else drops it.
        """
        if isinstance(exc, TransportError):
            return exc
        if doing is None:
            return self._connect_error(exc)
        if not isinstance(exc, OSError) or isinstance(exc, TimeoutError | ConnectionError):
            self.drop()
        return self._session_error(exc, doing)

    def _host_key_error(self, exc: paramiko.BadHostKeyException | _UnknownHostKey) -> HostKeyError:
        if isinstance(exc, paramiko.BadHostKeyException):
            pinned, offered = exc.expected_key, exc.key
            msg = (
                f"host key CHANGED for {self.where}: pinned {pinned.get_name()} {key_fingerprint(pinned)} "
                f"({self.known_hosts}), offered {offered.get_name()} {key_fingerprint(offered)}; refused, "
                "nothing sent. Confirm the new key with the partner out of band before changing the pin"
            )
            self.log.error("sftp.host_key_changed", department=self.department, host=self.host, port=self.port,
                           pinned=key_fingerprint(pinned), offered=key_fingerprint(offered))
            return HostKeyError(self.department, msg)
        msg = (
            f"unknown host key for {self.where}: {self.known_hosts} pins no key for it, the server offered "
            f"{exc.key.get_name()} {key_fingerprint(exc.key)}; refused, nothing sent. Pin it only after "
            "checking that fingerprint with the partner"
        )
        self.log.error("sftp.host_key_unknown", department=self.department, host=self.host, port=self.port,
                       offered=key_fingerprint(exc.key))
        return HostKeyError(self.department, msg)

    def _connect_error(self, exc: BaseException) -> TransportError:
        d, where = self.department, self.where
        if isinstance(exc, paramiko.BadHostKeyException | _UnknownHostKey):
            return self._host_key_error(exc)
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

    def _session_error(self, exc: BaseException, doing: str) -> TransportError:
        d, where = self.department, self.where
        if isinstance(exc, TimeoutError):
            return TransportError(d, f"{doing} on {where}: no answer within {self.timeout:g}s")
        if isinstance(exc, LINK_ERRORS):
            return TransportError(d, f"{doing} on {where}: connection lost ({type(exc).__name__})")
        if not isinstance(exc, OSError):
            return TransportError(d, f"{doing} on {where}: {type(exc).__name__}: {exc}")
        if exc.errno == errno.EACCES:
            return TransportError(d, f"{doing} on {where}: permission denied", permanent=True)
        if exc.errno == errno.ENOENT:
            return TransportError(
                d, f"{doing} on {where}: no such file or directory (is the remote folder there?)", permanent=True
            )
        # SSH_FX_FAILURE is all OpenSSH says for ENOSPC, EDQUOT, EFBIG: worth another try later.
        return TransportError(
            d,
            f"{doing} on {where}: the server refused the write or the operation "
            f"({exc.strerror or exc}); disk full or quota reached?",
        )

    # -- the receiving side's pull -------------------------------------------------------------------

    def folder(self, folder: str) -> SftpFolder:
        return SftpFolder(self.session(), folder, self.department)

    def list_files(self, folder: str) -> list[RemoteFile]:
        """The regular files of `folder` (hidden ones, i.e. uploads in progress, left out), by name."""
        sftp = self.session()
        try:
            entries = listdir_attr(sftp, folder)
        except Exception as exc:
            raise self.error(exc, f"listing {folder}") from exc
        out = [
            RemoteFile(a.filename, a.st_size or 0, int(a.st_mtime or 0))
            for a in entries
            if not a.filename.startswith(".") and a.st_mode is not None and stat.S_ISREG(a.st_mode)
        ]
        return sorted(out, key=lambda f: f.name)

    def download(self, folder: str, name: str, max_bytes: int) -> bytes:
        """The whole file, read into memory; at most `max_bytes` + 1 bytes are read, so a caller
        that finds more than `max_bytes` knows it is over its cap without fetching the rest."""
        path = posixpath.join(folder, _basename(name))
        sftp = self.session()
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
            raise self.error(exc, f"reading {path}") from exc

    def remove(self, folder: str, name: str) -> None:
        """Remove a file; one already gone is not an error."""
        path = posixpath.join(folder, _basename(name))
        sftp = self.session()
        try:
            sftp.remove_quiet(path)
        except Exception as exc:
            raise self.error(exc, f"removing {path}") from exc

    def upload_bytes(self, folder: str, name: str, data: bytes) -> None:
        """Write `data` as `folder/name`: hidden temporary, size and digest checked, renamed into place
        (replacing an older file of that name, so that writing the same thing twice is harmless)."""
        name = _basename(name)
        fs = self.folder(folder)
        try:
            if "posix-rename@openssh.com" not in fs.sftp.extensions:
                fs.remove(name)  # a plain SFTP rename refuses to replace a name
            put(fs, io.BytesIO(data), name, len(data), hashlib.sha256(data).hexdigest())
        except TransportError:
            raise
        except Exception as exc:
            raise self.error(exc, f"writing {fs.where(name)}") from exc
