"""Test support: a seeded demo installation, the CLI as a subprocess, and readers of what was delivered.

Everything is deterministic: the demo data come from a seed and the clock is pinned
(FLUX_PMI_NOW for subprocesses, FixedClock in-process).
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import subprocess
import sys
import threading
import zipfile
from collections import Counter
from datetime import date, datetime
from pathlib import Path

from lxml import etree

from flux_pmi.core.clock import PARIS

BUSINESS_DATE = date(2026, 11, 23)  # a Monday
NOW = datetime(2026, 11, 23, 4, 0, tzinfo=PARIS)
SMALL = "035,02A,067,971"


def make_demo(root: Path, departments: str = SMALL, seed: int = 7):
    from flux_pmi.demo.setup import write_demo

    return write_demo(root, business_date=BUSINESS_DATE, departments=departments, seed=seed, now=NOW)


def run_cli(*args: str, env_extra: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLUX_PMI_NOW": NOW.isoformat(), "FLUX_PMI_LOG_FORMAT": "json", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "flux_pmi.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def open_delivered(root: Path, drop: str = "drop") -> dict[str, bytes]:
    """Every file delivered to the local drop, opened as the département would: {relative name: plaintext}."""
    from flux_pmi.seal import certs, cms

    out: dict[str, bytes] = {}
    ca = certs.load_certificate(root / "pki" / "cnaf.crt")
    for p in sorted((root / drop).glob("*/*.p7m")):
        dept = p.parent.name
        cert = certs.load_certificate(root / "pki" / f"{dept}.crt")
        key = certs.load_private_key(root / "pki" / f"{dept}.key", None)
        out[f"{dept}/{p.name}"] = cms.open_sealed(p.read_bytes(), recipient_cert=cert, recipient_key=key,
                                                  trusted_signers=[ca])
    return out


def record_fingerprints(delivered: dict[str, bytes]) -> Counter:
    """A fingerprint per delivered record, independent of file names, sequences and timestamps."""
    fps: Counter = Counter()
    for name, data in delivered.items():
        flow = name.split("/")[1][:3]
        if flow == "SGR":
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                index = next(n for n in z.namelist() if n.endswith("_pmiich.xml"))
                root = etree.fromstring(z.read(index))
                for case in root.iter("InfoSuiviGrossessePMI"):
                    scan = case.findtext("DossierPMI/NOMIMAGED").lstrip("/")
                    fps[("SGR", case.findtext(".//MATRICULE"), hashlib.sha256(z.read(scan)).hexdigest())] += 1
        elif flow == "GRO":
            root = etree.fromstring(data)
            for case in root.iter("InfoSuiviGrossessePMI"):
                fps[("GRO", etree.tostring(case, method="c14n"))] += 1
        else:
            root = etree.fromstring(data)
            for ident in root.iter("{urn:cnamts:dsgcnaf}Identification"):
                fps[("DSG", ident.text)] += 1
    return fps


class CliProcess:
    """A `flux-pmi` command as a subprocess whose stderr a thread reads, so that every wait has a
    deadline and a test can hand-shake on a log line instead of sleeping."""

    def __init__(self, *args: str, env_extra: dict[str, str] | None = None, deadline: float = 60):
        env = {**os.environ, "FLUX_PMI_NOW": NOW.isoformat(), "FLUX_PMI_LOG_FORMAT": "json", **(env_extra or {})}
        self.deadline = deadline
        self.proc = subprocess.Popen([sys.executable, "-m", "flux_pmi.cli", *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.stderr: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)
            self._lines.put(line)

    def wait_for(self, text: str) -> str:
        """Block until a stderr line contains `text` (the process's side of a handshake)."""
        while True:
            try:
                line = self._lines.get(timeout=self.deadline)
            except queue.Empty:
                raise AssertionError(f"never saw {text!r}; stderr:\n{''.join(self.stderr)}") from None
            if text in line:
                return line

    def finish(self) -> tuple[int, str, str]:
        """Wait for the command to end (at most the deadline: one that does not end fails the test,
        it does not hang it), then its exit code, stdout and stderr."""
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(self.proc.stdout.read()), daemon=True)
        reader.start()
        try:
            code = self.proc.wait(timeout=self.deadline)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"flux-pmi {self.proc.args[3]} still running after {self.deadline} s; stderr: "
                                 + "".join(self.stderr)[-2000:]) from None
        reader.join(timeout=self.deadline)
        self._reader.join(timeout=self.deadline)
        return code, "".join(out), "".join(self.stderr)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


class PausedRun(CliProcess):
    """`flux-pmi run` as a subprocess, parked at a fault point until released through a FIFO."""

    def __init__(self, root: Path, pause_at: str, *, deadline: float = 120):
        self.fifo = root.parent / "pause.fifo"
        os.mkfifo(self.fifo, 0o600)
        super().__init__("run", "--config", str(root / "flux-pmi.toml"), "--date", BUSINESS_DATE.isoformat(),
                         deadline=deadline,
                         env_extra={"FLUX_PMI_PAUSE_AT": pause_at, "FLUX_PMI_PAUSE_FIFO": str(self.fifo)})

    def release(self) -> None:
        with open(self.fifo, "wb") as fifo:  # opens once the paused worker has opened its end
            fifo.write(b"go\n")


def dump_sqlite(path: Path) -> bytes:
    """A SQLite database's whole content as SQL text, read-only: what a leak scan searches."""
    import sqlite3

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "\n".join(db.iterdump()).encode()
    finally:
        db.close()
