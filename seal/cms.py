"""Seal a flow file for one département: sign it as the CNAF, then envelope it for the PMI.

Why sign *then* envelope: the signature proves to the PMI that the CNAF produced the
file (annexe 2 §6, RGS identification), the envelope keeps it secret in transit and at
rest on any relay (HubEE, CFT, a shared folder), whatever the transport does. Signing
inside the envelope also hides who signed from anyone without the PMI's key, and lets
the CNAF re-envelope the very same signed bytes later (`reseal_from_archive`) when a
département renews its certificate and asks for a re-emission: the signature, its
signing time and the digest the trace recorded for the signed content stay the same.

Formats (plain CMS, RFC 5652, so stock OpenSSL opens them):
- SignedData, DER, SHA-256, RSA PKCS#1 v1.5, content attached, the signer certificate
  embedded, `Binary` so that the XML/zip bytes are signed exactly as they are (no MIME
  canonicalisation of line ends).
- EnvelopedData, DER, RSA key transport, AES-256-CBC.

How a département opens a file with stock OpenSSL (1.1.1 or 3.x)::

    openssl cms -decrypt -inform DER -in F.p7m -recip dept.crt -inkey dept.key -out F.signed.der
    openssl cms -verify  -inform DER -in F.signed.der -CAfile ca.crt -out F.xml

`-purpose any` is not needed: the CNAF signing certificate carries KeyUsage
digitalSignature + nonRepudiation and no ExtendedKeyUsage, which OpenSSL's default
S/MIME-signing purpose accepts. Add it only if the production CNAF certificate comes
with an ExtendedKeyUsage that lacks emailProtection (OpenSSL would then answer
"unsupported certificate purpose"): the signature check itself does not change.
The output of `-verify` is byte-identical to what was signed (checked by the tests).

How `open_sealed` verifies (the receiving side, used by tests and the demo):
cryptography 50 can build and decrypt CMS but has no API to verify a SignedData, and
asn1crypto is not installed, so the signature is checked by the system `openssl cms
-verify -noverify`: `-noverify` skips the chain and date checks, *not* the signature
check (content digest and signature over the signed attributes). Trust is then decided
here, by pinning: the signer certificate OpenSSL reports must be, byte for byte (DER),
one of the `trusted_signers`. Pinning needs no clock and no CA policy; when the CNAF
renews its signing certificate, the receiving side adds the new one to its list. The
signed bytes go through stdin and the content comes back on stdout, so no plaintext
touches the disk; the only file (the signer certificate OpenSSL writes out) lives in a
private 0700 temporary folder, created 0600, removed afterwards.

Error messages name certificates and reasons, never the content: the content is
personal data under professional secrecy.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from ..core.errors import DecryptError, SealToolError, SignatureError
from .certs import check_recipient, check_signer, describe

__all__ = ["ARCHIVE", "RECIPIENT", "Sealed", "envelope", "open_sealed", "reseal_from_archive", "seal", "seal_each",
           "sign"]

OPENSSL = "openssl"
"""The OpenSSL command `open_sealed` runs (looked up on PATH when it is a bare name)."""

OPENSSL_TIMEOUT_S = 120


@dataclass(frozen=True)
class Sealed:
    """One sealed file: what is delivered, what is archived, and its digest for the trace."""

    for_recipient: bytes = field(repr=False)
    """The .p7m delivered to the département."""
    for_archive: bytes = field(repr=False)
    """The same signed bytes enveloped for the CNAF's own archive certificate."""
    sha256: str
    """Hex SHA-256 of `for_recipient` (what HubEE's upload header and the trace carry)."""


def sign(data: bytes, cert: x509.Certificate, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    """CMS SignedData (DER, SHA-256, content attached, signer certificate embedded)."""
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(data)
        .add_signer(cert, key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


def envelope(signed: bytes, recipient_cert: x509.Certificate) -> bytes:
    """CMS EnvelopedData (DER, AES-256-CBC) of `signed` for one RSA recipient."""
    return (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(signed)
        .add_recipient(recipient_cert)
        .set_content_encryption_algorithm(algorithms.AES256)
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


def seal(data: bytes, **keys: Any) -> Sealed:
    """Sign `data` once, envelope it for the département and for the CNAF's archive, both at once.

    `keys`: those of `seal_each` (signer_cert, signer_key, recipient_cert, archive_cert, now). Every
    certificate is checked first: a CertificateError leaves nothing half-made.
    """
    made = dict(seal_each(data, **keys))
    return Sealed(
        for_recipient=made[RECIPIENT],
        for_archive=made[ARCHIVE],
        sha256=hashlib.sha256(made[RECIPIENT]).hexdigest(),
    )


ARCHIVE, RECIPIENT = "archive", "recipient"


def seal_each(
    data: bytes,
    *,
    signer_cert: x509.Certificate,
    signer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    recipient_cert: x509.Certificate,
    archive_cert: x509.Certificate,
    now: datetime,
) -> Iterator[tuple[str, bytes]]:
    """`seal`, one envelope at a time: (ARCHIVE, bytes), then (RECIPIENT, bytes).

    A caller that writes each envelope before asking for the next holds one of them at a time,
    beside the signed bytes: about half the memory of `seal` for a large file. The certificates
    are checked before anything is yielded.
    """
    check_recipient(recipient_cert, now=now, role="recipient")
    check_recipient(archive_cert, now=now, role="archive")
    check_signer(signer_cert, signer_key, now=now)
    signed = sign(data, signer_cert, signer_key)
    del data  # the caller's reference may be the last: the plaintext need not outlive the signature
    # Same signed bytes in both envelopes: a re-emission re-envelopes, never re-signs.
    yield ARCHIVE, envelope(signed, archive_cert)
    yield RECIPIENT, envelope(signed, recipient_cert)


def _decrypt(
    p7m: bytes,
    cert: x509.Certificate,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    what: str,
) -> bytes:
    """The content of an EnvelopedData, or a DecryptError whose reason is one fixed phrase."""
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DecryptError(f"{what}: the key of {describe(cert)} is not RSA: it cannot open enveloped files")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        # Otherwise the failure would look like tampering (PKCS#1 implicit rejection).
        raise DecryptError(f"{what}: the private key does not match {describe(cert)}")
    try:
        return pkcs7.pkcs7_decrypt_der(p7m, cert, key, [])
    except UnsupportedAlgorithm:
        raise DecryptError(f"{what}: unsupported CMS content or algorithm") from None
    except ValueError as e:
        # Map cryptography's messages to fixed phrases: nothing of the input may leak.
        msg = str(e)
        if "No recipient found" in msg:
            reason = f"not for this recipient: not enveloped for {describe(cert)}"
        elif "not an EnvelopedData" in msg:
            reason = "not a CMS EnvelopedData (not encrypted?)"
        elif "parsing asn1" in msg or "parse" in msg.lower():
            reason = "not a DER CMS structure (truncated or not a .p7m)"
        else:
            reason = "decryption failed: the file was altered or damaged"
        raise DecryptError(f"{what}: {reason}") from None


def decrypt_envelope(
    p7m: bytes, *, cert: x509.Certificate, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, what: str
) -> bytes:
    """The content of an `envelope` made for `cert` (the kept consumed input, say); DecryptError otherwise."""
    return _decrypt(p7m, cert, key, what)


def _is_one_der_sequence(data: bytes) -> bool:
    """True when `data` is exactly one definite-length DER SEQUENCE, nothing after it."""
    if len(data) < 2 or data[0] != 0x30:
        return False
    first = data[1]
    if first < 0x80:
        header, length = 2, first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or len(data) < 2 + n:  # 0: BER indefinite length, never ours
            return False
        header, length = 2 + n, int.from_bytes(data[2 : 2 + n], "big")
    return header + length == len(data)


def _require_signed_data(signed: bytes, what: str) -> None:
    """Cheap structural check that `signed` is a SignedData carrying a certificate."""
    unsigned_or_altered = f"{what}: the content is not a CMS SignedData: the file is unsigned or was altered"
    # We only ever produce DER: trailing bytes or BER mean the plaintext is not what we
    # signed (a damaged last CBC block can still pass the padding check by chance).
    # It also spares us cryptography's BER-fallback warning in the logs.
    if not _is_one_der_sequence(signed):
        raise SignatureError(unsigned_or_altered)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pkcs7.load_der_pkcs7_certificates(signed)
    except UnsupportedAlgorithm:
        raise SignatureError(
            f"{what}: the content is not signed (a CMS structure other than SignedData)"
        ) from None
    except ValueError as e:
        if "no certificate" in str(e):
            raise SignatureError(f"{what}: the signed data carries no signer certificate") from None
        raise SignatureError(unsigned_or_altered) from None
    except Warning:
        raise SignatureError(unsigned_or_altered) from None


def reseal_from_archive(
    archived: bytes,
    *,
    archive_cert: x509.Certificate,
    archive_key: rsa.RSAPrivateKey,
    recipient_cert: x509.Certificate,
    now: datetime,
) -> bytes:
    """Re-envelope an archived file's signed bytes for a (new) département certificate."""
    check_recipient(recipient_cert, now=now, role="recipient")
    signed = _decrypt(archived, archive_cert, archive_key, "archived file")
    _require_signed_data(signed, "archived file")
    return envelope(signed, recipient_cert)


_OPENSSL_REASON = re.compile(r":error:[0-9A-Fa-f]+:[^:\n]*:[^:\n]*:([a-zA-Z0-9 _-]+)")


def _openssl_reasons(stderr: bytes) -> list[str]:
    """OpenSSL's library reason strings (fixed vocabulary, never data), deduplicated."""
    seen: list[str] = []
    for m in _OPENSSL_REASON.finditer(stderr.decode("ascii", "replace")):
        reason = m.group(1).strip()
        if reason and reason not in seen:
            seen.append(reason)
    return seen


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _openssl_verify(signed: bytes, what: str) -> tuple[bytes, list[x509.Certificate]]:
    """Check the signature with `openssl cms -verify -noverify`; return content and signers."""
    exe = shutil.which(OPENSSL)
    if exe is None:
        raise SealToolError(
            f"{what}: the '{OPENSSL}' command is not available; it is needed to verify signatures"
        )
    with tempfile.TemporaryDirectory(prefix="flux-pmi-verify-") as tmp:  # mkdtemp: 0700
        signer_pem = Path(tmp) / "signer.pem"
        # Created 0600 beforehand: OpenSSL then truncates it and keeps the mode.
        _write_private(signer_pem, b"")
        try:
            proc = subprocess.run(
                [exe, "cms", "-verify", "-inform", "DER", "-binary", "-noverify", "-signer", str(signer_pem)],
                input=signed,
                capture_output=True,
                timeout=OPENSSL_TIMEOUT_S,
                env={**os.environ, "LC_ALL": "C"},
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SealToolError(f"{what}: openssl did not answer within {OPENSSL_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            reasons = _openssl_reasons(proc.stderr)
            if any(r in reasons for r in ("verification failure", "content verify error", "digest failure")):
                raise SignatureError(f"{what}: tampered: the signature does not match the content")
            if "signer certificate not found" in reasons:
                raise SignatureError(f"{what}: the signed data carries no signer certificate")
            detail = ", ".join(reasons) or f"exit status {proc.returncode}"
            raise SignatureError(f"{what}: the signature cannot be checked (openssl: {detail})")
        pem = signer_pem.read_bytes()
        signers = x509.load_pem_x509_certificates(pem) if pem.strip() else []
    return proc.stdout, signers


def open_sealed(
    p7m: bytes,
    *,
    recipient_cert: x509.Certificate,
    recipient_key: rsa.RSAPrivateKey,
    trusted_signers: list[x509.Certificate],
) -> bytes:
    """Decrypt a .p7m, verify its signature and signer, and return the original bytes.

    Raises DecryptError when the file is not for this recipient or cannot be opened,
    SignatureError when it was tampered with, is unsigned, or is signed by a certificate
    not in `trusted_signers`, and SealToolError when openssl is missing or does not answer.
    """
    what = "sealed file"
    signed = _decrypt(p7m, recipient_cert, recipient_key, what)
    _require_signed_data(signed, what)
    content, signers = _openssl_verify(signed, what)
    if not signers:
        raise SignatureError(f"{what}: the signed data has no signer")
    trusted = {c.public_bytes(serialization.Encoding.DER) for c in trusted_signers}
    for signer in signers:
        if signer.public_bytes(serialization.Encoding.DER) not in trusted:
            raise SignatureError(
                f"{what}: untrusted signer: signed by {describe(signer)}, "
                f"which is not one of the {len(trusted)} trusted signer certificate(s)"
            )
    return content
