"""`flux-pmi retry ID`: deliver one archived emission now, the operator's "retry by id".

The night retries every undelivered file by itself; an operator whose partner is back does
not want to wait for it. This sends one emission (an id `flux-pmi history` shows) through the
night's own delivery path (jobs/deliver.py, `only={id}`), traced as a `retry` run, and
refuses, sending nothing, what must not be sent now:
- an unknown or purged id, or one already delivered or acknowledged (a copy would reach the
  partner twice: that is `reemit`'s job, traced as a request);
- one not archived yet (the night builds it) or refused by the partner (it waits for a re-emission);
- one of a held département (`resume` first) or of a département not enabled;
- one behind an earlier sequence of its flow still waiting: sending it first would open a gap.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from ..config.settings import Settings
from ..core.clock import Clock
from ..core.errors import ExitCode, RefusedError
from ..core.log import bind_run, unbind_run
from ..core.log import get as get_logger
from ..trace.lifecycle import DONE, TO_DELIVER, RunStatus, Status
from ..trace.records import Emission
from ..trace.store import TraceStore
from .deliver import Deliverer


@dataclass
class RetryResult:
    emission_id: int
    run_id: int
    exit_code: ExitCode = ExitCode.OK
    lines: list[str] = field(default_factory=list)  # what the command prints: no personal data


def _refusal(settings: Settings, trace: TraceStore, emission_id: int) -> tuple[Emission | None, str | None]:
    """The emission, and why it may not be delivered now (None: it may)."""
    e = trace.emission_detail(emission_id)
    if e is None:
        return None, f"no emission {emission_id} in the trace (unknown, or purged by the retention)"
    what = f"emission {emission_id} ({e.file_name or f'{e.flow} {e.department}'})"
    if e.status in DONE or e.status == Status.PURGED:
        return e, f"{what} is {e.status} already; to send it again, ask `flux-pmi reemit`"
    if e.status == Status.REFUSED:
        return e, f"{what} was refused by the département (KO ack); it waits for a re-emission"
    if e.status not in TO_DELIVER:
        return e, f"{what} is {e.status}, not archived yet; the next run builds and delivers it"
    dept = settings.departments.get(e.department)
    if dept is None or not dept.enabled:
        return e, f"{what}: département {e.department} is not enabled"
    if e.department in trace.active_holds():
        return e, f"{what}: département {e.department} is held; `flux-pmi resume {e.department}` first"
    earlier = [w for w in trace.to_deliver() if (w.flow, w.department) == (e.flow, e.department) and w.seq < e.seq]
    if earlier:
        return e, (f"{what}: emission {earlier[0].id} (seq {earlier[0].seq}) of the same flow waits before it;"
                   f" retry {earlier[0].id} first, so that no sequence gap reaches the partner")
    return e, None


def retry(settings: Settings, emission_id: int, *, clock: Clock, stop: threading.Event | None = None,
          deliverer: Deliverer | None = None) -> RetryResult:
    """Deliver emission `emission_id` now; RefusedError (nothing sent, nothing traced) when it may not be."""
    log = get_logger("flux-pmi.retry")
    with TraceStore(settings.paths.trace) as trace:
        emission, refusal = _refusal(settings, trace, emission_id)
        if refusal is not None or emission is None:
            raise RefusedError(refusal)
        started = time.monotonic()
        run_id = trace.start_run("retry", None, clock.now())
        bind_run(run_id)
        result = RetryResult(emission_id, run_id)
        code, status = ExitCode.INTERNAL, RunStatus.FAILED
        try:
            deliverer = deliverer or Deliverer(settings, clock=clock, stop=stop)
            done = deliverer.deliver(trace, run_id, only={emission_id})
            if done.delivered:
                code = ExitCode.OK
                result.lines.append(f"delivered: {emission.file_name} to département {emission.department}")
            else:
                code = ExitCode.INTERRUPTED if deliverer.stop.is_set() else ExitCode.UNDELIVERED
                result.lines.append(f"not delivered: {emission.file_name}; the next run retries it")
                result.lines.extend(f"  - {p}" for p in done.problems)
                result.lines.append(f"exit {int(code)}: {code.name}")
            result.exit_code, status = code, RunStatus.of_exit(code.name)
            return result
        finally:
            trace.finish_run(run_id, clock.now(), status=status, exit_code=int(code),
                             files=1 if code == ExitCode.OK else 0,
                             nbytes=emission.size or 0 if code == ExitCode.OK else 0,
                             message="; ".join(result.lines[1:])[:2000])
            log.info("retry.end", run=run_id, emission=emission_id, exit_code=int(code),
                     seconds=round(time.monotonic() - started, 3))
            unbind_run()
