"""Builds the transport of each département from its configuration (see registry.py for the kinds)."""

from __future__ import annotations

from ..config.settings import Department, Settings
from .base import Transport
from .registry import build


def transport_for(settings: Settings, dept: Department) -> Transport:
    return build(settings, dept)
