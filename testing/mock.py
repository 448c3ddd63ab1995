"""A test double implementing the Transport interface, with scripted faults.

It keeps what it receives in memory and can fail the n first deliveries of a
département, fail permanently, or raise on demand: the orchestrator is tested
against the same interface the real adapters implement.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from ..core.errors import TransportError
from ..transport.base import AckFile, CheckResult, Delivery, Receipt, Transport


class RecordingTransport(Transport):
    name = "double"

    def __init__(self, *, fail_first: dict[str, int] | None = None, down: set[str] | None = None,
                 on_deliver: Callable[[Delivery], None] | None = None):
        self.received: dict[str, dict[str, bytes]] = defaultdict(dict)
        self.attempts: dict[str, int] = defaultdict(int)
        self.fail_first = dict(fail_first or {})
        self.down = set(down or ())
        self.acks: dict[str, list[AckFile]] = defaultdict(list)
        self.on_deliver = on_deliver
        self.closed = False

    def deliver(self, item: Delivery) -> Receipt:
        self.attempts[item.department] += 1
        if self.on_deliver:
            self.on_deliver(item)
        if item.department in self.down:
            raise TransportError(item.department, "partner down (double)")
        if self.fail_first.get(item.department, 0) > 0:
            self.fail_first[item.department] -= 1
            raise TransportError(item.department, "transient failure (double)")
        already = item.file_name in self.received[item.department]
        self.received[item.department][item.file_name] = item.path.read_bytes()
        return Receipt(item.file_name, already_there=already)

    def fetch_acks(self, department: str) -> list[AckFile]:
        return list(self.acks.get(department, []))

    def remove_ack(self, department: str, name: str) -> None:
        self.acks[department] = [a for a in self.acks[department] if a.name != name]

    def check(self, department: str) -> list[CheckResult]:
        ok = department not in self.down
        return [CheckResult(department, ok, "double reachable" if ok else "double down")]

    def close(self) -> None:
        self.closed = True
