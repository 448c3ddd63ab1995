"""The emission lifecycle as an explicit state machine, and the other rows' statuses.

Like Waarp Gateway's pipeline state machine, every status change goes through
`check_transition`, so a crash always leaves an emission in a known state from which
the next run knows what to do. `ALLOWED` is the whole map; the diagram below is
`diagram()`, and a test fails when they disagree:

    built -> built | sealed | build-failed
    sealed -> built | build-failed | archived
    build-failed -> built | build-failed
    archived -> delivery-failed | delivered
    re-emitted -> delivery-failed | delivered
    delivery-failed -> delivery-failed | delivered
    delivered -> acknowledged | refused | purged
    acknowledged -> purged
    refused -> purged
    purged -> (end)

- built / sealed: the plaintext or the seal exist only in the run's memory and work
  folder; after a crash the emission is rebuilt from its claimed inputs (same sequence).
- build-failed: validation or sealing failed; the next run rebuilds it (same sequence).
- archived: the sealed file is safe in the archive; from here on it is only delivered.
- re-emitted: a copy made from the archive (its own row), delivered like an archived one.
- delivery-failed: the transport did not take it; the next run delivers it again.
- refused: the département's ack was KO; it waits for a re-emission (a new row).
- purged: the retention marked it; its file and rows are being deleted (jobs/retention.py).
"""

from __future__ import annotations

from enum import StrEnum

from ..core.errors import TraceError


class Status(StrEnum):
    BUILT = "built"
    SEALED = "sealed"
    BUILD_FAILED = "build-failed"
    ARCHIVED = "archived"
    REEMITTED = "re-emitted"
    DELIVERY_FAILED = "delivery-failed"
    DELIVERED = "delivered"
    ACKNOWLEDGED = "acknowledged"
    REFUSED = "refused"
    PURGED = "purged"


ALLOWED: dict[Status, frozenset[Status]] = {
    Status.BUILT: frozenset({Status.BUILT, Status.SEALED, Status.BUILD_FAILED}),
    Status.SEALED: frozenset({Status.BUILT, Status.ARCHIVED, Status.BUILD_FAILED}),
    Status.BUILD_FAILED: frozenset({Status.BUILT, Status.BUILD_FAILED}),
    Status.ARCHIVED: frozenset({Status.DELIVERED, Status.DELIVERY_FAILED}),
    Status.REEMITTED: frozenset({Status.DELIVERED, Status.DELIVERY_FAILED}),
    Status.DELIVERY_FAILED: frozenset({Status.DELIVERED, Status.DELIVERY_FAILED}),
    Status.DELIVERED: frozenset({Status.ACKNOWLEDGED, Status.REFUSED, Status.PURGED}),
    Status.ACKNOWLEDGED: frozenset({Status.PURGED}),
    Status.REFUSED: frozenset({Status.PURGED}),
    Status.PURGED: frozenset(),
}

# Statuses whose sealed file is in the archive and still has to reach the partner.
TO_DELIVER = (Status.ARCHIVED, Status.REEMITTED, Status.DELIVERY_FAILED)
DONE = (Status.DELIVERED, Status.ACKNOWLEDGED)
# What the partner does not have, as `status` reports it (a refused file waits for its re-emission).
UNDELIVERED = (Status.ARCHIVED, Status.REEMITTED, Status.BUILD_FAILED, Status.DELIVERY_FAILED, Status.REFUSED)
# What the retention may mark: nothing of it is still to be built or delivered.
PURGEABLE = tuple(s for s in Status if Status.PURGED in ALLOWED[s])


def check_transition(current: str, target: str) -> Status:
    cur, tgt = Status(current), Status(target)
    if tgt not in ALLOWED[cur]:
        raise TraceError(f"emission cannot go from {cur} to {tgt}")
    return tgt


def diagram() -> list[str]:
    """The transition map as the module docstring draws it, one line per status, in declaration order."""
    return [f"{s} -> " + (" | ".join(t for t in Status if t in ALLOWED[s]) or "(end)") for s in Status]


# Version 3 of the trace (trace/store.py) splits the old `failed` in place, by the columns that told
# its meanings apart before: a KO ack (refused), `archived_at` unset (rebuilt) or set (redelivered).
MIGRATE_FAILED = (
    f"UPDATE emissions SET status = CASE WHEN COALESCE(ack_status, '') = 'KO' THEN '{Status.REFUSED}'"
    f" WHEN archived_at IS NULL THEN '{Status.BUILD_FAILED}' ELSE '{Status.DELIVERY_FAILED}' END"
    " WHERE status = 'failed'"
)
MIGRATE_PURGED = f"UPDATE emissions SET status = '{Status.PURGED}' WHERE purged_at IS NOT NULL"


class RunStatus(StrEnum):
    """A `runs` row's status. `running` while the process lives; `died` once the next command
    holding the run lock finds it still `running` (only the lock holder is alive); the others
    are the exit of a command that ended by itself."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    DIED = "died"
    UNDELIVERED = "undelivered"
    QUARANTINED = "quarantined"
    INTERRUPTED = "interrupted"
    REFUSED = "refused"
    INTERNAL = "internal"

    @classmethod
    def of_exit(cls, code_name: str) -> RunStatus:
        """The status of a command that ended with ExitCode `code_name` (OK is `done`)."""
        name = code_name.lower()
        return cls.DONE if name == "ok" else cls(name) if name in cls._value2member_map_ else cls.FAILED


# A run in these did not finish its work: `status` says so even when it is recent.
UNFINISHED_RUNS = (RunStatus.DIED, RunStatus.FAILED, RunStatus.INTERRUPTED)
# A nightly run that reached its end, whatever it found: the staleness clock (`status`, exit 7) and the
# service's catch-up run from the last of these, not from a night that failed or was refused.
COMPLETED_RUNS = (RunStatus.DONE, RunStatus.UNDELIVERED, RunStatus.QUARANTINED)


class BatchState(StrEnum):
    """A `batches` row: recorded before its files move (claiming), moved (claimed), emitted (done)."""

    CLAIMING = "claiming"
    CLAIMED = "claimed"
    DONE = "done"


class InboxState(StrEnum):
    """An `inbox_files` row."""

    CLAIMED = "claimed"  # moved into its batch's work folder
    CONSUMED = "consumed"  # its batch is done
    QUARANTINED = "quarantined"  # set aside with a reason


class InboxKind(StrEnum):
    INPUT = "input"  # a claimable file
    SCAN = "scan"  # a PDF an SGR index names


class RequestStatus(StrEnum):
    """A `reemission_requests` row."""

    PENDING = "pending"  # its files are not all delivered yet
    DONE = "done"
    REFUSED = "refused"  # refused on purpose (nothing to re-emit, purged, ...)
    FAILED = "failed"  # the re-emission could not be made


class AckOutcome(StrEnum):
    """An `acks` row: what an acknowledgement did. Only RECORDED changes an emission."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"  # the same verdict again for a file already acknowledged
    CONFLICT = "conflict"  # the other verdict after one was recorded: an operator decides
    UNKNOWN_FILE = "unknown-file"  # no such file was sent to this département
    HASH_MISMATCH = "hash-mismatch"  # it acknowledges other bytes than those sent
    INVALID = "invalid"  # not an ack (schema, size, name)


class ParkedState(StrEnum):
    """A `parked` row: records of a département that was not enabled, kept to be emitted later."""

    PARKED = "parked"  # the input is kept (encrypted); the département is not enabled yet
    EMITTED = "emitted"  # the département was enabled and its records were emitted from the input
    LOST = "lost"  # the kept input is gone (purged by hand, unreadable): reported, never retried
