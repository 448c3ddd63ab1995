"""SGR: the scanning index (ISO-8859-1 CSV) and the PDF scans it names, into SgrRecords.

The index comes from outside and names files we will read and send to a département:
each FICHIER is confined to the claimed batch folder (`inbox_root`) and each scan is
checked to be a real, bounded PDF before a record is built (check.check_pdf). All
columns are required. NUMCOM is for routing only: it never leaves.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from . import check
from .check import Invalid
from .csvread import read_csv
from .parse_common import Limits, ParseResult, reject
from .records import SgrRecord, Source

FLOW = "SGR"

COLUMNS: tuple[str, ...] = ("DTRECEP", "NUMORG", "MATRICULE", "NUMCOM", "DTCREASDP", "FICHIER")


def parse_sgr(path: Path, *, display_name: str, today: date, inbox_root: Path, limits: Limits) -> ParseResult:
    result = ParseResult()
    for line, values in read_csv(path, display_name, COLUMNS, limits):
        try:
            record = sgr_record(values, Source(display_name, line), today, inbox_root, limits.max_pdf_bytes)
        except Invalid as invalid:
            result.rejects.append(reject(FLOW, display_name, line, invalid))
        else:
            result.records.append(record)
    return result


def sgr_record(
    v: dict[str, str], source: Source, today: date, inbox_root: Path, max_pdf_bytes: int
) -> SgrRecord:
    """Check one index row (first failure raises Invalid), then the scan, and build the record."""
    check.check_texts(v, frozenset())
    for name in COLUMNS:
        check.require(v[name], name)
    received = check.not_future(check.parse_date(v["DTRECEP"], "DTRECEP"), "DTRECEP", today)
    check.check_numorg(v["NUMORG"], "NUMORG")
    check.check_matricule(v["MATRICULE"], "MATRICULE")
    check.check_commune(v["NUMCOM"], "NUMCOM")
    dtcreasdp = check.not_future(check.parse_date(v["DTCREASDP"], "DTCREASDP"), "DTCREASDP", today)
    check.check_not_before(dtcreasdp, received, "DTCREASDP", "DTRECEP")
    # Last: the only check that touches the disk.
    pdf, size = check.check_pdf(v["FICHIER"], inbox_root, max_pdf_bytes, "FICHIER")
    return SgrRecord(
        source=source,
        received=received,
        numorg=v["NUMORG"],
        matricule=v["MATRICULE"],
        num_com=v["NUMCOM"],
        dtcreasdp=dtcreasdp,
        pdf=pdf,
        pdf_size=size,
    )
