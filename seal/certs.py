"""Load certificates and keys, and refuse the ones that cannot be used to seal.

A sealed file the PMI cannot open is worse than a file not sent: it counts as
delivered while nobody can read it, and the "sous huitaine" deadline runs. So every
certificate is checked *before* any cryptography runs, and a refusal tells the
operator which certificate (subject CN, serial, issuer), what is wrong and the
dates, so the 3 a.m. reader knows whom to call. Certificates name organisations
(the CNAF, a département's PMI), never a person, so these messages may name them.

`now` is always given by the caller (an aware datetime): the scheduler decides what
"now" is, and tests can pin it.
"""

from __future__ import annotations

import os
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ..core.errors import CertificateError

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "cert_fingerprint",
    "check_recipient",
    "check_signer",
    "days_left",
    "describe",
    "load_certificate",
    "load_certificates",
    "load_private_key",
]


# A certificate this close to its end is flagged by preflight and status: renewing one takes the
# partner days, and a file sealed for an expired certificate cannot be opened.
EXPIRY_WARNING_DAYS = 30


# --- loading -------------------------------------------------------------------------


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        # strerror only: the OSError text is fine, but keep the message shape stable.
        raise CertificateError(f"{os.fspath(path)}: {what} cannot be read: {e.strerror}") from None


def load_certificate(path: str | os.PathLike[str]) -> x509.Certificate:
    """The first PEM certificate of `path`."""
    data = _read(path, "certificate")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise CertificateError(f"{os.fspath(path)}: not a PEM certificate") from None


def load_certificates(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """Every PEM certificate of a bundle (e.g. the trusted signers of the receiving side)."""
    data = _read(path, "certificate bundle")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError(f"{os.fspath(path)}: not a PEM certificate bundle") from None
    return certs


def load_private_key(
    path: str | os.PathLike[str], passphrase: bytes | None = None
) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """A PEM private key, decrypted with `passphrase` when it is protected.

    The passphrase is bytes handed over by the caller (from a secret store, an
    environment variable, a prompt): never text read from the configuration file,
    which is readable by more people than the key.
    """
    if passphrase is not None and not isinstance(passphrase, bytes):
        raise TypeError("passphrase must be bytes")
    where = os.fspath(path)
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        # cryptography says TypeError both for "encrypted but no password" and the reverse.
        if passphrase is None:
            raise CertificateError(
                f"{where}: the private key is passphrase-protected and no passphrase was given"
            ) from None
        raise CertificateError(
            f"{where}: a passphrase was given but the private key is not encrypted"
        ) from None
    except ValueError:
        if passphrase is not None:
            raise CertificateError(f"{where}: wrong passphrase, or not a PEM private key") from None
        raise CertificateError(f"{where}: not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{where}: unsupported key type {type(key).__name__} (RSA or EC expected)")
    return key


# --- checks ---------------------------------------------------------------------------


def _cn(name: x509.Name) -> str:
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else name.rfc4514_string()


def describe(cert: x509.Certificate) -> str:
    """How a certificate is named in messages: enough to find it, nothing secret."""
    return f"CN={_cn(cert.subject)!r} (serial {cert.serial_number:#x}, issuer CN={_cn(cert.issuer)!r})"


def _fmt(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")


def _check_dates(cert: x509.Certificate, role: str, now: datetime) -> None:
    _require_aware(now)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    span = f"valid from {_fmt(start)} to {_fmt(end)}, now is {_fmt(now)}"
    if now > end:
        raise CertificateError(f"{role} certificate {describe(cert)} has expired: {span}")
    if now < start:
        raise CertificateError(f"{role} certificate {describe(cert)} is not yet valid: {span}")


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def check_recipient(cert: x509.Certificate, *, now: datetime, role: str = "recipient") -> None:
    """Raise CertificateError unless files can be enveloped for `cert` at `now`.

    `role` only words the message ("recipient", "archive"...).
    """
    _check_dates(cert, role, now)
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        # PKCS7EnvelopeBuilder only does RSA key transport.
        raise CertificateError(
            f"{role} certificate {describe(cert)} has a {type(cert.public_key()).__name__} key; "
            "only RSA certificates can receive enveloped files"
        )
    usage = _key_usage(cert)
    if usage is not None and not usage.key_encipherment:
        raise CertificateError(
            f"{role} certificate {describe(cert)} does not allow keyEncipherment (KeyUsage); "
            "it cannot receive enveloped files: ask for an encryption certificate"
        )


def check_signer(
    cert: x509.Certificate,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    *,
    now: datetime,
) -> None:
    """Raise CertificateError unless `key` and `cert` can sign at `now`."""
    _check_dates(cert, "signer", now)
    usage = _key_usage(cert)
    if usage is not None and not usage.digital_signature:
        raise CertificateError(
            f"signer certificate {describe(cert)} does not allow digitalSignature (KeyUsage)"
        )
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertificateError(f"signer key for {describe(cert)}: RSA or EC key expected")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise CertificateError(f"signer private key does not match the signer certificate {describe(cert)}")


def days_left(cert: x509.Certificate, now: datetime) -> int:
    """Whole days until `cert` expires (negative once expired), for renewal warnings."""
    _require_aware(now)
    return (cert.not_valid_after_utc - now).days


def cert_fingerprint(cert: x509.Certificate) -> str:
    """Which certificate a file was sealed for (SHA-256, hex): a re-emission re-seals when it has changed."""
    return cert.fingerprint(hashes.SHA256()).hex()
