"""Hostile input that used to stop whole nights (issue 12), through the real CLI.

Each class has its own test on a small demo install, then ONE night holds one of each: it
must deliver every valid record of the day (the record fingerprints of a clean night of the
same seeded demo), exit 5 (something was set aside), crash nowhere, and a rerun is clean.

The inbox holds the real upstream shapes (DGE envelopes, Cristal XML, SDP zips). The classes
about the legacy SGR CSV index and the scans it names beside it (an over-long FICHIER path, a
scan path through a linked folder, a scan the service user cannot read) run on that same inbox
plus one legacy SGR index of another seed with its scans: the "mixed" inbox, whose clean night
gives its own fingerprints.

"Cannot read" is made honest for a test that runs as root: the CLI is started by
`setpriv` without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so the kernel applies the
file modes to it like to any service user, and `open()` of a mode-000 file fails with
EACCES (a real PermissionError, not a simulated one). The FIFO, the folder under an
input's name and the dangling link are refused to root as well.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import random
import sqlite3
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from lxml import etree
from support import BUSINESS_DATE, NOW, SMALL, make_demo, open_delivered, record_fingerprints, run_cli

from flux_pmi.core.fsutil import name_digest
from flux_pmi.demo import generate as g
from flux_pmi.demo.setup import parse_departments
from flux_pmi.seal import certs, cms

DAY = BUSINESS_DATE.isoformat()
# Root, minus the two capabilities that let it read whatever the file modes say.
UNPRIVILEGED = ("setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search")


def cli(*args: str, unprivileged: bool = False) -> subprocess.CompletedProcess:
    if not unprivileged:
        return run_cli(*args)
    env = {**os.environ, "FLUX_PMI_NOW": NOW.isoformat(), "FLUX_PMI_LOG_FORMAT": "json"}
    return subprocess.run([*UNPRIVILEGED, sys.executable, "-m", "flux_pmi.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300, check=False)


def night(root: Path, *, unprivileged: bool = False) -> subprocess.CompletedProcess:
    proc = cli("run", "--config", str(root / "flux-pmi.toml"), "--date", DAY, unprivileged=unprivileged)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode != 1, proc.stderr[-3000:]
    return proc


def delivered(root: Path) -> Counter:
    return record_fingerprints(open_delivered(root))


def quarantined(root: Path, flow: str) -> dict[str, bytes]:
    folder = root / "quarantine" / flow
    return {p.name: (p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
            for p in sorted(folder.iterdir())} if folder.is_dir() else {}


def anomalies(root: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(root / "trace" / "flux-pmi.sqlite") as db:
        return db.execute("SELECT kind, file FROM anomalies ORDER BY id").fetchall()


def rejects(proc: subprocess.CompletedProcess) -> list[dict[str, str]]:
    line = next(x for x in proc.stdout.splitlines() if x.startswith("rejects report: "))
    with open(line.removeprefix("rejects report: "), encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter=";"))


LEGACY_SEED = 8  # other people than the real shapes' seed 7: the legacy index adds records, never repeats them


def add_legacy_sgr(root: Path) -> None:
    """One legacy SGR CSV index and its scans (another seed), dropped beside the day's SDP zips."""
    other = root.parent / "legacy-inbox"
    g.generate_inbox(other, business_date=BUSINESS_DATE, departments=parse_departments(SMALL), seed=LEGACY_SEED,
                     shapes="legacy")
    src = other / "SGR"
    for path in sorted(src.rglob("*")):
        dst = root / "inbox" / "SGR" / path.relative_to(src)
        if path.is_dir():
            dst.mkdir(mode=0o700, exist_ok=True)
        else:
            dst.write_bytes(path.read_bytes())
            dst.chmod(0o600)
    assert (root / "inbox" / "SGR" / SGR_INDEX).is_file() and (root / "inbox" / "SGR" / LOCKED_SCAN).is_file()


def clean_night(root: Path) -> Counter:
    assert night(root).returncode == 0
    fps = delivered(root)
    assert sum(fps.values()) > 50 and max(fps.values()) == 1
    return fps


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Counter:
    """Every valid record of the seeded demo day, from a night without hostile input."""
    root = tmp_path_factory.mktemp("clean") / "demo"
    make_demo(root)
    return clean_night(root)


@pytest.fixture(scope="module")
def clean_mixed(tmp_path_factory, clean) -> Counter:
    """The same for the mixed inbox: the real shapes' records and the legacy index's."""
    root = tmp_path_factory.mktemp("clean-mixed") / "demo"
    make_demo(root)
    add_legacy_sgr(root)
    fps = clean_night(root)
    legacy = fps - clean
    assert fps - legacy == clean and sum(legacy.values()) > 5  # the legacy index's records are delivered too
    assert {k[0] for k in legacy} == {"SGR"}
    return fps


@pytest.fixture
def demo(tmp_path) -> Path:
    root = tmp_path / "demo"
    make_demo(root)
    return root


@pytest.fixture
def mixed(demo) -> Path:
    add_legacy_sgr(demo)
    return demo


def rerun_is_clean(root: Path, before: Counter, *, unprivileged: bool = False) -> None:
    again = night(root, unprivileged=unprivileged)
    assert again.returncode == 0, again.stdout
    assert "quarantined:" not in again.stdout
    assert delivered(root) == before


# -- hostile material -------------------------------------------------------------------------------

GRO_FILE = "CRI_351_20261120.xml"  # a Caf's Cristal extract of the day (D-1 of the business date)
SGR_INDEX = "SGR_20261123_index.csv"  # the legacy index of the mixed inbox
LOCKED_SCAN = "scans/20261123/000001.pdf"  # a scan that index names
LATIN1_NAME = b"CRI_\xe9t\xe9_HELENE.xml"  # a Latin-1 name: not UTF-8, and it could name a person
LONG_NAME = "D" * 251 + ".xml"  # 255 bytes: fits the inbox, not with `.reason` added
NOT_FILES = {"GRO": "fifo.xml", "DSG": "folder.xml", "SGR": "dangling.zip"}
FORMULA_NAMES = ("=1+1.xml", "+SUM(A1).xml", "-2+3.xml", "@SUM(A1).xml")


def put_latin1_name(root: Path) -> tuple[str, bytes]:
    """The day's extract again, under a name that is not UTF-8. Returns its stand-in name and its bytes."""
    data = (root / "inbox" / "GRO" / GRO_FILE).read_bytes() + b"\r\n"
    (root / "inbox" / "GRO" / os.fsdecode(LATIN1_NAME)).write_bytes(data)
    return f"unnamed-{hashlib.sha256(LATIN1_NAME).hexdigest()[:16]}", data


def put_long_name(root: Path) -> None:
    (root / "inbox" / "DSG" / LONG_NAME).write_bytes(b"<broken")


def put_not_files(root: Path) -> None:
    os.mkfifo(root / "inbox" / "GRO" / NOT_FILES["GRO"])
    (root / "inbox" / "DSG" / NOT_FILES["DSG"]).mkdir()
    (root / "inbox" / "SGR" / NOT_FILES["SGR"]).symlink_to(root / "nowhere.csv")


def append_index_rows(root: Path, *fichiers: str) -> None:
    index = root / "inbox" / "SGR" / SGR_INDEX
    rows = "".join(f"2026-11-18;351;3498826{n:08d};35238;2026-11-18;{f}\r\n" for n, f in enumerate(fichiers))
    index.write_bytes(index.read_bytes() + rows.encode("iso-8859-1"))


def put_long_fichier(root: Path) -> None:
    append_index_rows(root, "scans/" + "a" * 300 + ".pdf", "/".join(["b" * 200] * 25) + "/x.pdf")


def put_linked_folders(root: Path) -> Path:
    """Two folders of the inbox that are links to a folder outside it. Returns the outside PDF."""
    outside = root / "elsewhere"
    outside.mkdir()
    pdf = outside / "secret.pdf"
    pdf.write_bytes(g.one_page_pdf(random.Random("outside"), 2000))
    (root / "inbox" / "SGR" / "linked").symlink_to(outside)
    (root / "inbox" / "SGR" / "scans" / "linked").symlink_to(outside)
    append_index_rows(root, "linked/secret.pdf", "scans/linked/secret.pdf")
    return pdf


def put_second_bad_file(root: Path) -> tuple[bytes, bytes]:
    """An earlier night's quarantined `broken.xml`, and a new, different `broken.xml` in the inbox."""
    earlier, now = b"<earlier", b"<this night"
    (root / "quarantine" / "DSG").mkdir(parents=True)
    (root / "quarantine" / "DSG" / "broken.xml").write_bytes(earlier)
    (root / "quarantine" / "DSG" / "broken.xml.reason").write_text("XML_MALFORMED: earlier\n")
    (root / "inbox" / "DSG" / "broken.xml").write_bytes(now)
    return earlier, now


def put_formula_names(root: Path) -> None:
    """Small Cristal files named like formulas, each holding the extract's first record, rejected (QUAL XX)."""
    tree = etree.parse(str(root / "inbox" / "GRO" / GRO_FILE))
    cases = tree.getroot().findall("InfoSuiviGrossessePMI")
    assert len(cases) > 1
    for extra in [*cases[1:], *tree.getroot().findall("Anomalie")]:
        tree.getroot().remove(extra)
    for count, n in (("NBTOTDOSPMITRANSM", "1"), ("NBTOTDOSPMITRANSMANO", "0")):  # the trailer counts the cases
        for element in tree.getroot().iter(count):
            element.text = n
    (qual,) = cases[0].iter("QUAL")
    qual.text = "XX"
    data = etree.tostring(tree, xml_declaration=True, encoding="UTF-8", standalone=True)
    for i, name in enumerate(FORMULA_NAMES):  # each its own bytes: one file under two names is set aside
        (root / "inbox" / "GRO" / name).write_bytes(data + f"<!-- {i} -->\n".encode())


SAMPLE_DSG = Path(__file__).resolve().parents[1] / "data" / "hubee" / "DSG.xml"


def put_bad_fields(root: Path) -> None:
    """A DGE envelope (HubEE's sample, two declarations) whose fields are bad, not its frame: a 1 MB
    street name, and a shape-valid commune that INSEE's list does not hold. Each rejects its record."""
    sample = SAMPLE_DSG.read_bytes()
    start, end = sample.index(b"    <ns3:Document>"), sample.index(b"</Agregat>")
    document = sample[start:end]
    long_street = document.replace(b"DU CLOCHER", b"X" * 1_000_000).replace(b"d88000250510001320064",
                                                                            b"d88000250510001329901")
    no_commune = document.replace(b"<beneficiaire:CodeInsee>08435", b"<beneficiaire:CodeInsee>35999")
    no_commune = no_commune.replace(b"d88000250510001320064", b"d88000250510001329902")
    data = sample[:start].replace(b"<ns3:NbDoc>1<", b"<ns3:NbDoc>2<") + long_street + no_commune + sample[end:]
    (root / "inbox" / "DSG" / "fields.xml").write_bytes(data)


def lock_files(root: Path) -> bytes:
    """A DSG file and a legacy index's scan the service user cannot read. Returns the locked scan's bytes."""
    dsg = root / "inbox" / "DSG" / "locked.xml"
    dsg.write_bytes(b"<whatever")
    dsg.chmod(0)
    scan = root / "inbox" / "SGR" / LOCKED_SCAN
    data = scan.read_bytes()
    scan.chmod(0)
    return data


def without_scan(fps: Counter, scan: bytes) -> Counter:
    sha = hashlib.sha256(scan).hexdigest()
    out = Counter({k: v for k, v in fps.items() if not (k[0] == "SGR" and k[2] == sha)})
    assert sum(out.values()) == sum(fps.values()) - 1
    return out


def delivered_scans(root: Path) -> set[str]:
    out = set()
    for name, data in open_delivered(root).items():
        if name.split("/")[1].startswith("SGR"):
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                out |= {hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist() if n.endswith(".pdf")}
    return out


# -- one class at a time ----------------------------------------------------------------------------


def test_a_name_that_is_not_utf8_is_quarantined_under_a_technical_name(demo, clean):
    stand_in, data = put_latin1_name(demo)
    proc = night(demo)
    assert proc.returncode == 5, proc.stdout
    assert f"quarantined: GRO/{stand_in} (NAME_ENCODING)" in proc.stdout
    kept = quarantined(demo, "GRO")
    assert set(kept) == {stand_in, f"{stand_in}.reason"}
    assert kept[stand_in] == data
    reason = kept[f"{stand_in}.reason"].decode("utf-8")
    assert reason.startswith("NAME_ENCODING:") and hashlib.sha256(LATIN1_NAME).hexdigest() in reason
    # The raw name (it could hold a person's name) is nowhere: not in the reason, the trace or the logs.
    trace = (demo / "trace" / "flux-pmi.sqlite").read_bytes().decode("latin-1")
    for text in (reason, proc.stdout, proc.stderr, trace):
        assert "HELENE" not in text
    assert ("quarantined-input", stand_in) in anomalies(demo)
    assert delivered(demo) == clean
    rerun_is_clean(demo, clean)


def test_a_name_too_long_for_a_suffix_is_quarantined_then_set_aside_as_duplicate(demo, clean):
    put_long_name(demo)
    consumed = (demo / "inbox" / "GRO" / GRO_FILE).read_bytes()  # consumed tonight (and kept only encrypted)
    proc = night(demo)
    assert proc.returncode == 5, proc.stdout
    kept = quarantined(demo, "DSG")
    stand_in = f"unnamed-{name_digest(LONG_NAME)[:16]}"
    assert kept[stand_in] == b"<broken" and LONG_NAME in kept[f"{stand_in}.reason"].decode()
    # The next day, the consumed extract dropped again under a 255-byte name: a duplicate, set aside.
    long_gro = "G" * 251 + ".xml"
    (demo / "inbox" / "GRO" / long_gro).write_bytes(consumed)
    again = night(demo)
    assert again.returncode == 0, again.stdout
    dups = list((demo / "consumed" / "duplicates" / "GRO").iterdir())
    # Kept as evidence under a name that fits, encrypted at once for the archive certificate.
    assert len(dups) == 1 and dups[0].name.endswith(".p7m") and len(dups[0].name.encode()) <= 255
    pki = demo / "pki"
    plain = cms.decrypt_envelope(dups[0].read_bytes(), cert=certs.load_certificate(pki / "archive.crt"),
                                 key=certs.load_private_key(pki / "archive.key", None), what="duplicate")
    assert plain == consumed
    assert delivered(demo) == clean


def test_what_root_cannot_read_either_is_quarantined(demo, clean):
    """A FIFO (open would block), a folder under an input's name, a dangling link."""
    put_not_files(demo)
    proc = night(demo)
    assert proc.returncode == 5, proc.stdout
    for flow, name in NOT_FILES.items():
        assert f"quarantined: {flow}/{name} (NOT_A_FILE)" in proc.stdout
        assert {name, f"{name}.reason"} <= set(quarantined(demo, flow))
        assert not os.path.lexists(demo / "inbox" / flow / name)
    assert delivered(demo) == clean
    rerun_is_clean(demo, clean)


def test_what_the_service_user_cannot_read_is_quarantined(mixed, clean_mixed):
    """Mode 000, read by a process the file modes apply to (see the module docstring)."""
    demo = mixed
    scan = lock_files(demo)
    proc = night(demo, unprivileged=True)
    assert proc.returncode == 5, proc.stdout
    assert "quarantined: DSG/locked.xml (UNREADABLE)" in proc.stdout
    assert "quarantined: SGR/000001.pdf (SCAN_UNREADABLE)" in proc.stdout
    assert "Permission denied" in quarantined(demo, "DSG")["locked.xml.reason"].decode()
    # The scan's record is rejected (its scan is not there); every other record is delivered.
    assert any(r["code"] == "PDF_MISSING" and r["file"] == SGR_INDEX for r in rejects(proc))
    assert delivered(demo) == without_scan(clean_mixed, scan)
    rerun_is_clean(demo, without_scan(clean_mixed, scan), unprivileged=True)


def test_an_index_cell_naming_an_over_long_path_rejects_its_record_only(mixed, clean_mixed):
    demo = mixed
    put_long_fichier(demo)
    proc = night(demo)
    assert proc.returncode == 0, proc.stdout
    long_rows = [r for r in rejects(proc) if r["file"] == SGR_INDEX and r["code"] == "PDF_MISSING"]
    assert len(long_rows) == 1 + 2  # the demo's own missing scan, and the two over-long paths
    assert delivered(demo) == clean_mixed
    rerun_is_clean(demo, clean_mixed)


def test_a_scan_path_through_a_linked_folder_is_not_followed(mixed, clean_mixed):
    demo = mixed
    outside = put_linked_folders(demo)
    data = outside.read_bytes()
    proc = night(demo)
    assert proc.returncode == 0, proc.stdout
    assert outside.read_bytes() == data  # not moved out of its folder
    assert hashlib.sha256(data).hexdigest() not in delivered_scans(demo)
    # The legacy index's own missing scan and the two linked paths (the SDP zips have their own PDF_MISSING).
    assert sum(r["code"] == "PDF_MISSING" and r["file"] == SGR_INDEX for r in rejects(proc)) == 1 + 2
    assert delivered(demo) == clean_mixed


def test_a_second_bad_file_under_the_same_name_does_not_replace_the_first(demo, clean):
    earlier, now = put_second_bad_file(demo)
    proc = night(demo)
    assert proc.returncode == 5, proc.stdout
    kept = quarantined(demo, "DSG")
    assert kept["broken.xml"] == earlier and kept["broken.xml.reason"] == b"XML_MALFORMED: earlier\n"
    assert kept["broken.xml.2"] == now and kept["broken.xml.2.reason"].startswith(b"XML_MALFORMED")
    assert delivered(demo) == clean


def test_report_cells_that_start_like_formulas_are_neutralised(demo, clean):
    put_formula_names(demo)
    proc = night(demo)
    assert proc.returncode == 0, proc.stdout
    cells = [c for r in rejects(proc) for c in r.values()]
    assert {r["file"] for r in rejects(proc) if r["code"] == "CODE_UNKNOWN"} >= {"'" + n for n in FORMULA_NAMES}
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert delivered(demo) == clean


def test_receive_sets_aside_a_name_that_is_not_utf8_and_ingests_the_rest(demo):
    assert night(demo).returncode == 0
    drop = demo / "drop" / "035"
    good = sorted(p.name for p in drop.glob("*.p7m"))
    raw = b"A\xe9.xml.p7m"  # sorts before every technical name
    bad = os.fsdecode(raw)
    (drop / bad).write_bytes((drop / good[0]).read_bytes())
    (drop / f"{bad}.sha256").write_bytes(hashlib.sha256((drop / bad).read_bytes()).hexdigest().encode() + b"\n")
    stand_in = f"unnamed-{hashlib.sha256(raw).hexdigest()[:16]}"
    args = ("receive", "--config-dir", str(demo / "receive"), "--once")
    proc = cli(*args)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 5, proc.stdout
    assert f"refused: {stand_in} (NAME)" in proc.stdout
    assert f"035: {len(good)} ingested, 1 refused" in proc.stdout
    assert os.path.lexists(drop / bad)  # left where the sender put it, for the sender to see
    again = cli(*args)
    assert again.returncode == 0 and "0 refused" in again.stdout, again.stdout


# -- one night with one of each ---------------------------------------------------------------------


def test_one_night_with_every_class_delivers_every_valid_record(mixed, clean_mixed):
    """The real shapes with one of each, plus the legacy index of the mixed inbox and its own classes."""
    demo = mixed
    latin1, _ = put_latin1_name(demo)
    put_long_name(demo)
    put_not_files(demo)
    put_long_fichier(demo)
    outside = put_linked_folders(demo)
    earlier, now = put_second_bad_file(demo)
    put_formula_names(demo)
    put_bad_fields(demo)
    scan = lock_files(demo)
    outside_bytes = outside.read_bytes()

    proc = night(demo, unprivileged=True)
    assert proc.returncode == 5, proc.stdout
    codes = {r["code"] for r in rejects(proc) if r["file"] == "fields.xml"}
    assert codes == {"FIELD_TOO_LONG", "COMMUNE_UNKNOWN"}  # record by record: the file is not quarantined
    expected = without_scan(clean_mixed, scan)
    assert delivered(demo) == expected
    set_aside = {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("quarantined: ")}
    assert set_aside == {
        f"GRO/{latin1}", f"DSG/{LONG_NAME}", "DSG/broken.xml", "DSG/locked.xml", "SGR/000001.pdf",
        *(f"{flow}/{name}" for flow, name in NOT_FILES.items()),
    }
    assert quarantined(demo, "DSG")["broken.xml"] == earlier and quarantined(demo, "DSG")["broken.xml.2"] == now
    assert outside.read_bytes() == outside_bytes
    assert not [c for r in rejects(proc) for c in r.values() if c[:1] in ("=", "+", "-", "@")]

    rerun_is_clean(demo, expected, unprivileged=True)


# -- the table in docs/reliability.md ---------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BEGIN, END = "<!-- night-classes:begin -->", "<!-- night-classes:end -->"
# (class, how the test makes it, what the night does now, test)
CLASSES = [
    ("file name not valid UTF-8", "Latin-1 bytes in a GRO name",
     "quarantined `NAME_ENCODING` as `unnamed-<hash>`; the `.reason` holds the hash of the name's bytes, "
     "never the name", test_a_name_that_is_not_utf8_is_quarantined_under_a_technical_name),
    ("name fits the inbox, not with a suffix", "255-byte names (DSG malformed; GRO duplicate)",
     "quarantined / set aside as duplicate under a technical name; the `.reason` names the file",
     test_a_name_too_long_for_a_suffix_is_quarantined_then_set_aside_as_duplicate),
    ("not a file", "a FIFO, a folder named `x.xml`, a dangling link (refused to root too)",
     "quarantined `NOT_A_FILE`, moved as they are (a link is never followed)",
     test_what_root_cannot_read_either_is_quarantined),
    ("file or scan the service user cannot read", "mode 000 (a DSG file; a scan a legacy SGR index names), CLI run without CAP_DAC_OVERRIDE (`setpriv`)",
     "quarantined `UNREADABLE` / `SCAN_UNREADABLE`; the scan's record rejected `PDF_MISSING`",
     test_what_the_service_user_cannot_read_is_quarantined),
    ("index cell naming an over-long path", "legacy SGR index: a 300-byte component; a 5,000-byte path",
     "record rejected `PDF_MISSING`", test_an_index_cell_naming_an_over_long_path_rejects_its_record_only),
    ("folder of the inbox that is a link", "`SGR/linked` and `SGR/scans/linked` → a folder outside, named by a legacy SGR index",
     "record rejected `PDF_MISSING`; the outside PDF is neither moved nor sent",
     test_a_scan_path_through_a_linked_folder_is_not_followed),
    ("second bad file under the same name", "`broken.xml` again, `quarantine/DSG/broken.xml` already there",
     "kept as `broken.xml.2` with its own `.reason`; the first is untouched",
     test_a_second_bad_file_under_the_same_name_does_not_replace_the_first),
    ("values that start like formulas", "GRO files named `=1+1.xml`, `+SUM(A1).xml`, `-2+3.xml`, `@SUM(A1).xml`",
     "every rejects-report cell starting with `= + - @`, tab or CR is prefixed with `'`",
     test_report_cells_that_start_like_formulas_are_neutralised),
    ("receive: drop name not valid UTF-8", "a `.p7m` + `.sha256` named in Latin-1, sorted first",
     "refused `NAME` under `unnamed-<hash>`, unread, no ack; the other files are ingested; exit 5",
     test_receive_sets_aside_a_name_that_is_not_utf8_and_ingests_the_rest),
    ("one night with one of each", "all of the above (but receive) in one inbox of real shapes plus a legacy SGR index, run without DAC override",
     "every valid record delivered, exit 5, no traceback; the rerun exits 0 and sends nothing new",
     test_one_night_with_every_class_delivers_every_valid_record),
]


def classes_table() -> str:
    lines = ["| class | made by | outcome | test |", "|---|---|---|---|"]
    lines += [f"| {c} | {how} | {what} | `{t.__name__}` |" for c, how, what, t in CLASSES]
    return "\n".join(lines) + "\n"


def test_the_doc_table_lists_every_class_and_its_test():
    tests = {n for n, v in globals().items() if n.startswith("test_") and callable(v)} - {
        "test_the_doc_table_lists_every_class_and_its_test"}
    assert {t.__name__ for *_, t in CLASSES} == tests
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    if os.environ.get("FLUX_PMI_WRITE_DOCS") == "1":
        DOC.write_text(f"{head}{BEGIN}\n{classes_table()}{END}{tail}", encoding="utf-8")
    else:
        assert f"{BEGIN}\n{classes_table()}{END}" in text, "docs/reliability.md is stale: FLUX_PMI_WRITE_DOCS=1"
