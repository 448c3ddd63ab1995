"""Where a département's files arrive, seen from the receiving side: a local folder or its SFTP server.

Both say the same three things: which files are *ready* (a sealed `<name>.p7m` once
`<name>.p7m.sha256`, which the sender writes last, sits beside it; an unsealed HubEE
`.xml` or `.zip` as soon as it is there under its final name), their bytes, and where an
acknowledgement goes back. Files are left where they are: the ledger remembers what was
taken, and the retention removes them (with their `.sha256`) once their time is up.

A name is only ever used to find the file again in the same folder: names with a path
separator, a NUL or a leading dot (an upload in progress) are not taken. Output folder
names never come from here (pipeline.py builds them from the ledger).
"""

from __future__ import annotations

import abc
import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import TransportError
from ..fsutil import atomic_write, private_dir
from ..transport.local import ACK_DIR
from .config import DropConfig, LocalDropConfig, SftpDropConfig

__all__ = [
    "MARKER_SUFFIX",
    "TECHNICAL_NAME",
    "Drop",
    "DropFile",
    "LocalDropReader",
    "SftpDropReader",
    "is_safe_name",
    "open_drop",
]

MARKER_SUFFIX = ".sha256"
# A `sha256sum` line is ~100 bytes; anything much larger is not a marker.
MAX_MARKER_BYTES = 4096

# The sender's technical names (night.emission_name; schemas/ack.xsd accepts these only).
TECHNICAL_NAME = re.compile(
    r"^(?P<flow>DSG|GRO|SGR)_(?P<department>0[0-9]{2}|02[AB]|97[1-6])_(?P<date>[0-9]{8})_(?P<seq>[0-9]{6})"
    r"(?:_P(?P<part>[1-9][0-9]*)of(?P<parts>[1-9][0-9]*))?(?:_R(?P<reemission>[0-9]{2,4}))?"
    r"\.(?P<ext>xml|zip)(?P<sealed>\.p7m)?$"
)
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
UNSEALED_SUFFIXES = (".xml", ".zip")


def is_safe_name(name: str) -> bool:
    """A plain basename a drop may hand us: no path, no control character, not hidden."""
    return bool(name) and len(name) <= 255 and not name.startswith(".") and not _UNSAFE.search(name)


@dataclass(frozen=True, slots=True)
class DropFile:
    name: str
    folder: str  # the folder it was listed in ('' for a local drop, the remote path for SFTP)
    size: int
    mtime: int
    sealed: bool  # a .p7m (else an unsealed .xml / .zip, HubEE's formats)
    # (size, mtime) of its `.sha256`, None when there is none. The marker's bytes are read only
    # for a file the ledger does not know yet: a drop keeps months of files, polled every minute.
    marker_stat: tuple[int, int] | None

    @property
    def technical(self) -> re.Match[str] | None:
        return TECHNICAL_NAME.match(self.name)


class Drop(abc.ABC):
    kind: str = "drop"

    @property
    @abc.abstractmethod
    def where(self) -> str: ...

    @abc.abstractmethod
    def list_ready(self) -> list[DropFile]:
        """Ready files, sorted by name (hence by flow, date and sequence for technical names)."""

    @abc.abstractmethod
    def read(self, item: DropFile, max_bytes: int) -> bytes:
        """The file's bytes; more than `max_bytes` means over the cap (the rest is not read)."""

    @abc.abstractmethod
    def read_marker(self, item: DropFile) -> bytes | None:
        """The `.sha256` beside `item` (at most MAX_MARKER_BYTES + 1 bytes), None when it is gone."""

    @abc.abstractmethod
    def write_ack(self, name: str, data: bytes) -> None:
        """Publish an ack atomically where the sender collects it (it ignores hidden names)."""

    @abc.abstractmethod
    def remove(self, item: DropFile) -> None:
        """Remove a file and its `.sha256` (retention); what is already gone is not an error."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Drop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ready(names: dict[str, tuple[int, int]], folder: str) -> list[DropFile]:
    """Pick ready files from a folder's {name: (size, mtime)}: `.p7m` with their marker, unsealed files."""
    out = []
    for name, (size, mtime) in sorted(names.items()):
        if not is_safe_name(name):
            continue
        marker = names.get(name + MARKER_SUFFIX)
        if name.endswith(".p7m"):
            if marker is None:
                continue  # the marker is written last: without it the file may still be arriving
            out.append(DropFile(name, folder, size, mtime, True, marker))
        elif name.endswith(UNSEALED_SUFFIXES):
            out.append(DropFile(name, folder, size, mtime, False, marker))
    return out


class LocalDropReader(Drop):
    """`<path>/<file>` + `<file>.sha256`, acks written into `<path>/acks/` (transport/local.py's layout)."""

    kind = "local"

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def where(self) -> str:
        return str(self.path)

    def list_ready(self) -> list[DropFile]:
        if not self.path.is_dir():
            return []
        names: dict[str, tuple[int, int]] = {}
        with os.scandir(self.path) as it:
            for entry in it:
                if entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    names[entry.name] = (st.st_size, st.st_mtime_ns)
        return _ready(names, "")

    def _read(self, name: str, max_bytes: int) -> bytes:
        # O_NOFOLLOW: the listing skipped symlinks; one swapped in since is not followed either.
        fd = os.open(self.path / name, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            return fh.read(max_bytes + 1)

    def read(self, item: DropFile, max_bytes: int) -> bytes:
        return self._read(item.name, max_bytes)

    def read_marker(self, item: DropFile) -> bytes | None:
        try:
            return self._read(item.name + MARKER_SUFFIX, MAX_MARKER_BYTES)
        except FileNotFoundError:
            return None

    def write_ack(self, name: str, data: bytes) -> None:
        atomic_write(private_dir(self.path / ACK_DIR) / name, data)

    def remove(self, item: DropFile) -> None:
        for name in (item.name, item.name + MARKER_SUFFIX):
            (self.path / name).unlink(missing_ok=True)


class SftpDropReader(Drop):
    """The département's SFTP server: one folder per flow (or one for all), acks into `ack_directory`."""

    kind = "sftp"

    def __init__(self, cfg: SftpDropConfig, department: str):
        from ..transport.sftp import SftpTransport  # paramiko loads only for an SFTP drop

        self.cfg = cfg
        self.transport = SftpTransport(
            department,
            host=cfg.host,
            port=cfg.port,
            user=cfg.user,
            key=cfg.key,
            known_hosts=cfg.known_hosts,
            passphrase=cfg.key_passphrase,
            directories=cfg.directories,
            ack_directory=cfg.ack_directory,
            connect_timeout=cfg.connect_timeout,
            timeout=cfg.timeout,
        )

    @property
    def where(self) -> str:
        return f"sftp://{self.cfg.user}@{self.cfg.host}:{self.cfg.port}"

    def list_ready(self) -> list[DropFile]:
        out: list[DropFile] = []
        for folder in sorted(set(self.cfg.directories.values())):
            out += _ready({f.name: (f.size, f.mtime) for f in self.transport.list_files(folder)}, folder)
        return sorted(out, key=lambda f: (f.name, f.folder))

    def read(self, item: DropFile, max_bytes: int) -> bytes:
        return self.transport.download(item.folder, item.name, max_bytes)

    def read_marker(self, item: DropFile) -> bytes | None:
        try:
            return self.transport.download(item.folder, item.name + MARKER_SUFFIX, MAX_MARKER_BYTES)
        except TransportError as exc:
            if isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOENT:
                return None  # removed since the listing
            raise

    def write_ack(self, name: str, data: bytes) -> None:
        self.transport.upload_bytes(self.cfg.ack_directory, name, data)

    def remove(self, item: DropFile) -> None:
        for name in (item.name, item.name + MARKER_SUFFIX):
            self.transport.remove(item.folder, name)

    def close(self) -> None:
        self.transport.close()


def open_drop(cfg: DropConfig, department: str) -> Drop:
    if isinstance(cfg, LocalDropConfig):
        return LocalDropReader(cfg.path)
    return SftpDropReader(cfg, department)
