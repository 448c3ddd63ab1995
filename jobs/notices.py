"""Incident notices (convention, annexe 2, 5.1): the receivers are told when a delay may make
records miss their deadline, once when it starts and once when it ends.

At the end of a run, a département has an incident when files built for it wait undelivered
(its partner failing, an operator's hold, its transport switched off) and their earliest
deadline is past or at risk (within `AT_RISK_WORKING_DAYS` working days, as `status` counts).
A new incident sends an opening notice; an open one is not notified again each night, except
one update a day at most when it gets worse (more flows or more records); the run after its
late files are delivered sends the closing notice. Notices go to the département's contacts
and the CNAF's operators (`[notify]`), and say only codes, counts, dates and file names.

A notice is traced before it is sent (trace/incidents.py). A relay that refuses it leaves it
pending for the next run: it is logged as an error and counted in the run's problems, and it
never changes what was delivered or the run's exit code.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import date, datetime

from ..config.settings import Settings
from ..core import workdays
from ..core.clock import Clock
from ..core.errors import MailError
from ..core.log import get as get_logger
from ..flows.records import FLOWS
from ..report.status import AT_RISK_WORKING_DAYS
from ..trace.incidents import Cause, Draft, Expected, Facts, Incident, IncidentLog, NoticeKind
from ..trace.records import Emission
from ..trace.store import TraceStore
from . import mailer

# A notice lists the late files up to this many, then counts the rest.
MAX_FILES_LISTED = 20

_EXPECTED = {Cause.PARTNER: Expected.NEXT_RUN, Cause.HELD: Expected.AFTER_RESUME, Cause.NOT_ENABLED: Expected.UNKNOWN}
_CAUSE_FR = {Cause.PARTNER: "échec de la livraison au partenaire (nouvelles tentatives à chaque exécution)",
             Cause.HELD: "livraisons suspendues par un opérateur de la CNAF",
             Cause.NOT_ENABLED: "transport du département désactivé"}
_EXPECTED_FR = {Expected.NEXT_RUN: "à la prochaine exécution nocturne",
                Expected.AFTER_RESUME: "après la reprise des livraisons (flux-pmi resume)",
                Expected.UNKNOWN: "inconnue"}
_KIND_FR = {NoticeKind.OPEN: "ouverture", NoticeKind.UPDATE: "mise à jour", NoticeKind.CLOSE: "clôture"}

log = get_logger("flux-pmi.notices")


def notify_incidents(settings: Settings, trace: TraceStore, clock: Clock, *, run_id: int | None,
                     stop: threading.Event | None = None) -> list[str]:
    """Open, update and close incidents after a delivery, then send what is pending; the problems.

    Called once at the end of a run (and after any delivery outside it). Does nothing without
    `[notify]`, or when the run is being stopped (the next run does it).
    """
    if settings.notify is None or (stop is not None and stop.is_set()):
        return []
    incidents = IncidentLog(trace)
    decide(settings, trace, incidents, clock.now(), run_id=run_id)
    return send_pending(settings, incidents, clock.now())


def late_files(settings: Settings, trace: TraceStore, today: date) -> dict[str, Facts]:
    """Per département, its undelivered files whose deadline is past or at risk."""
    held = trace.active_holds()
    requested = {r.id: r.deadline for r in trace.requests()}
    late: dict[str, list[tuple[Emission, str, str | None]]] = defaultdict(list)
    for e in trace.to_deliver():
        # A re-emission a département asked for runs on its request's deadline, as `status` shows it.
        asked = requested.get(e.request_id) if e.reemission_no and e.request_id is not None else None
        deadline, basis = (asked, REQUEST_BASIS) if asked else (e.deadline, e.deadline_basis)
        if deadline is not None and _at_risk(date.fromisoformat(deadline), today, e.department):
            late[e.department].append((e, deadline, basis))
    return {code: _facts(settings, code, code in held, files) for code, files in late.items()}


def _facts(settings: Settings, code: str, held: bool, files: list[tuple[Emission, str, str | None]]) -> Facts:
    dept = settings.departments.get(code)
    cause = Cause.HELD if held else Cause.NOT_ENABLED if dept is None or not dept.enabled else Cause.PARTNER
    flows = {e.flow for e, _, _ in files}
    _, deadline, basis = min(files, key=lambda f: (f[1], str(f[2] or "")))
    return Facts(cause=cause, expected=_EXPECTED[cause], flows=tuple(f for f in FLOWS if f in flows),
                 files=tuple(e.file_name or f"{e.flow} seq {e.seq}" for e, _, _ in files),
                 records=sum(e.record_count for e, _, _ in files), deadline=deadline,
                 basis=str(basis) if basis is not None else None)


def _at_risk(deadline: date, today: date, department: str) -> bool:
    return deadline < today or workdays.count_working_days(today, deadline, department) <= AT_RISK_WORKING_DAYS


def _worse(facts: Facts, incident: Incident) -> bool:
    return bool(set(facts.flows) - set(incident.flows.split(","))) or facts.records > incident.records


def decide(settings: Settings, trace: TraceStore, incidents: IncidentLog, now: datetime, *,
           run_id: int | None) -> None:
    """Write the incidents' changes and their notices (pending) into the trace."""
    late = late_files(settings, trace, now.date())
    opened = incidents.open_incidents()
    for code, facts in sorted(late.items()):
        incident = opened.get(code)
        if incident is None:
            number = incidents.next_number(code, now.date())
            incidents.open(number, code, facts, now, draft(settings, NoticeKind.OPEN, number, code, facts, now),
                           run_id)
            log.warning("incident.opened", incident=number, department=code, cause=facts.cause,
                        files=len(facts.files), records=facts.records, deadline=facts.deadline)
        elif _worse(facts, incident) and incident.notified_on < now.date().isoformat():
            incidents.update(incident.id, facts, now,
                             draft(settings, NoticeKind.UPDATE, incident.number, code, facts, now), run_id)
            log.warning("incident.updated", incident=incident.number, department=code, files=len(facts.files),
                        records=facts.records)
    for code, incident in opened.items():
        if code not in late:
            incidents.close(incident.id, now, closing(settings, incident, now), run_id)
            log.info("incident.closed", incident=incident.number, department=code)


def _header(settings: Settings, kind: NoticeKind, number: str, code: str) -> tuple[str, list[str]]:
    dept = settings.departments.get(code)
    name = f"{code} ({dept.name})" if dept is not None else code
    subject = f"[flux-pmi] {number} {_KIND_FR[kind]} : flux PMI du département {code}"
    lines = [f"Incident {number} : {_KIND_FR[kind]}", "",
             "Émetteur : CNAF (flux-pmi)", f"Destinataire : {name}"]
    return subject, lines


_FOOTER = ["",
           "Convention, annexe 2, 5.1 : le fournisseur informe les Caf concernées et le destinataire de tout",
           "incident pouvant avoir un impact sur le délai de transmission.",
           "Ce message ne contient aucune donnée personnelle. Référence à rappeler : {number}."]


REQUEST_BASIS = "request"  # a re-emission's deadline is its request's, not a clock's
# Which clock sets the deadline a notice gives (core/workdays.py): the law's binds when it comes first.
_BASIS_FR = {
    "contract": "la convention, 8 jours ouvrés après la réception",
    "law": "la loi (art. L.2122-4 du code de la santé publique), 8 jours calendaires après la réception",
    REQUEST_BASIS: "la demande de réémission du département",
}


def draft(settings: Settings, kind: NoticeKind, number: str, code: str, facts: Facts, now: datetime) -> Draft:
    """The opening or update notice: flows, counts, the deadline, the expected delivery."""
    subject, lines = _header(settings, kind, number, code)
    state = "dépassée" if facts.deadline is not None and facts.deadline < now.date().isoformat() else "à risque"
    listed = [f"  {name}" for name in facts.files[:MAX_FILES_LISTED]]
    if len(facts.files) > MAX_FILES_LISTED:
        listed.append(f"  … et {len(facts.files) - MAX_FILES_LISTED} autre(s)")
    lines += [f"Constaté le : {now:%Y-%m-%d %H:%M}",
              f"Cause : {_CAUSE_FR[facts.cause]}",
              f"Flux concernés : {', '.join(facts.flows)}",
              f"Fichiers en attente : {len(facts.files)}", *listed,
              f"Enregistrements : {facts.records}",
              f"Échéance (la plus proche, délai applicable) : {facts.deadline} ({state})",
              *([f"Délai qui la fixe : {_BASIS_FR[facts.basis]}"] if facts.basis in _BASIS_FR else []),
              f"Livraison prévue : {_EXPECTED_FR[facts.expected]}"]
    return Draft(kind, subject, "\n".join(lines + [s.format(number=number) for s in _FOOTER]) + "\n")


def closing(settings: Settings, incident: Incident, now: datetime) -> Draft:
    subject, lines = _header(settings, NoticeKind.CLOSE, incident.number, incident.department)
    lines += [f"Ouvert le : {incident.opened_at[:16].replace('T', ' ')}",
              f"Clos le : {now:%Y-%m-%d %H:%M}",
              f"Flux concernés : {incident.flows.replace(',', ', ')}",
              "Les fichiers en retard ont été livrés."]
    return Draft(NoticeKind.CLOSE, subject,
                 "\n".join(lines + [s.format(number=incident.number) for s in _FOOTER]) + "\n")


def recipients(settings: Settings, department: str) -> list[str]:
    """The département's contacts, then the CNAF's operators, each once."""
    assert settings.notify is not None
    dept = settings.departments.get(department)
    return list(dict.fromkeys([*(dept.contacts if dept is not None else ()), *settings.notify.operators]))


def send_pending(settings: Settings, incidents: IncidentLog, now: datetime) -> list[str]:
    """Send the pending notices, oldest first; stop at the first the relay refuses (the rest wait)."""
    assert settings.notify is not None
    pending = incidents.pending()
    for done, (notice, incident) in enumerate(pending):
        to = recipients(settings, incident.department)
        try:
            refused = mailer.send(settings.notify, to, notice.subject, notice.body, now)
        except MailError as exc:
            incidents.failed(notice.id, str(exc))
            left = len(pending) - done
            log.error("notice.failed", incident=incident.number, kind=notice.kind, error=str(exc), pending=left)
            return [f"notices: {left} incident notice(s) not sent ({exc}); the next run retries"]
        incidents.sent(notice.id, now, len(to) - refused)
        log.info("notice.sent", incident=incident.number, kind=notice.kind, recipients=len(to) - refused,
                 refused=refused)
    return []
