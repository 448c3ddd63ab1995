"""What `status` counts in quarantine/: a file with its .reason, by flow and code, and nothing else."""

import pytest

from flux_pmi.core.errors import StorageError
from flux_pmi.inbox.claim import quarantine
from flux_pmi.inbox.quarantined import waiting


def test_counts_files_set_aside_with_their_reason_by_flow_and_code(tmp_path):
    inbox, root = tmp_path / "inbox", tmp_path / "quarantine"
    (inbox / "DSG").mkdir(parents=True)
    for name, code in (("a.xml", "XML_MALFORMED"), ("b.xml", "XML_DTD"), ("c.xml", "XML_MALFORMED")):
        (inbox / "DSG" / name).write_bytes(b"<")
        quarantine(inbox / "DSG" / name, root, "DSG", name, code, "why")
    (inbox / "DSG" / "a.xml").write_bytes(b"<")  # the same name again: kept as a.xml.2
    quarantine(inbox / "DSG" / "a.xml", root, "DSG", "a.xml", "XML_ENCODING", "why")
    # a .reason alone (the file was taken away, or a crash came before the move) is not a file waiting
    (root / "DSG" / "gone.xml.reason").write_text("XML_MALFORMED: why\nfile: gone.xml\n")
    # a .reason that is not ours says UNKNOWN rather than anything it holds
    (root / "DSG" / "odd.xml").write_bytes(b"x")
    (root / "DSG" / "odd.xml.reason").write_text("Mme Dupont 2860599123456\n")
    got = waiting(root, ["DSG", "SGR", "GRO"])
    assert got == {"DSG": {"XML_MALFORMED": 2, "XML_DTD": 1, "XML_ENCODING": 1, "UNKNOWN": 1}}
    assert waiting(tmp_path / "nowhere", ["DSG"]) == {}


def test_a_quarantine_folder_that_cannot_be_listed_is_a_storage_error(tmp_path):
    root = tmp_path / "quarantine"
    root.mkdir()
    (root / "DSG").symlink_to("DSG")  # a loop: listing it fails with ELOOP, whoever runs the test
    with pytest.raises(StorageError, match="cannot list the quarantine"):
        waiting(root, ["DSG"])
