"""The certificates, and the archive key, a command needs to seal a file again, loaded once per command.

Why it exists: a re-emission and a delivery both re-seal an archived file for the département's
current certificate when it has changed since the file was built (`cms.reseal_from_archive`). Both
load the same things: once per command rather than once per file, and the archive key only when a
file needs it (it may be kept out of daily reach).
"""

from __future__ import annotations

from typing import Any

from ..config.settings import Settings
from ..core.errors import RefusedError
from ..seal import certs


class SealKeys:
    """Certificates loaded once per command, not once per file."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._recipients: dict[str, tuple[Any, str]] = {}
        self._archive: tuple[Any, Any] | None = None

    def recipient(self, department: str) -> tuple[Any, str]:
        """The département's current certificate and its fingerprint."""
        if department not in self._recipients:
            dept = self.settings.departments[department]
            if dept.certificate is None:
                raise RefusedError(
                    f"département {department} has no certificate configured: nothing can be sealed"
                )
            cert = certs.load_certificate(dept.certificate)
            self._recipients[department] = cert, certs.cert_fingerprint(cert)
        return self._recipients[department]

    def archive(self) -> tuple[Any, Any]:
        # Loaded only when a file must be re-sealed: the archive key may be kept out of daily reach.
        if self._archive is None:
            s = self.settings.sender
            self._archive = (
                certs.load_certificate(s.archive_certificate),
                certs.load_private_key(s.archive_key, s.archive_key_passphrase),
            )
        return self._archive
