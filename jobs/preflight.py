"""`flux-pmi check`: is this installation able to deliver tonight? Sends no data.

It loads and validates the configuration, checks every certificate that a seal will
need (expired or not yet valid: error; expiring within 30 days: warning), flags
placeholder SIRETs, and asks each enabled partner's transport to prove connection,
host key, authentication and a writable remote folder. Partners are checked in
parallel, so one that is down costs its own timeout and no more. With a `[notify]` table, it
logs in to the SMTP relay the incident notices go through (nothing is sent).

It also says, as errors, what `run` refuses (guards.py): a missing inbox or flow folder,
a private key that others may read, a folder flux-pmi writes to that its user cannot
write (tested with a real file, not with the mode bits only).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from ..archive import ArchiveStore
from ..config.settings import Department, Settings
from ..core.errors import CertificateError, FluxError, MailError
from ..seal import certs
from ..seal.certs import EXPIRY_WARNING_DAYS
from ..trace.store import recent_archived_files, waiting_by_department
from ..transport.base import Checkable, CheckResult
from ..transport.registry import transport_for
from . import guards, mailer


class Level(StrEnum):
    """How a finding is printed, and what it means for tonight."""

    OK = "ok"
    WARN = "WARN"  # tonight works; someone should look
    ERROR = "ERROR"  # `run` refuses, or some files will not go


@dataclass(frozen=True)
class Finding:
    scope: str  # "sender", "archive", a département code
    ok: bool
    what: str
    detail: str = ""
    warning: bool = False

    @property
    def level(self) -> Level:
        return Level.ERROR if not self.ok else (Level.WARN if self.warning else Level.OK)


def _cert_findings(scope: str, path, now: datetime, *, role: str, key=None, passphrase=None) -> list[Finding]:
    try:
        cert = certs.load_certificate(path)
        if role == "signer":
            certs.check_signer(cert, certs.load_private_key(key, passphrase), now=now)
        else:
            certs.check_recipient(cert, now=now, role=role)
    except (CertificateError, FluxError) as exc:
        return [Finding(scope, False, f"{role} certificate unusable", str(exc))]
    left = certs.days_left(cert, now)
    if left <= EXPIRY_WARNING_DAYS:
        return [Finding(scope, True, f"{role} certificate expires in {left} day(s)", certs.describe(cert),
                        warning=True)]
    return [Finding(scope, True, f"{role} certificate valid ({left} days left)")]


def certificate_findings(settings: Settings, now: datetime) -> list[Finding]:
    s = settings.sender
    out: list[Finding] = []
    for scope, role, path in settings.certificates_in_use():
        out += _cert_findings(scope, path, now, role=role, key=s.key if role == "signer" else None,
                              passphrase=s.key_passphrase)
    shared = guards.shared_recipient_keys(settings)
    for dept in settings.enabled_departments():
        if dept.siret_placeholder:
            # `run` sends nothing to it: the DGE envelope and the HubEE folder would name a wrong receiver.
            out.append(Finding(dept.code, False, "SIRET is a registry placeholder",
                               f"set [departments.\"{dept.code}\"] siret from the acte d'adhésion; "
                               "until then `run` sends nothing to this département"))
        elif dept.code in shared:
            out.append(Finding(dept.code, False, "certificate key shared with another SIRET",
                               f"{shared[dept.code]}; until each has its own, `run` sends nothing to either"))
        elif dept.siret_demo:
            out.append(Finding(dept.code, True, "SIRET is marked as a demo value (siret_demo = true)",
                               "never in production: set the SIRET of the acte d'adhésion", warning=True))
    return out


def _partner(settings: Settings, dept: Department) -> list[Finding]:
    try:
        transport = transport_for(settings, dept)
    except FluxError as exc:
        return [Finding(dept.code, False, f"{dept.transport.type} transport cannot be built", str(exc))]
    try:
        results: list[CheckResult] = (
            transport.check() if isinstance(transport, Checkable)
            else [CheckResult(dept.code, True, f"{dept.transport.type} transport built", "it offers no check",
                              warning=True)]
        )
    except Exception as exc:  # a check must report, never crash the others
        results = [CheckResult(dept.code, False, f"{dept.transport.type} check failed", type(exc).__name__)]
    finally:
        transport.close()
    return [Finding(dept.code, r.ok, r.what, r.detail, r.warning) for r in results]


def partner_findings(settings: Settings, *, parallel: int | None = None) -> list[Finding]:
    depts = settings.enabled_departments()
    if not depts:
        return [Finding("-", True, "no département enabled", "fill in a transport and a certificate", warning=True)]
    with ThreadPoolExecutor(max_workers=parallel or settings.delivery.parallel) as pool:
        return [f for fs in pool.map(lambda d: _partner(settings, d), depts) for f in fs]


def key_findings(settings: Settings) -> list[Finding]:
    bad = dict(guards.key_problems(settings))
    out = []
    for scope, what, path in guards.key_files(settings):
        if scope in bad:
            out.append(Finding(scope, False, f"{what} not owner-only", bad[scope]))
        elif path.exists():
            out.append(Finding(scope, True, f"{what} owner-only", str(path)))
    return out


def storage_findings(settings: Settings) -> list[Finding]:
    out = []
    missing = set(guards.missing_inbox_folders(settings))
    for folder in guards.written_folders(settings):
        if folder.path in missing or settings.paths.inbox in missing and folder.path.parent == settings.paths.inbox:
            out.append(Finding("folders", False, f"{folder.what} folder missing", f"{folder.path}: `run` refuses "
                               "to claim or send anything until it exists (an unmounted share?)"))
            continue
        problem = guards.folder_problem(folder)
        if problem:
            out.append(Finding("folders", False, f"{folder.what} folder unusable", f"{folder.path}: {problem}"))
        else:
            out.append(Finding("folders", True, f"{folder.what} folder writable", str(folder.path)))
    out += [Finding("folders", False, "not on the inbox's file system", f"{problem}: `run` refuses to claim "
                    "(inputs are moved by rename)") for problem in guards.volume_problems(settings)]
    return out


def archive_findings(settings: Settings) -> list[Finding]:
    """The archive folder holds the files the trace says it archived: a `[paths] archive` pointed at a
    new folder by mistake would make every re-emission and purge miss them, in silence."""
    recent = recent_archived_files(settings.paths.trace)
    if not recent:
        return []
    store = ArchiveStore(settings.paths.archive)
    missing = [name for day, name in recent if not store.sealed_path(day, name).is_file()]
    if not missing:
        return [Finding("archive", True, f"archive holds the {len(recent)} latest archived file(s)",
                        str(settings.paths.archive))]
    what = "none" if len(missing) == len(recent) else f"{len(recent) - len(missing)}"
    return [Finding("archive", False, f"archive holds {what} of the {len(recent)} latest archived file(s)",
                    f"{settings.paths.archive}: missing e.g. {missing[0]}; wrong [paths] archive, or files "
                    "removed by hand? Re-emission needs them")]


def stranded_findings(settings: Settings) -> list[Finding]:
    """A département taken out of the config (or disabled) while files wait for it or records are kept
    for it: nothing reaches its PMI until it is enabled again, and only `status` would show it."""
    enabled = {d.code for d in settings.enabled_departments()}
    out = []
    for code, (files, kept) in sorted(waiting_by_department(settings.paths.trace).items()):
        if code in enabled:
            continue
        what = " and ".join(part for part in (f"{files} file(s) wait" if files else "",
                                              f"{kept} record(s) are kept" if kept else "") if part)
        out.append(Finding(code, True, f"not enabled, yet {what} for it",
                           "nothing reaches its PMI until its table has a certificate and a transport again "
                           "(`flux-pmi status` lists them)", warning=True))
    return out


def mail_findings(settings: Settings) -> list[Finding]:
    """The relay that carries the incident notices (annexe 2, 5.1) takes us: logged in, nothing sent."""
    notify = settings.notify
    if notify is None:
        return []
    try:
        proven = mailer.probe(notify)
    except MailError as exc:
        return [Finding("notify", False, "SMTP relay unusable: incident notices would wait", str(exc))]
    return [Finding("notify", True, f"SMTP relay {notify.host}:{notify.port} usable", proven)]


def run_checks(settings: Settings, now: datetime) -> list[Finding]:
    return (storage_findings(settings) + archive_findings(settings) + stranded_findings(settings)
            + key_findings(settings) + certificate_findings(settings, now) + mail_findings(settings) + partner_findings(settings))
