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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from stdnum.fr import siret

from ..core.errors import ConfigError
from .notify import Addresses, Notify, NotifyTable
from .transports import FLOWS, HubeeConfig, TransportConfig
from .validation import (
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

REGISTRY_FILE = Path(__file__).with_name("departments.toml")
# Shapes only: the base layer does not import the flows (flows/codes.py holds the full lists).
# A recipient code: a département on 3 characters, or 69M (the Métropole de Lyon).
DEPARTMENT_CODE_RE = re.compile(r"^(?:0(?:0[1-9]|[1-8][0-9]|9[0-5]|2[AB])|97[1-46]|69M)$")
NUMORG_RE = re.compile(r"^(?:\d{3}|20[12])$")


def _flows(value: Any) -> Any:
    if not isinstance(value, list) or not all(isinstance(v, str) and v in FLOWS for v in value):
        raise invalid(f"a list drawn from {', '.join(FLOWS)}")
    return tuple(value)


# A list of flows in the TOML; kept in the order given.
Flows = Annotated[tuple[str, ...], BeforeValidator(_flows)]


def _siret(value: str) -> str:
    if not siret.is_valid(value):
        raise invalid("a valid 14-digit SIRET")
    return value


# A SIRET, checked as the registry's are (python-stdnum: 14 digits, Luhn key).
Siret = Annotated[str, AfterValidator(_siret)]


class _ChefLieu(Strict):
    code: str
    name: str


class RegistryEntry(Strict):
    """One département as the registry describes it (its `code` is the table's key)."""

    code: str
    name: str
    siret: Siret
    numorg: tuple[str, ...]
    holiday_zone: str
    siret_placeholder: bool = False
    chef_lieu: _ChefLieu
    flows: Flows = FLOWS
    certificate: str = ""
    contacts: Addresses = ()  # who the acte d'adhésion says receives incident notices
    # Validated with the registry file's name when a configuration is loaded (see `load`).
    transport: dict[str, Any] = Field(default_factory=lambda: {"type": "disabled"})

    @field_validator("numorg", mode="before")
    @classmethod
    def _numorg(cls, numorg: Any) -> Any:
        if not isinstance(numorg, list) or not numorg or not all(isinstance(n, str) and NUMORG_RE.match(n)
                                                                 for n in numorg):
            raise invalid("a non-empty list of 3-character Caf codes (351, 201)")
        return tuple(numorg)

    @property
    def chef_lieu_code(self) -> str:
        return self.chef_lieu.code

    @property
    def chef_lieu_name(self) -> str:
        return self.chef_lieu.name


class _Registry(Strict):
    departments: dict[str, RegistryEntry] = {}

    @model_validator(mode="before")
    @classmethod
    def _codes(cls, data: Any) -> Any:
        """Each entry learns its code from its key; a key that is no recipient code is refused."""
        depts = data.get("departments") if isinstance(data, dict) else None
        if not isinstance(depts, dict):
            return data
        for code in depts:
            if not DEPARTMENT_CODE_RE.match(code) or code == "020":
                raise invalid("a département code on 3 characters (e.g. 035, 02A, 971) or 69M", f"departments.{code}")
        return {**data, "departments": {c: {**d, "code": c} if isinstance(d, dict) else d for c, d in depts.items()}}


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
    # Still the registry's placeholder: `run` emits nothing for it and `check` says ERROR until
    # [departments."X"] siret is set from the acte d'adhésion (docs/operations.md).
    siret_placeholder: bool = False
    siret_demo: bool = False  # the demo's stand-in, accepted on purpose (`siret_demo = true`)
    options: dict[str, Any] = field(default_factory=dict)
    contacts: tuple[str, ...] = ()  # incident notices (config/notify.py)


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


class Limits(Strict):
    """[limits], read as it stands in the file."""

    # A part's plain content. Sealing holds a few copies of a part in memory, so this bounds a
    # run's memory whatever the night: a catch-up's large SGR départements get more parts, not
    # larger ones (docs/performance.md). Receivers accept up to 64 MiB (receive/config.py).
    max_file_bytes: PositiveInt = 16 * 1024 * 1024
    max_pdf_bytes: PositiveInt = 5 * 1024 * 1024
    max_input_bytes: PositiveInt = 256 * 1024 * 1024


class DeliveryPolicy(Strict):
    """[delivery]: how many partners at once, how often and how long each delivery is tried."""

    # Départements served at once. Delivery threads mostly wait on the partners (handshakes, round
    # trips), so more of them than cores pays: 16 measured ~8% faster than 8 over 101 SFTP partners.
    parallel: PositiveInt = 16
    attempts: PositiveInt = 3
    backoff_seconds: PositiveFloat = 1.0
    backoff_max_seconds: PositiveFloat = 30.0
    timeout_seconds: PositiveFloat = 60.0


def _default_processes() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


class BuildPolicy(Strict):
    """[build]: how many processes parse, build, validate and seal (the CPU of a night).

    A night is CPU-bound in Python, which runs on one core per process. `processes = 1` keeps
    everything in the run's own process; the default is the number of cores, at most 4. Below
    `min_jobs` files or départements in a batch, the processes do not pay for their start.
    """

    processes: PositiveInt = Field(default_factory=_default_processes)
    min_jobs: PositiveInt = 8


class Retention(Strict):
    # The convention sets two counts that pull in opposite directions: annexe 2 §3 keeps the
    # flows (the archive) at least 3 months after their transmission, art. 5 keeps the trace of
    # the exchanges at most 3 months. Consumed input follows the trace (it is personal data).
    archive_months: int = 3  # >= 3, counted from each file's last transmission
    trace_months: int = 3  # <= 3, counted from the last transmission (business date for the rest)

    @property
    def months(self) -> int:
        """How far back a re-emission can be asked for: the trace rows are what make a file re-emittable."""
        return self.trace_months

    @model_validator(mode="before")
    @classmethod
    def _legacy_months(cls, data: Any) -> Any:
        """The old single key `months`, read when neither new key is given: archive_months = months,
        trace_months = min(months, 3). Given beside a new key it is refused as ambiguous."""
        if not isinstance(data, dict) or "months" not in data:
            return data
        if "archive_months" in data or "trace_months" in data:
            raise invalid("not beside archive_months / trace_months (months is their old single form)", "months")
        legacy = data["months"]
        if isinstance(legacy, bool) or not isinstance(legacy, int):
            raise invalid("a int", "months")
        if legacy < 3:
            raise invalid("at least 3: the flows are kept 3 months (annexe 2 §3)", "months")
        rest = {k: v for k, v in data.items() if k != "months"}
        return {**rest, "archive_months": legacy, "trace_months": min(legacy, 3)}

    @field_validator("archive_months")
    @classmethod
    def _archive(cls, months: int) -> int:
        if months < 3:
            raise invalid("at least 3: the flows are kept 3 months after their transmission (annexe 2 §3)")
        return months

    @field_validator("trace_months")
    @classmethod
    def _trace(cls, months: int) -> int:
        if not 1 <= months <= 3:
            raise invalid("from 1 to 3: the trace of the exchanges is kept at most 3 months (convention art. 5)")
        return months


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
    unacknowledged_days: float = 5.0  # `status` exits 13 for a file delivered longer ago and still not acked
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
    notify: Notify | None = None  # no [notify] table: no incident notices
    build: BuildPolicy = BuildPolicy()

    def enabled_departments(self) -> list[Department]:
        return [d for d in self.departments.values() if d.enabled]

    def certificates_in_use(self) -> list[tuple[str, str, Path | None]]:
        """(scope, role, path) of every certificate a night needs: sender, archive, each enabled département."""
        s = self.sender
        out: list[tuple[str, str, Path | None]] = [("sender", "signer", s.certificate),
                                                   ("archive", "archive", s.archive_certificate)]
        out += [(d.code, "recipient", d.certificate) for d in sorted(self.enabled_departments(), key=lambda d: d.code)]
        return out


class _PathsTable(Strict):
    state: str | None = None
    inbox: str = "inbox"
    work: str = "work"
    archive: str = "archive"
    trace: str = "trace/flux-pmi.sqlite"
    reports: str = "reports"
    quarantine: str = "quarantine"
    consumed: str = "consumed"

    def build(self, base: Path) -> Paths:
        # Config (read-only under ProtectSystem=strict) and state (written every night) may live apart.
        state = resolve(base, self.state) if self.state is not None else base
        folders = self.model_dump(exclude={"state"})
        return Paths(**{k: resolve(state, v) for k, v in folders.items()}, state=state)


class _SenderTable(Strict):
    certificate: FilePath
    key: FilePath
    key_passphrase_env: str | None = None
    key_passphrase_file: str | None = None
    archive_certificate: FilePath
    archive_key: FilePath
    archive_key_passphrase_env: str | None = None
    archive_key_passphrase_file: str | None = None
    trusted_ca: FilePath | None = None
    _sender: Sender | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _files_and_secrets(self, info: ValidationInfo) -> Self:
        for key in ("certificate", "key", "archive_certificate", "archive_key", "trusted_ca"):
            if getattr(self, key) is not None:
                existing(info, getattr(self, key), key)
        self._sender = Sender(
            certificate=self.certificate, key=self.key,
            key_passphrase=passphrase(info, "key", self.key_passphrase_env, self.key_passphrase_file),
            archive_certificate=self.archive_certificate, archive_key=self.archive_key,
            archive_key_passphrase=passphrase(info, "archive_key", self.archive_key_passphrase_env,
                                              self.archive_key_passphrase_file),
            trusted_ca=self.trusted_ca,
        )
        return self

    @property
    def sender(self) -> Sender:
        assert self._sender is not None  # set by the validator
        return self._sender


class _JobTable(Strict):
    enabled: bool | None = None
    day_of_week: str | None = None
    hour: int | None = None
    minute: int | None = None

    @field_validator("day_of_week")
    @classmethod
    def _named_days(cls, days: str | None) -> str | None:
        if days is not None and any(ch.isdigit() for ch in days):
            # APScheduler 3.x counts 0 as Monday, cron as Sunday: names cannot be misread.
            raise invalid("weekday names like mon-fri or sat,sun, not numbers")
        return days

    @model_validator(mode="after")
    def _time_of_day(self) -> Self:
        if not 0 <= (self.hour or 0) <= 23 or not 0 <= (self.minute or 0) <= 59:
            raise invalid("hour 0..23 and minute 0..59")
        return self

    def over(self, job: Job) -> Job:
        """`job` with what this table sets."""
        return replace(job, **self.model_dump(exclude_none=True))


class _Jobs(Strict):
    nightly: _JobTable | None = None
    purge: _JobTable | None = None
    sla: _JobTable | None = None


_SERVICE = Service()


class _ServiceTable(Strict):
    lock_wait_seconds: float = _SERVICE.lock_wait_seconds
    max_age_hours: PositiveFloat = _SERVICE.max_age_hours
    unacknowledged_days: PositiveFloat = _SERVICE.unacknowledged_days
    misfire_grace_seconds: PositiveInt = _SERVICE.misfire_grace_seconds
    metrics_file: FilePath | None = None
    jobs: _Jobs = _Jobs()

    def build(self) -> Service:
        tables = {name: getattr(self.jobs, name) for name in DEFAULT_JOBS}
        jobs = {name: t.over(DEFAULT_JOBS[name]) if t else DEFAULT_JOBS[name] for name, t in tables.items()}
        return Service(lock_wait_seconds=self.lock_wait_seconds, max_age_hours=self.max_age_hours,
                       unacknowledged_days=self.unacknowledged_days, misfire_grace_seconds=self.misfire_grace_seconds, metrics_file=self.metrics_file, jobs=jobs)


def _header(value: str) -> str:
    # The spec caps these three headers at 50 characters.
    if not value or len(value) > 50 or not value.isprintable() or not value.isascii():
        raise invalid("1 to 50 printable ASCII characters (an HTTP header)")
    return value


Header = Annotated[str, AfterValidator(_header)]


def _person(value: str) -> str:
    if not value.strip() or len(value) > 255:
        raise invalid("the sender's technical identity, 1 to 255 characters")
    return value


class _Applicant(Strict):
    firstName: Annotated[str, AfterValidator(_person)]  # noqa: N815 - HubEE's JSON names
    lastName: Annotated[str, AfterValidator(_person)]  # noqa: N815


class _HubeeTable(Strict):
    api_url: Annotated[str, AfterValidator(https_url)]
    token_url: Annotated[str, AfterValidator(https_url)]
    client_ids: dict[str, Any]
    client_secret_env: dict[str, Any] | None = None
    client_secret_files: dict[str, Any] | None = None
    timeout: PositiveFloat = 30.0
    editor_name: Header = "CNAF"
    application_name: Header = "flux-pmi"
    software_version: Header | None = None  # unset: flux_pmi.__version__
    applicant: _Applicant = _Applicant(firstName="CNAF", lastName="flux-pmi")
    _secrets: dict[str, bytes] = PrivateAttr(default_factory=dict)

    @field_validator("client_ids")
    @classmethod
    def _ids(cls, ids: dict[str, Any]) -> dict[str, Any]:
        if not ids or not all(k in FLOWS and isinstance(v, str) and v.strip() for k, v in ids.items()):
            raise invalid(f'a table of client ids per démarche among {", ".join(FLOWS)}, e.g. {{ GRO = "..." }}')
        return {k: v.strip() for k, v in ids.items()}

    @model_validator(mode="after")
    def _read_secrets(self, info: ValidationInfo) -> Self:
        if (self.client_secret_env is None) == (self.client_secret_files is None):
            raise invalid("one of client_secret_env or client_secret_files (secrets never sit here)")
        key = "client_secret_env" if self.client_secret_env is not None else "client_secret_files"
        refs: dict[str, Any] = getattr(self, key)
        if set(refs) != set(self.client_ids) or not all(isinstance(v, str) and v for v in refs.values()):
            raise invalid(f"one entry per client id ({', '.join(sorted(self.client_ids))}), each a string", key)
        base = context(info).get("base", Path.cwd())
        for flow, ref in refs.items():
            at = f"{key}.{flow}"
            value = secret_from_env(ref, at) if key == "client_secret_env" else secret_from_file(resolve(base, ref), at)
            if not value:
                raise invalid("a non-empty client secret", at)
            self._secrets[flow] = value
        return self

    def build(self) -> Hubee:
        from .. import __version__

        return Hubee(api_url=self.api_url, token_url=self.token_url, client_ids=self.client_ids,
                     secrets=dict(self._secrets), timeout=self.timeout, editor_name=self.editor_name,
                     application_name=self.application_name, software_version=self.software_version or __version__,
                     applicant=self.applicant.model_dump())


class _Defaults(Strict):
    flows: Flows | None = None
    empty_flows: bool = True
    transport: TransportConfig | None = None
    reemit_on_ko: bool = False


class _DepartmentTable(Strict):
    enabled: bool | None = None
    siret: Siret | None = None  # from the acte d'adhésion: replaces the registry's (often a placeholder)
    siret_demo: bool = False  # marks `siret` as a demo value: sent although it is the registry's placeholder
    certificate: str | None = None
    flows: Flows | None = None
    empty_flows: bool | None = None
    transport: TransportConfig | None = None
    reemit_on_ko: bool | None = None
    contacts: Addresses | None = None


class _RegistryRef(Strict):
    file: FilePath = REGISTRY_FILE


class _File(Strict):
    """`flux-pmi.toml` as it stands; `load` merges it with the registry."""

    service: _ServiceTable = _ServiceTable()
    retention: Retention = Retention()
    paths: _PathsTable = _PathsTable()
    sender: _SenderTable
    limits: Limits = Limits()
    delivery: DeliveryPolicy = DeliveryPolicy()
    build: BuildPolicy = BuildPolicy()
    defaults: _Defaults = _Defaults()
    registry: _RegistryRef = _RegistryRef()
    departments: dict[str, _DepartmentTable] = {}
    hubee: _HubeeTable | None = None
    notify: NotifyTable | None = None


def load_registry(path: Path = REGISTRY_FILE) -> dict[str, RegistryEntry]:
    registry: _Registry = validate(_Registry, read_toml(path), path)
    return registry.departments


def load(path: str | Path, *, check_files: bool = True) -> Settings:
    file = Path(path).resolve()
    raw = read_toml(file)
    base = file.parent
    if "sender" not in raw:
        raise ConfigError(file, "sender", "a [sender] table with certificate, key, archive_certificate, archive_key")
    model: _File = validate(_File, raw, file, base=base, check_files=check_files)
    registry_file = model.registry.file
    registry = load_registry(registry_file)
    for code in model.departments:
        if code not in registry:
            raise ConfigError(file, f"departments.{code}",
                              "a département code on 3 characters from the registry (e.g. 035, 02A, 971)")
    merge = _Merge(file, registry_file, model, check_files)
    departments = {code: merge.department(reg) for code, reg in registry.items()}
    hubee = model.hubee.build() if model.hubee is not None else None
    for dept in departments.values():
        _check_uses(file, dept, hubee)
    return Settings(file=file, base=base, paths=model.paths.build(base), sender=model.sender.sender,
                    limits=model.limits, delivery=model.delivery, build=model.build, departments=departments, raw=raw,
                    retention=model.retention, service=model.service.build(), hubee=hubee,
                    notify=model.notify.build() if model.notify is not None else None)


@dataclass(frozen=True, slots=True)
class _Merge:
    """The registry describes every département; the operator's file overrides it for the ones it
    lists, and [defaults] apply to those only."""

    file: Path
    registry_file: Path
    model: _File
    check_files: bool

    def transport(self, reg: RegistryEntry, listed: bool, table: _DepartmentTable) -> TransportConfig:
        defaults = self.model.defaults.transport
        if table.transport is not None:
            return table.transport
        if listed and defaults is not None:
            return defaults
        at = f"departments.{reg.code}.transport"
        transport: TransportConfig = validate(TransportConfig, reg.transport, self.registry_file, prefix=at,
                                              base=self.registry_file.parent)
        return transport

    def certificate(self, reg: RegistryEntry, table: _DepartmentTable) -> Path | None:
        if table.certificate is not None:
            return resolve(self.file.parent, table.certificate) if table.certificate else None
        return resolve(self.registry_file.parent, reg.certificate) if reg.certificate else None

    def enabled(self, reg: RegistryEntry, listed: bool, table: _DepartmentTable, transport: TransportConfig,
                cert: Path | None) -> bool:
        """Enabled as the file says, else when it has a transport and a certificate; what that needs is there."""
        where = f"departments.{reg.code}"
        src = self.file if listed else self.registry_file
        enabled = table.enabled if table.enabled is not None else transport.type != "disabled" and cert is not None
        if enabled and cert is None:
            raise ConfigError(src, f"{where}.certificate", "the département's encryption certificate (PEM)")
        if enabled and transport.type == "disabled":
            raise ConfigError(src, f"{where}.transport", "a transport (local, sftp, cft, hubee), here or in [defaults]")
        if enabled and self.check_files and cert is not None and not cert.is_file():
            raise ConfigError(src, f"{where}.certificate", f"an existing file ({cert} not found)")
        return enabled

    def department(self, reg: RegistryEntry) -> Department:
        listed = reg.code in self.model.departments
        table = self.model.departments.get(reg.code, _DepartmentTable())
        defaults = self.model.defaults
        transport = self.transport(reg, listed, table)
        cert = self.certificate(reg, table)
        flows = table.flows if table.flows is not None else \
            defaults.flows if listed and defaults.flows is not None else reg.flows
        number = table.siret or reg.siret
        return Department(
            code=reg.code, name=reg.name, siret=number, numorg=reg.numorg, holiday_zone=reg.holiday_zone,
            enabled=self.enabled(reg, listed, table, transport, cert), certificate=cert, flows=flows,
            empty_flows=table.empty_flows if table.empty_flows is not None else defaults.empty_flows,
            transport=transport, siret_demo=table.siret_demo,
            siret_placeholder=reg.siret_placeholder and number == reg.siret and not table.siret_demo,
            options={"reemit_on_ko": table.reemit_on_ko if table.reemit_on_ko is not None else defaults.reemit_on_ko},
            contacts=table.contacts if table.contacts is not None else reg.contacts,
        )


def _check_uses(file: Path, dept: Department, hubee: Hubee | None) -> None:
    """What HubEE needs of the [hubee] table for this département's flows, once the tables are merged."""
    where = f"departments.{dept.code}.transport"
    t = dept.transport
    if not dept.enabled:
        return
    if isinstance(t, HubeeConfig):
        if hubee is None:
            raise ConfigError(file, "hubee", f"a [hubee] table (api_url, token_url, client_ids...): {where} uses it")
        missing = [f for f in dept.flows if f not in hubee.client_ids]
        if missing:
            raise ConfigError(file, "hubee.client_ids", f"a client id for {', '.join(missing)} "
                              f"(département {dept.code} receives it over HubEE)")
