"""The issue-14 demo night: three départements, one held, and a partner that can be down."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from flux_pmi.config.settings import Settings, load
from flux_pmi.core.clock import PARIS, FixedClock
from flux_pmi.core.errors import FluxError
from flux_pmi.trace.store import TraceStore
from flux_pmi.transport.registry import transport_for

from . import make_demo


def at_four(day: date) -> FixedClock:
    return FixedClock(datetime(day.year, day.month, day.day, 4, 0, tzinfo=PARIS))


def held_demo(root: Path, *, held: str = "971", departments: str = "035,02A,971") -> Settings:
    """A demo day for `departments`, with `held` held since 04:00 on the demo day."""
    make_demo(root, departments=departments)
    settings = load(root / "flux-pmi.toml")
    with TraceStore(settings.paths.trace) as trace:
        trace.hold(held, at_four(date(2026, 11, 23)).now(), by="ops", reason="maintenance")
    return settings


def partner_down(code: str):
    """A transport factory whose partner `code` is down; the others are the real transports."""

    def factory(settings, dept):
        if dept.code == code:
            raise FluxError("partner down for the test")
        return transport_for(settings, dept)

    return factory
