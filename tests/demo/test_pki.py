"""The demo PKI: owner-only key files, a chain stock OpenSSL accepts, the expected usages."""

from __future__ import annotations

import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from flux_pmi.demo import pki as demo_pki
from flux_pmi.seal import certs

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
# OpenSSL checks dates against its own clock: pin it to NOW so the tests never age.
ATTIME = str(int(NOW.timestamp()))
DEPTS = ("035", "02A", "971")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> demo_pki.Pki:
    return demo_pki.make_pki(tmp_path_factory.mktemp("pki") / "demo", DEPTS, now=NOW)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_files_and_modes(pki: demo_pki.Pki) -> None:
    assert _mode(pki.dir) == 0o700
    keys = [pki.ca_key, pki.cnaf_key, pki.archive_key, *(pki.dept_key(d) for d in DEPTS)]
    certs_ = [pki.ca_cert, pki.cnaf_cert, pki.archive_cert, *(pki.dept_cert(d) for d in DEPTS)]
    for k in keys:
        assert _mode(k) == 0o600, k
        assert b"ENCRYPTED" not in k.read_bytes()
    for c in certs_:
        assert _mode(c) == 0o644, c
    expected = {p.name for p in keys + certs_}
    assert {p.name for p in pki.dir.iterdir()} == expected


def test_existing_dir_is_tightened(tmp_path: Path) -> None:
    d = tmp_path / "loose"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    p = demo_pki.make_pki(d, [], now=NOW, key_size=1024)
    assert _mode(p.dir) == 0o700


@pytest.mark.parametrize("leaf", ["cnaf", "archive", *DEPTS])
def test_chain_verifies_with_openssl(pki: demo_pki.Pki, leaf: str) -> None:
    crt = pki.dir / f"{leaf}.crt"
    r = subprocess.run(
        ["openssl", "verify", "-attime", ATTIME, "-CAfile", str(pki.ca_cert), str(crt)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(": OK")


def test_signing_cert_fits_smime_signing(pki: demo_pki.Pki) -> None:
    # The opening recipe relies on OpenSSL's default S/MIME signing purpose.
    r = subprocess.run(
        [
            "openssl",
            "verify",
            "-attime",
            ATTIME,
            "-purpose",
            "smimesign",
            "-CAfile",
            str(pki.ca_cert),
            str(pki.cnaf_cert),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr


def test_names_usages_and_validity(pki: demo_pki.Pki) -> None:
    ca = certs.load_certificate(pki.ca_cert)
    assert ca.subject == ca.issuer
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign

    cnaf = certs.load_certificate(pki.cnaf_cert)
    cn = cnaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == "CNAF flux-pmi (demo)"
    ku = cnaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.content_commitment and not ku.key_encipherment
    certs.check_signer(cnaf, certs.load_private_key(pki.cnaf_key), now=NOW)

    certs.check_recipient(certs.load_certificate(pki.archive_cert), now=NOW)
    for d in DEPTS:
        c = certs.load_certificate(pki.dept_cert(d))
        assert c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == f"PMI {d} (demo)"
        assert c.issuer == ca.subject
        assert c.not_valid_before_utc == NOW - timedelta(days=1)
        assert c.not_valid_after_utc == NOW + timedelta(days=730)
        certs.check_recipient(c, now=NOW)
        key = certs.load_private_key(pki.dept_key(d))
        assert key.public_key().public_numbers() == c.public_key().public_numbers()


def test_thread_pool_path(tmp_path: Path) -> None:
    # Small keys: this checks the pooled path wires keys to the right certificates.
    depts = ["001", "002", "02B", "976"]
    p = demo_pki.make_pki(tmp_path / "pool", depts, now=NOW, key_size=1024, workers=2)
    for d in depts:
        c = certs.load_certificate(p.dept_cert(d))
        key = certs.load_private_key(p.dept_key(d))
        assert key.public_key().public_numbers() == c.public_key().public_numbers()
        assert _mode(p.dept_key(d)) == 0o600


@pytest.mark.parametrize("bad", ["35", "0035", "../x", "2A", "02C", "abc", ""])
def test_rejects_bad_department_codes(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="3 characters"):
        demo_pki.make_pki(tmp_path / "x", [bad], now=NOW, key_size=1024)


def test_rejects_naive_now(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="aware"):
        demo_pki.make_pki(tmp_path / "x", [], now=datetime(2026, 3, 2))
