"""Takes input material out of the inbox exactly once.

A claim is recorded in the trace *before* any file moves (batch state `claiming`),
then each file is renamed into the batch's work folder, then the batch becomes
`claimed`. A crash in between is finished by the next run from the trace, so a file
is never read twice nor forgotten. The same bytes dropped again (same SHA-256) are
recognised and set aside, never emitted twice.

Upstream writers use a hidden or `.tmp`/`.part` name while writing: those are left alone.
Anything else in a flow folder that is neither claimed nor set aside (a DSG `.xml` dropped in
SGR/, `x.xml.gz`, a name without extension, a folder...) is left where it is too, since an
upstream tool may still own it, but `not_taken` names it: `run` logs and prints each one, and
`status` counts them, so that a declaration in the wrong folder does not miss its deadline unseen.

What is claimed, per flow folder (case-insensitive extensions; docs/input-contract.md):
DSG `*.xml` (DGE envelopes, or bare DSGCNAF documents); GRO `*.xml` (Cristal's XML) and
`*.csv` (the secondary CSV extract); SGR `*.zip` (the scanning chain's zip, index and PDFs
inside) and `*.csv` (the secondary CSV index, with the PDFs it names beside it).

The inbox is written by others, so before a claim `screen` sets aside, each with a `.reason`,
what the night cannot take: a name that is not UTF-8 (or holds a control character), a link,
a FIFO or a folder under an input's name, a file the service user cannot read, an SGR scan it
cannot read. Material set aside is never written over, and a name that cannot be written down
(or is too long to take a suffix) is replaced by a technical one, with its hash as evidence.
SGR scan paths are confined to the flow folder: no link in any component, and the resolved
path inside the folder.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path, PurePosixPath

from stdnum.fr import nir as stdnum_nir

from ..core.errors import StorageError
from ..core.fsutil import (
    NAME_MAX,
    atomic_write,
    free_name,
    fsync_dir,
    name_digest,
    open_regular,
    private_dir,
    storable_name,
)
from ..core.log import mask_personal
from ..testing import faults
from ..trace.lifecycle import BatchState, InboxKind
from ..trace.store import TraceStore

PATTERNS: dict[str, tuple[str, ...]] = {"DSG": (".xml",), "GRO": (".xml", ".csv"), "SGR": (".zip", ".csv")}
IGNORED_SUFFIXES = (".tmp", ".part", ".reason")
# What a writer's temporary ends with (docs/input-contract.md, "Dropping files safely"), in any case.
IN_PROGRESS_SUFFIXES = (".tmp", ".part")
REASON_SUFFIX = ".reason"
# Room kept after a name set aside: its `.reason` and a `.<n>` that keeps it unique.
_SUFFIX_ROOM = len(REASON_SUFFIX) + len(".9999")

# Codes of what `screen` sets aside (the parser's codes are in flows/check.py).
SCREEN_REASONS = {
    "NAME_ENCODING": "the file name is not valid UTF-8",
    "NAME_UNSAFE": "the file name holds a control character (or one that reorders or breaks a line on screen)",
    "NAME_PERSONAL": "the file name holds a NIR (no personal data in names)",
    "NOT_A_FILE": "not a regular file",
    "UNREADABLE": "the file cannot be read by the service user",
    "SCAN_UNREADABLE": "a scan named by an SGR index cannot be read by the service user",
}


@dataclass(frozen=True, slots=True)
class Batch:
    id: int
    flow: str
    business_date: date
    dir: Path  # the claimed material: <work>/batch-<id>/<FLOW>/


@dataclass(frozen=True, slots=True)
class SetAside:
    """An inbox entry the night cannot take, and where it went."""

    flow: str
    name: str  # printable: the original name, or `unnamed-<hash>` when it cannot be written down
    code: str
    reason: str  # no personal data: codes, error strings, technical names
    path: Path | None  # where it is now in quarantine/ (None: it could not be moved, retried next night)


@dataclass(frozen=True, slots=True)
class NotTaken:
    """An inbox entry the night neither claims nor sets aside: left in place, reported every night."""

    flow: str
    name: str  # printable: the original name, or `unnamed-<hash>` when it cannot be written down
    reason: str  # fixed phrases (and an OS error): never a part of the name, which may carry anything


def batch_dir(work: Path, batch_id: int, flow: str) -> Path:
    return work / f"batch-{batch_id:06d}" / flow


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Fifteen characters as a NIR is written with its key (Corsica's 2A/2B included), between anything but digits.
_NIR_IN_NAME = re.compile(r"(?<![0-9])[1-478][0-9]{4}(?:[0-9]{2}|2[AB])[0-9]{8}(?![0-9])")


def _holds_a_nir(name: str) -> bool:
    """Whether `name` holds a real NIR: its shape and its key (stdnum). The key is what tells a NIR from a
    date and a sequence number run together, so a name is never refused for a number that only looks like one."""
    return any(stdnum_nir.is_valid(m.group()) for m in _NIR_IN_NAME.finditer(name.upper()))


def _writable(name: str) -> bool:
    """A name the trace, the logs, the reports and quarantine/ may carry as it is: storable, and
    holding no NIR (upstream must not, and one that does is set aside under its hash: its name is
    personal data). Other numbers are left to the logs' last defence, which masks their shapes."""
    return storable_name(name) and not _holds_a_nir(name)


def shown_name(name: str) -> str:
    """The name as the trace, the logs and the reports may carry it."""
    return name if _writable(name) else f"unnamed-{name_digest(name)[:16]}"


def _digest_and_size(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with os.fdopen(open_regular(path), "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _sha256(path: Path) -> str:
    return _digest_and_size(path)[0]


def sha256_of(path: Path) -> str:
    """The SHA-256 the claim records for a file: the trace recognises consumed bytes by it."""
    return _sha256(path)


def _is_ours(name: str, flow: str) -> bool:
    return (not name.startswith(".") and name.lower().endswith(PATTERNS[flow])
            and not name.endswith(IGNORED_SUFFIXES))


def candidates(inbox: Path, flow: str) -> list[Path]:
    folder = inbox / flow
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if _is_ours(p.name, flow) and _writable(p.name) and p.is_file() and not p.is_symlink())


def confined(folder: Path, rel: str) -> Path | None:
    """`folder/rel` if it is a regular file reached through real folders only, inside `folder`; else None.

    An SGR index is data from outside: a FICHIER must not make us move (and then send) a file
    from elsewhere, through `..`, an absolute path, or a folder of the inbox that is a link.
    Any error on the way (too long a name or path, a loop, no permission) means "not there".
    """
    parts = rel.split("/")
    if (not rel or rel.startswith("/") or "\\" in rel or not storable_name(rel.replace("/", "_"))
            or any(p in ("", ".", "..") for p in parts)):
        return None
    try:
        if any(len(os.fsencode(p)) > NAME_MAX for p in parts):
            return None
        path = folder
        for i, part in enumerate(parts):
            path = path / part
            mode = os.lstat(path).st_mode
            if not (stat.S_ISREG(mode) if i == len(parts) - 1 else stat.S_ISDIR(mode)):
                return None  # a link (file or folder), a FIFO...: never followed
        root = os.path.realpath(folder)
        if os.path.commonpath([root, os.path.realpath(path)]) != root:
            return None
    except (OSError, ValueError):
        return None
    return path


def _index_cells(index: Path) -> list[str]:
    """The FICHIER cells of an SGR index (the parser judges the index itself)."""
    try:
        with os.fdopen(open_regular(index), "rb") as fh:
            text = fh.read().decode("iso-8859-1")
        rows = csv.DictReader(io.StringIO(text), delimiter=";")
        return [(r.get("FICHIER") or "").strip() for r in rows]
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def _scans_named_by(index: Path, folder: Path) -> list[str]:
    """The PDFs an SGR index names that are safe to move (the parser judges the rest)."""
    return sorted({PurePosixPath(c).as_posix() for c in _index_cells(index) if confined(folder, c) is not None})


def _move(src: Path, dst: Path) -> None:
    private_dir(dst.parent)
    os.replace(src, dst)


def _aside_base(name: str, suffix: str = "") -> str:
    """The name material is set aside under: its own when it can be written down and takes suffixes."""
    if _writable(name) and len((name + suffix).encode("utf-8")) + _SUFFIX_ROOM <= NAME_MAX:
        return name + suffix
    return f"unnamed-{name_digest(name)[:16]}{suffix}"


def _reason_text(name: str, code: str, reason: str) -> str:
    if _writable(name):
        origin = f"file: {name}"
    elif storable_name(name):
        origin = f"file: name withheld ({len(os.fsencode(name))} bytes), sha256 of its bytes {name_digest(name)}"
    elif _utf8(name) and mask_personal(name) == name:  # only control characters kept it out, no NIR or phone shape
        origin = (f"file: name with control characters, escaped: {name.encode('unicode_escape').decode('ascii')}"
                  f" (sha256 of its bytes {name_digest(name)})")
    else:  # the raw name may hold anything (a person's name in another encoding): its hash only
        raw = os.fsencode(name)
        origin = f"file: name not storable ({len(raw)} bytes), sha256 of its bytes {name_digest(name)}"
    return f"{code}: {reason}\n{origin}\n"


def quarantine(src: Path, quarantine_root: Path, flow: str, name: str, code: str, reason: str) -> Path:
    """Set a whole unreadable input file aside, with a `.reason` file an operator can read.

    Never over another one: a second bad file under the same name gets `<name>.2`. The `.reason`
    is written first, so that no material sits in quarantine/ without the date the retention needs;
    after a crash in between, the next attempt finds its own `.reason` alone and completes it.
    """
    folder = private_dir(quarantine_root / flow)
    text = _reason_text(name, code, reason)
    base, n, target = _aside_base(name), 1, ""
    while not target:
        candidate = base if n == 1 else f"{base}.{n}"
        material, note = folder / candidate, folder / f"{candidate}{REASON_SUFFIX}"
        if not os.path.lexists(material):
            if not os.path.lexists(note) or _same_text(note, text):
                target = candidate
        n += 1
    atomic_write(folder / f"{target}{REASON_SUFFIX}", text.encode("utf-8"))
    if os.path.lexists(src):
        _move(src, folder / target)
        faults.point("quarantine-move")
    _owner_only(folder / target)
    return folder / target


def _owner_only(path: Path) -> None:
    """Quarantined input holds personal data: owner-only whatever mode upstream gave it (a link
    is left as it is: it is never followed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        os.chmod(path, 0o700)
    elif not stat.S_ISLNK(st.st_mode):
        os.chmod(path, 0o600)


def _same_text(path: Path, text: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        return False


def _problem(path: Path, name: str) -> tuple[str, str] | None:
    """(code, reason) when this inbox entry cannot be claimed, None when it can (or is gone)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "NAME_ENCODING", SCREEN_REASONS["NAME_ENCODING"]
    if not storable_name(name):
        return "NAME_UNSAFE", SCREEN_REASONS["NAME_UNSAFE"]
    if not _writable(name):
        return "NAME_PERSONAL", SCREEN_REASONS["NAME_PERSONAL"]
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return "UNREADABLE", f"{SCREEN_REASONS['UNREADABLE']} ({exc.strerror or errno.errorcode.get(exc.errno or 0)})"
    if stat.S_ISLNK(st.st_mode):
        return "NOT_A_FILE", "a symbolic link (links in the inbox are never followed)"
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a special file"
        return "NOT_A_FILE", f"{SCREEN_REASONS['NOT_A_FILE']} ({kind})"
    return _unreadable(path, "UNREADABLE")


def _unreadable(path: Path, code: str) -> tuple[str, str] | None:
    try:
        fd = open_regular(path)
        try:
            os.read(fd, 1)
        finally:
            os.close(fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return code, f"{SCREEN_REASONS[code]} ({exc.strerror or errno.errorcode.get(exc.errno or 0)})"
    return None


def _set_aside(src: Path, quarantine_root: Path, flow: str, name: str, code: str, reason: str) -> SetAside:
    shown = shown_name(name)
    try:
        return SetAside(flow, shown, code, reason, quarantine(src, quarantine_root, flow, name, code, reason))
    except OSError as exc:  # cannot even be moved: reported, and tried again next night
        return SetAside(flow, shown, code, f"{reason}; not moved ({exc.strerror or exc.errno})", None)


def unfit(inbox: Path, flow: str) -> list[tuple[Path, str, str, str]]:
    """(path, name, code, reason) of every entry of the flow's inbox folder the night cannot take.

    Nothing moves: `screen` sets them aside, a dry run (jobs/plan.py) only counts them.
    """
    folder = inbox / flow
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    out: list[tuple[Path, str, str, str]] = []
    for name in names:
        if not _is_ours(name, flow):
            continue
        problem = _problem(folder / name, name)
        if problem is not None:
            out.append((folder / name, name, *problem))
        elif flow == "SGR" and name.lower().endswith(".csv"):  # a zip carries its scans inside
            for cell in _index_cells(folder / name):
                scan = confined(folder, cell)
                problem = _unreadable(scan, "SCAN_UNREADABLE") if scan is not None else None
                if scan is not None and problem is not None and all(scan != p for p, *_ in out):
                    code, reason = problem
                    out.append((scan, scan.name, code, f"{reason}; named by the index {name}"))
    return out


def in_progress(name: str) -> bool:
    """A writer's temporary, as the contract names them: hidden, or ending in `.tmp`/`.part`.

    Not `..x.xml`: a temporary is `.` before the name it will be renamed to, and a name starting
    with `.` is never taken, so no writer has a reason to use `..`; it is reported, not ignored.
    """
    return (name.startswith(".") and not name.startswith("..")) or name.lower().endswith(IN_PROGRESS_SUFFIXES)


def _named_scans(folder: Path, names: list[str]) -> set[str]:
    """The top-level entries (PDFs, or folders holding them) the SGR CSV indexes in the folder name:
    they are taken with their index."""
    return {rel.split("/")[0] for name in names if name.lower().endswith(".csv") and _is_ours(name, "SGR")
            for rel in _scans_named_by(folder / name, folder)}


def _holds_anything(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(True for _ in entries)
    except OSError:
        return True  # cannot be looked into: it may hold a declaration


def _wrong_name(name: str, flow: str) -> str:
    """Why a regular file's name is not one the flow takes, guessing the mistake when it is cheap."""
    lower, taken = name.lower(), " or ".join(PATTERNS[flow])
    if lower.startswith(".."):
        return "a name starting with '..': hidden, never taken"
    if lower.rstrip().endswith(PATTERNS[flow]):
        return f"a blank after {taken} at the end of the name"
    others = [f for f, exts in PATTERNS.items() if f != flow and lower.endswith(exts)]
    if others:
        ext = lower[lower.rindex("."):]
        return f"not a {taken} for {flow}; {ext} is for {' or '.join(others)}: the wrong folder?"
    if flow == "SGR" and lower.endswith(".pdf"):
        return "a PDF no SGR index in the folder names"
    return f"not a {taken} for {flow}"


def _why_not_taken(path: Path, name: str, flow: str) -> str | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None  # gone since the folder was listed
    except OSError as exc:
        return f"cannot be looked at by the service user: {exc.strerror or exc.errno}"
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link: links in the inbox are never followed"
    if stat.S_ISDIR(st.st_mode):  # an empty one holds no declaration: not worth a line every night
        return "a folder: nothing in a sub-folder is taken" if _holds_anything(path) else None
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return _wrong_name(name, flow)


def not_taken(inbox: Path, flow: str) -> list[NotTaken]:
    """Every entry of the flow's inbox folder the night neither claims nor sets aside, and why.

    Claimed or set aside is every name of the flow's extensions (`candidates`, else `unfit`) and,
    in SGR, what a CSV index names; ignored is a writer's temporary (`in_progress`) and an empty
    folder. The rest stays where it is: nothing here moves, as an upstream tool may still own it.
    Read after the claim, it is what the night left behind; before (a dry run, `status`), the same.
    """
    folder = inbox / flow
    try:
        names = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []  # no inbox: the night refuses to start (STORAGE), `status` has nothing to count
    except OSError as exc:
        raise StorageError(folder, f"cannot list the inbox ({exc.strerror})") from exc
    scans = _named_scans(folder, names) if flow == "SGR" else set()
    out: list[NotTaken] = []
    for name in names:
        if _is_ours(name, flow) or in_progress(name) or name in scans:
            continue
        reason = _why_not_taken(folder / name, name, flow)
        if reason is not None:
            out.append(NotTaken(flow, shown_name(name), reason))
    return out


def screen(inbox: Path, quarantine_root: Path, flow: str) -> list[SetAside]:
    """Set aside, before the claim, every entry of the flow's inbox folder the night cannot take."""
    return [_set_aside(path, quarantine_root, flow, name, code, reason) for path, name, code, reason in unfit(inbox, flow)]


def claim(trace: TraceStore, *, inbox: Path, work: Path, consumed: Path, flow: str, business_date: date,
          run_id: int, now: datetime, on_duplicate: Callable[[str], None] | None = None) -> tuple[Batch | None, list[str]]:
    """Claim the flow's new inbox files into one batch. Returns (batch or None, names set aside as duplicates).

    `on_duplicate(name)` is called before a duplicate is moved aside: its notice is written first, so
    that a kill in between notes it twice at worst (the next run finds it again), never not at all.
    The same bytes under two names in one claim are a duplicate too: the first name (in name order) is
    taken, the other set aside (before, both were taken and every record of the second was rejected
    as DUPLICATE, one reject line per record instead of one notice for the file).
    """
    folder = inbox / flow
    entries: list[tuple[str, str, str, int]] = []
    duplicates: list[str] = []
    taken_scans: set[str] = set()
    taken: set[str] = set()  # digests of the inputs claimed so far (an empty file is judged by its parse)
    for path in candidates(inbox, flow):
        try:
            digest, size = _digest_and_size(path)
        except OSError:
            continue  # changed since `screen` looked at it: left in place, screened again next night
        if (size and digest in taken) or trace.known_input(flow, digest) is not None:
            if on_duplicate is not None:
                on_duplicate(path.name)
            faults.point("duplicate-noted")
            dup_dir = private_dir(consumed / "duplicates" / flow)
            _move(path, dup_dir / free_name(dup_dir, _aside_base(path.name, f".{digest[:12]}")))
            duplicates.append(path.name)
            continue
        entries.append((path.name, InboxKind.INPUT, digest, size))
        taken.add(digest)
        if flow == "SGR" and path.name.lower().endswith(".csv"):
            for rel in _scans_named_by(path, folder):
                if rel not in taken_scans:
                    try:
                        scan_digest, scan_size = _digest_and_size(folder / rel)
                    except OSError:
                        continue  # the parser finds it missing and rejects its record
                    taken_scans.add(rel)
                    entries.append((rel, InboxKind.SCAN, scan_digest, scan_size))
    if not entries:
        return None, duplicates
    batch_id = trace.create_batch(flow, business_date, run_id, now, entries)
    finish_claim(trace, batch_id, inbox=inbox, work=work, flow=flow, now=now)
    return Batch(batch_id, flow, business_date, batch_dir(work, batch_id, flow)), duplicates


def finish_claim(trace: TraceStore, batch_id: int, *, inbox: Path, work: Path, flow: str, now: datetime) -> None:
    """Move the files of a `claiming` batch; safe to call again after a crash midway."""
    target = private_dir(batch_dir(work, batch_id, flow))
    for row in trace.batch_files(batch_id):
        dst = target / row.name
        # Confined again: a folder of the inbox swapped for a link since the claim is not followed.
        src = confined(inbox / flow, row.name)
        if src is not None and not dst.exists():
            _move(src, dst)
            faults.point("claim-move")
    fsync_dir(target)
    if (inbox / flow).exists():
        fsync_dir(inbox / flow)
    trace.set_batch_state(batch_id, BatchState.CLAIMED, now)


def retire_batch(work: Path, consumed: Path, batch_id: int, business_date: date,
                 keep: Callable[[Path], object] | None = None) -> None:
    """Move a finished batch's material to `consumed/<date>/` (kept until the purge).

    With `keep` (the night's: archive/consumed.keep), the material is handed to it instead,
    to be kept encrypted only: plaintext consumed input must not stay readable at rest.
    """
    src = work / f"batch-{batch_id:06d}"
    if keep is not None:
        keep(src)
        return
    if src.exists():
        dst = private_dir(consumed / business_date.isoformat()) / src.name
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(src, dst)
