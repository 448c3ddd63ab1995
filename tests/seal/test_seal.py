"""Sealing, proven against the system OpenSSL a département would use.

Every claim of the opening recipe in seal/cms.py is run here with /usr/bin/openssl,
so the recipe in the docstring and the bytes we produce cannot drift apart.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
    pkcs7,
)

from flux_pmi.core.errors import CertificateError, DecryptError, SealError, SignatureError
from flux_pmi.demo import pki as demo_pki
from flux_pmi.seal import (
    certs,
    check_recipient,
    check_signer,
    cms,
    days_left,
    envelope,
    load_certificate,
    load_certificates,
    load_private_key,
    open_sealed,
    reseal_from_archive,
    seal,
)

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
# OpenSSL checks certificate dates against its own clock: pin it to NOW.
ATTIME = str(int(NOW.timestamp()))
DEPTS = ("035", "02A", "971")

# Non-ASCII text, every byte value, bare CR / LF / CRLF and NULs: any MIME
# canonicalisation or text-mode translation would change these bytes.
PAYLOAD = (
    (
        "<?xml version='1.0' encoding='UTF-8'?><Racine><NOM>Dupré-Łukasiewicz</NOM>"
        "<PRENOM>Zoé Ñuñez</PRENOM><NOMCOM>Saint-Étienne</NOMCOM></Racine>\r\n"
    ).encode()
    + bytes(range(256))
    + b"\n\r\n\r\x00\x00\xff"
)
SECRET_FRAGMENTS = (b"Dupr", b"Zo\xc3\xa9", "Łukasiewicz".encode())


@dataclass(frozen=True)
class Party:
    cert: x509.Certificate
    key: rsa.RSAPrivateKey
    crt_path: Path
    key_path: Path


@dataclass(frozen=True)
class World:
    pki: demo_pki.Pki
    cnaf: Party
    archive: Party
    depts: dict[str, Party]


def _party(crt: Path, key: Path) -> Party:
    k = load_private_key(key)
    assert isinstance(k, rsa.RSAPrivateKey)
    return Party(load_certificate(crt), k, crt, key)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    p = demo_pki.make_pki(tmp_path_factory.mktemp("seal") / "pki", DEPTS, now=NOW)
    return World(
        pki=p,
        cnaf=_party(p.cnaf_cert, p.cnaf_key),
        archive=_party(p.archive_cert, p.archive_key),
        depts={d: _party(p.dept_cert(d), p.dept_key(d)) for d in DEPTS},
    )


def _seal_for(world: World, dept: str = "035", data: bytes = PAYLOAD) -> cms.Sealed:
    return seal(
        data,
        signer_cert=world.cnaf.cert,
        signer_key=world.cnaf.key,
        recipient_cert=world.depts[dept].cert,
        archive_cert=world.archive.cert,
        now=NOW,
    )


def _openssl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["/usr/bin/openssl", *args], capture_output=True, check=False)


def _recipe(world: World, p7m: bytes, party: Party, work: Path) -> tuple[int, int, bytes]:
    """The module docstring's recipe, verbatim except for -attime. Returns both exit codes."""
    f = work / "F.p7m"
    f.write_bytes(p7m)
    signed, out = work / "F.signed.der", work / "F.xml"
    dec = _openssl(
        "cms", "-decrypt", "-inform", "DER", "-in", str(f),
        "-recip", str(party.crt_path), "-inkey", str(party.key_path), "-out", str(signed),
    )  # fmt: skip
    if dec.returncode != 0:
        return dec.returncode, -1, b""
    ver = _openssl(
        "cms", "-verify", "-inform", "DER", "-in", str(signed),
        "-CAfile", str(world.pki.ca_cert), "-attime", ATTIME, "-out", str(out),
    )  # fmt: skip
    return 0, ver.returncode, out.read_bytes() if ver.returncode == 0 else b""


def _print(der: bytes, work: Path, name: str) -> str:
    f = work / name
    f.write_bytes(der)
    r = _openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", str(f))
    assert r.returncode == 0, r.stderr
    return r.stdout.decode()


def _no_secret(exc: BaseException) -> None:
    text = str(exc).encode()
    for frag in SECRET_FRAGMENTS:
        assert frag not in text


# --- the département opens what we seal -----------------------------------------------


def test_department_opens_with_stock_openssl(world: World, tmp_path: Path) -> None:
    sealed = _seal_for(world, "035")
    dec, ver, plain = _recipe(world, sealed.for_recipient, world.depts["035"], tmp_path)
    assert (dec, ver) == (0, 0)
    assert plain == PAYLOAD


def test_open_sealed_round_trip(world: World) -> None:
    sealed = _seal_for(world, "02A")
    d = world.depts["02A"]
    got = open_sealed(
        sealed.for_recipient, recipient_cert=d.cert, recipient_key=d.key, trusted_signers=[world.cnaf.cert]
    )
    assert got == PAYLOAD


def test_sealed_digest_and_repr(world: World) -> None:
    sealed = _seal_for(world)
    assert sealed.sha256 == hashlib.sha256(sealed.for_recipient).hexdigest()
    assert sealed.for_recipient != sealed.for_archive
    assert "for_recipient" not in repr(sealed)  # megabytes of ciphertext have no place in a log


def test_envelope_is_aes256_cbc(world: World, tmp_path: Path) -> None:
    sealed = _seal_for(world)
    for name, der in (("r.p7m", sealed.for_recipient), ("a.p7m", sealed.for_archive)):
        text = _print(der, tmp_path, name)
        assert re.search(r"contentEncryptionAlgorithm:\s*\n\s*algorithm: aes-256-cbc", text), text


def test_signature_is_sha256_with_signer_cert_inside(world: World, tmp_path: Path) -> None:
    d = world.depts["035"]
    signed = pkcs7.pkcs7_decrypt_der(_seal_for(world).for_recipient, d.cert, d.key, [])
    text = _print(signed, tmp_path, "s.der")
    assert re.search(r"digestAlgorithm:\s*\n\s*algorithm: sha256 ", text), text
    assert "sha1" not in text and "md5" not in text
    assert "CNAF flux-pmi (demo)" in text  # the signer certificate travels inside
    assert pkcs7.load_der_pkcs7_certificates(signed) == [world.cnaf.cert]


def test_another_department_cannot_decrypt(world: World, tmp_path: Path) -> None:
    sealed = _seal_for(world, "035")
    dec, _, plain = _recipe(world, sealed.for_recipient, world.depts["971"], tmp_path)
    assert dec != 0 and plain == b""
    assert not (tmp_path / "F.signed.der").exists() or (tmp_path / "F.signed.der").stat().st_size == 0
    other = world.depts["971"]
    with pytest.raises(DecryptError, match="not for this recipient") as ei:
        open_sealed(
            sealed.for_recipient,
            recipient_cert=other.cert,
            recipient_key=other.key,
            trusted_signers=[world.cnaf.cert],
        )
    assert "PMI 971 (demo)" in str(ei.value)


def test_archive_copy_is_not_for_the_department(world: World, tmp_path: Path) -> None:
    sealed = _seal_for(world, "035")
    dec, _, _ = _recipe(world, sealed.for_archive, world.depts["035"], tmp_path)
    assert dec != 0
    a = world.archive
    assert pkcs7.pkcs7_decrypt_der(sealed.for_archive, a.cert, a.key, []) == pkcs7.pkcs7_decrypt_der(
        sealed.for_recipient, world.depts["035"].cert, world.depts["035"].key, []
    )


# --- tampering and trust --------------------------------------------------------------


def _flip(data: bytes, index: int) -> bytes:
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


def test_tampered_p7m_fails_with_openssl_and_open_sealed(world: World, tmp_path: Path) -> None:
    sealed = _seal_for(world, "035")
    d = world.depts["035"]
    # The ciphertext ends the DER. Flipping a bit 40 bytes from the end garbles two
    # CBC blocks inside the RSA signature but leaves the padding block intact, so the
    # file still decrypts and only the signature check can notice: the worst case.
    tampered = _flip(sealed.for_recipient, len(sealed.for_recipient) - 40)
    dec, ver, plain = _recipe(world, tampered, d, tmp_path)
    assert dec == 0 and ver != 0 and plain == b""
    with pytest.raises(SignatureError, match="tampered") as ei:
        open_sealed(tampered, recipient_cert=d.cert, recipient_key=d.key, trusted_signers=[world.cnaf.cert])
    _no_secret(ei.value)


@pytest.mark.parametrize("where", [0.5, 0.9, -1])
def test_tampering_anywhere_is_refused(world: World, where: float) -> None:
    sealed = _seal_for(world, "035")
    d = world.depts["035"]
    n = len(sealed.for_recipient)
    tampered = _flip(sealed.for_recipient, n - 1 if where == -1 else int(n * where))
    with pytest.raises(SealError) as ei:
        open_sealed(tampered, recipient_cert=d.cert, recipient_key=d.key, trusted_signers=[world.cnaf.cert])
    _no_secret(ei.value)


@pytest.mark.filterwarnings("error")
def test_trailing_bytes_after_signed_data_are_refused(world: World) -> None:
    # What a damaged last CBC block that passes the padding check by chance looks like.
    d = world.depts["035"]
    signed = cms.sign(PAYLOAD, world.cnaf.cert, world.cnaf.key)
    p7m = envelope(signed + b"\x00\x01", d.cert)
    with pytest.raises(SignatureError, match="altered"):
        open_sealed(p7m, recipient_cert=d.cert, recipient_key=d.key, trusted_signers=[world.cnaf.cert])


def test_open_sealed_rejects_untrusted_signer(world: World) -> None:
    # A certificate from the same CA, with signing usage: only pinning tells it apart.
    intruder = demo_pki.issue_cert(
        world.pki.ca, "Not the CNAF (demo)", now=NOW, key_usage=demo_pki.SIGNING, key=world.depts["971"].key
    )
    d = world.depts["035"]
    sealed = seal(
        PAYLOAD,
        signer_cert=intruder.cert,
        signer_key=intruder.key,
        recipient_cert=d.cert,
        archive_cert=world.archive.cert,
        now=NOW,
    )
    with pytest.raises(SignatureError, match="untrusted signer") as ei:
        open_sealed(
            sealed.for_recipient,
            recipient_cert=d.cert,
            recipient_key=d.key,
            trusted_signers=[world.cnaf.cert],
        )
    assert "Not the CNAF (demo)" in str(ei.value)
    _no_secret(ei.value)
    got = open_sealed(
        sealed.for_recipient,
        recipient_cert=d.cert,
        recipient_key=d.key,
        trusted_signers=[world.cnaf.cert, intruder.cert],
    )
    assert got == PAYLOAD


def test_open_sealed_rejects_unsigned(world: World) -> None:
    d = world.depts["035"]
    p7m = envelope(PAYLOAD, d.cert)
    with pytest.raises(SignatureError, match="unsigned") as ei:
        open_sealed(p7m, recipient_cert=d.cert, recipient_key=d.key, trusted_signers=[world.cnaf.cert])
    _no_secret(ei.value)


def test_open_sealed_rejects_garbage_and_mismatched_key(world: World) -> None:
    d, other = world.depts["035"], world.depts["971"]
    with pytest.raises(DecryptError, match="not a DER CMS"):
        open_sealed(b"PK\x03\x04 not a p7m", recipient_cert=d.cert, recipient_key=d.key, trusted_signers=[])
    with pytest.raises(DecryptError, match="does not match"):
        open_sealed(
            _seal_for(world).for_recipient, recipient_cert=d.cert, recipient_key=other.key, trusted_signers=[]
        )


# --- certificates are refused before anything is produced -----------------------------


@pytest.fixture
def no_crypto(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(cms, "sign", lambda *a, **k: calls.append("sign"))
    monkeypatch.setattr(cms, "envelope", lambda *a, **k: calls.append("envelope"))
    return calls


def _bad_recipients(world: World) -> dict[str, tuple[demo_pki.Credential, str]]:
    key = world.depts["971"].key  # reused: RSA generation is the slow part
    ca = world.pki.ca
    return {
        "expired": (
            demo_pki.issue_cert(
                ca, "PMI 099 (expired)", now=NOW, key=key,
                not_before=NOW - timedelta(days=800), not_after=NOW - timedelta(days=1),
            ),
            "has expired",
        ),
        "not yet valid": (
            demo_pki.issue_cert(
                ca, "PMI 099 (early)", now=NOW, key=key,
                not_before=NOW + timedelta(days=2), not_after=NOW + timedelta(days=400),
            ),
            "not yet valid",
        ),
        "signing only": (
            demo_pki.issue_cert(ca, "PMI 099 (sign)", now=NOW, key=key, key_usage=demo_pki.SIGNING),
            "keyEncipherment",
        ),
        "EC key": (
            demo_pki.issue_cert(ca, "PMI 099 (ec)", now=NOW, key=ec.generate_private_key(ec.SECP256R1())),
            "only RSA",
        ),
    }  # fmt: skip


@pytest.mark.parametrize("case", ["expired", "not yet valid", "signing only", "EC key"])
def test_seal_refuses_bad_recipient_before_any_crypto(world: World, no_crypto: list[str], case: str) -> None:
    cred, reason = _bad_recipients(world)[case]
    with pytest.raises(CertificateError, match=reason) as ei:
        seal(
            PAYLOAD,
            signer_cert=world.cnaf.cert,
            signer_key=world.cnaf.key,
            recipient_cert=cred.cert,
            archive_cert=world.archive.cert,
            now=NOW,
        )
    assert no_crypto == []
    msg = str(ei.value)
    assert "recipient certificate CN='PMI 099" in msg
    if case in ("expired", "not yet valid"):
        f = "%Y-%m-%d %H:%M:%S UTC"
        assert cred.cert.not_valid_before_utc.strftime(f) in msg
        assert cred.cert.not_valid_after_utc.strftime(f) in msg
        assert NOW.strftime(f) in msg


def test_seal_refuses_bad_archive_and_signer_before_any_crypto(world: World, no_crypto: list[str]) -> None:
    expired, _ = _bad_recipients(world)["expired"]
    kw = dict(signer_cert=world.cnaf.cert, signer_key=world.cnaf.key, recipient_cert=world.depts["035"].cert)
    with pytest.raises(CertificateError, match="archive certificate .* has expired"):
        seal(PAYLOAD, **{**kw, "archive_cert": expired.cert}, now=NOW)
    old_signer = demo_pki.issue_cert(
        world.pki.ca, "CNAF flux-pmi (old)", now=NOW, key=world.cnaf.key, key_usage=demo_pki.SIGNING,
        not_before=NOW - timedelta(days=800), not_after=NOW - timedelta(seconds=1),
    )  # fmt: skip
    with pytest.raises(CertificateError, match="signer certificate .* has expired"):
        seal(PAYLOAD, **{**kw, "signer_cert": old_signer.cert}, archive_cert=world.archive.cert, now=NOW)
    with pytest.raises(CertificateError, match="does not match"):
        seal(PAYLOAD, **{**kw, "signer_key": world.archive.key}, archive_cert=world.archive.cert, now=NOW)
    assert no_crypto == []


def test_check_signer_wants_digital_signature(world: World) -> None:
    enc_only = demo_pki.issue_cert(world.pki.ca, "CNAF (enc)", now=NOW, key=world.depts["971"].key)
    with pytest.raises(CertificateError, match="digitalSignature"):
        check_signer(enc_only.cert, enc_only.key, now=NOW)
    # No KeyUsage at all is acceptable (the extension is optional).
    bare = demo_pki.issue_cert(
        world.pki.ca, "CNAF (bare)", now=NOW, key=world.depts["971"].key, key_usage=None
    )
    check_signer(bare.cert, bare.key, now=NOW)
    check_recipient(bare.cert, now=NOW)


def test_naive_now_is_a_bug(world: World) -> None:
    with pytest.raises(ValueError, match="aware"):
        check_recipient(world.depts["035"].cert, now=datetime(2026, 3, 2))


def test_days_left(world: World) -> None:
    cert = world.depts["035"].cert
    assert days_left(cert, NOW) == 730
    assert days_left(cert, NOW + timedelta(days=710, hours=1)) == 19
    assert days_left(cert, NOW + timedelta(days=730, hours=1)) == -1  # expired: negative
    assert days_left(cert, NOW + timedelta(days=732)) == -2


# --- re-emission for a renewed certificate --------------------------------------------


def test_reseal_from_archive_for_renewed_certificate(world: World, tmp_path: Path) -> None:
    old = world.depts["035"]
    sealed = _seal_for(world, "035")
    renewed = demo_pki.issue_cert(world.pki.ca, "PMI 035 (demo)", now=NOW)  # new key
    crt, key = demo_pki.write_credential(renewed, world.pki.dir, "035-renewed")
    new = Party(renewed.cert, renewed.key, crt, key)  # type: ignore[arg-type]

    p7m = reseal_from_archive(
        sealed.for_archive,
        archive_cert=world.archive.cert,
        archive_key=world.archive.key,
        recipient_cert=new.cert,
        now=NOW,
    )
    (tmp_path / "new").mkdir()
    (tmp_path / "old").mkdir()
    assert _recipe(world, p7m, new, tmp_path / "new") == (0, 0, PAYLOAD)
    dec, _, plain = _recipe(world, p7m, old, tmp_path / "old")
    assert dec != 0 and plain == b""
    with pytest.raises(SealError, match="not for this recipient"):
        open_sealed(p7m, recipient_cert=old.cert, recipient_key=old.key, trusted_signers=[world.cnaf.cert])
    # The very same signed bytes: a re-emission re-envelopes, it never re-signs.
    original = pkcs7.pkcs7_decrypt_der(sealed.for_recipient, old.cert, old.key, [])
    assert pkcs7.pkcs7_decrypt_der(p7m, new.cert, new.key, []) == original


def test_reseal_refuses_bad_recipient_and_foreign_file(world: World) -> None:
    sealed = _seal_for(world, "035")
    expired, _ = _bad_recipients(world)["expired"]
    kw = dict(archive_cert=world.archive.cert, archive_key=world.archive.key, now=NOW)
    with pytest.raises(CertificateError, match="has expired"):
        reseal_from_archive(sealed.for_archive, recipient_cert=expired.cert, **kw)
    with pytest.raises(SealError, match="not for this recipient"):
        reseal_from_archive(sealed.for_recipient, recipient_cert=world.depts["971"].cert, **kw)


# --- loading --------------------------------------------------------------------------


def test_load_passphrase_protected_key(world: World, tmp_path: Path) -> None:
    pem = world.cnaf.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"s3cret"))
    path = tmp_path / "cnaf-protected.key"
    path.write_bytes(pem)
    key = load_private_key(path, b"s3cret")
    assert key.private_numbers() == world.cnaf.key.private_numbers()  # type: ignore[union-attr]
    with pytest.raises(CertificateError, match="wrong passphrase"):
        load_private_key(path, b"nope")
    with pytest.raises(CertificateError, match="no passphrase was given"):
        load_private_key(path)
    with pytest.raises(CertificateError, match="not encrypted"):
        load_private_key(world.cnaf.key_path, b"s3cret")
    with pytest.raises(TypeError):
        load_private_key(path, "s3cret")  # type: ignore[arg-type]


def test_load_errors_name_the_file(world: World, tmp_path: Path) -> None:
    missing = tmp_path / "missing.crt"
    with pytest.raises(CertificateError, match="missing.crt: certificate cannot be read"):
        load_certificate(missing)
    junk = tmp_path / "junk.crt"
    junk.write_bytes(b"not a certificate")
    with pytest.raises(CertificateError, match="junk.crt: not a PEM certificate"):
        load_certificate(junk)
    with pytest.raises(CertificateError, match="not a PEM private key"):
        load_private_key(junk)
    bundle = tmp_path / "trusted.pem"
    bundle.write_bytes(world.pki.cnaf_cert.read_bytes() + world.pki.ca_cert.read_bytes())
    assert [c.subject for c in load_certificates(bundle)] == [
        world.cnaf.cert.subject,
        load_certificate(world.pki.ca_cert).subject,
    ]
    assert certs.describe(world.cnaf.cert).startswith("CN='CNAF flux-pmi (demo)' (serial 0x")
