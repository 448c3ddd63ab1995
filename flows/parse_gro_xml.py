"""GRO: Cristal's own XML (the primary GRO shape) into GroRecords.

Cristal writes the file itself, in UTF-8, as HubEE's GRO.xml shows: root `Racine`,
`IdentificationFlux` (APPLIEME CRI, NATFLUX G, DTCREAFLUX, DTREF, the Caf's NUMORG), one
`InfoSuiviGrossessePMI` per case, optionally followed by an `Anomalie` (one or more LIBANO)
that qualifies the case it follows, then `TransmissionFlux` with the counts. A file may
hold cases for several départements (a mutation prenante moves a case): each case is
routed on its own commune (NUMCOM); its IDEPARTE is kept only to warn when it disagrees.

Each case is read into the same field names as the secondary CSV shape and checked by
parse_gro.gro_record, so the rules are the same. What Cristal sends beyond annexe 1 (a
NIR in the person block, say) is never read.

Decisions:
- Receipt date (the 8-working-day clock): for a declaration (motif 01), the earliest of the
  case's DTDECLGRO (the date this Caf registered the declaration), the flow's DTREF and
  DTCREAFLUX. The Caf cannot have received the case after it extracted it, so the deadline
  is never later than the truth; DTDECLGRO, when there is one, is the truth itself. For a
  birth without declaration (02) or a mutation prenante (03), DTDECLGRO is the pregnancy's
  declaration to the Caf she left, months back: this Caf received the case when Cristal
  recorded it, so the flow's dates (the earlier of DTREF and DTCREAFLUX) are used. Counting
  from the old declaration would show every mutation late on arrival, a false alarm each night.
- A case followed by an Anomalie is delivered with its LIBANO texts; when it lacks the
  person block (the sample's "DOSSIER SANS PERSONNES") it is not refused for that.
- Whole-file refusals (XML_SHAPE): no or two IdentificationFlux, APPLIEME other than CRI
  or NATFLUX other than G, DTREF/DTCREAFLUX not dates, an Anomalie that follows no case,
  counts in TransmissionFlux that disagree with the cases (NBTOTDOSPMITRANSMANO with the
  cases marked; NBTOTDOSPMITRANSM with all the cases, or with the unmarked ones).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from lxml import etree

from ..core.errors import InputFileError
from . import check
from .check import Invalid
from .parse_common import Limits, ParseResult, read_bytes, reject
from .parse_gro import DETAIL, FLOW, PERSON, TRONC, gro_record
from .records import Source
from .xmlread import XmlFields, cristal_frame, line_at, load_xml, read_identification, sourceline

# A case with the LIBANO of the Anomalie element(s) that follow it.
_Case = tuple[etree._Element, list[etree._Element]]


def _count(root: etree._Element, name: str, display_name: str) -> int | None:
    el = root.find(f"TransmissionFlux/{name}")
    if el is None:
        return None
    text = (el.text or "").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise InputFileError(display_name, line_at(el, 1), f"TransmissionFlux: {name} is not a number",
                             code="XML_SHAPE")
    return int(text)


def parse_gro_xml(path: Path, *, display_name: str, today: date, limits: Limits) -> ParseResult:
    root = load_xml(read_bytes(path, display_name, limits), display_name)
    earliest = cristal_frame(root, display_name, appli="CRI", natflux="G")
    cases = _cases(root, display_name, limits)
    _check_counts(root, cases, display_name)
    # A flow date after the processing day rejects each case as "DTREF": point at the flow's own
    # DTREF (it was reported at line 1, a line that holds no such element).
    dtref_line = line_at(root.find("IdentificationFlux/DTREF"), 1)
    result = ParseResult()
    for case, libanos in cases:
        line = line_at(case, 1)
        doc = XmlFields()
        doc.lines["DTREF"] = dtref_line
        try:
            values, idepart, anomalies = _read_case(case, libanos, doc, line)
            declared = _declared(values) if values.get("MOTITRANSMDOSPMI") == "01" else None
            received = min(earliest, declared or earliest)
            record = gro_record(values, Source(display_name, line), today, received=received,
                                anomalies=anomalies, idepart=idepart)
        except Invalid as invalid:
            result.rejects.append(reject(FLOW, display_name, doc.line(invalid.field), invalid))
        else:
            result.records.append(record)
    return result


def _cases(root: etree._Element, display_name: str, limits: Limits) -> list[_Case]:
    """Each case with the LIBANO of the Anomalie element(s) that follow it, in file order."""
    cases: list[_Case] = []
    for child in root.iterchildren(tag=etree.Element):
        if child.tag == "InfoSuiviGrossessePMI":
            cases.append((child, []))
        elif child.tag == "Anomalie":
            if not cases:
                raise InputFileError(display_name, line_at(child, 1), "an Anomalie follows no case",
                                     code="XML_SHAPE")
            cases[-1][1].extend(child.findall("LIBANO"))
    if len(cases) > limits.max_records_per_file:
        raise InputFileError(display_name, None, f"more than {limits.max_records_per_file} records",
                             code="TOO_LARGE")
    return cases


def _check_counts(root: etree._Element, cases: list[_Case], display_name: str) -> None:
    """TransmissionFlux's counts, when given, must agree with the cases: NBTOTDOSPMITRANSMANO
    with the marked ones, NBTOTDOSPMITRANSM with all of them or with the unmarked ones."""
    marked = sum(1 for _case, libano in cases if libano)
    n_ano = _count(root, "NBTOTDOSPMITRANSMANO", display_name)
    n_all = _count(root, "NBTOTDOSPMITRANSM", display_name)
    if (n_ano is not None and n_ano != marked) or (n_all is not None and n_all not in (len(cases),
                                                                                       len(cases) - marked)):
        raise InputFileError(display_name, sourceline(root.find("TransmissionFlux")),
                             "TransmissionFlux counts disagree with the cases", code="XML_SHAPE")


def _declared(values: dict[str, str]) -> date | None:
    text = values.get("DTDECLGRO", "")
    if not text:
        return None
    return check.parse_date(text, "DTDECLGRO")


def _read_case(case: etree._Element, libanos: list[etree._Element], doc: XmlFields,
               line: int) -> tuple[dict[str, str], str, tuple[str, ...]]:
    idepart = read_identification(case, doc, line)

    admin = doc.element(case, None, "DonneesAdministratives", "DonneesAdministratives", line)
    at = doc.line("DonneesAdministratives")
    person = doc.element(admin, None, "Personne", "Personne", at)
    for name in PERSON:
        doc.text(person, None, name, name, doc.line("Personne"))
    address = doc.element(admin, None, "Adresse", "Adresse", at)
    tronc = doc.element(address, None, "TroncCommunAdresse", "TroncCommunAdresse", doc.line("Adresse"))
    for name in TRONC:
        doc.text(tronc, None, name, name, doc.line("TroncCommunAdresse"))
    detail = doc.element(address, None, "AdresseDetailleeFrance", "AdresseDetailleeFrance", doc.line("Adresse"))
    for name in DETAIL:
        doc.text(detail, None, name, name, doc.line("AdresseDetailleeFrance"))

    pmi = doc.element(case, None, "DossierPMI", "DossierPMI", line)
    at = doc.line("DossierPMI")
    for name in ("MOTITRANSMDOSPMI", "NBENFCHAPF", "DTDECLGRO", "DTDEBGRO"):
        doc.text(pmi, None, name, name, at)
    mutation = doc.element(pmi, None, "MutationPrenante", "MutationPrenante", at)
    doc.text(mutation, None, "NUMORG", "NUMORGCED", doc.line("MutationPrenante"))
    doc.text(mutation, None, "MATRICULE", "MATRICULECED", doc.line("MutationPrenante"))

    anomalies: list[str] = []
    for el in libanos:
        doc.lines["LIBANO"] = line_at(el, line)
        if len(el):
            raise Invalid("TEXT_INVALID", "LIBANO: must hold text only", "LIBANO")
        text = (el.text or "").strip(" \t\r\n")
        check.check_lengths({"LIBANO": text})
        check.check_text(text, "LIBANO", free_text=False)
        if text:
            anomalies.append(text)
    if libanos and not anomalies:
        anomalies.append("")  # an Anomalie without text still marks the case
    values = {name: doc.values.get(name, "") for name in doc.values if name not in ("IDEPARTE",)}
    values["DTRECEP"] = ""
    check.check_lengths({"IDEPARTE": idepart})
    return values, idepart.strip(), tuple(anomalies)
