"""`flux-pmi history`: the catalog of emissions, one line each, or a JSON array for scripts.

Operators of Transfer CFT and Waarp list transfers by date, partner and state and retry one
by id; this is that list for flux-pmi, read from the trace (trace/history.py) and never
written. A line carries technical data only: the file name, sequence, record count, times,
the ack verdict, the transport's reference and the emission id `flux-pmi retry` takes.
The JSON keys are documented in docs/history.md and stable.
"""

from __future__ import annotations

from typing import Any

from ..trace.history import HistoryFilter, HistoryRow
from ..trace.store import TraceStore

SCHEMA = "flux-pmi.history/1"


def query(trace: TraceStore, wanted: HistoryFilter) -> list[HistoryRow]:
    return trace.history(wanted)


def _minute(stamp: str | None) -> str:
    """An ISO timestamp to the minute, local time as traced ("2026-11-23 04:01"); "-" when unset."""
    return stamp[:16].replace("T", " ") if stamp else "-"


def as_dict(row: HistoryRow) -> dict[str, Any]:
    """One emission for `--json` (docs/history.md lists the keys)."""
    return {
        "id": row.id,
        "business_date": row.business_date,
        "flow": row.flow,
        "department": row.department,
        "file": row.file_name,
        "seq": row.seq,
        "part": row.part,
        "reemission_no": row.reemission_no,
        "records": row.record_count,
        "state": str(row.state),
        "status": str(row.status),
        "held": bool(row.held),
        "delivered_at": row.delivered_at,
        "acknowledged_at": row.acknowledged_at,
        "ack": row.ack_status,
        "transport": row.transport,
        "transport_ref": row.transport_ref,
        "deadline": row.deadline,
        "deadline_basis": row.deadline_basis,
    }


def render_line(row: HistoryRow) -> str:
    acked = f"{_minute(row.acknowledged_at)} {row.ack_status}" if row.acknowledged_at else (
        f"- {row.ack_status}" if row.ack_status else "-")
    name = row.file_name or f"({row.flow} {row.department} {row.business_date}, not built)"
    return (f"{row.id:>7}  {name}  seq={row.seq} records={row.record_count} delivered={_minute(row.delivered_at)}"
            f" acked={acked} ref={row.transport_ref or '-'} state={row.state}"
            f" deadline={row.deadline or '-'}{f' ({row.deadline_basis})' if row.deadline and row.deadline_basis else ''}")


def render_text(rows: list[HistoryRow]) -> list[str]:
    """The lines an operator reads, then a count (the first column is the id `retry` takes)."""
    return [render_line(r) for r in rows] + [f"{len(rows)} emission(s)"]
