"""The one interface every transport implements, in the shape of httpx's transports.

A transport is built for one département (the factory builds one per département from its
configuration) and offers `deliver`, `fetch_acks`, `remove_ack` and `close`; it is a context
manager, closed on leaving. Diagnostics sit behind a separate small protocol, `Checkable`,
that `flux-pmi check` (jobs/preflight.py) uses: a night never needs them.

A transport moves opaque sealed bytes; it knows nothing of flows, records or the
trace. Delivery must be idempotent: delivering the same file name with the same
SHA-256 twice (a rerun after a crash) leaves one file, never a second identity.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, runtime_checkable


@dataclass(frozen=True, slots=True)
class Delivery:
    department: str
    flow: str
    file_name: str  # final name at the partner, e.g. GRO_035_20261122_000012.xml.p7m
    path: Path  # the sealed file in the archive
    size: int
    sha256: str
    # (sha256, size) of the same file's earlier seals (re-sealed for a renewed certificate while it
    # waited): found at the partner, one of these is the file delivered already, not another file.
    earlier: tuple[tuple[str, int], ...] = ()
    # Where each earlier seal's bytes are kept (None: not kept): a partner holding one half-sent
    # (a HubEE folder created for it, not completed) has it finished, not replaced.
    earlier_paths: tuple[Path | None, ...] = ()


@dataclass(frozen=True, slots=True)
class Receipt:
    file_name: str
    already_there: bool = False  # the partner had it already (rerun after a crash)
    reference: str = ""  # transport-side id: CFT IDTU, HubEE folder id, remote path
    earlier_sha256: str = ""  # the partner had it already as one of Delivery.earlier: that seal's digest


class AckStatus(StrEnum):
    OK = "OK"
    KO = "KO"


@dataclass(frozen=True, slots=True)
class AckDecision:
    """A partner's decision on a delivered file, where its protocol gives one instead of an ack file.

    HubEE says it through a case's status: the transport hands the decision over as it is, and
    the ack collector writes it in the ack format (schemas/ack.py), which transports do not know.
    """

    file_name: str  # the delivered file
    sha256: str  # of the file as delivered
    status: AckStatus
    code: str  # the partner's own status code, e.g. SI_RECEIVED
    at: datetime  # when the partner took the file into account (aware)


@dataclass(frozen=True, slots=True)
class AckFile:
    department: str
    name: str  # the ack's name (core/names.ack_name of the delivered file)
    data: bytes | None = None  # the ack document, as the partner wrote it
    decision: AckDecision | None = None  # or the partner's decision, when it writes no document


@dataclass(frozen=True, slots=True)
class CheckResult:
    department: str
    ok: bool
    what: str
    detail: str = ""
    warning: bool = False


class Transport(abc.ABC):
    """One département's partner connection. Methods raise errors.TransportError (or a subclass)."""

    name: str = "transport"
    department: str

    @abc.abstractmethod
    def deliver(self, item: Delivery) -> Receipt: ...

    @abc.abstractmethod
    def fetch_acks(self) -> list[AckFile]: ...

    def remove_ack(self, name: str) -> None:  # noqa: B027 - optional hook
        """Remove an ack once recorded, where the protocol allows it."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.close()


@runtime_checkable
class Checkable(Protocol):
    """A transport that can say, without sending any data, whether its partner is reachable and usable."""

    def check(self) -> list[CheckResult]: ...


@dataclass
class TransportSet:
    """The transports of a run, one per département, closed together."""

    by_department: dict[str, Transport] = field(default_factory=dict)

    def close(self) -> None:
        for t in {id(t): t for t in self.by_department.values()}.values():
            t.close()
