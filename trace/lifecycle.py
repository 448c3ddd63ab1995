"""The emission lifecycle as an explicit state machine.

Like Waarp Gateway's pipeline state machine, every status change goes through
`check_transition`, so a crash always leaves an emission in a known state from which
the next run knows what to do:

    built -> sealed -> archived -> delivered -> acknowledged
                 \\        \\          \\
                  +--------+----------+--> failed  (retried: rebuilt or redelivered)
    re-emitted (a copy made from the archive) -> delivered -> acknowledged

- built / sealed: the plaintext or the seal exist only in the run's memory and work
  folder; after a crash the emission is rebuilt from its claimed inputs (same sequence).
- archived: the sealed file is safe in the archive; from here on it is only delivered.
- failed: `archived_at` tells whether it is redelivered (set) or rebuilt (unset).
"""

from __future__ import annotations

from enum import StrEnum

from ..core.errors import TraceError


class Status(StrEnum):
    BUILT = "built"
    SEALED = "sealed"
    ARCHIVED = "archived"
    DELIVERED = "delivered"
    ACKNOWLEDGED = "acknowledged"
    FAILED = "failed"
    REEMITTED = "re-emitted"


ALLOWED: dict[Status, frozenset[Status]] = {
    Status.BUILT: frozenset({Status.BUILT, Status.SEALED, Status.FAILED}),
    Status.SEALED: frozenset({Status.BUILT, Status.ARCHIVED, Status.FAILED}),
    Status.ARCHIVED: frozenset({Status.DELIVERED, Status.FAILED}),
    Status.REEMITTED: frozenset({Status.DELIVERED, Status.FAILED}),
    Status.FAILED: frozenset({Status.BUILT, Status.DELIVERED, Status.FAILED}),
    Status.DELIVERED: frozenset({Status.ACKNOWLEDGED, Status.FAILED}),
    Status.ACKNOWLEDGED: frozenset(),
}

# Statuses whose sealed file is in the archive and still has to reach the partner.
TO_DELIVER = (Status.ARCHIVED, Status.REEMITTED, Status.FAILED)
DONE = (Status.DELIVERED, Status.ACKNOWLEDGED)


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


class ParkedState(StrEnum):
    """A `parked` row: records of a département that was not enabled, kept to be emitted later."""

    PARKED = "parked"  # the input is kept (encrypted); the département is not enabled yet
    EMITTED = "emitted"  # the département was enabled and its records were emitted from the input
    LOST = "lost"  # the kept input is gone (purged by hand, unreadable): reported, never retried


def check_transition(current: str, target: str) -> Status:
    cur, tgt = Status(current), Status(target)
    if tgt not in ALLOWED[cur]:
        raise TraceError(f"emission cannot go from {cur} to {tgt}")
    return tgt
