#!/usr/bin/env python3
"""A stand-in for Axway Transfer CFT's CFTUTIL, so the CFT adapter can be tested where CFT cannot run.

Transfer CFT is a commercial product; the adapter (`transport/cft.py`) only ever talks to it through
the CFTUTIL command line. This script answers the four commands the adapter uses (SEND, LISTCAT,
SWAITCAT, LISTPART, plus ABOUT) with the syntax, message lines and return codes the product
documents (0 correct, 4 warning, 8 error; CFTU00I / CFTU24W / CFTU25E lines; SWAITCAT_OK,
SWAITCAT_FAILED, SWAITCAT_TIMEOUT, SWAITCAT_NFOUND), so that the adapter's parsing is exercised
against realistic output, failures included. docs/cft.md lists what is imitated and what is not.

State lives under $FAKE_CFT_HOME:
- `partners.json`: the CFTPART stand-ins, {"PMI035": {"behaviour": "ok"}, ...}. Behaviours:
  - "ok": T/D, T/C, then X/X (done).
  - "error": T/D, T/C, then T/K with DIAGI `diagi` (default 405) and DIAGP `diagp`.
  - "slow": never leaves phase T: SWAITCAT times out.
  - "ack": a CFTSEND with ACKSTATE=REQUIRE. T/D, T/C, Y/C, then Z/H (waiting for the partner's
    acknowledgement) for `ack_after` catalog queries (default 2), then X/X with the ack received.
  - "nack": the same, but the partner's application answers with a negative acknowledgement.
  - "noack": the same, but no acknowledgement ever comes: it stays in Z/H.
  - "late_ack": ACKSTATE=IGNORE. X/X first, the acknowledgement arrives `ack_after` queries later.
  Options: "idfs" (IDFs authorised for the partner: another one ends in K with DIAGI 411),
  "no_idtu" (SEND answers without the IDT/IDTU line, as with the asynchronous file medium).
- `catalog.json`: the catalog, one record per IDTU.
- `delivered/<PART>/<NFNAME>`: what the partner received, written when a transfer leaves phase T.
- `calls.jsonl`: one line per invocation, for tests to count SENDs.

Nothing sleeps: a transfer moves one step per LISTCAT and as far as it can per SWAITCAT (a
SWAITCAT stops at a step marked as a pause, such as Z/H, so the next step needs another query),
which keeps tests deterministic.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

RC_OK, RC_WARNING, RC_ERROR = 0, 4, 8

# A step is (phase, phasestep, pause, ack). `pause` ends a SWAITCAT invocation at that step, so the
# next step needs another catalog query. `ack` is what the catalog shows of the partner's
# acknowledgement: "" (none yet), "A" (acknowledged) or "N" (negative acknowledgement).
Step = tuple[str, str, bool, str]
BEHAVIOURS = ("ok", "error", "slow", "ack", "nack", "noack", "late_ack")


def script(behaviour: str, ack_after: int) -> list[Step]:
    sent: list[Step] = [("T", "D", False, ""), ("T", "C", False, "")]
    waiting: list[Step] = [("Z", "H", True, "")] * ack_after
    if behaviour == "ok":
        return [*sent, ("X", "X", False, "")]
    if behaviour == "error":
        return [*sent, ("T", "K", False, "")]
    if behaviour == "slow":
        return sent
    if behaviour in ("ack", "nack"):
        verdict = "A" if behaviour == "ack" else "N"
        return [*sent, ("Y", "C", False, ""), *waiting, ("X", "X", False, verdict)]
    if behaviour == "noack":
        return [*sent, ("Y", "C", False, ""), ("Z", "H", True, "")]
    if behaviour == "late_ack":
        return [*sent, *[("X", "X", False, "")] * (ack_after + 1), ("X", "X", False, "A")]
    raise ValueError(behaviour)


KEYWORDS = {
    "SEND": {"PART", "IDF", "FNAME", "NFNAME", "IDA", "PARM", "NIDF", "PRI"},
    "LISTCAT": {"IDTU", "IDT", "PART", "CONTENT", "TYPE", "DIRECT"},
    "SWAITCAT": {"SELECT", "PHASES", "PHASESTEPS", "STATES", "TIMEOUT"},
    "LISTPART": {"ID", "TYPE", "CONTENT"},
    "ABOUT": set(),
}
REQUIRED = {"SEND": ("PART", "IDF"), "SWAITCAT": ("SELECT",)}


class Failed(Exception):
    """A CFTUTIL error line and the return code it comes with."""

    def __init__(self, line: str, rc: int = RC_ERROR):
        super().__init__(line)
        self.line, self.rc = line, rc


def split_params(text: str) -> list[str]:
    """Split on the commas that separate parameters, not on those inside single quotes."""
    parts, current, quoted = [], [], False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quoted:
        raise Failed("CFTU13E: PARAMETERS Failed_missing quote")
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse(cmd: str, text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in split_params(text):
        key, sep, value = item.partition("=")
        key, value = key.strip().upper(), value.strip()
        if not sep or not key:
            raise Failed(f"CFTU12E: {cmd} Failed _ illegal separator for keyword {key or item}")
        if key not in KEYWORDS[cmd] or key in params:
            raise Failed(f"CFTU15E: {cmd} Failed _ keyword {key} unknown or duplicate")
        if value.startswith("'") and value.endswith("'") and len(value) >= 2:
            value = value[1:-1]
        params[key] = value
    for key in REQUIRED.get(cmd, ()):
        if not params.get(key):
            raise Failed(f"CFTU16E: {cmd} Failed _ keyword {key} missing")
    return params


class Home:
    """The stand-in's files, read and written under one lock (parallel CFTUTILs share a catalog)."""

    def __init__(self, root: Path):
        self.root = root
        self.catalog_file = root / "catalog.json"
        self.partners = (
            json.loads((root / "partners.json").read_text()) if (root / "partners.json").exists() else {}
        )

    def __enter__(self) -> Home:
        self._lock = open(self.root / ".lock", "a")  # noqa: SIM115 - held until __exit__
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.catalog = (
            json.loads(self.catalog_file.read_text())
            if self.catalog_file.exists()
            else {"next": 1, "transfers": {}}
        )
        return self

    def save(self) -> None:
        tmp = self.catalog_file.with_name(".catalog.json.tmp")
        tmp.write_text(json.dumps(self.catalog, indent=1, sort_keys=True))
        os.replace(tmp, self.catalog_file)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()

    def log_call(self, cmd: str, params: dict[str, str]) -> None:
        with open(self.root / "calls.jsonl", "a") as fh:
            fh.write(json.dumps({"cmd": cmd, **params}) + "\n")


def base36(n: int, width: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out.rjust(width, "0")


def set_step(home: Home, t: dict, step: int) -> None:
    phase, phasestep, _pause, ack = t["script"][step]
    t["step"], t["phase"], t["phasestep"], t["ack"] = step, phase, phasestep, ack
    # Since 3.0 the state is the phasestep in phase T and the phase otherwise (cft.state_compat=No).
    t["state"] = phasestep if phase == "T" else phase
    if phasestep == "K" and t["behaviour"] == "error":
        t["diagi"], t["diagp"] = t["fail_diagi"], t["fail_diagp"]
    if phase in ("Y", "Z", "X") and not t.get("delivered"):
        deliver(home, t)


def freeze(t: dict, phasestep: str, diagi: int) -> None:
    """A record that stops in phase T and does not move any more (refused IDF, missing file)."""
    t.update(
        phase="T", phasestep=phasestep, state=phasestep, diagi=diagi, diagp="", ack="", script=[], step=0
    )


def deliver(home: Home, t: dict) -> None:
    src = Path(t["fname"])
    if not src.is_file():  # DIAGI 110: "FILE - The send file does not exist", H status
        freeze(t, "H", 110)
        return
    folder = home.root / "delivered" / t["part"]
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = t["nfname"] or src.name
    tmp = folder / f".{name}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(src.read_bytes())
    os.replace(tmp, folder / name)
    t["delivered"] = True


def paused(t: dict) -> bool:
    return t["step"] < len(t["script"]) and t["script"][t["step"]][2]


def stopped(t: dict) -> bool:
    """K, or H with a diagnostic: only an operator moves it. Z/H with DIAGI 0 waits for an ack."""
    return t["phasestep"] == "K" or (t["phasestep"] == "H" and t["diagi"] != 0)


def swaitcat_failed(t: dict) -> bool:
    """The documented SWAITCAT_FAILED condition: 'the transfer reached the K or H phasestep'."""
    return t["phasestep"] in ("K", "H")


def cmd_send(home: Home, params: dict[str, str], raw: str) -> tuple[list[str], int]:
    part = params["PART"].upper()
    partner = home.partners.get(part)
    if partner is None:
        # The product ends such a request with DIAGI 408, "PART parameter not described by a CFTPART command".
        raise Failed(f"CFTU25E SEND _ Error (PART={part} not found, DIAGI=408)")
    n = home.catalog["next"]
    home.catalog["next"] = n + 1
    idtu, idt = "A" + base36(n, 7), "B" + str(n).zfill(7)
    behaviour = partner.get("behaviour", "ok")
    if behaviour not in BEHAVIOURS:
        raise Failed(f"CFTU26E SEND _ Error (fake partner {part} has unknown behaviour {behaviour})")
    t = {
        "idtu": idtu,
        "idt": idt,
        "part": part,
        "idf": params["IDF"].upper(),
        "fname": params.get("FNAME", ""),
        "nfname": params.get("NFNAME", ""),
        "behaviour": behaviour,
        "script": script(behaviour, int(partner.get("ack_after", 2))),
        "diagi": 0,
        "diagp": "",
        "fail_diagi": int(partner.get("diagi", 405)),
        "fail_diagp": partner.get("diagp", ""),
    }
    home.catalog["transfers"][idtu] = t
    set_step(home, t, 0)
    if partner.get("idfs") is not None and t["idf"] not in {i.upper() for i in partner["idfs"]}:
        # DIAGI 411: "AUTH - File identifier (IDF) not authorized", K status
        freeze(t, "K", 411)
    elif t["fname"] and not Path(t["fname"]).is_file():
        freeze(t, "H", 110)
    home.save()
    lines = [] if partner.get("no_idtu") else [f"CFTU00I SEND _ Correct (IDT={idt} IDTU={idtu} )"]
    return lines + [f"CFTU00I SEND _ Correct ({raw[:50]})"], RC_OK


def advance(home: Home, t: dict) -> bool:
    """One step forward, if the script has one. Returns whether it moved."""
    if stopped(t) or t["step"] + 1 >= len(t["script"]):
        return False
    set_step(home, t, t["step"] + 1)
    return True


def record_lines(t: dict) -> list[str]:
    fields = [
        ("PART", t["part"]),
        ("IDTU", t["idtu"]),
        ("IDT", t["idt"]),
        ("DIRECT", "SEND"),
        ("TYPE", "FILE"),
        ("STATE", t["state"]),
        ("PHASE", t["phase"]),
        ("PHASESTEP", t["phasestep"]),
        ("DIAGI", f"{t['diagi']:03d}"),
        ("DIAGP", t["diagp"]),
        ("IDF", t["idf"]),
        ("FNAME", t["fname"]),
        ("NFNAME", t["nfname"]),
    ]
    return [f"  {k:<9} = {v}" for k, v in fields]


def brief_lines(records: list[dict]) -> list[str]:
    """CONTENT=BRIEF: one row per transfer. DTSAPP is direction, type, state, ack, phase, phasestep."""
    lines = [
        "  Partner  DTSAPP File     Transfer    Records    Records Diag Diag",
        "  Ident            Ident    Ident      Transmit      Total      Protocol",
    ]
    for t in records:
        dtsapp = "SF" + t["state"] + (t["ack"] or " ") + t["phase"] + t["phasestep"]
        lines.append(
            f"  {t['part']:<8} {dtsapp} {t['idf']:<8} {t['idt']:<8} {1:>10} {1:>10} {t['diagi']:>4} {t['diagp']}"
        )
    return lines


def cmd_listcat(home: Home, params: dict[str, str], raw: str) -> tuple[list[str], int]:
    wanted = params.get("IDTU", "*").upper()
    records = [t for idtu, t in sorted(home.catalog["transfers"].items()) if wanted in ("*", idtu)]
    if params.get("PART"):
        records = [t for t in records if t["part"] == params["PART"].upper()]
    if not records:
        return ["0 record(s) selected", "CFTU24W LISTCAT _ Warning (no record found)"], RC_WARNING
    for t in records:
        advance(home, t)
    home.save()
    content = params.get("CONTENT", "BRIEF").upper()
    if content == "FULL":
        lines: list[str] = []
        for t in records:
            lines += record_lines(t) + [""]
    elif content == "BRIEF":
        lines = brief_lines(records)
    else:
        raise Failed(f"CFTU18E: LISTCAT Failed _ invalid value for keyword CONTENT ({content} not imitated)")
    total = len(home.catalog["transfers"])
    return lines + [
        f"{len(records)} record(s) selected",
        f"{total} record(s) in Catalog file",
        f"CFTU00I LISTCAT _ Correct ({raw[:50]})",
    ], RC_OK


# SWAITCAT STATES, as the product documents them ("the transfer is completed", "... and acknowledged",
# "received a negative acknowledgment"). Completed means past phase T.
STATES: dict[str, Callable[[dict], bool]] = {
    "T": lambda t: t["phase"] in "YZX",
    "TX": lambda t: t["phase"] in "YZX",
    "X": lambda t: t["phase"] == "X",
    "A": lambda t: t["ack"] == "A",
    "TA": lambda t: t["phase"] in "YZX" and t["ack"] == "A",
    "TXA": lambda t: t["phase"] in "YZX" and t["ack"] == "A",
    "XA": lambda t: t["phase"] == "X" and t["ack"] == "A",
    "Y": lambda t: t["phase"] in "ZX",
    "Z": lambda t: t["phase"] == "X",
    "N": lambda t: t["ack"] == "N",
}


def cmd_swaitcat(home: Home, params: dict[str, str], raw: str) -> tuple[list[str], int]:
    m = re.fullmatch(r"\s*\(?\s*IDTU\s*==\s*\"([^\"]*)\"\s*\)?\s*", params["SELECT"], re.IGNORECASE)
    if m is None:
        raise Failed(f"CFTU25E SWAITCAT _ Error (SWAITCAT_PARAM_ERROR: select='{params['SELECT']}')")
    by_phase = "PHASES" in params or "PHASESTEPS" in params
    phases, steps = params.get("PHASES", "X").upper(), params.get("PHASESTEPS", "X").upper()
    states = params.get("STATES", "" if by_phase else "TX").upper()
    if states and states not in STATES:
        raise Failed(f"CFTU25E SWAITCAT _ Error (SWAITCAT_PARAM_ERROR: states={states})")
    try:
        timeout = int(params.get("TIMEOUT", str(365 * 24 * 3600)))
    except ValueError:
        raise Failed("CFTU18E: SWAITCAT Failed _ invalid value for keyword TIMEOUT") from None
    t = home.catalog["transfers"].get(m.group(1).upper())
    if t is None:
        raise Failed(f"CFTU25E SWAITCAT _ Error (SWAITCAT_NFOUND: select='IDTU==\"{m.group(1)}\"' Not Found)")

    def reached() -> bool:
        ok = not by_phase or (t["phase"] in phases and t["phasestep"] in steps)
        return ok and (not states or STATES[states](t))

    while not reached() and advance(home, t):
        if paused(t) or swaitcat_failed(t):
            break
    home.save()
    where = f"phase {t['phase']}, phasestep {t['phasestep']}, state {t['state']}"
    if reached():
        return [
            f"CFTU00I SWAITCAT _ Correct (SWAITCAT_OK: reached {where})",
            f"CFTU00I SWAITCAT _ Correct ({raw[:50]})",
        ], RC_OK
    if swaitcat_failed(t):
        raise Failed(f"CFTU25E SWAITCAT _ Error (SWAITCAT_FAILED: reached {where})")
    raise Failed(f"CFTU25E SWAITCAT _ Error (SWAITCAT_TIMEOUT: TIMEOUT={timeout} reached, {where})")


def cmd_listpart(home: Home, params: dict[str, str], raw: str) -> tuple[list[str], int]:
    wanted = params.get("ID", "*").upper()
    ids = [p for p in sorted(home.partners) if wanted in ("*", p.upper())]
    if not ids:
        return ["CFTU24W LISTPART _ Warning (no record found)"], RC_WARNING
    lines = []
    for p in ids:
        lines += [f"  {'ID':<9} = {p}", f"  {'TYPE':<9} = PART", f"  {'STATE':<9} = ACTIVEBOTH", ""]
    return lines + [f"CFTU00I LISTPART _ Correct ({raw[:50]})"], RC_OK


def cmd_about(home: Home, params: dict[str, str], raw: str) -> tuple[list[str], int]:
    return [
        "CFTU20I CFT/V3/FAKE flux-pmi stand-in, not Axway Transfer CFT",
        "CFTU00I ABOUT _ Correct ()",
    ], RC_OK


COMMANDS = {
    "SEND": cmd_send,
    "LISTCAT": cmd_listcat,
    "SWAITCAT": cmd_swaitcat,
    "LISTPART": cmd_listpart,
    "ABOUT": cmd_about,
}


def main(argv: list[str]) -> int:
    out = ["CFTU20I", "CFTU20I CFT/V3/FAKE (flux-pmi test stand-in)", "CFTU20I ====> Starting Session"]
    errors = 0
    rc = RC_OK
    if len(argv) < 2:
        out.append("CFTU20I interactive mode is not imitated")
        rc = RC_ERROR
    else:
        cmd, raw = argv[1].upper(), " ".join(argv[2:]).strip()
        try:
            if cmd not in COMMANDS:
                raise Failed(f"CFTU10E: {cmd} Failed _ unknown command")
            params = parse(cmd, raw)
            home_dir = os.environ.get("FAKE_CFT_HOME")
            if not home_dir or not Path(home_dir).is_dir():
                raise Failed(f"CFTU26E {cmd} _ Error (Catalog file opening error)")
            with Home(Path(home_dir)) as home:
                home.log_call(cmd, params)
                lines, rc = COMMANDS[cmd](home, params, raw)
            out += lines
        except Failed as exc:
            out.append(exc.line)
            if cmd in COMMANDS:
                out.append(f"CFTU00I {cmd} _ Failed ({raw[:50]})")
            rc, errors = exc.rc, 1
    out += [
        "CFTU20I Number of Command(s) 1",
        f"CFTU20I Number of error(s) {errors}",
        "CFTU20I Ending Session",
    ]
    print("\n".join(out))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
