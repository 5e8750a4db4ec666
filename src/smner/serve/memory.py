"""Giving decoded images' memory back to the system.

glibc serves a large allocation with ``mmap`` (returned to the system on ``free``) only above
a threshold that it raises to the size of every large block freed, up to 32 MiB. Pillow
allocates images in 16 MiB blocks, so after the first large image is freed every later one
comes from the heap arenas of the decoding threads, where freed memory mostly stays: a server
that decoded a few large images kept gigabytes. Fixing the threshold keeps image blocks on
``mmap``; trimming after a large decode returns what the heap still holds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 (glibc only)
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def keep_large_blocks_off_the_heap(threshold: int = 1 << 20) -> bool:
    """Serve allocations of ``threshold`` bytes and more by ``mmap``, for good (glibc only).

    Returns whether it could be set. Called once by ``smner serve``: it affects the process.
    """
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    ok = bool(libc.mallopt(_M_TRIM_THRESHOLD, 4 * threshold)) and ok
    if not ok:
        logger.debug("mallopt refused the mmap threshold; memory may be kept after decoding")
    return ok


def trim() -> None:
    """Return freed heap memory to the system (glibc's ``malloc_trim``); a no-op elsewhere."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
