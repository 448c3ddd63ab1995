"""A throw-away PKI so the demo and the tests seal and open files like production does.

Production certificates come from real authorities and are never made here. This
module exists so that the whole chain (sign as the CNAF, envelope for each
département, open with stock OpenSSL) runs end to end on a laptop, with certificates
shaped like the real ones: a root CA, a CNAF signing certificate, the CNAF's own
archive encryption certificate, and one encryption certificate per département.

Everything is marked "(demo)" in its common name so that no one mistakes it for a
real certificate. Keys are written unencrypted (a demo has no secret store) but
owner-only: files 0600 in a 0700 folder. `ca.key` is written too, so a later demo
step can issue a renewed département certificate (the re-emission scenario).

RSA key generation is the slow part (~0.1 s per 2048-bit key, ~100 départements).
cryptography releases the GIL while it generates a key, so a pool of 2 *threads*
nearly halves the time, without the pitfalls of a process pool (re-importing the
caller's `__main__`, forking a threaded parent).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

__all__ = [
    "CA_USAGE",
    "ENCIPHERMENT",
    "SIGNING",
    "Credential",
    "Pki",
    "issue_cert",
    "key_usage",
    "make_ca",
    "make_pki",
    "write_credential",
]

VALIDITY_BEFORE = timedelta(days=1)
VALIDITY_AFTER = timedelta(days=730)  # ~2 years
CNAF_CN = "CNAF flux-pmi (demo)"
ARCHIVE_CN = "CNAF flux-pmi archive (demo)"
CA_CN = "flux-pmi demo root CA (demo)"
ORG = "flux-pmi demo"

# Below this many keys a pool is not worth its start-up.
POOL_THRESHOLD = 8
POOL_WORKERS = 2

_DEPT = re.compile(r"^(?:\d{3}|02[AB]|69M)$")

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def key_usage(**flags: bool) -> x509.KeyUsage:
    """A KeyUsage with the named flags set (x509.KeyUsage wants all nine spelled out)."""
    names = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    unknown = set(flags) - set(names)
    if unknown:
        raise TypeError(f"unknown KeyUsage flags: {sorted(unknown)}")
    return x509.KeyUsage(**{n: flags.get(n, False) for n in names})


CA_USAGE = key_usage(key_cert_sign=True, crl_sign=True)
SIGNING = key_usage(digital_signature=True, content_commitment=True)  # content_commitment = nonRepudiation
ENCIPHERMENT = key_usage(key_encipherment=True)


@dataclass(frozen=True)
class Credential:
    """A certificate and its private key, in memory."""

    cert: x509.Certificate
    key: PrivateKey = field(repr=False)


@dataclass(frozen=True)
class Pki:
    """Where make_pki wrote everything; `ca` stays in memory to issue more certificates."""

    dir: Path
    ca_cert: Path
    ca_key: Path
    cnaf_cert: Path
    cnaf_key: Path
    archive_cert: Path
    archive_key: Path
    departments: tuple[str, ...]
    ca: Credential = field(repr=False, compare=False)

    def dept_cert(self, dept: str) -> Path:
        return self.dir / f"{_check_dept(dept)}.crt"

    def dept_key(self, dept: str) -> Path:
        return self.dir / f"{_check_dept(dept)}.key"


def _check_dept(dept: str) -> str:
    # The code becomes a file name: a strict pattern also rules out path tricks.
    if not isinstance(dept, str) or not _DEPT.match(dept):
        raise ValueError(f"département code must be 3 characters like '035', '02A', '971': {dept!r}")
    return dept


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _new_key(key_size: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def make_ca(
    common_name: str = CA_CN,
    *,
    now: datetime,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    key_size: int = 2048,
) -> Credential:
    """A self-signed root CA (basicConstraints CA, keyCertSign)."""
    key = _new_key(key_size)
    name = _name(common_name)
    cert = (
        _builder(
            name,
            name,
            key.public_key(),
            not_before or now - VALIDITY_BEFORE,
            not_after or now + VALIDITY_AFTER,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_USAGE, critical=True)
        .sign(key, hashes.SHA256())
    )
    return Credential(cert, key)


def _issue(
    ca: Credential,
    common_name: str,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    *,
    not_before: datetime,
    not_after: datetime,
    key_usage: x509.KeyUsage | None,
) -> x509.Certificate:
    b = (
        _builder(_name(common_name), ca.cert.subject, public_key, not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if key_usage is not None:
        b = b.add_extension(key_usage, critical=True)
    return b.sign(ca.key, hashes.SHA256())


def issue_cert(
    ca: Credential,
    common_name: str,
    *,
    now: datetime,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    key_usage: x509.KeyUsage | None = ENCIPHERMENT,
    key_size: int = 2048,
    key: PrivateKey | None = None,
) -> Credential:
    """A leaf certificate issued by `ca`; the tests use it for expired / early / wrong-usage cases.

    Dates default to the demo validity around `now`. `key_usage=None` leaves the
    extension out. Pass `key` to reuse a key (a renewal keeping its key, an EC key,
    or simply to skip a slow RSA generation).
    """
    if key is None:
        key = _new_key(key_size)
    cert = _issue(
        ca,
        common_name,
        key.public_key(),
        not_before=not_before or now - VALIDITY_BEFORE,
        not_after=not_after or now + VALIDITY_AFTER,
        key_usage=key_usage,
    )
    return Credential(cert, key)


# --- writing -------------------------------------------------------------------------


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        # os.open's mode only applies to a new file, and the umask trims it: set it again.
        os.fchmod(f.fileno(), mode)
        f.write(data)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_credential(cred: Credential, directory: Path, stem: str) -> tuple[Path, Path]:
    """Write `<stem>.crt` (0644) and `<stem>.key` (0600) into `directory`."""
    crt, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    _write(key, _key_pem(cred.key), 0o600)
    _write(crt, _cert_pem(cred.cert), 0o644)
    return crt, key


def _key_file(path: Path, key_size: int) -> rsa.RSAPrivateKey:
    """Generate a key and write it 0600 at `path` (runs in a pool thread)."""
    key = _new_key(key_size)
    _write(path, _key_pem(key), 0o600)
    return key


def make_pki(
    dir: Path,
    departments: Iterable[str],
    *,
    now: datetime,
    key_size: int = 2048,
    workers: int | None = None,
) -> Pki:
    """Write a demo PKI into `dir` (see the module docstring for the files).

    `workers`: threads generating keys; by default 2 when there are enough keys for
    a pool to pay off, else 1.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    depts = tuple(dict.fromkeys(_check_dept(d) for d in departments))
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(dir, 0o700)  # also when it existed, and whatever the umask
    not_before, not_after = now - VALIDITY_BEFORE, now + VALIDITY_AFTER

    ca = make_ca(now=now, not_before=not_before, not_after=not_after, key_size=key_size)
    ca_cert, ca_key = write_credential(ca, dir, "ca")

    # Leaves: stem -> (common name, key usage)
    leaves: dict[str, tuple[str, x509.KeyUsage]] = {
        "cnaf": (CNAF_CN, SIGNING),
        "archive": (ARCHIVE_CN, ENCIPHERMENT),
    }
    for d in depts:
        leaves[d] = (f"PMI {d} (demo)", ENCIPHERMENT)

    jobs = [(dir / f"{stem}.key", key_size) for stem in leaves]
    n_workers = workers if workers is not None else (POOL_WORKERS if len(jobs) >= POOL_THRESHOLD else 1)
    if n_workers > 1:
        with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="pki-keygen") as pool:
            keys = list(pool.map(_key_file, *zip(*jobs, strict=True)))
    else:
        keys = [_key_file(path, size) for path, size in jobs]

    for (stem, (cn, usage)), key in zip(leaves.items(), keys, strict=True):
        cert = _issue(ca, cn, key.public_key(), not_before=not_before, not_after=not_after, key_usage=usage)
        _write(dir / f"{stem}.crt", _cert_pem(cert), 0o644)

    return Pki(
        dir=dir,
        ca_cert=ca_cert,
        ca_key=ca_key,
        cnaf_cert=dir / "cnaf.crt",
        cnaf_key=dir / "cnaf.key",
        archive_cert=dir / "archive.crt",
        archive_key=dir / "archive.key",
        departments=depts,
        ca=ca,
    )
