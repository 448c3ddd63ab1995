"""The documented server layout works: config read-only in /etc/flux-pmi, state in /var/lib/flux-pmi.

Was: the `[paths]` defaulted to folders beside /etc/flux-pmi/flux-pmi.toml, which the shipped units'
ProtectSystem=strict makes read-only, and `run` crashed with a traceback. The test takes the TOML
block of docs/operations.md as written, puts the config folder on a genuinely read-only bind mount
(tests/support/readonly.py: root ignores chmod), and runs the night: it succeeds and writes only under the
state folder. The same config without `state` is refused with exit 10, naming the folder.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tomllib
from pathlib import Path

import pytest
from support import make_demo, open_delivered
from support.readonly import run_cli_read_only

from flux_pmi.core.errors import ExitCode

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "operations.md"
UNITS = ["flux-pmi.service", "flux-pmi-run.service", "flux-pmi-purge.service"]
DOC_STATE = "/var/lib/flux-pmi"


def documented_layout() -> str:
    """The first TOML block of the section "Config in /etc, state in /var/lib"."""
    section = DOC.read_text().split("### Config in /etc, state in /var/lib", 1)[1]
    return re.search(r"```toml\n(.*?)```", section, re.S).group(1)


def _snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple[int, str]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[str(p.relative_to(root))] = (p.stat().st_mode, digest)
    return out


@pytest.fixture
def server(tmp_path):
    """A demo installation rearranged as the docs say: etc/ (config, PKI) and var-lib/ (state, inbox)."""
    demo = tmp_path / "demo"
    make_demo(demo, departments="035,02A")
    etc, state = tmp_path / "etc-flux-pmi", tmp_path / "var-lib-flux-pmi"
    etc.mkdir(mode=0o755)
    state.mkdir(mode=0o700)
    shutil.copytree(demo / "pki", etc / "pki")
    shutil.move(demo / "inbox", state / "inbox")
    # The demo's own config, without its [paths] and [defaults]: the documented block replaces them.
    kept = [s for s in (demo / "flux-pmi.toml").read_text().split("\n\n")
            if not any(line.startswith(("[paths]", "[defaults]")) for line in s.splitlines())]
    text = documented_layout().replace(DOC_STATE, str(state)) + "\n" + "\n\n".join(kept)
    (etc / "flux-pmi.toml").write_text(text)
    shutil.rmtree(demo)
    return tmp_path, etc, state


def test_the_documented_layout_runs_with_a_read_only_config_folder(server):
    tmp, etc, state = server
    cfg = str(etc / "flux-pmi.toml")
    assert tomllib.loads((etc / "flux-pmi.toml").read_text())["paths"] == {"state": str(state)}
    etc_before, outside_before = _snapshot(etc), _snapshot(tmp, skip=state)

    check = run_cli_read_only([etc], "check", "--config", cfg)
    assert check.returncode == ExitCode.OK, check.stdout + check.stderr
    assert f"ok    folders trace folder writable: {state / 'trace'}" in check.stdout

    proc = run_cli_read_only([etc], "run", "--config", cfg)
    assert proc.returncode in (ExitCode.OK, ExitCode.QUARANTINED), proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert (state / "trace" / "flux-pmi.sqlite").is_file() and list((state / "archive").rglob("*.p7m"))
    # Delivered, and each file opens as the département would open it.
    pki = state / "_pki-view"
    shutil.copytree(etc / "pki", pki / "pki")
    (pki / "drop").symlink_to(state / "drop")
    delivered = open_delivered(pki)
    assert {name.split("/")[0] for name in delivered} == {"035", "02A"}
    shutil.rmtree(pki)
    # Nothing written anywhere but the state folder.
    assert _snapshot(etc) == etc_before
    assert _snapshot(tmp, skip=state) == outside_before

    purge = run_cli_read_only([etc], "purge", "--config", cfg)
    assert purge.returncode == ExitCode.OK, purge.stdout + purge.stderr


def test_without_state_the_read_only_config_folder_is_named_not_a_traceback(server):
    """Today's units with yesterday's config: every folder defaults beside the read-only TOML."""
    _tmp, etc, state = server
    toml = etc / "flux-pmi.toml"
    toml.write_text(re.sub(r'(?m)^state = .*$', "", toml.read_text()))
    proc = run_cli_read_only([etc], "run", "--config", str(toml))
    assert proc.returncode == ExitCode.STORAGE, proc.stdout + proc.stderr
    assert f"flux-pmi: error: {etc / 'trace'}: Read-only file system" in proc.stderr
    assert "Traceback" not in proc.stderr
    check = run_cli_read_only([etc], "check", "--config", str(toml))
    assert check.returncode == ExitCode.CHECK_FAILED
    assert f"ERROR folders trace folder unusable: {etc / 'trace'}: cannot be created: {etc} is not writable" \
        in check.stdout
    assert f"ERROR folders inbox DSG folder missing: {etc / 'inbox' / 'DSG'}" in check.stdout


def _unit(name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (ROOT / "deploy" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.parametrize("name", UNITS)
def test_the_units_give_the_state_directory_the_docs_name(name):
    unit = _unit(name)
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["StateDirectory"] == ["flux-pmi"] and DOC_STATE == "/var/lib/" + unit["StateDirectory"][0]
    assert unit["StateDirectoryMode"] == ["0700"]
    assert unit["ExecStart"][0].endswith("--config /etc/flux-pmi/flux-pmi.toml")
    assert f'state = "{DOC_STATE}"' in (ROOT / "deploy" / name).read_text()
    # Nothing of the state may sit under the config folder, which the unit makes read-only.
    assert not any(p.startswith("/etc") for v in unit.get("ReadWritePaths", []) for p in v.lstrip("-").split())


def test_the_documented_layout_keeps_nothing_beside_the_config():
    layout = tomllib.loads(documented_layout())
    assert layout["paths"] == {"state": DOC_STATE}
    assert layout["defaults"]["transport"]["root"].startswith(DOC_STATE + "/")
    assert f'state = "{DOC_STATE}"' in (ROOT / "deploy" / "crontab").read_text()
