"""Named crash points, so tests can kill a run with SIGKILL at an exact step.

`FLUX_PMI_CRASH_AT=name` (or `name:N` for the N-th passage) makes the process kill
itself, without any cleanup, when it reaches `point(name)`. In production the
variable is unset and a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get("FLUX_PMI_CRASH_AT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
