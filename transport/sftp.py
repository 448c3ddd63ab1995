"""SFTP delivery to a département's own server, with its host key pinned.

Many départements run an SFTP server for the files they receive. This adapter puts
each sealed file there the way the local drop does, through upload.py's one routine:
under a hidden temporary name, checked, renamed into place, then `<file>.sha256` (the
`sha256sum` line) written last as the completion marker. A receiver listing the folder
never sees a partial file under its final name, and a rerun after a crash finds what is
already there and sends nothing twice.

The connection (pinned host key, client key, reuse, the one error mapping) lives in
sftp_client.py, which the receiving side (receive/drops.py) uses too: this module only delivers.
"""

from __future__ import annotations

import posixpath
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import paramiko
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random

from ..config.settings import Department, Settings
from ..config.transports import SftpConfig
from ..core.errors import ArchiveError, ConfigError, HostKeyError, TransportError
from ..core.fsutil import storable_name
from .base import AckFile, CheckResult, Delivery, Receipt, Transport
from .sftp_client import (
    DEFAULT_CONNECT_TIMEOUT,
    LINK_ERRORS,
    Sftp,
    SftpClient,
    SftpFolder,
    listdir_attr,
)
from .upload import publish

MAX_ACK_BYTES = 1 << 20
CHECK_PREFIX = ".flux-pmi-check-"
# A kept connection found dead is replaced once, after a short random pause: partners restarting
# their server see our reconnections spread, not a burst. Not a retry of the delivery (night.py's).
RECONNECT_JITTER = 0.5


class _StaleSession(Exception):
    """The kept connection died while idle (server restart, idle timeout): start again on a fresh one."""


class SftpTransport(Transport):
    """One département's SFTP server, for delivery: files in, acks back, and a `check()`."""

    name = "sftp"

    def __init__(
        self,
        department: str,
        *,
        directories: dict[str, Any],
        ack_directory: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        **connection: Any,
    ):
        """`connection`: SftpClient's keywords (host, port, user, key, known_hosts, passphrase, timeouts)."""
        self.department = department
        self.client = SftpClient(department, **connection)
        self.directories = dict(directories)
        self.ack_directory = ack_directory
        self.log = self.client.log
        self._sleep = sleep

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
    def known_hosts(self) -> Path:
        return self.client.known_hosts

    @property
    def where(self) -> str:
        return self.client.where

    def close(self) -> None:
        self.client.close()

    # -- delivery -----------------------------------------------------------------------------

    def deliver(self, item: Delivery) -> Receipt:
        folder = self.directories.get(item.flow)
        if not isinstance(folder, str) or not folder:
            raise TransportError(
                self.department,
                f"no remote directory configured for flow {item.flow} (transport.directories)",
                permanent=True,
            )
        if "/" in item.file_name or item.file_name.startswith("."):
            raise TransportError(self.department, f"refusing file name {item.file_name!r}", permanent=True)
        try:
            src = item.path.open("rb")
        except OSError as exc:
            raise ArchiveError(f"{item.file_name}: sealed file unreadable in the archive ({exc.strerror})") from exc
        retrying = Retrying(
            stop=stop_after_attempt(2),
            wait=wait_random(0, RECONNECT_JITTER),
            retry=retry_if_exception_type(_StaleSession),
            sleep=self._sleep,
            before_sleep=self._reconnecting,
            reraise=True,
        )
        with src:
            try:
                return retrying(self._attempt, item, folder, src)
            except _StaleSession as exc:  # only a kept session is retried, and the second one is fresh
                raise self.client.error(exc.__cause__ or exc, f"delivering {item.file_name}") from exc

    def _reconnecting(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        cause = exc.__cause__ if exc is not None else None
        self.log.info("sftp.reconnect", department=self.department, reason=type(cause).__name__)

    def _attempt(self, item: Delivery, folder: str, src: BinaryIO) -> Receipt:
        reused = self.client.connected
        sftp = self.client.session()
        src.seek(0)
        started = time.monotonic()
        try:
            receipt = publish(SftpFolder(sftp, folder, self.department), item, src)
        except LINK_ERRORS as exc:
            if not reused:
                raise self.client.error(exc, f"delivering {item.file_name}") from exc
            self.client.drop()
            raise _StaleSession(type(exc).__name__) from exc
        except TransportError:
            raise
        except Exception as exc:
            raise self.client.error(exc, f"delivering {item.file_name}") from exc
        if receipt.already_there:
            self.log.debug("sftp.already_there", department=self.department, file=item.file_name)
        else:
            self.log.debug("sftp.delivered", department=self.department, file=item.file_name, bytes=item.size,
                           seconds=round(time.monotonic() - started, 3))
        return receipt

    # -- acks ------------------------------------------------------------------------------------

    def fetch_acks(self) -> list[AckFile]:
        if not self.ack_directory:
            return []
        sftp = self.client.session()
        try:
            return self._read_acks(sftp, self.ack_directory)
        except Exception as exc:
            raise self.client.error(exc, f"reading acks in {self.ack_directory}") from exc

    def _read_acks(self, sftp: Sftp, folder: str) -> list[AckFile]:
        out = []
        for a in sorted(listdir_attr(sftp, folder), key=lambda a: a.filename):
            if a.filename.startswith(".") or a.st_mode is None or not stat.S_ISREG(a.st_mode):
                continue
            if not storable_name(a.filename):  # not ours: an ack is named after our file
                self.log.warning("sftp.ack_name_unusable", department=self.department)
                continue
            data = None
            if (a.st_size or 0) <= MAX_ACK_BYTES:
                data = sftp.read_small(posixpath.join(folder, a.filename), MAX_ACK_BYTES)
                if data is None:
                    continue  # taken away between the listing and the read
            if data is None or len(data) > MAX_ACK_BYTES:
                self.log.warning("sftp.ack_too_big", department=self.department, file=a.filename,
                                 bytes=a.st_size, limit=MAX_ACK_BYTES)
                continue
            out.append(AckFile(self.department, a.filename, data))
        return out

    def remove_ack(self, name: str) -> None:
        if not self.ack_directory:
            return
        if not name or "/" in name or name.startswith("."):
            raise TransportError(self.department, f"refusing to remove ack {name!r}", permanent=True)
        sftp = self.client.session()
        try:
            sftp.remove_quiet(posixpath.join(self.ack_directory, name))
        except Exception as exc:
            raise self.client.error(exc, f"removing ack {name}") from exc

    # -- diagnostics (base.Checkable) ------------------------------------------------------------

    def check(self) -> list[CheckResult]:
        """Connection, pinned host key, authentication, and each folder writable; no data is sent."""
        results: list[CheckResult] = []

        def add(ok: bool, what: str, detail: str = "") -> None:
            results.append(CheckResult(self.department, ok, what, detail))

        client = self._check_connect(add)
        if client is None:
            return results
        try:
            add(True, f"host key of {self.where}", f"matches the pinned key {self.client.server_key_fingerprint(client)}")
            add(True, f"authentication as {self.client.user}")
            try:
                sftp = self.client.open_sftp(client)
            except Exception as exc:
                add(False, "SFTP subsystem", f"{type(exc).__name__}: {exc}")
                return results
            try:
                self._check_folders(sftp, add)
            finally:
                sftp.close()
        finally:
            client.close()
        return results

    def _check_connect(self, add: Callable[..., None]) -> paramiko.SSHClient | None:
        """Key, TCP, host key and login, each said as it goes; the logged-in client, or None."""
        c = self.client
        try:
            pkey = c.load_key()
        except TransportError as exc:
            add(False, "SFTP client key", exc.reason)
            return None
        add(True, "SFTP client key", f"{c.key_path} ({pkey.get_name()})")
        if not c.known_hosts.is_file():
            add(False, f"host key of {self.where}", f"known_hosts file {c.known_hosts} does not exist")
            return None
        try:
            sock = c.tcp()
        except OSError as exc:
            add(False, f"TCP connection to {self.where}", c.error(exc).reason)
            return None
        add(True, f"TCP connection to {self.where}")
        try:
            return c.handshake(sock, pkey)
        except paramiko.AuthenticationException as exc:
            add(True, f"host key of {self.where}", "matches the pinned key")
            add(False, f"authentication as {c.user}", c.error(exc).reason)
        except Exception as exc:
            err = c.error(exc)
            hostkey = isinstance(err, HostKeyError)
            add(False, f"host key of {self.where}" if hostkey else f"SSH session with {self.where}", err.reason)
        return None

    def _check_folders(self, sftp: Sftp, add: Callable[..., None]) -> None:
        for flow, folder in sorted(self.directories.items()):
            add(*self._check_writable(sftp, flow, folder))
        for flow in ("DSG", "SGR", "GRO"):
            if flow not in self.directories:
                add(False, f"{flow} directory", "none configured (transport.directories)")
        if self.ack_directory:
            add(*self._check_readable(sftp, self.ack_directory))

    @staticmethod
    def _probe(what: str, failed: str, action: Callable[[], tuple[bool, str]]) -> tuple[bool, str, str]:
        try:
            ok, detail = action()
            return ok, what, detail
        except (TimeoutError, paramiko.SSHException, EOFError) as exc:
            return False, what, f"no answer ({type(exc).__name__})"
        except OSError as exc:
            return False, what, f"{failed} ({exc.strerror or exc})"

    def _check_writable(self, sftp: Sftp, flow: str, folder: Any) -> tuple[bool, str, str]:
        if not isinstance(folder, str) or not folder:
            return False, f"{flow} directory", "not a path (transport.directories)"

        def probe() -> tuple[bool, str]:
            attrs = sftp.stat_or_none(folder)
            if attrs is None:
                return False, "does not exist on the server"
            if attrs.st_mode is not None and not stat.S_ISDIR(attrs.st_mode):
                return False, "is not a directory"
            # A zero-byte file, created and deleted: proves the right to write without sending any data.
            path = posixpath.join(folder, CHECK_PREFIX + secrets.token_hex(8))
            sftp.open(path, "wb").close()
            sftp.remove(path)
            return True, "exists and is writable"

        return self._probe(f"{flow} directory {folder}", "not writable", probe)

    def _check_readable(self, sftp: Sftp, folder: str) -> tuple[bool, str, str]:
        def probe() -> tuple[bool, str]:
            sftp.listdir(folder)
            return True, "readable"

        return self._probe(f"ack directory {folder}", "not readable", probe)
