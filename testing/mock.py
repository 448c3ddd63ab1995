"""The transport test double, in the shape of httpx's MockTransport: it takes a handler function.

`MockTransport(handler, department)` implements the Transport interface (and Checkable) by
calling `handler(request)` for each call, a `Request` saying which: the handler returns the
answer (a Receipt, a list of AckFile or of CheckResult, None) or raises, a TransportError
say. The orchestrator is thus tested against the same interface the real adapters implement.

`ScriptedPartner` is the handler for the behaviours the tests script most: it keeps what it
receives in memory per département, fails the n first deliveries of a département, answers
"partner down" for others, queues acks, and builds transports for a night (`.factory`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..config.settings import Department, Settings
from ..core.errors import TransportError
from ..transport.base import AckFile, CheckResult, Delivery, Receipt, Transport


class Call(StrEnum):
    DELIVER = "deliver"
    FETCH_ACKS = "fetch_acks"
    REMOVE_ACK = "remove_ack"
    CHECK = "check"


@dataclass(frozen=True, slots=True)
class Request:
    """One call on a MockTransport: which, for which département, with what."""

    call: Call
    department: str
    item: Delivery | None = None  # DELIVER
    name: str = ""  # REMOVE_ACK


Handler = Callable[[Request], Any]


class MockTransport(Transport):
    """A Transport whose every call is answered by `handler`."""

    name = "mock"

    def __init__(self, handler: Handler, department: str = ""):
        self.handler = handler
        self.department = department
        self.closed = False

    def _ask(self, request: Request, answer_type: type) -> Any:
        answer = self.handler(request)
        if not isinstance(answer, answer_type):
            raise TypeError(f"the mock's handler answered {request.call} with {type(answer).__name__}")
        return answer

    def deliver(self, item: Delivery) -> Receipt:
        answer: Receipt = self._ask(Request(Call.DELIVER, self.department, item=item), Receipt)
        return answer

    def fetch_acks(self) -> list[AckFile]:
        answer: list[AckFile] = self._ask(Request(Call.FETCH_ACKS, self.department), list)
        return answer

    def remove_ack(self, name: str) -> None:
        self.handler(Request(Call.REMOVE_ACK, self.department, name=name))

    def check(self) -> list[CheckResult]:
        answer: list[CheckResult] = self._ask(Request(Call.CHECK, self.department), list)
        return answer

    def close(self) -> None:
        self.closed = True


class ScriptedPartner:
    """A handler scripting the common behaviours, shared by every département's MockTransport."""

    def __init__(self, *, fail_first: dict[str, int] | None = None, down: set[str] | None = None,
                 on_deliver: Callable[[Delivery], None] | None = None):
        self.received: dict[str, dict[str, bytes]] = defaultdict(dict)
        self.attempts: dict[str, int] = defaultdict(int)
        self.fail_first = dict(fail_first or {})  # département -> transient failures still to give
        self.down = set(down or ())  # départements whose partner is down
        self.acks: dict[str, list[AckFile]] = defaultdict(list)  # queued, by département
        self.on_deliver = on_deliver
        self.transports: list[MockTransport] = []

    def __call__(self, request: Request) -> Any:
        d = request.department
        if request.call is Call.DELIVER:
            assert request.item is not None
            return self._deliver(request.item)
        if request.call is Call.FETCH_ACKS:
            return list(self.acks.get(d, []))
        if request.call is Call.REMOVE_ACK:
            self.acks[d] = [a for a in self.acks[d] if a.name != request.name]
            return None
        ok = d not in self.down
        return [CheckResult(d, ok, "double reachable" if ok else "double down")]

    def _deliver(self, item: Delivery) -> Receipt:
        d = item.department
        self.attempts[d] += 1
        if self.on_deliver:
            self.on_deliver(item)
        if d in self.down:
            raise TransportError(d, "partner down (double)")
        if self.fail_first.get(d, 0) > 0:
            self.fail_first[d] -= 1
            raise TransportError(d, "transient failure (double)")
        already = item.file_name in self.received[d]
        self.received[d][item.file_name] = item.path.read_bytes()
        return Receipt(item.file_name, already_there=already)

    def transport(self, department: str) -> MockTransport:
        t = MockTransport(self, department)
        self.transports.append(t)
        return t

    def factory(self, settings: Settings, dept: Department) -> MockTransport:
        """A night's `transport_factory`: one MockTransport per département, all answered here."""
        return self.transport(dept.code)

    @property
    def closed(self) -> bool:
        """Every transport built here was closed."""
        return all(t.closed for t in self.transports)
