"""The HubEE demo set-up shared by the adapter tests and the whole-night receive test."""
from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flux_pmi.config.settings import load, load_registry
from flux_pmi.core.clock import FixedClock
from flux_pmi.jobs.night import Night
from flux_pmi.trace.store import TraceStore
from flux_pmi.transport.hubee import (
    SHARED_TOKENS,
)
from support import NOW, make_demo
from support.fake_hubee import FakeHubee

FLOWS = ("DSG", "SGR", "GRO")


CNAF_SIRET = "18005000000017"  # the operator's organisation at the stand-in


CLIENT_IDS = {f: f"cnaf-pmi-{f.lower()}" for f in FLOWS}


SECRETS = {f: f"s3cret-{f.lower()}-b7e1" for f in FLOWS}


SECRET_ENV = {f: f"FLUX_TEST_HUBEE_{f}" for f in FLOWS}


DEPTS = ["02A", "035", "971"]


BRANCH = {"035": "35238"}  # 02A and 971 have no code guichet: the field is left out


HUB_NOW = datetime(2026, 11, 23, 3, 30, tzinfo=UTC)


REGISTRY = load_registry()


@pytest.fixture
def hub():
    SHARED_TOKENS.clear()  # a port reused from an earlier stand-in must not find its tokens here
    with FakeHubee(now=lambda: HUB_NOW) as fake:
        for flow in FLOWS:
            fake.add_client(CLIENT_IDS[flow], SECRETS[flow], scope="OSL", siret=CNAF_SIRET)
        yield fake
    SHARED_TOKENS.clear()


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubee-demo") / "demo"
    result = make_demo(root, departments=",".join(DEPTS))
    return root, result


@pytest.fixture
def demo(demo_template, tmp_path):
    root = tmp_path / "demo"
    shutil.copytree(demo_template[0], root)
    return root, demo_template[1]


def hubee_toml(hub: FakeHubee, secrets: str = "env", extra: str = "") -> str:
    if secrets == "env":
        ref = "client_secret_env = { " + ", ".join(f'{f} = "{SECRET_ENV[f]}"' for f in FLOWS) + " }"
    else:
        ref = (
            "client_secret_files = { " + ", ".join(f'{f} = "secrets/hubee-{f.lower()}"' for f in FLOWS) + " }"
        )
    ids = ", ".join(f'{f} = "{CLIENT_IDS[f]}"' for f in FLOWS)
    return (
        f'\n[hubee]\napi_url = "{hub.api_url}"\ntoken_url = "{hub.token_url}"\nclient_ids = {{ {ids} }}\n'
        f"{ref}\ntimeout = 10\n{extra}"
    )


def use_hubee(
    root: Path,
    hub: FakeHubee,
    monkeypatch,
    *,
    secrets: str = "env",
    extra: str = "",
    parallel: int | None = None,
) -> Path:
    for flow in FLOWS:
        monkeypatch.setenv(SECRET_ENV[flow], SECRETS[flow])
    cfg = root / "flux-pmi.toml"
    text = cfg.read_text().replace(
        'transport = { type = "local", root = "drop" }', 'transport = { type = "hubee" }'
    )
    for code, branch in BRANCH.items():
        text = text.replace(
            f'[departments."{code}"]\n',
            f'[departments."{code}"]\ntransport = {{ type = "hubee", branch_code = "{branch}" }}\n',
        )
    if parallel is not None:
        text = text.replace("parallel = 16", f"parallel = {parallel}")
    cfg.write_text(text + hubee_toml(hub, secrets, extra))
    return cfg


def night(cfg: Path) -> Night:
    return Night(load(cfg), clock=FixedClock(NOW), sleep=lambda _s: None)


def emissions(root: Path) -> list[dict]:
    trace = TraceStore(root / "trace" / "flux-pmi.sqlite")
    rows = [
        dict(r)
        for r in trace.db.execute(
            "SELECT id, flow, department, file_name, size, sha256, status, attempts, acknowledged_at, ack_status, ack_code,"
            " transport_ref FROM emissions ORDER BY department, flow, seq"
        )
    ]
    trace.close()
    return rows
