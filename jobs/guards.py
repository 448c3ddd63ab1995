"""Guard rails: what an operator's ordinary mistake must not be allowed to do.

Each of these once let a command lose or corrupt data with exit 0: an unmounted inbox
share made `run` send "nothing today" to every département; a wild `--date` sent real
records under a 2030 name, or delivered files that its own purge then forgot; a
world-readable signing key was accepted. So each is checked *before* anything changes,
and refused with a message naming the folder, the file or the date, and a documented
exit code. `check` reports the same findings without raising; `run` raises.
"""

from __future__ import annotations

import os
import pwd
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..config.settings import FLOWS, Department, Settings
from ..core.errors import CertificateError, StorageError
from ..core.fsutil import TMP_PREFIX, private_dir
from ..core.keyfiles import check_key_permissions
from ..seal import certs

# A business date may run one day ahead of the machine's clock (a night started just before
# midnight for the next day), no more.
MAX_DAYS_AHEAD = 1


# --- keys --------------------------------------------------------------------------------


def key_files(settings: Settings) -> list[tuple[str, str, Path]]:
    """(scope, what, path) of every private key a night uses: sender, archive, SFTP client keys."""
    s = settings.sender
    out = [("sender", "sender signing key", s.key), ("archive", "archive key", s.archive_key)]
    for dept in sorted(settings.enabled_departments(), key=lambda d: d.code):
        if dept.transport.type == "sftp":
            out.append((dept.code, "SFTP client key", dept.transport.path("key", settings.base)))
    return out


def key_problems(settings: Settings) -> list[tuple[str, str]]:
    """(scope, message) for each key file that is not owner-only (the rule: keyfiles.py)."""
    out = []
    for scope, what, path in key_files(settings):
        try:
            check_key_permissions(path, what)
        except CertificateError as exc:
            out.append((scope, str(exc)))
    return out


def require_owner_only_keys(settings: Settings) -> None:
    """Raise CertificateError (exit USAGE) naming every key file that others may read."""
    problems = key_problems(settings)
    if problems:
        raise CertificateError("; ".join(msg for _scope, msg in problems) + "; nothing was sent")


# --- the inbox ---------------------------------------------------------------------------


def inbox_folders(settings: Settings) -> list[Path]:
    return [settings.paths.inbox / flow for flow in FLOWS]


def missing_inbox_folders(settings: Settings) -> list[Path]:
    inbox = settings.paths.inbox
    if not inbox.is_dir():
        return [inbox]
    return [p for p in inbox_folders(settings) if not p.is_dir()]


def require_inbox(settings: Settings) -> None:
    """Raise StorageError when the inbox or a flow folder is missing (an unmounted share?).

    Creating it would turn "the input is elsewhere" into "nothing arrived today", sent to every
    département as an empty flow. The operator creates the inbox folders once (docs/operations.md).
    """
    missing = missing_inbox_folders(settings)
    if missing:
        raise StorageError(missing[0], "inbox folder missing (an unmounted share?): nothing was claimed or sent. "
                           f"Create {', '.join(f.name for f in inbox_folders(settings))} under "
                           f"{settings.paths.inbox} once, or fix [paths] inbox")


# --- folders flux-pmi writes to ------------------------------------------------------------


@dataclass(frozen=True)
class Folder:
    what: str
    path: Path
    must_exist: bool = False  # created by the operator (or node_exporter), never by flux-pmi


def written_folders(settings: Settings) -> list[Folder]:
    """Every folder a night, a reemit or a purge writes to (an inbox flow folder too: claiming renames out)."""
    p = settings.paths
    out = [Folder("trace", p.trace.parent)]
    out += [Folder(f"inbox {f.name}", f, must_exist=True) for f in inbox_folders(settings)]
    out += [Folder("work", p.work), Folder("archive", p.archive), Folder("reports", p.reports),
            Folder("quarantine", p.quarantine), Folder("consumed", p.consumed)]
    roots = sorted({d.transport.path("root", settings.base) for d in settings.enabled_departments()
                    if d.transport.type == "local"})
    out += [Folder("local drop", r) for r in roots]
    if settings.service.metrics_file is not None:
        out.append(Folder("metrics", settings.service.metrics_file.parent, must_exist=True))
    return out


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _probe(folder: Path) -> str | None:
    """os.access, then a hidden file created and deleted: os.access judges root by the mode bits
    alone (an NFS root_squash, an immutable folder, a full disk say otherwise); a real create tells."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"not writable by {_user()}"
    probe = folder / f"{TMP_PREFIX}probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        return f"not writable by {_user()} ({exc.strerror})"
    return None


def folder_problem(folder: Folder) -> str | None:
    """None when `folder` exists (or can be created) and its user can write there; else why not."""
    path = folder.path
    if path.exists():
        return "not a folder" if not path.is_dir() else _probe(path)
    if folder.must_exist:
        return "does not exist"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {parent} is not a folder"
    problem = _probe(parent)
    return f"cannot be created: {parent} is {problem}" if problem else None


def require_own_folders(settings: Settings) -> None:
    """Raise StorageError naming every folder of the installation's own (trace, work, archive, reports,
    quarantine, consumed) that cannot be written, before anything is claimed.

    Found late, a read-only `reports/` stopped a night after it had claimed, built and delivered: its
    exit code said nothing was sent. A partner's own folder (a local drop) is not checked here: it
    fails that partner's deliveries alone, and the other départements go on.
    """
    found = [(folder, problem) for folder in written_folders(settings)
             if not folder.what.startswith(("inbox ", "local drop", "metrics"))
             and (problem := folder_problem(folder)) is not None]
    if found:
        (first, why), others = found[0], [f"{f.what} {f.path}: {p}" for f, p in found[1:]]
        more = f" (also {'; '.join(others)})" if others else ""
        raise StorageError(first.path, f"{first.what} folder {why}{more}: nothing was claimed or sent "
                           "(`flux-pmi check` lists every folder)")


def _device(path: Path) -> int | None:
    """The file system `path` is on, or will be created on: that of its nearest existing ancestor."""
    for candidate in (path, *path.parents):
        try:
            return os.stat(candidate).st_dev
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


def volume_problems(settings: Settings) -> list[str]:
    """The folders a run renames inbox files into (work, quarantine, consumed) that sit on another file
    system than an inbox flow folder. A rename cannot cross file systems: the claim, which must move each
    input exactly once, stopped on its first file with EXDEV (a traceback, found with work/ on a tmpfs)."""
    p = settings.paths
    inbox = [(folder, _device(folder)) for folder in inbox_folders(settings) if folder.is_dir()]
    out = []
    for label, folder in (("work", p.work), ("quarantine", p.quarantine), ("consumed", p.consumed)):
        dev = _device(folder)
        other = next((f for f, d in inbox if None not in (d, dev) and d != dev), None)
        if other is not None:
            out.append(f"{label} folder {folder} is on another file system than the inbox folder {other}")
    return out


def require_one_volume(settings: Settings) -> None:
    """Raise StorageError (before anything is claimed) when inputs could not be moved by rename."""
    problems = volume_problems(settings)
    if problems:
        raise StorageError(settings.paths.inbox, f"{'; '.join(problems)}: inputs are taken out of the inbox by "
                           "rename, which cannot cross file systems; put [paths] work, quarantine and consumed "
                           "on the inbox's file system (under [paths] state, say): nothing was claimed or sent")


def shared_recipient_keys(settings: Settings) -> dict[str, str]:
    """Enabled départements whose certificate holds the same key as another's of a different SIRET: why, by code.

    A certificate copied from one département's table to the next passed `check` and `run`: the second
    département's declarations were sealed for the first one's PMI, which alone could open them, and
    the second could not. Two départements of one organisation (one SIRET: a single collectivity) may
    share a key; two organisations may not. Which of the two tables is wrong cannot be told: both wait.
    """
    by_key: dict[bytes, list[Department]] = defaultdict(list)
    for dept in settings.enabled_departments():
        if dept.certificate is None:
            continue
        try:
            cert = certs.load_certificate(dept.certificate)
        except CertificateError:
            continue  # unreadable: said by `check` and by the build, not here
        by_key[cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)].append(dept)
    out = {}
    for group in by_key.values():
        if len({d.siret for d in group}) > 1:
            for dept in group:
                others = ", ".join(sorted(d.code for d in group if d is not dept))
                out[dept.code] = (f"its certificate {dept.certificate} has the same key as that of {others}, whose SIRET "
                                  "differs: one PMI would open the other's declarations")
    return out


def ensure_private_dir(path: Path) -> Path:
    """fsutil.private_dir, with a missing permission or a read-only mount said as such (exit STORAGE)."""
    try:
        return private_dir(path)
    except OSError as exc:
        raise StorageError(exc.filename or path, f"cannot create this folder as {_user()} ({exc.strerror}); "
                           "point [paths] at a writable place (docs/operations.md, \"Folders\")") from None


# --- dates ---------------------------------------------------------------------------------


def _retention_months(settings: Settings) -> int:
    """What the purge at the end of a run keeps: a date before it would be delivered, then forgotten."""
    return settings.retention.months


def run_date_problem(business_date: date, today: date, settings: Settings) -> str | None:
    """Why `run --date` must refuse `business_date`, or None."""
    from .retention import retention_cutoff

    if business_date > today + timedelta(days=MAX_DAYS_AHEAD):
        return (f"--date {business_date} is more than {MAX_DAYS_AHEAD} day ahead of today ({today}): "
                "files would carry a date that has not come")
    months = _retention_months(settings)
    cutoff = retention_cutoff(today, months)
    if business_date < cutoff:
        return (f"--date {business_date} is older than the retention ({months} months: before {cutoff}): "
                "the run's own purge would forget what it delivers, so it could never be re-emitted")
    return None


def purge_today_problem(purge_today: date, today: date) -> str | None:
    """Why `purge --today` must refuse `purge_today`, or None: a future day wipes history not yet due."""
    if purge_today > today + timedelta(days=MAX_DAYS_AHEAD):
        return (f"--today {purge_today} is more than {MAX_DAYS_AHEAD} day ahead of the clock ({today}): "
                "it would delete archive files and trace rows the retention still keeps")
    return None
