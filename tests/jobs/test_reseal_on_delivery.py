"""Files waiting for a département whose certificate changed meanwhile are sealed again before they go.

Found by hand: a département held during its migration renews its certificate; on `resume`, the files
built before were delivered as sealed, for the old key, and its PMI could not open them. They are now
sealed again from the archive's copy (the same signed bytes, as a re-emission does), and the trace,
the archive and the delivery marker agree on the new bytes.
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import date
from pathlib import Path

import pytest
from support import BUSINESS_DATE, NOW, make_demo

from flux_pmi.archive import ArchiveStore
from flux_pmi.config.settings import load
from flux_pmi.core.clock import FixedClock
from flux_pmi.core.errors import ExitCode, SealError
from flux_pmi.demo import pki as demo_pki
from flux_pmi.jobs.night import Night
from flux_pmi.seal import certs, cms
from flux_pmi.trace.lifecycle import Status
from flux_pmi.trace.store import TraceStore


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, departments="035,02A")
    return root


def _night(root: Path):
    return Night(load(root / "flux-pmi.toml"), clock=FixedClock(NOW), sleep=lambda _s: None).run(BUSINESS_DATE)


def _open(p7m: Path, crt: Path, key: Path, root: Path) -> bytes:
    return cms.open_sealed(p7m.read_bytes(), recipient_cert=certs.load_certificate(crt),
                           recipient_key=certs.load_private_key(key, None),
                           trusted_signers=[certs.load_certificate(root / "pki" / "cnaf.crt")])


def _renew(root: Path, tmp_path: Path, code: str) -> tuple[Path, Path]:
    """A new key and certificate for `code`, as its PMI sends them; the old ones, kept aside."""
    pki = root / "pki"
    old = (Path(shutil.copy(pki / f"{code}.crt", tmp_path / "old.crt")),
           Path(shutil.copy(pki / f"{code}.key", tmp_path / "old.key")))
    ca = demo_pki.Credential(certs.load_certificate(pki / "ca.crt"), certs.load_private_key(pki / "ca.key"))
    demo_pki.write_credential(demo_pki.issue_cert(ca, f"PMI {code} (demo, renewed)", now=NOW), pki, code)
    return old


def test_files_held_across_a_certificate_renewal_are_resealed_and_open_with_the_new_key(site, tmp_path):
    settings = load(site / "flux-pmi.toml")
    with TraceStore(settings.paths.trace) as trace:
        trace.hold("035", NOW, by="ops", reason="moving to a new platform")
    assert _night(site).exit_code == ExitCode.OK
    assert not list((site / "drop" / "035").glob("*.p7m")) if (site / "drop" / "035").exists() else True
    old_crt, old_key = _renew(site, tmp_path, "035")
    with TraceStore(settings.paths.trace) as trace:
        waiting = {e.file_name: e for e in trace.to_deliver() if e.department == "035"}
        archive = ArchiveStore(settings.paths.archive)
        plain = {name: _open(archive.sealed_path(date.fromisoformat(e.business_date), name), old_crt, old_key, site)
                 for name, e in waiting.items()}
        trace.resume("035", NOW, by="ops")
    assert len(waiting) == 3

    report = _night(site)
    assert report.exit_code == ExitCode.OK, report.problems
    assert report.resealed == {"035": 3}
    pki = site / "pki"
    fingerprint = certs.cert_fingerprint(certs.load_certificate(pki / "035.crt"))
    with TraceStore(settings.paths.trace) as trace:
        for name, before in waiting.items():
            sent = site / "drop" / "035" / name
            assert _open(sent, pki / "035.crt", pki / "035.key", site) == plain[name]  # the same content
            with pytest.raises(SealError, match="not for this recipient"):
                _open(sent, old_crt, old_key, site)
            row = trace.emission(before.id)
            assert row.status == Status.DELIVERED and row.recipient_cert_sha256 == fingerprint
            assert row.sha256 == hashlib.sha256(sent.read_bytes()).hexdigest() != before.sha256
            assert sent.with_name(name + ".sha256").read_text().split()[0] == row.sha256  # the marker agrees
            assert archive.sealed_path(date.fromisoformat(row.business_date), name).read_bytes() == sent.read_bytes()
    assert _night(site).resealed == {}  # once sealed for it, a file is not sealed again


def test_a_file_that_cannot_be_resealed_fails_and_the_next_ones_wait(site, tmp_path):
    settings = load(site / "flux-pmi.toml")
    with TraceStore(settings.paths.trace) as trace:
        trace.hold("035", NOW, by="ops", reason="moving")
    assert _night(site).exit_code == ExitCode.OK
    _renew(site, tmp_path, "035")
    with TraceStore(settings.paths.trace) as trace:
        first = min((e for e in trace.to_deliver() if e.department == "035"), key=lambda e: e.seq)
        trace.resume("035", NOW, by="ops")
    # Its archive copy damaged (a disk fault): it cannot be opened to be sealed again.
    copy = ArchiveStore(settings.paths.archive).archive_copy_path(date.fromisoformat(first.business_date),
                                                                  first.file_name)
    kept = copy.read_bytes()
    copy.write_bytes(kept[: len(kept) // 2])
    report = _night(site)
    assert report.exit_code == ExitCode.UNDELIVERED
    assert any(f"{first.flow} 035 seq 1: not re-sealed for the département's current certificate" in p
               for p in report.problems), report.problems
    assert not list((site / "drop" / "035").glob("*.p7m"))  # nothing sealed for the old key went out
    copy.write_bytes(kept)
    again = _night(site)
    assert again.exit_code == ExitCode.OK, again.problems
    assert sorted(p.name.split("_")[0] for p in (site / "drop" / "035").glob("*.p7m")) == ["DSG", "GRO", "SGR"]


def test_a_reemission_waiting_across_a_renewal_is_resealed_too(site, tmp_path):
    # A re-emission asked while the département is held waits too (status re-emitted): it was sealed
    # for the certificate of the day it was asked, and must follow a renewal as the originals do.
    from flux_pmi.jobs import reemit
    from flux_pmi.jobs.deliver import Deliverer

    settings = load(site / "flux-pmi.toml")
    assert _night(site).exit_code == ExitCode.OK  # delivered; then its PMI loses the GRO file and migrates
    clock = FixedClock(NOW)
    with TraceStore(settings.paths.trace) as trace:
        trace.hold("035", NOW, by="ops", reason="moving")
        asked = reemit.request(settings, trace, reemit.ReemitRequest(
            flows=["GRO"], departments=["035"], date_from=BUSINESS_DATE, by="ops", reason="lost on their side"),
            clock=clock, deliverer=Deliverer(settings, clock=clock, sleep=lambda _s: None))
        assert [f.emission.status for f in asked.files] == [Status.REEMITTED]  # held: it waits
    _renew(site, tmp_path, "035")
    with TraceStore(settings.paths.trace) as trace:
        trace.resume("035", NOW, by="ops")
    report = _night(site)
    assert report.exit_code == ExitCode.OK, report.problems
    assert report.resealed == {"035": 1}  # the re-emission
    pki = site / "pki"
    copy = site / "drop" / "035" / "GRO_035_20261123_000001_R01.xml.p7m"
    assert _open(copy, pki / "035.crt", pki / "035.key", site)


@pytest.mark.parametrize("marker", [True, False], ids=["with its marker", "renamed, marker not written"])
def test_a_file_already_at_the_partner_under_its_earlier_seal_is_not_sent_again(site, tmp_path, marker):
    """Found by the model test: a file delivered (renamed in place at the partner) whose delivery a crash
    kept out of the trace, its département held, then its certificate renewed: the next run sealed it
    again, found the earlier seal under its name at the partner and refused it for good ("a different
    file already sits under this name"), and the département's next files waited behind it for ever."""
    settings = load(site / "flux-pmi.toml")
    with TraceStore(settings.paths.trace) as trace:
        trace.hold("035", NOW, by="ops", reason="moving to a new platform")
    assert _night(site).exit_code == ExitCode.OK
    archive = ArchiveStore(settings.paths.archive)
    with TraceStore(settings.paths.trace) as trace:
        [dsg] = [e for e in trace.to_deliver() if e.department == "035" and e.flow == "DSG"]
    # What the delivery the trace did not see left at the partner: the file and its marker.
    name, day = dsg.file_name or "", date.fromisoformat(dsg.business_date)
    earlier = archive.sealed_path(day, name).read_bytes()
    drop = site / "drop" / "035"
    drop.mkdir(parents=True, exist_ok=True)
    (drop / name).write_bytes(earlier)
    if marker:
        (drop / f"{name}.sha256").write_text(f"{dsg.sha256}  {name}\n")
    old_crt, old_key = _renew(site, tmp_path, "035")
    with TraceStore(settings.paths.trace) as trace:
        trace.resume("035", NOW, by="ops")

    report = _night(site)
    assert report.exit_code == ExitCode.OK, report.problems
    assert report.resealed == {"035": 3} and report.earlier_seal == [name]
    assert (drop / name).read_bytes() == earlier  # not replaced, not sent twice
    assert (drop / f"{name}.sha256").read_text() == f"{dsg.sha256}  {name}\n"  # its marker names it
    assert _open(drop / name, old_crt, old_key, site)  # its PMI opens it with the key it had then
    with TraceStore(settings.paths.trace) as trace:
        after = trace.emission(dsg.id)
        assert after is not None and after.status == Status.DELIVERED
        assert (after.sha256, after.size) == (dsg.sha256, dsg.size)  # the partner's ack will name this one
        assert after.recipient_cert_sha256 == dsg.recipient_cert_sha256
        others = [e for e in trace.emissions_of_batch(dsg.batch_id or 0) if e.department == "035" and e.id != dsg.id]
    assert archive.sealed_path(day, name).read_bytes() == earlier  # the archive keeps what the partner has
    pki = site / "pki"
    for e in others:  # the files that had not gone yet went sealed for the new key
        sent = drop / (e.file_name or "")
        assert hashlib.sha256(sent.read_bytes()).hexdigest() == e.sha256
        assert _open(sent, pki / "035.crt", pki / "035.key", site)
    assert not list(archive.day_dir(day).glob("*.superseded"))  # nothing left over once all are delivered
