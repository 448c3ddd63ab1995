"""GRO: the daily Cristal extract (ISO-8859-1 CSV, the secondary shape) into GroRecords.

The primary shape is Cristal's own XML (parse_gro_xml); both feed `gro_record`, so a
case is checked the same way whichever shape it came in.

A real extract carries more than annexe 1 lets leave (NIR, phone, e-mail...). Only the
contract's columns are copied out of each row (csvread.read_csv), so nothing else can
reach a GroRecord, a reject message or a département.

Decisions: DTDECLGRO and DTDEBGRO are required for motifs 01 and 03 and may be empty
for 02 (a birth without prior declaration may know neither). The ~10-month span
between pregnancy start and declaration is checked for 01 and 03 only: for 02 the
"declaration" is made after the birth. The age (10-65) is taken at DTDECLGRO, or at
DTRECEP when there is none. NOM (usage name), NOMCOMNAI, ETATADR, the address lines,
CODEPOS and NOMCOM may be empty; when present, CODEPOS is 5 digits and ETATADR 2
capital letters. MATRICULECED has MATRICULE's shape (15 digits).
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from . import check, codes
from .check import Invalid
from .csvread import read_csv
from .parse_common import Limits, ParseResult, reject
from .records import GroRecord, Source

FLOW = "GRO"

# The case's blocks, in the contract's column order; parse_gro_xml reads the same names.
PERSON = ("QUAL", "NOM", "NOMNAI", "PRENOMS", "DTNAI", "TYPEDTNAI", "NOMCOMNAI", "SITUPRO")
TRONC = ("DTEMM", "TYPEADR", "ETATADR")
STREET = ("COMPLIDEADR", "COMPLADR", "NUMVOIE", "LIBTYPEVOIE", "NOMVOIE", "LIEUDIST")
DETAIL = (*STREET, "NUMCOM", "CODEPOS", "NOMCOM")
PMI = ("DTDECLGRO", "DTDEBGRO", "NBENFCHAPF", "MOTITRANSMDOSPMI")

COLUMNS: tuple[str, ...] = (
    "DTRECEP",
    "NUMORG",
    "MATRICULE",
    *PERSON,
    *TRONC,
    *DETAIL,
    *PMI,
    "NUMORGCED",
    "MATRICULECED",
)

# Free text that ends up in the départements' files: the formula-prefix rule applies.
FREE_TEXT = frozenset({"NOM", "NOMNAI", "PRENOMS", "NOMCOMNAI", *STREET, "NOMCOM"})

REQUIRED = (
    "DTRECEP",
    "NUMORG",
    "MATRICULE",
    "QUAL",
    "NOMNAI",
    "PRENOMS",
    "DTNAI",
    "TYPEDTNAI",
    "SITUPRO",
    "DTEMM",
    "TYPEADR",
    "NUMCOM",
    "NBENFCHAPF",
    "MOTITRANSMDOSPMI",
)

_ETATADR = re.compile(r"[A-Z]{2}")


def parse_gro(path: Path, *, display_name: str, today: date, limits: Limits) -> ParseResult:
    result = ParseResult()
    for line, values in read_csv(path, display_name, COLUMNS, limits):
        try:
            result.records.append(gro_record(values, Source(display_name, line), today))
        except Invalid as invalid:
            result.rejects.append(reject(FLOW, display_name, line, invalid))
    return result


def gro_record(
    v: dict[str, str],
    source: Source,
    today: date,
    *,
    received: date | None = None,
    anomalies: tuple[str, ...] = (),
    idepart: str = "",
) -> GroRecord:
    """Check one case's contract fields (first failure raises Invalid) and build the record.

    `received` is given by the XML shape (which has no DTRECEP column). A case Cristal
    marked with an Anomalie (`anomalies`) and that carries no person block at all is not
    refused for it: its person fields stay empty, and so may its declaration dates.
    """
    check.check_lengths(v)
    check.check_texts(v, FREE_TEXT)
    personless = bool(anomalies) and not any(v[name] for name in PERSON)
    _require(v, personless=personless, with_dtrecep=received is None)
    if received is None:
        received = check.not_future(check.parse_date(v["DTRECEP"], "DTRECEP"), "DTRECEP", today)
    else:
        check.not_future(received, "DTREF", today)
    check.check_numorg(v["NUMORG"], "NUMORG")
    check.check_matricule(v["MATRICULE"], "MATRICULE")
    typedtnai, born = ("", None) if personless else _check_person(v, today)
    dtemm = _check_address(v)
    motif = check.check_code(v["MOTITRANSMDOSPMI"], codes.MOTIF, "MOTITRANSMDOSPMI")
    nbenfchapf = check.parse_int(v["NBENFCHAPF"], "NBENFCHAPF", 0, 30)
    dtdeclgro, dtdebgro = _pregnancy_dates(v, motif, personless, today)
    if born is not None:  # without a person block there is no age to check
        if dtdeclgro is not None:
            check.check_age(*born, dtdeclgro, "DTNAI", "DTDECLGRO")
        else:
            check.check_age(*born, received, "DTNAI", "DTRECEP")
    check.check_mutation(motif, v["NUMORGCED"], v["MATRICULECED"])

    return GroRecord(
        source=source,
        received=received,
        numorg=v["NUMORG"],
        matricule=v["MATRICULE"],
        qual=v["QUAL"],
        nom=v["NOM"],
        nomnai=v["NOMNAI"],
        prenoms=v["PRENOMS"],
        dtnai=v["DTNAI"],
        typedtnai=typedtnai,
        nomcomnai=v["NOMCOMNAI"],
        situpro=v["SITUPRO"],
        dtemm=dtemm,
        typeadr=v["TYPEADR"],
        etatadr=v["ETATADR"],
        compl_ide_adr=v["COMPLIDEADR"],
        compl_adr=v["COMPLADR"],
        num_voie=v["NUMVOIE"],
        lib_type_voie=v["LIBTYPEVOIE"],
        nom_voie=v["NOMVOIE"],
        lieu_dist=v["LIEUDIST"],
        num_com=v["NUMCOM"],
        code_pos=v["CODEPOS"],
        nom_com=v["NOMCOM"],
        dtdeclgro=dtdeclgro,
        dtdebgro=dtdebgro,
        nbenfchapf=nbenfchapf,
        motif=motif,
        numorg_ced=v["NUMORGCED"],
        matricule_ced=v["MATRICULECED"],
        anomalies=anomalies,
        idepart=idepart,
    )


def _require(v: dict[str, str], *, personless: bool, with_dtrecep: bool) -> None:
    """The contract's mandatory fields, but DTRECEP when the XML shape gives the date, and the
    person block of a case Cristal marked personless."""
    for name in REQUIRED:
        if (name == "DTRECEP" and not with_dtrecep) or (personless and name in PERSON):
            continue
        check.require(v[name], name)


def _check_person(v: dict[str, str], today: date) -> tuple[str, tuple[date, date]]:
    """The person block's codes; returns TYPEDTNAI and the earliest and latest birth dates."""
    check.check_code(v["QUAL"], codes.QUAL, "QUAL")
    typedtnai = check.check_code(v["TYPEDTNAI"], codes.TYPEDTNAI, "TYPEDTNAI")
    born = check.parse_gro_birth(v["DTNAI"], typedtnai, "DTNAI")
    check.not_future(born[0], "DTNAI", today)
    check.check_code(v["SITUPRO"], codes.SITUPRO, "SITUPRO")
    return typedtnai, born


def _check_address(v: dict[str, str]) -> date:
    """The address block's codes; returns DTEMM."""
    dtemm = check.parse_date(v["DTEMM"], "DTEMM")
    check.check_code(v["TYPEADR"], codes.TYPEADR, "TYPEADR")
    if v["ETATADR"] and not _ETATADR.fullmatch(v["ETATADR"]):
        raise Invalid("CODE_UNKNOWN", "ETATADR: must be 2 capital letters", "ETATADR")
    check.check_commune(v["NUMCOM"], "NUMCOM")
    if v["CODEPOS"]:
        check.check_postcode(v["CODEPOS"], "CODEPOS")
    return dtemm


def _pregnancy_dates(v: dict[str, str], motif: str, personless: bool, today: date) -> tuple[date | None, date | None]:
    """DTDECLGRO and DTDEBGRO: required during a pregnancy (every motif but a birth, 02) for a case
    with a person, and consistent with each other when both are given."""
    during_pregnancy = motif != "02"
    if during_pregnancy and not personless:
        check.require(v["DTDECLGRO"], "DTDECLGRO")
        check.require(v["DTDEBGRO"], "DTDEBGRO")
    dtdeclgro = dtdebgro = None
    if v["DTDECLGRO"]:
        dtdeclgro = check.not_future(check.parse_date(v["DTDECLGRO"], "DTDECLGRO"), "DTDECLGRO", today)
    if v["DTDEBGRO"]:
        dtdebgro = check.not_future(check.parse_date(v["DTDEBGRO"], "DTDEBGRO"), "DTDEBGRO", today)
    if dtdebgro is not None and dtdeclgro is not None:
        check.check_pregnancy(dtdebgro, dtdeclgro, "DTDEBGRO", "DTDECLGRO", span=during_pregnancy)
    return dtdeclgro, dtdebgro
