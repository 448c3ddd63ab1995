"""Start the workers' fork server as a run starts, before the run's own imports.

Why it exists: before the first worker can fork, the fork server imports the build stack
(lxml, cryptography, the schemas, the flows: about 0.4 s of one core). Started when the night
asked for its workers, it did that while the run claimed its inputs and connected to a hundred
partners on the same two cores, and the first parse waited for it, about a second into the
night. Started here, as soon as the configuration says workers will be used, it imports on the
other core while this process imports its own modules.

Light on purpose: only the standard library, so that importing it costs nothing.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing import forkserver

PRELOAD = "flux_pmi.jobs.prepare"  # the module the workers run: imported once, by the server


def worth_workers(processes: int, expected_jobs: int, min_jobs: int) -> bool:
    """Whether a run with that many jobs uses worker processes at all (jobs/prepare.py, Workers)."""
    return processes >= 2 and expected_jobs >= min_jobs


def start_server(processes: int, expected_jobs: int, min_jobs: int) -> bool:
    """Start the fork server now (it imports in the background) when the run will use workers."""
    if not worth_workers(processes, expected_jobs, min_jobs):
        return False
    multiprocessing.get_context("forkserver").set_forkserver_preload([PRELOAD])
    forkserver.ensure_running()
    return True
