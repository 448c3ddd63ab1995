"""`flux-pmi status` against a state built by hand: a real demo night with one partner down.

The clock is pinned everywhere, so the whole JSON document is deterministic and is
compared to a dict written out below. The deadline numbers are worked out by hand
from the records' deadlines, which the seeded demo (seed 7) fixes and which the
`state` fixture checks first, so a change of the demo generator shows up as such
rather than as a puzzling status failure.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from support import BUSINESS_DATE, NOW, make_demo, run_cli

from flux_pmi.config.settings import load
from flux_pmi.core.clock import PARIS, FixedClock
from flux_pmi.core.errors import ConfigError, ExitCode
from flux_pmi.core.lock import RunLock, lock_path
from flux_pmi.core.names import emission_name
from flux_pmi.jobs.night import Night, NightReport
from flux_pmi.report import metrics
from flux_pmi.report.status import SCHEMA, gather, render_text
from flux_pmi.seal import certs
from flux_pmi.testing.mock import ScriptedPartner
from flux_pmi.trace.lifecycle import RunStatus, Status
from flux_pmi.trace.store import TraceStore

DEPTS = ["02A", "035", "067", "971"]
AT = NOW + timedelta(minutes=30)  # when the acks, requests and anomaly below are recorded
AT_S = "2026-11-23T04:30:00+01:00"
NOW_S = "2026-11-23T04:00:00+01:00"
ACK_OK_AT = "2026-11-23T04:20:00+01:00"  # the partner's own timestamp in its OK ack

# 067's records by deadline (seed 7, real shapes), all undelivered since 067 is down. Each deadline
# is received + 8 jours ouvrés in Bas-Rhin, received as docs/input-contract.md says: DSG the Paris
# date of dsgcnaf:Date; GRO motif 01 the earliest of DTDECLGRO and the flow's DTREF/DTCREAFLUX
# (Fri 20 Nov), GRO motifs 02/03 the flow's dates (their DTDECLGRO is a declaration to another Caf);
# SGR the earliest of DTCREASDP and the flow's dates. The inbox holds, for 067 (commune 67482):
#   DSG (15; the DATE_ORDER reject is a Thu 19): Mon16 x2, Tue17 x1, Wed18 x4, Thu19 x3, Fri20 x5;
#   GRO (16; the CODE_UNKNOWN reject aside): two mutations (declared Sat 1 Aug and Wed 7 Oct to the
#     Caf she left: received Fri 20, DTREF), DTDECLGRO Tue 10 Nov, Thu 12 Nov, Mon16 x2, Tue17 x1,
#     Wed18 x2, Thu19 x4, Fri20 x2, and one birth without DTDECLGRO (-> DTREF Fri 20);
#   SGR (12): DTCREASDP Tue17 x3, Wed18 x1, Thu19 x4, Fri20 x4.
# The contract's 8 jours ouvrés: Mon16 -> Tue17 .. Fri20, Mon23 .. Thu26: Thu 26 Nov; Tue17 -> Fri 27;
# Wed18 -> Mon 30; Thu19 -> Tue 1 Dec; Fri20 -> Wed 2 Dec; Thu12 -> Fri13 .. Tue24: Tue 24 Nov; Tue 10 Nov ->
# (Wed 11 Armistice) Thu12 .. Mon23: Mon 23 Nov.
CONTRACT_DEADLINES_067 = {
    "2026-11-23": 1,  # GRO
    "2026-11-24": 1,  # GRO
    "2026-11-26": 4,  # DSG 2 + GRO 2
    "2026-11-27": 5,  # DSG 1 + GRO 1 + SGR 3
    "2026-11-30": 7,  # DSG 4 + GRO 2 + SGR 1
    "2026-12-01": 11,  # DSG 3 + GRO 4 + SGR 4
    "2026-12-02": 14,  # DSG 5 + GRO 5 (3 + the 2 mutations) + SGR 4
}
# The law's 8 calendar days from the same receipt come first every time, so they are the `deadline`:
# Tue 10 -> Wed 18; Thu 12 -> Fri 20; Mon16 -> Tue 24; Tue17 -> Wed 25; Wed18 -> Thu 26; Thu19 -> Fri 27;
# Fri20 -> Sat 28 Nov.
DEADLINES_067 = {
    "2026-11-18": 1,
    "2026-11-20": 1,
    "2026-11-24": 4,
    "2026-11-25": 5,
    "2026-11-26": 7,
    "2026-11-27": 11,
    "2026-11-28": 14,
}


def paris(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS)


@pytest.fixture
def state(tmp_path):
    """A demo night at NOW (Mon 23 Nov 2026, 04:00) where 067 is down: 035, 02A and 971 delivered."""
    root = tmp_path / "demo"
    make_demo(root)
    settings = load(root / "flux-pmi.toml")
    double = ScriptedPartner(down={"067"})
    report = Night(
        settings, clock=FixedClock(NOW), sleep=lambda _s: None, transport_factory=double.factory
    ).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.UNDELIVERED
    trace = TraceStore(settings.paths.trace)
    for column, want in (("contract_deadline", CONTRACT_DEADLINES_067), ("deadline", DEADLINES_067),
                         ("legal_deadline", DEADLINES_067)):
        got = dict(
            trace.db.execute(
                f"SELECT r.{column}, COUNT(*) FROM records r JOIN emissions e ON e.id = r.emission_id"
                f" WHERE e.department = '067' GROUP BY r.{column}"
            ).fetchall()
        )
        assert got == want, "the seeded demo changed: rework the hand-computed deadlines below"
    yield root, settings, trace
    trace.close()


def emission_id(trace: TraceStore, dept: str, name: str) -> int:
    e = trace.emission_by_file(dept, name)
    assert e is not None, name
    return e.id


def add_known_events(trace: TraceStore) -> None:
    """Acks, requests, a re-emission and an anomaly, written through the trace store's own methods.

    The acks are traced as acks.py does: an OK acknowledges the emission at the partner's
    timestamp; a KO makes it `refused`, awaiting a re-emission, with its delivery kept.
    """
    dsg035 = "DSG_035_20261123_000001.xml.p7m"
    gro035 = "GRO_035_20261123_000001.xml.p7m"
    trace.transition(
        emission_id(trace, "035", gro035),
        Status.ACKNOWLEDGED,
        AT,
        acknowledged_at=ACK_OK_AT,
        ack_status="OK",
        ack_code="000",
    )
    trace.add_ack(
        AT,
        department="035",
        ack_name="ACK_GRO_035_000001.xml",
        outcome="recorded",
        file_name=gro035,
        status="OK",
        code="000",
        ack_at=ACK_OK_AT,
        emission_id=emission_id(trace, "035", gro035),
    )
    trace.transition(
        emission_id(trace, "035", dsg035),
        Status.REFUSED,
        AT,
        ack_status="KO",
        ack_code="E042",
        last_error="KO ack: E042",
    )
    trace.add_ack(
        AT,
        department="035",
        ack_name="ACK_DSG_035_000001.xml",
        outcome="recorded",
        file_name=dsg035,
        status="KO",
        code="E042",
        ack_at="2026-11-23T04:25:00+01:00",
        emission_id=emission_id(trace, "035", dsg035),
    )
    trace.add_ack(
        AT,
        department="035",
        ack_name="ACK_035_unknown.xml",
        outcome="unknown-file",
        file_name="GRO_035_20261123_000099.xml.p7m",
    )
    trace.add_anomaly(
        "ack-unknown-file",
        "acknowledgement names a file never sent",
        AT,
        department="035",
        file="ACK_035_unknown.xml",
    )
    # Mon 23 Nov + 8 jours ouvrés (971 and 035 alike, no holiday): Tue24 .. Fri27, Mon30, Tue1, Wed2, Thu3.
    pending = trace.create_request(
        AT,
        by="ops-cnaf",
        reason="GRO file lost by the PMI",
        flow="GRO",
        department="971",
        date_from=BUSINESS_DATE,
        date_to=BUSINESS_DATE,
        deadline=date(2026, 12, 3),
    )
    trace.create_request(
        AT,
        by="ops-cnaf",
        reason="test request",
        flow="all",
        department="035",
        date_from=BUSINESS_DATE,
        date_to=BUSINESS_DATE,
        deadline=date(2026, 12, 3),
        status="done",
    )
    original = emission_id(trace, "971", "GRO_971_20261123_000001.xml.p7m")
    trace.create_reemission(
        original,
        AT,
        request_id=pending,
        recipient_cert_sha256=None,
        size=123,
        sha256="0" * 64,
        file_name=emission_name("GRO", "971", BUSINESS_DATE, 1, 1, 1, reemission_no=1),
    )


def received_plus_8(contract: str | None) -> dict:
    """Both clocks of an emission from its contract deadline: its earliest receipt is 8 working days before
    (none of these weeks holds a holiday), and the law gives 8 calendar days from that receipt."""
    if contract is None:
        return {"deadline": None, "deadline_basis": None, "contract_deadline": None, "legal_deadline": None}
    legal = {"2026-11-26": "2026-11-24", "2026-11-27": "2026-11-25", "2026-11-30": "2026-11-26",
             "2026-11-25": "2026-11-23",  # GRO 035's earliest receipt is Sun 15 Nov (DTREF)
             "2026-11-23": "2026-11-18", "2026-11-20": "2026-11-17"}[contract]
    return {"deadline": legal, "deadline_basis": "law", "contract_deadline": contract, "legal_deadline": legal}


def last(
    seq_file: str,
    status: str,
    records: int,
    contract: str | None,
    *,
    delivered: bool = True,
    on_time: bool | None = None,
    ack: tuple[str, str] | None = None,
    reemission_no: int = 0,
    request_deadline: str | None = None,
) -> dict:
    clocks = received_plus_8(contract)
    if request_deadline:  # a re-emission's clock is its request's: the contract's 8 working days
        clocks.update(deadline=request_deadline, deadline_basis="contract")
    return {
        **clocks,
        "seq": 1,
        "part": 1,
        "reemission_no": reemission_no,
        "file_name": seq_file,
        "business_date": "2026-11-23",
        "status": status,
        "records": records,
        "delivered_at": NOW_S if delivered else None,
        "acknowledged_at": ACK_OK_AT if ack and ack[0] == "OK" else None,
        "ack_status": ack[0] if ack else None,
        "ack_code": ack[1] if ack else None,
        "on_time": on_time,
    }


def department(code: str, **counts) -> dict:
    item = {"department": code, "late": 0, "at_risk": 0, "late_delivered": 0, "undelivered": 0, "unacknowledged": 0,
            "held": 0, "is_held": False, "failing": False, "last_error": None, "certificates": 0,
            "next_deadline": None, "next_deadline_basis": None}
    item.update(counts)
    if item["next_deadline"]:
        item["next_deadline_basis"] = "law"
    item["attention"] = any(item[k] for k in ("late", "at_risk", "undelivered", "unacknowledged", "failing",
                                              "is_held", "certificates"))
    return item


def test_gather_gives_the_documented_document_for_a_known_state(state):
    root, settings, trace = state
    add_known_events(trace)
    now = NOW + timedelta(hours=1)
    changes = trace.db.total_changes
    data = gather(settings, trace, now=now)
    assert trace.db.total_changes == changes  # status only reads

    totals = trace.db.execute(
        "SELECT SUM(record_count), SUM(size), COUNT(*) FROM emissions WHERE reemission_no=0"
    ).fetchone()
    # The report's ADDRESSING_MISMATCH rows are warnings (records still delivered), not rejects.
    rejects = trace.db.execute("SELECT COUNT(*) FROM rejects WHERE code != 'ADDRESSING_MISMATCH'").fetchone()[0]
    run1 = {
        "id": 1,
        "command": "run",
        "business_date": "2026-11-23",
        "started_at": NOW_S,
        "finished_at": NOW_S,
        "status": "undelivered",
        "exit_code": 3,
        "records": totals[0],
        "rejects": rejects,
        "files": totals[2],
        "bytes": totals[1],
    }
    assert (run1["records"], run1["rejects"], run1["files"]) == (109, 8, 12)

    # The important keys one by one, so a failure says which.
    assert data["schema"] == SCHEMA == "flux-pmi.status/1"
    assert data["today"] == "2026-11-23" and data["generated_at"] == "2026-11-23T05:00:00+01:00"
    assert data["last_nightly"] == {"run": run1, "age_hours": 1.0, "max_age_hours": 26, "last_completed": run1,
                                    "completed_age_hours": 1.0, "stale": False}
    assert data["undelivered"]["by_department"] == {"035": 1, "067": 3, "971": 1}
    # At Mon 23 Nov, by the law (it binds every record): 067's records due Wed 18 and Fri 20 are late;
    # those due Tue 24 (1 working day) and Wed 25 (2) are at risk (4 + 5); Thu 26 is 3 working days away.
    # Its two GRO mutations were received by its Caf on Fri 20 Nov (DTREF): due Sat 28, not late. Delivered
    # late today: 971's GRO declaration (Mon 9 Nov -> Tue 17 Nov). 035's GRO mutation counts from DTREF
    # (Sun 15 Nov -> Mon 23, delivered that day): on time. 035's KO'd DSG file was delivered on time.
    assert data["sla"]["totals"] == {"at_risk": 9, "late": 2, "late_delivered": 1}
    assert (data["acks"]["ok"], data["acks"]["ko"], data["acks"]["anomalies"]) == (1, 1, 1)

    expected = {
        "schema": "flux-pmi.status/1",
        "generated_at": "2026-11-23T05:00:00+01:00",
        "today": "2026-11-23",
        "runs": [run1],
        "last_nightly": {"run": run1, "age_hours": 1.0, "max_age_hours": 26, "last_completed": run1,
                         "completed_age_hours": 1.0, "stale": False},
        "flows": [
            {
                "department": "02A",
                "flow": "DSG",
                "last_emission": last(
                    "DSG_02A_20261123_000001.xml.p7m", "delivered", 4, "2026-11-27", on_time=True
                ),
            },
            # An empty flow has no record, hence no deadline and no verdict.
            {
                "department": "02A",
                "flow": "SGR",
                "last_emission": last("SGR_02A_20261123_000001.zip.p7m", "delivered", 0, None),
            },
            {
                "department": "02A",
                "flow": "GRO",
                "last_emission": last(
                    # 5 records, the earliest a declaration of Mon 16 Nov: due Thu 26 Nov.
                    "GRO_02A_20261123_000001.xml.p7m", "delivered", 5, "2026-11-26", on_time=True
                ),
            },
            {
                "department": "035",
                "flow": "DSG",
                "last_emission": last(
                    "DSG_035_20261123_000001.xml.p7m",
                    "refused",
                    17,
                    "2026-11-27",
                    on_time=True,
                    ack=("KO", "E042"),
                ),
            },
            {
                "department": "035",
                "flow": "SGR",
                "last_emission": last(
                    "SGR_035_20261123_000001.zip.p7m", "delivered", 8, "2026-11-30", on_time=True
                ),
            },
            {
                "department": "035",
                "flow": "GRO",
                "last_emission": last(
                    "GRO_035_20261123_000001.xml.p7m",
                    "acknowledged",
                    16,
                    "2026-11-25",  # its mutation counts from DTREF, not its Mon 28 Sep declaration
                    on_time=True,
                    ack=("OK", "000"),
                ),
            },
            # Not delivered, deadline still ahead: undecided.
            {
                "department": "067",
                "flow": "DSG",
                "last_emission": last(
                    "DSG_067_20261123_000001.xml.p7m", "delivery-failed", 15, "2026-11-26", delivered=False
                ),
            },
            {
                "department": "067",
                "flow": "SGR",
                "last_emission": last(
                    "SGR_067_20261123_000001.zip.p7m", "archived", 12, "2026-11-27", delivered=False
                ),
            },
            # Not delivered, due today by the contract but Wed 18 Nov by the law (the Tue 10 Nov declaration):
            # it can no longer be on time.
            {
                "department": "067",
                "flow": "GRO",
                "last_emission": last(
                    "GRO_067_20261123_000001.xml.p7m",
                    "archived",
                    16,
                    "2026-11-23",
                    delivered=False,
                    on_time=False,
                ),
            },
            {
                "department": "971",
                "flow": "DSG",
                "last_emission": last(
                    "DSG_971_20261123_000001.xml.p7m", "delivered", 11, "2026-11-27", on_time=True
                ),
            },
            {
                "department": "971",
                "flow": "SGR",
                "last_emission": last("SGR_971_20261123_000001.zip.p7m", "delivered", 0, None),
            },
            # The re-emission is the newest file of the flow; its clock is the request's deadline.
            {
                "department": "971",
                "flow": "GRO",
                "last_emission": last(
                    "GRO_971_20261123_000001_R01.xml.p7m",
                    "re-emitted",
                    5,
                    "2026-11-20",  # the original's clocks, copied (Mon 9 Nov receipt)
                    delivered=False,
                    reemission_no=1,
                    request_deadline="2026-12-03",
                ),
            },
        ],
        "undelivered": {
            "total": 5,
            "by_department": {"035": 1, "067": 3, "971": 1},
            "emissions": [
                # Refused by the partner (KO): delivered on time, but owed again.
                {
                    "department": "035",
                    "flow": "DSG",
                    "seq": 1,
                    "part": 1,
                    "reemission_no": 0,
                    "file_name": "DSG_035_20261123_000001.xml.p7m",
                    "business_date": "2026-11-23",
                    "status": "refused",
                    "attempts": 1,
                    "last_error": "KO ack: E042",
                    "deadline": "2026-11-25",
                    "deadline_basis": "law",
                    "contract_deadline": "2026-11-27",
                    "legal_deadline": "2026-11-25",
                    "ack_status": "KO",
                },
                {
                    "department": "067",
                    "flow": "DSG",
                    "seq": 1,
                    "part": 1,
                    "reemission_no": 0,
                    "file_name": "DSG_067_20261123_000001.xml.p7m",
                    "business_date": "2026-11-23",
                    "status": "delivery-failed",
                    "attempts": 3,
                    "last_error": "partner 067: partner down (double)",
                    "deadline": "2026-11-24",
                    "deadline_basis": "law",
                    "contract_deadline": "2026-11-26",
                    "legal_deadline": "2026-11-24",
                    "ack_status": None,
                },
                # Its queue stopped at the first failure (no gap): never attempted.
                {
                    "department": "067",
                    "flow": "SGR",
                    "seq": 1,
                    "part": 1,
                    "reemission_no": 0,
                    "file_name": "SGR_067_20261123_000001.zip.p7m",
                    "business_date": "2026-11-23",
                    "status": "archived",
                    "attempts": 0,
                    "last_error": None,
                    "deadline": "2026-11-25",
                    "deadline_basis": "law",
                    "contract_deadline": "2026-11-27",
                    "legal_deadline": "2026-11-25",
                    "ack_status": None,
                },
                {
                    "department": "067",
                    "flow": "GRO",
                    "seq": 1,
                    "part": 1,
                    "reemission_no": 0,
                    "file_name": "GRO_067_20261123_000001.xml.p7m",
                    "business_date": "2026-11-23",
                    "status": "archived",
                    "attempts": 0,
                    "last_error": None,
                    "deadline": "2026-11-18",
                    "deadline_basis": "law",
                    "contract_deadline": "2026-11-23",
                    "legal_deadline": "2026-11-18",
                    "ack_status": None,
                },
                {
                    "department": "971",
                    "flow": "GRO",
                    "seq": 1,
                    "part": 1,
                    "reemission_no": 1,
                    "file_name": "GRO_971_20261123_000001_R01.xml.p7m",
                    "business_date": "2026-11-23",
                    "status": "re-emitted",
                    "attempts": 0,
                    "last_error": None,
                    "deadline": "2026-12-03",
                    "deadline_basis": "contract",
                    "contract_deadline": "2026-11-20",
                    "legal_deadline": "2026-11-17",
                    "ack_status": None,
                },
            ],
        },
        "sla": {
            "at_risk_working_days": 2,
            "totals": {"at_risk": 9, "late": 2, "late_delivered": 1},
            "by_basis": {"contract": {"at_risk": 0, "late": 0}, "law": {"at_risk": 9, "late": 2}},
            "by_department": {
                "02A": {"at_risk": 0, "late": 0, "late_delivered": 0},
                "035": {"at_risk": 0, "late": 0, "late_delivered": 0},
                "067": {"at_risk": 9, "late": 2, "late_delivered": 0},
                "971": {"at_risk": 0, "late": 0, "late_delivered": 1},
            },
            # Only undelivered records run a clock: 067's Tue 10 Nov declaration, due Wed 18 by the law.
            "next_deadline": {"067": {"deadline": "2026-11-18", "basis": "law"}},
        },
        "unacknowledged": {"days": 5.0, "total": 0, "by_department": {}, "files": []},
        "partners_failing": [
            {"department": "067", "files": 1, "attempts": 3, "last_error": "partner 067: partner down (double)"},
        ],
        "departments": [
            department("02A"),
            department("035", undelivered=1),  # the KO'd DSG, owed again
            department("067", late=2, at_risk=9, undelivered=3, failing=True, next_deadline="2026-11-18",
                       last_error="partner 067: partner down (double)"),
            department("971", late_delivered=1, undelivered=1),  # the re-emission not delivered yet
        ],
        "summary": {
            "late": 2, "at_risk": 9, "late_by_basis": {"contract": 0, "law": 2}, "unacknowledged": 0,
            "unacknowledged_days": 5.0, "held": 0, "held_files": 0, "undelivered": 5, "undelivered_not_held": 5,
            "partners_failing": 1, "certificates": 0, "stale": False, "departments_to_see": 3, "quarantined": 0,
            "inbox_not_taken": 0, "exit_code": 11, "exit_name": "LATE", "nagios": "CRITICAL", "problems": ["LATE", "UNDELIVERED", "AT_RISK"],
        },
        "scope": {"departments": None, "flows": None},
        "acks": {
            "ok": 1,
            "ko": 1,
            "anomalies": 1,
            "duplicates": 0,
            "ko_list": [
                {
                    "department": "035",
                    "file": "DSG_035_20261123_000001.xml.p7m",
                    "code": "E042",
                    "at": "2026-11-23T04:25:00+01:00",
                    "received_at": AT_S,
                }
            ],
        },
        "reemissions": {
            "pending": 1,
            "done": 1,
            "refused": 0,
            "requests": [
                {
                    "id": 1,
                    "requested_at": AT_S,
                    "requested_by": "ops-cnaf",
                    "reason": "GRO file lost by the PMI",
                    "flow": "GRO",
                    "department": "971",
                    "date_from": "2026-11-23",
                    "date_to": "2026-11-23",
                    "deadline": "2026-12-03",
                    "status": "pending",
                    "done_at": None,
                    "overdue": False,
                },
                {
                    "id": 2,
                    "requested_at": AT_S,
                    "requested_by": "ops-cnaf",
                    "reason": "test request",
                    "flow": "all",
                    "department": "035",
                    "date_from": "2026-11-23",
                    "date_to": "2026-11-23",
                    "deadline": "2026-12-03",
                    "status": "done",
                    "done_at": AT_S,
                    "overdue": False,
                },
            ],
        },
        "certificates": [],  # the demo PKI is valid for two years from NOW
        "anomalies": [
            {
                "kind": "ack-unknown-file",
                "at": AT_S,
                "department": "035",
                "file": "ACK_035_unknown.xml",
                "detail": "acknowledgement names a file never sent",
            }
        ],
        "holds": {"active": [], "history": []},
        "parked": {"batches": 0, "by_department": {}, "records": 0},
        "quarantine": {"total": 0, "by_flow": {}, "scoped_out": False},
        "inbox_not_taken": {"total": 0, "by_flow": {}, "scoped_out": False},
    }
    assert data == expected
    # What `status --json` prints is exactly this, through a JSON round trip.
    assert json.loads(json.dumps(data, indent=2, sort_keys=True)) == expected


def sla_at(settings, trace, when: datetime) -> dict:
    return gather(settings, trace, now=when)["sla"]


def test_records_at_risk_and_late_as_the_clock_moves(state):
    _root, settings, trace = state
    zero = {"at_risk": 0, "late": 0, "late_delivered": 0}

    # Tue 24 Nov, 04:00 (binding deadlines are the law's, DEADLINES_067): due Wed 18 and Fri 20 are late
    # (1 + 1); due today, Wed 25 (1 working day) and Thu 26 (2) are at risk: 4 + 5 + 7 = 16.
    sla = sla_at(settings, trace, paris(2026, 11, 24, 4, 0))
    assert sla["by_department"]["067"] == {"at_risk": 16, "late": 2, "late_delivered": 0}
    assert sla["by_basis"] == {"contract": {"at_risk": 0, "late": 0}, "law": {"at_risk": 16, "late": 2}}

    # Thu 26 Nov: due Thu 26, Fri 27 and Sat 28 (1 working day away: Fri 27) are at risk: 7 + 11 + 14 = 32;
    # due 18, 20, 24 and 25 Nov are late: 1 + 1 + 4 + 5 = 11.
    sla = sla_at(settings, trace, paris(2026, 11, 26, 4, 0))
    assert sla["by_department"]["067"] == {"at_risk": 32, "late": 11, "late_delivered": 0}
    assert sla["by_department"]["02A"] == zero

    # Fri 27 Nov: due today (11) and Sat 28 (14) are at risk; the rest (2 + 4 + 5 + 7 = 18) are late.
    # 971's late delivery of Mon 23 stays as it was.
    sla = sla_at(settings, trace, paris(2026, 11, 27, 4, 0))
    assert sla["by_department"]["067"] == {"at_risk": 25, "late": 18, "late_delivered": 0}
    assert sla["totals"] == {"at_risk": 25, "late": 18, "late_delivered": 1}

    # Mon 30 Nov: all 43 are late (the contract would still give them until Wed 2 Dec).
    assert sla_at(settings, trace, paris(2026, 11, 30, 4, 0))["by_department"]["067"] == {
        "at_risk": 0, "late": 43, "late_delivered": 0}

    # Mon 7 Dec, 10 working days later (.. Wed2 Thu3 Fri4 Mon7): all 43 are late, none at risk.
    later = paris(2026, 12, 7, 4, 0)
    data = gather(settings, trace, now=later)
    assert data["sla"]["by_department"]["067"] == {"at_risk": 0, "late": 43, "late_delivered": 0}
    # Past its deadline and still not delivered: it can no longer be on time.
    on_time = {(f["department"], f["flow"]): f["last_emission"]["on_time"] for f in data["flows"]}
    assert [on_time[("067", f)] for f in ("DSG", "SGR", "GRO")] == [False, False, False]
    assert on_time[("035", "DSG")] is True and on_time[("02A", "SGR")] is None and on_time[("035", "GRO")] is True

    # 067 comes back on Mon 7 Dec and gets its files: now they are late *deliveries*.
    night = Night(
        settings,
        clock=FixedClock(later),
        sleep=lambda _s: None,
        transport_factory=ScriptedPartner().factory,
    )
    run_id = trace.start_run("deliver", later.date(), later)
    night.deliver(trace, run_id, NightReport(run_id, later.date()))
    trace.finish_run(run_id, later, status="done", exit_code=0)
    data = gather(settings, trace, now=later + timedelta(hours=1))
    assert data["sla"]["by_department"]["067"] == {"at_risk": 0, "late": 0, "late_delivered": 43}
    assert data["sla"]["totals"] == {"at_risk": 0, "late": 0, "late_delivered": 43 + 1}
    assert data["undelivered"] == {"total": 0, "by_department": {}, "emissions": []}
    e067 = [f["last_emission"] for f in data["flows"] if f["department"] == "067"]
    assert [(e["status"], e["delivered_at"], e["on_time"]) for e in e067] == [
        ("delivered", "2026-12-07T04:00:00+01:00", False)
    ] * 3
    # The "deliver" run is the newest run but not a nightly one: the nightly is still run 1, 14 days old.
    assert [r["command"] for r in data["runs"]] == ["deliver", "run"]
    assert data["last_nightly"]["run"]["id"] == 1
    assert data["last_nightly"]["age_hours"] == 14 * 24 + 1 and data["last_nightly"]["stale"] is True


def test_a_pending_request_past_its_deadline_is_overdue(state):
    _root, settings, trace = state
    add_known_events(trace)
    # Thu 3 Dec is the deadline itself: not overdue yet; Fri 4 Dec it is.
    requests = gather(settings, trace, now=paris(2026, 12, 3, 23, 0))["reemissions"]["requests"]
    assert [r["overdue"] for r in requests] == [False, False]
    requests = gather(settings, trace, now=paris(2026, 12, 4, 0, 30))["reemissions"]["requests"]
    assert [r["overdue"] for r in requests] == [True, False]  # a done request is never overdue


def test_certificates_expiring_within_30_days_or_expired(state):
    root, settings, trace = state
    # The demo PKI is valid until NOW + 730 days. 700 days on: exactly 30 days left, listed;
    # 699 days on: 31 left, not listed.
    assert gather(settings, trace, now=NOW + timedelta(days=699))["certificates"] == []
    listed = gather(settings, trace, now=NOW + timedelta(days=700))["certificates"]
    assert [(c["scope"], c["role"], c["days_left"], c["expired"]) for c in listed] == [
        ("sender", "signer", 30, False),
        ("archive", "archive", 30, False),
    ] + [(d, "recipient", 30, False) for d in DEPTS]

    soon = gather(settings, trace, now=NOW + timedelta(days=710))["certificates"]
    sender = certs.load_certificate(root / "pki" / "cnaf.crt")
    assert soon[0] == {
        "scope": "sender",
        "role": "signer",
        "path": str(root / "pki" / "cnaf.crt"),
        "subject": certs.describe(sender),
        "not_after": "2028-11-22T03:00:00+00:00",
        "days_left": 20,
        "expired": False,
        "error": None,
    }

    gone = gather(settings, trace, now=NOW + timedelta(days=731))["certificates"]
    assert [(c["days_left"], c["expired"]) for c in gone] == [(-1, True)] * 6

    (root / "pki" / "971.crt").unlink()
    broken = gather(settings, trace, now=NOW)["certificates"]
    assert [(c["scope"], c["days_left"], bool(c["error"])) for c in broken] == [("971", None, True)]


def test_text_output_has_every_section_and_every_departement(state):
    _root, settings, trace = state
    add_known_events(trace)
    text = render_text(gather(settings, trace, now=NOW + timedelta(hours=1)), everything=True)
    for heading in (
        "SUMMARY",
        "DÉPARTEMENTS (4)",
        "LAST NIGHTLY RUN",
        "RUNS",
        "FLOWS",
        "UNDELIVERED (5)",
        "DEADLINES",
        "ACKNOWLEDGEMENTS",
        "RE-EMISSION REQUESTS",
        "CERTIFICATES",
        "ANOMALIES",
    ):
        assert any(line.startswith(heading) for line in text.splitlines()), heading
    for dept in DEPTS:
        assert f"  {dept}  " in text
    assert "CRITICAL, exit 11 LATE" in text.splitlines()[0]
    assert "OK: run 1" in text and "E042" in text and "partner 067: partner down (double)" in text
    flows = text.split("FLOWS")[1].split("UNDELIVERED")[0].splitlines()
    header = next(line for line in flows if line.lstrip().startswith("DEPT"))
    # Fixed-width columns: every row's ON TIME cell starts under its heading.
    col = header.index("ON TIME")
    rows = [line for line in flows if line.startswith("  0") or line.startswith("  9")]
    assert len(rows) == 12
    cells = [line[col : col + 3].strip() for line in rows]
    assert all(c in ("yes", "no", "-") for c in cells)
    # 035's GRO is on time (its mutation counts from DTREF), 067's DSG and SGR are undelivered but not past
    # their deadlines, its GRO is (the law's Wed 18 Nov), 971's last GRO is a re-emission not yet delivered,
    # and the empty SGR flows of 02A and 971 have no deadline.
    assert sorted(cells) == ["-"] * 5 + ["no"] + ["yes"] * 6


def test_status_is_free_of_personal_data(state):
    from flux_pmi.demo.generate import generate_inbox

    root, settings, trace = state
    add_known_events(trace)
    data = gather(settings, trace, now=NOW + timedelta(hours=1))
    blob = json.dumps(data) + render_text(data)
    values = generate_inbox(
        root / "regen", business_date=BUSINESS_DATE, departments=DEPTS, seed=7, bad=True
    ).personal_values
    assert len(values) > 50
    assert [v for v in values if v in blob] == []


def test_max_age_is_read_from_the_service_table(state):
    root, _settings, trace = state
    cfg = root / "flux-pmi.toml"
    cfg.write_text(cfg.read_text() + "\n[service]\nmax_age_hours = 2\n")
    settings = load(cfg)
    assert gather(settings, trace, now=NOW + timedelta(hours=2))["last_nightly"]["stale"] is False
    ln = gather(settings, trace, now=NOW + timedelta(hours=2, minutes=30))["last_nightly"]
    assert (ln["age_hours"], ln["max_age_hours"], ln["stale"]) == (2.5, 2, True)
    cfg.write_text(cfg.read_text().replace("max_age_hours = 2", 'max_age_hours = "two"'))
    with pytest.raises(ConfigError, match=r"service\.max_age_hours"):
        gather(load(cfg), trace, now=NOW)


def test_nights_that_fail_every_time_are_stale_however_recent(state):
    """The clock runs from the last night that reached its end: a refused or failed one does not reset it."""
    root, settings, trace = state
    for hours in (23, 47):  # the inbox unmounted, say: each night refused (exit 10), on time
        run = trace.start_run("run", BUSINESS_DATE, NOW + timedelta(hours=hours))
        trace.finish_run(run, NOW + timedelta(hours=hours), status=RunStatus.REFUSED, exit_code=10)
    ln = gather(settings, trace, now=NOW + timedelta(hours=48))["last_nightly"]
    assert (ln["run"]["status"], ln["age_hours"], ln["last_completed"]["id"], ln["completed_age_hours"]) == (
        "refused", 1.0, 1, 48.0)
    assert ln["stale"] is True
    out = status_cli(root, NOW + timedelta(hours=48))
    assert out.returncode == ExitCode.LATE, out.stdout  # 067's late records come first; stale is the next
    assert ("STALE: run 3 for 2026-11-23 started 2026-11-25T03:00:00+01:00, 1.0 h ago (max 26 h); status refused,"
            " exit 10 STORAGE; last completed: run 1 for 2026-11-23, 48.0 h ago") in out.stdout
    # A run under way, started on time, is not stale whatever came before (the lock says it is alive);
    # the same row with no process holding the lock is a dead night: stale again.
    trace.start_run("run", BUSINESS_DATE, NOW + timedelta(hours=48))
    with RunLock(lock_path(settings.paths.trace), command="run", wait_seconds=0):
        assert gather(settings, trace, now=NOW + timedelta(hours=49))["last_nightly"]["stale"] is False
    assert gather(settings, trace, now=NOW + timedelta(hours=49))["last_nightly"]["stale"] is True


def test_the_first_screen_and_the_exit_code_of_a_night_with_a_partner_down_and_one_held(state):
    root, _settings, trace = state
    trace.hold("035", NOW, by="ops", reason="maintenance")
    later = NOW + timedelta(hours=1)
    proc = status_cli(root, later)
    # 067's Tue 10 Nov declaration is past the law's Wed 18: late comes first (docs/operations.md).
    assert proc.returncode == ExitCode.LATE == 11, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith("CRITICAL, exit 11 LATE") and lines[2] == "SUMMARY"
    summary = "\n".join(lines[:12])
    assert "late              2 record(s) past their deadline (binding: contract 0, law 2)" in summary
    assert "partners failing  1: 067" in summary and "held              1 département(s): 035" in summary
    # Only the départements with something to say: 035 is held (after its files went), 067 is down.
    table = proc.stdout.split("DÉPARTEMENTS WITH SOMETHING TO SAY (2 of 4")[1].split("\n\n")[0]
    assert [line.split()[0] for line in table.splitlines()[3:]] == ["035", "067"]
    assert "\n  02A " not in proc.stdout and "FLOWS" not in proc.stdout and "RUNS" not in proc.stdout
    assert "\n  02A " in status_cli(root, later, "--all").stdout

    # A probe per département, per flow: 02A is fine; 067's SGR is undelivered (its partner is down)
    # and at risk, but none of its records is late yet.
    assert status_cli(root, later, "--department", "02A").returncode == ExitCode.OK
    sgr = status_cli(root, later, "--department", "067", "--flow", "SGR", "--json")
    assert sgr.returncode == ExitCode.UNDELIVERED, sgr.stderr
    doc = json.loads(sgr.stdout)
    assert doc["scope"] == {"departments": ["067"], "flows": ["SGR"]}
    assert [(f["department"], f["flow"]) for f in doc["flows"]] == [("067", "SGR")]
    assert doc["summary"]["problems"] == ["UNDELIVERED", "AT_RISK"]
    # A held partner whose files are all on time says nothing that needs a person: exit 0.
    held = status_cli(root, later, "--department", "035", "--flow", "GRO")
    assert held.returncode == ExitCode.OK and "held              1 département(s): 035" in held.stdout

    nagios = status_cli(root, later, "--nagios")
    assert nagios.returncode == 2 and nagios.stdout.startswith("FLUX-PMI CRITICAL - late, undelivered, at risk |")
    assert status_cli(root, later, "--department", "02A", "--nagios").returncode == 0


def test_files_never_acknowledged_after_the_configured_days(state):
    root, _settings, trace = state
    cfg = root / "flux-pmi.toml"
    cfg.write_text(cfg.read_text() + "\n[service]\nunacknowledged_days = 2\nmax_age_hours = 100\n")
    settings = load(cfg)
    assert status_cli(root, NOW + timedelta(days=2), "--department", "02A").returncode == ExitCode.OK
    proc = status_cli(root, NOW + timedelta(days=2, minutes=1), "--department", "02A")
    assert proc.returncode == ExitCode.UNACKNOWLEDGED == 13, proc.stderr
    assert "unacknowledged    3 file(s) delivered over 2 days ago" in proc.stdout
    assert "UNACKNOWLEDGED (3 delivered over 2 days ago)" in proc.stdout
    data = gather(settings, trace, now=NOW + timedelta(days=700))
    # Everything at once, in the documented order.
    assert data["summary"]["problems"] == ["LATE", "STALE", "UNDELIVERED", "UNACKNOWLEDGED", "CERTIFICATES"]
    assert data["summary"]["exit_code"] == ExitCode.LATE and data["summary"]["nagios"] == "CRITICAL"


def test_a_clean_national_night_fits_one_screen(tmp_path):
    root = tmp_path / "national"
    make_demo(root, "all")
    report = Night(load(root / "flux-pmi.toml"), clock=FixedClock(NOW), sleep=lambda _s: None).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.OK
    proc = status_cli(root, NOW + timedelta(hours=1))
    assert proc.returncode == ExitCode.OK, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) <= 25, proc.stdout
    assert "DÉPARTEMENTS WITH SOMETHING TO SAY (0 of 102; --all lists every one)" in proc.stdout
    assert len(status_cli(root, NOW + timedelta(hours=1), "--all").stdout.splitlines()) > 400


def status_cli(root: Path, when: datetime, *extra: str):
    return run_cli(
        "status",
        "--config",
        str(root / "flux-pmi.toml"),
        *extra,
        env_extra={"FLUX_PMI_NOW": when.isoformat()},
    )


def test_cli_exit_code_is_a_health_check(tmp_path):
    root = tmp_path / "demo"
    make_demo(root)
    never = status_cli(root, NOW, "--json")
    assert never.returncode == ExitCode.STALE == 7, never.stderr
    doc = json.loads(never.stdout)
    assert doc["last_nightly"] == {"run": None, "age_hours": None, "max_age_hours": 26, "last_completed": None,
                                   "completed_age_hours": None, "stale": True}
    assert doc["runs"] == [] and doc["sla"]["totals"] == {"at_risk": 0, "late": 0, "late_delivered": 0}

    report = Night(load(root / "flux-pmi.toml"), clock=FixedClock(NOW), sleep=lambda _s: None).run(
        BUSINESS_DATE
    )
    assert report.exit_code == ExitCode.OK

    fresh = status_cli(root, NOW + timedelta(hours=25), "--json")
    assert fresh.returncode == ExitCode.OK, fresh.stderr
    doc = json.loads(fresh.stdout)
    assert fresh.stdout == json.dumps(doc, indent=2, sort_keys=True) + "\n"
    assert doc["last_nightly"]["age_hours"] == 25.0 and doc["undelivered"]["total"] == 0
    settings = load(root / "flux-pmi.toml")
    trace = TraceStore(settings.paths.trace)
    try:
        assert doc == gather(settings, trace, now=NOW + timedelta(hours=25))
    finally:
        trace.close()

    stale = status_cli(root, NOW + timedelta(hours=27))
    assert stale.returncode == ExitCode.STALE, stale.stderr
    assert "STALE: run 1" in stale.stdout and "27.0 h ago (max 26 h)" in stale.stdout


def test_input_left_in_quarantine_keeps_status_at_quarantined_until_taken_away(tmp_path):
    # The run that quarantines exits 5; the next one has nothing to say about it (a run killed
    # after the quarantine never said anything). `status` counts what waits in quarantine/.
    root = tmp_path / "demo"
    make_demo(root)
    settings = load(root / "flux-pmi.toml")
    bad = settings.paths.inbox / "DSG" / "DGESDSGA_20261120_9999.xml"
    bad.write_bytes(b"<?xml version='1.0'?><Agregat><NIR>2860599123456")  # cut short
    night = Night(settings, clock=FixedClock(NOW), sleep=lambda _s: None)
    assert night.run(BUSINESS_DATE).exit_code == ExitCode.QUARANTINED
    again = Night(load(root / "flux-pmi.toml"), clock=FixedClock(NOW + timedelta(minutes=5)), sleep=lambda _s: None)
    assert again.run(BUSINESS_DATE).exit_code == ExitCode.OK

    proc = status_cli(root, NOW + timedelta(hours=1))
    assert proc.returncode == ExitCode.QUARANTINED == 5, proc.stdout + proc.stderr
    assert "exit 5 QUARANTINED" in proc.stdout
    assert "quarantined       1 input file(s) waiting in quarantine/<FLOW>/: DSG 1 (XML_MALFORMED 1)" in proc.stdout
    assert "2860599123456" not in proc.stdout
    doc = json.loads(status_cli(root, NOW + timedelta(hours=1), "--json").stdout)
    assert doc["quarantine"] == {"total": 1, "scoped_out": False,
                                 "by_flow": {"DSG": {"files": 1, "codes": {"XML_MALFORMED": 1}}}}
    assert doc["summary"]["quarantined"] == 1 and doc["summary"]["problems"] == ["QUARANTINED"]
    assert doc["summary"]["nagios"] == "WARNING"
    # A probe for one flow sees its own; one for a partner does not (whose the file is, is unknown).
    assert status_cli(root, NOW + timedelta(hours=1), "--flow", "DSG").returncode == ExitCode.QUARANTINED
    assert status_cli(root, NOW + timedelta(hours=1), "--flow", "GRO").returncode == ExitCode.OK
    per_partner = status_cli(root, NOW + timedelta(hours=1), "--department", "035")
    assert per_partner.returncode == ExitCode.OK and "not counted for a --department scope" in per_partner.stdout
    nagios = status_cli(root, NOW + timedelta(hours=1), "--nagios")
    assert nagios.returncode == 1 and nagios.stdout.startswith("FLUX-PMI WARNING - quarantined |")
    assert nagios.stdout.rstrip().endswith(" certificates=0 quarantined=1 inbox_not_taken=0")

    # The operator takes the file away (its .reason stays until the purge): status is clean again.
    set_aside = settings.paths.quarantine / "DSG" / bad.name
    assert set_aside.is_file() and set_aside.with_name(bad.name + ".reason").is_file()
    set_aside.unlink()
    assert status_cli(root, NOW + timedelta(hours=1)).returncode == ExitCode.OK


def test_entries_left_in_the_inbox_keep_status_at_5_until_moved(tmp_path):
    # `run` names what it does not take and exits 0 (it did all it could); `status` keeps saying so,
    # as for quarantined input, until a person moves or removes them. Counted, never named.
    root = tmp_path / "demo"
    make_demo(root)
    settings = load(root / "flux-pmi.toml")
    inbox = settings.paths.inbox
    (inbox / "DSG" / "DGESDSGA_20261120_0005.xml").rename(inbox / "SGR" / "DGESDSGA_20261120_0005.xml")
    (inbox / "DSG" / "noext").write_bytes(b"?")
    (inbox / "SGR" / "plainsub").mkdir()
    (inbox / "SGR" / "plainsub" / "DGESDSGA_20261120_0006.xml").write_bytes(b"<Agregat/>")
    (inbox / "GRO" / "CRI_351_20261121.xml.part").write_bytes(b"<Rac")  # being written: not counted
    report = Night(settings, clock=FixedClock(NOW), sleep=lambda _s: None).run(BUSINESS_DATE)
    assert report.exit_code == ExitCode.OK
    assert sorted(report.not_taken) == [
        ("DSG", "noext", "not a .xml for DSG"),
        ("SGR", "DGESDSGA_20261120_0005.xml", "not a .zip or .csv for SGR; .xml is for DSG or GRO: the wrong folder?"),
        ("SGR", "plainsub", "a folder: nothing in a sub-folder is taken")]

    later = NOW + timedelta(hours=1)
    proc = status_cli(root, later)
    assert proc.returncode == ExitCode.QUARANTINED == 5, proc.stdout + proc.stderr
    assert ": WARNING, exit 5 INBOX_NOT_TAKEN\n" in proc.stdout  # its own name, not QUARANTINED
    assert ("not taken         3 inbox entries no run takes, left in inbox/<FLOW>/: DSG 1, SGR 2." in proc.stdout
            and "quarantined       0 input file(s) waiting" in proc.stdout), proc.stdout
    assert "noext" not in proc.stdout and "plainsub" not in proc.stdout
    doc = json.loads(status_cli(root, later, "--json").stdout)
    assert doc["inbox_not_taken"] == {"total": 3, "by_flow": {"DSG": 1, "SGR": 2}, "scoped_out": False}
    assert doc["summary"]["inbox_not_taken"] == 3 and doc["summary"]["quarantined"] == 0
    assert doc["summary"]["problems"] == ["INBOX_NOT_TAKEN"] and doc["summary"]["exit_code"] == 5
    nagios = status_cli(root, later, "--nagios")
    assert nagios.returncode == 1 and nagios.stdout.startswith("FLUX-PMI WARNING - inbox not taken |")
    assert nagios.stdout.rstrip().endswith(" quarantined=0 inbox_not_taken=3")
    prom = metrics.render(doc, job_success={})
    assert 'flux_pmi_inbox_not_taken_files{flow="SGR"} 2' in prom and 'flux_pmi_inbox_not_taken_files{flow="GRO"} 0' in prom
    # A probe for one flow sees its own; one for a partner does not (whose an entry is, is unknown).
    assert status_cli(root, later, "--flow", "GRO").returncode == ExitCode.OK
    assert status_cli(root, later, "--flow", "SGR").returncode == ExitCode.QUARANTINED
    assert status_cli(root, later, "--department", "035").returncode == ExitCode.OK

    # Moved into its flow folder, and the rest taken away: clean again (the .part is still being written).
    (inbox / "SGR" / "DGESDSGA_20261120_0005.xml").rename(inbox / "DSG" / "DGESDSGA_20261120_0005.xml")
    (inbox / "DSG" / "noext").unlink()
    (inbox / "SGR" / "plainsub" / "DGESDSGA_20261120_0006.xml").unlink()  # an empty folder holds nothing
    assert status_cli(root, later).returncode == ExitCode.OK


def test_a_scope_with_an_unknown_code_is_a_usage_error_not_a_healthy_probe(tmp_path):
    root = tmp_path / "demo"
    make_demo(root)
    Night(load(root / "flux-pmi.toml"), clock=FixedClock(NOW), sleep=lambda _s: None).run(BUSINESS_DATE)
    later = NOW + timedelta(hours=1)
    typo = status_cli(root, later, "--department", "999")
    assert typo.returncode == ExitCode.USAGE == 2
    assert "--department: a département code (035, 02A, 971) or all (got '999')" in typo.stderr
    assert status_cli(root, later, "--flow", "DGS").returncode == ExitCode.USAGE
    probe = status_cli(root, later, "--department", "999", "--nagios")
    assert probe.returncode == 3 and probe.stdout.startswith("FLUX-PMI UNKNOWN - command line: --department")
    # Typed as an operator would: 35 is 035, 2a is 02A, dsg is DSG, all is everything.
    doc = json.loads(status_cli(root, later, "--department", "35,2a", "--flow", "dsg", "--json").stdout)
    assert doc["scope"] == {"departments": ["02A", "035"], "flows": ["DSG"]}
    doc = json.loads(status_cli(root, later, "--department", "all", "--flow", "all", "--json").stdout)
    assert doc["scope"] == {"departments": None, "flows": None}
