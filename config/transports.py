"""Each transport's configuration as one typed object, validated once when the file is loaded.

A département's `transport` table (in `flux-pmi.toml`, under `[defaults]` or in the
registry) is one of these models, chosen by its `type`. Everything the adapters used to
check again when they were built (directories per flow, port range, timeouts, CFTUTIL
parameters) is checked here, so an adapter only reads typed fields. What depends on the
département (its flows) is checked by the loader once the tables are merged.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from ..core.errors import ConfigError
from .validation import Strict, invalid, passphrase

FLOWS = ("DSG", "SGR", "GRO")
DEFAULT_SFTP_PORT = 22
# CFT: the default SEND command and what it may name; CFTUTIL parameters are bare words.
SEND_TEMPLATE = "SEND PART={part}, IDF={idf}, FNAME={fname}, NFNAME={nfname}"
PLACEHOLDERS = frozenset({"part", "idf", "fname", "nfname"})
WAIT_MODES = ("swaitcat", "poll")
_BARE = re.compile(r"[A-Za-z0-9_./:@+\-]+")
_BRANCH_CODE = re.compile(r"[0-9A-Za-z]{1,10}")


class _Transport(Strict):
    def path(self, key: str, base: Path) -> Path:
        """A path field, relative ones against `base` (the configuration file's folder)."""
        p = Path(getattr(self, key))
        return p if p.is_absolute() else base / p


class DisabledConfig(_Transport):
    """A département whose transport nobody has filled in yet: nothing is sent to it."""

    type: Literal["disabled"]


class LocalConfig(_Transport):
    type: Literal["local"]
    root: str


def _seconds(value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise invalid("a number of seconds greater than 0")
    return value


def check_directories(dirs: dict[str, Any], at: str = "") -> None:
    """{flow: remote folder}, for the sending side's partner and the receiving side's server alike."""
    for flow, folder in dirs.items():
        if flow not in FLOWS:
            raise invalid(f"a flow among {', '.join(FLOWS)}", f"{at}.{flow}" if at else flow)
        if not isinstance(folder, str) or not folder.strip():
            raise invalid("a remote folder path", f"{at}.{flow}" if at else flow)


class SftpConfig(_Transport):
    type: Literal["sftp"]
    host: str
    port: int = DEFAULT_SFTP_PORT
    user: str
    key: str  # private key file (ed25519 or RSA), owner-only
    key_passphrase_env: str | None = None  # the passphrase never sits in the TOML
    key_passphrase_file: str | None = None
    known_hosts: str  # the pinned host key(s) of this partner
    directories: dict[str, Any]  # {DSG = "/in/dsg", SGR = ..., GRO = ...}
    ack_directory: str | None = None
    connect_timeout: float | None = None
    timeout: float | None = None  # unset: [delivery] timeout_seconds
    _secret: bytes | None = PrivateAttr(default=None)

    @property
    def secret(self) -> bytes | None:
        """The key passphrase, read from the environment or an owner-only file at load time."""
        return self._secret

    @field_validator("port")
    @classmethod
    def _port(cls, port: int) -> int:
        if not 0 < port < 65536:
            raise invalid("a TCP port (1-65535)")
        return port

    @field_validator("directories")
    @classmethod
    def _directories(cls, dirs: dict[str, Any]) -> dict[str, Any]:
        check_directories(dirs)
        return dirs

    _timeouts = field_validator("connect_timeout", "timeout")(_seconds)

    @model_validator(mode="after")
    def _read_secret(self, info: ValidationInfo) -> Self:
        self._secret = passphrase(info, "key", self.key_passphrase_env, self.key_passphrase_file)
        return self

    def require_flows(self, file: Path, where: str, flows: tuple[str, ...]) -> None:
        """A remote folder for each flow the département receives: checked when its transport is built,
        so a département whose table lacks one fails alone (the night goes on for the others)."""
        for flow in flows:
            if flow not in self.directories:
                raise ConfigError(file, f"{where}.directories.{flow}", f"the remote folder for {flow}")


def check_send_template(template: str) -> None:
    """A CFTUTIL SEND command naming only known placeholders, {fname} among them (ValueError otherwise)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"send_template: {exc}") from None
    names = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            allowed = ", ".join(f"{{{p}}}" for p in sorted(PLACEHOLDERS))
            raise ValueError(f"send_template: {{{name}}} is not one of {allowed}")
        names.append(name)
    if "fname" not in names:
        raise ValueError("send_template must pass {fname}: the archived sealed file is what CFT sends")
    verb = template.split(None, 1)[0].upper() if template.strip() else ""
    if verb != "SEND" or "\n" in template:
        raise ValueError("send_template must be one CFTUTIL SEND command, e.g. " + SEND_TEMPLATE)


class CftConfig(_Transport):
    """Problems are reported on the transport table itself, naming the parameter first (as CFTUTIL's do)."""

    type: Literal["cft"]
    cftutil: str  # path of the CFTUTIL executable
    part: str  # the partner's PART in the CFT configuration
    idf: dict[str, Any]  # {DSG = "PMIDSG", ...}: the file type per flow
    send_template: str = SEND_TEMPLATE
    wait: str = "swaitcat"  # "swaitcat" or "poll" (LISTCAT)
    expect_ack: bool = False  # also require the partner's acknowledgement (catalog Ack = A) at phase X
    timeout: float | None = None  # unset: [delivery] timeout_seconds
    poll_interval: float | None = None
    ack_directory: str | None = None  # where CFT puts the files the partner sends back
    env: dict[str, Any] | None = None  # extra environment for CFTUTIL (CFTDIRRUNTIME...)

    @model_validator(mode="after")
    def _cftutil_parameters(self) -> Self:
        try:
            self._check()
        except ValueError as exc:
            raise invalid(str(exc)) from None
        return self

    def _check(self) -> None:
        if not _BARE.fullmatch(self.part):
            raise ValueError(f"part: a CFT partner identifier (letters, digits, _), not {self.part!r}")
        if not self.idf:
            raise ValueError('idf: a table of the file type (IDF) per flow, e.g. { DSG = "PMIDSG" }')
        for flow, value in self.idf.items():
            if flow not in FLOWS or not isinstance(value, str) or not _BARE.fullmatch(value):
                raise ValueError(f"idf: {flow} = {value!r}: expected a flow among {', '.join(FLOWS)} "
                                 "and an IDF of letters and digits")
        check_send_template(self.send_template)
        if self.wait not in WAIT_MODES:
            raise ValueError(f"wait: one of {', '.join(WAIT_MODES)}, not {self.wait!r}")
        for key in ("timeout", "poll_interval"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"{key}: a number of seconds greater than 0")
        if not all(isinstance(v, str) for v in (self.env or {}).values()):
            raise ValueError("env: a table of environment variables whose values are strings")


class HubeeConfig(_Transport):
    """What is shared (URLs, client ids, secrets) sits in the top-level [hubee] table."""

    type: Literal["hubee"]
    branch_code: str | None = None  # the département's HubEE "code guichet", where it has one

    @field_validator("branch_code")
    @classmethod
    def _branch_code(cls, code: str | None) -> str | None:
        if code is not None and not _BRANCH_CODE.fullmatch(code):
            raise invalid("a HubEE code guichet: 1 to 10 letters or digits")
        return code


TransportConfig = Annotated[
    DisabledConfig | LocalConfig | SftpConfig | CftConfig | HubeeConfig,
    Field(discriminator="type"),
]
TRANSPORT_TYPES = ("disabled", "local", "sftp", "cft", "hubee")
