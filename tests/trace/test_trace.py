"""The trace store and the emission lifecycle."""

from __future__ import annotations

import os
import stat
from datetime import date, datetime, timedelta

import pytest

from flux_pmi.core import workdays
from flux_pmi.core.clock import PARIS
from flux_pmi.core.errors import TraceError
from flux_pmi.trace import lifecycle
from flux_pmi.trace.journal import DeliveryJournal
from flux_pmi.trace.lifecycle import ALLOWED, Status, check_transition
from flux_pmi.trace.schema import SCHEMA_VERSION
from flux_pmi.trace.store import TraceStore

NOW = datetime(2026, 11, 23, 4, 0, tzinfo=PARIS)
DAY = date(2026, 11, 23)


@pytest.fixture
def trace(tmp_path):
    t = TraceStore(tmp_path / "trace" / "t.sqlite")
    yield t
    t.close()


def test_lifecycle_allows_the_happy_path_and_refuses_skips():
    path = [Status.BUILT, Status.SEALED, Status.ARCHIVED, Status.DELIVERED, Status.ACKNOWLEDGED]
    for a, b in zip(path, path[1:], strict=False):
        assert check_transition(a, b) == b
    for bad in [(Status.BUILT, Status.DELIVERED), (Status.SEALED, Status.DELIVERED),
                (Status.ACKNOWLEDGED, Status.DELIVERED), (Status.DELIVERED, Status.ARCHIVED)]:
        with pytest.raises(TraceError):
            check_transition(*bad)
    assert ALLOWED[Status.ACKNOWLEDGED] == frozenset({Status.PURGED})  # nothing but the retention
    assert ALLOWED[Status.PURGED] == frozenset()


# Every move the lifecycle allows, written out by hand: the map must say exactly this.
EXPECTED_MOVES = {
    (Status.BUILT, Status.BUILT), (Status.BUILT, Status.SEALED), (Status.BUILT, Status.BUILD_FAILED),
    (Status.SEALED, Status.BUILT), (Status.SEALED, Status.ARCHIVED), (Status.SEALED, Status.BUILD_FAILED),
    (Status.BUILD_FAILED, Status.BUILT), (Status.BUILD_FAILED, Status.BUILD_FAILED),
    (Status.ARCHIVED, Status.DELIVERED), (Status.ARCHIVED, Status.DELIVERY_FAILED),
    (Status.REEMITTED, Status.DELIVERED), (Status.REEMITTED, Status.DELIVERY_FAILED),
    (Status.DELIVERY_FAILED, Status.DELIVERED), (Status.DELIVERY_FAILED, Status.DELIVERY_FAILED),
    (Status.DELIVERED, Status.ACKNOWLEDGED), (Status.DELIVERED, Status.REFUSED), (Status.DELIVERED, Status.PURGED),
    (Status.ACKNOWLEDGED, Status.PURGED), (Status.REFUSED, Status.PURGED),
}


@pytest.mark.parametrize("src", list(Status))
@pytest.mark.parametrize("dst", list(Status))
def test_every_pair_of_statuses_is_allowed_or_refused_as_the_table_says(src, dst):
    if (src, dst) in EXPECTED_MOVES:
        assert check_transition(src, dst) == dst
    else:
        with pytest.raises(TraceError):
            check_transition(src, dst)


def test_the_docstring_diagram_is_the_map():
    drawn = [line.strip() for line in lifecycle.__doc__.splitlines() if " -> " in line]
    assert drawn == lifecycle.diagram()
    assert len(drawn) == len(Status)


def test_store_transitions_go_through_the_map(trace):
    run = trace.start_run("run", DAY, NOW)
    e = trace.get_or_create_emission(trace.create_batch("DSG", DAY, run, NOW, []), "DSG", "035", DAY, 1, NOW)
    trace.transition(e.id, Status.BUILD_FAILED, NOW, last_error="seal")
    with pytest.raises(TraceError):
        trace.transition(e.id, Status.DELIVERED, NOW)  # a file never archived cannot be delivered
    with pytest.raises(TraceError):
        trace.transition(e.id, Status.PURGED, NOW)  # nor purged
    assert trace.emission(e.id).status == Status.BUILD_FAILED


def test_wal_mode_and_owner_only_key(trace, tmp_path):
    assert trace.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    key = tmp_path / "trace" / "t.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    again = TraceStore(tmp_path / "trace" / "t.sqlite")
    assert again.record_ref("x") == trace.record_ref("x")  # the key persists
    again.close()


def test_sequence_is_allocated_once_per_part_and_grows_per_department(trace):
    run = trace.start_run("run", DAY, NOW)
    b = trace.create_batch("GRO", DAY, run, NOW, [])
    e1 = trace.get_or_create_emission(b, "GRO", "035", DAY, 1, NOW)
    assert trace.get_or_create_emission(b, "GRO", "035", DAY, 1, NOW).seq == e1.seq  # rebuild: same seq
    e2 = trace.get_or_create_emission(b, "GRO", "035", DAY, 2, NOW)
    other = trace.get_or_create_emission(b, "GRO", "056", DAY, 1, NOW)
    assert (e1.seq, e2.seq, other.seq) == (1, 2, 1)


def test_transition_writes_an_event_and_refuses_forbidden_moves(trace):
    run = trace.start_run("run", DAY, NOW)
    b = trace.create_batch("DSG", DAY, run, NOW, [])
    e = trace.get_or_create_emission(b, "DSG", "035", DAY, 1, NOW)
    with pytest.raises(TraceError):
        trace.transition(e.id, Status.DELIVERED, NOW)
    trace.transition(e.id, Status.SEALED, NOW)
    trace.mark_archived(e.id, NOW, file_name="DSG_035_20261123_000001.xml.p7m", size=10, sha256="ab",
                        records=[("DSG:1", DAY, date(2026, 12, 3))], rejects_count=0, run_id=run)
    got = trace.emission(e.id)
    # The contract's date as given; the law's 8 calendar days from receipt come first, so they bind.
    assert got.status == Status.ARCHIVED and got.archived_at and got.deadline == "2026-12-01"
    assert (got.contract_deadline, got.legal_deadline, got.deadline_basis) == ("2026-12-03", "2026-12-01", "law")
    events = [r["to_status"] for r in trace.db.execute(
        "SELECT to_status FROM emission_events WHERE emission_id=? ORDER BY id", (e.id,))]
    assert events == ["built", "sealed", "archived"]
    assert [x.id for x in trace.to_deliver()] == [e.id]


def test_records_are_stored_as_keyed_hashes_only(trace):
    run = trace.start_run("run", DAY, NOW)
    b = trace.create_batch("DSG", DAY, run, NOW, [])
    e = trace.get_or_create_emission(b, "DSG", "035", DAY, 1, NOW)
    trace.transition(e.id, Status.SEALED, NOW)
    key = "DSG:2900335238042"
    trace.mark_archived(e.id, NOW, file_name="f", size=1, sha256="x", records=[(key, DAY, DAY)],
                        rejects_count=0, run_id=run)
    dump = "\n".join(trace.db.iterdump())
    assert "2900335238042" not in dump
    assert trace.refs_emitted_elsewhere([trace.record_ref(key)], batch_id=b + 1) == {trace.record_ref(key)}
    assert trace.refs_emitted_elsewhere([trace.record_ref(key)], batch_id=b) == set()


def test_a_second_writer_waits_then_gets_a_clear_error(tmp_path):
    a = TraceStore(tmp_path / "t.sqlite")
    b = TraceStore(tmp_path / "t.sqlite", busy_timeout_ms=50)
    with a.tx():
        with pytest.raises(TraceError, match="locked by another process"):
            b.start_run("run", DAY, NOW)
    b.start_run("run", DAY, NOW)  # once released, it works
    a.close()
    b.close()


def test_a_version_2_trace_is_migrated_in_place_and_failed_is_told_apart(tmp_path):
    path = tmp_path / "trace" / "t.sqlite"
    with TraceStore(path) as t:
        run = t.start_run("run", DAY, NOW)
        b = t.create_batch("DSG", DAY, run, NOW, [])
        ids = [t.get_or_create_emission(b, "DSG", d, DAY, 1, NOW).id for d in ("035", "056", "067", "971")]
        # As version 2 wrote them: one `failed` for three meanings, and a purge interrupted after marking.
        t.db.execute("UPDATE emissions SET status='failed' WHERE id=?", (ids[0],))
        t.db.execute("UPDATE emissions SET status='failed', archived_at=? WHERE id=?", (NOW.isoformat(), ids[1]))
        t.db.execute("UPDATE emissions SET status='failed', archived_at=?, ack_status='KO' WHERE id=?",
                     (NOW.isoformat(), ids[2]))
        t.db.execute("UPDATE emissions SET status='acknowledged', purged_at=? WHERE id=?", (NOW.isoformat(), ids[3]))
        t.db.execute("PRAGMA user_version = 2")
    with TraceStore(path) as t:
        assert [t.emission(i).status for i in ids] == [
            Status.BUILD_FAILED, Status.DELIVERY_FAILED, Status.REFUSED, Status.PURGED]
        assert t.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 4
        assert [e.id for e in t.to_deliver()] == [ids[1]]  # only the failed delivery is retried


def test_a_version_3_trace_gets_its_delivery_journal_from_whichever_connection_opens_it_first(tmp_path):
    path = tmp_path / "trace" / "t.sqlite"
    with TraceStore(path) as t:
        t.db.execute("DROP TABLE delivery_journal")
        t.db.execute("PRAGMA user_version = 3")
    with DeliveryJournal(path) as journal:  # `check` before the first night after the upgrade
        assert journal.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert journal.db.execute("SELECT COUNT(*) FROM delivery_journal").fetchone()[0] == 0
    with TraceStore(path) as t:
        assert t.db.execute("SELECT COUNT(*) FROM delivery_journal").fetchone()[0] == 0


def test_both_deadlines_are_stored_per_record_and_the_emission_keeps_the_earliest(trace):
    run = trace.start_run("run", DAY, NOW)
    b = trace.create_batch("DSG", DAY, run, NOW, [])
    e = trace.get_or_create_emission(b, "DSG", "035", DAY, 1, NOW)
    trace.transition(e.id, Status.SEALED, NOW)
    friday, thursday = date(2026, 5, 22), date(2026, 5, 21)  # before the Pentecost weekend; the day before
    trace.mark_archived(e.id, NOW, file_name="f", size=1, sha256="x", rejects_count=0, run_id=run,
                        records=[("DSG:1", friday, workdays.deadlines(friday, "035")),
                                 ("DSG:2", thursday, workdays.Deadlines(date(2026, 5, 26), date(2026, 5, 29)))])
    rows = trace.db.execute("SELECT received, deadline, contract_deadline, legal_deadline, deadline_basis"
                            " FROM records ORDER BY received").fetchall()
    assert [tuple(r) for r in rows] == [
        ("2026-05-21", "2026-05-26", "2026-05-26", "2026-05-29", "contract"),  # a shorter contract binds
        ("2026-05-22", "2026-05-30", "2026-06-04", "2026-05-30", "law"),  # Mon 25 off: Thu 4 June vs Sat 30 May
    ]
    got = trace.emission(e.id)
    assert (got.deadline, got.contract_deadline, got.legal_deadline, got.deadline_basis) == (
        "2026-05-26", "2026-05-26", "2026-05-29", "contract")


def test_a_version_4_trace_gets_the_legal_deadline_and_keeps_the_earlier_as_deadline(tmp_path):
    path = tmp_path / "trace" / "t.sqlite"
    with TraceStore(path) as t:
        run = t.start_run("run", DAY, NOW)
        b = t.create_batch("DSG", DAY, run, NOW, [])
        e = t.get_or_create_emission(b, "DSG", "035", DAY, 1, NOW)
        empty = t.get_or_create_emission(b, "DSG", "056", DAY, 1, NOW)
        t.transition(e.id, Status.SEALED, NOW)
        t.mark_archived(e.id, NOW, file_name="f", size=1, sha256="x", rejects_count=0, run_id=run,
                        records=[("DSG:1", date(2026, 11, 10), date(2026, 11, 23)),
                                 ("DSG:2", date(2026, 11, 20), date(2026, 12, 2))])
        # As version 4 wrote them: the contract's deadline alone, in `deadline`.
        for table in ("records", "emissions"):
            for column in ("contract_deadline", "legal_deadline", "deadline_basis"):
                t.db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        t.db.execute("UPDATE records SET deadline = CASE received WHEN '2026-11-10' THEN '2026-11-23'"
                     " ELSE '2026-12-02' END")
        t.db.execute("UPDATE emissions SET deadline = '2026-11-23' WHERE id = ?", (e.id,))
        t.db.execute("PRAGMA user_version = 4")
    with TraceStore(path) as t:
        assert t.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 5
        rows = t.db.execute("SELECT received, deadline, contract_deadline, legal_deadline, deadline_basis"
                            " FROM records ORDER BY received").fetchall()
        assert [tuple(r) for r in rows] == [("2026-11-10", "2026-11-18", "2026-11-23", "2026-11-18", "law"),
                                            ("2026-11-20", "2026-11-28", "2026-12-02", "2026-11-28", "law")]
        got = t.emission(e.id)
        assert (got.deadline, got.contract_deadline, got.legal_deadline, got.deadline_basis) == (
            "2026-11-18", "2026-11-23", "2026-11-18", "law")
        nothing = t.emission(empty.id)  # no record, no clock
        assert (nothing.deadline, nothing.legal_deadline, nothing.deadline_basis) == (None, None, None)


def test_unreported_rejects_go_in_the_next_report_once(tmp_path):
    """A run killed after writing rejects, before its report: the next run's report carries them, once."""
    with TraceStore(tmp_path / "t.sqlite") as t:
        dead = t.start_run("run", DAY, NOW)
        t.add_rejects(dead, 1, [("DSG", "035", "a.xml", 3, "NIR_INVALID", "bad key")], NOW)
        later = t.start_run("run", DAY, NOW)  # finds `dead` still running: it died
        t.add_rejects(later, 1, [("DSG", "035", "a.xml", 3, "NIR_INVALID", "bad key"),  # found again
                                 ("GRO", None, "b.xml", 9, "COMMUNE_UNKNOWN", "no recipient")], NOW)
        assert [(r.file, r.line) for r in t.unreported_rejects()] == [("a.xml", 3), ("b.xml", 9)]
        t.mark_rejects_reported(later, NOW)
        assert t.unreported_rejects() == []
        assert [(r.file, r.line) for r in t.rejects_of_run(later)] == [("a.xml", 3), ("b.xml", 9)]
        t.add_rejects(t.start_run("run", DAY, NOW), 1, [("DSG", "035", "a.xml", 3, "NIR_INVALID", "x")], NOW)
        assert t.unreported_rejects() == []  # reported once: a third parse of the batch adds nothing


def test_version_8_counts_the_rejects_of_runs_that_ended_as_reported(tmp_path):
    path = tmp_path / "t.sqlite"
    with TraceStore(path) as t:
        ended, died = t.start_run("run", DAY, NOW), 0
        t.add_rejects(ended, 1, [("DSG", "035", "a.xml", 3, "NIR_INVALID", "m")], NOW)
        t.finish_run(ended, NOW, status=lifecycle.RunStatus.UNDELIVERED, exit_code=3)
        died = t.start_run("run", DAY, NOW)
        t.add_rejects(died, 2, [("GRO", "035", "b.xml", 4, "COMMUNE_UNKNOWN", "m")], NOW)
        t.db.execute("ALTER TABLE rejects DROP COLUMN reported_at")  # as version 7 left them
        t.db.execute("PRAGMA user_version = 7")
    with TraceStore(path) as t:
        assert t.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 8
        assert [(r.file, r.line) for r in t.unreported_rejects()] == [("b.xml", 4)]


def test_the_law_binds_every_record_the_contract_would_give_more_time():
    # 8 calendar days always hold a weekend, so 8 working days always end later: the law binds every
    # record, every day of the year, in every calendar (the contract binds only a re-emission request).
    for code in ("035", "067", "971", "976"):
        for n in range(366):
            received = date(2026, 1, 1) + timedelta(days=n)
            d = workdays.deadlines(received, code)
            assert d.legal < d.contract and d.basis == "law" and d.binding == d.legal


def test_the_architecture_page_draws_the_lifecycle_the_map_allows():
    from pathlib import Path

    from flux_pmi.trace.lifecycle import diagram

    page = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert "\n".join(diagram()) in page
