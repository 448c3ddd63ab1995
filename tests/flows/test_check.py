"""Unit tests of flows/check.py: each rule, its reason code, and value-free messages."""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path

import pytest

from flux_pmi.flows import check
from flux_pmi.flows.check import Invalid

TODAY = date(2026, 11, 25)


def make_nir(sex: str = "2", yy: str = "90", mm: str = "03", dept: str = "35", rest: str = "238042") -> str:
    """A NIR with a correct key: 97 - (first 13 digits mod 97), 2A -> 19 and 2B -> 18."""
    body = f"{sex}{yy}{mm}{dept}{rest}"
    numeric = body[:5] + {"2A": "19", "2B": "18"}.get(dept, dept) + body[7:]
    return body + f"{97 - int(numeric) % 97:02d}"


def code_of(fn, *args, **kwargs) -> str:
    with pytest.raises(Invalid) as caught:
        fn(*args, **kwargs)
    return caught.value.code


# --- REASONS ----------------------------------------------------------------------------


def test_every_code_raised_in_the_flow_modules_is_documented():
    flows = Path(check.__file__).parent
    used_record, used_file = set(), set()
    for name in ("check.py", "parse.py", "parse_common.py", "csvread.py", "xmlread.py", "parse_dsg.py",
                 "parse_gro.py", "parse_gro_xml.py", "parse_sgr.py", "parse_sgr_zip.py"):
        text = (flows / name).read_text(encoding="utf-8")
        used_record |= set(re.findall(r'Invalid\(\s*"([A-Z_]+)"', text))
        used_file |= set(re.findall(r'code="([A-Z_]+)"', text))
    assert used_record and used_record <= set(check.REASONS)
    assert used_file and used_file <= set(check.FILE_REASONS)
    assert all(desc and "\n" not in desc for desc in {**check.REASONS, **check.FILE_REASONS}.values())


def test_invalid_carries_code_message_and_field():
    err = Invalid("VALUE_RANGE", "Rang: must be from 1 to 99", "Rang")
    assert err.failure == ("VALUE_RANGE", "Rang: must be from 1 to 99")
    assert err.field == "Rang"


# --- NIR --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "nir",
    [
        make_nir(),
        make_nir(dept="2A", rest="004123"),  # born in Corse-du-Sud
        make_nir(dept="2B", rest="033123"),  # born in Haute-Corse
        make_nir(dept="97", rest="411123"),  # born in La Réunion
        make_nir(dept="99", rest="350123"),  # born abroad
        make_nir(sex="1"),  # a pregnant trans man keeps his NIR: legal
        make_nir(sex="7"),  # temporary number (NIA)
        make_nir(sex="8"),
        make_nir(mm="20"),
        make_nir(mm="42"),
        make_nir(mm="50"),
        make_nir(mm="99"),
        "253072B07300470",  # stdnum's own examples
        "253072A07300443",
    ],
)
def test_valid_nirs(nir):
    assert check.check_nir(nir, None) == nir


@pytest.mark.parametrize(
    "nir, code",
    [
        ("29003352380", "NIR_FORMAT"),  # too short
        (make_nir() + "1", "NIR_FORMAT"),  # too long
        (make_nir().lower().replace("3", " ", 1), "NIR_FORMAT"),  # a space: stdnum would compact it
        ("290032C23804211", "NIR_FORMAT"),
        (make_nir(dept="2A").replace("2A", "2a"), "NIR_FORMAT"),
        (make_nir()[:13] + "00", "NIR_KEY"),
        (make_nir(sex="5"), "NIR_FORMAT"),
        (make_nir(sex="0"), "NIR_FORMAT"),
        (make_nir(mm="00"), "NIR_MONTH"),
        (make_nir(mm="13"), "NIR_MONTH"),
        (make_nir(mm="19"), "NIR_MONTH"),
        (make_nir(mm="43"), "NIR_MONTH"),
        (make_nir(mm="49"), "NIR_MONTH"),
    ],
)
def test_invalid_nirs(nir, code):
    assert code_of(check.check_nir, nir, None) == code


def test_nir_birth_year_cross_check():
    nir = make_nir(yy="90", mm="03")
    assert check.check_nir(nir, date(1990, 3, 7))
    assert check.check_nir(nir, date(1990, 11, 7))  # month is not cross-checked
    assert code_of(check.check_nir, nir, date(1991, 3, 7)) == "NIR_BIRTH_MISMATCH"
    # A fictitious month says the birth date was unknown: the year is not held against it.
    assert check.check_nir(make_nir(yy="90", mm="30"), date(1991, 3, 7))
    assert check.check_nir(make_nir(yy="05", mm="03"), date(2005, 3, 7))


# --- dates ------------------------------------------------------------------------------


def test_parse_date_strict():
    assert check.parse_date("2026-02-28", "DTRECEP") == date(2026, 2, 28)
    for bad in ("2026-02-30", "26-02-28", "2026/02/28", "2026-2-28", "2026-02-28 ", "0000-01-01", ""):
        assert code_of(check.parse_date, bad, "DTRECEP") == "DATE_INVALID"


def test_dates_before_1900_are_refused_by_every_date_parser():
    """A producer's "no date" (0001-01-01) would start a deadline that ran out centuries ago."""
    assert check.parse_date("1900-01-01", "DTREF") == date(1900, 1, 1)
    assert code_of(check.parse_date, "0001-01-01", "DTREF") == "DATE_INVALID"
    assert code_of(check.parse_date, "1899-12-31", "DTCREASDP") == "DATE_INVALID"
    assert code_of(check.parse_xs_date, "0001-01-01+01:00", "DateDPG") == "DATE_INVALID"
    assert code_of(check.parse_received_datetime, "0001-01-01T00:00:00+01:00", "Date") == "DATE_INVALID"
    assert check.parse_received_datetime("1900-01-02T12:00:00+01:00", "Date") == date(1900, 1, 2)


def test_parse_xs_date_with_offsets():
    assert check.parse_xs_date("2021-12-03+01:00", "DateDPG") == date(2021, 12, 3)
    assert check.parse_xs_date("2021-12-03Z", "DateDPG") == date(2021, 12, 3)
    assert check.parse_xs_date("2021-12-03-05:00", "DateDPG") == date(2021, 12, 3)
    assert check.parse_xs_date("2021-12-03", "DateDPG") == date(2021, 12, 3)
    for bad in ("2021-12-03+1:00", "2021-12-32", "2021-12-03+15:00", "2021-12-03T00:00:00"):
        assert code_of(check.parse_xs_date, bad, "DateDPG") == "DATE_INVALID"


def test_received_is_the_paris_local_date():
    assert check.parse_received_datetime("2022-01-29T08:40:05.000+01:00", "Date") == date(2022, 1, 29)
    # 23:30 UTC is already the next day in Paris (UTC+1 in winter, UTC+2 in summer).
    assert check.parse_received_datetime("2026-11-19T23:30:00Z", "Date") == date(2026, 11, 20)
    assert check.parse_received_datetime("2026-07-19T22:30:00+00:00", "Date") == date(2026, 7, 20)
    assert check.parse_received_datetime("2026-07-19T22:30:00", "Date") == date(2026, 7, 19)  # naive = Paris
    assert check.parse_received_datetime("2026-07-19T22:30:00.1234567-04:00", "Date") == date(2026, 7, 20)
    for bad in ("2026-07-19", "2026-07-19T25:00:00Z", "2026-07-19 22:30:00Z", "x"):
        assert code_of(check.parse_received_datetime, bad, "Date") == "DATE_INVALID"


def test_not_future():
    assert check.not_future(TODAY, "DTRECEP", TODAY) == TODAY
    assert code_of(check.not_future, date(2026, 11, 26), "DTRECEP", TODAY) == "DATE_FUTURE"


def test_pregnancy_order_and_span():
    check.check_pregnancy(date(2026, 9, 3), date(2026, 11, 19), "DateDPG", "DateExamen")
    assert code_of(check.check_pregnancy, date(2026, 11, 19), date(2026, 11, 19), "A", "B") == "DATE_ORDER"
    assert code_of(check.check_pregnancy, date(2026, 11, 20), date(2026, 11, 19), "A", "B") == "DATE_ORDER"
    start = date(2025, 1, 1)
    check.check_pregnancy(start, date.fromordinal(start.toordinal() + 305), "A", "B")
    assert code_of(check.check_pregnancy, start, date.fromordinal(start.toordinal() + 306), "A", "B") == (
        "DATE_RANGE"
    )
    check.check_pregnancy(start, date(2026, 6, 1), "A", "B", span=False)


def test_age_bounds_inclusive():
    at = date(2026, 11, 19)
    check.check_age(date(2016, 11, 19), date(2016, 11, 19), at, "DateNai", "DateExamen")  # 10 today
    assert code_of(check.check_age, date(2016, 11, 20), date(2016, 11, 20), at, "D", "E") == "DATE_RANGE"
    check.check_age(date(1960, 11, 20), date(1960, 11, 20), at, "D", "E")  # 65, 66 tomorrow
    assert code_of(check.check_age, date(1960, 11, 19), date(1960, 11, 19), at, "D", "E") == "DATE_RANGE"
    # An unknown day/month: refused only when every possible date is out of bounds.
    check.check_age(date(1960, 1, 1), date(1960, 12, 31), at, "D", "E")
    assert code_of(check.check_age, date(1959, 1, 1), date(1959, 12, 31), at, "D", "E") == "DATE_RANGE"


def test_gro_birth_date_types():
    assert check.parse_gro_birth("1990-03-07", "N") == (date(1990, 3, 7), date(1990, 3, 7))
    assert check.parse_gro_birth("1990-02-00", "J") == (date(1990, 2, 1), date(1990, 2, 28))
    assert check.parse_gro_birth("1992-02-00", "J") == (date(1992, 2, 1), date(1992, 2, 29))
    assert check.parse_gro_birth("1990-12-00", "J") == (date(1990, 12, 1), date(1990, 12, 31))
    assert check.parse_gro_birth("1990-00-00", "O") == (date(1990, 1, 1), date(1990, 12, 31))
    for value, kind in [
        ("1990-03-00", "N"),
        ("1990-00-00", "N"),
        ("1990-03-07", "J"),
        ("1990-00-00", "J"),
        ("1990-03-00", "O"),
        ("1990-03-07", "O"),
        ("1990-13-00", "J"),
        ("0000-00-00", "O"),
        ("1990-3-7", "N"),
    ]:
        assert code_of(check.parse_gro_birth, value, kind) == "DATE_INVALID", (value, kind)


def test_check_not_before():
    check.check_not_before(date(2026, 1, 2), date(2026, 1, 2), "DTCREASDP", "DTRECEP")
    assert code_of(check.check_not_before, date(2026, 1, 1), date(2026, 1, 2), "X", "Y") == "DATE_ORDER"


# --- codes, numbers, identifiers --------------------------------------------------------


def test_codes_and_booleans():
    assert check.check_code("MME", {"MME", "MR"}, "QUAL") == "MME"
    assert code_of(check.check_code, "Mme", {"MME", "MR"}, "QUAL") == "CODE_UNKNOWN"
    assert check.parse_bool("true", "RectifDPG") is True
    assert check.parse_bool("false", "RectifDPG") is False
    for bad in ("True", "1", "yes", ""):
        assert code_of(check.parse_bool, bad, "RectifDPG") == "CODE_UNKNOWN"


def test_parse_int_ascii_digits_only():
    assert check.parse_int("0", "NBENFCHAPF", 0, 30) == 0
    assert check.parse_int("30", "NBENFCHAPF", 0, 30) == 30
    assert check.parse_int("01", "Rang", 1, 99) == 1
    for bad in ("31", "-1", "+1", "1_0", "\u0661", "1.0", "", " 1", "1e1"):
        assert code_of(check.parse_int, bad, "NBENFCHAPF", 0, 30) == "VALUE_RANGE", bad


def test_matricule_numorg_commune_postcode():
    assert check.check_matricule("123456700000000")
    for bad in ("12345670000000", "1234567000000000", "12345670000000A"):
        assert code_of(check.check_matricule, bad) == "MATRICULE_SHAPE"
    for good in ("351", "561", "201", "202", "751", "971", "976", "011"):
        assert check.check_numorg(good) == good
    for bad in ("35", "3511", "000", "975", "203", "2A1", "961", ""):
        assert code_of(check.check_numorg, bad) == "NUMORG_SHAPE", bad
    for good in ("35238", "2A004", "2B033", "97411", "97611", "01053"):
        assert check.check_commune(good, "NUMCOM") == good
    for bad in ("20004", "2a004", "97511", "99350", "00123", "3523", "352380", "96001"):
        assert code_of(check.check_commune, bad, "NUMCOM") == "COMMUNE_UNKNOWN", bad
    assert check.check_postcode("20000", "CODEPOS")
    for bad in ("2000", "2A000", "200000"):
        assert code_of(check.check_postcode, bad, "CODEPOS") == "POSTCODE_SHAPE"


def test_mutation_fields():
    check.check_mutation("03", "561", "765432100000000")
    check.check_mutation("01", "", "")
    check.check_mutation("02", "", "")
    for motif, numorg, matricule in [
        ("03", "", "765432100000000"),
        ("03", "561", ""),
        ("03", "56", "765432100000000"),
        ("03", "561", "7654321"),
        ("01", "561", ""),
        ("02", "", "765432100000000"),
    ]:
        assert code_of(check.check_mutation, motif, numorg, matricule) == "MUTATION_FIELDS"


def test_health_professional_identifier():
    assert check.check_ps_id("511019861", "ADELI")
    assert check.check_ps_id("2A1019861", "ADELI")
    assert check.check_ps_id("10001234567", "RPPS")
    assert code_of(check.check_ps_id, "511019861", "AM") == "CODE_UNKNOWN"
    assert code_of(check.check_ps_id, "511019861", "") == "CODE_UNKNOWN"
    assert code_of(check.check_ps_id, "51101986", "ADELI") == "VALUE_RANGE"
    assert code_of(check.check_ps_id, "511019861", "RPPS") == "VALUE_RANGE"


def test_phone_and_identifier_shapes():
    for good in ("0611223344", "+33611223344", "06 11 22 33 44", "06.11.22.33.44"):
        assert check.check_phone(good) == good
    for bad in ("=1+1", "06-11-22-33-44", "abc", "061"):
        assert code_of(check.check_phone, bad) == "VALUE_RANGE"
    assert check.check_identifier("08002781800019d88000250510001320064", "Identification")
    for bad in ("-x", "a b", "x" * 65, "é"):
        assert code_of(check.check_identifier, bad, "Identification") == "VALUE_RANGE"


# --- text -------------------------------------------------------------------------------


def test_text_control_characters_refused_everywhere():
    assert check.check_text("Éléonore d'Aubigné-Ruiz", "PRENOMS", free_text=True)
    for bad in ("a\tb", "a\nb", "a\rb", "a\x00b", "a\x7fb", "a\x9cb", "a\u202eb", "a\u200bb", "a\ufeffb"):
        assert code_of(check.check_text, bad, "NOM", free_text=False) == "TEXT_INVALID", repr(bad)


def test_formula_prefixes_refused_in_free_text_only():
    for bad in ("=HYPERLINK(1)", "+33", "-1", "@SUM(1)"):
        assert code_of(check.check_text, bad, "NOMNAI", free_text=True) == "TEXT_INVALID"
        assert check.check_text(bad, "CODE", free_text=False) == bad
    assert check.check_text("Jean-Marie", "PRENOMS", free_text=True)  # inside is fine


def test_check_texts_reports_the_first_bad_field():
    free = frozenset({"NOMNAI", "PRENOMS"})
    check.check_texts({"NUMORG": "351", "NOMNAI": "Zelphinard", "PRENOMS": "Ysoline"}, free)
    with pytest.raises(Invalid) as caught:
        check.check_texts({"NUMORG": "351", "NOMNAI": "Zel\x85", "PRENOMS": "\x01"}, free)
    assert (caught.value.code, caught.value.field) == ("TEXT_INVALID", "NOMNAI")
    with pytest.raises(Invalid) as caught:
        check.check_texts({"NUMORG": "-351", "NOMNAI": "Zelphinard", "PRENOMS": "+Ysoline"}, free)
    assert (caught.value.code, caught.value.field) == ("TEXT_INVALID", "PRENOMS")


def test_require():
    assert check.require("x", "NOMNAI") == "x"
    assert code_of(check.require, "", "NOMNAI") == "FIELD_MISSING"


# --- SGR scans --------------------------------------------------------------------------

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    root = tmp_path / "batch"
    (root / "00001").mkdir(parents=True)
    (root / "00001" / "IMG00001.pdf").write_bytes(PDF)
    return root


def test_pdf_ok(batch: Path):
    path, size = check.check_pdf("00001/IMG00001.pdf", batch, 1024)
    assert path == (batch / "00001" / "IMG00001.pdf").resolve()
    assert size == len(PDF)


@pytest.mark.parametrize(
    "fichier",
    [
        "../outside.pdf",
        "00001/../../outside.pdf",
        "00001/../00001/IMG00001.pdf",  # even when it would land inside: no '..' at all
        "/00001/IMG00001.pdf",  # the HubEE sample's NOMIMAGED style: absolute, refused
        "/etc/passwd",
        "C:/scans/IMG00001.pdf",
        "c:IMG00001.pdf",
        "00001\\IMG00001.pdf",
        "\\\\server\\share\\x.pdf",
        "./00001/IMG00001.pdf",
        "00001//IMG00001.pdf",
        "",
    ],
)
def test_pdf_path_traversal(batch: Path, fichier: str):
    (batch.parent / "outside.pdf").write_bytes(PDF)
    assert code_of(check.check_pdf, fichier, batch, 1024) == "PATH_TRAVERSAL"


def test_pdf_symlinked_directory_leading_outside(batch: Path, tmp_path: Path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.pdf").write_bytes(PDF)
    os.symlink(outside, batch / "link")
    assert code_of(check.check_pdf, "link/x.pdf", batch, 1024) == "PATH_TRAVERSAL"


def test_pdf_missing_symlink_or_not_regular(batch: Path):
    assert code_of(check.check_pdf, "00001/IMG00002.pdf", batch, 1024) == "PDF_MISSING"
    os.symlink(batch / "00001" / "IMG00001.pdf", batch / "00001" / "alias.pdf")
    assert code_of(check.check_pdf, "00001/alias.pdf", batch, 1024) == "PDF_MISSING"
    assert code_of(check.check_pdf, "00001", batch, 1024) == "PDF_MISSING"


def test_pdf_too_large_and_not_pdf(batch: Path):
    assert code_of(check.check_pdf, "00001/IMG00001.pdf", batch, len(PDF) - 1) == "PDF_TOO_LARGE"
    for name, content in [
        ("empty.pdf", b""),
        ("jpeg.pdf", b"\xff\xd8\xff\xe0" + b"x" * 100 + b"%%EOF"),
        ("truncated.pdf", PDF[:-7]),
        ("eof-too-early.pdf", PDF + b"x" * 2000),
    ]:
        (batch / name).write_bytes(content)
        assert code_of(check.check_pdf, name, batch, 1 << 20) == "PDF_NOT_PDF", name
    (batch / "tail.pdf").write_bytes(b"%PDF-1.7\n" + b"x" * 3000 + b"%%EOF")
    assert check.check_pdf("tail.pdf", batch, 1 << 20)[1] == 3014


def test_messages_never_quote_the_value():
    secret = "Zelphinard-7731"
    probes = [
        lambda: check.check_text(secret + "\x01", "NOMNAI", free_text=True),
        lambda: check.check_text("=" + secret, "NOMNAI", free_text=True),
        lambda: check.parse_date(secret, "DTNAI"),
        lambda: check.parse_xs_date(secret, "DateNai"),
        lambda: check.parse_received_datetime(secret, "Date"),
        lambda: check.parse_gro_birth(secret, "N"),
        lambda: check.check_code(secret, {"MME"}, "QUAL"),
        lambda: check.parse_int(secret, "Rang", 1, 9),
        lambda: check.parse_bool(secret, "RectifDPG"),
        lambda: check.check_matricule(secret),
        lambda: check.check_numorg(secret),
        lambda: check.check_commune(secret, "NUMCOM"),
        lambda: check.check_postcode(secret, "CODEPOS"),
        lambda: check.check_nir(secret, None),
        lambda: check.check_phone(secret),
        lambda: check.check_identifier(secret + " ", "Identification"),
        lambda: check.check_ps_id(secret, "ADELI"),
        lambda: check.check_mutation("03", secret, secret),
    ]
    for probe in probes:
        with pytest.raises(Invalid) as caught:
            probe()
        assert "Zelphinard" not in str(caught.value) and "7731" not in caught.value.message
