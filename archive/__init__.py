"""The archive: sealed files kept 3 months for re-emission (annexe 2 §3)."""

from .store import ArchiveStore

__all__ = ["ArchiveStore"]
