"""Sealing: sign as the CNAF, then envelope for the département's PMI (CMS, RFC 5652).

Only sealed bytes leave the CNAF: see `cms` for the formats, the OpenSSL recipe a
département uses to open them, and how signatures are verified; see `certs` for the
checks that refuse an unusable certificate before anything is produced.
"""

from .certs import (
    check_recipient,
    check_signer,
    days_left,
    describe,
    load_certificate,
    load_certificates,
    load_private_key,
)
from .cms import Sealed, envelope, open_sealed, reseal_from_archive, seal, sign

__all__ = [
    "Sealed",
    "check_recipient",
    "check_signer",
    "days_left",
    "describe",
    "envelope",
    "load_certificate",
    "load_certificates",
    "load_private_key",
    "open_sealed",
    "reseal_from_archive",
    "seal",
    "sign",
]
