"""`flux-pmi demo DIR`: a complete, reproducible demo installation in one folder.

It writes a test PKI, a realistic inbox for one business day and a `flux-pmi.toml`
that uses the embedded defaults (SQLite trace, local drop under `drop/<dept>/`), so
that `flux-pmi run --config DIR/flux-pmi.toml` works with nothing else installed.

It also writes the other half: `receive/<dept>.toml`, each département's receiving
configuration (its key, the CNAF certificate it trusts, its drop folder, and its output
under `received/<dept>/`), so that `flux-pmi receive --config-dir DIR/receive --once`
takes the night in as every département would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from ..config.settings import FLOWS, load_registry
from ..core.errors import ConfigError
from ..core.fsutil import atomic_write, private_dir
from .generate import generate_inbox
from .pki import make_pki


@dataclass(frozen=True)
class DemoResult:
    config: Path
    departments: list[str]
    records: int
    by_flow: dict[str, int]
    bad: int
    receive_configs: tuple[Path, ...] = ()


def parse_departments(value: str) -> list[str]:
    registry = load_registry()
    if value.strip().lower() == "all":
        return sorted(registry)
    codes = []
    for raw in value.split(","):
        code = raw.strip().upper()
        code = code.zfill(3) if code.isdigit() else ("0" + code if len(code) == 2 else code)
        if code not in registry:
            raise ConfigError("--departments", raw.strip(), "a département code (035, 02A, 971) or 'all'")
        codes.append(code)
    return sorted(set(codes))


def config_text(departments: list[str]) -> str:
    lines = [
        "# flux-pmi demo configuration: embedded defaults (SQLite trace, local drop).",
        "# Relative paths are relative to this file's folder.",
        "[paths]",
        'inbox = "inbox"',
        'work = "work"',
        'archive = "archive"',
        'trace = "trace/flux-pmi.sqlite"',
        'reports = "reports"',
        'quarantine = "quarantine"',
        'consumed = "consumed"',
        "",
        "[sender]",
        'certificate = "pki/cnaf.crt"',
        'key = "pki/cnaf.key"',
        'archive_certificate = "pki/archive.crt"',
        'archive_key = "pki/archive.key"',
        'trusted_ca = "pki/ca.crt"',
        "",
        "[delivery]",
        "parallel = 16",
        "attempts = 3",
        "backoff_seconds = 0.5",
        "",
        "[defaults]",
        'flows = ["DSG", "SGR", "GRO"]',
        "empty_flows = true",
        'transport = { type = "local", root = "drop" }',
        "",
    ]
    registry = load_registry()
    for code in departments:
        lines += [f'[departments."{code}"]', f'certificate = "pki/{code}.crt"']
        if registry[code].siret_placeholder:
            # The demo's stand-in: a real installation sets the SIRET of the acte d'adhésion instead
            # (`run` refuses to send to a placeholder, `check` says ERROR).
            lines += [f'siret = "{registry[code].siret}"  # the registry placeholder: a DEMO value',
                      "siret_demo = true"]
        lines.append("")
    return "\n".join(lines)


def receive_config_text(code: str) -> str:
    """One département's `flux-pmi receive` configuration, relative to DIR/receive/ (docs/receive.md)."""
    return "\n".join(
        [
            f"# flux-pmi receive: département {code}'s side of the demo (docs/receive.md).",
            "# Relative paths are relative to this file's folder.",
            "[department]",
            f'code = "{code}"',
            f'certificate = "../pki/{code}.crt"',
            f'key = "../pki/{code}.key"',
            'trusted_senders = ["../pki/cnaf.crt"]',
            "",
            "[drop]",
            'type = "local"',
            f'path = "../drop/{code}"',
            "",
            "[output]",
            f'dir = "../received/{code}"',
            'formats = ["csv", "parquet"]',
            "",
            "[retention]",
            "days = 90",
            "",
        ]
    )


def refuse_non_empty(root: Path) -> None:
    """A folder that holds anything may be a real installation: its config, its `pki/cnaf.key`, its
    inbox with real declarations. The demo overwrites all three, so it only writes there on --force."""
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConfigError(root, "demo DIR", "a new or empty folder: this one is not empty (an existing "
                          "installation?) and the demo would overwrite its flux-pmi.toml, pki/ and inbox/; "
                          "choose another folder, or add --force to overwrite it")


def write_demo(root: Path, *, business_date: date, departments: str, seed: int, now: datetime,
               force: bool = False, shapes: str | None = None) -> DemoResult:
    """`shapes`: the inbox's input shapes, "real" by default (demo.generate.SHAPES)."""
    codes = parse_departments(departments)
    if not force:
        refuse_non_empty(root)
    root = private_dir(Path(root))
    make_pki(root / "pki", codes, now=now)
    summary = generate_inbox(
        root / "inbox", business_date=business_date, departments=codes, seed=seed, bad=True, shapes=shapes
    )
    for flow in FLOWS:  # a night refuses an inbox without its three flow folders (an unmounted share)
        private_dir(root / "inbox" / flow)
    config = root / "flux-pmi.toml"
    atomic_write(config, config_text(codes).encode())
    receive = private_dir(root / "receive")
    receive_configs = []
    for code in codes:
        path = receive / f"{code}.toml"
        atomic_write(path, receive_config_text(code).encode())
        receive_configs.append(path)
        # The département's drop folder exists before anything arrives, as on its server: a receiver
        # that finds none says so (an unmounted share), rather than "nothing arrived".
        private_dir(root / "drop" / code)
    by_flow = dict(summary.per_flow)
    return DemoResult(config, codes, sum(by_flow.values()), by_flow, len(summary.bad), tuple(receive_configs))
