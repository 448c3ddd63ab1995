"""`flux-pmi run --dry-run`: what tonight's run would claim, build and send, changing nothing.

An operator about to run the night by hand (after a hold, a partner's outage, an upstream
redrop) wants to see what it will do first. This is a read-only pass over the same code the
night runs, not a second night:
- the inbox is read in place: `inbox.claim.unfit` and `candidates` say what would be set aside
  and claimed, the trace says which bytes were consumed already (set aside as duplicates), and
  `not_taken` what the night would leave in the inbox (named, as the night names it);
- each file is parsed by the flows' own parser, and the records are routed by the night's own
  `_route_batch` (a `_Planner` is a Night that never builds, seals or sends);
- the trace is opened read-only (`TraceStore.read_only`): no run row, no anomaly, no lock;
- no transport is opened: no connection, not even to read acknowledgements.
The only writes are an SGR zip's scans, extracted by the parser into a private temporary folder
outside the installation, and removed at once. The counts are predictions: a file too large
for `limits.max_file_bytes` is split into parts by the build, so `files` counts at least one.
"""

from __future__ import annotations

import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from ..config.settings import Settings
from ..core.clock import Clock
from ..core.errors import InputFileError
from ..core.log import get as get_logger
from ..flows.parse import parse_file
from ..flows.records import FLOWS, Reject
from ..inbox import claim as inbox
from ..trace.store import TraceStore
from .night import Night


@dataclass
class InboxPlan:
    """One flow folder of the inbox, as the claim would find it."""

    to_claim: list[str] = field(default_factory=list)
    set_aside: list[tuple[str, str]] = field(default_factory=list)  # (name, code): quarantined by the screen
    duplicates: list[str] = field(default_factory=list)  # bytes consumed already: set aside
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (name, code): the parser would quarantine
    not_taken: list[tuple[str, str]] = field(default_factory=list)  # (name, reason): would stay in the inbox


@dataclass
class LinePlan:
    """One (flow, département) of tonight: records to emit, rejects, files to build."""

    records: int = 0
    rejects: int = 0
    files: int = 0


@dataclass
class NightPlan:
    business_date: date
    inbox: dict[str, InboxPlan] = field(default_factory=lambda: defaultdict(InboxPlan))
    lines: dict[tuple[str, str], LinePlan] = field(default_factory=lambda: defaultdict(LinePlan))
    waiting: Counter[tuple[str, str]] = field(default_factory=Counter)  # archived, not delivered yet
    held: dict[str, str] = field(default_factory=dict)  # held département -> since
    parked: int = 0  # records of départements not enabled, to be kept
    replay: int = 0  # kept batches of départements enabled since: their records are emitted
    open_batches: int = 0  # claimed by an earlier run that stopped: resumed first

    def _files(self, held: bool) -> Counter[str]:
        out: Counter[str] = Counter()
        for (_flow, code), line in self.lines.items():
            if line.files and (code in self.held) == held:
                out[code] += line.files
        for (_flow, code), n in self.waiting.items():
            if (code in self.held) == held:
                out[code] += n
        return out

    def to_send(self) -> Counter[str]:
        """Files the run would deliver per département: built tonight and waiting, held ones left out."""
        return self._files(held=False)

    def held_files(self) -> Counter[str]:
        """Files that would wait for a held département's resume, built tonight or before."""
        return self._files(held=True)


class _ReadOnlyTrace(TraceStore):
    """The trace as a dry run sees it: the night's routing may note an anomaly; a dry run notes nothing."""

    def add_anomaly(self, kind: str, detail: str, now: Any, *, department: str | None = None,
                    file: str | None = None) -> None:
        return None


class _Planner(Night):
    """A Night that only reads: it keeps the settings and the clock, and none of the archive,
    transports or work folders the real one sets up (its constructor would create folders)."""

    def __init__(self, settings: Settings, clock: Clock):  # no super().__init__: it creates the archive folder
        self.settings, self.clock, self.paths = settings, clock, settings.paths
        self.log = get_logger("flux-pmi.plan")

    def read_inbox(self, trace: TraceStore, flow: str, plan: InboxPlan, scratch: Path) -> tuple[list[Any], list[Any]]:
        """The records and parse rejects of the files the claim would take, read in place."""
        unfit = inbox.unfit(self.paths.inbox, flow)
        plan.set_aside = [(name, code) for _p, name, code, _r in unfit]
        plan.not_taken = [(e.name, e.reason) for e in inbox.not_taken(self.paths.inbox, flow)]
        records: list[Any] = []
        rejects: list[tuple[Reject, str | None]] = []
        for path in inbox.candidates(self.paths.inbox, flow):
            if any(path == p for p, *_ in unfit):
                continue
            if trace.known_input(flow, inbox.sha256_of(path)) is not None:
                plan.duplicates.append(path.name)
                continue
            plan.to_claim.append(path.name)
            # A zip's scans are extracted next to where it is parsed: here, a private scratch folder.
            root = scratch / flow if path.suffix.lower() == ".zip" else self.paths.inbox / flow
            try:
                result = parse_file(flow, path, display_name=path.name, today=self.clock.today(), inbox_root=root,
                                    limits=self._parse_limits())
            except InputFileError as exc:
                plan.unreadable.append((path.name, exc.code))
                continue
            records.extend(result.records)
            rejects.extend((r, None) for r in result.rejects)
        return records, rejects

    def plan_flow(self, trace: TraceStore, flow: str, plan: NightPlan, scratch: Path) -> None:
        records, rejects = self.read_inbox(trace, flow, plan.inbox[flow], scratch)
        batch = inbox.Batch(-1, flow, plan.business_date, self.paths.inbox / flow)  # -1: a batch not claimed yet
        tally = _Tally()
        routed = self._routing(flow, tally)
        found = self._route_batch(trace, batch, records, routed, self.clock.now())
        targets = tally.departments() | {d.code for d in self._empty_flow_departments(flow)
                                         if not trace.has_emission_on(flow, d.code, plan.business_date)}
        for code in targets:
            plan.lines[(flow, code)].records += tally.counts[code]
            plan.lines[(flow, code)].files += 1
        for _r, code in rejects + found.rejects:
            plan.lines[(flow, code or "---")].rejects += 1  # "---": no département could be told
        plan.parked += sum(routed.parked.values())


class _Tally:
    """The dry run's sink for routed records: how many per département, the records themselves not kept."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, department: str, record: Any) -> None:
        self.counts[department] += 1

    def departments(self) -> set[str]:
        return set(self.counts)


def plan(settings: Settings, business_date: date, *, clock: Clock) -> NightPlan:
    """What the night of `business_date` would do now; reads the inbox and the trace, writes neither."""
    result = NightPlan(business_date)
    planner = _Planner(settings, clock)
    trace = _ReadOnlyTrace.read_only(settings.paths.trace)
    try:
        result.held = {code: h.held_at for code, h in trace.active_holds().items()}
        result.open_batches = len(trace.open_batches())
        result.waiting = Counter((e.flow, e.department) for e in trace.to_deliver())
        enabled = {d.code: d for d in settings.enabled_departments()}
        result.replay = sum(1 for p in trace.parked() if p.department in enabled and p.flow in enabled[p.department].flows)
        with tempfile.TemporaryDirectory(prefix="flux-pmi-plan-") as scratch:
            for flow in FLOWS:
                planner.plan_flow(trace, flow, result, Path(scratch))
    finally:
        trace.close()
    return result


def describe(p: NightPlan) -> list[str]:
    """The dry run's report: per flow folder, per (flow, département), then what would be sent."""
    lines = [f"dry run for {p.business_date}: nothing is claimed, built, sent or written"]
    for flow in FLOWS:
        i = p.inbox[flow]
        lines.append(f"inbox {flow}: {len(i.to_claim)} file(s) to claim, {len(i.duplicates)} consumed already"
                     f" (set aside), {len(i.set_aside) + len(i.unreadable)} to quarantine"
                     + (f", {len(i.not_taken)} not taken (left in the inbox)" if i.not_taken else ""))
        lines.extend(f"  would quarantine: {flow}/{name} ({code})" for name, code in i.set_aside + i.unreadable)
        lines.extend(f"  not taken, would stay in the inbox: {flow}/{name} ({reason})" for name, reason in i.not_taken)
    for (flow, code), s in sorted(p.lines.items()):
        lines.append(f"{flow} {code:>3}  records={s.records:<4} rejects={s.rejects:<3} files={s.files}")
    total = LinePlan(*(sum(getattr(s, k) for s in p.lines.values()) for k in ("records", "rejects", "files")))
    lines.append(f"TOTAL {p.business_date}  records={total.records} rejects={total.rejects} files={total.files}")
    waiting = sum(n for (_f, code), n in p.waiting.items() if code not in p.held)
    send = p.to_send()
    lines.append(f"would deliver: {sum(send.values())} file(s) to {len(send)} département(s)"
                 f" ({waiting} of them built earlier and waiting)")
    lines.extend(f"  {code}: {n} file(s)" for code, n in sorted(send.items()) if n)
    for code, n in sorted(p.held_files().items()):
        lines.append(f"held: {n} file(s) for département {code} would wait for `flux-pmi resume {code}`")
    if p.parked:
        lines.append(f"would keep: {p.parked} record(s) of départements not enabled")
    if p.replay:
        lines.append(f"would emit: the kept records of {p.replay} batch(es) whose département is enabled now")
    if p.open_batches:
        lines.append(f"would resume: {p.open_batches} batch(es) claimed by an earlier run (not counted above)")
    return lines
