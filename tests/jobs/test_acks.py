"""Acknowledgements end to end: a demo night delivers to the local drop, receivers write acks back."""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from support import BUSINESS_DATE, NOW, make_demo

from flux_pmi.config.settings import load
from flux_pmi.core.clock import PARIS, FixedClock
from flux_pmi.core.errors import ExitCode, RefusedError, TransportError
from flux_pmi.core.names import ack_name
from flux_pmi.jobs import acks
from flux_pmi.jobs.night import Night
from flux_pmi.schemas import xsd_path
from flux_pmi.schemas.ack import MAX_ACK_BYTES, Ack, AckError, build_ack, parse_ack
from flux_pmi.testing.mock import ScriptedPartner
from flux_pmi.trace.lifecycle import Status
from flux_pmi.trace.store import TraceStore
from flux_pmi.transport.local import LocalDrop
from flux_pmi.transport.registry import transport_for

LATER = NOW + timedelta(hours=6)
TAKEN = datetime(2026, 11, 23, 9, 30, 12, tzinfo=PARIS)  # the receiver's "prise en compte"
SECRET_TEXT = "Mme Jeanne Exemple, 12 rue des Lilas"  # a Libelle breaking the contract: must not leak


@pytest.fixture(scope="module")
def delivered_template(tmp_path_factory):
    """One demo night, run once and copied per test: the night is the slow part."""
    root = tmp_path_factory.mktemp("acks") / "demo"
    make_demo(root)
    report = Night(load(root / "flux-pmi.toml"), clock=FixedClock(NOW), sleep=lambda _s: None).run(
        BUSINESS_DATE
    )
    assert report.exit_code == ExitCode.OK, report.problems
    return root


@pytest.fixture
def night_root(delivered_template, tmp_path):
    root = tmp_path / "demo"
    subprocess.run(["cp", "-a", str(delivered_template), str(root)], check=True)
    # The config names relative paths only, so the copy is self-contained.
    return root


@pytest.fixture
def open_env(night_root):
    """Loads the (possibly edited) config and opens the trace; closed at teardown."""
    stores: list[TraceStore] = []

    def opener():
        settings = load(night_root / "flux-pmi.toml")
        stores.append(TraceStore(settings.paths.trace))
        return night_root, settings, stores[-1]

    yield opener
    for store in stores:
        store.close()


@pytest.fixture
def env(open_env):
    return open_env()


def delivered(root: Path, dept: str, flow: str = "GRO") -> tuple[str, str]:
    """(file name, SHA-256) of the département's delivered file of `flow`, read from its .sha256 marker."""
    p7m = next((root / "drop" / dept).glob(f"{flow}_{dept}_*.p7m"))
    return p7m.name, (p7m.parent / (p7m.name + ".sha256")).read_text().split()[0]


def write_ack(
    root: Path,
    dept: str,
    file_name: str,
    sha256: str,
    status: str = "OK",
    code: str = "OK",
    text: str = "pris en compte",
    at: datetime = TAKEN,
    name: str | None = None,
) -> Path:
    folder = root / "drop" / dept / "acks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or ack_name(file_name))
    path.write_bytes(build_ack(file_name, sha256, status, code, text, at))
    return path


def row(trace: TraceStore, dept: str, file_name: str):
    return trace.db.execute(
        "SELECT * FROM emissions WHERE department=? AND file_name=?", (dept, file_name)
    ).fetchone()


def anomalies(trace: TraceStore) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in trace.db.execute("SELECT kind, department, file FROM anomalies ORDER BY id")]


def ack_rows(trace: TraceStore) -> list[tuple[str, str]]:
    return [tuple(r) for r in trace.db.execute("SELECT ack_name, outcome FROM acks ORDER BY id")]


def set_option(root: Path, dept: str, line: str) -> None:
    cfg = root / "flux-pmi.toml"
    cfg.write_text(cfg.read_text().replace(f'[departments."{dept}"]\n', f'[departments."{dept}"]\n{line}\n'))


# --- the format -------------------------------------------------------------------------


def test_build_and_parse_round_trip():
    data = build_ack(
        "SGR_02A_20261123_000003_P2of3_R01.zip.p7m",
        "0f" * 32,
        "KO",
        "DECRYPT",
        "déchiffrement impossible",
        TAKEN,
    )
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    ack = parse_ack(data)
    assert ack == Ack(
        "SGR_02A_20261123_000003_P2of3_R01.zip.p7m",
        "0f" * 32,
        "KO",
        "DECRYPT",
        "déchiffrement impossible",
        TAKEN,
    )
    assert ack.at.utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize(
    "args, where",
    [
        (("GRO_035_20261123_000001.zip.p7m", "a" * 64, "OK", "OK", ""), "Fichier"),  # GRO is .xml
        (("../GRO_035_20261123_000001.xml.p7m", "a" * 64, "OK", "OK", ""), "Fichier"),
        (("GRO_035_20261123_000001.xml.p7m", "A" * 64, "OK", "OK", ""), "Empreinte"),  # lowercase hex only
        (("GRO_035_20261123_000001.xml.p7m", "a" * 63, "OK", "OK", ""), "Empreinte"),
        (("GRO_035_20261123_000001.xml.p7m", "a" * 64, "MAYBE", "OK", ""), "Statut"),
        (("GRO_035_20261123_000001.xml.p7m", "a" * 64, "KO", "bad code", ""), "Code"),
        (("GRO_035_20261123_000001.xml.p7m", "a" * 64, "KO", "SCHEMA", "x" * 501), "Libelle"),
    ],
)
def test_build_refuses_fields_out_of_the_contract(args, where):
    with pytest.raises(AckError, match=where):
        build_ack(*args, TAKEN)


def test_build_refuses_a_timestamp_without_offset_and_control_characters():
    with pytest.raises(AckError, match="offset"):
        build_ack("GRO_035_20261123_000001.xml.p7m", "a" * 64, "OK", "OK", "", datetime(2026, 11, 23, 9))
    with pytest.raises(AckError, match="characters"):
        build_ack("GRO_035_20261123_000001.xml.p7m", "a" * 64, "OK", "OK", "a\x00b", TAKEN)


def test_parse_refuses_a_too_large_ack_before_reading_it():
    data = build_ack("GRO_035_20261123_000001.xml.p7m", "a" * 64, "OK", "OK", "", TAKEN)
    padded = data + b" " * (MAX_ACK_BYTES - len(data) + 1)
    with pytest.raises(AckError, match="larger than 65536 bytes"):
        parse_ack(padded)
    parse_ack(data + b" " * (MAX_ACK_BYTES - len(data)))  # exactly at the cap is fine


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE AccuseReception [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<AccuseReception xmlns="urn:flux-pmi:ack:1"><Fichier>&x;</Fichier></AccuseReception>"""


@pytest.mark.parametrize(
    "data, reason",
    [
        (XXE, "DOCTYPE"),
        (b"<AccuseReception xmlns='urn:flux-pmi:ack:1'><Fichier>", "not well-formed"),
        (b"", "not well-formed"),
        (b"<Other/>", "validation root"),
    ],
)
def test_parse_refuses_entities_and_broken_documents_without_quoting_them(data, reason):
    with pytest.raises(AckError, match=reason) as exc:
        parse_ack(data)
    assert "passwd" not in str(exc.value) and "root:" not in str(exc.value)


def test_parse_refuses_a_value_without_quoting_it():
    data = build_ack("GRO_035_20261123_000001.xml.p7m", "a" * 64, "OK", "OK", "", TAKEN)
    forged = data.replace(b"GRO_035_20261123_000001.xml.p7m", b"Jeanne EXEMPLE")
    with pytest.raises(AckError) as exc:
        parse_ack(forged)
    assert "Fichier" in str(exc.value) and "EXEMPLE" not in str(exc.value)


def test_parse_refuses_an_ack_that_is_not_utf8():
    data = build_ack("GRO_035_20261123_000001.xml.p7m", "a" * 64, "OK", "OK", "reçu", TAKEN)
    latin = data.decode("utf-8").replace("UTF-8", "ISO-8859-1").encode("iso-8859-1")
    with pytest.raises(AckError, match="UTF-8"):
        parse_ack(latin)


def test_the_ack_xsd_validates_with_xmllint(tmp_path):
    good = tmp_path / "GRO_035_20261123_000001.xml.p7m.ack.xml"
    good.write_bytes(
        build_ack(
            "GRO_035_20261123_000001.xml.p7m",
            "a" * 64,
            "KO",
            "SEQUENCE_DUPLICATE",
            "séquence déjà reçue",
            TAKEN,
        )
    )
    out = subprocess.run(
        ["xmllint", "--noout", "--nonet", "--schema", str(xsd_path("ACK")), str(good)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    naive = tmp_path / "naive.ack.xml"
    naive.write_bytes(good.read_bytes().replace(b"T09:30:12+01:00", b"T09:30:12"))
    out = subprocess.run(
        ["xmllint", "--noout", "--nonet", "--schema", str(xsd_path("ACK")), str(naive)],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "Horodatage" in out.stderr
    with pytest.raises(AckError, match="Horodatage"):
        parse_ack(naive.read_bytes())  # lxml and xmllint agree


def test_the_documentation_carries_the_schema_as_it_is():
    doc = (xsd_path("ACK").parents[1] / "docs" / "acks.md").read_text(encoding="utf-8")
    schema = xsd_path("ACK").read_text(encoding="utf-8").split("\n", 1)[1].strip()
    assert schema in doc


# --- collecting ---------------------------------------------------------------------------


def test_an_ok_ack_records_the_receivers_timestamp_and_is_removed(env):
    root, settings, trace = env
    name, sha = delivered(root, "035")
    path = write_ack(root, "035", name, sha)
    summary = acks.collect(settings, trace, transport_for, LATER)
    assert (summary.recorded_ok, summary.recorded_ko, summary.anomalies, summary.errors) == (1, 0, 0, [])
    r = row(trace, "035", name)
    assert r["status"] == Status.ACKNOWLEDGED and r["ack_status"] == "OK" and r["ack_code"] == "OK"
    assert r["acknowledged_at"] == TAKEN.isoformat()  # the receiver's time, not ours
    assert not path.exists()
    assert ack_rows(trace) == [(path.name, "recorded")]
    events = trace.db.execute(
        "SELECT from_status, to_status, at FROM emission_events WHERE emission_id=? ORDER BY id DESC LIMIT 1",
        (r["id"],),
    ).fetchone()
    assert tuple(events) == ("delivered", "acknowledged", LATER.isoformat())


def test_a_second_collect_records_nothing_new(env):
    root, settings, trace = env
    for dept in ("035", "02A"):
        for flow in ("DSG", "SGR", "GRO"):
            write_ack(root, dept, *delivered(root, dept, flow))
    first = acks.collect(settings, trace, transport_for, LATER)
    assert first.recorded_ok == 6
    before = (
        ack_rows(trace),
        anomalies(trace),
        trace.db.execute("SELECT COUNT(*) FROM emission_events").fetchone()[0],
    )
    second = acks.collect(settings, trace, transport_for, LATER + timedelta(hours=1))
    assert (second.recorded_ok, second.recorded_ko, second.anomalies, second.duplicates) == (0, 0, 0, 0)
    after = (
        ack_rows(trace),
        anomalies(trace),
        trace.db.execute("SELECT COUNT(*) FROM emission_events").fetchone()[0],
    )
    assert after == before
    assert not [p for p in (root / "drop").glob("*/acks/*")]


def test_an_ack_sent_twice_is_a_duplicate_and_changes_nothing(env):
    root, settings, trace = env
    name, sha = delivered(root, "035")
    write_ack(root, "035", name, sha)
    acks.collect(settings, trace, transport_for, LATER)
    write_ack(root, "035", name, sha, at=TAKEN + timedelta(hours=2))
    summary = acks.collect(settings, trace, transport_for, LATER)
    assert (summary.recorded_ok, summary.duplicates, summary.anomalies) == (0, 1, 0)
    assert row(trace, "035", name)["acknowledged_at"] == TAKEN.isoformat()
    assert [o for _, o in ack_rows(trace)] == ["recorded", "duplicate"]


def test_a_ko_marks_the_emission_refused_and_the_next_night_does_not_redeliver_it(env):
    root, settings, trace = env
    name, sha = delivered(root, "035", "SGR")
    p7m = root / "drop" / "035" / name
    p7m.unlink()  # had the next night redelivered it, it would be back
    write_ack(root, "035", name, sha, status="KO", code="DECRYPT", text=SECRET_TEXT)
    with capture_logs() as logs:
        summary = acks.collect(settings, trace, transport_for, LATER)
    assert (summary.recorded_ok, summary.recorded_ko, summary.reemitted) == (0, 1, [])
    r = row(trace, "035", name)
    assert (r["status"], r["ack_status"], r["ack_code"], r["last_error"]) == (
        Status.REFUSED,
        "KO",
        "DECRYPT",
        "KO ack: DECRYPT",
    )
    assert r["acknowledged_at"] is None
    assert r["id"] not in {e.id for e in trace.to_deliver()}
    # The reason text stays out of the log and the trace.
    assert any(e["event"] == "ack.recorded" and e["code"] == "DECRYPT" for e in logs)
    assert SECRET_TEXT not in repr(logs)
    assert SECRET_TEXT not in "\n".join(trace.db.iterdump())

    report = Night(settings, clock=FixedClock(LATER), sleep=lambda _s: None).run(BUSINESS_DATE, trace=trace)
    assert report.exit_code == ExitCode.OK and report.undelivered == 0
    assert report.totals().delivered == 0 and not p7m.exists()
    assert row(trace, "035", name)["status"] == Status.REFUSED


def test_a_ko_with_reemit_on_ko_calls_the_injected_reemit_with_the_emission_id(night_root, open_env):
    set_option(night_root, "035", "reemit_on_ko = true")
    root, settings, trace = open_env()
    assert settings.departments["035"].options["reemit_on_ko"] is True
    ko_name, ko_sha = delivered(root, "035")
    write_ack(root, "035", ko_name, ko_sha, status="KO", code="SCHEMA")
    other_name, other_sha = delivered(root, "02A")  # the option is off there: recorded, not re-emitted
    write_ack(root, "02A", other_name, other_sha, status="KO", code="SCHEMA")
    calls: list[tuple[int, str]] = []
    summary = acks.collect(
        settings, trace, transport_for, LATER, reemit=lambda eid, *, reason: calls.append((eid, reason))
    )
    ko_id = row(trace, "035", ko_name)["id"]
    assert calls == [(ko_id, "automatic on KO ack SCHEMA")]
    assert summary.reemitted == [ko_id] and summary.recorded_ko == 2 and summary.errors == []


def test_without_a_reemit_callable_a_ko_is_only_recorded(night_root, open_env):
    set_option(night_root, "035", "reemit_on_ko = true")
    root, settings, trace = open_env()
    write_ack(root, "035", *delivered(root, "035"), status="KO", code="SIGNATURE")
    summary = acks.collect(settings, trace, transport_for, LATER)
    assert summary.recorded_ko == 1 and summary.reemitted == []


class Crash(BaseException):
    """Stands for the process dying (SIGKILL) inside the re-emission."""


def test_a_crash_between_recording_a_ko_and_reemitting_is_completed_by_the_next_collect(night_root, open_env):
    set_option(night_root, "035", "reemit_on_ko = true")
    root, settings, trace = open_env()
    name, sha = delivered(root, "035")
    path = write_ack(root, "035", name, sha, status="KO", code="SCHEMA")

    def dies(eid, *, reason):
        raise Crash

    with pytest.raises(Crash):
        acks.collect(settings, trace, transport_for, LATER, reemit=dies)
    assert row(trace, "035", name)["ack_status"] == "KO" and path.exists()  # recorded, not removed
    calls: list[int] = []
    summary = acks.collect(
        settings, trace, transport_for, LATER, reemit=lambda eid, *, reason: calls.append(eid)
    )
    assert calls == [row(trace, "035", name)["id"]] and summary.duplicates == 1 and not path.exists()


def test_a_refused_reemission_is_reported_and_the_ko_stays_recorded(night_root, open_env):
    set_option(night_root, "035", "reemit_on_ko = true")
    root, settings, trace = open_env()
    name, sha = delivered(root, "035")
    path = write_ack(root, "035", name, sha, status="KO", code="SCHEMA")

    def refuses(eid, *, reason):
        raise RefusedError("outside the retention period")

    summary = acks.collect(settings, trace, transport_for, LATER, reemit=refuses)
    assert summary.recorded_ko == 1 and summary.reemitted == [] and summary.anomalies == 1
    assert len(summary.errors) == 1 and "outside the retention period" in summary.errors[0]
    assert anomalies(trace) == [("ack-reemit-failed", "035", name)]
    assert row(trace, "035", name)["status"] == Status.REFUSED and not path.exists()


def test_no_automatic_reemission_when_a_newer_copy_exists_or_too_many_were_made(night_root, open_env):
    set_option(night_root, "035", "reemit_on_ko = true")
    root, settings, trace = open_env()
    name, sha = delivered(root, "035")
    original = row(trace, "035", name)
    copies = [make_copy(trace, original["id"], n) for n in range(1, acks.MAX_AUTO_REEMISSIONS + 1)]
    last = copies[-1]
    trace.transition(last.id, Status.DELIVERED, LATER)
    write_ack(root, "035", name, sha, status="KO", code="SCHEMA")  # the original: copies exist already
    write_ack(root, "035", last.file_name, last.sha256, status="KO", code="SCHEMA")  # the third copy
    calls: list[int] = []
    summary = acks.collect(
        settings, trace, transport_for, LATER, reemit=lambda eid, *, reason: calls.append(eid)
    )
    assert calls == [] and summary.recorded_ko == 2
    assert anomalies(trace) == [("ack-ko-repeated", "035", last.file_name)]


def make_copy(trace: TraceStore, original_id: int, n: int):
    """A re-emission row as reemit.py makes one (here only the trace side matters)."""
    o = trace.emission(original_id)
    name = o.file_name.replace(".xml.p7m", f"_R{n:02d}.xml.p7m")
    return trace.create_reemission(
        original_id,
        LATER,
        request_id=None,
        file_name=name,
        size=o.size,
        sha256=f"{n:064x}",
        recipient_cert_sha256=None,
    )


def test_an_ack_for_a_reemitted_copy_works_the_same_and_waits_for_its_delivery(env):
    root, settings, trace = env
    name, _sha = delivered(root, "035")
    copy = make_copy(trace, row(trace, "035", name)["id"], 1)
    assert "_R01." in copy.file_name
    path = write_ack(root, "035", copy.file_name, copy.sha256)
    # Its delivery is not recorded yet: the ack is kept for a later collect, and nothing is recorded.
    summary = acks.collect(settings, trace, transport_for, LATER)
    assert (summary.deferred, summary.recorded_ok, summary.anomalies) == (1, 0, 0)
    assert path.exists() and ack_rows(trace) == []
    trace.transition(copy.id, Status.DELIVERED, LATER)
    summary = acks.collect(settings, trace, transport_for, LATER)
    assert summary.recorded_ok == 1 and not path.exists()
    assert trace.emission(copy.id).status == Status.ACKNOWLEDGED
    assert row(trace, "035", name)["status"] == Status.DELIVERED  # the original is another file


def test_a_forged_ack_with_another_sha256_is_an_anomaly_and_the_emission_stays_delivered(env):
    root, settings, trace = env
    name, sha = delivered(root, "035")
    path = write_ack(root, "035", name, "0" * 64)
    summary = acks.collect(settings, trace, transport_for, LATER)
    assert (summary.recorded_ok, summary.anomalies) == (0, 1)
    r = row(trace, "035", name)
    assert (r["status"], r["ack_status"], r["acknowledged_at"]) == (Status.DELIVERED, None, None)
    assert anomalies(trace) == [("ack-hash-mismatch", "035", name)]
    assert ack_rows(trace) == [(path.name, "hash-mismatch")] and not path.exists()
    # The real ack still counts afterwards.
    write_ack(root, "035", name, sha)
    assert acks.collect(settings, trace, transport_for, LATER).recorded_ok == 1


def test_an_ack_for_an_unknown_file_or_another_departments_file_is_an_anomaly(env):
    root, settings, trace = env
    write_ack(root, "035", "GRO_035_20261123_000099.xml.p7m", "a" * 64)
    elsewhere, elsewhere_sha = delivered(root, "02A")  # a real file, but not sent to 035
    write_ack(root, "035", elsewhere, elsewhere_sha)
    summary = acks.collect(settings, trace, transport_for, LATER)
    assert (summary.recorded_ok, summary.anomalies) == (0, 2)
    assert sorted(anomalies(trace)) == sorted(
        [
            ("ack-unknown-file", "035", "GRO_035_20261123_000099.xml.p7m"),
            ("ack-unknown-file", "035", elsewhere),
        ]
    )
    assert {o for _, o in ack_rows(trace)} == {"unknown-file"}
    assert row(trace, "02A", elsewhere)["status"] == Status.DELIVERED
    assert not list((root / "drop" / "035" / "acks").iterdir())


def test_invalid_and_xxe_acks_are_anomalies_and_the_others_are_still_recorded(env):
    root, settings, trace = env
    folder = root / "drop" / "035" / "acks"
    folder.mkdir()
    (folder / "a-broken.ack.xml").write_bytes(b"<AccuseReception")
    (folder / "b-xxe.ack.xml").write_bytes(XXE)
    (folder / "c-huge.ack.xml").write_bytes(b"<x>" + b" " * MAX_ACK_BYTES + b"</x>")
    name, sha = delivered(root, "035")
    write_ack(root, "035", name, sha, name="d-misnamed.ack.xml")  # valid content, name not <file>.ack.xml
    good = write_ack(root, "035", *delivered(root, "035", "DSG"))
    summary = acks.collect(settings, trace, transport_for, LATER)
    assert (summary.recorded_ok, summary.anomalies, summary.errors) == (1, 4, [])
    assert [k for k, _, _ in anomalies(trace)] == ["ack-invalid"] * 4
    assert sorted(ack_rows(trace)) == sorted(
        [
            ("a-broken.ack.xml", "invalid"),
            ("b-xxe.ack.xml", "invalid"),
            ("c-huge.ack.xml", "invalid"),
            ("d-misnamed.ack.xml", "invalid"),
            (good.name, "recorded"),
        ]
    )
    details = "\n".join(r[0] for r in trace.db.execute("SELECT detail FROM anomalies"))
    assert "DOCTYPE" in details and "larger than" in details and "root:" not in details
    assert row(trace, "035", name)["status"] == Status.DELIVERED
    assert list(folder.iterdir()) == []


def test_a_file_not_named_like_an_ack_is_left_alone(env):
    root, settings, trace = env
    name, sha = delivered(root, "035")
    partial = write_ack(root, "035", name, sha, name=ack_name(name) + ".part")  # an upload in progress
    summary = acks.collect(settings, trace, transport_for, LATER)
    assert (summary.ignored, summary.recorded_ok, summary.anomalies) == (1, 0, 0)
    assert partial.exists() and ack_rows(trace) == []
    partial.rename(partial.with_name(ack_name(name)))  # the receiver's rename completes it
    assert acks.collect(settings, trace, transport_for, LATER).recorded_ok == 1


def test_an_ok_after_a_ko_is_a_conflict_and_changes_nothing(env):
    root, settings, trace = env
    name, sha = delivered(root, "035")
    write_ack(root, "035", name, sha, status="KO", code="DECRYPT")
    acks.collect(settings, trace, transport_for, LATER)
    write_ack(root, "035", name, sha, status="OK", code="OK")
    summary = acks.collect(settings, trace, transport_for, LATER)
    assert (summary.recorded_ok, summary.anomalies) == (0, 1)
    assert anomalies(trace) == [("ack-conflict", "035", name)]
    r = row(trace, "035", name)
    assert (r["status"], r["ack_status"]) == (Status.REFUSED, "KO")


class _FetchFails(LocalDrop):
    def fetch_acks(self):
        raise TransportError(self.department, "ack folder unreachable")


class _RemoveFails(LocalDrop):
    def remove_ack(self, name):
        raise TransportError(self.department, "cannot remove")


def test_one_departments_transport_failing_does_not_stop_the_others(env):
    root, settings, trace = env
    for dept in ("035", "02A", "067", "971"):
        write_ack(root, dept, *delivered(root, dept))
    partner = ScriptedPartner()
    double = partner.transport("971")
    name971, sha971 = delivered(root, "971")
    partner.acks["971"].append(acks_file("971", name971, sha971))
    opened: list = []

    def factory(s, dept):
        if dept.code == "067":
            raise TransportError("067", "connection refused")
        if dept.code == "971":
            opened.append(double)
            return double
        t = (_FetchFails if dept.code == "02A" else LocalDrop)(dept.code, root / "drop")
        opened.append(t)
        return t

    summary = acks.collect(settings, trace, factory, LATER)
    assert summary.recorded_ok == 2  # 035 from the drop, 971 from the double
    assert len(summary.errors) == 2
    assert any("067" in e and "connection refused" in e for e in summary.errors)
    assert any("02A" in e and "ack folder unreachable" in e for e in summary.errors)
    assert row(trace, "035", delivered(root, "035")[0])["status"] == Status.ACKNOWLEDGED
    assert row(trace, "971", name971)["status"] == Status.ACKNOWLEDGED
    for dept in ("02A", "067"):
        assert row(trace, dept, delivered(root, dept)[0])["status"] == Status.DELIVERED
        assert list((root / "drop" / dept / "acks").iterdir())  # kept for the next collect
    assert partner.acks["971"] == [] and double.closed


def acks_file(dept: str, name: str, sha: str):
    from flux_pmi.transport.base import AckFile

    return AckFile(dept, ack_name(name), build_ack(name, sha, "OK", "OK", "", TAKEN))


def test_an_ack_that_cannot_be_removed_is_recorded_once(env):
    root, settings, trace = env
    name, sha = delivered(root, "035")
    path = write_ack(root, "035", name, sha)
    summary = acks.collect(settings, trace, lambda s, d: _RemoveFails(d.code, root / "drop"), LATER)
    assert summary.recorded_ok == 1 and any("cannot remove" in e for e in summary.errors)
    assert path.exists()
    again = acks.collect(settings, trace, transport_for, LATER)
    assert (again.recorded_ok, again.duplicates) == (0, 1) and not path.exists()
    assert row(trace, "035", name)["acknowledged_at"] == TAKEN.isoformat()


def test_log_lines_name_the_department_ack_outcome_and_code_only(env):
    root, settings, trace = env
    name, sha = delivered(root, "035")
    write_ack(root, "035", name, "0" * 64, status="KO", code="SCHEMA", text=SECRET_TEXT)
    with capture_logs() as logs:
        acks.collect(settings, trace, transport_for, LATER)
    line = next(e for e in logs if e["event"] == "ack.anomaly")
    assert (line["department"], line["ack"], line["outcome"], line["code"]) == (
        "035",
        ack_name(name),
        "hash-mismatch",
        "SCHEMA",
    )
    assert SECRET_TEXT not in repr(logs) and "0" * 64 not in repr(logs)
