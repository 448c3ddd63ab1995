"""The receiving side's configuration: one TOML file per département, validated once.

A département's IT team runs `flux-pmi receive` with its own key, its certificate and the
CNAF's, and nothing of the sending side's installation. Its file says where the files arrive
(a local folder, an SFTP server or HubEE), where the outputs and the ledger go, how long they
are kept and how large an input may be. It is checked as the sending side's config is
(pydantic, through config/validation.py), so a mistake names the file and the key, before
anything is read from the drop.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    Field,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    ValidationInfo,
    model_validator,
)

from ..config.settings import DEPARTMENT_CODE_RE, FLOWS, load_registry
from ..config.transports import check_directories
from ..config.validation import (
    FilePath,
    Strict,
    context,
    existing,
    https_url,
    invalid,
    passphrase,
    read_toml,
    resolve,
    secret_from_env,
    secret_from_file,
    validate,
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
# The sender splits a flow above 16 MiB of plain content by default (its operator may raise that,
# to 64 MiB say); a sealed copy is a little larger (CMS framing). 128 MiB leaves room and still
# stops a runaway file before it is read.
DEFAULT_MAX_FILE_BYTES = 128 * 1024 * 1024
DEFAULT_POLL_SECONDS = 60.0
DEFAULT_RETENTION_DAYS = 90


class _Drop(Strict):
    poll_seconds: PositiveFloat = DEFAULT_POLL_SECONDS


class LocalDropConfig(_Drop):
    """A folder the sender (or a relay) fills: `<path>/<file>.p7m` + `.sha256`, acks in `<path>/acks/`."""

    type: Literal["local"] = "local"
    path: FilePath


def _folder(value: str) -> str:
    if not value.strip():
        raise invalid("a remote folder path")
    return value


RemoteFolder = Annotated[str, AfterValidator(_folder)]


class SftpDropConfig(_Drop):
    """The département's SFTP server, pulled from with its host key pinned."""

    type: Literal["sftp"] = "sftp"
    host: str
    port: int = 22
    user: str
    key: FilePath
    key_passphrase_env: str | None = None
    key_passphrase_file: str | None = None
    known_hosts: FilePath
    directory: RemoteFolder | None = None  # one folder for every flow
    directories: dict[str, Any] = {}  # flow -> remote folder the sender delivers into
    ack_directory: RemoteFolder
    connect_timeout: PositiveFloat = 20.0
    timeout: PositiveFloat = 60.0
    _passphrase: bytes | None = PrivateAttr(default=None)

    @property
    def key_passphrase(self) -> bytes | None:
        return self._passphrase

    @model_validator(mode="before")
    @classmethod
    def _one_or_per_flow(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("directory" in data) == ("directories" in data):
            raise invalid('either directory = "/in" or directories = {DSG = ..., SGR = ..., GRO = ...}', "directories")
        return data

    @model_validator(mode="after")
    def _checks(self, info: ValidationInfo) -> Self:
        if not 0 < self.port < 65536:
            raise invalid("a TCP port (1-65535)", "port")
        if self.directory is not None:
            self.directories.update(dict.fromkeys(FLOWS, self.directory))
        elif not self.directories:
            raise invalid("at least one flow's remote folder", "directories")
        check_directories(self.directories, "directories")
        existing(info, self.known_hosts, "known_hosts")
        existing(info, self.key, "key")
        self._passphrase = passphrase(info, "key", self.key_passphrase_env, self.key_passphrase_file)
        return self


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


def _drop_place(drop: DropConfig) -> tuple[str, ...]:
    """Where a drop's files are: two receivers on one place take each other's files (and ack them)."""
    if isinstance(drop, LocalDropConfig):
        return ("local", str(Path(drop.path).resolve()))
    if isinstance(drop, SftpDropConfig):
        return ("sftp", drop.host.lower(), str(drop.port), *sorted(set(drop.directories.values())))
    return ("hubee", drop.api_url, drop.client_id)


def check_distinct(configs: list[ReceiveConfig]) -> None:
    """Several départements received by one command (`--config-dir`) each have their own drop,
    output folder and ledger. A table copied from another département and not fully edited would
    otherwise take that département's files, refuse them (DECRYPT) and ack them KO in its place."""
    seen: dict[tuple[str, tuple[str, ...]], ReceiveConfig] = {}
    for cfg in configs:
        for key, place in (("drop", _drop_place(cfg.drop)), ("output.dir", (str(cfg.output_dir),)),
                           ("ledger.path", (str(cfg.ledger),))):
            first = seen.setdefault((key, place), cfg)
            if first is not cfg:
                raise ConfigError(cfg.file, key, f"its own, not the one of {first.file.name} (département "
                                  f"{first.department}): two départements would take each other's files")


@functools.cache
def _registry_codes() -> frozenset[str]:
    # Read once per process: `--config-dir` loads a hundred of these files.
    return frozenset(load_registry())


class _HubeeDropTable(_Drop):
    """`[drop] type = "hubee"`: the département's SI client (scope SI); the secret via env or an owner-only file."""

    type: Literal["hubee"]
    api_url: Annotated[str, AfterValidator(https_url)]
    token_url: Annotated[str, AfterValidator(https_url)]
    client_id: str
    client_secret_env: str | None = None
    client_secret_file: str | None = None
    timeout: PositiveFloat = 60.0
    _secret: bytes = PrivateAttr(default=b"")

    @model_validator(mode="after")
    def _read_secret(self, info: ValidationInfo) -> Self:
        if not self.client_id.strip():
            raise invalid("the département's HubEE client id (scope SI)", "client_id")
        if (self.client_secret_env is None) == (self.client_secret_file is None):
            raise invalid("one of client_secret_env or client_secret_file (the secret never sits here)",
                          "client_secret_env")
        if self.client_secret_env is not None:
            self._secret = secret_from_env(self.client_secret_env, "client_secret_env")
        elif self.client_secret_file is not None:
            base = context(info).get("base", Path.cwd())
            self._secret = secret_from_file(resolve(base, self.client_secret_file, normalise=True),
                                            "client_secret_file")
        if not self._secret:
            raise invalid("a non-empty client secret", "client_secret_env")
        return self

    def build(self, max_file_bytes: int) -> HubeeDropConfig:
        return HubeeDropConfig(api_url=self.api_url, token_url=self.token_url, client_id=self.client_id.strip(),
                               client_secret=self._secret, timeout=self.timeout, max_file_bytes=max_file_bytes)


class _DepartmentTable(Strict):
    code: str
    certificate: FilePath | None = None
    key: FilePath | None = None
    key_passphrase_env: str | None = None
    key_passphrase_file: str | None = None
    trusted_senders: list[Any] | None = None
    accept_unsealed: bool = False
    _passphrase: bytes | None = PrivateAttr(default=None)
    _senders: tuple[Path, ...] = PrivateAttr(default=())

    @property
    def key_passphrase(self) -> bytes | None:
        return self._passphrase

    @property
    def senders(self) -> tuple[Path, ...]:
        """The trusted sender certificates, resolved against the file's folder."""
        return self._senders

    @model_validator(mode="after")
    def _checks(self, info: ValidationInfo) -> Self:
        if not DEPARTMENT_CODE_RE.match(self.code) or self.code not in _registry_codes():
            raise invalid("a département code on 3 characters (e.g. 035, 02A, 971)", "code")
        crypto = ("certificate", "key", "trusted_senders")
        given = [k for k in crypto if getattr(self, k) is not None]
        if given and len(given) < 3:
            missing = next(k for k in crypto if k not in given)
            raise invalid("certificate, key and trusted_senders together (one is missing)", missing)
        if not given and not self.accept_unsealed:
            raise invalid("the département's certificate, key and trusted_senders (or accept_unsealed = true)",
                          "certificate")
        if self.certificate is not None and self.key is not None:
            existing(info, self.certificate, "certificate")
            existing(info, self.key, "key")
            self._senders = self._trusted(info, self.trusted_senders or [])
        self._passphrase = passphrase(info, "key", self.key_passphrase_env, self.key_passphrase_file)
        return self

    @staticmethod
    def _trusted(info: ValidationInfo, listed: list[Any]) -> tuple[Path, ...]:
        if not listed or not all(isinstance(v, str) and v for v in listed):
            raise invalid("a non-empty list of sender certificate files (PEM)", "trusted_senders")
        base = context(info).get("base", Path.cwd())
        return tuple(existing(info, resolve(base, v, normalise=True), "trusted_senders") for v in listed)


class _Output(Strict):
    dir: FilePath
    formats: list[str] = list(FORMATS)

    @model_validator(mode="after")
    def _formats(self) -> Self:
        f = self.formats
        if not f or not all(x in FORMATS for x in f) or len(set(f)) < len(f):
            raise invalid(f"a non-empty list drawn from {', '.join(FORMATS)}", "formats")
        return self


class _Ledger(Strict):
    path: FilePath | None = None


class _Retention(Strict):
    days: PositiveInt = DEFAULT_RETENTION_DAYS


class _Limits(Strict):
    max_file_bytes: PositiveInt = DEFAULT_MAX_FILE_BYTES
    # The keys of receive.extract.ZipLimits: checked here so a typo is a config error, built there.
    max_members: PositiveInt | None = None
    max_total_bytes: PositiveInt | None = None
    max_member_bytes: PositiveInt | None = None
    max_ratio: PositiveFloat | None = None


class _File(Strict):
    department: _DepartmentTable
    drop: Annotated[LocalDropConfig | SftpDropConfig | _HubeeDropTable, Field(discriminator="type")]
    output: _Output
    ledger: _Ledger = _Ledger()
    retention: _Retention = _Retention()
    limits: _Limits = _Limits()


# What a missing table is expected to hold.
_REQUIRED = {
    "department": "a [department] table with code, certificate, key, trusted_senders",
    "drop": 'a [drop] table with type = "local", "sftp" or "hubee"',
    "output": "an [output] table with dir",
}


def load_receive(path: str | Path, *, check_files: bool = True) -> ReceiveConfig:
    file = Path(path).resolve()
    raw = read_toml(file)
    base = file.parent
    for table, expected in _REQUIRED.items():
        if table not in raw:
            raise ConfigError(file, table, expected)
    m: _File = validate(_File, raw, file, base=base, check_files=check_files, normalise=True)
    drop = m.drop.build(m.limits.max_file_bytes) if isinstance(m.drop, _HubeeDropTable) else m.drop
    return ReceiveConfig(
        file=file,
        base=base,
        department=m.department.code,
        certificate=m.department.certificate,
        key=m.department.key,
        key_passphrase=m.department.key_passphrase,
        trusted_senders=m.department.senders,
        accept_unsealed=m.department.accept_unsealed,
        drop=drop,
        poll_seconds=m.drop.poll_seconds,
        output_dir=m.output.dir,
        formats=tuple(m.output.formats),
        ledger=m.ledger.path or m.output.dir / "ledger.sqlite",
        retention_days=m.retention.days,
        max_file_bytes=m.limits.max_file_bytes,
        zip_limits=m.limits.model_dump(exclude={"max_file_bytes"}, exclude_none=True),
    )
