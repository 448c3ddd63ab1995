"""A batch's routed records, set aside per département until that département is built.

Why it exists: a catch-up after an outage claims every day's inputs into one batch per flow.
Holding all of that batch's parsed records at once made the night's memory grow with the
number of days (30 days: ~77,000 records, ~370 MB peak). The night now parses and routes the
batch one input file at a time and appends each accepted record here; a département's records
are loaded back only to build its files, then its spill goes.

A batch's records stay in memory, pickled, while they weigh at most `memory_bytes` (the night
gives `MEMORY_BYTES`: a national night's largest batch, DSG, is 0.56 MB pickled); past that,
every département's records go to its spill file on disk, and the batch goes on there. So the
memory is bounded by a few MB whatever the number of days, and a night does not create, write
and delete a hundred files per flow for records its workers read back a second later.

Layer: jobs (10), beside the night that alone uses it.

Format: one pickle frame (protocol 5) per record, appended. Unpickling runs code named by the
data, so pickle is only safe on bytes this process wrote itself, and that holds here:
- a spill is written by the run's process and read back, within one processing of one batch,
  by that process or by one of its workers (jobs/prepare.py: the same user, the same run; a
  spill held in memory reaches the worker as bytes over the pool's own pipe);
- it lives in an owner-only folder (0700) of the owner-only work area, created exclusively,
  its files created exclusively (0600), never opened through a link;
- it is never trusted across runs: every processing of a batch removes any spill left by a
  crashed run before writing (the records are parsed again from the claimed inputs), and the
  spill is removed once the batch's départements are built, before the batch is retired.
The spill holds plaintext personal data, like the claimed inputs beside it: nothing of it
outlives the batch (kept input is the encrypted input, never the spill).
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeAlias

from ..core.fsutil import exclusive_dir, exclusive_file, open_regular, remove_path

FOLDER = "spill"

MEMORY_BYTES = 4 * 1024 * 1024  # a batch's pickled records held in memory before it goes to disk

Source: TypeAlias = list[Any] | Path | bytes  # records as they are; a spill file; a spill held in memory


class Sink(Protocol):
    """Where routing puts the records to emit: a batch's spill, or the dry run's tally (jobs/plan.py)."""

    def add(self, department: str, record: Any) -> None: ...

    def departments(self) -> set[str]: ...


class Spill:
    """The per-département spill files of one batch, under `<batch work folder>/spill/`."""

    def __init__(self, batch_work: Path, memory_bytes: int = 0):
        self.folder = batch_work / FOLDER
        self.memory_bytes = memory_bytes
        self._writers: dict[str, BinaryIO] = {}
        self._held: dict[str, list[bytes]] = {}  # in memory, while the batch's records weigh little
        self._held_bytes = 0
        self._on_disk = False  # once past `memory_bytes`, for the rest of the batch
        self._created = False

    def __enter__(self) -> Spill:
        remove_path(self.folder)  # a crashed run's spill is never read: its records are parsed again
        return self

    def __exit__(self, *_exc: object) -> None:
        self.remove()

    def add(self, department: str, record: Any) -> None:
        """Append one record to the département's spill (in memory, or its file)."""
        data = pickle.dumps(record, protocol=5)
        if not self._on_disk and self._held_bytes + len(data) > self.memory_bytes:
            self._to_disk()
        if self._on_disk:
            fh = self._writers.get(department)
            if fh is None:
                fh = self._writers[department] = self._create(department)
            fh.write(data)
        else:
            self._held.setdefault(department, []).append(data)
            self._held_bytes += len(data)

    def _to_disk(self) -> None:
        """Past the memory allowed: every département's records so far to its file, and the next ones."""
        held, self._held, self._held_bytes, self._on_disk = self._held, {}, 0, True
        for department, frames in held.items():
            fh = self._writers[department] = self._create(department)
            fh.writelines(frames)

    def departments(self) -> set[str]:
        """The départements that received at least one record."""
        return set(self._writers) | set(self._held)

    def records(self, department: str) -> list[Any]:
        """The département's records, in the order the builds expect: by input file, then line."""
        source = self.source(department)
        return source if isinstance(source, list) else load(source)

    def source(self, department: str) -> Source:
        """Where a build finds the département's records: its spill file (complete on disk), its
        pickled records (held in memory), or none."""
        frames = self._held.get(department)
        if frames is not None:
            return b"".join(frames)
        fh = self._writers.get(department)
        if fh is None:
            return []
        fh.flush()
        return self._path(department)

    def discard(self, department: str) -> None:
        """The département is built: its spill goes now, not at the batch's end."""
        self._held.pop(department, None)
        fh = self._writers.pop(department, None)
        if fh is not None:
            fh.close()
            self._path(department).unlink(missing_ok=True)

    def remove(self) -> None:
        for fh in self._writers.values():
            fh.close()
        self._writers.clear()
        self._held.clear()
        remove_path(self.folder)

    def _path(self, department: str) -> Path:
        return self.folder / f"{department}.pickle"

    def _create(self, department: str) -> BinaryIO:
        if not self._created:
            remove_path(self.folder)
            exclusive_dir(self.folder)
            self._created = True
        return exclusive_file(self._path(department))


def load(source: Source) -> list[Any]:
    """A spill's records (its file's, or its bytes'), in the order the builds expect: by input file, then line."""
    if isinstance(source, list):
        return source
    out: list[Any] = []
    with os.fdopen(open_regular(source), "rb") if isinstance(source, Path) else io.BytesIO(source) as src:
        while True:
            try:
                out.append(pickle.load(src))
            except EOFError:
                break
    out.sort(key=lambda r: (r.source.file, r.source.line))
    return out
