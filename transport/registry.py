"""The transport kinds a département's `transport.type` may name, and how each is built.

A table of kind -> factory, filled by `register`, replaces a lookup by module and class
name: what is supported is written down, and the type checker sees each factory. The
heavy adapters are imported inside their factory, so paramiko (say) loads only when a
département actually uses SFTP.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config.settings import Department, Settings
from ..core.errors import ConfigError
from .base import Transport

Factory = Callable[[Settings, Department], Transport]

_FACTORIES: dict[str, Factory] = {}


def register(kind: str) -> Callable[[Factory], Factory]:
    """Decorator: `@register("sftp")` over a function building that kind's transport."""

    def add(factory: Factory) -> Factory:
        _FACTORIES[kind] = factory
        return factory

    return add


def kinds() -> list[str]:
    return sorted(_FACTORIES)


def build(settings: Settings, dept: Department) -> Transport:
    """The transport of one département; an unknown kind is a configuration error."""
    factory = _FACTORIES.get(dept.transport.type)
    if factory is None:
        raise ConfigError(settings.file, f"departments.{dept.code}.transport.type", "an enabled transport type")
    return factory(settings, dept)


@register("local")
def _local(settings: Settings, dept: Department) -> Transport:
    from .local import LocalDrop

    return LocalDrop.from_config(settings, dept)


@register("sftp")
def _sftp(settings: Settings, dept: Department) -> Transport:
    from .sftp import SftpTransport  # paramiko

    return SftpTransport.from_config(settings, dept)


@register("cft")
def _cft(settings: Settings, dept: Department) -> Transport:
    from .cft import CftTransport

    return CftTransport.from_config(settings, dept, department=dept.code)


@register("hubee")
def _hubee(settings: Settings, dept: Department) -> Transport:
    from .hubee import HubeeTransport  # httpx

    return HubeeTransport.from_config(settings, dept)


def transport_for(settings: Settings, dept: Department) -> Transport:
    """The département's transport (the night's default `transport_factory`)."""
    return build(settings, dept)
