"""A plain-text e-mail through the CNAF's SMTP relay: STARTTLS, then AUTH, with the stdlib.

Incident notices (jobs/notices.py) are the only mail flux-pmi sends, a few a month, so
`smtplib` is enough and no dependency is added. The relay's certificate is verified (the
system's CAs, plus `[notify] cafile` for an internal CA), and a password is only sent
inside TLS (config/notify.py refuses the other case). Any failure becomes a MailError
naming the relay and the SMTP code only: a relay's free text may echo an address.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from ..config.notify import Notify
from ..core.errors import MailError


def message(notify: Notify, to: Sequence[str], subject: str, body: str, now: datetime) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = notify.from_address
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain=notify.from_address.rpartition("@")[2])
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    msg.set_content(body, cte="quoted-printable")  # 7-bit clean: no relay needs 8BITMIME for the accents
    return msg


def _tls(notify: Notify) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if notify.cafile is not None:
        ctx.load_verify_locations(cafile=notify.cafile)
    return ctx


def _reason(exc: Exception) -> str:
    """What went wrong, without the relay's text (it may quote a recipient's address)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return f"all {len(exc.recipients)} recipient(s) refused"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__} (SMTP {exc.smtp_code})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or type(exc).__name__}"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


def probe(notify: Notify) -> str:
    """Log in to the relay as `send` does (STARTTLS, certificate, AUTH), send nothing; what was proven.

    `flux-pmi check` calls it: a relay that refuses us is found before the first incident, not
    in its notice's retries.
    """
    try:
        with smtplib.SMTP(notify.host, notify.port, timeout=notify.timeout) as smtp:
            proven = ["connected"]
            if notify.starttls:
                smtp.starttls(context=_tls(notify))
                proven.append("STARTTLS, certificate verified")
            if notify.username is not None and notify.password is not None:
                smtp.login(notify.username, notify.password.decode())
                proven.append("logged in")
            code, _text = smtp.noop()
            if code != 250:
                raise smtplib.SMTPResponseException(code, b"")
    except (smtplib.SMTPException, OSError) as exc:
        raise MailError(f"SMTP relay {notify.host}:{notify.port}: {_reason(exc)}") from None
    return ", ".join(proven)


def send(notify: Notify, to: Sequence[str], subject: str, body: str, now: datetime) -> int:
    """Send one message to `to`; how many recipients the relay refused (the others got it)."""
    msg = message(notify, to, subject, body, now)
    try:
        with smtplib.SMTP(notify.host, notify.port, timeout=notify.timeout) as smtp:
            if notify.starttls:
                smtp.starttls(context=_tls(notify))
            if notify.username is not None and notify.password is not None:
                smtp.login(notify.username, notify.password.decode())
            refused = smtp.send_message(msg)
    except (smtplib.SMTPException, OSError) as exc:
        raise MailError(f"SMTP relay {notify.host}:{notify.port}: {_reason(exc)}") from None
    return len(refused)
