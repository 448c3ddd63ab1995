"""The Transfer CFT adapter, driven against the CFTUTIL stand-in (tests/support/fake_cftutil.py).

Nothing sleeps: the stand-in moves a transfer forward once per catalog query, and the adapter's
sleep and clock are injected, so timeouts are reached by advancing a fake clock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
from support import BUSINESS_DATE, NOW, make_demo, record_fingerprints, run_cli

from flux_pmi.archive import ArchiveStore
from flux_pmi.config.settings import load
from flux_pmi.core.clock import FixedClock
from flux_pmi.core.errors import ConfigError, ExitCode, TransportError
from flux_pmi.jobs.night import Night
from flux_pmi.trace.journal import DeliveryJournal, JournalTransport, read_journal
from flux_pmi.trace.store import TraceStore
from flux_pmi.transport.base import Delivery
from flux_pmi.transport.cft import SEND_TEMPLATE, CftTransport
from flux_pmi.transport.registry import transport_for

FAKE = Path(__file__).resolve().parents[1] / "support" / "fake_cftutil.py"
IDF = {"DSG": "PMIDSG", "SGR": "PMISGR", "GRO": "PMIGRO"}
SECRET = b"Mme DUPONT Jeanne 2850575123456 "  # stands for what a sealed file protects


class FakeClock:
    """A monotonic clock that only moves when the adapter sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Cft:
    """A CFT installation made of the stand-in: its home folder and a CFTUTIL executable."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "cft-home"
        self.home.mkdir(parents=True)
        self.exe = root / "bin" / "CFTUTIL"
        self.exe.parent.mkdir()
        # The stand-in runs with this interpreter, whatever `python3` is on the PATH.
        self.exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
        self.exe.chmod(0o755)
        self.clock = FakeClock()
        self.journal = root / "trace" / "flux-pmi.sqlite"  # the trace database the delivery journal lives in

    def partners(self, **partners: dict) -> None:
        (self.home / "partners.json").write_text(json.dumps(partners))

    def calls(self, cmd: str | None = None) -> list[dict]:
        path = self.home / "calls.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [r for r in rows if cmd is None or r["cmd"] == cmd]

    def delivered(self, part: str) -> dict[str, bytes]:
        folder = self.home / "delivered" / part
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.is_dir() else {}

    def transport(self, part: str = "PMI035", **kw) -> CftTransport:
        args = {
            "cftutil": self.exe,
            "part": part,
            "idf": IDF,
            "journal": DeliveryJournal(self.journal),
            "env": {"FAKE_CFT_HOME": str(self.home)},
            "sleep": self.clock.sleep,
            "clock": self.clock,
            "department": "035",
            **kw,
        }
        return CftTransport(**args)

    def state(self, part: str = "PMI035", dept: str = "035") -> dict:
        """The delivery journal's rows of one partner, as {file name: {sha256, idtu, phase}}."""
        rows = read_journal(self.journal, JournalTransport.CFT, dept) if self.journal.exists() else {}
        return {
            name: {"sha256": e.sha256, "idtu": e.facts.get("idtu"), "phase": e.step}
            for name, e in rows.items()
            if e.facts.get("part") == part
        }


@pytest.fixture
def cft(tmp_path) -> Cft:
    return Cft(tmp_path / "cft")


def sealed(
    tmp_path: Path,
    name: str = "GRO_035_20261123_000001.xml.p7m",
    flow: str = "GRO",
    data: bytes | None = None,
) -> Delivery:
    folder = tmp_path / "archive dir" / "2026" / "11" / "23"  # a space: FNAME must be quoted for CFTUTIL
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    data = data if data is not None else SECRET + name.encode()
    path.write_bytes(data)
    return Delivery("035", flow, name, path, len(data), hashlib.sha256(data).hexdigest())


# -- sending and waiting ------------------------------------------------------------------------


def test_a_file_is_sent_from_the_archive_under_its_remote_name_and_the_idtu_recorded(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "ok"})
    item = sealed(tmp_path)
    receipt = cft.transport().deliver(item)
    assert receipt.reference == "A0000001" and not receipt.already_there
    assert cft.delivered("PMI035") == {item.file_name: item.path.read_bytes()}
    [send] = cft.calls("SEND")
    assert (send["PART"], send["IDF"], send["FNAME"], send["NFNAME"]) == (
        "PMI035",
        "PMIGRO",
        str(item.path),
        item.file_name,
    )
    [wait] = cft.calls("SWAITCAT")
    assert wait["SELECT"] == 'IDTU=="A0000001"' and wait["PHASES"] == "X" and int(wait["TIMEOUT"]) == 300
    assert cft.state()[item.file_name] == {"sha256": item.sha256, "idtu": "A0000001", "phase": "X"}
    mode = cft.journal.stat().st_mode & 0o777
    assert mode == 0o600


def test_the_poll_mode_reads_the_catalog_until_the_transfer_is_done(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "ok"})
    item = sealed(tmp_path)
    receipt = cft.transport(wait="poll", poll_interval=5).deliver(item)
    assert receipt.reference == "A0000001"
    assert [c["IDTU"] for c in cft.calls("LISTCAT")] == ["A0000001", "A0000001"]  # T/C, then X
    assert cft.calls("SWAITCAT") == [] and cft.clock.slept == [5.0]
    assert item.file_name in cft.delivered("PMI035")


# -- acknowledgements ------------------------------------------------------------------------


def listcats(cft: Cft, content: str) -> list[dict]:
    return [c for c in cft.calls("LISTCAT") if c.get("CONTENT", "BRIEF") == content]


def test_with_expect_ack_the_adapter_waits_through_z_h_to_x_with_the_ack(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "ack"})  # ACKSTATE=REQUIRE: Z/H for two queries, then X/X acked
    item = sealed(tmp_path)
    receipt = cft.transport(expect_ack=True).deliver(item)
    assert receipt.reference == "A0000001"
    # The first SWAITCAT comes back SWAITCAT_FAILED at Z/H (an H phasestep); the LISTCAT that follows
    # tells it is only waiting for the ack, and the second SWAITCAT reaches X/X.
    waits = cft.calls("SWAITCAT")
    assert [(w.get("PHASES"), w.get("PHASESTEPS"), w.get("STATES")) for w in waits] == [("X", "X", None)] * 2
    assert len(listcats(cft, "FULL")) == 1
    [brief] = listcats(cft, "BRIEF")  # the Ack flag, read once the transfer is done
    assert brief["IDTU"] == "A0000001"
    assert cft.state()[item.file_name]["phase"] == "X" and cft.clock.slept == [2.0]
    assert item.file_name in cft.delivered("PMI035")


def test_the_poll_mode_waits_through_z_h_for_the_ack_too(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "ack"})
    item = sealed(tmp_path)
    cft.transport(wait="poll", expect_ack=True).deliver(item)
    assert len(listcats(cft, "FULL")) == 5  # T/C, Y/C, Z/H, Z/H, X/X
    assert len(listcats(cft, "BRIEF")) == 1 and cft.calls("SWAITCAT") == []
    assert cft.clock.slept == [2.0] * 4 and cft.state()[item.file_name]["phase"] == "X"


def test_an_ack_that_comes_after_x_is_awaited_with_swaitcat_states_xa(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "late_ack"})  # ACKSTATE=IGNORE: X/X first, the ack later
    receipt = cft.transport(expect_ack=True).deliver(sealed(tmp_path))
    assert receipt.reference == "A0000001"
    waits = [(w.get("PHASES"), w.get("STATES")) for w in cft.calls("SWAITCAT")]
    assert waits == [("X", None), (None, "XA")]
    assert len(listcats(cft, "BRIEF")) == 1 and listcats(cft, "FULL") == []


def test_a_late_ack_in_poll_mode(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "late_ack", "ack_after": 1})
    cft.transport(wait="poll", expect_ack=True).deliver(sealed(tmp_path))
    # FULL until done (T/C, X/X), then only the Ack flag: blank, then A.
    assert [c.get("CONTENT") for c in cft.calls("LISTCAT")] == ["FULL", "FULL", "BRIEF", "BRIEF"]
    assert cft.clock.slept == [2.0, 2.0]


@pytest.mark.parametrize("wait", ["swaitcat", "poll"])
def test_a_nack_is_a_retryable_error_saying_the_partner_refused_the_file(cft, tmp_path, wait):
    cft.partners(PMI035={"behaviour": "nack"})
    transport, item = cft.transport(wait=wait, expect_ack=True), sealed(tmp_path)
    with pytest.raises(TransportError) as err:
        transport.deliver(item)
    exc = err.value
    assert not exc.permanent
    assert "partner refused (NACK)" in str(exc) and "IDTU=A0000001" in str(exc)
    assert str(item.path) not in str(exc)
    # A retry is a new transfer (the refused one is over), and the partner refuses it again.
    with pytest.raises(TransportError, match=r"partner refused \(NACK\).*IDTU=A0000002"):
        transport.deliver(item)
    # Once the partner's application accepts it, the next attempt goes through.
    cft.partners(PMI035={"behaviour": "ack"})
    receipt = transport.deliver(item)
    assert receipt.reference == "A0000003" and not receipt.already_there
    assert len(cft.calls("SEND")) == 3


def test_without_expect_ack_a_nack_is_not_looked_at(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "nack"})
    receipt = cft.transport().deliver(sealed(tmp_path))
    assert receipt.reference == "A0000001" and listcats(cft, "BRIEF") == []


@pytest.mark.parametrize("wait", ["swaitcat", "poll"])
def test_an_ack_that_never_comes_times_out_retryable_saying_so(cft, tmp_path, wait):
    cft.partners(PMI035={"behaviour": "noack"})  # stays in Z/H
    transport, item = cft.transport(wait=wait, expect_ack=True, timeout=10, poll_interval=4), sealed(tmp_path)
    with pytest.raises(TransportError) as err:
        transport.deliver(item)
    assert not err.value.permanent
    assert "CFT transfer IDTU=A0000001 waiting for the partner's acknowledgement beyond 10 s" in str(
        err.value
    )
    assert cft.clock.slept == [4.0, 4.0, 2.0]
    if wait == "swaitcat":
        assert [int(w["TIMEOUT"]) for w in cft.calls("SWAITCAT")] == [10, 6, 2]
    # The night's retry finds the same transfer still waiting: no second SEND, and no second wait.
    with pytest.raises(TransportError, match="waiting for the partner's acknowledgement beyond 10 s"):
        transport.deliver(item)
    assert len(cft.calls("SEND")) == 1 and sum(cft.clock.slept) == pytest.approx(10)


def test_without_expect_ack_a_partner_that_requires_acks_completes_once_the_ack_arrives(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "ack"})
    item = sealed(tmp_path)
    receipt = cft.transport().deliver(item)
    # The wait goes through Z/H (SWAITCAT_FAILED there is not an error) and ends at X/X.
    assert receipt.reference == "A0000001" and cft.state()[item.file_name]["phase"] == "X"
    assert [w["PHASES"] for w in cft.calls("SWAITCAT")] == ["X", "X"] and cft.clock.slept == [2.0]
    assert listcats(cft, "BRIEF") == []


def test_without_expect_ack_a_missing_ack_is_still_reported_as_such(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "noack"})
    with pytest.raises(TransportError) as err:
        cft.transport(timeout=5).deliver(sealed(tmp_path))
    assert not err.value.permanent and "waiting for the partner's acknowledgement beyond 5 s" in str(
        err.value
    )


def test_an_acknowledged_file_is_not_sent_again(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "ack"})
    item = sealed(tmp_path)
    cft.transport(expect_ack=True).deliver(item)
    again = cft.transport(expect_ack=True).deliver(item)
    assert again.already_there and again.reference == "A0000001" and len(cft.calls("SEND")) == 1


# -- failures ---------------------------------------------------------------------------------


def test_an_unknown_partner_is_a_permanent_error_naming_the_partner_and_the_diagnostic(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "ok"})
    item = sealed(tmp_path)
    with pytest.raises(TransportError) as err:
        cft.transport(part="PMI099").deliver(item)
    exc = err.value
    assert exc.permanent and exc.partner == "035"
    assert "PMI099" in str(exc) and "CFTU25E" in str(exc) and "DIAGI 408" in str(exc)
    assert SECRET.decode() not in str(exc) and str(item.path) not in str(exc)
    assert cft.state("PMI099") == {}


def test_an_idf_the_partner_refuses_ends_in_k_and_is_permanent(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "ok", "idfs": ["PMIDSG"]})
    with pytest.raises(TransportError) as err:
        cft.transport().deliver(sealed(tmp_path))
    assert err.value.permanent and "DIAGI 411" in str(err.value) and "IDTU=A0000001" in str(err.value)


def test_a_transfer_in_error_is_retryable_and_says_why(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "error", "diagi": 302, "diagp": "VNRELI"})
    with pytest.raises(TransportError) as err:
        cft.transport().deliver(sealed(tmp_path))
    exc = err.value
    assert not exc.permanent
    assert (
        "IDTU=A0000001" in str(exc)
        and "phasestep K" in str(exc)
        and "DIAGI 302" in str(exc)
        and "VNRELI" in str(exc)
    )
    assert cft.delivered("PMI035") == {}


def test_a_transfer_in_error_is_also_seen_in_poll_mode(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "error"})
    with pytest.raises(TransportError) as err:
        cft.transport(wait="poll").deliver(sealed(tmp_path))
    assert not err.value.permanent and "DIAGI 405" in str(err.value)


def test_a_transfer_that_never_ends_times_out_retryable_with_its_idtu(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "slow"})
    transport = cft.transport(timeout=10, poll_interval=4)
    item = sealed(tmp_path)
    with pytest.raises(TransportError) as err:
        transport.deliver(item)
    assert not err.value.permanent
    assert "CFT transfer IDTU=A0000001 not done within 10 s" in str(err.value)
    assert sum(cft.clock.slept) == pytest.approx(10)
    timeouts = [int(w["TIMEOUT"]) for w in cft.calls("SWAITCAT")]
    assert timeouts == [10, 6, 2]  # each SWAITCAT asks for what is left of the deadline
    # the night retries: the adapter waits on the same transfer, it does not send a second one
    with pytest.raises(TransportError):
        transport.deliver(item)
    assert len(cft.calls("SEND")) == 1


def test_the_timeout_bounds_all_the_attempts_at_a_file_not_each(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "slow"})
    transport, item = cft.transport(timeout=10, poll_interval=4), sealed(tmp_path)
    for _ in range(3):  # the night's attempts
        with pytest.raises(TransportError, match="not done within 10 s"):
            transport.deliver(item)
    assert sum(cft.clock.slept) == pytest.approx(10) and len(cft.calls("SEND")) == 1
    # A new night (a new transport) gives the file a new deadline, and waits on the same transfer.
    with pytest.raises(TransportError, match="not done within 10 s"):
        cft.transport(timeout=10, poll_interval=4).deliver(item)
    assert sum(cft.clock.slept) == pytest.approx(20) and len(cft.calls("SEND")) == 1


def test_a_transfer_in_error_is_not_sent_again_once_its_time_is_spent(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "error"})
    transport, item = cft.transport(timeout=10), sealed(tmp_path)
    with pytest.raises(TransportError, match="DIAGI 405"):
        transport.deliver(item)
    cft.clock.now += 11  # the attempt and the night's backoff took the whole timeout
    with pytest.raises(TransportError) as err:
        transport.deliver(item)
    assert not err.value.permanent and "not sent again: its 10 s are spent" in str(err.value)
    assert len(cft.calls("SEND")) == 1
    cft.partners(PMI035={"behaviour": "ok"})
    assert cft.transport(timeout=10).deliver(item).reference == "A0000002"  # the next run


def test_a_missing_cftutil_is_a_permanent_error(cft, tmp_path):
    with pytest.raises(TransportError) as err:
        cft.transport(cftutil=tmp_path / "nowhere" / "CFTUTIL").deliver(sealed(tmp_path))
    assert err.value.permanent and "cannot run CFTUTIL" in str(err.value)


def test_a_flow_without_idf_is_a_permanent_error(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "ok"})
    with pytest.raises(TransportError) as err:
        cft.transport(idf={"GRO": "PMIGRO"}).deliver(
            sealed(tmp_path, "DSG_035_20261123_000001.xml.p7m", "DSG")
        )
    assert err.value.permanent and "no IDF configured for flow DSG" in str(err.value)
    assert cft.calls("SEND") == []


def test_a_send_answered_without_idtu_is_not_sent_twice(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "ok", "no_idtu": True})
    transport, item = cft.transport(), sealed(tmp_path)
    for _ in range(2):
        with pytest.raises(TransportError) as err:
            transport.deliver(item)
        assert err.value.permanent and "gave no IDTU" in str(err.value)
    assert len(cft.calls("SEND")) == 1


# -- idempotency ------------------------------------------------------------------------------


class Crash(BaseException):
    """Stands for a SIGKILL: nothing after it runs in that process."""


def test_a_rerun_after_a_crash_waits_on_the_transfer_already_made(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "ok"})
    item = sealed(tmp_path)

    def crash(_seconds: float) -> None:
        raise Crash

    with pytest.raises(Crash):
        cft.transport(wait="poll", sleep=crash).deliver(item)
    assert cft.state()[item.file_name] == {"sha256": item.sha256, "idtu": "A0000001", "phase": "T"}
    receipt = cft.transport(wait="poll").deliver(item)  # a new process, the same state folder
    assert receipt.already_there and receipt.reference == "A0000001"
    assert len(cft.calls("SEND")) == 1
    assert cft.delivered("PMI035") == {item.file_name: item.path.read_bytes()}
    assert cft.state()[item.file_name]["phase"] == "X"


def test_a_file_already_done_is_not_sent_again(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "ok"})
    item = sealed(tmp_path)
    cft.transport().deliver(item)
    again = cft.transport().deliver(item)
    assert again.already_there and again.reference == "A0000001" and len(cft.calls("SEND")) == 1


def test_a_transfer_in_error_is_sent_again_once_the_partner_is_fixed(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "error"})
    item = sealed(tmp_path)
    with pytest.raises(TransportError):
        cft.transport().deliver(item)
    cft.partners(PMI035={"behaviour": "ok"})
    receipt = cft.transport().deliver(item)
    assert receipt.reference == "A0000002" and not receipt.already_there
    assert len(cft.calls("SEND")) == 2 and item.file_name in cft.delivered("PMI035")


def test_a_transfer_the_catalog_no_longer_knows_is_sent_again(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "ok"})
    item = sealed(tmp_path)
    cft.transport().journal.put(
        JournalTransport.CFT,
        "035",
        item.file_name,
        sha256=item.sha256,
        step="T",
        facts={"idtu": "A00000ZZ", "part": "PMI035"},
    )
    receipt = cft.transport().deliver(item)
    assert receipt.reference == "A0000001" and len(cft.calls("SEND")) == 1


def test_the_state_file_of_an_earlier_version_is_imported_once_and_its_transfer_not_sent_again(cft, tmp_path):
    """An upgrade in the middle of an incident: the JSON state file's IDTU is waited on, never sent again."""
    cft.partners(PMI035={"behaviour": "ok"})
    item = sealed(tmp_path)
    cft.transport(wait="poll").deliver(item)  # the transfer CFT holds, as an earlier version recorded it
    work = tmp_path / "work"
    legacy = work / "cft" / "035" / "PMI035.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(
        json.dumps(
            {
                "partner": "PMI035",
                "files": {item.file_name: {"sha256": item.sha256, "idtu": "A0000001", "phase": "T"}},
            }
        )
    )
    other = tmp_path / "other-trace.sqlite"
    t = cft.transport(wait="poll", journal=DeliveryJournal(other, legacy_dir=work))
    assert not legacy.exists() and legacy.with_name("PMI035.json.imported").is_file()
    receipt = t.deliver(item)
    assert receipt.already_there and receipt.reference == "A0000001" and len(cft.calls("SEND")) == 1
    [row] = read_journal(other, JournalTransport.CFT, "035").values()
    assert (row.step, row.facts) == ("X", {"idtu": "A0000001", "part": "PMI035"})
    DeliveryJournal(other, legacy_dir=work).close()  # opened again: nothing left to import, nothing changed
    assert read_journal(other, JournalTransport.CFT, "035")[item.file_name].step == "X"


def test_the_same_name_with_other_content_is_refused(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "ok"})
    cft.transport().deliver(sealed(tmp_path))
    with pytest.raises(TransportError) as err:
        cft.transport().deliver(sealed(tmp_path, data=b"other bytes"))
    assert err.value.permanent and "other content" in str(err.value) and len(cft.calls("SEND")) == 1


def test_an_earlier_seal_of_the_file_already_done_is_the_file_delivered_not_other_content(cft, tmp_path):
    """A transfer a crash kept out of the trace, then the file re-sealed for a renewed certificate: the
    partner has the earlier seal; the re-sealed one is not sent, and the receipt says which it holds."""
    cft.partners(PMI035={"behaviour": "ok"})
    first = sealed(tmp_path)
    cft.transport().deliver(first)
    resealed = sealed(tmp_path, data=b"the same content, sealed for the new key")
    again = cft.transport().deliver(dataclasses.replace(resealed, earlier=((first.sha256, first.size),)))
    assert again.already_there and again.earlier_sha256 == first.sha256 and len(cft.calls("SEND")) == 1
    assert cft.state()[first.file_name]["sha256"] == first.sha256  # the journal still names what went


# -- configuration ----------------------------------------------------------------------------


def test_the_send_template_can_be_customised(cft, tmp_path):
    cft.partners(PMI035={"behaviour": "ok"})
    item = sealed(tmp_path)
    cft.transport(
        send_template="SEND PART={part},IDF={idf},FNAME={fname},NFNAME={nfname},IDA=FLUXPMI"
    ).deliver(item)
    [send] = cft.calls("SEND")
    assert send["IDA"] == "FLUXPMI" and send["NFNAME"] == item.file_name


@pytest.mark.parametrize(
    "template",
    [
        "SEND PART={part}, FNAME={fname}, PARM={user}",  # not in the fixed set
        "SEND PART={part}, FNAME={fname!r}",
        "SEND PART={part:>8}, FNAME={fname}",
        "SEND PART={0}, FNAME={fname}",
        "SEND PART={part}, NFNAME={nfname}",  # no FNAME: CFT would not send the archived file
        "RECV PART={part}, FNAME={fname}",
        "SEND PART={part}, FNAME={fname",
        "SEND PART={part},\nFNAME={fname}",
    ],
)
def test_a_bad_send_template_is_refused_at_construction(cft, template):
    with pytest.raises(ValueError, match="send_template"):
        cft.transport(send_template=template)


@pytest.mark.parametrize(
    "kw",
    [
        {"wait": "sleep"},
        {"timeout": 0},
        {"poll_interval": -1},
        {"part": "PMI 035"},
        {"idf": {"XYZ": "PMIXYZ"}},
        {"idf": {"GRO": "PMI GRO"}},
        {"env": {"A": 1}},
        {"expect_ack": "yes"},
    ],
)
def test_bad_parameters_are_refused_at_construction(cft, kw):
    with pytest.raises(ValueError):
        cft.transport(**kw)


def cft_config(tmp_path: Path, transport: str, delivery: str = "") -> Path:
    cfg = tmp_path / "flux-pmi.toml"
    cfg.write_text(
        '[sender]\ncertificate = "c"\nkey = "k"\narchive_certificate = "a"\narchive_key = "ak"\n\n'
        + (f"[delivery]\n{delivery}\n\n" if delivery else "")
        + f'[departments."035"]\ncertificate = "035.crt"\ntransport = {transport}\n'
    )
    return cfg


def test_from_config_reads_the_toml_and_reports_a_bad_key_as_a_config_error(cft, tmp_path):
    transport = (
        '{ type = "cft", cftutil = "bin/CFTUTIL", part = "PMI035", idf = { GRO = "PMIGRO" }, '
        'wait = "poll", expect_ack = true, timeout = 60, poll_interval = 1, ack_directory = "acks", '
        'env = { CFTDIRRUNTIME = "/opt/cft/runtime" } }'
    )
    cfg = cft_config(tmp_path, transport)
    settings = load(cfg, check_files=False)
    t = transport_for(settings, settings.departments["035"])
    assert isinstance(t, CftTransport)
    assert (t.cftutil, t.part, t.wait, t.expect_ack, t.timeout, t.poll_interval) == (
        tmp_path / "bin" / "CFTUTIL",
        "PMI035",
        "poll",
        True,
        60.0,
        1.0,
    )
    assert t.ack_directory == tmp_path / "acks" and t.env["CFTDIRRUNTIME"] == "/opt/cft/runtime"
    assert t.journal.path == tmp_path / "trace" / "flux-pmi.sqlite" and t.send_template == SEND_TEMPLATE
    cfg = cft_config(tmp_path, transport.replace('wait = "poll"', 'wait = "later"'))
    with pytest.raises(ConfigError, match=r"departments\.035\.transport: wait"):
        load(cfg, check_files=False)  # validated once, when the configuration is loaded


def test_from_config_without_timeout_takes_the_delivery_timeout(tmp_path):
    transport = '{ type = "cft", cftutil = "bin/CFTUTIL", part = "PMI035", idf = { GRO = "PMIGRO" } }'
    settings = load(cft_config(tmp_path, transport, "timeout_seconds = 45"), check_files=False)
    t = transport_for(settings, settings.departments["035"])
    assert t.timeout == 45.0 and t.expect_ack is False and t.wait == "swaitcat"
    settings = load(cft_config(tmp_path, transport), check_files=False)
    assert transport_for(settings, settings.departments["035"]).timeout == settings.delivery.timeout_seconds


# -- check and acks ---------------------------------------------------------------------------


def test_check_finds_cftutil_and_the_partner(cft):
    cft.partners(PMI035={"behaviour": "ok"})
    results = cft.transport().check()
    assert [(r.ok, r.what) for r in results] == [(True, "CFTUTIL executable"), (True, "CFT partner defined")]
    assert [c["cmd"] for c in cft.calls()] == ["LISTPART"] and cft.calls()[0]["ID"] == "PMI035"


def test_check_reports_an_unknown_partner(cft):
    cft.partners(PMI035={"behaviour": "ok"})
    results = cft.transport(part="PMI099").check()
    assert [(r.ok, r.what) for r in results] == [
        (True, "CFTUTIL executable"),
        (False, "CFT partner not defined"),
    ]
    assert "PMI099" in results[1].detail and "CFTU24W" in results[1].detail and "rc=4" in results[1].detail


def test_check_reports_a_missing_or_non_executable_cftutil(cft, tmp_path):
    missing = cft.transport(cftutil=tmp_path / "no" / "CFTUTIL").check()
    assert [(r.ok, r.what) for r in missing] == [(False, "CFTUTIL not executable")]
    plain = tmp_path / "CFTUTIL"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    assert not cft.transport(cftutil=plain).check()[0].ok
    assert cft.calls() == []


def test_acks_come_from_the_ack_directory(cft, tmp_path):
    acks = tmp_path / "acks"
    t = cft.transport(ack_directory=acks)
    assert t.fetch_acks() == []
    acks.mkdir()
    (acks / "ACK_GRO_035_20261123_000001.xml").write_bytes(b"<ack/>")
    (acks / ".partial").write_bytes(b"")
    [ack] = t.fetch_acks()
    assert (ack.department, ack.name, ack.data) == ("035", "ACK_GRO_035_20261123_000001.xml", b"<ack/>")
    t.remove_ack(ack.name)
    assert t.fetch_acks() == [] and cft.transport().fetch_acks() == []


# -- a demo night -----------------------------------------------------------------------------


def open_cft_delivered(root: Path, home: Path, parts: dict[str, str]) -> dict[str, bytes]:
    """What each CFT partner received, opened as its département would (support.open_delivered's twin)."""
    from flux_pmi.seal import certs, cms

    out: dict[str, bytes] = {}
    ca = certs.load_certificate(root / "pki" / "cnaf.crt")
    for part, dept in parts.items():
        cert = certs.load_certificate(root / "pki" / f"{dept}.crt")
        key = certs.load_private_key(root / "pki" / f"{dept}.key", None)
        for p in sorted((home / "delivered" / part).glob("*.p7m")):
            out[f"{dept}/{p.name}"] = cms.open_sealed(
                p.read_bytes(), recipient_cert=cert, recipient_key=key, trusted_signers=[ca]
            )
    return out


def test_a_demo_night_over_cft_delivers_to_the_good_partner_and_loses_nothing_for_the_bad_one(cft, tmp_path):
    root = tmp_path / "demo"
    result = make_demo(root, departments="035,056")
    cft.partners(PMI035={"behaviour": "ok"}, PMI056={"behaviour": "error"})
    cfg = root / "flux-pmi.toml"
    text = cfg.read_text()
    for code in ("035", "056"):
        text = text.replace(
            f'[departments."{code}"]\n',
            f'[departments."{code}"]\ntransport = {{ type = "cft", cftutil = "{cft.exe}", part = "PMI{code}", '
            f'idf = {{ DSG = "PMIDSG", SGR = "PMISGR", GRO = "PMIGRO" }}, env = {{ FAKE_CFT_HOME = "{cft.home}" }} }}\n',
        )
    cfg.write_text(text)

    report = Night(load(cfg), clock=FixedClock(NOW), sleep=lambda _s: None).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.UNDELIVERED and report.undelivered == 3
    delivered = open_cft_delivered(root, cft.home, {"PMI035": "035", "PMI056": "056"})
    assert sorted(n.split("/")[1][:3] for n in delivered) == ["DSG", "GRO", "SGR"]
    assert all(n.startswith("035/") for n in delivered)
    assert any("PMI056" in p and "DIAGI 405" in p for p in report.problems)
    trace = TraceStore(root / "trace" / "flux-pmi.sqlite")
    rows = trace.db.execute("SELECT department, status, file_name, last_error FROM emissions").fetchall()
    trace.close()
    assert sorted((r["department"], r["status"]) for r in rows).count(("035", "delivered")) == 3
    pending = [r for r in rows if r["department"] == "056"]
    assert len(pending) == 3 and all(r["status"] != "delivered" for r in pending)
    archive = ArchiveStore(root / "archive")
    assert all(
        archive.sealed_path(BUSINESS_DATE, r["file_name"]).is_file() for r in pending
    )  # kept for the next night

    cft.partners(PMI035={"behaviour": "ok"}, PMI056={"behaviour": "ok"})
    again = Night(load(cfg), clock=FixedClock(NOW), sleep=lambda _s: None).run(BUSINESS_DATE)
    assert again.exit_code == ExitCode.OK, again.problems
    delivered = open_cft_delivered(root, cft.home, {"PMI035": "035", "PMI056": "056"})
    assert sorted(n.split("/")[0] for n in delivered) == ["035"] * 3 + ["056"] * 3
    assert sum(record_fingerprints(delivered).values()) == result.records - result.bad
    assert len([c for c in cft.calls("SEND") if c["PART"] == "PMI035"]) == 3  # 035 was not sent twice
    assert os.stat(root / "trace" / "flux-pmi.sqlite").st_mode & 0o077 == 0
    journal = read_journal(root / "trace" / "flux-pmi.sqlite", JournalTransport.CFT, "035")
    assert len(journal) == 3 and {e.step for e in journal.values()} == {"X"}


def test_the_operator_forgets_a_file_held_without_idtu_and_the_next_run_sends_it_once(cft, tmp_path):
    # SEND accepted without an IDTU: the file is held (it may be at the partner). The operator
    # looks at CFT's catalog, finds nothing, and forgets the row with `flux-pmi journal --forget`.
    root = tmp_path / "demo"
    make_demo(root, departments="035")
    cft.partners(PMI035={"behaviour": "ok", "no_idtu": True})
    cfg = root / "flux-pmi.toml"
    cfg.write_text(cfg.read_text().replace(
        '[departments."035"]\n',
        f'[departments."035"]\ntransport = {{ type = "cft", cftutil = "{cft.exe}", part = "PMI035", '
        f'idf = {{ DSG = "PMIDSG", SGR = "PMISGR", GRO = "PMIGRO" }}, env = {{ FAKE_CFT_HOME = "{cft.home}" }} }}\n'))
    first = Night(load(cfg), clock=FixedClock(NOW), sleep=lambda _s: None).run(BUSINESS_DATE)
    # The first file is held; the département's next ones wait behind it, in sequence.
    assert first.exit_code == ExitCode.UNDELIVERED and len(cft.calls("SEND")) == 1
    [problem] = [p for p in first.problems if "gave no IDTU" in p]
    trace_db = root / "trace" / "flux-pmi.sqlite"  # the installation's: the delivery journal is a table of it
    [name] = read_journal(trace_db, JournalTransport.CFT, "035")
    assert f"flux-pmi journal 035 --transport cft --forget {name} --reason" in problem

    listed = run_cli("journal", "035", "--config", str(cfg), "--transport", "cft")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(f"cft 035 {name} step ? (updated ") and "idtu" not in listed.stdout

    refused = run_cli("journal", "035", "--config", str(cfg), "--transport", "cft", "--forget", name)
    assert refused.returncode == ExitCode.USAGE and "--reason" in refused.stderr  # why is required
    unknown = run_cli("journal", "035", "--config", str(cfg), "--transport", "cft", "--forget", "nope.p7m",
                      "--reason", "typo")
    assert unknown.returncode == ExitCode.REFUSED and "no row for 'nope.p7m'" in unknown.stderr
    done = run_cli("journal", "035", "--config", str(cfg), "--transport", "cft", "--forget", name,
                   "--reason", "not in the CFT catalog", "--by", "ops-night")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"forgotten: cft 035 {name} step ?")
    assert read_journal(trace_db, JournalTransport.CFT, "035") == {}
    trace = TraceStore(root / "trace" / "flux-pmi.sqlite")
    [anomaly] = trace.db.execute("SELECT kind, department, file, detail FROM anomalies"
                                 " WHERE kind='journal-row-forgotten'").fetchall()
    trace.close()
    assert tuple(anomaly) == ("journal-row-forgotten", "035", name,
                              "cft step ? forgotten by ops-night: not in the CFT catalog")

    # The next run sends it afresh, then the files that waited behind it: each once.
    cft.partners(PMI035={"behaviour": "ok"})
    second = Night(load(cfg), clock=FixedClock(NOW), sleep=lambda _s: None).run(BUSINESS_DATE)
    assert second.exit_code == ExitCode.OK, second.problems
    sends = cft.calls("SEND")
    assert len(sends) == 4 and name in sends[1]["FNAME"]
    assert {e.step for e in read_journal(trace_db, JournalTransport.CFT, "035").values()} == {"X"}
    # A transfer known to be done is never forgotten: the file would go twice.
    again = run_cli("journal", "035", "--config", str(cfg), "--transport", "cft", "--forget", name,
                    "--reason", "by mistake")
    assert again.returncode == ExitCode.REFUSED and "this step cannot be forgotten" in again.stderr
    assert run_cli("journal", "035", "--config", str(cfg), "--transport", "ftp").returncode == ExitCode.USAGE
