"""One process-wide memory setting: few malloc arenas, so a run's resident memory does not creep.

Why it exists: glibc gives each thread that allocates its own arena, up to eight per core,
and never hands an arena's freed space back to another. A night has about a hundred delivery
and SSH threads passing megabyte buffers: each arena kept its high-water mark, and the run's
resident memory grew with the size of what it sent (measured on the benchmark: 109 MB for one
day, 136 MB for ten, the same work). Two arenas serve every thread of a run just as well here
(their time is spent in SSL and system calls, not in malloc): 105 MB for ten days.

Set before any thread starts (the command line's first step, a worker's first step). Not glibc
(musl, macOS): nothing to do, nothing done.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2


def cap_arenas(arenas: int = ARENAS) -> bool:
    """Ask glibc for at most `arenas` malloc arenas; False where there is no such setting."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
        gnu = getattr(libc, "gnu_get_libc_version", None)
    except OSError:
        return False
    if mallopt is None or gnu is None:  # mallopt without glibc's meaning for -8: leave it alone
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))
