"""The one routine that publishes a file in a partner's folder: temporary name, check, rename, marker.

The local drop and SFTP publish the same way, so a receiver listing the folder never sees a
partial file under its final name, and a rerun after a crash sends nothing twice:

1. a temporary never carries the final name, and is opened truncated: what an interrupted
   delivery left under it is overwritten, then renamed or removed; when the file turns out to
   be there already, the temporaries are removed instead;
2. a file already under the final name is ours only with the same size and either our
   `.sha256` marker beside it or, the marker missing (a crash between rename and marker),
   the same SHA-256; then only the marker is completed. "Ours" includes the file's earlier
   seals (`Delivery.earlier`: re-sealed for a renewed certificate after a delivery the trace
   did not see): the receipt then says which one the partner holds, and nothing is sent again.
   Anything else is refused, permanently;
3. otherwise the bytes go under a temporary name, their size and SHA-256 are checked, and
   the temporary is renamed into place;
4. `<file>.sha256` (the `sha256sum` line) is the completion marker: its temporary is written and
   checked with the file's (one pipelined exchange over SFTP), and renamed into place last, once
   the file's rename has succeeded.

Each place offers the small `RemoteFolder` protocol below (the local backend in local.py,
the SFTP one in sftp_client.py); its own errors (OSError, paramiko's) go through unchanged,
for the adapter's one error-mapping function.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..core.errors import TransportError
from ..core.log import get as get_logger
from ..testing import faults
from .base import Delivery, Receipt

MARKER_SUFFIX = ".sha256"
# A `sha256sum` line is ~100 bytes; anything larger under a marker's name is not ours.
MAX_MARKER_BYTES = 4096


def sha256_line(digest: str, name: str) -> bytes:
    """The `sha256sum` format, so a receiver can run `sha256sum -c`."""
    return f"{digest}  {name}\n".encode()


@dataclass(frozen=True, slots=True)
class Entry:
    """What a folder says about a name: its size, and whether it is a regular file."""

    size: int
    is_file: bool


class Source(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class RemoteFolder(Protocol):
    """One folder at the partner. Names are plain basenames inside it."""

    kind: str  # "drop", "sftp": names the fault points (testing/faults.py) and the log events
    department: str

    def where(self, name: str) -> str:
        """What the receipt names: a path the operator can look up."""
        ...

    def temp_name(self, name: str) -> str: ...

    def open_ahead(self, temps: Sequence[str]) -> None:
        """The temporaries `publish` writes next if the file is not there yet, announced before it
        knows: a folder may open them now (SFTP: along with the stat, one round trip for both).
        `write` takes them up; `remove_temps` lets them go, and so does a `stat` that fails."""
        ...

    def remove_temps(self, name: str) -> None:
        """Remove the temporaries of `name` (file or marker): opened ahead, or left by an interrupted delivery."""
        ...

    def stat(self, name: str) -> Entry | None: ...

    def read_small(self, name: str, limit: int) -> bytes | None:
        """At most `limit` + 1 bytes of `name`, or None when it does not exist."""
        ...

    def sha256(self, name: str) -> str: ...

    def remove(self, name: str, *, wait: bool = True) -> None:
        """Remove `name`; one already gone is not an error.

        `wait=False`: the removal may be only asked for (SFTP: one round trip saved). The requests
        that follow find the name removed; a removal refused shows in the rename onto that name.
        """
        ...

    def write(self, files: Sequence[tuple[str, Source]]) -> list[Entry]:
        """The whole of each source under its temporary name, on the partner's disk (fsync) before
        returning, and what the folder says of each temporary then (its size as the partner sees it)."""
        ...

    def rename(self, tmp: str, final: str) -> None: ...


class _Hashing:
    """Reads through to the source, hashing what the backend is given: what was sent is what is checked."""

    def __init__(self, src: Source):
        self.src, self.h = src, hashlib.sha256()

    def read(self, size: int = -1, /) -> bytes:
        data = self.src.read(size)
        self.h.update(data)
        return data


@dataclass(frozen=True, slots=True)
class Upload:
    """One file to publish: its bytes, and the size and SHA-256 they must have."""

    name: str
    src: Source
    size: int
    sha256: str


def _check(fs: RemoteFolder, up: Upload, sent: _Hashing, got: Entry) -> None:
    if got.size != up.size:
        raise TransportError(
            fs.department,
            f"{up.name}: the partner holds {got.size} bytes of {up.size} after the upload; disk full?",
        )
    if sent.h.hexdigest() != up.sha256:
        # The archive gave other bytes than the trace recorded: publish nothing.
        raise TransportError(
            fs.department,
            f"{up.name}: the archived file does not match its recorded SHA-256; not delivered",
            permanent=True,
        )


def _discard(fs: RemoteFolder, temps: Sequence[str]) -> None:
    for tmp in temps:
        try:
            fs.remove(tmp)
        except Exception:  # the session may be gone; the next delivery overwrites or removes the temporary
            pass


def _stage(fs: RemoteFolder, uploads: Sequence[Upload]) -> list[str]:
    """Every upload under its temporary name, checked (size, SHA-256): nothing renamed yet.

    Written together, so a remote folder can pipeline them (one round trip for all the syncs)."""
    temps = [fs.temp_name(up.name) for up in uploads]
    sent = [_Hashing(up.src) for up in uploads]
    try:
        got = fs.write(list(zip(temps, sent, strict=True)))
        for up, hashing, entry in zip(uploads, sent, got, strict=True):
            _check(fs, up, hashing, entry)
    except BaseException:
        _discard(fs, temps)
        raise
    return temps


def _publish_staged(fs: RemoteFolder, uploads: Sequence[Upload], temps: Sequence[str]) -> None:
    """Rename the checked temporaries into place, in order; each rename waits for the one before."""
    i = 0
    try:
        for i, (up, tmp) in enumerate(zip(uploads, temps, strict=True)):
            if i:  # publish's second upload is the marker
                faults.point(f"{fs.kind}-before-marker")
            faults.point(f"{fs.kind}-before-rename")
            fs.rename(tmp, up.name)
    except BaseException:
        _discard(fs, temps[i:])
        raise


def put(fs: RemoteFolder, src: Source, name: str, size: int, sha256: str) -> None:
    """Stream `src` under a temporary name, check its size and digest, then rename it to `name`."""
    up = Upload(name, src, size, sha256)
    _publish_staged(fs, [up], _stage(fs, [up]))


def _marker(name: str, line: bytes) -> Upload:
    return Upload(name + MARKER_SUFFIX, io.BytesIO(line), len(line), hashlib.sha256(line).hexdigest())


def _put_marker(fs: RemoteFolder, name: str, line: bytes) -> None:
    up = _marker(name, line)
    put(fs, up.src, up.name, up.size, up.sha256)


def publish(fs: RemoteFolder, item: Delivery, src: Source) -> Receipt:
    """Deliver `item` (its bytes read from `src`) into `fs`, idempotently; see the module's steps."""
    name = item.file_name
    expected = sha256_line(item.sha256, name)
    fs.open_ahead([fs.temp_name(name), fs.temp_name(name + MARKER_SUFFIX)])
    entry = fs.stat(name)
    if entry is not None:
        fs.remove_temps(name)
        return _already_there(fs, item, entry)
    # A marker without its file describes nothing a receiver could take: not beside the new one.
    fs.remove(name + MARKER_SUFFIX, wait=False)
    # The marker's temporary is written and checked with the file's; it is renamed last.
    uploads = [Upload(name, src, item.size, item.sha256), _marker(name, expected)]
    _publish_staged(fs, uploads, _stage(fs, uploads))
    return Receipt(name, already_there=False, reference=fs.where(name))


def _refuse(fs: RemoteFolder, name: str, why: str) -> TransportError:
    return TransportError(fs.department, f"{name}: {why}", permanent=True)


def _already_there(fs: RemoteFolder, item: Delivery, entry: Entry) -> Receipt:
    """The name is taken at the partner: this file (or one of its earlier seals) delivered before, or another."""
    name = item.file_name
    if not entry.is_file:
        raise _refuse(fs, name, "something that is not a file sits under this name at the partner")
    # Ours: this seal, or an earlier one of the same file (`earlier_sha256` then says which).
    ours = [(item.sha256, "")] * (entry.size == item.size) + [(d, d) for d, size in item.earlier if size == entry.size]
    if not ours:
        raise _refuse(
            fs, name, f"a different file already sits under this name ({entry.size} bytes, ours {item.size})"
        )
    current = fs.read_small(name + MARKER_SUFFIX, MAX_MARKER_BYTES)
    for digest, earlier in ours:
        if current == sha256_line(digest, name):
            return _ours(fs, name, earlier)
    if current is not None:
        raise _refuse(fs, name, "a different file already sits under this name (its .sha256 names another digest)")
    # Renamed into place, then interrupted before the marker: make sure it is ours, then complete it.
    held = fs.sha256(name)
    for digest, earlier in ours:
        if held == digest:
            _put_marker(fs, name, sha256_line(digest, name))
            get_logger("flux-pmi.transport").info(f"{fs.kind}.marker_completed", department=fs.department, file=name)
            return _ours(fs, name, earlier)
    raise _refuse(fs, name, "a different file already sits under this name (same size, other SHA-256)")


def _ours(fs: RemoteFolder, name: str, earlier: str) -> Receipt:
    return Receipt(name, already_there=True, reference=fs.where(name), earlier_sha256=earlier)
