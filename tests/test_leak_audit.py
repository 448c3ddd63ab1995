"""Leak audit: one realistic day end to end, then a scan for personal data everywhere it must not be.

Scenario: run, receive (every département), status (text and JSON), reemit, a second run
(which collects the acknowledgements), with `[service] metrics_file` set. Every personal value
of the seeded demo inbox is searched (UTF-8 and ISO-8859-1) in the captured outputs, in every
file name, and in the content of every file that is not a legitimate holder of personal data
(sealed files included: they must not leak plaintext). Then the modes of what holds personal data.
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

from support import BUSINESS_DATE, SMALL, dump_sqlite, make_demo, run_cli

FLOWS = {"DSG", "GRO", "SGR"}
# Legitimate holders of personal data: the input material, work areas and keys.
HOLDERS = {"inbox", "work", "quarantine", "pki"}  # consumed/ is kept encrypted: scanned like the rest
PRIVATE = ("inbox", "consumed", "archive", "trace", "drop", "received")


def _personal_values(root: Path) -> set[str]:
    from flux_pmi.demo.generate import generate_inbox

    again = generate_inbox(
        root / "regen-inbox", business_date=BUSINESS_DATE, departments=SMALL.split(","), seed=7, bad=True
    )
    shutil.rmtree(root / "regen-inbox")
    return again.personal_values


def _is_departement_output(rel: Path) -> bool:
    """received/<dept>/<FLOW>/... : what the département ingested (records.csv, records.parquet, scans/)."""
    return len(rel.parts) >= 4 and rel.parts[0] == "received" and rel.parts[2] in FLOWS


def test_no_personal_data_leaks_anywhere_across_a_whole_day(tmp_path):
    root = tmp_path / "demo"
    make_demo(root)
    values = _personal_values(root)
    assert len(values) > 50
    cfg_path = root / "flux-pmi.toml"
    with cfg_path.open("a") as f:
        f.write('\n[service]\nmetrics_file = "prom/flux-pmi.prom"\n')
    (root / "prom").mkdir()
    cfg = str(cfg_path)
    day = BUSINESS_DATE.isoformat()

    outputs: list[str] = []

    def cli(*args: str, ok: tuple[int, ...] = (0,)) -> None:
        proc = run_cli(*args)
        outputs.append(proc.stdout + proc.stderr)
        assert proc.returncode in ok, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"

    cli("run", "--config", cfg, "--date", day)
    cli("receive", "--config-dir", str(root / "receive"), "--once")
    cli("status", "--config", cfg, ok=(0, 7))
    cli("status", "--config", cfg, "--json", ok=(0, 7))
    cli("reemit", "--config", cfg, "--flow", "GRO", "--department", "035", "--date", day, "--reason", "audit")
    cli("run", "--config", cfg, "--date", day)
    assert (root / "prom" / "flux-pmi.prom").is_file()

    haystacks: dict[str, bytes] = {"stdout+stderr": "\n".join(outputs).encode()}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        haystacks[f"name:{rel}"] = str(rel).encode()
        if not p.is_file() or rel.parts[0] in HOLDERS or _is_departement_output(rel):
            continue
        haystacks[str(rel)] = p.read_bytes()
        if p.suffix == ".sqlite":
            haystacks[f"dump:{rel}"] = dump_sqlite(p)
    scanned = {k for k in haystacks if not k.startswith("name:")}
    assert "dump:trace/flux-pmi.sqlite" in scanned
    assert any(k.startswith("dump:received/") and "ledger.sqlite" in k for k in scanned), sorted(scanned)
    assert any(k.startswith("reports/") for k in scanned) and any(k.startswith("drop/") for k in scanned)
    assert any(k.startswith("archive/") for k in scanned) and "prom/flux-pmi.prom" in scanned
    # The consumed input (upstream's raw files, NIR and phones included) is scanned too: kept encrypted.
    assert any(k.startswith("consumed/") and k.endswith(".tar.p7m") for k in scanned), sorted(scanned)

    needles = [(v, v.encode()) for v in values] + [(v, v.encode("iso-8859-1", "ignore")) for v in values]
    hits = sorted({(where, v) for where, data in haystacks.items() for v, n in needles if n and n in data})
    assert hits == [], f"{len(hits)} leak(s):\n" + "\n".join(f"  {where}: {v!r}" for where, v in hits[:50])

    loose = []
    for sub in PRIVATE:
        for p in [root / sub, *(root / sub).rglob("*")]:
            if p.is_symlink() or not (p.is_file() or p.is_dir()):
                continue
            mode = stat.S_IMODE(p.stat().st_mode)
            if mode & 0o077:
                loose.append(f"{p.relative_to(root)} {oct(mode)}")
    assert loose == [], "not owner-only:\n" + "\n".join(loose)
