"""Builds the transport of each département from its configuration.

Adapters are imported on first use, so paramiko (say) loads only when a département
actually uses SFTP.
"""

from __future__ import annotations

from importlib import import_module

from ..config.settings import Department, Settings
from ..core.errors import ConfigError
from .base import Transport
from .local import LocalDrop

# transport type -> module and class; each class offers from_config(settings, department).
ADAPTERS: dict[str, tuple[str, str]] = {
    "sftp": ("flux_pmi.transport.sftp", "SftpTransport"),
    "cft": ("flux_pmi.transport.cft", "CftTransport"),
    "hubee": ("flux_pmi.transport.hubee", "HubeeTransport"),
}


def transport_for(settings: Settings, dept: Department) -> Transport:
    kind = dept.transport.type
    if kind == "local":
        return LocalDrop(dept.transport.path("root", settings.base))
    if kind not in ADAPTERS:
        raise ConfigError(settings.file, f"departments.{dept.code}.transport.type", "an enabled transport type")
    module, cls = ADAPTERS[kind]
    return getattr(import_module(module), cls).from_config(settings, dept)
