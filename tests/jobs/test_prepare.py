"""The run's worker processes (jobs/prepare.py): the very files the run's own process builds, numbered alike."""

from __future__ import annotations

import pytest
from support import make_demo, open_delivered, run_cli

from flux_pmi.jobs.prepare import SeqPlan


@pytest.mark.parametrize("existing, expected", [
    ((), [10, 11, 12]),  # nothing allocated yet: the next numbers, in a row
    (((1, 4), (2, 5)), [4, 5, 10]),  # an interrupted run numbered parts 1 and 2: a rebuild gets them again
    (((2, 7),), [10, 7, 11]),  # whatever was allocated keeps its number; the rest follow in part order
])  # fmt: skip
def test_the_sequence_plan_is_what_the_trace_allocates(existing, expected) -> None:
    plan = SeqPlan(existing, next_seq=10)
    assert [plan(part) for part in (1, 2, 3)] == expected


def test_workers_build_the_files_the_run_builds_itself(tmp_path) -> None:
    opened = {}
    for processes in (1, 2):
        root = tmp_path / f"p{processes}"
        make_demo(root, departments="035,02A,971")
        config = root / "flux-pmi.toml"
        config.write_text(config.read_text() + f"\n[build]\nprocesses = {processes}\nmin_jobs = 1\n")
        done = run_cli("run", "--config", str(config))
        assert done.returncode == 0, done.stdout + done.stderr
        opened[processes] = open_delivered(root)
        assert not [p for p in (root / "work").rglob("*") if p.is_file() and "batch-" in str(p)]
    assert len(opened[2]) == 9  # three flows for three départements
    assert opened[2] == opened[1]
