"""`flux-pmi history`: the catalog of emissions, filtered by date, département, flow and state.

A synthetic national trace of three months (90 business days x 101 départements x 3 flows,
seeded) is written straight into the emissions table, with its expected states known in
Python; the catalog must return exactly the matching rows, through the date index.
"""

from __future__ import annotations

import json
import random
import time
from datetime import date, timedelta

import pytest
from support import NOW, make_demo, run_cli

from flux_pmi.config.settings import load
from flux_pmi.core.clock import FixedClock
from flux_pmi.jobs.night import Night
from flux_pmi.trace.history import HistoryFilter, HistoryState
from flux_pmi.trace.lifecycle import Status
from flux_pmi.trace.store import TraceStore

FLOWS = ("DSG", "SGR", "GRO")
DEPTS = [f"{i:03d}" for i in range(1, 96) if i != 20] + ["02A", "02B", "971", "972", "973", "974", "976"]
HELD = "067"
# (status, weight): most files acknowledged, a few of every other state.
STATUSES = [(Status.ACKNOWLEDGED, 90), (Status.DELIVERED, 4), (Status.REFUSED, 1), (Status.DELIVERY_FAILED, 2),
            (Status.ARCHIVED, 1), (Status.BUILD_FAILED, 1)]


def _business_days(start: date, n: int) -> list[date]:
    days, d = [], start
    while len(days) < n:
        if d.weekday() < 5:
            days.append(d)
        d += timedelta(days=1)
    return days


def _row(rng: random.Random, seq: dict, day: date, flow: str, dept: str) -> dict:
    status = rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES])[0]
    seq[(flow, dept)] += 1
    delivered = status in (Status.ACKNOWLEDGED, Status.DELIVERED, Status.REFUSED)
    return {"flow": flow, "department": dept, "business_date": day.isoformat(), "part": 1, "seq": seq[(flow, dept)],
            "reemission_no": 0, "file_name": f"{flow}_{dept}_{day:%Y%m%d}_{seq[(flow, dept)]:06d}.xml.p7m",
            "record_count": rng.randint(0, 40), "status": status,
            "delivered_at": f"{day}T04:10:00+01:00" if delivered else None,
            "acknowledged_at": f"{day + timedelta(days=1)}T09:00:00+01:00" if status == Status.ACKNOWLEDGED else None,
            "ack_status": {Status.ACKNOWLEDGED: "OK", Status.REFUSED: "KO"}.get(status),
            "transport": "local" if delivered else None, "deadline": (day + timedelta(days=12)).isoformat()}


def _national(trace: TraceStore) -> list[dict]:
    """Three months of a national history, seeded; a KO file re-emitted now and then; 067 held."""
    rng, seq, rows = random.Random(14), {(f, d): 0 for f in FLOWS for d in DEPTS}, []
    for day in _business_days(date(2026, 8, 3), 90):
        for flow in FLOWS:
            for dept in DEPTS:
                row = _row(rng, seq, day, flow, dept)
                if dept == HELD and day.month == 11:
                    row.update(status=Status.ARCHIVED, delivered_at=None, acknowledged_at=None, ack_status=None,
                               transport=None)
                rows.append(row)
                if row["status"] == Status.REFUSED and rng.random() < 0.5:
                    rows.append({**row, "reemission_no": 1, "status": Status.REEMITTED, "delivered_at": None,
                                 "acknowledged_at": None, "ack_status": None, "transport": None,
                                 "file_name": row["file_name"].replace(".xml", "_R01.xml")})
    columns = list(rows[0])
    with trace.tx():
        trace.db.executemany(f"INSERT INTO emissions({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                             [tuple(r[c] for c in columns) for r in rows])
    trace.hold(HELD, NOW, by="ops", reason="maintenance")
    return rows


def _expected_state(row: dict, state: HistoryState) -> bool:
    s, waiting = row["status"], row["status"] in (Status.ARCHIVED, Status.REEMITTED, Status.DELIVERY_FAILED)
    return {
        HistoryState.ALL: True,
        HistoryState.UNDELIVERED: waiting,
        HistoryState.UNACKNOWLEDGED: s == Status.DELIVERED,
        HistoryState.KO: s == Status.REFUSED,
        HistoryState.REEMITTED: row["reemission_no"] > 0,
        HistoryState.HELD: waiting and row["department"] == HELD,
        HistoryState.DELIVERED: row["delivered_at"] is not None,
        HistoryState.ACKNOWLEDGED: s == Status.ACKNOWLEDGED,
        HistoryState.FAILED: s in (Status.BUILD_FAILED, Status.DELIVERY_FAILED),
    }[state]


@pytest.fixture(scope="module")
def national(tmp_path_factory):
    trace = TraceStore(tmp_path_factory.mktemp("national") / "trace.sqlite")
    rows = _national(trace)
    yield trace, rows
    trace.close()


def _names(found) -> list[str]:
    return sorted(r.file_name for r in found)


@pytest.mark.parametrize("state", list(HistoryState))
def test_every_state_over_a_month_and_two_departements_returns_exactly_its_rows(national, state):
    trace, rows = national
    wanted = HistoryFilter(date_from=date(2026, 10, 1), date_to=date(2026, 11, 30), departments=("035", HELD),
                           state=state)
    expected = [r["file_name"] for r in rows if "2026-10-01" <= r["business_date"] <= "2026-11-30"
                and r["department"] in ("035", HELD) and _expected_state(r, state)]
    assert _names(trace.history(wanted)) == sorted(expected)
    assert expected or state in (HistoryState.KO, HistoryState.REEMITTED)


def test_the_whole_country_undelivered_and_a_flow_filter(national):
    trace, rows = national
    found = trace.history(HistoryFilter(flows=("GRO",), state=HistoryState.UNDELIVERED))
    expected = [r["file_name"] for r in rows if r["flow"] == "GRO" and _expected_state(r, HistoryState.UNDELIVERED)]
    assert len(expected) > 300  # the held département's November alone
    assert _names(found) == sorted(expected)
    held = [r for r in found if r.department == HELD and r.status == Status.ARCHIVED]
    assert held and all(r.state == HistoryState.HELD for r in held)
    assert all(r.state == r.status for r in found if r.department != HELD)


def test_the_query_goes_through_the_date_index_and_is_fast(national):
    trace, rows = national
    assert len(rows) >= 90 * 303
    plan = " ".join(str(tuple(r)) for r in trace.db.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM emissions e WHERE e.business_date >= ? AND e.business_date <= ?",
        ("2026-11-02", "2026-11-06")))
    assert "emissions_business_date" in plan
    started = time.perf_counter()
    week = trace.history(HistoryFilter(date_from=date(2026, 11, 2), date_to=date(2026, 11, 6)))
    everything = trace.history(HistoryFilter())
    seconds = time.perf_counter() - started
    assert len(week) >= 5 * 303 and len(everything) == len(rows)
    print(f"history over {len(rows)} emissions: a week and the whole history read in {seconds:.3f} s")


def test_the_command_lists_a_real_night_and_prints_json(tmp_path):
    root = tmp_path / "demo"
    make_demo(root, departments="035,02A")
    night = Night(load(root / "flux-pmi.toml"), clock=FixedClock(NOW), sleep=lambda _s: None).run()
    assert night.exit_code == 0
    text = run_cli("history", "--config", str(root / "flux-pmi.toml"), "--department", "35,2a", "--flow", "GRO")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[-1] == "2 emission(s)"
    assert all("GRO_0" in line and "state=delivered" in line and "seq=1" in line for line in lines[:-1])
    out = run_cli("history", "--config", str(root / "flux-pmi.toml"), "--json", "--state", "delivered")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {(d["flow"], d["department"]) for d in data} == {(f, d) for f in FLOWS for d in ("035", "02A")}
    assert {d["state"] for d in data} == {"delivered"} and all(d["delivered_at"] and d["id"] for d in data)
    none = run_cli("history", "--config", str(root / "flux-pmi.toml"), "--state", "undelivered")
    assert none.stdout.splitlines() == ["0 emission(s)"]
    bad = run_cli("history", "--config", str(root / "flux-pmi.toml"), "--department", "999")
    assert bad.returncode == 2
