"""Shared fixtures; the helpers they use live in support.py."""

from __future__ import annotations

import pytest
import structlog
from support import NOW, make_demo

from flux_pmi.core import log
from flux_pmi.core.clock import FixedClock


@pytest.fixture(autouse=True)
def _fresh_logging():
    """Each test starts from the same logging: `cli.main` run in-process sets the level for the whole
    process (warning by default; here every level reaches capture_logs), and a run binds its run id; neither may leak into the next test."""
    log.configure(json=True, level="DEBUG")
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def demo(tmp_path):
    result = make_demo(tmp_path / "demo")
    return tmp_path / "demo", result
