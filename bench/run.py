"""The project's benchmark (issue 15): a national night and an N-day catch-up over real SFTP partners.

Why it exists: performance claims need one harness anyone can rerun on a fresh machine
(`make setup system-deps bench`), with the same seeded data, against the same server code the
départements run (OpenSSH sshd on loopback, one per département, ed25519 keys), and beside the
shell pipeline an operator would write instead (bench/pipeline.sh), over the same plain files,
in the same run. It reports; it asserts nothing about speed (docs/performance.md keeps the figures).

What is measured, per scenario:
- wall time of the command;
- CPU time: user + system of the client-side processes (RUSAGE_CHILDREN deltas: the sshd
  servers are not our waited children until the end, so their work is not counted on either side);
- peak RSS: /usr/bin/time -v's "Maximum resident set size" (the largest process of the command's tree).

Scenarios:
1. night: `flux-pmi demo` (seeded) for every département, its config rewritten so that each
   département is delivered over SFTP to its own partner, then one `flux-pmi run`;
2. shell: the files flux-pmi built that night (opened from what the partners received: the very
   same bytes), pushed by bench/pipeline.sh to another folder of the same partners;
3. catch-up: N working days of input dropped in the inbox at once, then one `flux-pmi run`;
4. SSH libraries (bench/ssh_libraries.py): the night's files, then the catch-up's largest, pushed
   again by paramiko and by asyncssh with the same operations, when asyncssh is installed.

Usage: `python bench/run.py [--departments all] [--days 30] [--seed 2026] [--date 2026-11-20] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the sshd partners live with the tests (tests/support/sshd.py)
sys.path.insert(0, str(REPO / "bench"))  # its own modules, however this file is loaded

import ssh_libraries  # noqa: E402  (bench/, beside this file)
from support.sshd import FLOW_DIRS, PartnerPool, SshdPartner, generate_key  # noqa: E402
from support.toml import _inline  # noqa: E402

from flux_pmi.core import log as logging_setup  # noqa: E402
from flux_pmi.core.clock import PARIS  # noqa: E402
from flux_pmi.demo.generate import generate_inbox, working_days_before  # noqa: E402
from flux_pmi.demo.setup import parse_departments, write_demo  # noqa: E402
from flux_pmi.schemas import xsd_path  # noqa: E402
from flux_pmi.seal import certs, cms  # noqa: E402

PIPELINE = Path(__file__).resolve().parent / "pipeline.sh"
TIME = Path("/usr/bin/time")
DEFAULT_DATE = date(2026, 11, 20)
SHELL_DIR = "shell"  # the shell pipeline's folder on each partner, beside flux-pmi's in/ and acks/


@dataclass(frozen=True)
class Measure:
    """One scenario's figures."""

    scenario: str
    records: int
    files: int
    bytes: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float


@dataclass(frozen=True)
class Machine:
    nproc: int
    cpu: str
    ram_gb: float
    os: str
    python: str
    openssh: str
    openssl: str
    loadavg: str


def _first_line(args: Sequence[str]) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).strip().splitlines()[0]


def _proc_field(path: str, key: str) -> str:
    for line in Path(path).read_text().splitlines():
        if line.startswith(key):
            return line.split(":", 1)[1].strip()
    return "?"


def machine() -> Machine:
    os_release = dict(
        line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
    )
    return Machine(
        nproc=os.cpu_count() or 0,
        cpu=_proc_field("/proc/cpuinfo", "model name"),
        ram_gb=round(int(_proc_field("/proc/meminfo", "MemTotal").split()[0]) / 1024**2, 1),
        os=os_release.get("PRETTY_NAME", platform.platform()).strip('"'),
        python=platform.python_version(),
        openssh=_first_line(["ssh", "-V"]),
        openssl=_first_line(["openssl", "version"]),
        loadavg=" ".join(Path("/proc/loadavg").read_text().split()[:3]),
    )


def measured(scenario: str, args: Sequence[str], *, env: dict[str, str], out: Path) -> tuple[float, float, float]:
    """Run `args` under /usr/bin/time -v: (wall s, CPU s of the children, peak RSS MB). Fails loudly."""
    report = out / f"{scenario}.time"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([str(TIME), "-v", "-o", str(report), *args], env=env, capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (out / f"{scenario}.out").write_bytes(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"bench: {scenario} failed ({done.returncode}); see {out / (scenario + '.out')}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rss_kb = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report.read_text())
    return wall, cpu, int(rss_kb.group(1)) / 1024 if rss_kb else 0.0


# -- the installation --------------------------------------------------------------------------


def sftp_config(config: Path, partners: dict[str, SshdPartner], key: Path) -> None:
    """Every département delivered over SFTP to its own partner (one known_hosts pinning them all)."""
    known_hosts = config.parent / "known_hosts"
    known_hosts.write_text("".join(p.known_hosts_line() + "\n" for p in partners.values()))
    text = config.read_text()
    for code, partner in partners.items():
        header = f'[departments."{code}"]\n'
        params = partner.transport_params(key, known_hosts)
        text = text.replace(header, f"{header}transport = {_inline(params)}\n")
    config.write_text(text)


def install(root: Path, *, codes: list[str], days: int, run_date: date, seed: int) -> int:
    """A demo installation whose inbox holds `days` working days of input; returns the record count."""
    now = datetime.combine(run_date, datetime.min.time().replace(hour=4), tzinfo=PARIS)
    result = write_demo(root, business_date=run_date, departments=",".join(codes), seed=seed, now=now)
    records = result.records
    for back in range(1, days):
        day = working_days_before(run_date, back)
        summary = generate_inbox(root / "inbox", business_date=day, departments=codes, seed=seed)
        records += sum(summary.per_flow.values())
    return records


def delivered(partners: dict[str, SshdPartner], under: str = "") -> list[tuple[str, str, Path]]:
    """(département, flow, path) of every final .p7m on the partners (a temporary name starts with a dot)."""
    out = []
    for code, partner in partners.items():
        for flow, rel in FLOW_DIRS.items():
            folder = partner.root / under / rel
            out += [(code, flow, p) for p in sorted(folder.glob("[!.]*.p7m"))]
    return out


def clean(partners: dict[str, SshdPartner]) -> None:
    """Empty every partner's folders between scenarios (the sshd servers keep running)."""
    for partner in partners.values():
        for rel in (*FLOW_DIRS.values(), "acks", SHELL_DIR):
            folder = partner.root / rel
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
        for rel in FLOW_DIRS.values():
            (partner.root / SHELL_DIR / rel).mkdir(parents=True)


def env_at(run_date: date) -> dict[str, str]:
    now = datetime.combine(run_date, datetime.min.time().replace(hour=4), tzinfo=PARIS)
    return {**os.environ, "FLUX_PMI_NOW": now.isoformat(), "FLUX_PMI_LOG_FORMAT": "json"}


def flux_pmi_run(scenario: str, root: Path, records: int, partners: dict[str, SshdPartner],
                 run_date: date, out: Path) -> Measure:
    flux_pmi = Path(sys.executable).with_name("flux-pmi")
    wall, cpu, rss = measured(scenario, [str(flux_pmi), "run", "--config", str(root / "flux-pmi.toml")],
                              env=env_at(run_date), out=out)
    files = delivered(partners)
    return Measure(scenario, records, len(files), sum(p.stat().st_size for *_, p in files), wall, cpu, rss)


# -- the shell pipeline ------------------------------------------------------------------------


def open_plain(root: Path, files: list[tuple[str, str, Path]], plain: Path) -> None:
    """The plain files flux-pmi built, opened from what the partners received (untimed preparation)."""
    pki = root / "pki"
    signer = [certs.load_certificate(pki / "cnaf.crt")]

    def one(item: tuple[str, str, Path]) -> None:
        code, flow, path = item
        content = cms.open_sealed(path.read_bytes(), recipient_cert=certs.load_certificate(pki / f"{code}.crt"),
                                  recipient_key=certs.load_private_key(pki / f"{code}.key", None),  # type: ignore[arg-type]
                                  trusted_signers=signer)
        target = plain / code / flow / path.name.removesuffix(".p7m")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(one, files))


def shell_run(root: Path, records: int, partners: dict[str, SshdPartner], key: Path, out: Path) -> Measure:
    files = delivered(partners)
    plain = out / "plain"
    open_plain(root, files, plain)
    manifest = out / "manifest"
    manifest.write_text("".join(
        f"{code} {p.port} {p.user} {p.remote(SHELL_DIR)}\n" for code, p in partners.items()
    ))
    sealed = out / "shell-sealed"
    sealed.mkdir()
    args = ["sh", str(PIPELINE), str(manifest), str(plain), str(sealed), str(xsd_path("DSG").parent),
            str(root / "pki"), str(key), str(root / "known_hosts")]
    wall, cpu, rss = measured("shell", args, env=dict(os.environ), out=out)
    pushed = delivered(partners, SHELL_DIR)
    if len(pushed) != len(files):
        raise SystemExit(f"bench: the shell pipeline pushed {len(pushed)} files, flux-pmi {len(files)}")
    opened = out / "shell-opened"
    open_plain(root, pushed[:1], opened)  # what the shell sent opens, as a département would, to the same bytes
    code, flow, path = pushed[0]
    name = path.name.removesuffix(".p7m")
    if (opened / code / flow / name).read_bytes() != (plain / code / flow / name).read_bytes():
        raise SystemExit(f"bench: the shell pipeline's {name} does not open to the file flux-pmi built")
    return Measure("shell", records, len(pushed), sum(p.stat().st_size for *_, p in pushed), wall, cpu, rss)


# -- the report --------------------------------------------------------------------------------


def ratios(results: dict[str, Measure]) -> dict[str, float]:
    night, shell, catch_up = results["night"], results["shell"], results["catch_up"]
    return {
        "night_wall_vs_shell": round(night.wall_s / shell.wall_s, 3),
        "night_cpu_vs_shell": round(night.cpu_s / shell.cpu_s, 3),
        "catch_up_rss_vs_night": round(catch_up.peak_rss_mb / night.peak_rss_mb, 3),
    }


def libraries_report(libraries: list[ssh_libraries.LibraryMeasure], asked: bool) -> list[str]:
    if not libraries:
        return ["", "SSH libraries: " + ("asyncssh is not installed (pip install -e '.[test]')" if asked
                                          else "not compared (--no-ssh-libraries)")]
    lines = ["", f"{'SSH library, same files':<32}{'files':>7}{'MB':>9}{'wall s':>9}{'client CPU s':>14}{'sshd CPU s':>12}"]
    for m in libraries:
        lines.append(f"{m.library + ' (' + m.scenario + ')':<32}{m.files:>7}{m.bytes / 1e6:>9.1f}{m.wall_s:>9.2f}"
                     f"{m.client_cpu_s:>14.2f}{m.sshd_cpu_s:>12.2f}")
    return lines


def text_report(host: Machine, results: dict[str, Measure], days: int) -> str:
    lines = [f"{k}: {v}" for k, v in asdict(host).items()]
    lines += ["", f"{'scenario':<16}{'records':>9}{'files':>7}{'MB':>9}{'wall s':>9}{'CPU s':>8}{'peak RSS MB':>13}"]
    names = {"night": "flux-pmi night", "shell": "shell night", "catch_up": f"flux-pmi {days}-day"}
    for key, m in results.items():
        lines.append(f"{names[key]:<16}{m.records:>9}{m.files:>7}{m.bytes / 1e6:>9.1f}"
                     f"{m.wall_s:>9.2f}{m.cpu_s:>8.2f}{m.peak_rss_mb:>13.1f}")
    lines.append("")
    lines += [f"{k}: {v}" for k, v in ratios(results).items()]
    return "\n".join(lines)


@contextmanager
def workspace(given: Path | None, keep: bool) -> Iterator[Path]:
    """A fresh folder, removed afterwards unless `keep`: a given one must be new or empty (it is removed)."""
    if given and given.exists() and any(given.iterdir()):
        raise SystemExit(f"bench: --work {given} is not empty: give a new folder (it is removed afterwards)")
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="flux-pmi-bench-"))
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def pushes(partners: dict[str, SshdPartner], largest: int | None = None) -> list[ssh_libraries.Push]:
    """What flux-pmi delivered, per partner (only the `largest` files, when given)."""
    files = delivered(partners)
    if largest is not None:
        files = sorted(files, key=lambda f: f[2].stat().st_size, reverse=True)[:largest]
    out: dict[str, list[Path]] = {}
    for code, _flow, path in files:
        out.setdefault(code, []).append(path)
    return [(partners[code], paths) for code, paths in out.items()]


LARGEST = 32  # the catch-up's files pushed again by each SSH library: the per-byte cost, not the handshakes


def bench(args: argparse.Namespace, work: Path) -> tuple[dict[str, Measure], list[ssh_libraries.LibraryMeasure]]:
    codes = parse_departments(args.departments)
    key = work / "client" / "id_ed25519"
    public = generate_key(key, comment="flux-pmi-bench")
    out = work / "out"
    out.mkdir()
    results: dict[str, Measure] = {}
    libraries: list[ssh_libraries.LibraryMeasure] = []
    compare = args.ssh_libraries and ssh_libraries.available()
    with PartnerPool(work / "partners") as pool:
        partners = pool.start(codes, [public])
        clean(partners)
        night = work / "night"
        records = install(night, codes=codes, days=1, run_date=args.date, seed=args.seed)
        sftp_config(night / "flux-pmi.toml", partners, key)
        results["night"] = flux_pmi_run("night", night, records, partners, args.date, out)
        results["shell"] = shell_run(night, records, partners, key, out)
        if compare:
            libraries += ssh_libraries.compare("night", pushes(partners), key, night / "known_hosts")
        clean(partners)
        catch_up = work / "catch-up"
        records = install(catch_up, codes=codes, days=args.days, run_date=args.date, seed=args.seed)
        sftp_config(catch_up / "flux-pmi.toml", partners, key)
        results["catch_up"] = flux_pmi_run("catch_up", catch_up, records, partners, args.date, out)
        if compare:
            libraries += ssh_libraries.compare("catch_up", pushes(partners, LARGEST), key,
                                               catch_up / "known_hosts")
    return results, libraries


def _date(value: str) -> date:
    return date.fromisoformat(value)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--departments", default="all", help="comma-separated codes (035,02A,971) or 'all'")
    p.add_argument("--days", type=int, default=30, help="working days of input in the catch-up (default 30)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--date", type=_date, default=DEFAULT_DATE, help="business date of the night (YYYY-MM-DD)")
    p.add_argument("--json", action="store_true", help="print one JSON record instead of the table")
    p.add_argument("--work", type=Path, help="working folder (default: a fresh temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the working folder (outputs, /usr/bin/time reports)")
    p.add_argument("--no-ssh-libraries", dest="ssh_libraries", action="store_false",
                   help="leave out the paramiko/asyncssh comparison (bench/ssh_libraries.py)")
    args = p.parse_args(argv)
    missing = [t for t in (str(TIME), "xmllint", "unzip", "openssl", "sftp") if not shutil.which(t)]
    if missing:
        raise SystemExit(f"bench: {', '.join(missing)} missing: run `make system-deps`")
    # The SSH library comparison runs flux-pmi's SFTP client in this process: its log is the
    # command's (warnings, on stderr), never mixed with the report on stdout.
    logging_setup.configure(json=False, level="warning")
    host = machine()
    started = time.perf_counter()
    with workspace(args.work, args.keep) as work:
        results, libraries = bench(args, work)
    if args.json:
        print(json.dumps({"machine": asdict(host), "days": args.days, "departments": args.departments,
                          "seed": args.seed, "date": args.date.isoformat(),
                          "results": {k: asdict(m) for k, m in results.items()}, "ratios": ratios(results),
                          "ssh_libraries": [asdict(m) for m in libraries],
                          "bench_seconds": round(time.perf_counter() - started, 1)}, indent=2))
    else:
        print("\n".join([text_report(host, results, args.days), *libraries_report(libraries, args.ssh_libraries)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

