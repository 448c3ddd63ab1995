"""The emission file-name grammar: what the sender builds, every reader parses back."""

from __future__ import annotations

from datetime import date

import pytest

from flux_pmi.core import names
from flux_pmi.core.names import EmissionName, ack_name, emission_name

DAY = date(2026, 11, 23)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("GRO", "035", DAY, 1, 1, 1), "GRO_035_20261123_000001.xml.p7m"),
        (("SGR", "02A", DAY, 7, 2, 3), "SGR_02A_20261123_000007_P2of3.zip.p7m"),
        (("DSG", "971", DAY, 42, 1, 1, 12), "DSG_971_20261123_000042_R12.xml.p7m"),
        (("DSG", "69M", DAY, 3, 1, 2, 1), "DSG_69M_20261123_000003_P1of2_R01.xml.p7m"),
    ],
)
def test_built_names_parse_back_to_their_fields(args, expected):
    assert emission_name(*args) == expected
    parsed = names.parse(expected)
    assert parsed is not None and names.build(parsed) == expected and str(parsed) == expected
    flow, dept, day, seq, part, parts, *rest = args
    assert (parsed.flow, parsed.department, parsed.business_date, parsed.seq, parsed.part, parsed.parts,
            parsed.reemission_no) == (flow, dept, day, seq, part, parts, rest[0] if rest else 0)
    assert parsed.sealed and parsed.fits


def test_unsealed_and_mismatched_extensions_are_told_apart():
    unsealed = names.parse("GRO_035_20261123_000001.xml")
    assert unsealed is not None and not unsealed.sealed and unsealed.fits
    wrong = names.parse("SGR_035_20261123_000001.xml.p7m")
    assert wrong is not None and not wrong.fits


@pytest.mark.parametrize(
    "name",
    [
        "GRO_035_20261123_000001.xml.p7m.part",  # an upload in progress
        "XYZ_035_20261123_000001.xml.p7m",  # not a flow
        "GRO_100_20261123_000001.xml.p7m",  # not a registry code
        "GRO_035_20261399_000001.xml.p7m",  # not a date
        "GRO_035_20261123_1.xml.p7m",  # the sequence has six digits
        "GRO_035_20261123_000001_P0of2.xml.p7m",  # parts count from 1
        "../GRO_035_20261123_000001.xml.p7m",
        "",
    ],
)
def test_other_names_are_not_emission_names(name):
    assert names.parse(name) is None


def test_the_ack_of_a_file_is_named_after_it():
    assert ack_name("GRO_035_20261123_000001.xml.p7m") == "GRO_035_20261123_000001.xml.p7m.ack.xml"
    assert names.build(EmissionName("SGR", "035", DAY, 1)) == "SGR_035_20261123_000001.zip.p7m"
