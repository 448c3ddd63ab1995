"""Builds the transport of each département from its configuration."""

from __future__ import annotations

from collections.abc import Callable

from ..config.settings import Department, Settings
from .base import Transport
from .local import LocalDrop

# type name -> constructor(settings, department). Adapters register themselves here.
BUILDERS: dict[str, Callable[[Settings, Department], Transport]] = {
    "local": lambda settings, dept: LocalDrop(dept.transport.path("root", settings.base)),
}


def transport_for(settings: Settings, dept: Department) -> Transport:
    return BUILDERS[dept.transport.type](settings, dept)
