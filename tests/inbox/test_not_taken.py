"""What the inbox holds that no night takes: named with a reason, never moved, never silent.

A declaration dropped in the wrong flow folder, or under a name flux-pmi does not take, used
to stay in the inbox with no trace anywhere; it would miss its legal deadline unseen. A writer's
temporary (hidden, `.tmp`, `.part`) is the only thing left out on purpose.
"""

from __future__ import annotations

import os

import pytest

from flux_pmi.inbox import claim


@pytest.fixture
def inbox(tmp_path):
    root = tmp_path / "inbox"
    for flow in ("DSG", "GRO", "SGR"):
        (root / flow).mkdir(parents=True)
    return root


def reasons(inbox, flow):
    return {e.name: e.reason for e in claim.not_taken(inbox, flow)}


def test_files_of_another_flow_are_named_with_the_flow_they_look_like(inbox):
    (inbox / "SGR" / "DGESDSGA_20261120_0001.xml").write_bytes(b"<Agregat/>")
    (inbox / "DSG" / "SDP_351_20261120.zip").write_bytes(b"PK")
    (inbox / "DSG" / "DSG.csv").write_bytes(b"a;b")  # DSG takes .xml only
    (inbox / "GRO" / "SDP_671_20261120.ZIP").write_bytes(b"PK")
    assert reasons(inbox, "SGR") == {
        "DGESDSGA_20261120_0001.xml": "not a .zip or .csv for SGR; .xml is for DSG or GRO: the wrong folder?"}
    assert reasons(inbox, "DSG") == {"SDP_351_20261120.zip": "not a .xml for DSG; .zip is for SGR: the wrong folder?",
                                     "DSG.csv": "not a .xml for DSG; .csv is for GRO or SGR: the wrong folder?"}
    assert reasons(inbox, "GRO") == {"SDP_671_20261120.ZIP": "not a .xml or .csv for GRO; .zip is for SGR: the wrong"
                                                             " folder?"}


def test_wrong_suffixes_a_trailing_blank_and_a_double_dot_are_reported(inbox):
    folder = inbox / "DSG"
    for name in ("x.xml.gz", "noextension", "trailing.xml ", "..dotdot.xml"):
        (folder / name).write_bytes(b"<Agregat/>")
    assert reasons(inbox, "DSG") == {
        "x.xml.gz": "not a .xml for DSG",
        "noextension": "not a .xml for DSG",
        "trailing.xml ": "a blank after .xml at the end of the name",
        "..dotdot.xml": "a name starting with '..': hidden, never taken",
    }


def test_a_folder_holding_anything_and_a_link_are_reported_an_empty_folder_is_not(inbox):
    (inbox / "DSG" / "plainsub").mkdir()
    (inbox / "DSG" / "plainsub" / "DGESDSGA_20261120_0002.xml").write_bytes(b"<Agregat/>")
    (inbox / "DSG" / "empty").mkdir()
    (inbox / "DSG" / "link").symlink_to(inbox / "DSG" / "plainsub")
    assert reasons(inbox, "DSG") == {"plainsub": "a folder: nothing in a sub-folder is taken",
                                     "link": "a symbolic link: links in the inbox are never followed"}


def test_a_writers_temporaries_are_ignored_whatever_their_case(inbox):
    folder = inbox / "GRO"
    for name in (".hidden.xml", ".CRI_351.xml.swp", "CRI_351.xml.tmp", "CRI_671.XML.PART", "x.Tmp"):
        (folder / name).write_bytes(b"half")
    assert claim.not_taken(inbox, "GRO") == []


def test_what_is_taken_or_set_aside_is_not_reported_again(inbox):
    folder = inbox / "GRO"
    (folder / "CRI_351_20261120.xml").write_bytes(b"<Racine/>")  # a candidate
    os.mkfifo(folder / "fifo.csv")  # unfit: the screen sets it aside
    (folder / "notes.txt").write_bytes(b"?")
    assert [p.name for p in claim.candidates(inbox, "GRO")] == ["CRI_351_20261120.xml"]
    assert [name for _p, name, *_ in claim.unfit(inbox, "GRO")] == ["fifo.csv"]
    assert list(reasons(inbox, "GRO")) == ["notes.txt"]


def test_scans_an_sgr_index_names_go_with_it_a_pdf_nobody_names_is_reported(inbox):
    folder = inbox / "SGR"
    (folder / "scans").mkdir()
    (folder / "scans" / "a.pdf").write_bytes(b"%PDF-")
    (folder / "b.pdf").write_bytes(b"%PDF-")
    (folder / "orphan.pdf").write_bytes(b"%PDF-")
    (folder / "index.csv").write_bytes(b"NUMCOM;FICHIER\n35238;scans/a.pdf\n35238;b.pdf\n")
    assert reasons(inbox, "SGR") == {"orphan.pdf": "a PDF no SGR index in the folder names"}
    (folder / "index.csv").unlink()  # once its index is claimed, what it named is left behind
    assert sorted(reasons(inbox, "SGR")) == ["b.pdf", "orphan.pdf", "scans"]


def test_a_name_that_cannot_be_written_down_is_reported_under_a_technical_one(inbox):
    raw = os.fsdecode(b"d\xe9claration")  # not UTF-8, and no extension
    (inbox / "DSG" / raw).write_bytes(b"<Agregat/>")
    [entry] = claim.not_taken(inbox, "DSG")
    assert entry.name.startswith("unnamed-") and entry.reason == "not a .xml for DSG"


def test_nothing_moves_and_a_missing_folder_has_nothing_to_say(inbox, tmp_path):
    (inbox / "SGR" / "x.xml").write_bytes(b"<Agregat/>")
    before = sorted(os.listdir(inbox / "SGR"))
    assert claim.not_taken(inbox, "SGR") and sorted(os.listdir(inbox / "SGR")) == before
    assert claim.not_taken(tmp_path / "nowhere", "DSG") == []
