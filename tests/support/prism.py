"""Prism (@stoplight/prism-cli) on loopback, from DINUM's HubEE spec: every request checked against it.

`make system-deps` installs Prism into `.cache/prism` (npm). Two modes:

- `mock`: Prism answers from the spec alone (`--dynamic`: data generated from the schemas, since
  some of the spec's own examples break its schemas, e.g. a caseId that is not a UUID);
- `proxy`: Prism forwards to an upstream (the stateful fake, tests/support/fake_hubee.py) and validates both
  the request and the upstream's answer on the way.

Both run with `--errors`: a request the spec rejects gets a 4xx problem body ("Request/Response not
valid") instead of an answer, and every answer carries Prism's findings in its `sl-violations`
header. `Prism.violations` gathers what the test's clients saw (see `watch`). Missing node, npm or
Prism is a failure with the command to run, never a skip: the contract test is the point.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
PRISM = REPO / ".cache" / "prism" / "node_modules" / ".bin" / "prism"
# DINUM's spec (api_folder_v1.2.7); HUBEE_SPEC points elsewhere.
SPEC = Path(os.environ.get("HUBEE_SPEC") or Path(__file__).resolve().parents[1] / "data" / "hubee" / "api_folder_v1.2.7.yaml")
READY_SECONDS = 60.0
INSTALL = (
    "make system-deps (npm install --no-audit --no-fund --prefix .cache/prism @stoplight/prism-cli@5.16.0)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Seen:
    method: str
    path: str
    status: int
    violations: list[dict[str, Any]]


@dataclass
class Prism:
    base_url: str
    process: subprocess.Popen
    output: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def watch(self, response: httpx.Response) -> None:
        """An httpx response hook: record each exchange with Prism and what Prism found wrong with it."""
        if not str(response.request.url).startswith(self.base_url):
            return
        raw = response.headers.get("sl-violations")
        found = json.loads(raw) if raw else []
        if response.headers.get("content-type", "").startswith("application/problem+json"):
            response.read()
            body = response.json()
            found += [v for v in body.get("validation") or [] if v not in found]
            if not found:
                found = [{"location": ["prism"], "message": body.get("title", "")}]
        self.seen.append(
            Seen(response.request.method, response.request.url.path, response.status_code, found)
        )

    def request_violations(self) -> list[tuple[str, str, int, list[dict[str, Any]]]]:
        """Exchanges whose *request* broke the spec (errors only), with what Prism said."""
        out = []
        for s in self.seen:
            bad = [
                v
                for v in s.violations
                if v.get("location", [""])[0] != "response" and v.get("severity") != "Warning"
            ]
            if bad:
                out.append((s.method, s.path, s.status, bad))
        return out


def _require_prism() -> None:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the HubEE contract test needs Node.js and Prism; {INSTALL}"
        )
    if not os.access(PRISM, os.X_OK):
        pytest.fail(f"Prism is not installed at {PRISM}: run {INSTALL}")
    if not SPEC.is_file():
        pytest.fail(f"the HubEE spec is missing ({SPEC}); set HUBEE_SPEC")


@contextmanager
def prism(mode: str = "mock", upstream: str | None = None) -> Iterator[Prism]:
    """Start Prism on a free loopback port; wait (bounded) for "Prism is listening"; stop it after."""
    _require_prism()
    port = _free_port()
    cmd = [str(PRISM), mode, "--host", "127.0.0.1", "--port", str(port), "--errors"]
    if mode == "mock":
        cmd += ["--dynamic", str(SPEC)]
    else:
        assert upstream, "proxy mode needs an upstream"
        cmd += [str(SPEC), upstream]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    p = Prism(f"http://127.0.0.1:{port}", proc)
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            p.output.append(line.rstrip())
            if "Prism is listening" in line:
                ready.set()

    threading.Thread(target=pump, name="prism-output", daemon=True).start()
    try:
        deadline = time.monotonic() + READY_SECONDS
        while not ready.wait(0.1):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(p.output[-20:])
                pytest.fail(f"Prism did not start within {READY_SECONDS:.0f} s (exit {proc.poll()}):\n{tail}")
        yield p
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
