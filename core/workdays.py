"""Jours ouvrés per département, and the two clocks a record's delivery runs against.

The service contract (annexe 2 §3) gives 8 jours ouvrés from the Caf's receipt; the law (code de
la santé publique, L.2122-4: "sous huitaine") gives 8 calendar days from the same receipt. The
earlier one binds: it is the `deadline` every consumer reads, and `DeadlineBasis` says which.

Monday to Friday minus French public holidays from the `holidays` package, with the
local ones: Alsace-Moselle (57, 67, 68) adds Good Friday and 26 December, and each
overseas département its own days: its abolition-of-slavery day, plus, as the package
has them, Victor Schœlcher day (971, 972) and Good Friday and Mi-Carême (971).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from functools import lru_cache

import holidays

# holidays' subdivision codes for the départements with extra days off.
_SUBDIV = {"057": "57", "067": "6AE", "068": "6AE", "971": "971", "972": "972", "973": "973",
           "974": "974", "976": "976"}

DEADLINE_WORKING_DAYS = 8
LEGAL_DEADLINE_DAYS = 8  # "sous huitaine": calendar days, weekends and holidays included


class DeadlineBasis(StrEnum):
    """Which clock a deadline comes from: the service contract's or the law's."""

    CONTRACT = "contract"
    LAW = "law"


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Both deadlines of one record; `binding` is the earlier (the law on a tie: it is the stronger duty)."""

    contract: date
    legal: date

    @property
    def basis(self) -> DeadlineBasis:
        return DeadlineBasis.LAW if self.legal <= self.contract else DeadlineBasis.CONTRACT

    @property
    def binding(self) -> date:
        return min(self.contract, self.legal)


@lru_cache(maxsize=64)
def _calendar(subdiv: str | None, year: int) -> frozenset[date]:
    # Keyed by subdivision, not by département: the ninety-odd départements of metropolitan France
    # share one calendar, and making one costs milliseconds (every record's deadline reads it).
    return frozenset(holidays.France(years=year, subdiv=subdiv).keys())


def is_working_day(day: date, department: str) -> bool:
    return day.weekday() < 5 and day not in _calendar(_SUBDIV.get(department), day.year)


def add_working_days(start: date, n: int, department: str) -> date:
    """The date n jours ouvrés after `start` (start itself not counted)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    day = start
    while n:
        day += timedelta(days=1)
        if is_working_day(day, department):
            n -= 1
    return day


def count_working_days(start: date, end: date, department: str) -> int:
    """Jours ouvrés in (start, end]: 0 when end <= start."""
    n, day = 0, start
    while day < end:
        day += timedelta(days=1)
        if is_working_day(day, department):
            n += 1
    return n


@lru_cache(maxsize=4096)  # read for every record archived: a night has a few receipt dates
def deadline(received: date, department: str) -> date:
    """The contract's latest delivery date for a record the Caf received on `received` (annexe 2 §3)."""
    return add_working_days(received, DEADLINE_WORKING_DAYS, department)


def legal_deadline(received: date) -> date:
    """The law's latest delivery date (L.2122-4, "sous huitaine"): the same in every département."""
    return received + timedelta(days=LEGAL_DEADLINE_DAYS)


def deadlines(received: date, department: str) -> Deadlines:
    """Both deadlines of a record the Caf received on `received`."""
    return Deadlines(contract=deadline(received, department), legal=legal_deadline(received))
