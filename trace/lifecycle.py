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

from ..errors import TraceError


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


def check_transition(current: str, target: str) -> Status:
    cur, tgt = Status(current), Status(target)
    if tgt not in ALLOWED[cur]:
        raise TraceError(f"emission cannot go from {cur} to {tgt}")
    return tgt
