"""One exception hierarchy and the documented exit codes.

Operators read these messages at 3 a.m. and monitoring reads the exit codes, so both
are stable. No message may carry personal data: they name files, lines, codes and
keys, never a person's values.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of every `flux-pmi` command (documented in docs/operations.md)."""

    OK = 0  # everything due was delivered (rejected records are reported, not "left to do")
    INTERNAL = 1  # an unexpected error: a bug; the trace says where the run stopped
    USAGE = 2  # bad command line or configuration
    UNDELIVERED = 3  # some emissions are built and archived but not delivered yet; the next run retries
    LOCKED = 4  # another run holds the lock and did not release it in time
    QUARANTINED = 5  # all delivered, but some input files were quarantined and need an operator
    REFUSED = 6  # a request was refused (re-emission outside retention, nothing emitted that day...)
    STALE = 7  # `status`: the last nightly run is older than the configured age
    INTERRUPTED = 8  # stopped by a signal before the work was finished; the next run resumes
    CHECK_FAILED = 9  # `check`: at least one error (certificate, configuration or partner)
    STORAGE = 10  # a folder flux-pmi needs is missing or not writable (unmounted share, read-only mount)
    # `status` as a monitoring probe (docs/operations.md): the first that applies, in this order:
    # LATE, STALE, UNDELIVERED, AT_RISK, UNACKNOWLEDGED, CERTIFICATES.
    LATE = 11  # `status`: records past their deadline (the earlier of the contract's and the law's)
    AT_RISK = 12  # `status`: records not delivered and due within 2 working days
    UNACKNOWLEDGED = 13  # `status`: files delivered more than [service] unacknowledged_days ago, never acked
    CERTIFICATES = 14  # `status`: a certificate expired, unreadable, or expiring within 30 days


class FluxError(Exception):
    """Base of every error flux-pmi raises on purpose."""

    exit_code: ExitCode = ExitCode.INTERNAL


class ConfigError(FluxError):
    """The configuration is wrong: names the file, the key and what is expected."""

    exit_code = ExitCode.USAGE

    def __init__(self, file: object, key: str, expected: str):
        self.file, self.key, self.expected = str(file), key, expected
        super().__init__(f"{self.file}: {key}: {expected}")


class InputFileError(FluxError):
    """A whole input file cannot be read (encoding, malformed XML or CSV): it is quarantined."""

    def __init__(self, file: str, line: int | None, reason: str, code: str = "UNREADABLE"):
        self.file, self.line, self.reason, self.code = file, line, reason, code
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {code}: {reason}")


class SchemaError(FluxError):
    """A built file does not validate against its XSD: nothing that fails leaves."""

    def __init__(self, what: str, errors: list[str]):
        self.what, self.errors = what, errors
        super().__init__(f"{what} does not validate: " + "; ".join(errors[:5]))


class SealError(FluxError):
    """A file cannot be sealed or opened (certificate unusable, bad signature...)."""


class DecryptError(SealError):
    """An enveloped file cannot be opened: not for this recipient, not CMS, altered, or the key cannot open it."""


class SignatureError(SealError):
    """An opened file's signature cannot be trusted: unsigned, tampered with, or an untrusted signer."""


class SealToolError(SealError):
    """The tool that checks signatures (openssl) is missing or did not answer: not the file's fault."""


class CertificateError(SealError):
    """A certificate cannot be used: expired, not yet valid, wrong key usage.

    An operator's matter (renew or fix the configuration), not a bug: hence USAGE.
    """

    exit_code = ExitCode.USAGE


class ArchiveError(FluxError):
    """The archive cannot keep or give back a file."""


class TransportError(FluxError):
    """A delivery failed. `permanent` tells the retry loop not to insist."""

    def __init__(self, partner: str, reason: str, *, permanent: bool = False):
        self.partner, self.reason, self.permanent = partner, reason, permanent
        super().__init__(f"partner {partner}: {reason}")


class HostKeyError(TransportError):
    """A partner's host key is unknown or changed: not one byte is sent."""

    def __init__(self, partner: str, reason: str):
        super().__init__(partner, reason, permanent=True)


class MailError(FluxError):
    """An incident notice was not accepted by the SMTP relay: it stays pending, the next run retries.

    Never a run's failure (the files' delivery does not wait for a mail), and its message names the
    relay and the SMTP reply code, never an address or the relay's free text.
    """


class TraceError(FluxError):
    """The trace store refuses a change (e.g. a transition the lifecycle forbids)."""


class StorageError(FluxError):
    """A folder flux-pmi reads or writes is missing or cannot be written: nothing was claimed or sent.

    An operator's matter (mount the share, fix the owner, point [paths] at a writable place),
    not a bug: the message names the folder and what the system said, never a traceback.
    """

    exit_code = ExitCode.STORAGE

    def __init__(self, folder: object, reason: str):
        self.folder, self.reason = str(folder), reason
        super().__init__(f"{self.folder}: {reason}")


class LockBusyError(FluxError):
    exit_code = ExitCode.LOCKED


class RefusedError(FluxError):
    """A request that is refused on purpose, with the reason, and sends nothing."""

    exit_code = ExitCode.REFUSED
