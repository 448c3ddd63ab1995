"""The tree follows the data's path, and nothing downstream imports what is upstream of it.

inbox -> flows -> schemas -> seal -> archive -> transport -> trace: a stage may use the
base modules (errors, clock, log, fsutil, config, workdays, faults) and stages after
it never import stages before it. Only the orchestrators (night, cli, scheduler,
demo, receive...) see everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["inbox", "flows", "schemas", "seal", "archive", "transport", "trace"]


def _imports(path: Path) -> set[str]:
    """Top-level flux_pmi modules/packages that `path` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = list(path.relative_to(ROOT).parts[:-1])
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = pkg[: len(pkg) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif (node.module or "").startswith("flux_pmi"):
                parts = node.module.split(".")[1:]
            else:
                continue
            if parts:
                out.add(parts[0])
            else:
                out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("flux_pmi."))
    return out


def test_no_stage_imports_an_upstream_stage():
    bad = []
    for i, stage in enumerate(STAGES):
        for path in (ROOT / stage).rglob("*.py"):
            for imported in _imports(path):
                if imported in STAGES[:i]:
                    bad.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert bad == []


def test_stages_do_not_import_the_orchestrators():
    top = {"night", "cli", "scheduler", "demo", "receive", "ops"}
    bad = [f"{p.relative_to(ROOT)} imports {m}" for s in STAGES + ["config"] for p in (ROOT / s).rglob("*.py")
           for m in _imports(p) if m in top]
    assert bad == []


def test_the_import_scanner_sees_relative_and_absolute_imports():
    assert {"flows", "seal", "trace", "transport", "faults"} <= _imports(ROOT / "night.py")
