"""Loads and validates `flux-pmi.toml` and merges it with the département registry.

The operator's file says where things live, which départements are enabled, their
certificates and transports. The shipped registry (`departments.toml` beside this
module) says what a département *is*: name, SIRET, Caf NUMORGs, holiday zone.
Every problem is reported with the file, the key and what is expected; an unknown
key is an error (a typo must not silently disable a setting). Secrets never sit in
the TOML: a passphrase comes from an environment variable or an owner-only file.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stdnum.fr import siret

from ..core.errors import ConfigError

REGISTRY_FILE = Path(__file__).with_name("departments.toml")
# Shapes only: the base layer does not import the flows (flows/codes.py holds the full lists).
# A recipient code: a département on 3 characters, or 69M (the Métropole de Lyon).
DEPARTMENT_CODE_RE = re.compile(r"^(?:0(?:0[1-9]|[1-8][0-9]|9[0-5]|2[AB])|97[1-46]|69M)$")
NUMORG_RE = re.compile(r"^(?:\d{3}|20[12])$")
FLOWS = ("DSG", "SGR", "GRO")

# Per transport type: its keys, their types, and whether they are required.
# Adapters added later register their keys here (see transport modules).
_NUM = (int, float)
TRANSPORT_KEYS: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    # A département whose transport nobody has filled in yet: nothing is sent to it.
    "disabled": {},
    "local": {"root": (str, True)},
    "sftp": {
        "host": (str, True),
        "port": (int, False),
        "user": (str, True),
        "key": (str, True),  # private key file (ed25519 or RSA), owner-only
        "key_passphrase_env": (str, False),  # the passphrase never sits in the TOML
        "key_passphrase_file": (str, False),
        "known_hosts": (str, True),  # the pinned host key(s) of this partner
        "directories": (dict, True),  # {DSG = "/in/dsg", SGR = ..., GRO = ...}
        "ack_directory": (str, False),
        "connect_timeout": (_NUM, False),
        "timeout": (_NUM, False),
    },
    "cft": {
        "cftutil": (str, True),  # path of the CFTUTIL executable
        "part": (str, True),  # the partner's PART in the CFT configuration
        "idf": (dict, True),  # {DSG = "PMIDSG", ...}: the file type per flow
        "send_template": (str, False),  # default: SEND PART={part}, IDF={idf}, FNAME={fname}, NFNAME={nfname}
        "wait": (str, False),  # "swaitcat" (default) or "poll" (LISTCAT)
        "expect_ack": (bool, False),  # also require the partner's acknowledgement (catalog Ack = A) at phase X
        "timeout": (_NUM, False),
        "poll_interval": (_NUM, False),
        "ack_directory": (str, False),  # where CFT puts the files the partner sends back
        "env": (dict, False),  # extra environment for CFTUTIL (CFTDIRRUNTIME...)
    },
    # HubEE: what is shared (URLs, client ids, secrets) sits in the top-level [hubee] table.
    "hubee": {
        "branch_code": (str, False),  # the département's HubEE "code guichet", where it has one
    },
}


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    code: str
    name: str
    siret: str
    numorg: tuple[str, ...]
    holiday_zone: str
    siret_placeholder: bool
    chef_lieu_code: str
    chef_lieu_name: str
    flows: tuple[str, ...] = FLOWS
    certificate: str = ""
    transport: dict[str, Any] = field(default_factory=lambda: {"type": "disabled"})


@dataclass(frozen=True, slots=True)
class TransportConfig:
    type: str
    params: dict[str, Any]
    # The key passphrase, read from the environment or an owner-only file at load time.
    secret: bytes | None = field(default=None, repr=False)

    def path(self, key: str, base: Path) -> Path:
        p = Path(self.params[key])
        return p if p.is_absolute() else base / p


@dataclass(frozen=True, slots=True)
class Department:
    code: str
    name: str
    siret: str
    numorg: tuple[str, ...]
    holiday_zone: str
    enabled: bool
    certificate: Path | None
    flows: tuple[str, ...]
    empty_flows: bool
    transport: TransportConfig
    siret_placeholder: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Paths:
    inbox: Path
    work: Path
    archive: Path
    trace: Path
    reports: Path
    quarantine: Path
    consumed: Path
    # The folder the others default to and relative ones resolve against: `[paths] state`
    # (e.g. /var/lib/flux-pmi, the systemd StateDirectory), else the config file's folder.
    state: Path | None = None


@dataclass(frozen=True, slots=True)
class Sender:
    certificate: Path
    key: Path
    key_passphrase: bytes | None
    archive_certificate: Path
    archive_key: Path
    archive_key_passphrase: bytes | None
    trusted_ca: Path | None


@dataclass(frozen=True, slots=True)
class Limits:
    max_file_bytes: int = 64 * 1024 * 1024
    max_pdf_bytes: int = 5 * 1024 * 1024
    max_input_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    parallel: int = 8
    attempts: int = 3
    backoff_seconds: float = 1.0
    backoff_max_seconds: float = 30.0
    timeout_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class Retention:
    # The convention sets two counts that pull in opposite directions: annexe 2 §3 keeps the
    # flows (the archive) at least 3 months after their transmission, art. 5 keeps the trace of
    # the exchanges at most 3 months. Consumed input follows the trace (it is personal data).
    archive_months: int = 3  # >= 3, counted from each file's last transmission
    trace_months: int = 3  # <= 3, counted from the last transmission (business date for the rest)

    @property
    def months(self) -> int:
        """How far back a re-emission can be asked for: the trace rows are what make a file re-emittable."""
        return self.trace_months


@dataclass(frozen=True, slots=True)
class Job:
    """One scheduled job: cron-style fields for APScheduler's CronTrigger (named weekdays, not numbers)."""

    id: str
    enabled: bool
    day_of_week: str
    hour: int
    minute: int


# Nothing between 02:00 and 03:00 (Europe/Paris): on the night the clocks go back that hour
# happens twice, and on the night they go forward it does not happen at all.
DEFAULT_JOBS = {
    "nightly": Job("nightly", True, "mon-fri", 4, 30),  # collect acks, emit, deliver
    "purge": Job("purge", True, "mon-sun", 5, 30),  # retention
    "sla": Job("sla", True, "mon-fri", 8, 0),  # records at risk or late
}


@dataclass(frozen=True, slots=True)
class Service:
    lock_wait_seconds: float = 300.0  # a second run waits this long for the first, then exits 4
    max_age_hours: float = 26.0  # `status` exits 7 when the last nightly run is older
    misfire_grace_seconds: int = 6 * 3600  # while serving, a late fire still runs within this (start-up catch-up: see scheduler.py)
    metrics_file: Path | None = None  # Prometheus textfile collector output
    jobs: dict[str, Job] = field(default_factory=lambda: dict(DEFAULT_JOBS))


@dataclass(frozen=True, slots=True)
class Hubee:
    """The [hubee] table: the CNAF as online-service operator (scope OSL), one client id per démarche."""

    api_url: str
    token_url: str
    client_ids: dict[str, str]  # flow (= HubEE processCode) -> client id
    secrets: dict[str, bytes] = field(repr=False)  # flow -> client secret, read at load time
    timeout: float = 30.0
    editor_name: str = "CNAF"
    application_name: str = "flux-pmi"
    software_version: str = ""  # empty: flux_pmi.__version__
    applicant: dict[str, str] = field(default_factory=lambda: {"firstName": "CNAF", "lastName": "flux-pmi"})


@dataclass(frozen=True, slots=True)
class Settings:
    file: Path
    base: Path
    paths: Paths
    sender: Sender
    limits: Limits
    delivery: DeliveryPolicy
    departments: dict[str, Department]
    raw: dict[str, Any]
    retention: Retention = Retention()
    service: Service = Service()
    hubee: Hubee | None = None

    def enabled_departments(self) -> list[Department]:
        return [d for d in self.departments.values() if d.enabled]

    def certificates_in_use(self) -> list[tuple[str, str, Path | None]]:
        """(scope, role, path) of every certificate a night needs: sender, archive, each enabled département."""
        s = self.sender
        out: list[tuple[str, str, Path | None]] = [("sender", "signer", s.certificate),
                                                   ("archive", "archive", s.archive_certificate)]
        out += [(d.code, "recipient", d.certificate) for d in sorted(self.enabled_departments(), key=lambda d: d.code)]
        return out


def load_registry(path: Path = REGISTRY_FILE) -> dict[str, RegistryEntry]:
    data = _read_toml(path)
    out: dict[str, RegistryEntry] = {}
    for code, d in data.get("departments", {}).items():
        where = f"departments.{code}"
        _known(path, where, d, {"name", "numorg", "holiday_zone", "siret", "siret_placeholder", "chef_lieu",
                                "flows", "certificate", "transport"})
        if not DEPARTMENT_CODE_RE.match(code) or code == "020":
            raise ConfigError(path, where, "a département code on 3 characters (e.g. 035, 02A, 971) or 69M")
        for key in ("name", "siret", "holiday_zone"):
            _get(path, where, d, key, str)
        numorg = _get(path, where, d, "numorg", list)
        if not numorg or not all(isinstance(n, str) and NUMORG_RE.match(n) for n in numorg):
            raise ConfigError(path, f"{where}.numorg", "a non-empty list of 3-character Caf codes (351, 201)")
        if not siret.is_valid(d["siret"]):
            raise ConfigError(path, f"{where}.siret", "a valid 14-digit SIRET")
        out[code] = RegistryEntry(
            code=code, name=d["name"], siret=d["siret"], numorg=tuple(numorg),
            holiday_zone=d["holiday_zone"], siret_placeholder=bool(d.get("siret_placeholder", False)),
            chef_lieu_code=d["chef_lieu"]["code"], chef_lieu_name=d["chef_lieu"]["name"],
            flows=_flows(path, f"{where}.flows", d.get("flows", list(FLOWS))),
            certificate=_get(path, where, d, "certificate", str, ""),
            transport=_get(path, where, d, "transport", dict, {"type": "disabled"}),
        )
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(path, "(file)", "no such file: check the --config path") from exc
    except IsADirectoryError as exc:
        raise ConfigError(path, "(file)", "a TOML file, not a folder: check the --config path") from exc
    except UnicodeDecodeError as exc:  # e.g. saved as Latin-1: TOML is UTF-8
        raise ConfigError(path, "(syntax)", f"UTF-8 text (byte {exc.start} is not UTF-8)") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "(syntax)", f"valid TOML ({exc})") from exc


def _known(file: Path, where: str, table: Any, allowed: set[str]) -> None:
    if not isinstance(table, dict):
        raise ConfigError(file, where, "a table")
    for key in table:
        if key not in allowed:
            raise ConfigError(file, f"{where}.{key}" if where else key,
                              f"a known key (unknown key; expected one of {', '.join(sorted(allowed))})")


def _get(file: Path, where: str, table: dict[str, Any], key: str, typ: type | tuple[type, ...], default: Any = ...,
         *, positive: bool = False) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(file, f"{where}.{key}" if where else key, "a value (missing)")
        return default
    value = table[key]
    if isinstance(value, bool) and typ is not bool and bool not in (typ if isinstance(typ, tuple) else (typ,)):
        raise ConfigError(file, f"{where}.{key}", f"a {_tname(typ)}, not a boolean")
    if not isinstance(value, typ):
        raise ConfigError(file, f"{where}.{key}", f"a {_tname(typ)}")
    if positive and value <= 0:
        raise ConfigError(file, f"{where}.{key}", "a value greater than 0")
    return value


def _tname(typ: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))


def _secret(file: Path, where: str, table: dict[str, Any], prefix: str, base: Path) -> bytes | None:
    env_key, file_key = f"{prefix}_passphrase_env", f"{prefix}_passphrase_file"
    if env_key in table:
        return _secret_from_env(file, f"{where}.{env_key}", _get(file, where, table, env_key, str))
    if file_key in table:
        return _secret_from_file(file, f"{where}.{file_key}", _resolve(base, _get(file, where, table, file_key, str)))
    return None


def _secret_from_env(file: Path, key: str, name: str) -> bytes:
    if name not in os.environ:
        raise ConfigError(file, key, f"the environment variable {name} to be set")
    return os.environ[name].encode()


def _secret_from_file(file: Path, key: str, p: Path) -> bytes:
    try:
        st = p.stat()
    except FileNotFoundError as exc:
        raise ConfigError(file, key, f"an existing file ({p} not found)") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(file, key, f"a file readable by its owner only ({p} is not)")
    return p.read_bytes().rstrip(b"\r\n")


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _existing(file: Path, key: str, path: Path) -> Path:
    if not path.is_file():
        raise ConfigError(file, key, f"an existing file ({path} not found)")
    return path


def _transport(file: Path, where: str, table: Any, base: Path) -> TransportConfig:
    if not isinstance(table, dict):
        raise ConfigError(file, where, "a table with a `type`")
    kind = _get(file, where, table, "type", str)
    if kind not in TRANSPORT_KEYS:
        raise ConfigError(file, f"{where}.type", f"one of {', '.join(sorted(TRANSPORT_KEYS))}")
    spec = TRANSPORT_KEYS[kind]
    _known(file, where, table, set(spec) | {"type"})
    params: dict[str, Any] = {}
    for key, (typ, required) in spec.items():
        if key in table or required:
            params[key] = _get(file, where, table, key, typ)
    return TransportConfig(kind, params, _secret(file, where, table, "key", base))


def _retention(file: Path, ret: Any) -> Retention:
    """[retention] archive_months (>= 3) and trace_months (<= 3).

    The old single key `months` is still read when neither new key is given: archive_months =
    months, trace_months = min(months, 3). Giving it beside a new key is refused as ambiguous.
    """
    if not isinstance(ret, dict):
        raise ConfigError(file, "retention", "a table")
    _known(file, "retention", ret, {"months", "archive_months", "trace_months"})
    if "months" in ret:
        if "archive_months" in ret or "trace_months" in ret:
            raise ConfigError(file, "retention.months",
                              "not beside archive_months / trace_months (months is their old single form)")
        legacy = _get(file, "retention", ret, "months", int, 3)
        if legacy < 3:
            raise ConfigError(file, "retention.months", "at least 3: the flows are kept 3 months (annexe 2 §3)")
        return Retention(archive_months=legacy, trace_months=min(legacy, 3))
    archive = _get(file, "retention", ret, "archive_months", int, 3)
    trace = _get(file, "retention", ret, "trace_months", int, 3)
    if archive < 3:
        raise ConfigError(file, "retention.archive_months",
                          "at least 3: the flows are kept 3 months after their transmission (annexe 2 §3)")
    if not 1 <= trace <= 3:
        raise ConfigError(file, "retention.trace_months",
                          "from 1 to 3: the trace of the exchanges is kept at most 3 months (convention art. 5)")
    return Retention(archive_months=archive, trace_months=trace)


def load(path: str | Path, *, check_files: bool = True) -> Settings:
    file = Path(path).resolve()
    raw = _read_toml(file)
    base = file.parent
    _known(file, "", raw, {"paths", "sender", "limits", "delivery", "defaults", "departments", "service",
                           "registry", "retention", "hubee"})
    service = _service(file, raw.get("service", {}), base)
    retention = _retention(file, raw.get("retention", {}))

    p = raw.get("paths", {})
    _known(file, "paths", p, {"state", "inbox", "work", "archive", "trace", "reports", "quarantine", "consumed"})
    # Config (read-only under ProtectSystem=strict) and state (written every night) may live apart.
    state = _resolve(base, _get(file, "paths", p, "state", str)) if "state" in p else base
    paths = Paths(**{k: _resolve(state, _get(file, "paths", p, k, str, d)) for k, d in {
        "inbox": "inbox", "work": "work", "archive": "archive", "trace": "trace/flux-pmi.sqlite",
        "reports": "reports", "quarantine": "quarantine", "consumed": "consumed"}.items()}, state=state)

    s = raw.get("sender")
    if s is None:
        raise ConfigError(file, "sender", "a [sender] table with certificate, key, archive_certificate, archive_key")
    _known(file, "sender", s, {"certificate", "key", "key_passphrase_env", "key_passphrase_file",
                               "archive_certificate", "archive_key", "archive_key_passphrase_env",
                               "archive_key_passphrase_file", "trusted_ca"})

    def sender_file(key: str) -> Path:
        value = _resolve(base, _get(file, "sender", s, key, str))
        return _existing(file, f"sender.{key}", value) if check_files else value

    sender = Sender(
        certificate=sender_file("certificate"), key=sender_file("key"),
        key_passphrase=_secret(file, "sender", s, "key", base),
        archive_certificate=sender_file("archive_certificate"), archive_key=sender_file("archive_key"),
        archive_key_passphrase=_secret(file, "sender", s, "archive_key", base),
        trusted_ca=sender_file("trusted_ca") if "trusted_ca" in s else None,
    )

    lim = raw.get("limits", {})
    _known(file, "limits", lim, {"max_file_bytes", "max_pdf_bytes", "max_input_bytes"})
    limits = Limits(**{k: _get(file, "limits", lim, k, int, getattr(Limits(), k), positive=True) for k in lim})

    dl = raw.get("delivery", {})
    _known(file, "delivery", dl, {"parallel", "attempts", "backoff_seconds", "backoff_max_seconds",
                                  "timeout_seconds"})
    delivery = DeliveryPolicy(**{
        k: _get(file, "delivery", dl, k, int if k in ("parallel", "attempts") else (int, float), positive=True)
        for k in dl})

    defaults = raw.get("defaults", {})
    _known(file, "defaults", defaults, {"flows", "empty_flows", "transport", "reemit_on_ko"})
    default_flows = _flows(file, "defaults.flows", defaults.get("flows", list(FLOWS)))
    default_empty = _get(file, "defaults", defaults, "empty_flows", bool, True)
    default_transport = _transport(file, "defaults.transport", defaults["transport"], base) \
        if "transport" in defaults else None
    default_reemit = _get(file, "defaults", defaults, "reemit_on_ko", bool, False)

    reg_table = raw.get("registry", {})
    _known(file, "registry", reg_table, {"file"})
    registry_file = _resolve(base, _get(file, "registry", reg_table, "file", str)) if "file" in reg_table \
        else REGISTRY_FILE
    registry = load_registry(registry_file)
    depts_raw = raw.get("departments", {})
    if not isinstance(depts_raw, dict):
        raise ConfigError(file, "departments", "a table of départements keyed by code")
    for code in depts_raw:
        if code not in registry:
            raise ConfigError(file, f"departments.{code}",
                              "a département code on 3 characters from the registry (e.g. 035, 02A, 971)")
    departments: dict[str, Department] = {}
    for code, reg in registry.items():
        # The registry describes every département; the operator's file overrides it for the
        # ones it lists, and [defaults] apply to those only.
        listed = code in depts_raw
        d = depts_raw.get(code, {})
        where = f"departments.{code}"
        src = file if listed else registry_file
        _known(file, where, d, {"enabled", "certificate", "flows", "empty_flows", "transport", "reemit_on_ko"})
        if "transport" in d:
            transport = _transport(file, f"{where}.transport", d["transport"], base)
        elif listed and default_transport is not None:
            transport = default_transport
        else:
            transport = _transport(registry_file, f"{where}.transport", reg.transport, registry_file.parent)
        cert_value = _get(file, where, d, "certificate", str) if "certificate" in d else reg.certificate
        cert_base = base if "certificate" in d else registry_file.parent
        cert = _resolve(cert_base, cert_value) if cert_value else None
        configured = transport.type != "disabled" and cert is not None
        enabled = _get(file, where, d, "enabled", bool, configured)
        if enabled and cert is None:
            raise ConfigError(src, f"{where}.certificate", "the département's encryption certificate (PEM)")
        if enabled and transport.type == "disabled":
            raise ConfigError(src, f"{where}.transport", "a transport (local, sftp, cft, hubee), here or in [defaults]")
        if enabled and check_files and cert is not None:
            _existing(src, f"{where}.certificate", cert)
        departments[code] = Department(
            code=code, name=reg.name, siret=reg.siret, numorg=reg.numorg, holiday_zone=reg.holiday_zone,
            enabled=enabled, certificate=cert,
            flows=_flows(file, f"{where}.flows", d["flows"]) if "flows" in d
            else (default_flows if listed and "flows" in defaults else reg.flows),
            empty_flows=_get(file, where, d, "empty_flows", bool, default_empty),
            transport=transport, siret_placeholder=reg.siret_placeholder,
            options={"reemit_on_ko": _get(file, where, d, "reemit_on_ko", bool, default_reemit)},
        )
    hubee = _hubee(file, raw["hubee"], base) if "hubee" in raw else None
    for dept in departments.values():
        if dept.enabled and dept.transport.type == "hubee":
            where = f"departments.{dept.code}.transport"
            if hubee is None:
                raise ConfigError(file, "hubee", f"a [hubee] table (api_url, token_url, client_ids...): {where} uses it")
            missing = [f for f in dept.flows if f not in hubee.client_ids]
            if missing:
                raise ConfigError(file, "hubee.client_ids", f"a client id for {', '.join(missing)} "
                                  f"(département {dept.code} receives it over HubEE)")
            branch = dept.transport.params.get("branch_code")
            if branch is not None and not re.fullmatch(r"[0-9A-Za-z]{1,10}", branch):
                raise ConfigError(file, f"{where}.branch_code", "a HubEE code guichet: 1 to 10 letters or digits")
    return Settings(file=file, base=base, paths=paths, sender=sender, limits=limits, delivery=delivery,
                    departments=departments, raw=raw, retention=retention, service=service, hubee=hubee)


def _url(file: Path, key: str, value: str) -> str:
    from urllib.parse import urlsplit

    u = urlsplit(value)
    # The token request carries the client secret: plain http only towards this machine (tests, a local relay).
    if not u.hostname or not (u.scheme == "https" or (u.scheme == "http" and u.hostname in ("127.0.0.1", "::1",
                                                                                           "localhost"))):
        raise ConfigError(file, key, "an https:// URL (http:// only towards 127.0.0.1 or localhost)")
    return value.rstrip("/")


def _hubee(file: Path, table: Any, base: Path) -> Hubee:
    from .. import __version__

    _known(file, "hubee", table, {"api_url", "token_url", "client_ids", "client_secret_env", "client_secret_files",
                                  "timeout", "editor_name", "application_name", "software_version", "applicant"})
    ids = _get(file, "hubee", table, "client_ids", dict)
    if not ids or not all(k in FLOWS and isinstance(v, str) and v.strip() for k, v in ids.items()):
        raise ConfigError(file, "hubee.client_ids",
                          f'a table of client ids per démarche among {", ".join(FLOWS)}, e.g. {{ GRO = "..." }}')
    if ("client_secret_env" in table) == ("client_secret_files" in table):
        raise ConfigError(file, "hubee", "one of client_secret_env or client_secret_files (secrets never sit here)")
    key = "client_secret_env" if "client_secret_env" in table else "client_secret_files"
    refs = _get(file, "hubee", table, key, dict)
    if set(refs) != set(ids) or not all(isinstance(v, str) and v for v in refs.values()):
        raise ConfigError(file, f"hubee.{key}", f"one entry per client id ({', '.join(sorted(ids))}), each a string")
    secrets = {flow: _secret_from_env(file, f"hubee.{key}.{flow}", ref) if key == "client_secret_env"
               else _secret_from_file(file, f"hubee.{key}.{flow}", _resolve(base, ref)) for flow, ref in refs.items()}
    for flow, value in secrets.items():
        if not value:
            raise ConfigError(file, f"hubee.{key}.{flow}", "a non-empty client secret")
    names = {}
    # The spec caps these three headers at 50 characters.
    for k, default in (("editor_name", "CNAF"), ("application_name", "flux-pmi"), ("software_version", __version__)):
        names[k] = _get(file, "hubee", table, k, str, default)
        if not names[k] or len(names[k]) > 50 or not names[k].isprintable() or not names[k].isascii():
            raise ConfigError(file, f"hubee.{k}", "1 to 50 printable ASCII characters (an HTTP header)")
    applicant = _get(file, "hubee", table, "applicant", dict, {"firstName": "CNAF", "lastName": "flux-pmi"})
    _known(file, "hubee.applicant", applicant, {"firstName", "lastName"})
    for k in ("firstName", "lastName"):
        v = _get(file, "hubee.applicant", applicant, k, str)
        if not v.strip() or len(v) > 255:
            raise ConfigError(file, f"hubee.applicant.{k}", "the sender's technical identity, 1 to 255 characters")
    return Hubee(
        api_url=_url(file, "hubee.api_url", _get(file, "hubee", table, "api_url", str)),
        token_url=_url(file, "hubee.token_url", _get(file, "hubee", table, "token_url", str)),
        client_ids={k: v.strip() for k, v in ids.items()}, secrets=secrets,
        timeout=float(_get(file, "hubee", table, "timeout", _NUM, 30.0, positive=True)),
        applicant=dict(applicant), **names,
    )


def _flows(file: Path, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v in FLOWS for v in value):
        raise ConfigError(file, key, f"a list drawn from {', '.join(FLOWS)}")
    return tuple(value)


def _service(file: Path, table: Any, base: Path) -> Service:
    _known(file, "service", table, {"lock_wait_seconds", "max_age_hours", "misfire_grace_seconds", "metrics_file",
                                    "jobs"})
    d = Service()
    jobs = dict(DEFAULT_JOBS)
    raw_jobs = table.get("jobs", {})
    _known(file, "service.jobs", raw_jobs, set(DEFAULT_JOBS))
    for name, j in raw_jobs.items():
        where = f"service.jobs.{name}"
        _known(file, where, j, {"enabled", "day_of_week", "hour", "minute"})
        base_job = DEFAULT_JOBS[name]
        job = Job(name, _get(file, where, j, "enabled", bool, base_job.enabled),
                  _get(file, where, j, "day_of_week", str, base_job.day_of_week),
                  _get(file, where, j, "hour", int, base_job.hour), _get(file, where, j, "minute", int, base_job.minute))
        if not 0 <= job.hour <= 23 or not 0 <= job.minute <= 59:
            raise ConfigError(file, where, "hour 0..23 and minute 0..59")
        if any(ch.isdigit() for ch in job.day_of_week):
            # APScheduler 3.x counts 0 as Monday, cron as Sunday: names cannot be misread.
            raise ConfigError(file, f"{where}.day_of_week", "weekday names like mon-fri or sat,sun, not numbers")
        jobs[name] = job
    return Service(
        lock_wait_seconds=_get(file, "service", table, "lock_wait_seconds", _NUM, d.lock_wait_seconds),
        max_age_hours=_get(file, "service", table, "max_age_hours", _NUM, d.max_age_hours, positive=True),
        misfire_grace_seconds=_get(file, "service", table, "misfire_grace_seconds", int, d.misfire_grace_seconds,
                                   positive=True),
        metrics_file=_resolve(base, _get(file, "service", table, "metrics_file", str)) if "metrics_file" in table
        else None,
        jobs=jobs,
    )
