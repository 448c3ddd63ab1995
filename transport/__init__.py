"""Transports: how a sealed file reaches a département (local drop, SFTP, Transfer CFT, HubEE).

Shaped like httpx's transports: one small interface in `base`, one module per protocol,
and a test double implementing the same interface.
"""

from .base import AckFile, CheckResult, Delivery, Receipt, Transport

__all__ = ["AckFile", "CheckResult", "Delivery", "Receipt", "Transport"]
