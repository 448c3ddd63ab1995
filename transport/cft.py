"""Transfer CFT: hand each sealed file to the département's CFT partner through CFTUTIL, and wait for it.

Many départements take their flows through Axway Transfer CFT (the convention's annexe 2 names it).
CFT owns the network part, restarts and retries included; flux-pmi only asks it, through its command
line CFTUTIL, to SEND a file from the archive, then reads the catalog (SWAITCAT, or LISTCAT polling)
until the transfer is done (phase X, phasestep X) and, when the partner's acknowledgement is
expected, acknowledged. CFT keeps working after CFTUTIL returns, so a crash of flux-pmi must not
lead to a second SEND of a file CFT already has in hand: the trace's delivery journal
(trace/journal.py) records the transfer identifier (IDTU) of every file sent, and a rerun waits on
that IDTU instead. It sends again only when the catalog says the transfer failed or no longer knows
it. See docs/cft.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.settings import FLOWS, Department, Settings
from ..config.transports import SEND_TEMPLATE, WAIT_MODES, CftConfig, check_send_template
from ..core.errors import ConfigError, TransportError
from ..core.log import get as get_logger
from ..trace.journal import CftPhase, DeliveryJournal, JournalTransport
from .base import AckFile, CheckResult, Delivery, Receipt, Transport
from .retry import poll

DEFAULT_TIMEOUT = 300.0  # when built directly; from_config defaults to [delivery] timeout_seconds
DEFAULT_POLL_INTERVAL = 2.0
# SEND, LISTCAT and LISTPART answer at once on a healthy CFT; a hung CFTUTIL must not hold the night.
COMMAND_TIMEOUT = 60.0

# The product runs a transfer through phases A (pre-processing), T (transfer), Y (post-processing),
# Z (acknowledgement) and X (done), X last. With ACKSTATE=REQUIRE it waits in Z/H until the partner's
# acknowledgement arrives, then goes to X. So done is always X/X; the acknowledgement itself is read
# from the catalog's Ack flag (A, or N for a negative one). See docs/cft.md ("Phases").
# DIAGI codes the product documents as PARAM or AUTH errors: wrong partner, protocol or IDF. Retrying
# cannot cure them, so the night should stop insisting and an operator should look.
CONFIG_DIAGI = frozenset({402, 408, 409, 410, 411, 413, 434})
# CFTU10E..CFTU18E: CFTUTIL refused the command line itself (unknown command or keyword, bad value).
_SYNTAX = re.compile(r"\bCFTU1[0-8]E\b")
_MESSAGE = re.compile(r"\bCFT[A-Z]\d\d[EWF]\b")
_IDTU = re.compile(r"\bIDTU\s*=\s*([A-Za-z0-9]{1,8})\b")
_DIAGI = re.compile(r"\bDIAGI\s*=\s*(\d{1,3})\b")
_SWAITCAT = re.compile(r"\bSWAITCAT_[A-Z_]+\b")
_NO_RECORD = re.compile(r"no record found|\b0 record\(s\) selected", re.IGNORECASE)
_FIELD = re.compile(r"^\s*([A-Z][A-Z0-9]*)\s*=[ \t]*(.*?)\s*$")
# A LISTCAT CONTENT=BRIEF row: the partner, then the DTSA column (DTSAPP since 3.0): Direction S/R,
# Type F/M/R, State, Ack ("A" acknowledged, "N" negative, blank none), then Phase and Phasestep.
_BRIEF_ROW = re.compile(r"^\s*(?!CFTU\d\d)\S+\s+[SR][FMR][A-Z]([A-Z ])")
# Values CFTUTIL takes bare; anything else goes between single quotes, which CFTUTIL cannot escape.
_BARE = re.compile(r"[A-Za-z0-9_./:@+\-]+")


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """What LISTCAT says of one transfer."""

    idtu: str
    phase: str
    phasestep: str
    diagi: int
    diagp: str

    @property
    def done(self) -> bool:
        return self.phase == "X" and self.phasestep == "X"

    @property
    def failed(self) -> bool:
        # K: stopped. H with a diagnostic: interrupted, waiting for an operator. H with DIAGI 0 is only
        # held (T/H: waiting for a START; Z/H: waiting for the partner's acknowledgement), and D with a
        # diagnostic is CFT retrying on its own: keep waiting.
        return self.phasestep == "K" or (self.phasestep == "H" and self.diagi != 0)

    @property
    def awaiting_ack(self) -> bool:
        return self.phase == "Z" and self.phasestep == "H" and not self.failed

    def diagnostic(self) -> str:
        out = f"phase {self.phase}, phasestep {self.phasestep}, DIAGI {self.diagi:03d}"
        return out + (f", DIAGP {self.diagp}" if self.diagp else "")


def _quote(value: str) -> str:
    if _BARE.fullmatch(value):
        return value
    if "'" in value or any(c in value for c in "\r\n"):
        raise ValueError(f"{value!r} cannot be passed to CFTUTIL (quote or line break)")
    return f"'{value}'"


def _diagnostics(text: str) -> str:
    """The codes in a CFTUTIL answer, and nothing else of it: it may echo paths and names."""
    codes: list[str] = []
    for found in [*_MESSAGE.findall(text), *_SWAITCAT.findall(text)]:
        if found not in codes:
            codes.append(found)
    m = _DIAGI.search(text)
    if m:
        codes.append(f"DIAGI {int(m.group(1)):03d}")
    return " ".join(codes) or "no diagnostic code"


class CftError(TransportError):
    """CFTUTIL refused a command or failed to run; the reason holds its codes, never its echo."""


class CftUnreachable(CftError):
    """CFTUTIL gave no answer in time, or could not be run at all."""


class CftTransferError(CftError):
    """The catalog shows the transfer in error, gone, refused by the partner (NACK), or not done in time."""


class CftTransport(Transport):
    """One Transfer CFT partner (PART), driven through CFTUTIL."""

    name = "cft"

    def __init__(
        self,
        *,
        cftutil: Path,
        part: str,
        idf: Mapping[str, str],
        journal: DeliveryJournal,
        send_template: str = SEND_TEMPLATE,
        wait: str = "swaitcat",
        expect_ack: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        ack_directory: Path | None = None,
        env: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        command_timeout: float = COMMAND_TIMEOUT,
        department: str = "",
    ):
        self.department = department  # the registry builds one transport per département and names it
        if not isinstance(part, str) or not _BARE.fullmatch(part):
            raise ValueError(f"part: a CFT partner identifier (letters, digits, _), not {part!r}")
        if not isinstance(idf, Mapping) or not idf:
            raise ValueError('idf: a table of the file type (IDF) per flow, e.g. { DSG = "PMIDSG" }')
        for flow, value in idf.items():
            if flow not in FLOWS or not isinstance(value, str) or not _BARE.fullmatch(value):
                raise ValueError(
                    f"idf: {flow} = {value!r}: expected a flow among {', '.join(FLOWS)} "
                    "and an IDF of letters and digits"
                )
        check_send_template(send_template)
        if wait not in WAIT_MODES:
            raise ValueError(f"wait: one of {', '.join(WAIT_MODES)}, not {wait!r}")
        if not isinstance(expect_ack, bool):
            raise ValueError("expect_ack: true or false")
        for key, seconds in (("timeout", timeout), ("poll_interval", poll_interval)):
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
                raise ValueError(f"{key}: a number of seconds greater than 0")
        extra = dict(env or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
            raise ValueError("env: a table of environment variables whose values are strings")
        self.cftutil = Path(cftutil)
        self.part = part
        self.idf = dict(idf)
        self.journal = journal
        self.send_template = send_template
        self.wait = wait
        self.expect_ack = expect_ack
        self.timeout = float(timeout)
        self.poll_interval = float(poll_interval)
        self.ack_directory = Path(ack_directory) if ack_directory is not None else None
        self.env = {**os.environ, **extra}
        self.sleep = sleep
        self.clock = clock
        self.command_timeout = command_timeout
        self.log = get_logger("flux-pmi.transport.cft")
        self._lock = threading.Lock()
        # file name -> monotonic deadline, set by the first attempt: the night's retries share it.
        self._deadlines: dict[str, float] = {}

    @classmethod
    def from_config(cls, settings: Settings, dept: Department, **kw: Any) -> CftTransport:
        """The département's [transport] table, validated when the configuration was loaded."""
        t = dept.transport
        if not isinstance(t, CftConfig):
            raise ConfigError(settings.file, f"departments.{dept.code}.transport.type", "cft")
        return cls(
            cftutil=t.path("cftutil", settings.base),
            part=t.part,
            idf=t.idf,
            journal=kw.pop("journal", None)
            or DeliveryJournal(settings.paths.trace, legacy_dir=settings.paths.work),
            send_template=t.send_template,
            wait=t.wait,
            expect_ack=t.expect_ack,
            # Unset, the partner gets the night's delivery timeout: the whole wait for one file,
            # retries included, as for the other transports.
            timeout=t.timeout or settings.delivery.timeout_seconds,
            poll_interval=t.poll_interval or DEFAULT_POLL_INTERVAL,
            ack_directory=t.path("ack_directory", settings.base) if t.ack_directory is not None else None,
            env=t.env,
            **kw,
        )

    # -- errors: what CFTUTIL's return codes and the catalog's diagnostics mean ----------------

    def _error(
        self, department: str, reason: str, *, permanent: bool = False, kind: type[CftError] = CftError
    ) -> CftError:
        """Every error this adapter raises: the partner named, codes only (answers may echo paths and names)."""
        return kind(department, f"CFT partner {self.part}: {reason}", permanent=permanent)

    def _failure(self, department: str, what: str, rc: int, text: str) -> CftError:
        """A CFTUTIL command that failed: permanent when the syntax or a PARAM/AUTH DIAGI says so."""
        m = _DIAGI.search(text)
        permanent = bool(_SYNTAX.search(text)) or (m is not None and int(m.group(1)) in CONFIG_DIAGI)
        return self._error(
            department, f"CFTUTIL {what} failed (rc={rc}, {_diagnostics(text)})", permanent=permanent
        )

    def _transfer_failed(self, department: str, entry: CatalogEntry) -> CftError:
        return self._error(
            department,
            f"transfer IDTU={entry.idtu} in error ({entry.diagnostic()})",
            permanent=entry.diagi in CONFIG_DIAGI,
            kind=CftTransferError,
        )

    def _left_catalog(self, department: str, idtu: str, why: str = "") -> CftError:
        return self._error(
            department,
            f"transfer IDTU={idtu} is not in the CFT catalog" + (f" ({why})" if why else ""),
            kind=CftTransferError,
        )

    def _nack(self, department: str, idtu: str) -> CftError:
        # Retryable on purpose: see docs/cft.md ("Phases and acknowledgements").
        return self._error(
            department,
            f"partner refused (NACK) the file of transfer IDTU={idtu}: its application sent a negative "
            "acknowledgement; the next attempt sends the file again",
            kind=CftTransferError,
        )

    def _no_idtu(self, item: Delivery) -> CftError:
        # Without an IDTU nothing tells whether CFT holds the request: sending again could deliver twice.
        return self._error(
            item.department,
            f"CFTUTIL SEND of {item.file_name} gave no IDTU (is CFTUTIL on the synchronous TCPIP medium?); "
            f"not sent again: check the CFT catalog; if it is not there, forget its row in the delivery journal: "
            f"flux-pmi journal {item.department} --transport cft --forget {item.file_name} --reason ...",
            permanent=True,
        )

    # -- CFTUTIL ---------------------------------------------------------------------------

    def _run(self, department: str, verb: str, params: str, timeout: float) -> tuple[int, str]:
        args = [str(self.cftutil), verb] + ([params] if params else [])
        try:
            proc = subprocess.run(args, capture_output=True, env=self.env, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise self._error(
                department, f"CFTUTIL {verb} gave no answer within {timeout:g} s", kind=CftUnreachable
            ) from exc
        except OSError as exc:
            raise self._error(
                department,
                f"cannot run CFTUTIL {self.cftutil}: {exc.strerror or exc}",
                permanent=True,
                kind=CftUnreachable,
            ) from exc
        return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")

    def _listcat(self, department: str, idtu: str) -> CatalogEntry | None:
        """The catalog record of `idtu`, or None if CFT does not know it (any more)."""
        rc, text = self._run(department, "LISTCAT", f"IDTU={idtu}, CONTENT=FULL", self.command_timeout)
        if _NO_RECORD.search(text):
            return None
        if rc != 0:
            raise self._failure(department, f"LISTCAT IDTU={idtu}", rc, text)
        fields: dict[str, str] = {}
        for line in text.splitlines():
            m = _FIELD.match(line)
            if m and m.group(1) not in fields:
                fields[m.group(1)] = m.group(2)
        state = fields.get("STATE", "")
        phase = fields.get("PHASE") or ("X" if state in ("T", "X") else "T" if state else "")
        phasestep = fields.get("PHASESTEP") or ("X" if state in ("T", "X") else state)
        if not phase or not phasestep:
            raise self._error(department, f"LISTCAT IDTU={idtu} shows no PHASE or STATE")
        try:
            diagi = int(fields.get("DIAGI", "0") or "0")
        except ValueError:
            diagi = -1
        return CatalogEntry(idtu, phase.upper(), phasestep.upper(), diagi, fields.get("DIAGP", ""))

    def _catalog(self, department: str, idtu: str) -> CatalogEntry:
        """The catalog record of a transfer that must be there and not in error."""
        entry = self._listcat(department, idtu)
        if entry is None:
            raise self._left_catalog(department, idtu)
        if entry.failed:
            raise self._transfer_failed(department, entry)
        return entry

    def _send(self, item: Delivery, idf: str) -> str | None:
        try:
            command = self.send_template.format(
                part=_quote(self.part),
                idf=_quote(idf),
                fname=_quote(str(item.path)),
                nfname=_quote(item.file_name),
            )
        except ValueError as exc:
            raise self._error(item.department, str(exc), permanent=True) from exc
        verb, _, params = command.strip().partition(" ")
        rc, text = self._run(item.department, verb, params.strip(), self.command_timeout)
        if rc != 0:
            raise self._failure(item.department, "SEND", rc, text)
        m = _IDTU.search(text)
        return m.group(1).upper() if m else None

    def _ack(self, department: str, idtu: str) -> str:
        """The catalog's Ack flag for `idtu`: "A" (acknowledged), "N" (negative) or "" (none yet).

        The product documents it as the fourth letter of the DTSA column of LISTCAT's brief listing
        (DTSAPP since 3.0, phase and phasestep appended): the only place the catalog shows it to CFTUTIL.
        """
        rc, text = self._run(department, "LISTCAT", f"IDTU={idtu}, CONTENT=BRIEF", self.command_timeout)
        if _NO_RECORD.search(text):
            raise self._left_catalog(department, idtu)
        if rc != 0:
            raise self._failure(department, f"LISTCAT IDTU={idtu}", rc, text)
        for line in text.splitlines():
            m = _BRIEF_ROW.match(line)
            if m:
                return m.group(1) if m.group(1) in ("A", "N") else ""
        raise self._error(
            department,
            f"LISTCAT IDTU={idtu} shows no DTSA column: cannot tell whether the partner acknowledged the "
            "transfer (see docs/cft.md)",
            permanent=True,
        )

    def _swaitcat(self, department: str, idtu: str, condition: str, remaining: float) -> bool:
        """One SWAITCAT on `idtu` for `condition`: True when reached, False to keep waiting."""
        rc, text = self._run(
            department,
            "SWAITCAT",
            f"SELECT='IDTU==\"{idtu}\"', {condition}, TIMEOUT={max(1, math.ceil(remaining))}",
            remaining + self.command_timeout,
        )
        if rc == 0:
            return True
        if "SWAITCAT_FAILED" in text:
            # The product fails a SWAITCAT on any phasestep H or K. Z/H with DIAGI 0 is only waiting for
            # the partner's acknowledgement, and T/H with DIAGI 0 is held: the catalog tells them apart.
            entry = self._listcat(department, idtu)
            if entry is None:
                raise self._error(
                    department, f"transfer IDTU={idtu} failed and left the catalog", kind=CftTransferError
                )
            if entry.failed:
                raise self._transfer_failed(department, entry)
            return entry.done and condition.startswith("PHASES")
        if "SWAITCAT_NFOUND" in text or "SWAITCAT_DELETED" in text:
            raise self._left_catalog(department, idtu, _diagnostics(text))
        if "SWAITCAT_TIMEOUT" not in text:
            raise self._failure(department, f"SWAITCAT IDTU={idtu}", rc, text)
        return False

    def _done(self, department: str, idtu: str, remaining: float) -> bool:
        """Whether the transfer is done (phase X, phasestep X); raises if it failed."""
        if self.wait == "swaitcat":
            return self._swaitcat(department, idtu, "PHASES=X, PHASESTEPS=X", remaining)
        return self._catalog(department, idtu).done

    def _acknowledged(self, department: str, idtu: str, deadline: float) -> bool:
        """For a transfer done: whether the partner acknowledged it; raises on a negative one."""
        ack = self._ack(department, idtu)
        if ack == "N":
            raise self._nack(department, idtu)
        if ack == "A":
            return True
        # Done but not acknowledged yet: a CFTSEND with ACKSTATE=IGNORE reaches X before the ack.
        remaining = deadline - self.clock()
        if self.wait != "swaitcat" or remaining <= 0:
            return False
        # STATES=XA: "the transfer reached the X state and is acknowledged".
        return self._swaitcat(department, idtu, "STATES=XA", remaining)

    def _wait(self, department: str, idtu: str, deadline: float) -> None:
        """Wait until the transfer is done and, with expect_ack, acknowledged, or the deadline passes."""
        done = False

        def finished() -> bool:
            nonlocal done
            remaining = deadline - self.clock()
            if remaining <= 0:
                self._last_look(department, idtu)
                return True
            if not done:
                done = self._done(department, idtu, remaining)
            return done and (not self.expect_ack or self._acknowledged(department, idtu, deadline))

        # A real SWAITCAT has already waited its TIMEOUT; the pause only matters if it came back early.
        poll(
            finished,
            pause=lambda: max(0.0, min(self.poll_interval, deadline - self.clock())),
            sleep=self.sleep,
        )

    def _last_look(self, department: str, idtu: str) -> None:
        """At the deadline: one LISTCAT, to accept a transfer that just ended or say what it waits for."""
        entry = self._catalog(department, idtu)
        if entry.done:
            ack = self._ack(department, idtu) if self.expect_ack else "A"
            if ack == "A":
                return
            if ack == "N":
                raise self._nack(department, idtu)
        if entry.awaiting_ack or entry.done:
            raise self._error(
                department,
                f"CFT transfer IDTU={idtu} waiting for the partner's acknowledgement beyond {self.timeout:g} s",
                kind=CftTransferError,
            )
        raise self._error(
            department,
            f"CFT transfer IDTU={idtu} not done within {self.timeout:g} s ({entry.diagnostic()})",
            kind=CftTransferError,
        )

    # -- the delivery journal --------------------------------------------------------------

    def _known(self, item: Delivery) -> tuple[str, str | None] | None:
        """(sha256, IDTU) of a file this partner was asked to send before, or None."""
        row = self.journal.entry(JournalTransport.CFT, item.department, item.file_name)
        # Another partner's row (the département moved to a new PART) says nothing of this one's catalog.
        if row is None or row.facts.get("part", self.part) != self.part:
            return None
        idtu = row.facts.get("idtu")
        return row.sha256, idtu if isinstance(idtu, str) and idtu else None

    def _record(self, item: Delivery, idtu: str | None, phase: CftPhase) -> None:
        self.journal.put(
            JournalTransport.CFT,
            item.department,
            item.file_name,
            sha256=item.sha256,
            step=phase,
            facts={"idtu": idtu, "part": self.part},
        )

    def _log(self, event: str, item: Delivery, idtu: str, *, warning: bool = False, **kw: Any) -> None:
        log = self.log.warning if warning else self.log.debug
        log(event, department=item.department, part=self.part, file=item.file_name, idtu=idtu, **kw)

    # -- Transport -------------------------------------------------------------------------

    def deliver(self, item: Delivery) -> Receipt:
        idf = self.idf.get(item.flow)
        if idf is None:
            raise self._error(item.department, f"no IDF configured for flow {item.flow}", permanent=True)
        with self._lock:
            # One deadline per file for the life of this transport (one night): a retry waits for what
            # is left of it, so `timeout` bounds the whole wait, however many attempts the night makes.
            deadline = self._deadlines.setdefault(item.file_name, self.clock() + self.timeout)
            known = self._known(item)
            if known is not None:
                receipt = self._resume(item, known, deadline)
                if receipt is not None:
                    self._deadlines.pop(item.file_name, None)
                    return receipt
            if self.clock() >= deadline:
                raise self._error(
                    item.department,
                    f"{item.file_name} not sent again: its {self.timeout:g} s are spent; the next run sends it",
                )
            idtu = self._send(item, idf)
            if idtu is None:
                self._record(item, None, CftPhase.NO_IDTU)
                raise self._no_idtu(item)
            self._record(item, idtu, CftPhase.SENT)
            self._log("cft.sent", item, idtu)
            self._wait(item.department, idtu, deadline)
            self._record(item, idtu, CftPhase.DONE)
            self._deadlines.pop(item.file_name, None)
            self._log("cft.done", item, idtu, acknowledged=self.expect_ack)
            return Receipt(item.file_name, reference=idtu)

    def _resume(self, item: Delivery, known: tuple[str, str | None], deadline: float) -> Receipt | None:
        """A file sent before (a rerun after a crash, or a retry): wait on it, or None to send again."""
        sha256, idtu = known
        # An earlier seal of this very file (re-sealed for a renewed certificate after a transfer that a
        # crash kept out of the trace) is the file sent already, not other content.
        earlier = "" if sha256 == item.sha256 else sha256
        if earlier and earlier not in {digest for digest, _size in item.earlier}:
            raise self._error(
                item.department, f"{item.file_name} was already sent with other content", permanent=True
            )
        if not idtu:
            raise self._no_idtu(item)
        entry = self._listcat(item.department, idtu)
        ack = self._ack(item.department, idtu) if entry is not None and entry.done and self.expect_ack else ""
        if entry is None or entry.failed or ack == "N":
            # In error, unknown, or refused by the partner's application (NACK): a new transfer.
            catalog = "unknown" if entry is None else "NACK" if ack == "N" else entry.diagnostic()
            self._log("cft.resend", item, idtu, warning=True, catalog=catalog)
            return None
        if not (entry.done and (ack == "A" or not self.expect_ack)):
            self._wait(item.department, idtu, deadline)
        self._record(dataclasses.replace(item, sha256=sha256), idtu, CftPhase.DONE)
        return Receipt(item.file_name, already_there=True, reference=idtu, earlier_sha256=earlier)

    def fetch_acks(self) -> list[AckFile]:
        folder = self.ack_directory
        if folder is None or not folder.is_dir():
            return []
        return [
            AckFile(self.department, p.name, p.read_bytes())
            for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".")
        ]

    def remove_ack(self, name: str) -> None:
        if self.ack_directory is not None:
            (self.ack_directory / name).unlink(missing_ok=True)

    def check(self) -> list[CheckResult]:
        exe = self.cftutil
        if not exe.is_file() or not os.access(exe, os.X_OK):
            return [CheckResult(self.department, False, "CFTUTIL not executable", str(exe))]
        out = [CheckResult(self.department, True, "CFTUTIL executable", str(exe))]
        try:
            rc, text = self._run(self.department, "LISTPART", f"ID={self.part}", self.command_timeout)
        except TransportError as exc:
            return out + [CheckResult(self.department, False, "CFT partner not checked", exc.reason)]
        if rc == 0 and not _NO_RECORD.search(text):
            out.append(CheckResult(self.department, True, "CFT partner defined", f"PART={self.part}"))
        else:
            out.append(
                CheckResult(
                    self.department,
                    False,
                    "CFT partner not defined",
                    f"PART={self.part}: rc={rc}, {_diagnostics(text)}",
                )
            )
        if self.ack_directory is not None and not self.ack_directory.is_dir():
            out.append(
                CheckResult(
                    self.department, True, "CFT ack directory missing", str(self.ack_directory), warning=True
                )
            )
        return out
