"""The CLI with some folders genuinely read-only: a read-only bind mount in a private mount namespace.

The tests run as root, and root ignores mode bits, so `chmod 555` proves nothing. A read-only
bind mount refuses root too (EROFS). `unshare -m` keeps the mount private to that one process
tree; as a non-root user, `unshare -r -m` gives the same in a user namespace. The script first
proves that each folder refuses a write, so a test cannot pass on a mount that did not happen.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from support import NOW

NOT_READ_ONLY = 99


def run_cli_read_only(read_only: list[Path], *args: str, env_extra: dict[str, str] | None = None,
                      timeout: int = 300) -> subprocess.CompletedProcess:
    steps = []
    for d in read_only:
        q = shlex.quote(str(d))
        steps.append(f"mount --bind -o ro {q} {q}")
        steps.append(f"if touch {q}/.rw-probe 2>/dev/null; then echo 'not read-only: '{q} >&2; "
                     f"exit {NOT_READ_ONLY}; fi")
    script = "set -e\n" + "\n".join(steps) + '\nexec "$@"'
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
    env = {**os.environ, "FLUX_PMI_NOW": NOW.isoformat(), "FLUX_PMI_LOG_FORMAT": "json", **(env_extra or {})}
    proc = subprocess.run([*unshare, "sh", "-c", script, "sh", sys.executable, "-m", "flux_pmi.cli", *args],
                          capture_output=True, text=True, env=env, timeout=timeout, check=False)
    assert proc.returncode != NOT_READ_ONLY, proc.stderr
    return proc
