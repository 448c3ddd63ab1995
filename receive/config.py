"""Loads and validates a département's `receive` configuration (DEPT.toml, docs/receive.md).

The receiving side runs at the département, not at the CNAF: it has its own file, with
its own key, the sender certificate(s) it trusts, where its files arrive (a local folder
or its SFTP server), where the results go and how long they are kept. The rules are the
sender's (config/settings.py): every problem names the file, the key and what is
expected; an unknown key is an error, because a typo must not silently disable a
setting; relative paths are relative to the TOML's folder; a passphrase never sits in
the TOML (`key_passphrase_env` or an owner-only `key_passphrase_file`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.settings import (
    DEPARTMENT_CODE_RE,
    FLOWS,
    _get,
    _known,
    _read_toml,
    _secret,
    _secret_from_env,
    _secret_from_file,
    _url,
    load_registry,
)
from ..core.errors import ConfigError

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "FORMATS",
    "HubeeDropConfig",
    "LocalDropConfig",
    "ReceiveConfig",
    "SftpDropConfig",
    "load_receive",
]

FORMATS = ("csv", "parquet")
# The sender splits a flow above 64 MiB of plain content; a sealed copy is a little larger
# (CMS framing). Twice that leaves room and still stops a runaway file before it is read.
DEFAULT_MAX_FILE_BYTES = 128 * 1024 * 1024
DEFAULT_POLL_SECONDS = 60.0
DEFAULT_RETENTION_DAYS = 90
# The keys of receive.extract.ZipLimits: checked here so a typo is a config error, built there.
ZIP_LIMIT_KEYS = {
    "max_members": int,
    "max_total_bytes": int,
    "max_member_bytes": int,
    "max_ratio": (int, float),
}


@dataclass(frozen=True, slots=True)
class LocalDropConfig:
    """A folder the sender (or a relay) fills: `<path>/<file>.p7m` + `.sha256`, acks in `<path>/acks/`."""

    path: Path
    type: str = "local"


@dataclass(frozen=True, slots=True)
class SftpDropConfig:
    """The département's SFTP server, pulled from with its host key pinned."""

    host: str
    port: int
    user: str
    key: Path
    known_hosts: Path
    directories: dict[str, str]  # flow -> remote folder the sender delivers into
    ack_directory: str
    key_passphrase: bytes | None = field(default=None, repr=False)
    connect_timeout: float = 20.0
    timeout: float = 60.0
    type: str = "sftp"


@dataclass(frozen=True, slots=True)
class HubeeDropConfig:
    """HubEE, the département's information system as recipient (scope SI): notifications, downloads, statuses."""

    api_url: str
    token_url: str
    client_id: str
    client_secret: bytes = field(repr=False)
    timeout: float = 60.0
    # Filled in from [limits] max_file_bytes: a case whose attachment is larger is refused unread.
    max_file_bytes: int = 0
    type: str = "hubee"


DropConfig = LocalDropConfig | SftpDropConfig | HubeeDropConfig


@dataclass(frozen=True, slots=True)
class ReceiveConfig:
    file: Path
    base: Path
    department: str
    # None when the département only takes unsealed HubEE files (accept_unsealed, no key yet).
    certificate: Path | None
    key: Path | None
    key_passphrase: bytes | None = field(repr=False)
    trusted_senders: tuple[Path, ...]
    accept_unsealed: bool
    drop: DropConfig
    poll_seconds: float
    output_dir: Path
    formats: tuple[str, ...]
    ledger: Path
    retention_days: int
    max_file_bytes: int
    zip_limits: dict[str, Any]  # keyword arguments for receive.extract.ZipLimits

    @property
    def sealed(self) -> bool:
        """Whether this département can open sealed (.p7m) files at all."""
        return self.key is not None


@functools.cache
def _registry_codes() -> frozenset[str]:
    # Read once per process: `--config-dir` loads a hundred of these files.
    return frozenset(load_registry())


def _resolve(base: Path, value: str) -> Path:
    """Relative to the TOML's folder, normalised (`../drop/035`, not `receive/../drop/035`)."""
    return Path(os.path.normpath(base / Path(value).expanduser()))


def load_receive(path: str | Path, *, check_files: bool = True) -> ReceiveConfig:
    file = Path(path).resolve()
    raw = _read_toml(file)
    base = file.parent
    _known(file, "", raw, {"department", "drop", "output", "ledger", "retention", "limits"})

    d = raw.get("department")
    if d is None:
        raise ConfigError(
            file, "department", "a [department] table with code, certificate, key, trusted_senders"
        )
    _known(
        file,
        "department",
        d,
        {
            "code",
            "certificate",
            "key",
            "key_passphrase_env",
            "key_passphrase_file",
            "trusted_senders",
            "accept_unsealed",
        },
    )
    code = _get(file, "department", d, "code", str)
    if not DEPARTMENT_CODE_RE.match(code) or code not in _registry_codes():
        raise ConfigError(file, "department.code", "a département code on 3 characters (e.g. 035, 02A, 971)")
    accept_unsealed = _get(file, "department", d, "accept_unsealed", bool, False)

    crypto = [k for k in ("certificate", "key", "trusted_senders") if k in d]
    if crypto and len(crypto) < 3:
        missing = next(k for k in ("certificate", "key", "trusted_senders") if k not in d)
        raise ConfigError(
            file, f"department.{missing}", "certificate, key and trusted_senders together (one is missing)"
        )
    if not crypto and not accept_unsealed:
        raise ConfigError(
            file,
            "department.certificate",
            "the département's certificate, key and trusted_senders (or accept_unsealed = true)",
        )

    def existing(key: str, value: Path) -> Path:
        if check_files and not value.is_file():
            raise ConfigError(file, key, f"an existing file ({value} not found)")
        return value

    certificate = key = None
    senders: tuple[Path, ...] = ()
    if crypto:
        certificate = existing(
            "department.certificate", _resolve(base, _get(file, "department", d, "certificate", str))
        )
        key = existing("department.key", _resolve(base, _get(file, "department", d, "key", str)))
        listed = _get(file, "department", d, "trusted_senders", list)
        if not listed or not all(isinstance(v, str) and v for v in listed):
            raise ConfigError(
                file, "department.trusted_senders", "a non-empty list of sender certificate files (PEM)"
            )
        senders = tuple(existing("department.trusted_senders", _resolve(base, v)) for v in listed)
    passphrase = _secret(file, "department", d, "key", base)

    drop, poll = _drop(file, raw.get("drop"), base, check_files)

    out = raw.get("output")
    if out is None:
        raise ConfigError(file, "output", "an [output] table with dir")
    _known(file, "output", out, {"dir", "formats"})
    output_dir = _resolve(base, _get(file, "output", out, "dir", str))
    formats = _get(file, "output", out, "formats", list, list(FORMATS))
    if (
        not formats
        or not all(isinstance(f, str) and f in FORMATS for f in formats)
        or len(set(formats)) < len(formats)
    ):
        raise ConfigError(file, "output.formats", f"a non-empty list drawn from {', '.join(FORMATS)}")

    led = raw.get("ledger", {})
    _known(file, "ledger", led, {"path"})
    ledger = (
        _resolve(base, _get(file, "ledger", led, "path", str))
        if "path" in led
        else output_dir / "ledger.sqlite"
    )

    ret = raw.get("retention", {})
    _known(file, "retention", ret, {"days"})
    days = _get(file, "retention", ret, "days", int, DEFAULT_RETENTION_DAYS, positive=True)

    lim = raw.get("limits", {})
    _known(file, "limits", lim, {"max_file_bytes", *ZIP_LIMIT_KEYS})
    max_file_bytes = _get(file, "limits", lim, "max_file_bytes", int, DEFAULT_MAX_FILE_BYTES, positive=True)
    zip_limits = {
        k: _get(file, "limits", lim, k, ZIP_LIMIT_KEYS[k], positive=True) for k in ZIP_LIMIT_KEYS if k in lim
    }

    if isinstance(drop, HubeeDropConfig):
        drop = dataclasses.replace(drop, max_file_bytes=max_file_bytes)

    return ReceiveConfig(
        file=file,
        base=base,
        department=code,
        certificate=certificate,
        key=key,
        key_passphrase=passphrase,
        trusted_senders=senders,
        accept_unsealed=accept_unsealed,
        drop=drop,
        poll_seconds=poll,
        output_dir=output_dir,
        formats=tuple(formats),
        ledger=ledger,
        retention_days=days,
        max_file_bytes=max_file_bytes,
        zip_limits=zip_limits,
    )


def _drop(file: Path, table: Any, base: Path, check_files: bool) -> tuple[DropConfig, float]:
    if table is None:
        raise ConfigError(file, "drop", 'a [drop] table with type = "local", "sftp" or "hubee"')
    if not isinstance(table, dict):
        raise ConfigError(file, "drop", "a table")
    kind = _get(file, "drop", table, "type", str)
    poll = float(_get(file, "drop", table, "poll_seconds", (int, float), DEFAULT_POLL_SECONDS, positive=True))
    if kind == "local":
        _known(file, "drop", table, {"type", "path", "poll_seconds"})
        return LocalDropConfig(_resolve(base, _get(file, "drop", table, "path", str))), poll
    if kind == "hubee":
        return _hubee_drop(file, table, base), poll
    if kind != "sftp":
        raise ConfigError(file, "drop.type", '"local", "sftp" or "hubee"')
    _known(
        file,
        "drop",
        table,
        {
            "type",
            "poll_seconds",
            "host",
            "port",
            "user",
            "key",
            "key_passphrase_env",
            "key_passphrase_file",
            "known_hosts",
            "directory",
            "directories",
            "ack_directory",
            "connect_timeout",
            "timeout",
        },
    )
    port = _get(file, "drop", table, "port", int, 22)
    if not 0 < port < 65536:
        raise ConfigError(file, "drop.port", "a TCP port (1-65535)")
    if ("directory" in table) == ("directories" in table):
        raise ConfigError(
            file,
            "drop.directories",
            'either directory = "/in" or directories = {DSG = ..., SGR = ..., GRO = ...}',
        )
    if "directory" in table:
        one = _get(file, "drop", table, "directory", str)
        if not one.strip():
            raise ConfigError(file, "drop.directory", "a remote folder path")
        directories = dict.fromkeys(FLOWS, one)
    else:
        directories = _get(file, "drop", table, "directories", dict)
        for flow, folder in directories.items():
            if flow not in FLOWS:
                raise ConfigError(file, f"drop.directories.{flow}", f"a flow among {', '.join(FLOWS)}")
            if not isinstance(folder, str) or not folder.strip():
                raise ConfigError(file, f"drop.directories.{flow}", "a remote folder path")
        if not directories:
            raise ConfigError(file, "drop.directories", "at least one flow's remote folder")
    ack_directory = _get(file, "drop", table, "ack_directory", str)
    if not ack_directory.strip():
        raise ConfigError(file, "drop.ack_directory", "a remote folder path")
    known_hosts = _resolve(base, _get(file, "drop", table, "known_hosts", str))
    key = _resolve(base, _get(file, "drop", table, "key", str))
    if check_files:
        for name, value in (("known_hosts", known_hosts), ("key", key)):
            if not value.is_file():
                raise ConfigError(file, f"drop.{name}", f"an existing file ({value} not found)")
    timeouts = {
        k: float(_get(file, "drop", table, k, (int, float), positive=True))
        for k in ("connect_timeout", "timeout")
        if k in table
    }
    return (
        SftpDropConfig(
            host=_get(file, "drop", table, "host", str),
            port=port,
            user=_get(file, "drop", table, "user", str),
            key=key,
            known_hosts=known_hosts,
            directories=dict(directories),
            ack_directory=ack_directory,
            key_passphrase=_secret(file, "drop", table, "key", base),
            **timeouts,
        ),
        poll,
    )


def _hubee_drop(file: Path, table: dict[str, Any], base: Path) -> HubeeDropConfig:
    """`[drop] type = "hubee"`: the département's SI client (scope SI); the secret via env or an owner-only file."""
    _known(
        file,
        "drop",
        table,
        {
            "type",
            "poll_seconds",
            "api_url",
            "token_url",
            "client_id",
            "client_secret_env",
            "client_secret_file",
            "timeout",
        },
    )
    client_id = _get(file, "drop", table, "client_id", str).strip()
    if not client_id:
        raise ConfigError(file, "drop.client_id", "the département's HubEE client id (scope SI)")
    if ("client_secret_env" in table) == ("client_secret_file" in table):
        raise ConfigError(
            file,
            "drop.client_secret_env",
            "one of client_secret_env or client_secret_file (the secret never sits here)",
        )
    if "client_secret_env" in table:
        secret = _secret_from_env(
            file, "drop.client_secret_env", _get(file, "drop", table, "client_secret_env", str)
        )
    else:
        ref = _get(file, "drop", table, "client_secret_file", str)
        secret = _secret_from_file(file, "drop.client_secret_file", _resolve(base, ref))
    if not secret:
        raise ConfigError(file, "drop.client_secret_env", "a non-empty client secret")
    timeout = float(_get(file, "drop", table, "timeout", (int, float), 60.0, positive=True))
    return HubeeDropConfig(
        api_url=_url(file, "drop.api_url", _get(file, "drop", table, "api_url", str)),
        token_url=_url(file, "drop.token_url", _get(file, "drop", table, "token_url", str)),
        client_id=client_id,
        client_secret=secret,
        timeout=timeout,
    )
