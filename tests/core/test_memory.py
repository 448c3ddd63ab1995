"""core/memory.py: a run's threads share two malloc arenas, not one each (glibc's malloc_stats says how many)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from flux_pmi.core import memory

# Sixteen threads, each allocating from malloc (64 KiB: above pymalloc's, below mmap's threshold)
# at the same time, then glibc's own count of its arenas.
PROGRAM = """
import ctypes, sys, threading
from flux_pmi.core import memory
if sys.argv[1] == "capped":
    assert memory.cap_arenas()
barrier = threading.Barrier(16)
def work():
    barrier.wait()
    kept = [bytearray(65536) for _ in range(50)]
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(None).malloc_stats()
"""


def _arenas(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="not glibc: there is no arena setting to test")
def test_threads_share_at_most_two_arenas_once_capped() -> None:
    assert _arenas("default") > memory.ARENAS  # what the cap is for: glibc gives threads arenas of their own
    assert 1 <= _arenas("capped") <= memory.ARENAS


# A 16 MiB buffer freed (a sealed part's copy), then an 8 MiB one held: where does the second come from?
HEAP_PROGRAM = """
import ctypes, sys
from flux_pmi.core import memory
if sys.argv[1] == "capped":
    assert memory.cap_arenas()
part = bytearray(16 << 20)
del part
held = bytearray(8 << 20)
ctypes.CDLL(None).malloc_stats()
"""


def _main_heap_bytes(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", HEAP_PROGRAM, mode], capture_output=True, text=True, check=True)
    lines = done.stderr.splitlines()
    arena0 = lines[lines.index("Arena 0:") + 1]  # "system bytes     =   N"
    return int(arena0.split("=")[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="not glibc: there is no threshold to test")
def test_a_large_buffer_gets_pages_of_its_own_even_after_a_larger_one_was_freed() -> None:
    assert _main_heap_bytes("default") >= 8 << 20  # glibc raised its threshold: the heap kept the buffer
    assert _main_heap_bytes("capped") < 8 << 20  # mapped on its own, unmapped when freed
