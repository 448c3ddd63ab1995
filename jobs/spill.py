"""A batch's routed records, set aside on disk per département until that département is built.

Why it exists: a catch-up after an outage claims every day's inputs into one batch per flow.
Holding all of that batch's parsed records at once made the night's memory grow with the
number of days (30 days: ~77,000 records, ~370 MB peak). The night now parses and routes the
batch one input file at a time and appends each accepted record here; a département's records
are loaded back only to build its files, then its spill file goes.

Layer: jobs (10), beside the night that alone uses it.

Format: one pickle frame (protocol 5) per record, appended. Unpickling runs code named by the
data, so pickle is only safe on bytes this process wrote itself, and that holds here:
- a spill is written by the run's process and read back, within one processing of one batch,
  by that process or by one of its workers (jobs/prepare.py: the same user, the same run);
- it lives in an owner-only folder (0700) of the owner-only work area, created exclusively,
  its files created exclusively (0600), never opened through a link;
- it is never trusted across runs: every processing of a batch removes any spill left by a
  crashed run before writing (the records are parsed again from the claimed inputs), and the
  spill is removed once the batch's départements are built, before the batch is retired.
The spill holds plaintext personal data, like the claimed inputs beside it: nothing of it
outlives the batch (kept input is the encrypted input, never the spill).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from ..core.fsutil import exclusive_dir, exclusive_file, open_regular, remove_path

FOLDER = "spill"


class Sink(Protocol):
    """Where routing puts the records to emit: a batch's spill, or the dry run's tally (jobs/plan.py)."""

    def add(self, department: str, record: Any) -> None: ...

    def departments(self) -> set[str]: ...


class Spill:
    """The per-département spill files of one batch, under `<batch work folder>/spill/`."""

    def __init__(self, batch_work: Path):
        self.folder = batch_work / FOLDER
        self._writers: dict[str, BinaryIO] = {}
        self._created = False

    def __enter__(self) -> Spill:
        remove_path(self.folder)  # a crashed run's spill is never read: its records are parsed again
        return self

    def __exit__(self, *_exc: object) -> None:
        self.remove()

    def add(self, department: str, record: Any) -> None:
        """Append one record to the département's spill file."""
        fh = self._writers.get(department)
        if fh is None:
            fh = self._writers[department] = self._create(department)
        pickle.dump(record, fh, protocol=5)

    def departments(self) -> set[str]:
        """The départements that received at least one record."""
        return set(self._writers)

    def records(self, department: str) -> list[Any]:
        """The département's records, in the order the builds expect: by input file, then line."""
        source = self.source(department)
        return source if isinstance(source, list) else load(source)

    def source(self, department: str) -> list[Any] | Path:
        """Where a build finds the département's records: its spill file (complete on disk), or none."""
        fh = self._writers.get(department)
        if fh is None:
            return []
        fh.flush()
        return self._path(department)

    def discard(self, department: str) -> None:
        """The département is built: its spill file goes now, not at the batch's end."""
        fh = self._writers.pop(department, None)
        if fh is not None:
            fh.close()
            self._path(department).unlink(missing_ok=True)

    def remove(self) -> None:
        for fh in self._writers.values():
            fh.close()
        self._writers.clear()
        remove_path(self.folder)

    def _path(self, department: str) -> Path:
        return self.folder / f"{department}.pickle"

    def _create(self, department: str) -> BinaryIO:
        if not self._created:
            remove_path(self.folder)
            exclusive_dir(self.folder)
            self._created = True
        return exclusive_file(self._path(department))


def load(path: Path) -> list[Any]:
    """A spill file's records, in the order the builds expect: by input file, then line."""
    out: list[Any] = []
    with os.fdopen(open_regular(path), "rb") as src:
        while True:
            try:
                out.append(pickle.load(src))
            except EOFError:
                break
    out.sort(key=lambda r: (r.source.file, r.source.line))
    return out
