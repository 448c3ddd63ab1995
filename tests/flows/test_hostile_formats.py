"""Hostile variants of the real upstream shapes that a red-team pass found mishandled.

Each test holds one finding: what used to crash the night, or to report a refusal at a
line that is not the offending element's. The night-level test runs the real CLI on a
seeded demo install and checks that the rest of the night is delivered unchanged.
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from support import BUSINESS_DATE, make_demo, open_delivered, record_fingerprints, run_cli

from flux_pmi.core.errors import InputFileError
from flux_pmi.flows.parse import parse_file

HUBEE = Path("/work/shared/reference/hubee")
DSG = (HUBEE / "DSG.xml").read_bytes()
GRO = (HUBEE / "GRO.xml").read_bytes()
with zipfile.ZipFile(HUBEE / "SGR.zip") as _z:
    SGR_INDEX = _z.read("CG_081_2022-01-02_pmiich.xml")
    PDF = _z.read("IMG00001.pdf")
INDEX_NAME = "CG_081_2022-01-02_pmiich.xml"
TODAY = date(2026, 11, 23)
HUGE = b"9" * 5000  # beyond Python's 4300-digit int() ceiling: int() raises ValueError


def make_zip(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def line_holding(data: bytes, marker: bytes) -> int:
    return data.count(b"\n", 0, data.index(marker)) + 1


DSG_HUGE_NBDOC = DSG.replace(b"<ns3:NbDoc>1<", b"<ns3:NbDoc>" + HUGE + b"<")
SGR_HUGE_COUNT_INDEX = SGR_INDEX.replace(b"<NBTOTDOSPMITRANSM>00001<", b"<NBTOTDOSPMITRANSM>" + HUGE + b"<")
SGR_HUGE_COUNT = make_zip([(INDEX_NAME, SGR_HUGE_COUNT_INDEX), ("IMG00001.pdf", PDF)])


def parse(tmp_path: Path, flow: str, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return parse_file(flow, path, display_name=name, today=TODAY, inbox_root=tmp_path)


@pytest.mark.parametrize("flow, name, data, marker", [
    ("DSG", "e.xml", DSG_HUGE_NBDOC, b"<ns3:NbDoc>"),
    ("SGR", "s.zip", SGR_HUGE_COUNT, b"<NBTOTDOSPMITRANSM>"),
])
def test_a_count_of_thousands_of_digits_refuses_its_file_at_the_count(tmp_path, flow, name, data, marker):
    # It used to escape as ValueError from int() and stop the whole night (exit 1, traceback).
    with pytest.raises(InputFileError) as caught:
        parse(tmp_path, flow, name, data)
    text = SGR_HUGE_COUNT_INDEX if flow == "SGR" else data
    assert (caught.value.code, caught.value.line) == ("XML_SHAPE", line_holding(text, marker))
    assert "9999" not in str(caught.value)


def test_gro_counts_that_disagree_are_reported_at_transmissionflux(tmp_path):
    data = GRO.replace(b"<NBTOTDOSPMITRANSMANO>1<", b"<NBTOTDOSPMITRANSMANO>2<")
    with pytest.raises(InputFileError) as caught:
        parse(tmp_path, "GRO", "g.xml", data)
    assert (caught.value.code, caught.value.line) == ("XML_SHAPE", line_holding(data, b"<TransmissionFlux>"))


def test_gro_flow_date_after_the_processing_day_rejects_at_dtref_not_line_1(tmp_path):
    data = GRO.replace(b"<DTREF>2022-02-10<", b"<DTREF>9999-12-31<").replace(
        b"<DTCREAFLUX>2022-02-10<", b"<DTCREAFLUX>9999-12-31<")
    (rejected,) = parse(tmp_path, "GRO", "g.xml", data).rejects
    assert (rejected.code, rejected.source.line) == ("DATE_FUTURE", line_holding(data, b"<DTREF>"))


def test_a_night_with_huge_counts_quarantines_those_files_and_delivers_the_rest(tmp_path):
    def night(root: Path):
        proc = run_cli("run", "--config", str(root / "flux-pmi.toml"), "--date", BUSINESS_DATE.isoformat())
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        return proc, Counter(record_fingerprints(open_delivered(root)))

    clean_root, hostile_root = tmp_path / "clean", tmp_path / "hostile"
    make_demo(clean_root)
    make_demo(hostile_root)
    (hostile_root / "inbox" / "DSG" / "huge-nbdoc.xml").write_bytes(DSG_HUGE_NBDOC)
    (hostile_root / "inbox" / "SGR" / "huge-count.zip").write_bytes(SGR_HUGE_COUNT)

    clean_proc, clean = night(clean_root)
    proc, got = night(hostile_root)
    assert clean_proc.returncode == 0 and sum(clean.values()) > 50
    assert proc.returncode == 5, proc.stderr[-3000:]
    assert got == clean
    for flow, name in (("DSG", "huge-nbdoc.xml"), ("SGR", "huge-count.zip")):
        reason = (hostile_root / "quarantine" / flow / f"{name}.reason").read_text()
        assert "XML_SHAPE" in reason and "9999" not in reason
