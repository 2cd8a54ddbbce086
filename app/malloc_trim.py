"""Giving freed memory back to the OS.

glibc keeps freed heap memory in its arenas (and raises its mmap threshold after big frees, so
later big buffers come from the heap too): after a large request the RSS stays at its peak.
``malloc_trim(0)`` returns it. Elsewhere (macOS' allocator returns memory itself) it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def trim() -> None:
    fn = _malloc_trim()
    if fn is not None:
        fn(0)
