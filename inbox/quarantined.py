"""What waits in quarantine/: input files set aside that nobody has taken away yet.

Why it exists: a quarantined file is a declaration that has not reached its département. The
run that quarantines it exits 5 and logs it, but a run killed after the quarantine, or a cron
mail nobody read, left no other trace an operator would see: the next run exited 0 and
`status` said OK. `status` and the metrics count what is still here, from the folder itself,
until an operator takes the file away (after it was fixed upstream and dropped again). The
retention purge removes what is older than the trace keeps.

Only codes and counts come out of here: a quarantined file's name may carry anything.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ..core.errors import StorageError
from .claim import REASON_SUFFIX

_CODE = re.compile(r"([A-Z][A-Z0-9_]{0,39}): ")  # the first line of a .reason: "XML_MALFORMED: ..."
UNKNOWN_CODE = "UNKNOWN"


def _code(reason: Path) -> str:
    try:
        with reason.open("rb") as fh:
            first = fh.readline(200).decode("ascii", "replace")
    except OSError:
        return UNKNOWN_CODE
    found = _CODE.match(first)
    return found[1] if found else UNKNOWN_CODE


def waiting(quarantine_root: Path, flows: Iterable[str]) -> dict[str, Counter[str]]:
    """flow -> {code: files} of what is still in quarantine/<flow>/ (flows with none are left out).

    A file counts when its `.reason` and the file itself (a file, a link or a folder, as it was
    set aside) are both there. A `.reason` alone is the trace of a file an operator took away,
    or of a quarantine a crash interrupted, which the next run completes (and counts then).
    """
    out: dict[str, Counter[str]] = {}
    for flow in flows:
        folder = quarantine_root / flow
        try:
            names = set(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise StorageError(folder, f"cannot list the quarantine ({exc.strerror})") from exc
        codes: Counter[str] = Counter()
        for name in names:
            if name.endswith(REASON_SUFFIX) and name.removesuffix(REASON_SUFFIX) in names:
                codes[_code(folder / name)] += 1
        if codes:
            out[flow] = codes
    return out
