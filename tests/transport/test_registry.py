"""Transport kinds are registered in one table; heavy adapters load only when a département uses them."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from flux_pmi.core.errors import ConfigError
from flux_pmi.testing.mock import ScriptedPartner
from flux_pmi.transport import registry


def _dept(kind: str, code: str = "035"):
    return SimpleNamespace(code=code, transport=SimpleNamespace(type=kind))


def test_the_table_names_every_kind_and_an_unknown_one_is_a_config_error_naming_the_key():
    assert registry.kinds() == ["cft", "hubee", "local", "sftp"]
    settings = SimpleNamespace(file="flux-pmi.toml")
    with pytest.raises(ConfigError, match=r"departments\.035\.transport\.type"):
        registry.build(settings, _dept("ftp"))  # type: ignore[arg-type]


def test_a_registered_factory_builds_the_departments_transport(monkeypatch):
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    partner = ScriptedPartner()
    registry.register("double")(partner.factory)
    t = registry.build(SimpleNamespace(file="f"), _dept("double", "971"))  # type: ignore[arg-type]
    assert t.department == "971" and partner.transports == [t]


def test_paramiko_and_httpx_load_only_for_the_kinds_that_need_them():
    code = (
        "import sys; from types import SimpleNamespace as N; from pathlib import Path\n"
        "from flux_pmi.transport.registry import build\n"
        "s = N(base=Path('/tmp'), file='f')\n"
        "d = N(code='035', transport=N(type='local', path=lambda key, base: Path('/tmp/drop')))\n"
        "t = build(s, d)\n"
        "print(t.department, 'paramiko' in sys.modules, 'httpx' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["035", "False", "False"]
