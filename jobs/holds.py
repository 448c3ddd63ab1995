"""`flux-pmi hold DEPT` / `flux-pmi resume DEPT`: an operator pauses one partner's deliveries.

A partner under maintenance must not be disabled (`enabled = false` means "receives
nothing"): its records would no longer be emitted on time. A hold only stops the delivery:
the night still builds, seals and archives its files with their sequence numbers, and they
wait; no connection is opened to the partner, not even to read its acks. On resume the next
run (`flux-pmi run`, or the scheduled night) delivers them in sequence order, once each,
through the ordinary delivery queue.

Both are traced in the `holds` table (who: `--by` or the OS user; when; why), which keeps
the history. Neither takes the run lock: a hold is one row, and a hold must work during a
night. A run in progress reads the holds again before each file it sends (jobs/deliver.py):
the file it is sending to the département at that moment still arrives, the others wait.
`hold` looks whether the run lock is held, without waiting for it, and says so.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ..config.settings import Settings, load
from ..core.errors import ConfigError
from ..core.lock import describe, holder, lock_path
from ..trace.store import TraceStore
from .reemit import _clean, parse_departments, requester


def one_department(settings: Settings, value: str) -> str:
    """One registry code as an operator types it (35, 2a, 971); `all` or an unknown code is refused."""
    if value.strip().lower() == "all":
        raise ConfigError("command line", "department", "one département code (035, 02A, 971), not all")
    try:
        return parse_departments(settings, [value])[0]
    except ConfigError:  # its message offers `all`, which a hold refuses
        raise ConfigError("command line", "department",
                          f"one département code of the registry (035, 02A, 971), got {value.strip()!r}") from None


def _waiting(trace: TraceStore, department: str) -> int:
    return sum(e.department == department for e in trace.to_deliver())


def _asked(config: Path, department: str, by: str | None, verb: str) -> tuple[Settings, str, str]:
    """The settings, the département's registry code and who asks: `--by ""` is refused, not the OS user."""
    settings = load(config, check_files=False)
    code = one_department(settings, department)
    who = _clean(requester() if by is None else by, 64)
    if not who:
        raise ConfigError("command line", "--by", f"who {verb} the département (an operator identity)")
    return settings, code, who


def hold(config: Path, department: str, *, by: str | None, reason: str, now: datetime) -> list[str]:
    settings, code, who = _asked(config, department, by, "holds")
    trace = TraceStore(settings.paths.trace)
    try:
        row, created = trace.hold(code, now, by=who, reason=_clean(reason, 500))
        waiting = _waiting(trace, code)
    finally:
        trace.close()
    lines = [
        f"département {code} {'held' if created else 'already held'} since {row.held_at} by {row.held_by}"
        + (f": {row.reason}" if row.reason else ""),
        f"{waiting} file(s) waiting; its files are built and archived as usual and wait for "
        f"`flux-pmi resume {code}`",
    ]
    running = holder(lock_path(settings.paths.trace))
    if running is not None:
        # Read after the hold is committed: a run that takes the lock later reads the hold anyway.
        lines.append(f"a run is in progress ({describe(running)}): a file it is sending to {code} right now "
                     f"may still arrive; it sends no other file to {code}, the rest waits")
    if not settings.departments[code].enabled:
        lines.append(f"note: département {code} is not enabled: it receives nothing anyway")
    return lines


def resume(config: Path, department: str, *, by: str | None, now: datetime) -> list[str]:
    settings, code, who = _asked(config, department, by, "resumes")
    trace = TraceStore(settings.paths.trace)
    try:
        row = trace.resume(code, now, by=who)
        waiting = _waiting(trace, code)
    finally:
        trace.close()
    if row is None:
        return [f"département {code} is not held: nothing to resume"]
    lines = [f"département {code} resumed by {who} (held since {row.held_at} by {row.held_by})"]
    if settings.departments[code].enabled:
        lines.append(f"{waiting} waiting file(s) are delivered in sequence order by the next run (`flux-pmi run`)")
    else:
        lines.append(f"note: département {code} is not enabled: its {waiting} waiting file(s) wait until its "
                     "table has a certificate and a transport again")
    return lines
