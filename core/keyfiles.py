"""The one rule for every private key flux-pmi holds: owner-only.

The sender's signing key, the archive key and the SFTP client keys were once judged by
two rules (a world-readable signing key accepted, an SFTP key at 0640 refused). A key that
the group or others may read may already be copied, so any such bit is refused, by `check`,
by `run` before anything is sent, and by the SFTP transport, all through this function.
It is a base module (like fsutil) so that both the seal and the transport stages may use it.
"""

from __future__ import annotations

import os
import stat

from .errors import CertificateError

LOOSE_KEY_BITS = stat.S_IRWXG | stat.S_IRWXO


def check_key_permissions(path: str | os.PathLike[str], what: str = "private key") -> None:
    """Raise CertificateError (exit USAGE) unless `path` is a key file only its owner may use.

    The message names the file and its mode, never its content. A missing file is left to
    whoever loads it: their message says which setting names it.
    """
    where = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise CertificateError(f"{where}: {what} cannot be read: {e.strerror}") from None
    if mode & LOOSE_KEY_BITS:
        raise CertificateError(
            f"{where}: {what} is readable by others (mode {stat.S_IMODE(mode):04o}): it must be "
            f"owner-only (chmod 600 {where})"
        )
