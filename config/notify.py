"""The `[notify]` table: how flux-pmi e-mails incident notices (annexe 2, incidents).

The convention asks the sender to inform the receivers when an incident may delay a
delivery. Notices go by SMTP to the département's contacts (the registry or the
operator's file) and to the CNAF's operators listed here. Like every secret, the SMTP
password never sits in the TOML: an environment variable or an owner-only file. A
password never travels in clear: authentication requires STARTTLS. No `[notify]` table,
no notices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BeforeValidator, PositiveFloat, PrivateAttr, ValidationInfo, model_validator

from .validation import FilePath, Strict, existing, invalid, secret

# A deliverable address, not RFC 5322 in full: no display name, no comment, no list.
_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")


def _address(value: Any) -> Any:
    if not isinstance(value, str) or not _ADDRESS.match(value):
        raise invalid('an e-mail address such as "pmi-dsi@example.fr"')
    return value


def _addresses(value: Any) -> Any:
    if not isinstance(value, list) or not all(isinstance(v, str) and _ADDRESS.match(v) for v in value):
        raise invalid('a list of e-mail addresses such as ["pmi-dsi@example.fr"]')
    return tuple(dict.fromkeys(value))  # in the order given, once each


# A list of addresses in the TOML (a département's `contacts`, `[notify] operators`).
Addresses = Annotated[tuple[str, ...], BeforeValidator(_addresses)]
Address = Annotated[str, BeforeValidator(_address)]


@dataclass(frozen=True, slots=True)
class Notify:
    """What the mailer and the notices need, read and checked at load time."""

    host: str
    port: int
    starttls: bool
    from_address: str
    operators: tuple[str, ...]
    timeout: float
    username: str | None = None
    password: bytes | None = field(default=None, repr=False)
    cafile: Path | None = None  # a CA to trust for the relay's certificate, beside the system's


class NotifyTable(Strict):
    """`[notify]` as it stands in `flux-pmi.toml`."""

    host: str
    port: int = 587
    starttls: bool = True
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    from_address: Address
    operators: Addresses
    timeout: PositiveFloat = 30.0
    cafile: FilePath | None = None
    _password: bytes | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _checked(self, info: ValidationInfo) -> Self:
        if not self.host.strip():
            raise invalid("the SMTP relay's host name", "host")
        if not 1 <= self.port <= 65535:
            raise invalid("a TCP port from 1 to 65535", "port")
        if not self.operators:
            raise invalid("at least one CNAF operator's address: every notice goes to them", "operators")
        self._password = secret(info, self.password_env, self.password_file, "password") \
            if self.username is not None else None
        if self.username is not None and self._password is None:
            raise invalid("password_env or password_file beside username (the password never sits here)",
                          "password_env")
        if self.username is None and (self.password_env or self.password_file):
            raise invalid("a username: a password is only sent with one", "username")
        if self.username is not None and not self.starttls:
            raise invalid("true when username is set: a password never travels in clear", "starttls")
        if self.cafile is not None:
            existing(info, self.cafile, "cafile")
        return self

    def build(self) -> Notify:
        return Notify(host=self.host, port=self.port, starttls=self.starttls, from_address=self.from_address,
                      operators=self.operators, timeout=self.timeout, username=self.username,
                      password=self._password, cafile=self.cafile)
