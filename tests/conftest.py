"""Shared fixtures; the helpers they use live in support.py."""

from __future__ import annotations

import pytest
from support import NOW, make_demo

from flux_pmi.core.clock import FixedClock


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def demo(tmp_path):
    result = make_demo(tmp_path / "demo")
    return tmp_path / "demo", result
