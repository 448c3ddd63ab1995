"""Hostile input corpus: every case is rejected or quarantined with its own reason, the valid
records of the same batch are delivered, and the night never crashes.

The table of cases is rendered into docs/reliability.md ("Hostile input corpus"); the test
fails when the doc and the table differ. Regenerate with FLUX_PMI_WRITE_DOCS=1.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from support import BUSINESS_DATE, NOW, make_demo, open_delivered, record_fingerprints

from flux_pmi.config.settings import load
from flux_pmi.core.clock import FixedClock
from flux_pmi.demo import generate as g
from flux_pmi.demo import people
from flux_pmi.jobs.night import Night

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BEGIN, END = "<!-- corpus:begin -->", "<!-- corpus:end -->"
DEPTS = "035,02A,971"


@dataclass(frozen=True)
class Case:
    name: str
    flow: str
    make: Callable[[Path], None]  # writes the case's file(s) into the inbox
    expected: tuple[str, str | None]  # ("reject" | "quarantine" | "accept", code)
    what: str

    @property
    def file(self) -> str:
        return f"zz_{self.name}." + ("xml" if self.flow == "DSG" else "csv")


# -- material: well-formed records from the demo generator, then one fault -----------------

_REG = g.load_departments()
_GEN = g._Generator(random.Random("hostile-corpus"), BUSINESS_DATE, _REG)


def _gro(dept: str = "035", **fields: str) -> dict:
    while True:
        row = _GEN.gro(_REG[dept])["row"]
        if row["MOTITRANSMDOSPMI"] == "01":
            break
    row.update(fields)
    return row


def _sgr(dept: str = "035", **fields: str) -> dict:
    row = _GEN.sgr(_REG[dept])["row"]
    row.update(fields)
    return row


def _dsg(dept: str = "035", **fields) -> dict:
    rec = _GEN.dsg(_REG[dept])
    rec.update(fields)
    return rec


def _nir(birth: str, commune: str) -> str:
    return people.make_nir(random.Random(commune), date.fromisoformat(birth), commune)


def _write(inbox: Path, flow: str, name: str, data: bytes) -> None:
    path = inbox / flow / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)


def gro_rows(*rows: dict) -> Callable[[Path, str], None]:
    data = g._csv_bytes(g.GRO_COLUMNS, rows)
    return lambda inbox, name: _write(inbox, "GRO", name, data)


def gro_bytes(fn: Callable[[bytes], bytes]) -> Callable[[Path, str], None]:
    data = fn(g._csv_bytes(g.GRO_COLUMNS, [_gro()]))
    return lambda inbox, name: _write(inbox, "GRO", name, data)


def sgr(row: dict | None = None, pdf: bytes | None = b"", link: bool = False) -> Callable[[Path, str], None]:
    row = row or _sgr()

    def make(inbox: Path, name: str) -> None:
        stem = name.removesuffix(".csv")
        if not row["FICHIER"]:
            row["FICHIER"] = f"hostile/{stem}.pdf"
        target = inbox / "SGR" / "hostile" / f"{stem}.pdf"
        target.parent.mkdir(parents=True, exist_ok=True)
        if link:
            real = inbox / "SGR" / "hostile" / f"{stem}.real"
            real.write_bytes(g.one_page_pdf(random.Random(1), 2000))
            target.symlink_to(real)
        elif pdf is not None:
            target.write_bytes(pdf or g.one_page_pdf(random.Random(stem), 2000))
        _write(inbox, "SGR", name, g._csv_bytes(g.SGR_COLUMNS, [row]))

    return make


def dsg(rec: dict | None = None, fn: Callable[[bytes], bytes] = lambda b: b) -> Callable[[Path, str], None]:
    data = fn(g.dsg_xml(rec or _dsg()))
    return lambda inbox, name: _write(inbox, "DSG", name, data)


def dsg_raw(data: bytes) -> Callable[[Path, str], None]:
    return lambda inbox, name: _write(inbox, "DSG", name, data)


XXE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    b'<dsgcnaf:DSGCNAF xmlns:dsgcnaf="urn:cnamts:dsgcnaf"><dsgcnaf:Identification>&x;'
    b"</dsgcnaf:Identification></dsgcnaf:DSGCNAF>\n"
)
LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b']>\n<dsgcnaf:DSGCNAF xmlns:dsgcnaf="urn:cnamts:dsgcnaf">&lol9;</dsgcnaf:DSGCNAF>\n'
)


def _repeat_nir(b: bytes) -> bytes:
    start = b.index(b"<beneficiaire:NIR>")
    end = b.index(b"\n", start) + 1
    return b[:end] + b[start:end] + b[end:]


def _dsg_birth(birth: str, commune: str, dept: str = "02A") -> dict:
    return _dsg(dept, DateNai=birth, NIR=_nir(birth, commune))


_CORSICA_DSG = _dsg("02A")
_GOOD_GRO = _gro("035", NUMCOM="35238", CODEPOS="20000")  # a commune and a postcode that disagree


def _future(days: int) -> str:
    return (BUSINESS_DATE + timedelta(days=days)).isoformat()


def _cases() -> list[Case]:
    r, q, a = "reject", "quarantine", "accept"
    return [
        # -- DSG: XML attacks and broken documents
        Case(
            "dsg_malformed",
            "DSG",
            dsg(fn=lambda b: b[: len(b) // 2]),
            (q, "XML_MALFORMED"),
            "XML cut in the middle",
        ),
        Case("dsg_xxe", "DSG", dsg_raw(XXE), (q, "XML_DTD"), "external entity (XXE) to /etc/passwd"),
        Case("dsg_billion_laughs", "DSG", dsg_raw(LAUGHS), (q, "XML_DTD"), "billion laughs entity expansion"),
        Case(
            "dsg_bom",
            "DSG",
            dsg(fn=lambda b: b"\xef\xbb\xbf" + b),
            (a, None),
            "UTF-8 byte-order mark on a UTF-8 document (legal XML)",
        ),
        Case(
            "dsg_declared_latin1",
            "DSG",
            dsg(fn=lambda b: b.replace(b"encoding='UTF-8'", b"encoding='ISO-8859-1'")),
            (q, "XML_ENCODING"),
            "declares ISO-8859-1 where UTF-8 is expected",
        ),
        Case(
            "dsg_latin1_bytes",
            "DSG",
            dsg(_dsg(Prenom="H\u00e9l\u00e8ne"), fn=lambda b: b.decode().encode("iso-8859-1")),
            (q, "XML_ENCODING"),
            "declares UTF-8, holds ISO-8859-1 bytes",
        ),
        Case(
            "dsg_utf16",
            "DSG",
            dsg(fn=lambda b: b.decode().replace("UTF-8", "UTF-16").encode("utf-16")),
            (q, "XML_ENCODING"),
            "UTF-16 document",
        ),
        Case(
            "dsg_wrong_root",
            "DSG",
            dsg_raw(b'<?xml version="1.0" encoding="UTF-8"?>\n<html/>\n'),
            (q, "XML_ROOT"),
            "well-formed, wrong root element",
        ),
        Case("dsg_empty", "DSG", dsg_raw(b""), (q, "EMPTY"), "zero-byte DSG file"),
        Case("dsg_repeated_nir", "DSG", dsg(fn=_repeat_nir), (r, "FIELD_REPEATED"), "NIR element twice"),
        Case(
            "dsg_formula_name",
            "DSG",
            dsg(_dsg(NomFamille='=HYPERLINK("http://x")')),
            (r, "TEXT_INVALID"),
            "family name starting with =",
        ),
        Case(
            "dsg_control_char",
            "DSG",
            dsg(_dsg(NomVoie="RUE\u202eDU PORT")),
            (r, "TEXT_INVALID"),
            "right-to-left override in a street name",
        ),
        Case(
            "dsg_duplicate_id",
            "DSG",
            # Other bytes (a comment after the root): the same bytes under two names are one file set aside.
            dsg(dict(_CORSICA_DSG), fn=lambda b: b + b"<!-- another envelope -->\n"),
            (r, "DUPLICATE"),
            "same Identification as another declaration of the batch",
        ),
        Case(
            "dsg_duplicate_first",
            "DSG",
            dsg(_CORSICA_DSG),
            (a, None),
            "the first of the two duplicate declarations (kept)",
        ),
        # -- DSG: NIR
        Case(
            "dsg_nir_key",
            "DSG",
            dsg(_dsg(NIR=people.bad_key_nir(_nir("1995-05-11", "35238")), DateNai="1995-05-11")),
            (r, "NIR_KEY"),
            "NIR with a wrong control key",
        ),
        Case(
            "dsg_nir_format", "DSG", dsg(_dsg(NIR="29505352381")), (r, "NIR_FORMAT"), "NIR of 11 characters"
        ),
        Case(
            "dsg_nir_month",
            "DSG",
            dsg(_dsg(NIR=_nir_month13(), DateNai="1995-05-11")),
            (r, "NIR_MONTH"),
            "NIR with month 13",
        ),
        Case(
            "dsg_nir_birth_mismatch",
            "DSG",
            dsg(_dsg(NIR=_nir("1995-05-11", "35238"), DateNai="1996-05-11")),
            (r, "NIR_BIRTH_MISMATCH"),
            "NIR year disagrees with the birth date",
        ),
        Case("dsg_nir_2a", "DSG", dsg(_dsg_birth("1994-03-02", "2A004")), (a, None), "valid NIR born in 2A"),
        Case("dsg_nir_2b", "DSG", dsg(_dsg_birth("1991-07-15", "2B033")), (a, None), "valid NIR born in 2B"),
        Case(
            "dsg_nir_overseas",
            "DSG",
            dsg(_dsg_birth("1993-01-20", "97411", "971")),
            (a, None),
            "valid NIR born overseas (974)",
        ),
        # -- DSG: dates
        Case(
            "dsg_date_order",
            "DSG",
            dsg(_dsg(DateDPG="2026-11-21+01:00", DateExamen="2026-11-10+01:00")),
            (r, "DATE_ORDER"),
            "pregnancy start after the examination",
        ),
        Case(
            "dsg_date_impossible",
            "DSG",
            dsg(_dsg(DateNai="1995-02-30")),
            (r, "DATE_INVALID"),
            "birth date 30 February",
        ),
        # -- GRO: CSV shape and encoding
        Case("gro_empty", "GRO", lambda i, n: _write(i, "GRO", n, b""), (q, "EMPTY"), "zero-byte extract"),
        Case(
            "gro_bom",
            "GRO",
            gro_bytes(lambda b: b"\xef\xbb\xbf" + b),
            (q, "ENCODING"),
            "UTF-8 byte-order mark",
        ),
        Case(
            "gro_utf8",
            "GRO",
            gro_bytes(lambda b: b.replace(b";VC;", b";VC\xc9;", 1).decode("iso-8859-1").encode("utf-8")),
            (q, "ENCODING"),
            "UTF-8 text where ISO-8859-1 is expected",
        ),
        Case(
            "gro_nul",
            "GRO",
            gro_bytes(lambda b: b.replace(b"MME", b"M\x00E", 1)),
            (q, "ENCODING"),
            "a NUL byte",
        ),
        Case(
            "gro_truncated",
            "GRO",
            gro_bytes(lambda b: b[: b.index(b"\r\n") + 60]),
            (q, "CSV_SHAPE"),
            "extract cut in the middle of a row",
        ),
        Case(
            "gro_extra_field",
            "GRO",
            gro_bytes(lambda b: b.rstrip(b"\r\n") + b";EXTRA\r\n"),
            (q, "CSV_SHAPE"),
            "a row with one field more than the header",
        ),
        Case(
            "gro_missing_field",
            "GRO",
            gro_bytes(lambda b: b[: b.rstrip(b"\r\n").rindex(b";")] + b"\r\n"),
            (q, "CSV_SHAPE"),
            "a row with one field less than the header",
        ),
        Case(
            "gro_missing_column",
            "GRO",
            gro_bytes(lambda b: b.replace(b";NUMCOM;", b";NUMCOMX;", 1)),
            (q, "CSV_HEADER"),
            "header without the NUMCOM column",
        ),
        Case(
            "gro_duplicate_column",
            "GRO",
            gro_bytes(lambda b: b.replace(b";NOMCOM;", b";NOM;", 1)),
            (q, "CSV_HEADER"),
            "header with a column twice",
        ),
        Case(
            "gro_broken_quote",
            "GRO",
            gro_bytes(lambda b: b.replace(b";MME;", b';"MME;', 1)),
            (q, "CSV_SHAPE"),
            "an unbalanced quote",
        ),
        Case(
            "gro_separator_quoted",
            "GRO",
            gro_rows(_gro(NOMVOIE="DES LILAS; BAT C")),
            (a, None),
            "a ; inside a quoted field",
        ),
        # -- GRO: record checks
        Case("gro_formula_eq", "GRO", gro_rows(_gro(NOM="=1+1")), (r, "TEXT_INVALID"), "NOM starting with ="),
        Case(
            "gro_formula_plus",
            "GRO",
            gro_rows(_gro(PRENOMS="+cmd|' /C calc'!A0")),
            (r, "TEXT_INVALID"),
            "PRENOMS starting with +",
        ),
        Case(
            "gro_formula_minus",
            "GRO",
            gro_rows(_gro(NOMNAI="-2+3")),
            (r, "TEXT_INVALID"),
            "NOMNAI starting with -",
        ),
        Case(
            "gro_formula_at",
            "GRO",
            gro_rows(_gro(NOM="@SUM(A1)")),
            (r, "TEXT_INVALID"),
            "NOM starting with @",
        ),
        Case(
            "gro_date_impossible",
            "GRO",
            gro_rows(_gro(DTDEBGRO="2026-02-30")),
            (r, "DATE_INVALID"),
            "30 February",
        ),
        Case(
            "gro_date_future",
            "GRO",
            gro_rows(_gro(DTRECEP=_future(30))),
            (r, "DATE_FUTURE"),
            "received next month",
        ),
        Case(
            "gro_date_order",
            "GRO",
            gro_rows(_gro(DTDEBGRO="2026-11-22", DTDECLGRO="2026-11-01", DTRECEP="2026-11-20")),
            (r, "DATE_ORDER"),
            "pregnancy start after the declaration",
        ),
        Case(
            "gro_unknown_department",
            "GRO",
            gro_rows(_gro(NUMCOM="96001")),
            (r, "COMMUNE_UNKNOWN"),
            "commune in a département that does not exist",
        ),
        Case(
            "gro_unknown_numorg",
            "GRO",
            gro_rows(_gro(NUMORG="961")),
            (r, "NUMORG_SHAPE"),
            "Caf code of a département that does not exist",
        ),
        Case(
            "gro_department_not_enabled",
            "GRO",
            gro_rows(_gro("067")),
            (r, "DEPARTMENT_NOT_ENABLED_KEPT"),
            "commune of a served but not enabled département",
        ),
        Case(
            "gro_commune_vs_postcode",
            "GRO",
            gro_rows(_GOOD_GRO),
            (a, None),
            "Rennes INSEE code with an Ajaccio postcode: routed by the INSEE code",
        ),
        Case(
            "gro_duplicate",
            "GRO",
            # Unix line ends: the same bytes under two names would be one file set aside, not a DUPLICATE.
            lambda inbox, name: _write(inbox, "GRO", name,
                                       g._csv_bytes(g.GRO_COLUMNS, [_GOOD_GRO]).replace(b"\r\n", b"\n")),
            (r, "DUPLICATE"),
            "the previous case's row again, in another file",
        ),
        # -- SGR
        Case(
            "sgr_bom",
            "SGR",
            lambda i, n: _write(i, "SGR", n, b"\xef\xbb\xbf" + g._csv_bytes(g.SGR_COLUMNS, [_sgr()])),
            (q, "ENCODING"),
            "index with a UTF-8 byte-order mark",
        ),
        Case("sgr_not_pdf", "SGR", sgr(pdf=g.NOT_A_PDF), (r, "PDF_NOT_PDF"), "a text file named .pdf"),
        Case(
            "sgr_pdf_no_eof",
            "SGR",
            sgr(pdf=b"%PDF-1.4\n" + b"0" * 4000),
            (r, "PDF_NOT_PDF"),
            "a PDF header without %%EOF (truncated scan)",
        ),
        Case(
            "sgr_pdf_too_large",
            "SGR",
            sgr(pdf=b"%PDF-1.4\n" + b"0" * (5 * 1024 * 1024) + b"\n%%EOF\n"),
            (r, "PDF_TOO_LARGE"),
            "a 5 MiB + scan",
        ),
        Case(
            "sgr_pdf_missing",
            "SGR",
            sgr(pdf=None),
            (r, "PDF_MISSING"),
            "the index names a scan that is absent",
        ),
        Case("sgr_pdf_symlink", "SGR", sgr(link=True), (r, "PDF_MISSING"), "the scan is a symlink"),
        Case(
            "sgr_traversal",
            "SGR",
            sgr(_sgr(FICHIER="../../../../etc/passwd")),
            (r, "PATH_TRAVERSAL"),
            "FICHIER climbing out with ..",
        ),
        Case(
            "sgr_absolute", "SGR", sgr(_sgr(FICHIER="/etc/passwd")), (r, "PATH_TRAVERSAL"), "absolute FICHIER"
        ),
        Case(
            "sgr_backslash",
            "SGR",
            sgr(_sgr(FICHIER="scans\\..\\..\\x.pdf")),
            (r, "PATH_TRAVERSAL"),
            "Windows-style path",
        ),
        Case(
            "sgr_date_order",
            "SGR",
            sgr(_sgr(DTRECEP="2026-11-19", DTCREASDP="2026-11-18")),
            (r, "DATE_ORDER"),
            "scan indexed before it was received",
        ),
        Case("sgr_ok", "SGR", sgr(), (a, None), "a well-formed index and scan"),
    ]


def _nir_month13() -> str:
    first13 = "2951335238123"
    return first13 + people.nir_key(first13)


CASES = _cases()


def corpus_table(observed: dict[str, tuple[str, str | None]] | None = None) -> str:
    def fmt(o: tuple[str, str | None]) -> str:
        return o[0] + (f" `{o[1]}`" if o[1] else "")

    lines = ["| # | flow | case | expected | observed |", "|---|---|---|---|---|"]
    for n, c in enumerate(CASES, 1):
        seen = fmt(observed[c.name]) if observed else fmt(c.expected)
        lines.append(f"| {n} | {c.flow} | {c.what} (`{c.name}`) | {fmt(c.expected)} | {seen} |")
    lines.append(
        f"| {len(CASES) + 1} | all | zero-byte inbox: no file at all (`empty_inbox`) | "
        "run completes, empty flows sent | run completes, empty flows sent |"
    )
    counts = defaultdict(int)
    for c in CASES:
        counts[c.expected[0]] += 1
    lines.append("")
    lines.append(
        f"{len(CASES) + 1} cases: {counts['reject']} rejected, {counts['quarantine']} quarantined, "
        f"{counts['accept']} legitimate inputs accepted, 1 empty inbox."
    )
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def hostile_night(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "demo"
    result = make_demo(root, departments=DEPTS)
    inbox = root / "inbox"
    for c in CASES:
        c.make(inbox, c.file)
    report = Night(load(root / "flux-pmi.toml"), clock=FixedClock(NOW), sleep=lambda s: None).run(
        BUSINESS_DATE
    )
    observed: dict[str, tuple[str, str | None]] = {}
    rejects: dict[str, list[str]] = defaultdict(list)
    if report.rejects_report:
        with open(report.rejects_report, encoding="utf-8") as fh:
            for row in csv.DictReader(fh, delimiter=";"):
                rejects[row["file"]].append(row["code"])
    quarantined = {Path(f).name: code for _flow, f, code in report.quarantined}
    for c in CASES:
        if c.file in quarantined:
            observed[c.name] = ("quarantine", quarantined[c.file])
        elif rejects.get(c.file):
            observed[c.name] = ("reject", ",".join(sorted(set(rejects[c.file]))))
        else:
            observed[c.name] = ("accept", None)
    return root, result, report, observed


def test_corpus_has_the_cases_the_issue_asks_for():
    assert len(CASES) + 1 >= 30
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_case_gets_its_specific_outcome(hostile_night, case):
    _root, _result, _report, observed = hostile_night
    assert observed[case.name] == case.expected


def test_the_valid_records_of_the_same_batch_are_delivered(hostile_night):
    root, result, report, _observed = hostile_night
    fps = record_fingerprints(open_delivered(root))
    accepted = sum(1 for c in CASES if c.expected[0] == "accept")
    assert sum(fps.values()) == result.records - result.bad + accepted
    assert max(fps.values()) == 1
    assert report.undelivered == 0, report.problems


def test_the_demo_bad_records_keep_their_reasons(hostile_night):
    root, _result, report, _observed = hostile_night
    with open(report.rejects_report, encoding="utf-8") as fh:
        codes = {r["code"] for r in csv.DictReader(fh, delimiter=";") if not r["file"].startswith("zz_")}
    assert codes >= {"NIR_KEY", "PDF_MISSING", "COMMUNE_UNKNOWN"}


def test_an_empty_inbox_is_a_quiet_night(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, departments=DEPTS)
    for flow in ("DSG", "GRO", "SGR"):
        shutil.rmtree(root / "inbox" / flow)
        (root / "inbox" / flow).mkdir(mode=0o700)
    report = Night(load(root / "flux-pmi.toml"), clock=FixedClock(NOW), sleep=lambda s: None).run(
        BUSINESS_DATE
    )
    assert int(report.exit_code) == 0, report.problems
    assert report.totals().records == 0 and report.totals().rejects == 0
    assert report.rejects_report is None


def test_the_doc_table_is_the_observed_table(hostile_night):
    *_, observed = hostile_night
    table = corpus_table(observed)
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    if os.environ.get("FLUX_PMI_WRITE_DOCS") == "1":
        DOC.write_text(f"{head}{BEGIN}\n{table}{END}{tail}", encoding="utf-8")
    else:
        assert f"{BEGIN}\n{table}{END}" in text, (
            "docs/reliability.md is stale: rerun with FLUX_PMI_WRITE_DOCS=1"
        )
