"""Time, injected: every "now" and "today" flux-pmi uses comes from a Clock.

The service contract is about dates (8 working days, 3 months), and tests must move
time without sleeping, so no module calls datetime.now() on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")


class Clock:
    """The wall clock, in Europe/Paris: the business day is a French one."""

    def now(self) -> datetime:
        return datetime.now(PARIS)

    def today(self) -> date:
        return self.now().date()


@dataclass
class FixedClock(Clock):
    """A clock for tests and for `--today`: it only moves when told to."""

    at: datetime = field(default_factory=lambda: datetime(2026, 11, 23, 4, 0, tzinfo=PARIS))

    def now(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at = self.at + timedelta(**delta)


def from_environment() -> Clock:
    """The wall clock, unless FLUX_PMI_NOW pins it (replays and subprocess tests only)."""
    import os

    pinned = os.environ.get("FLUX_PMI_NOW")
    if pinned:
        at = datetime.fromisoformat(pinned)
        return FixedClock(at if at.tzinfo else at.replace(tzinfo=PARIS))
    return Clock()
