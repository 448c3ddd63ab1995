"""The trace database's schema and its migrations, in one place for every connection to it.

The trace store (trace/store.py) and the CFT/HubEE delivery journal (trace/journal.py) are
two connections to one SQLite file: whichever opens it first brings it up to date, with the
same script and the same ordered migrations (trace/sqlite.py).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..core.errors import TraceError
from ..core.workdays import LEGAL_DEADLINE_DAYS, DeadlineBasis
from .history import HISTORY_INDEXES
from .lifecycle import MIGRATE_FAILED, MIGRATE_PURGED, RunStatus
from .sqlite import Migration, open_database

# 1: the tables; 2: the sequences table; 3: `failed` split into build-failed, delivery-failed and
# refused, and marked rows `purged` (trace/lifecycle.py); 4: the delivery journal (trace/journal.py);
# 5: the legal deadline beside the contract's (core/workdays.py), `deadline` the earlier.
# 6: the catalog's index (trace/history.py).
# 7: incidents and their notices (trace/incidents.py).
# 8: when a reject went out in a rejects report. 9: superseded seals (an emission re-sealed while waiting).
SCHEMA_VERSION = 9

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    command TEXT NOT NULL,
    business_date TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL DEFAULT 'running',
    exit_code INTEGER,
    pid INTEGER,
    records INTEGER NOT NULL DEFAULT 0,
    rejects INTEGER NOT NULL DEFAULT 0,
    files INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    message TEXT
);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    flow TEXT NOT NULL,
    business_date TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    state TEXT NOT NULL,            -- claiming, claimed, done
    created_at TEXT NOT NULL,
    done_at TEXT
);
CREATE TABLE IF NOT EXISTS inbox_files (
    id INTEGER PRIMARY KEY,
    batch_id INTEGER NOT NULL REFERENCES batches(id),
    flow TEXT NOT NULL,
    name TEXT NOT NULL,             -- relative to the flow's inbox folder
    kind TEXT NOT NULL DEFAULT 'input',  -- input (a claimable file) or scan (a PDF an SGR index names)
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    state TEXT NOT NULL,            -- claimed, consumed, quarantined
    code TEXT,
    reason TEXT,
    purged_at TEXT
);
CREATE INDEX IF NOT EXISTS inbox_files_sha ON inbox_files(flow, sha256);
CREATE TABLE IF NOT EXISTS emissions (
    id INTEGER PRIMARY KEY,
    batch_id INTEGER REFERENCES batches(id),
    flow TEXT NOT NULL,
    department TEXT NOT NULL,
    business_date TEXT NOT NULL,
    part INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    reemission_no INTEGER NOT NULL DEFAULT 0,
    reemission_of INTEGER REFERENCES emissions(id),
    request_id INTEGER,
    file_name TEXT,
    size INTEGER,
    sha256 TEXT,
    record_count INTEGER NOT NULL DEFAULT 0,
    rejects_count INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    transport TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    received_first TEXT,            -- earliest receipt date of its records
    deadline TEXT,                  -- earliest deadline of its records (the binding one: see version 5)
    built_at TEXT, sealed_at TEXT, archived_at TEXT, delivered_at TEXT, acknowledged_at TEXT,
    ack_status TEXT, ack_code TEXT,
    recipient_cert_sha256 TEXT,     -- which certificate it was sealed for (re-seal when it changed)
    transport_ref TEXT,             -- the transport's own id: CFT IDTU, HubEE folder id, remote path
    purged_at TEXT,
    UNIQUE (batch_id, flow, department, part, reemission_no),
    UNIQUE (flow, department, seq, reemission_no)
);
CREATE INDEX IF NOT EXISTS emissions_status ON emissions(status);
CREATE TABLE IF NOT EXISTS superseded_seals (
    -- an emission's earlier seal, replaced by a re-seal for a renewed certificate before the emission
    -- was traced delivered: a delivery a crash kept out of the trace may have left it at the partner
    emission_id INTEGER NOT NULL REFERENCES emissions(id),
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    recipient_cert_sha256 TEXT,
    superseded_at TEXT NOT NULL,
    PRIMARY KEY (emission_id, sha256)
);
CREATE INDEX IF NOT EXISTS emissions_day ON emissions(flow, department, business_date);
CREATE TABLE IF NOT EXISTS emission_events (
    id INTEGER PRIMARY KEY,
    emission_id INTEGER NOT NULL REFERENCES emissions(id),
    at TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    run_id INTEGER,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    emission_id INTEGER NOT NULL REFERENCES emissions(id),
    ref TEXT NOT NULL UNIQUE,       -- HMAC of the record key: recognises a duplicate, reveals nothing
    received TEXT NOT NULL,
    deadline TEXT NOT NULL          -- the binding one (version 5 adds both clocks, and which binds)
);
CREATE TABLE IF NOT EXISTS rejects (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    batch_id INTEGER NOT NULL,
    flow TEXT NOT NULL,
    department TEXT,
    file TEXT NOT NULL,
    line INTEGER NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (batch_id, file, line, code)
);
CREATE TABLE IF NOT EXISTS reemission_requests (
    id INTEGER PRIMARY KEY,
    requested_at TEXT NOT NULL,
    requested_by TEXT NOT NULL,     -- OS user or --by: an operator identity, not a person's data
    reason TEXT NOT NULL DEFAULT '',
    flow TEXT NOT NULL,             -- a flow or 'all'
    department TEXT NOT NULL,       -- a département or 'all'
    date_from TEXT NOT NULL,
    date_to TEXT NOT NULL,
    deadline TEXT,                  -- request date + 8 jours ouvrés (earliest of the départements)
    status TEXT NOT NULL,           -- pending, done, refused
    done_at TEXT,
    message TEXT
);
CREATE TABLE IF NOT EXISTS acks (
    id INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    department TEXT NOT NULL,
    ack_name TEXT NOT NULL,
    file_name TEXT,
    sha256 TEXT,
    status TEXT,                    -- OK / KO as the receiver said
    code TEXT,
    ack_at TEXT,                    -- the receiver's timestamp: the date of "prise en compte"
    emission_id INTEGER REFERENCES emissions(id),
    outcome TEXT NOT NULL           -- recorded, unknown-file, hash-mismatch, invalid, duplicate
);
CREATE TABLE IF NOT EXISTS purges (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    archive_cutoff TEXT NOT NULL,
    trace_cutoff TEXT NOT NULL,
    archive_files INTEGER NOT NULL,
    emissions INTEGER NOT NULL,
    consumed_dirs INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sequences (
    -- the last sequence handed out per flow and département: a fact of its own, never purged,
    -- so that a sequence never goes back nor repeats whatever emissions rows were deleted
    flow TEXT NOT NULL,
    department TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (flow, department)
);
CREATE TABLE IF NOT EXISTS holds (
    -- an operator's hold on a département's deliveries, with its history (who, when, why)
    id INTEGER PRIMARY KEY,
    department TEXT NOT NULL,
    held_at TEXT NOT NULL,
    held_by TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    resumed_at TEXT,
    resumed_by TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS holds_active ON holds(department) WHERE resumed_at IS NULL;
CREATE TABLE IF NOT EXISTS parked (
    -- records of a département that was not enabled, kept (encrypted input) to be emitted later
    id INTEGER PRIMARY KEY,
    batch_id INTEGER NOT NULL,      -- not a foreign key: the batch row may be purged, the input is kept
    flow TEXT NOT NULL,
    department TEXT NOT NULL,
    business_date TEXT NOT NULL,
    count INTEGER NOT NULL,
    state TEXT NOT NULL,            -- trace.lifecycle.ParkedState
    parked_at TEXT NOT NULL,
    closed_at TEXT,
    emitted INTEGER,
    UNIQUE (batch_id, flow, department)
);
CREATE TABLE IF NOT EXISTS anomalies (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    department TEXT,
    file TEXT,
    detail TEXT NOT NULL
);
"""

_JOURNAL = """
CREATE TABLE IF NOT EXISTS delivery_journal (
    transport TEXT NOT NULL,        -- cft, hubee
    department TEXT NOT NULL,
    file_name TEXT NOT NULL,        -- technical emission name, never personal data
    sha256 TEXT NOT NULL,           -- of the sealed file: the same name with other bytes is refused
    step TEXT NOT NULL,             -- CftPhase or HubeeStep
    facts TEXT NOT NULL DEFAULT '{}',  -- JSON: the adapter's resume facts (IDTU, folder and case ids...)
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (transport, department, file_name)
)
"""

_INCIDENTS = """
CREATE TABLE IF NOT EXISTS incidents (
    -- a delay the receivers were told of (annexe 2, 5.1): opened, updated at most daily, closed
    id INTEGER PRIMARY KEY,
    number TEXT NOT NULL UNIQUE,    -- INC-<dept>-<yyyymmdd>-<n>: the reference every notice repeats
    department TEXT NOT NULL,
    state TEXT NOT NULL,            -- trace.incidents.IncidentState
    cause TEXT NOT NULL,            -- trace.incidents.Cause
    expected TEXT NOT NULL,         -- trace.incidents.Expected
    flows TEXT NOT NULL,            -- as last notified, comma-separated
    files INTEGER NOT NULL,
    records INTEGER NOT NULL,
    deadline TEXT,                  -- the earliest deadline of the late files
    opened_at TEXT NOT NULL,
    notified_on TEXT NOT NULL,      -- the day of the last notice: one update a day at most
    closed_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_open ON incidents(department) WHERE state = 'open';
CREATE TABLE IF NOT EXISTS notices (
    -- every notice, sent or waiting for the relay: codes, counts, dates and file names only
    id INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents(id),
    kind TEXT NOT NULL,             -- trace.incidents.NoticeKind
    run_id INTEGER,
    created_at TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,            -- trace.incidents.NoticeState
    attempts INTEGER NOT NULL DEFAULT 0,
    recipients INTEGER,             -- how many addresses it went to (they live in the configuration)
    sent_at TEXT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS notices_pending ON notices(state)
"""


def _seed_sequences(db: sqlite3.Connection) -> None:
    """Version 2: the sequences table starts from what the emissions rows still say."""
    db.execute(
        "INSERT INTO sequences(flow, department, last_seq) SELECT flow, department, MAX(seq)"
        " FROM emissions WHERE true GROUP BY flow, department"
        " ON CONFLICT(flow, department) DO UPDATE SET last_seq=MAX(last_seq, excluded.last_seq)")


def _typed_emissions(db: sqlite3.Connection) -> None:
    """Version 3: every emission status is one of the lifecycle's (trace/lifecycle.py)."""
    db.execute(MIGRATE_FAILED)
    db.execute(MIGRATE_PURGED)


def _delivery_journal(db: sqlite3.Connection) -> None:
    """Version 4: the CFT and HubEE adapters' resume facts (trace/journal.py), once JSON files."""
    db.execute(_JOURNAL)


# Added by version 5 to `records` and `emissions` (a new file gets them from the migration too, so they are
# written once): each clock's date and which one binds; `deadline` is the earlier, so every reader of it
# follows the law where the law is stricter without knowing.
DEADLINE_COLUMNS = ("contract_deadline TEXT", "legal_deadline TEXT", "deadline_basis TEXT")


def _legal_deadlines(db: sqlite3.Connection) -> None:
    """Version 5: the law's 8 calendar days beside the contract's 8 working days; the earlier binds."""
    for table, received in (("records", "received"), ("emissions", "received_first")):
        # Idempotent: a file whose user_version was set back (or a crash after COMMIT) may have them already.
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for column in DEADLINE_COLUMNS:
            if column.split()[0] not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
        # An emission's dates are its records' earliest: legal deadlines follow receipt, so received_first's.
        db.execute(
            f"UPDATE {table} SET contract_deadline = deadline,"
            f" legal_deadline = date({received}, '+{LEGAL_DEADLINE_DAYS} days')"
            f" WHERE deadline IS NOT NULL AND {received} IS NOT NULL AND legal_deadline IS NULL")
        db.execute(
            f"UPDATE {table} SET deadline = MIN(contract_deadline, legal_deadline),"
            f" deadline_basis = CASE WHEN legal_deadline <= contract_deadline THEN '{DeadlineBasis.LAW}'"
            f" ELSE '{DeadlineBasis.CONTRACT}' END WHERE legal_deadline IS NOT NULL")




def _history_indexes(db: sqlite3.Connection) -> None:
    """Version 6: `flux-pmi history` reads three months of emissions by business date through an index."""
    for statement in HISTORY_INDEXES:
        db.execute(statement)


def _incidents(db: sqlite3.Connection) -> None:
    """Version 7: incident notices (annexe 2, 5.1) and their trace (jobs/notices.py)."""
    for stmt in _INCIDENTS.split(";"):
        db.execute(stmt)


def _reported_rejects(db: sqlite3.Connection) -> None:
    """Version 8: when a reject went out in a rejects report. A run killed (or failed) after writing its
    rejects to the trace but before its report leaves them for the next run's report, not for nobody."""
    have = {row[1] for row in db.execute("PRAGMA table_info(rejects)")}
    if "reported_at" not in have:
        db.execute("ALTER TABLE rejects ADD COLUMN reported_at TEXT")
    # A run that ended by itself wrote its report; one still `running` here died (only the lock holder
    # opens the trace to write), and one that died or failed may have stopped before its report.
    db.execute(
        "UPDATE rejects SET reported_at = created_at WHERE reported_at IS NULL AND run_id IN"
        f" (SELECT id FROM runs WHERE status NOT IN ('{RunStatus.RUNNING}', '{RunStatus.DIED}', '{RunStatus.FAILED}'))")


def _superseded_seals(db: sqlite3.Connection) -> None:
    """Version 9: `superseded_seals`, created by the schema script itself (CREATE ... IF NOT EXISTS);
    nothing to carry over: an older flux-pmi replaced a seal without keeping its digest."""


MIGRATIONS: tuple[Migration, ...] = ((2, _seed_sequences), (3, _typed_emissions), (4, _delivery_journal),
                                     (5, _legal_deadlines), (6, _history_indexes), (7, _incidents),
                                     (8, _reported_rejects), (9, _superseded_seals))




def open_trace(path: Path, *, label: str, busy_timeout_ms: int = 30_000,
               check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection to the trace database at `path`, created or migrated to SCHEMA_VERSION."""
    return open_database(path, label=label, schema=_SCHEMA + ";" + _JOURNAL, migrations=MIGRATIONS,
                         version=SCHEMA_VERSION, error=TraceError, busy_timeout_ms=busy_timeout_ms,
                         foreign_keys=True, check_same_thread=check_same_thread, new_state=False)


def open_trace_read_only(path: Path) -> sqlite3.Connection:
    """A connection that can only read the trace at `path` (a dry run): it never creates, migrates nor
    writes it. A trace that does not exist yet reads as an empty one, held in memory."""
    if not path.exists():
        db = sqlite3.connect(":memory:")
        db.executescript(_SCHEMA + ";" + _JOURNAL + ";" + ";".join(HISTORY_INDEXES))
    else:
        # A trace closed cleanly has no -wal: read as immutable, or SQLite would leave a -wal and a -shm
        # beside it. One with a -wal is open elsewhere (or a run died): read through it, read-only.
        wal = path.with_name(path.name + "-wal").exists()
        db = sqlite3.connect(f"file:{path}?{'mode=ro' if wal else 'immutable=1'}", uri=True)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            db.close()
            raise TraceError(f"trace store {path}: schema version {version}, this flux-pmi reads {SCHEMA_VERSION}:"
                             " a real run brings it up to date")
    db.row_factory = sqlite3.Row
    return db
