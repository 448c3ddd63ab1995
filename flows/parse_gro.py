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

COLUMNS: tuple[str, ...] = (
    "DTRECEP",
    "NUMORG",
    "MATRICULE",
    "QUAL",
    "NOM",
    "NOMNAI",
    "PRENOMS",
    "DTNAI",
    "TYPEDTNAI",
    "NOMCOMNAI",
    "SITUPRO",
    "DTEMM",
    "TYPEADR",
    "ETATADR",
    "COMPLIDEADR",
    "COMPLADR",
    "NUMVOIE",
    "LIBTYPEVOIE",
    "NOMVOIE",
    "LIEUDIST",
    "NUMCOM",
    "CODEPOS",
    "NOMCOM",
    "DTDECLGRO",
    "DTDEBGRO",
    "NBENFCHAPF",
    "MOTITRANSMDOSPMI",
    "NUMORGCED",
    "MATRICULECED",
)

# Free text that ends up in the départements' files: the formula-prefix rule applies.
FREE_TEXT = frozenset(
    {
        "NOM",
        "NOMNAI",
        "PRENOMS",
        "NOMCOMNAI",
        "COMPLIDEADR",
        "COMPLADR",
        "NUMVOIE",
        "LIBTYPEVOIE",
        "NOMVOIE",
        "LIEUDIST",
        "NOMCOM",
    }
)

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


PERSON = ("QUAL", "NOM", "NOMNAI", "PRENOMS", "DTNAI", "TYPEDTNAI", "NOMCOMNAI", "SITUPRO")


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
    for name in REQUIRED:
        if name == "DTRECEP" and received is not None:
            continue
        if personless and name in PERSON:
            continue
        check.require(v[name], name)

    if received is None:
        received = check.not_future(check.parse_date(v["DTRECEP"], "DTRECEP"), "DTRECEP", today)
    else:
        check.not_future(received, "DTREF", today)
    check.check_numorg(v["NUMORG"], "NUMORG")
    check.check_matricule(v["MATRICULE"], "MATRICULE")
    typedtnai = ""
    born_earliest = born_latest = None
    if not personless:
        check.check_code(v["QUAL"], codes.QUAL, "QUAL")
        typedtnai = check.check_code(v["TYPEDTNAI"], codes.TYPEDTNAI, "TYPEDTNAI")
        born_earliest, born_latest = check.parse_gro_birth(v["DTNAI"], typedtnai, "DTNAI")
        check.not_future(born_earliest, "DTNAI", today)
        check.check_code(v["SITUPRO"], codes.SITUPRO, "SITUPRO")
    dtemm = check.parse_date(v["DTEMM"], "DTEMM")
    check.check_code(v["TYPEADR"], codes.TYPEADR, "TYPEADR")
    if v["ETATADR"] and not _ETATADR.fullmatch(v["ETATADR"]):
        raise Invalid("CODE_UNKNOWN", "ETATADR: must be 2 capital letters", "ETATADR")
    check.check_commune(v["NUMCOM"], "NUMCOM")
    if v["CODEPOS"]:
        check.check_postcode(v["CODEPOS"], "CODEPOS")
    motif = check.check_code(v["MOTITRANSMDOSPMI"], codes.MOTIF, "MOTITRANSMDOSPMI")
    nbenfchapf = check.parse_int(v["NBENFCHAPF"], "NBENFCHAPF", 0, 30)

    during_pregnancy = motif != "02"
    dtdeclgro = dtdebgro = None
    if during_pregnancy and not personless:
        check.require(v["DTDECLGRO"], "DTDECLGRO")
        check.require(v["DTDEBGRO"], "DTDEBGRO")
    if v["DTDECLGRO"]:
        dtdeclgro = check.not_future(check.parse_date(v["DTDECLGRO"], "DTDECLGRO"), "DTDECLGRO", today)
    if v["DTDEBGRO"]:
        dtdebgro = check.not_future(check.parse_date(v["DTDEBGRO"], "DTDEBGRO"), "DTDEBGRO", today)
    if dtdebgro is not None and dtdeclgro is not None:
        check.check_pregnancy(dtdebgro, dtdeclgro, "DTDEBGRO", "DTDECLGRO", span=during_pregnancy)
    if born_earliest is None or born_latest is None:
        pass  # no person block: no age to check
    elif dtdeclgro is not None:
        check.check_age(born_earliest, born_latest, dtdeclgro, "DTNAI", "DTDECLGRO")
    else:
        check.check_age(born_earliest, born_latest, received, "DTNAI", "DTRECEP")
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
