"""`flux-pmi journal`: the delivery journal's rows of one partner, and forgetting one held in doubt.

Why it exists: a CFT SEND answered without a transfer id, or a HubEE POST that got no usable
answer, leaves a file the adapter refuses to send again (it may be at the partner already; sent
twice is worse than late). Once the operator has looked on the other side (CFT's catalog, the
HubEE portal) and made sure it is not there, the documented remedy is to forget the file's row,
with no run in progress; the next run sends it afresh. A hand-typed `sqlite3 ... DELETE` under
pressure can hit the wrong row or race a run: this does it under the run lock, only for a row
whose step allows it, and traces who did it and why (an anomaly row, `status --all`).

Steps that can be forgotten: CFT `?` (SEND answered without an IDTU); HubEE `posting` (no usable
answer), `created` and `uploaded` (the folder gone on HubEE's side). A row whose transfer is known
to be under way or done (CFT `T`, `X`; HubEE `completed`) is refused: forgetting it would send
the file a second time.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ..config.settings import load
from ..core.errors import ConfigError, RefusedError
from ..core.lock import run_lock
from ..trace.journal import CftPhase, DeliveryJournal, HubeeStep, JournalEntry, JournalTransport
from ..trace.store import TraceStore
from .holds import one_department
from .reemit import _clean, requester

FORGETTABLE: dict[JournalTransport, frozenset[str]] = {
    JournalTransport.CFT: frozenset({CftPhase.NO_IDTU}),
    JournalTransport.HUBEE: frozenset({HubeeStep.POSTING, HubeeStep.CREATED, HubeeStep.UPLOADED}),
}
ANOMALY = "journal-row-forgotten"


def _transport(value: str) -> JournalTransport:
    try:
        return JournalTransport(value.strip().lower())
    except ValueError:
        raise ConfigError("command line", "--transport",
                          f"{' or '.join(t.value for t in JournalTransport)} (got {value.strip()!r})") from None


def describe(entry: JournalEntry) -> str:
    """One line: the file, its step, when, and the partner-side ids (technical only)."""
    facts = ", ".join(f"{k}={v}" for k, v in sorted(entry.facts.items()) if v not in (None, ""))
    return (f"{entry.transport} {entry.department} {entry.file_name} step {entry.step} "
            f"(updated {entry.updated_at})" + (f": {facts}" if facts else ""))


def rows(config: Path, department: str, transport: str) -> list[str]:
    settings = load(config, check_files=False)
    code, kind = one_department(settings, department), _transport(transport)
    with DeliveryJournal(settings.paths.trace) as journal:
        entries = journal.entries(kind, code)
    if not entries:
        return [f"{kind} {code}: no row in the delivery journal"]
    return [describe(e) + ("" if e.step in FORGETTABLE[kind] else "  [cannot be forgotten]") for e in entries]


def forget(config: Path, department: str, transport: str, file_name: str, *, by: str | None, reason: str,
           now: datetime) -> list[str]:
    """Remove one row whose step allows it, under the run lock; RefusedError otherwise."""
    settings = load(config, check_files=False)
    code, kind = one_department(settings, department), _transport(transport)
    who, why = _clean(requester() if by is None else by, 64), _clean(reason, 500)
    if not who:
        raise ConfigError("command line", "--by", "who forgets the row (an operator identity)")
    if not why:
        raise ConfigError("command line", "--reason", "why, e.g. 'not in the CFT catalog' (traced)")
    with run_lock(settings, "journal --forget"), DeliveryJournal(settings.paths.trace) as journal:
        entry = journal.entry(kind, code, file_name)
        if entry is None:
            raise RefusedError(f"{kind} {code}: no row for {file_name!r} in the delivery journal "
                               f"(`flux-pmi journal {code} --transport {kind}` lists them)")
        if entry.step not in FORGETTABLE[kind]:
            raise RefusedError(f"{describe(entry)}: this step cannot be forgotten, the transfer is known to be "
                               "under way or done, and the next run would send the file a second time")
        journal.remove(kind, code, file_name)
        trace = TraceStore(settings.paths.trace)
        try:
            trace.add_anomaly(ANOMALY, f"{kind} step {entry.step} forgotten by {who}: {why}", now,
                              department=code, file=file_name)
        finally:
            trace.close()
    return [f"forgotten: {describe(entry)}", f"by {who}: {why}",
            "the next run sends the file afresh (flux-pmi run, or the scheduled night)"]
