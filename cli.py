"""The `flux-pmi` command line: one sub-command per operator task.

Standard output carries the summary an operator or cron mail reads: the totals and the
problems, nothing per file unless `--verbose`. Standard error carries the structured log
(WARNING and above unless `--log-level` or FLUX_PMI_LOG_LEVEL says otherwise; INFO for
`serve`) and, on a terminal only, one updating progress line. Exit codes are
`errors.ExitCode`; every `--help` lists them from the enum (docs/operations.md has the same table).
"""

from __future__ import annotations

import argparse
import errno
import inspect
import os
import re
import shutil
import sqlite3
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from . import __version__
from .core import log as logging_setup
from .core import memory
from .core.clock import from_environment
from .core.errors import ConfigError, ExitCode, FluxError, StorageError
from .trace.history import HistoryState
from .trace.sqlite import storage_failure

if TYPE_CHECKING:
    from .config.settings import Settings
    from .jobs.night import LineSummary, NightReport
    from .report.status import Scope

# What the file system says when a folder is missing, read-only, not ours or full: the operator's
# matter (exit STORAGE, the folder named), not a bug with a traceback.
_STORAGE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            raise argparse.ArgumentTypeError(f"no such day: {value!r} (YYYY-MM-DD)") from exc
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {value!r}") from exc


def _operator_text(value: str) -> str:
    """A --reason or --by as it is traced and shown: what is shaped like a NIR or a phone number masked,
    since the trace holds no personal data (an operator may paste a case's details)."""
    return logging_setup.mask_personal(value)


class ProgressLine:
    """One line a person watching long work at a terminal sees being rewritten (\\r), never a scroll."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.width = 0

    def __call__(self, msg: str) -> None:
        text = msg[: max(20, shutil.get_terminal_size().columns - 1)]
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width = len(text)

    def close(self) -> None:
        """Blank the line, so that the summary that follows starts on a clean one."""
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def _progress() -> ProgressLine | None:
    """A progress line for a terminal; under cron (a pipe) nothing: the mail gets the summary only."""
    return ProgressLine(sys.stderr) if sys.stderr.isatty() else None


def _done(progress: ProgressLine | None) -> None:
    if progress is not None:
        progress.close()


# A member, its value and the comment that documents it, as core/errors.py writes them.
_MEMBER = re.compile(r"^\s+([A-Z][A-Z_]*)\s*=\s*\d+\s*#\s*(.+?)\s*$")


def exit_code_meanings() -> dict[ExitCode, str]:
    """Each exit code's meaning, read from the comment beside it in the ExitCode enum: the one place
    it is written, so that a code added there appears in every `--help` (docs/operations.md agrees:
    tests/test_cli_output.py)."""
    found = {m.group(1): m.group(2) for m in map(_MEMBER.match, inspect.getsource(ExitCode).splitlines()) if m}
    return {code: found.get(code.name, code.name.lower().replace("_", " ")) for code in ExitCode}


def exit_codes_epilog() -> str:
    rows = [f"  {int(code):>2}  {code.name:<13} {meaning}" for code, meaning in sorted(exit_code_meanings().items())]
    return "exit codes (docs/operations.md):\n" + "\n".join(rows)


STATUS_EXIT_CODES = """exit codes (the first that applies; docs/operations.md):
   0 OK              nothing late, at risk, stale, undelivered, unacknowledged, expiring, quarantined or not taken
  11 LATE            records past their deadline (the earlier of the contract's and the law's)   CRITICAL
   7 STALE           the last nightly run is older than [service] max_age_hours                 CRITICAL
   3 UNDELIVERED     files not delivered, other than those waiting for a hold                     WARNING
  12 AT_RISK         records due within 2 working days, not delivered                             WARNING
  13 UNACKNOWLEDGED  files delivered over [service] unacknowledged_days ago, never acknowledged   WARNING
  14 CERTIFICATES    a certificate expired, unreadable, or expiring within 30 days                WARNING
   5 QUARANTINED     input files waiting in quarantine/ (not counted with --department)          WARNING
                     or, after them, inbox entries no run takes (INBOX_NOT_TAKEN), left in place
   2 USAGE           the configuration cannot be read                                             UNKNOWN
"""


def _history_states() -> list[str]:
    return [str(s) for s in HistoryState]


def _list(values: Sequence[str]) -> list[str]:
    """Repeatable options that also take a comma-separated list: ["035,02A", "971"] -> [035, 02A, 971]."""
    return [v for value in values for v in value.split(",") if v.strip()]


def _parser() -> argparse.ArgumentParser:
    epilog = exit_codes_epilog()
    p = argparse.ArgumentParser(prog="flux-pmi", description="CNAF -> PMI pregnancy flows (DSG, SGR, GRO).",
                                epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"flux-pmi {__version__}")
    p.add_argument("--log-format", choices=["json", "console"], help="default: console on a terminal, else JSON")
    p.add_argument("--log-level", choices=list(logging_setup.LEVELS),
                   help=f"the structured log on stderr (default: ${logging_setup.LEVEL_ENV}, else warning; "
                        "info for serve and a receive without --once)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, what: str, description: str, codes: str = epilog) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=what, description=description, epilog=codes,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    d = command("demo", "write a realistic demo day: inbox, test PKI and flux-pmi.toml",
                "Write a complete demo installation into DIR: a test PKI, one business day of realistic input "
                "for the chosen départements, flux-pmi.toml (local drops) and each département's receive config.")
    d.add_argument("dir", type=Path)
    d.add_argument("--date", type=_date, help="business date (default: today, Europe/Paris)")
    d.add_argument("--departments", default="all", help="comma-separated codes (035,02A,971) or 'all'")
    d.add_argument("--seed", type=int, default=2026)
    d.add_argument("--force", action="store_true",
                   help="write into a folder that is not empty (overwrites its config, PKI and inbox)")

    r = command("run", "run the night: claim, build, validate, seal, archive, deliver",
                "The nightly run: collect the acks, claim the inbox, check and route each record, build, "
                "validate, seal and archive the files, deliver them, then purge. Idempotent: run twice, it "
                "sends nothing twice. Prints the totals and the problems (one line per file with --verbose).")
    r.add_argument("--config", type=Path, required=True)
    r.add_argument("--date", type=_date, help="business date (default: today, Europe/Paris)")
    r.add_argument("--no-purge", action="store_true", help="skip the retention purge that ends the run")
    r.add_argument("--dry-run", action="store_true",
                   help="print what the night would claim, build and send; change nothing, connect to no one")
    loud = r.add_mutually_exclusive_group()
    loud.add_argument("--verbose", action="store_true", help="also a line per flow and département (per file)")
    loud.add_argument("--quiet", action="store_true",
                      help="print only what needs a person (problems, quarantined input, the rejects report)")

    c = command("check", "check config, certificates and every enabled partner, sending no data",
                "Check the configuration, the folders, the key files, every certificate in use and each "
                "enabled partner's connection, sending no data. One line per finding; exit 9 on any error.")
    c.add_argument("--config", type=Path, required=True)
    c.add_argument("--quiet", action="store_true", help="print warnings and errors only")

    st = command("status", "one-screen summary of what is late, at risk, held or failing; exit code for monitoring",
                 "What the trace says, summary first: late, at risk, unacknowledged, held, undelivered, failing "
                 "partners, certificates, the last run; then the départements with something to say. Reads only.",
                 STATUS_EXIT_CODES + "\n" + epilog)
    st.add_argument("--config", type=Path, required=True)
    st.add_argument("--json", action="store_true", help="print the JSON document (docs/status-json.md)")
    st.add_argument("--all", action="store_true", help="list every département and every section, problems or not")
    st.add_argument("--department", action="append", metavar="DEPT",
                    help="only this département (repeat, or comma-separated: 035,067); exit code for these only")
    st.add_argument("--flow", action="append", metavar="FLOW", help="only this flow (DSG, SGR, GRO; repeat or comma-separated)")
    st.add_argument("--nagios", action="store_true",
                    help="print one Nagios plugin line and exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN")

    rr = command("reemit", "re-send the archived emission(s) of a business date or range, unchanged",
                 "Re-send archived emissions exactly as they were sent (re-sealed only when the partner's "
                 "certificate changed), traced with who asked and why.")
    rr.add_argument("--config", type=Path, required=True)
    rr.add_argument("--flow", required=True, help="DSG, SGR, GRO or all")
    rr.add_argument("--department", required=True, help="a département code (035, 02A, 971) or all")
    rr.add_argument("--date", type=_date, required=True, help="business date of the emission(s) to re-send")
    rr.add_argument("--to", type=_date, help="last business date of a range (default: --date)")
    rr.add_argument("--reason", default="", type=_operator_text, help="why (traced: no personal data)")
    rr.add_argument("--by", type=_operator_text, help="who asks (traced; default: the OS user)")
    rr.add_argument("--dry-run", action="store_true", help="print what would be re-emitted and sent; change nothing")

    hi = command("history", "the catalog: emissions by date, département, flow and state (ids for retry)",
                 "List the emissions the trace holds, filtered by business date, département, flow and state: "
                 "one line each (id, file, seq, records, delivered, acked, transport reference). Reads only.")
    hi.add_argument("--config", type=Path, required=True)
    hi.add_argument("--from", dest="date_from", type=_date, help="first business date (default: the oldest traced)")
    hi.add_argument("--to", dest="date_to", type=_date, help="last business date (default: the latest)")
    hi.add_argument("--department", action="append", default=[],
                    help="a département code, repeatable or comma-separated (035,02A); default: all")
    hi.add_argument("--flow", action="append", default=[], help="DSG, SGR or GRO, repeatable or comma-separated")
    hi.add_argument("--state", default="all", choices=_history_states(),
                    help="which emissions (default: all; docs/history.md)")
    hi.add_argument("--json", action="store_true", help="print a JSON array (keys in docs/history.md)")

    rt = command("retry", "deliver one archived, undelivered emission now (its id from history)",
                 "Deliver one emission now, through the night's delivery path, under the run lock. Refused "
                 "(exit 6) for a delivered, acknowledged, purged or unknown id, or a held département.")
    rt.add_argument("id", type=int, help="an emission id, the first column of `flux-pmi history`")
    rt.add_argument("--config", type=Path, required=True)

    pg = command("purge", "delete archive files, trace rows and consumed input older than the retention",
                 "Apply the retention: archive files, trace rows and kept consumed input past [retention] "
                 "go. `run` ends with the same purge.")
    pg.add_argument("--config", type=Path, required=True)
    pg.add_argument("--today", type=_date, help="count the retention back from this day (default: today)")
    pg.add_argument("--dry-run", action="store_true", help="print what would be deleted (counts); change nothing")

    for name, what in (("hold", "hold a département's deliveries: its files are built and archived, and wait"),
                       ("resume", "lift a hold: the next run delivers the waiting files in sequence order")):
        h = command(name, what, what[0].upper() + what[1:] + ". Traced, with who and why.")
        h.add_argument("department", help="a département code (035, 02A, 971)")
        h.add_argument("--config", type=Path, required=True)
        h.add_argument("--by", type=_operator_text, help="who (traced; default: the OS user)")
        if name == "hold":
            h.add_argument("--reason", default="", type=_operator_text, help="why (traced: no personal data)")

    jn = command("journal", "a CFT or HubEE partner's delivery-journal rows; --forget one held in doubt",
                 "List the delivery journal's rows of one partner (CFT transfers, HubEE folders). With --forget, "
                 "remove one row whose step allows it (CFT '?', HubEE posting/created/uploaded), under the run lock, "
                 "traced: the documented remedy for a file held in doubt, once it is known not to be at the "
                 "partner (docs/cft.md, docs/hubee.md). Refused (exit 6) for a transfer under way or done.")
    jn.add_argument("department", help="a département code (035, 02A, 971)")
    jn.add_argument("--config", type=Path, required=True)
    jn.add_argument("--transport", required=True, help="cft or hubee")
    jn.add_argument("--forget", metavar="FILE", help="the file name whose row to remove")
    jn.add_argument("--reason", default="", type=_operator_text, help="why (required with --forget; traced: no personal data)")
    jn.add_argument("--by", type=_operator_text, help="who (traced; default: the OS user)")

    sv = command("serve", "run the scheduled jobs (nightly, purge, SLA report) until SIGTERM; exit 0",
                 "The long-running service: the nightly run, the purge and the SLA report on their schedule "
                 "([service]), until SIGTERM. Logs at info by default: its log is the journal.")
    sv.add_argument("--config", type=Path, required=True)

    rc = command("receive", "the département side: check, decrypt, ingest and acknowledge delivered files",
                 "The département side: check each delivered file's checksum, decrypt it, verify the CNAF "
                 "signature, validate it, write its records as CSV and Parquet, and acknowledge it. Prints "
                 "the totals, the problems and where the outputs are.")
    which = rc.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", type=Path, help="one département's receive configuration (DEPT.toml)")
    which.add_argument("--config-dir", type=Path, help="every *.toml of this folder, one département each")
    rc.add_argument("--once", action="store_true",
                    help="take what is ready, then exit: 0 all taken, 5 some refused, 3 some to retry")
    rc.add_argument("--verbose", action="store_true",
                    help="with --config-dir: a line for every département that took files, not only the ones "
                         "with something to look at")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    memory.cap_arenas()  # before any thread: see core/memory.py
    os.umask(0o077)  # everything this process creates is owner-only: much of it is personal data
    try:
        # The services' log is the journal: info. A command's goes to cron mail: warning.
        service = args.command == "serve" or (args.command == "receive" and not args.once)
        level = logging_setup.choose_level(args.log_level, default="info" if service else "warning")
        logging_setup.configure(json=None if args.log_format is None else args.log_format == "json", level=level)
        handler = globals()[f"cmd_{args.command}"]
        return int(handler(args))
    except FluxError as exc:
        print(f"flux-pmi: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("flux-pmi: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except sqlite3.Error as exc:  # a write outside a transaction, say: a full volume is still not a bug
        storage = storage_failure(exc, "a flux-pmi database")
        if storage is None:
            raise
        print(f"flux-pmi: error: {storage}", file=sys.stderr)
        return int(ExitCode.STORAGE)
    except OSError as exc:
        if exc.errno not in _STORAGE_ERRNOS or exc.filename is None:
            raise
        print(f"flux-pmi: error: {exc.filename}: {exc.strerror}: a folder flux-pmi needs is missing or not "
              "writable; `flux-pmi check` lists them (docs/operations.md, \"Folders\")", file=sys.stderr)
        return int(ExitCode.STORAGE)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo.setup import write_demo

    clock = from_environment()
    business_date = args.date or clock.today()
    result = write_demo(args.dir, business_date=business_date, departments=args.departments, seed=args.seed,
                        now=clock.now(), force=args.force)
    print(f"demo day {business_date} written to {args.dir}: {result.records} records "
          f"({', '.join(f'{k} {v}' for k, v in sorted(result.by_flow.items()))}), "
          f"{result.bad} deliberately bad, {len(result.departments)} département(s)")
    print(f"config: {result.config}")
    print(f"receiving side: {len(result.receive_configs)} département config(s) in {Path(args.dir) / 'receive'}")
    return int(ExitCode.OK)


def cmd_run(args: argparse.Namespace) -> int:
    from .config.settings import load

    settings = load(args.config)
    clock = from_environment()
    if args.date is not None:
        from .jobs.guards import run_date_problem

        problem = run_date_problem(args.date, clock.today(), settings)
        if problem:
            print(f"flux-pmi: error: run refused, nothing changed: {problem}", file=sys.stderr)
            return int(ExitCode.USAGE)
    if args.dry_run:  # no lock, no run row, no metrics: a dry run reads and prints
        from .jobs.plan import describe, plan

        for line in describe(plan(settings, args.date or clock.today(), clock=clock)):
            print(line)
        return int(ExitCode.OK)
    from .jobs.early_workers import start_server

    # The workers' fork server imports on the other core meanwhile (stopped with the workers).
    start_server(settings.build.processes, len(settings.enabled_departments()), settings.build.min_jobs)
    from .core.lock import run_lock
    from .core.stopping import GracefulStop
    from .jobs.night import Night

    # Lock first: a run that only waits for the lock has nothing to finish, so a signal may kill it.
    progress = _progress()
    try:
        with run_lock(settings, "run"), GracefulStop() as stop:
            report = Night(settings, clock=clock, purge=not args.no_purge, stop=stop.event,
                           progress=progress).run(args.date)
    finally:
        _done(progress)
    for line in run_summary(report, verbose=args.verbose, quiet=args.quiet):
        print(line)
    _write_metrics(settings, "nightly", succeeded=not report.interrupted)
    return int(report.exit_code)


def _line(label: str, s: LineSummary) -> str:
    return (f"{label}  records={s.records:<4} rejects={s.rejects:<3} files={s.files} bytes={s.bytes:<9}"
            f" delivered={s.delivered} pending={s.pending}")


def run_summary(report: NightReport, *, verbose: bool = False, quiet: bool = False) -> list[str]:
    """What `run` prints: the totals (per flow, then all), then what needs a person; a line per flow
    and département with `verbose`; only what needs a person with `quiet` (a clean night: nothing)."""
    lines: list[str] = []
    if verbose:
        lines += [_line(f"{flow} {dept:>3}", s) for (flow, dept), s in sorted(report.lines.items())]
    if not quiet:
        lines += [_line(f"{flow} all", report.totals(flow)) for flow in sorted({f for f, _d in report.lines})]
        t = report.totals()
        lines.append(f"TOTAL {report.business_date}  records={t.records} rejects={t.rejects} files={t.files} "
                     f"bytes={t.bytes} delivered={t.delivered} seconds={report.seconds:.1f}")
        lines += _run_notes(report)
    lines += _run_problems(report)
    return lines


def _run_notes(report: NightReport) -> list[str]:
    """Worth knowing, nothing to do: acks, holds the operator asked for, kept records."""
    lines = []
    if report.acks is not None and (report.acks.recorded_ok or report.acks.recorded_ko or report.acks.anomalies):
        lines.append(f"acks: {report.acks.recorded_ok} OK, {report.acks.recorded_ko} KO, "
                     f"{report.acks.anomalies} anomalies")
    lines += [f"held: {n} file(s) for département {dept} wait for `flux-pmi resume {dept}`"
              for dept, n in report.held.items()]
    if report.parked:
        lines.append(f"kept: {report.parked} record(s) of départements not enabled (DEPARTMENT_NOT_ENABLED_KEPT);"
                     " enabling them emits these records")
    if report.replayed:
        lines.append(f"emitted: {report.replayed} kept record(s) of départements enabled since")
    lines += [f"re-sealed: {n} waiting file(s) of département {dept} for its current certificate (changed since "
              "they were built)" for dept, n in sorted(report.resealed.items())]
    lines += [f"already at the partner, sealed for the certificate before (delivered before a crash kept it out of "
              f"the trace): {name}: not sent again; its PMI opens it with its former key, or acks it KO: then "
              "`flux-pmi reemit` seals it for the new one" for name in report.earlier_seal]
    return lines


def _undelivered_line(report: NightReport) -> str:
    """What exit 3 counts, in its own words: files not delivered, files not even built, a batch left open."""
    what = []
    if report.undelivered_files:
        what.append(f"{report.undelivered_files} emission(s) not delivered yet")
    if report.unbuilt:
        what.append(f"{report.unbuilt} département file(s) not built")
    if not what:
        what.append("a batch not finished")
    return "; ".join(what) + "; the next run retries"


NOT_TAKEN_SHOWN = 20  # a folder of misplaced files is named in the log in full, not on the cron mail


def _not_taken_lines(not_taken: list[tuple[str, str, str]]) -> list[str]:
    """Inbox entries left in place: they do not change the exit code, so they must be seen here."""
    if not not_taken:
        return []
    lines = [f"not taken, left in the inbox: {flow}/{name} ({reason})"
             for flow, name, reason in not_taken[:NOT_TAKEN_SHOWN]]
    if len(not_taken) > NOT_TAKEN_SHOWN:
        lines.append(f"  ... and {len(not_taken) - NOT_TAKEN_SHOWN} more: the log (inbox.not_taken)")
    lines.append(f"not taken: {len(not_taken)} inbox entr{'y' if len(not_taken) == 1 else 'ies'} no run will read:"
                 " move each into its flow folder under a name it takes (docs/input-contract.md), or take it away")
    return lines


def _run_problems(report: NightReport) -> list[str]:
    """What needs a person: printed even with --quiet."""
    lines = [f"rejects report: {report.rejects_report}"] if report.rejects_report else []
    lines += [f"quarantined: {flow}/{name} ({code})" for flow, name, code in report.quarantined]
    lines += [f"already consumed, set aside: {flow}/{name}" for flow, name in report.duplicates]
    lines += _not_taken_lines(report.not_taken)
    exit_code = report.exit_code
    if exit_code != ExitCode.OK:
        undelivered = (_undelivered_line(report) if report.undelivered
                       else f"nothing sent to {', '.join(report.unsendable)}: see below")
        reason = {ExitCode.UNDELIVERED: undelivered,
                  ExitCode.QUARANTINED: "input file(s) quarantined: see quarantine/ and their .reason files",
                  ExitCode.INTERRUPTED: "stopped before the end; the next run resumes"}.get(exit_code, exit_code.name)
        lines.append(f"exit {int(exit_code)}: {reason}")
        lines += [f"  - {problem}" for problem in report.problems[:20]]
        if len(report.problems) > 20:
            lines.append(f"  ... and {len(report.problems) - 20} more: `flux-pmi status`, and the log")
    return lines


def cmd_check(args: argparse.Namespace) -> int:
    from .config.settings import load
    from .jobs.preflight import Level, run_checks

    settings = load(args.config)
    findings = run_checks(settings, from_environment().now())
    for f in findings:
        if args.quiet and f.level == Level.OK:
            continue
        print(f"{f.level:<5} {f.scope:<7} {f.what}" + (f": {f.detail}" if f.detail else ""))
    errors = sum(not f.ok for f in findings)
    warnings = sum(f.ok and f.warning for f in findings)
    print(f"check: {len(settings.enabled_departments())} département(s) enabled, {errors} error(s), "
          f"{warnings} warning(s)")
    return int(ExitCode.CHECK_FAILED if errors else ExitCode.OK)


def _codes(values: list[str] | None) -> frozenset[str] | None:
    return None if not values else frozenset(v.strip() for value in values for v in value.split(",") if v.strip())


def _status_scope(settings: Settings, args: argparse.Namespace) -> Scope:
    """`--department` / `--flow` as typed (35, 2a, dsg, all), checked: an unknown code is a usage error,
    never an empty scope that would read as a healthy partner."""
    from .jobs.reemit import parse_departments, parse_flows
    from .report.status import Scope

    departments, flows = _codes(args.department), _codes(args.flow)
    everyone = departments is not None and any(d.lower() == "all" for d in departments)
    every_flow = flows is not None and any(f.lower() == "all" for f in flows)
    return Scope(
        departments=None if departments is None or everyone else frozenset(parse_departments(settings, sorted(departments))),
        flows=None if flows is None or every_flow else frozenset(parse_flows(sorted(flows))),
    )


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from .config.settings import load
    from .report.status import NAGIOS_CODES, exit_code, gather, nagios_line, render_text
    from .trace.store import TraceStore

    # check_files=False: a missing certificate is something status reports, not a reason to stay silent.
    try:
        settings = load(args.config, check_files=False)
    except FluxError:
        if args.nagios:
            print("FLUX-PMI UNKNOWN - the configuration cannot be read")
            return NAGIOS_CODES["UNKNOWN"]
        raise
    try:
        scope = _status_scope(settings, args)
    except ConfigError as exc:
        if args.nagios:  # a probe with a typo must not read as a healthy partner
            print(f"FLUX-PMI UNKNOWN - {exc}")
            return NAGIOS_CODES["UNKNOWN"]
        raise
    try:
        trace = TraceStore(settings.paths.trace)
    except StorageError as exc:
        if args.nagios:  # the state unmounted: no night can run, and that is no "unknown"
            print(f"FLUX-PMI CRITICAL - {exc}")
            return NAGIOS_CODES["CRITICAL"]
        raise
    try:
        data = gather(settings, trace, now=from_environment().now(), scope=scope)
    except sqlite3.Error as exc:
        storage = storage_failure(exc, f"trace store {settings.paths.trace}")
        if storage is None:
            raise
        if args.nagios:
            print(f"FLUX-PMI CRITICAL - {storage}")
            return NAGIOS_CODES["CRITICAL"]
        raise storage from exc
    finally:
        trace.close()
    if args.nagios:
        print(nagios_line(data))
        return NAGIOS_CODES[data["summary"]["nagios"]]
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(render_text(data, everything=args.all), end="")
    return int(exit_code(data))


def cmd_reemit(args: argparse.Namespace) -> int:
    from .config.settings import load
    from .core.errors import RefusedError
    from .core.lock import run_lock
    from .core.stopping import GracefulStop
    from .jobs.deliver import Deliverer
    from .jobs.reemit import ReemitRequest, describe, request, requester
    from .trace.store import TraceStore

    settings = load(args.config)
    clock = from_environment()
    progress = _progress()  # a long range is watched by a person; cron mail gets the summary only
    with run_lock(settings, "reemit"), GracefulStop() as stop:
        trace = TraceStore(settings.paths.trace)
        try:
            ask = ReemitRequest(flows=[args.flow], departments=[args.department], date_from=args.date,
                                date_to=args.to, reason=args.reason,
                                by=requester() if args.by is None else args.by, dry_run=args.dry_run)
            result = request(settings, trace, ask, clock=clock, progress=progress,
                             deliverer=Deliverer(settings, clock=clock, stop=stop.event, progress=progress))
        except RefusedError as exc:
            _done(progress)
            print(exc)  # "re-emission refused: ...": what was refused and why
            return int(ExitCode.REFUSED)
        finally:
            _done(progress)
            trace.close()
    lines, code = describe(result), result.exit_code
    if stop.stopping and code == ExitCode.UNDELIVERED:
        # The files are re-emitted and archived; a signal, not a partner, left them undelivered.
        code = ExitCode.INTERRUPTED
        lines = [line for line in lines if not line.startswith(f"exit {int(ExitCode.UNDELIVERED)}:")]
        lines.append(f"exit {int(code)}: stopped by a signal; the next run delivers the {result.pending} "
                     "pending file(s)")
    for line in lines:
        print(line)
    return int(code)


def cmd_history(args: argparse.Namespace) -> int:
    import json

    from .config.settings import load
    from .jobs.reemit import parse_departments, parse_flows
    from .report.history import as_dict, query, render_text
    from .trace.history import HistoryFilter, HistoryState
    from .trace.store import TraceStore

    settings = load(args.config, check_files=False)  # only reads the trace: certificates do not matter
    departments, flows = _list(args.department), _list(args.flow)
    wanted = HistoryFilter(date_from=args.date_from, date_to=args.date_to,
                           departments=tuple(parse_departments(settings, departments)) if departments else (),
                           flows=tuple(parse_flows(flows)) if flows else (), state=HistoryState(args.state))
    with TraceStore(settings.paths.trace) as trace:
        rows = query(trace, wanted)
    if args.json:
        print(json.dumps([as_dict(r) for r in rows], indent=1))
    else:
        for line in render_text(rows):
            print(line)
    return int(ExitCode.OK)


def cmd_retry(args: argparse.Namespace) -> int:
    from .config.settings import load
    from .core.errors import RefusedError
    from .core.lock import run_lock
    from .core.stopping import GracefulStop
    from .jobs.retry import retry

    settings = load(args.config)
    with run_lock(settings, "retry"), GracefulStop() as stop:
        try:
            result = retry(settings, args.id, clock=from_environment(), stop=stop.event)
        except RefusedError as exc:
            print(f"retry refused, nothing sent: {exc}")
            return int(ExitCode.REFUSED)
    for line in result.lines:
        print(line)
    return int(result.exit_code)


def cmd_purge(args: argparse.Namespace) -> int:
    from .archive import ArchiveStore
    from .config.settings import load
    from .core.lock import run_lock
    from .core.stopping import GracefulStop
    from .jobs.retention import describe, purge
    from .trace.store import TraceStore

    settings = load(args.config)
    clock = from_environment()
    if args.today is not None:
        from .jobs.guards import purge_today_problem

        problem = purge_today_problem(args.today, clock.today())
        if problem:
            print(f"flux-pmi: error: purge refused, nothing deleted: {problem}", file=sys.stderr)
            return int(ExitCode.USAGE)
    # A purge has no file to finish: the first signal lets it end (it is short and marks before it
    # deletes), a second one kills it, and the next purge completes it.
    with run_lock(settings, "purge"), GracefulStop(message="stopping once the purge is finished"):
        trace = TraceStore(settings.paths.trace)
        try:
            result = purge(settings, trace, ArchiveStore(settings.paths.archive),
                           today=args.today or clock.today(), now=clock.now(), dry_run=args.dry_run)
        finally:
            trace.close()
    for line in describe(result):
        print(line)
    return int(ExitCode.OK)


def cmd_hold(args: argparse.Namespace) -> int:
    from .jobs.holds import hold

    for line in hold(args.config, args.department, by=args.by, reason=args.reason, now=from_environment().now()):
        print(line)
    return int(ExitCode.OK)


def cmd_resume(args: argparse.Namespace) -> int:
    from .jobs.holds import resume

    for line in resume(args.config, args.department, by=args.by, now=from_environment().now()):
        print(line)
    return int(ExitCode.OK)


def cmd_journal(args: argparse.Namespace) -> int:
    from .jobs.journal import forget, rows

    if args.forget is None:
        lines = rows(args.config, args.department, args.transport)
    else:
        lines = forget(args.config, args.department, args.transport, args.forget, by=args.by, reason=args.reason,
                       now=from_environment().now())
    for line in lines:
        print(line)
    return int(ExitCode.OK)


def cmd_serve(args: argparse.Namespace) -> int:
    from .config.settings import load
    from .scheduler import serve

    return serve(load(args.config), clock=from_environment())


def cmd_receive(args: argparse.Namespace) -> int:
    from .receive.config import check_distinct, load_receive
    from .receive.pipeline import serve_receivers

    if args.config is not None:
        files = [args.config]
    else:
        files = sorted(Path(args.config_dir).glob("*.toml"))
        if not files:
            raise ConfigError(args.config_dir, "--config-dir", "a folder holding at least one DEPT.toml")
    configs = [load_receive(f) for f in files]
    check_distinct(configs)
    progress = _progress() if args.once else None  # a service's passes are not watched

    def emit(line: str) -> None:
        _done(progress)
        print(line)

    try:
        return int(serve_receivers(configs, clock=from_environment(), once=args.once, emit=emit,
                                   verbose=args.verbose, progress=progress))
    finally:
        _done(progress)


def _write_metrics(settings: object, job: str, *, succeeded: bool) -> None:
    """The textfile metrics after a command, when `[service] metrics_file` is set (a failure is only logged)."""
    from .report.metrics import after_job

    after_job(settings, job, succeeded=succeeded, now=from_environment().now())  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
