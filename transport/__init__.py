"""Transports: how a sealed file reaches a département (local drop, SFTP, Transfer CFT, HubEE).

Shaped like httpx's transports: one small interface in `base` (plus the `Checkable`
diagnostics protocol), one module per protocol, a registry of kinds in `registry`,
and a test double (testing/mock.py) implementing the same interface.
"""

from .base import AckFile, Checkable, CheckResult, Delivery, Receipt, Transport

__all__ = ["AckFile", "CheckResult", "Checkable", "Delivery", "Receipt", "Transport"]
