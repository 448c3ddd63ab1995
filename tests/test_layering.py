"""The tree follows the data's path, and nothing lower imports anything higher.

One declared layer table (docs/architecture.md draws it) places every module of the
package. A module may import a module of a strictly lower layer, or of its own package;
inside a package the imports must still form no cycle. Every import counts, including
one written inside a function to dodge a cycle at load time.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The layers, lowest first. The keys are packages (or single modules where a package
# spans two layers); the longest matching key places a module.
LAYERS: dict[str, int] = {
    "core": 0,  # errors, clock, log, files, locks, signals, working days
    "testing": 0,  # the package of test hooks (its __init__ imports nothing)
    "testing.faults": 0,  # fault points the crash tests arm; inert in production
    "config": 1,  # the operator's settings and the département registry, validated once
    "trace": 2,  # the SQLite trace: every SQL statement of the product lives here
    "transport": 3,  # moving sealed bytes to one partner: local drop, SFTP, CFT, HubEE
    "testing.mock": 4,  # the transport double the tests drive, same interface
    "archive": 4,  # sealed files and consumed input kept for three months
    "seal": 5,  # CMS signing and encryption, certificates
    "schemas": 6,  # annexe-1 XSDs, the ack format, validation
    "flows": 7,  # parse, check, route and build the DSG, SGR and GRO files
    "inbox": 8,  # claiming upstream files
    "report": 9,  # what operators read: rejects, status, metrics
    "jobs": 10,  # the night, deliveries, acks, re-emission, purge, holds
    "receive": 10,  # the département's side
    "demo": 10,  # a demo installation
    "cli": 12,  # the command line drives everything, the scheduler included
    "scheduler": 11,
    "__init__": 0,
}


def _modules() -> dict[str, Path]:
    """Every product module, by dotted name under flux_pmi (tests and tools excluded)."""
    out: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in {"tests", "bench", ".venv", "build", ".cache", "demo-night"} or rel.parts[0].startswith("."):
            continue
        if "data" in rel.parts[:-1]:  # generators shipped beside data, run by hand
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The flux_pmi modules `name` imports, anywhere in its body."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    if name == "__init__":
        package = []
    out: set[str] = set()

    def resolve(dotted: str) -> str | None:
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            candidate = ".".join(parts[:i])
            if candidate in known:
                return candidate
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + (node.module.split(".") if node.module else []))
            elif (node.module or "") == "flux_pmi" or (node.module or "").startswith("flux_pmi."):
                module = node.module.removeprefix("flux_pmi").lstrip(".")
            else:
                continue
            for alias in node.names:
                target = resolve(f"{module}.{alias.name}" if module else alias.name)
                target = target or resolve(module) if module else target
                if target:
                    out.add(target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("flux_pmi."):
                    target = resolve(alias.name.removeprefix("flux_pmi."))
                    if target:
                        out.add(target)
    out.discard(name)
    return out


def _layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        key = ".".join(parts[:i])
        if key in LAYERS:
            return key, LAYERS[key]
    raise KeyError(module)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def test_every_module_has_a_layer():
    unplaced = []
    for module in _modules():
        try:
            _layer(module)
        except KeyError:
            unplaced.append(module)
    assert unplaced == []


def test_nothing_imports_a_higher_or_equal_layer_outside_its_package():
    bad = []
    for module, imported in _graph().items():
        key, layer = _layer(module)
        for target in imported:
            tkey, tlayer = _layer(target)
            same_package = tkey == key and module.split(".")[0] == target.split(".")[0]
            if not same_package and tlayer >= layer and target != "__init__":
                bad.append(f"{module} (layer {layer}) imports {target} (layer {tlayer})")
    assert bad == []


def test_no_import_cycle():
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert [" -> ".join(c) for c in cycles] == []


def test_the_scanner_sees_relative_absolute_and_function_level_imports(tmp_path):
    (tmp_path / "jobs").mkdir()
    mod = tmp_path / "jobs" / "x.py"
    mod.write_text(
        "from ..core import clock\nfrom flux_pmi.trace.store import TraceStore\n"
        "def f():\n    from .. import cli\n    import flux_pmi.flows.build\n",
        encoding="utf-8",
    )
    known = {"core.clock", "core", "trace.store", "trace", "cli", "flows.build", "flows", "jobs.x"}
    assert _imports("jobs.x", mod, known) == {"core.clock", "trace.store", "cli", "flows.build"}


def test_the_layer_table_names_only_what_exists():
    modules = _modules()
    tops = {m.split(".")[0] for m in modules} | set(modules)
    assert sorted(k for k in LAYERS if k not in tops) == []


def test_the_root_holds_only_the_entry_points():
    loose = sorted(p.name for p in ROOT.glob("*.py"))
    assert loose == ["__init__.py", "cli.py", "scheduler.py"]


def test_sql_lives_in_trace_alone():
    allowed = ("trace.",)
    bad = []
    for name, path in _modules().items():
        if name.startswith(allowed):
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "execute(" in line or "executemany(" in line or "sqlite3.connect(" in line:
                bad.append(f"{path.relative_to(ROOT)}:{lineno}")
    assert bad == []


def test_every_module_opens_with_a_docstring_saying_why_it_exists():
    bare = sorted(str(path.relative_to(ROOT)) for path in _modules().values()
                  if not ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))))
    assert bare == []
