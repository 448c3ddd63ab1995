"""A real SMTP server on loopback (aiosmtpd) with STARTTLS and AUTH, that keeps what arrived.

Incident notices are tested through it as through the CNAF's relay: the client must upgrade
to TLS (a self-signed certificate for 127.0.0.1, made here, that the client trusts through
`[notify] cafile`) and log in before the server accepts a message.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .sshd import free_port

HOST = "127.0.0.1"
USER, PASSWORD = "flux-pmi", "relay-secret-for-tests"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for 127.0.0.1, the certificate its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp test relay")])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    crt, pem = folder / "smtp.crt", folder / "smtp.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


@dataclass
class Arrived:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    login: bytes | None


@dataclass
class _Handler:
    arrived: list[Arrived] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        msg = message_from_bytes(envelope.original_content, policy=policy.default)
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        self.arrived.append(Arrived(envelope.mail_from, list(envelope.rcpt_tos), msg,  # type: ignore[arg-type]
                                    session.ssl is not None, login))
        return "250 Message accepted for delivery"


def _authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode() \
        and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class SmtpRelay:
    """Start with `start()`, read `arrived`, `stop()`; STARTTLS and AUTH are required."""

    def __init__(self, folder: Path):
        self.cert, key = self_signed(folder)
        self.port = free_port()
        self.handler = _Handler()
        self.started = False
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(self.cert, key)
        self.controller = Controller(self.handler, hostname=HOST, port=self.port, tls_context=tls,
                                     require_starttls=True, auth_required=True, auth_require_tls=True,
                                     authenticator=_authenticator)

    @property
    def arrived(self) -> list[Arrived]:
        return self.handler.arrived

    def start(self) -> SmtpRelay:
        self.controller.start()
        self.started = True
        return self

    def stop(self) -> None:
        if self.started:
            self.controller.stop()
            self.started = False
