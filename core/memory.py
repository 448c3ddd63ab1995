"""Two process-wide malloc settings, so a run's resident memory does not creep with what it handles.

Why it exists: glibc gives each thread that allocates its own arena, up to eight per core,
and never hands an arena's freed space back to another. A night has about a hundred delivery
and SSH threads passing megabyte buffers: each arena kept its high-water mark, and the run's
resident memory grew with the size of what it sent (measured on the benchmark: 109 MB for one
day, 136 MB for ten, the same work). Two arenas serve every thread of a run just as well here
(their time is spent in SSL and system calls, not in malloc): 105 MB for ten days.

The second setting is the size from which a buffer gets pages of its own, handed back to the
system when freed. glibc raises that size to the largest buffer freed so far (up to 32 MiB): once
a worker has sealed a 16 MiB part, every later part's copies came from its heap, which then
kept the largest high-water mark of the night (a 30-day catch-up's workers peaked at 181 MB).
Fixed at 4 MiB, a part's copies come and go, and the megabyte reads still reuse the heap.

Set before any thread starts (the command line's first step, a worker's first step). Not glibc
(musl, macOS): nothing to do, nothing done.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
M_ARENA_MAX = -8
ARENAS = 2
OWN_PAGES_FROM = 4 << 20


def cap_arenas(arenas: int = ARENAS, own_pages_from: int = OWN_PAGES_FROM) -> bool:
    """Ask glibc for at most `arenas` malloc arenas, and pages of their own for buffers of
    `own_pages_from` bytes or more; False where there are no such settings."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
        gnu = getattr(libc, "gnu_get_libc_version", None)
    except OSError:
        return False
    if mallopt is None or gnu is None:  # mallopt without glibc's meaning for -8: leave it alone
        return False
    return bool(mallopt(M_ARENA_MAX, arenas)) and bool(mallopt(M_MMAP_THRESHOLD, own_pages_from))
