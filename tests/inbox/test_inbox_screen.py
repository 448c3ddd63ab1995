"""The general defences behind the hostile-night tests, one rule at a time (no CLI here).

Names that cannot be stored, confinement of SGR scan paths, a quarantine that never
overwrites (and completes itself after a crash), report cells a spreadsheet cannot run,
and the receiving side's listing of a name that is not UTF-8.
"""

from __future__ import annotations

import csv
import io
import os
import stat

import pytest

from flux_pmi.core.fsutil import free_name, name_digest, open_regular, storable_name
from flux_pmi.inbox import claim
from flux_pmi.receive.drops import LocalDropReader, is_safe_name, stand_in
from flux_pmi.report import rejects

LATIN1 = os.fsdecode(b"caf\xe9.csv")


def test_storable_names():
    assert storable_name("GRO_20261123.csv") and storable_name("été.csv")
    assert not storable_name(LATIN1)
    assert not storable_name("a\nb.csv") and not storable_name("a\tb.csv") and not storable_name("a/b")
    assert not storable_name("")
    assert name_digest(LATIN1) == name_digest(os.fsdecode(b"caf\xe9.csv")) != name_digest("café.csv")


def test_open_regular_refuses_links_fifos_and_folders(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    (tmp_path / "l").symlink_to(tmp_path / "f")
    os.mkfifo(tmp_path / "p")
    (tmp_path / "d").mkdir()
    os.close(open_regular(tmp_path / "f"))
    for name in ("l", "p", "d"):
        with pytest.raises(OSError):
            open_regular(tmp_path / name)


def test_free_name_never_points_at_an_existing_file_or_companion(tmp_path):
    (tmp_path / "x.csv").write_bytes(b"1")
    (tmp_path / "x.csv.2.reason").write_bytes(b"r")
    assert free_name(tmp_path, "x.csv", (".reason",)) == "x.csv.3"
    assert free_name(tmp_path, "y.csv", (".reason",)) == "y.csv"


@pytest.fixture
def sgr(tmp_path):
    folder = tmp_path / "inbox" / "SGR"
    (folder / "scans" / "d").mkdir(parents=True)
    (folder / "scans" / "d" / "a.pdf").write_bytes(b"%PDF-")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.pdf").write_bytes(b"%PDF-secret")
    (folder / "linked").symlink_to(outside)
    (folder / "scans" / "linked").symlink_to(outside)
    (folder / "scans" / "d" / "link.pdf").symlink_to(outside / "secret.pdf")
    return folder


@pytest.mark.parametrize("rel", [
    "../outside/secret.pdf", "/etc/passwd", "scans\\d\\a.pdf", "scans//d/a.pdf", "scans/./d/a.pdf",
    "linked/secret.pdf", "scans/linked/secret.pdf", "scans/d/link.pdf", "scans/d", "scans/d/missing.pdf",
    "scans/" + "a" * 300 + ".pdf", "/".join(["b" * 200] * 25) + "/x.pdf", "scans/d/a\n.pdf", "",
])
def test_confined_refuses_every_way_out_and_every_error(sgr, rel):
    assert claim.confined(sgr, rel) is None


def test_confined_accepts_a_real_path_inside(sgr):
    assert claim.confined(sgr, "scans/d/a.pdf") == sgr / "scans" / "d" / "a.pdf"


def test_quarantine_never_overwrites_and_keeps_each_reason(tmp_path):
    q = tmp_path / "quarantine"
    for n, data in enumerate((b"first", b"second", b"third")):
        src = tmp_path / f"in{n}"
        src.write_bytes(data)
        claim.quarantine(src, q, "GRO", "x.csv", "CSV_SHAPE", f"case {n}")
    kept = {p.name: p.read_bytes() for p in (q / "GRO").iterdir()}
    assert kept["x.csv"] == b"first" and kept["x.csv.2"] == b"second" and kept["x.csv.3"] == b"third"
    assert kept["x.csv.3.reason"].startswith(b"CSV_SHAPE: case 2\nfile: x.csv")


def test_quarantined_material_is_owner_only_whatever_mode_upstream_gave_it(tmp_path):
    q = tmp_path / "quarantine"
    src, folder = tmp_path / "loose.xml", tmp_path / "folder.xml"
    src.write_bytes(b"<personal/>")
    src.chmod(0o644)
    folder.mkdir(mode=0o755)
    claim.quarantine(src, q, "DSG", "loose.xml", "XML_MALFORMED", "bad")
    claim.quarantine(folder, q, "DSG", "folder.xml", "NOT_A_FILE", "a folder")
    assert stat.S_IMODE((q / "DSG" / "loose.xml").stat().st_mode) == 0o600
    assert stat.S_IMODE((q / "DSG" / "folder.xml").stat().st_mode) == 0o700


def test_a_quarantine_interrupted_after_its_reason_is_completed_in_place(tmp_path):
    q = tmp_path / "quarantine"
    (q / "GRO").mkdir(parents=True)
    # the crash came after the .reason was written, before the move
    (q / "GRO" / "x.csv.reason").write_text("CSV_SHAPE: bad\nfile: x.csv\n", encoding="utf-8")
    src = tmp_path / "x.csv"
    src.write_bytes(b"material")
    assert claim.quarantine(src, q, "GRO", "x.csv", "CSV_SHAPE", "bad") == q / "GRO" / "x.csv"
    assert sorted(p.name for p in (q / "GRO").iterdir()) == ["x.csv", "x.csv.reason"]


def test_a_name_that_cannot_be_stored_goes_under_a_technical_name_with_its_hash(tmp_path):
    q = tmp_path / "quarantine"
    src = tmp_path / "in"
    src.write_bytes(b"x")
    dst = claim.quarantine(src, q, "GRO", LATIN1, "NAME_ENCODING", "not UTF-8")
    assert dst.name == f"unnamed-{name_digest(LATIN1)[:16]}"
    reason = (q / "GRO" / f"{dst.name}.reason").read_text(encoding="utf-8")
    assert name_digest(LATIN1) in reason and "caf" not in reason


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", "\uff1d1+1"])
def test_report_cells_that_start_like_formulas_are_neutralised(value):
    assert rejects.neutralise(value) == "'" + value
    [row] = list(csv.reader(io.StringIO(rejects.render([("GRO", "", value, 3, "X", value)]).decode()),
                            delimiter=";"))[1:]
    assert row[2] == row[5] == "'" + value.replace("\r", "\n")


@pytest.mark.parametrize("value", ["GRO_20261123.csv", "a=b", "", None, 12, "NIR: control key does not match"])
def test_ordinary_report_cells_are_unchanged(value):
    assert rejects.neutralise(value) == ("" if value is None else str(value))


def test_the_drop_listing_hands_a_name_that_is_not_utf8_over_as_unusable(tmp_path):
    bad = os.fsdecode(b"\xe9.xml.p7m")
    (tmp_path / bad).write_bytes(b"x")
    (tmp_path / f"{bad}.sha256").write_bytes(b"y")
    (tmp_path / os.fsdecode(b"\xe9\xe9.xml.p7m")).write_bytes(b"no marker yet: not ready")
    (tmp_path / "DSG_035_20261123_000001.xml.p7m").write_bytes(b"z")
    (tmp_path / "DSG_035_20261123_000001.xml.p7m.sha256").write_bytes(b"w")
    reader = LocalDropReader(tmp_path)
    ready = reader.list_ready()
    assert [(f.name, f.unusable) for f in ready] == [
        ("DSG_035_20261123_000001.xml.p7m", ""), (stand_in(bad), "NAME_ENCODING")]
    assert not is_safe_name(bad)
    reader.remove(ready[1])  # retention, by its stand-in name
    assert not os.path.lexists(tmp_path / bad) and not os.path.lexists(tmp_path / f"{bad}.sha256")


def test_the_purge_removes_what_was_set_aside_as_it_was(tmp_path):
    """A folder, a link and a FIFO quarantined under an input's name go with their `.reason`."""
    from datetime import date

    from flux_pmi.jobs.retention import _purge_quarantine

    q = tmp_path / "quarantine"
    for name, make in (("d.xml", lambda p: (p.mkdir(), (p / "x").write_bytes(b"personal"))),
                       ("l.csv", lambda p: p.symlink_to(tmp_path / "target")),
                       ("p.csv", os.mkfifo), ("f.csv", lambda p: p.write_bytes(b"personal"))):
        src = tmp_path / name
        make(src)
        claim.quarantine(src, q, "GRO", name, "NOT_A_FILE", "test")
    (tmp_path / "target").write_bytes(b"kept")
    assert _purge_quarantine(q, date(2100, 1, 1)) == 4
    assert list((q / "GRO").iterdir()) == [] and (tmp_path / "target").read_bytes() == b"kept"


def test_a_name_holding_a_nir_or_a_phone_is_set_aside_under_its_hash(tmp_path):
    """Its name is personal data: never in the trace, a log, a report, or quarantine/'s own names."""
    inbox = tmp_path / "inbox"
    (inbox / "DSG").mkdir(parents=True)
    personal = "HAMIDOU_Celine_296039205083231_0601020304.xml"
    (inbox / "DSG" / personal).write_bytes(b"<x/>")
    (inbox / "DSG" / "DGESDSGA_20261119_0001.xml").write_bytes(b"<x/>")
    assert [p.name for p in claim.candidates(inbox, "DSG")] == ["DGESDSGA_20261119_0001.xml"]
    (aside,) = claim.screen(inbox, tmp_path / "quarantine", "DSG")
    digest = name_digest(personal)
    assert (aside.code, aside.name) == ("NAME_PERSONAL", f"unnamed-{digest[:16]}")
    assert aside.path is not None and aside.path.name == f"unnamed-{digest[:16]}"
    note = aside.path.with_name(aside.path.name + claim.REASON_SUFFIX).read_text()
    assert note.startswith("NAME_PERSONAL: ") and digest in note and "2960392" not in note and "HAMIDOU" not in note
    assert not (inbox / "DSG" / personal).exists()
    assert [p.name for p in (tmp_path / "quarantine").rglob("*") if "2960392" in p.name or "HAMIDOU" in p.name] == []


def test_names_that_reorder_or_break_a_line_on_screen_are_not_storable():
    for name in ("invoice\u202egpj.xml", "a\x85b.xml", "a\u2028b.xml", "a\u2066b.xml", "a\u200fb.xml"):
        assert not storable_name(name), repr(name)
    assert storable_name("Déclaration n°2 – été.xml")  # letters, punctuation and dashes are fine


def test_a_name_kept_out_only_by_a_control_character_is_escaped_in_its_reason(tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "GRO").mkdir(parents=True)
    (inbox / "GRO" / "CRI_035\t20261120.xml").write_bytes(b"<x/>")
    (aside,) = claim.screen(inbox, tmp_path / "quarantine", "GRO")
    assert aside.code == "NAME_UNSAFE" and aside.name.startswith("unnamed-")
    note = aside.path.with_name(aside.path.name + claim.REASON_SUFFIX).read_text()
    assert "escaped: CRI_035\\t20261120.xml" in note  # the operator can tell which file it was


def test_numbers_that_only_look_like_a_nir_or_a_phone_keep_their_file_in_the_night(tmp_path):
    """A date and a sequence run together, a 10-digit counter: their key or their sense is not a NIR's."""
    inbox = tmp_path / "inbox"
    (inbox / "DSG").mkdir(parents=True)
    names = ["DGESDSGA_2026112000001.xml", "DGESDSGA_202611201234567.xml", "DSG_0100000001.xml"]
    for name in names:
        (inbox / "DSG" / name).write_bytes(b"<x/>")
    assert claim.screen(inbox, tmp_path / "quarantine", "DSG") == []
    assert sorted(p.name for p in claim.candidates(inbox, "DSG")) == sorted(names)
