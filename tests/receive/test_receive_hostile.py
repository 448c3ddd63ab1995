"""Hostile files at the département's door: each is refused with a KO ack and a log line, and nothing is written.

Every case reaches the layer it attacks: the XML and zip tricks are signed with the real
sender key and sealed for the real département, so they get past the CMS checks and meet
the reader itself; the tampered file gets a fresh `.sha256`, so the tamper meets the CMS
layer and not the digest check.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from support import BUSINESS_DATE, NOW, make_demo, open_delivered

from flux_pmi.config.settings import load
from flux_pmi.core.clock import FixedClock
from flux_pmi.core.errors import ExitCode
from flux_pmi.core.names import ack_name
from flux_pmi.demo.pki import SIGNING, issue_cert, make_ca
from flux_pmi.jobs.night import Night
from flux_pmi.receive.config import load_receive
from flux_pmi.receive.pipeline import Receiver
from flux_pmi.schemas.ack import Ack, parse_ack
from flux_pmi.seal import certs, cms
from flux_pmi.trace.ledger import Ledger

GRO = f"GRO_035_{BUSINESS_DATE:%Y%m%d}_000001.xml.p7m"
SGR = f"SGR_035_{BUSINESS_DATE:%Y%m%d}_000001.zip.p7m"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """One real night for 035 and 02A: genuine sealed files and the PKI that made them."""
    root = tmp_path_factory.mktemp("hostile") / "demo"
    make_demo(root, departments="035,02A")
    report = Night(load(root / "flux-pmi.toml"), clock=FixedClock(NOW), sleep=lambda _s: None).run(
        BUSINESS_DATE
    )
    assert report.exit_code == ExitCode.OK, report.problems
    return root


@pytest.fixture(scope="module")
def plain(site) -> dict[str, bytes]:
    return {
        name.split("/")[1][:3]: data for name, data in open_delivered(site).items() if name.startswith("035/")
    }


def _seal(site: Path, data: bytes, dept: str = "035") -> bytes:
    """Signed by the real sender key, sealed for `dept`: what a compromised upstream could send."""
    pki = site / "pki"
    signed = cms.sign(
        data, certs.load_certificate(pki / "cnaf.crt"), certs.load_private_key(pki / "cnaf.key")
    )
    return cms.envelope(signed, certs.load_certificate(pki / f"{dept}.crt"))


def _receive_config(site: Path, base: Path) -> Path:
    pki = site / "pki"
    cfg = base / "035.toml"
    (base / "drop").mkdir(parents=True)
    cfg.write_text(
        "[department]\n"
        'code = "035"\n'
        f'certificate = "{pki / "035.crt"}"\n'
        f'key = "{pki / "035.key"}"\n'
        f'trusted_senders = ["{pki / "cnaf.crt"}"]\n\n'
        '[drop]\ntype = "local"\npath = "drop"\n\n'
        '[output]\ndir = "out"\n\n'
        '[ledger]\npath = "state/ledger.sqlite"\n'  # outside the output folder: it must stay empty
    )
    return cfg


def refused(
    site: Path, base: Path, name: str, data: bytes, code: str, *, marker: str | None = None
) -> tuple[Ack, dict]:
    """Drop `data` as `name`, receive, and check the refusal everywhere it must show.

    Returns the ack and the log line.
    """
    cfg = _receive_config(site, base)
    drop = base / "drop"
    (drop / name).write_bytes(data)
    digest = marker or hashlib.sha256(data).hexdigest()
    (drop / f"{name}.sha256").write_text(f"{digest}  {name}\n")
    with capture_logs() as logs:
        report = Receiver(load_receive(cfg), clock=FixedClock(NOW)).run_once()
    assert [(o.name, o.status, o.code) for o in report.outcomes] == [(name, "refused", code)]
    assert report.exit_code == ExitCode.QUARANTINED and report.errors == []
    # One clear log line: the file and the code.
    lines = [e for e in logs if e["event"] == "receive.refused"]
    assert len(lines) == 1 and lines[0]["file"] == name and lines[0]["code"] == code
    assert lines[0]["log_level"] == "warning" and lines[0]["department"] == "035"
    # Nothing written: the output folder is empty, not even a staging folder.
    out = load_receive(cfg).output_dir
    assert sorted(p.name for p in out.rglob("*")) == []
    # The ledger remembers the refusal, without content.
    ledger = Ledger(load_receive(cfg).ledger)
    try:
        (row,) = ledger.files()
    finally:
        ledger.close()
    assert (row.name, row.status, row.code, row.output_dir, row.rows) == (name, "refused", code, None, 0)
    # The KO ack, where the sender collects it.
    ack = parse_ack((drop / "acks" / ack_name(name)).read_bytes())
    assert (ack.file_name, ack.status, ack.code) == (name, "KO", code)
    assert ack.sha256 == digest and ack.at == NOW
    # And a second look changes nothing.
    assert Receiver(load_receive(cfg), clock=FixedClock(NOW)).run_once().outcomes == []
    return ack, lines[0]


def _rezip(
    original: bytes,
    *,
    rename: dict[str, str] | None = None,
    replace: dict[str, bytes] | None = None,
    add: dict[str, bytes] | None = None,
) -> bytes:
    rename, replace, add = rename or {}, replace or {}, add or {}
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(original)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = replace.get(info.filename, src.read(info))
            dst.writestr(rename.get(info.filename, info.filename), data)
        for name, data in add.items():
            dst.writestr(name, data)
    return out.getvalue()


def _pdf_member(zip_bytes: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as z:
        return next(n for n in z.namelist() if n.endswith(".pdf"))


# --- the envelope and the signature ---------------------------------------------------------


def test_a_tampered_file_is_refused(site, tmp_path):
    data = bytearray((site / "drop" / "035" / GRO).read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the middle of the encrypted content
    refused(
        site, tmp_path, GRO, bytes(data), "SIGNATURE"
    )  # its .sha256 is recomputed: the tamper reaches CMS


def test_an_unsigned_file_is_refused(site, tmp_path, plain):
    unsigned = cms.envelope(plain["GRO"], certs.load_certificate(site / "pki" / "035.crt"))
    refused(site, tmp_path, GRO, unsigned, "SIGNATURE")


def test_a_signed_but_not_encrypted_file_is_refused(site, tmp_path, plain):
    pki = site / "pki"
    signed = cms.sign(
        plain["GRO"], certs.load_certificate(pki / "cnaf.crt"), certs.load_private_key(pki / "cnaf.key")
    )
    refused(site, tmp_path, GRO, signed, "DECRYPT")


def test_a_file_signed_by_an_untrusted_certificate_is_refused(site, tmp_path, plain):
    impostor_ca = make_ca("Impostor root (test)", now=NOW)
    # Same common name as the real sender: only the pinned certificate itself is trusted.
    impostor = issue_cert(impostor_ca, "CNAF flux-pmi (demo)", now=NOW, key_usage=SIGNING)
    signed = cms.sign(plain["GRO"], impostor.cert, impostor.key)
    sealed = cms.envelope(signed, certs.load_certificate(site / "pki" / "035.crt"))
    _, line = refused(site, tmp_path, GRO, sealed, "SIGNATURE")
    assert "untrusted signer" in line["reason"]


def test_a_self_signed_signer_is_refused(site, tmp_path, plain):
    self_signed = make_ca("CNAF flux-pmi (demo)", now=NOW)
    signed = cms.sign(plain["GRO"], self_signed.cert, self_signed.key)
    refused(
        site,
        tmp_path,
        GRO,
        cms.envelope(signed, certs.load_certificate(site / "pki" / "035.crt")),
        "SIGNATURE",
    )


def test_a_file_encrypted_for_another_departement_is_refused(site, tmp_path):
    other = next((site / "drop" / "02A").glob("GRO_02A_*.p7m")).read_bytes()
    refused(site, tmp_path, GRO, other, "DECRYPT")  # under one of 035's names, sealed for 02A


def test_a_file_that_does_not_match_its_sha256_is_refused(site, tmp_path):
    genuine = (site / "drop" / "035" / GRO).read_bytes()
    wrong = hashlib.sha256(b"another file").hexdigest()
    ack, _ = refused(site, tmp_path, GRO, genuine, "INTEGRITY", marker=wrong)
    assert ack.sha256 == wrong  # the digest the sender announced: its KO reaches that emission


def test_the_content_of_another_departement_is_refused(site, tmp_path):
    other = open_delivered(site)[next(n for n in open_delivered(site) if n.startswith("02A/GRO_"))]
    refused(site, tmp_path, GRO, _seal(site, other), "DEPARTMENT")  # genuinely signed, sealed for 035


# --- XML ------------------------------------------------------------------------------------


def _with_doctype(xml: bytes, doctype: str, entity: str) -> bytes:
    head, sep, rest = xml.partition(b"?>")
    assert sep, "an XML declaration"
    body = rest.replace(b"<NOMCOM>", b"<NOMCOM>" + entity.encode(), 1)
    assert body != rest
    return head + sep + b"\n" + doctype.encode() + body


def test_xml_with_an_external_entity_is_refused(site, tmp_path, plain):
    xxe = _with_doctype(
        plain["GRO"], '<!DOCTYPE Racine [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>', "&xxe;"
    )
    _, line = refused(site, tmp_path, GRO, _seal(site, xxe), "XML_DTD")
    assert "root:" not in repr(line)


def test_xml_with_a_billion_laughs_is_refused(site, tmp_path, plain):
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    )
    bomb = _with_doctype(plain["GRO"], f"<!DOCTYPE Racine [{entities}]>", "&lol9;")
    refused(site, tmp_path, GRO, _seal(site, bomb), "XML_DTD")


def test_xml_that_does_not_validate_is_refused(site, tmp_path, plain):
    broken = plain["GRO"].replace(b"<APPLIEME>CRI</APPLIEME>", b"<APPLIEME>CRI</APPLIEME><SURPRISE/>", 1)
    assert broken != plain["GRO"]
    refused(site, tmp_path, GRO, _seal(site, broken), "SCHEMA")


# --- zips and scans -------------------------------------------------------------------------


@pytest.mark.parametrize("evil", ["../../evil.pdf", "/etc/flux-pmi-evil.pdf"])
def test_a_zip_with_a_path_outside_its_folder_is_refused(site, tmp_path, plain, evil):
    zipped = _rezip(plain["SGR"], rename={_pdf_member(plain["SGR"]): evil})
    refused(site, tmp_path, SGR, _seal(site, zipped), "ZIP_TRAVERSAL")
    assert not Path("/etc/flux-pmi-evil.pdf").exists() and not list(tmp_path.parent.glob("evil.pdf"))


@pytest.mark.parametrize("size", [40 << 20, 8 << 20])  # past the member cap; within it, but a 1000:1 ratio
def test_a_zip_bomb_is_refused(site, tmp_path, plain, size):
    bomb = b"%PDF-1.4\n" + bytes(size)
    zipped = _rezip(plain["SGR"], replace={_pdf_member(plain["SGR"]): bomb})
    assert len(zipped) < 1 << 20
    refused(site, tmp_path, SGR, _seal(site, zipped), "ZIP_BOMB")


def test_a_scan_that_is_not_a_pdf_is_refused(site, tmp_path, plain):
    zipped = _rezip(plain["SGR"], replace={_pdf_member(plain["SGR"]): b"MZ\x90\x00 an executable, say" * 100})
    refused(site, tmp_path, SGR, _seal(site, zipped), "PDF_NOT_PDF")


def test_a_scan_missing_from_the_zip_is_refused(site, tmp_path, plain):
    member = _pdf_member(plain["SGR"])
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(plain["SGR"])) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename != member:
                dst.writestr(info, src.read(info))
    refused(site, tmp_path, SGR, _seal(site, out.getvalue()), "SCAN_MISSING")


def test_a_file_over_the_size_cap_is_refused_unread(site, tmp_path):
    genuine = (site / "drop" / "035" / GRO).read_bytes()
    cfg = _receive_config(site, tmp_path / "probe")
    assert load_receive(cfg).max_file_bytes > len(genuine)
    base = tmp_path / "capped"
    cfg = _receive_config(site, base)
    cfg.write_text(cfg.read_text() + f"\n[limits]\nmax_file_bytes = {len(genuine) - 1}\n")
    (base / "drop" / GRO).write_bytes(genuine)
    digest = hashlib.sha256(genuine).hexdigest()
    (base / "drop" / f"{GRO}.sha256").write_text(f"{digest}  {GRO}\n")
    report = Receiver(load_receive(cfg), clock=FixedClock(NOW)).run_once()
    assert [(o.status, o.code) for o in report.outcomes] == [("refused", "TOO_LARGE")]
    ack = parse_ack((base / "drop" / "acks" / ack_name(GRO)).read_bytes())
    assert (ack.status, ack.code, ack.sha256) == ("KO", "TOO_LARGE", digest)
    assert list((base / "out").rglob("*")) == []
