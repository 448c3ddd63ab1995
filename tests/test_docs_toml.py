"""Every ```toml block of README.md and docs/*.md loads with the real loader.

An operator copies these blocks into flux-pmi.toml or a département's DEPT.toml: one that does
not parse, or that the loader refuses (an unknown key, a wrong type), is a trap. A fragment is
completed with the minimal tables its file requires ([sender] for flux-pmi.toml; [department],
[drop] and [output] for `flux-pmi receive`); files are not looked for (check_files=False), but
every key and value is validated as in production.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from flux_pmi.config.settings import load
from flux_pmi.receive.config import load_receive

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```toml\n(.*?)^```", re.S | re.M)

# The tables a file must have, added when a fragment leaves them out (file-free values: check_files=False).
SENDER = """
[sender]
certificate = "pki/cnaf.crt"
key = "pki/cnaf.key"
archive_certificate = "pki/archive.crt"
archive_key = "pki/archive.key"
"""
RECEIVE = {
    "department": '[department]\ncode = "035"\ncertificate = "pki/035.crt"\nkey = "pki/035.key"\n'
                  'trusted_senders = ["pki/cnaf.crt"]\n',
    "drop": '[drop]\ntype = "local"\npath = "drop"\n',
    "output": '[output]\ndir = "received"\n',
}
RECEIVE_TABLES = {"department", "drop", "output", "ledger"}


def _blocks() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in BLOCK.finditer(text):
            line = text[: m.start()].count("\n") + 1
            found.append((f"{doc.relative_to(ROOT)}:{line}", m.group(1)))
    return found


BLOCKS = _blocks()


def test_the_docs_have_toml_blocks_to_check():
    assert len(BLOCKS) >= 10 and any(where.startswith("README.md") for where, _ in BLOCKS)


@pytest.mark.parametrize(("where", "block"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_every_toml_block_of_the_docs_loads(where, block, tmp_path, monkeypatch):
    data = tomllib.loads(block)  # valid TOML first (no multi-line inline table...)
    # The secrets a block names come from the environment: give them a value, as an installation does.
    for name in re.findall(r'_env\s*=\s*"([A-Z0-9_]+)"', block) + re.findall(r'= "([A-Z0-9_]*SECRET[A-Z0-9_]*)"',
                                                                           block):
        monkeypatch.setenv(name, "not-a-real-secret")
    path = tmp_path / "example.toml"
    if RECEIVE_TABLES & set(data):
        path.write_text(block + "".join(t for name, t in RECEIVE.items() if name not in data), encoding="utf-8")
        load_receive(path, check_files=False)
    else:
        path.write_text(block + ("" if "sender" in data else SENDER), encoding="utf-8")
        load(path, check_files=False)
