"""Keep the C allocator from handing large message buffers back to the kernel.

A 1 MiB message costs every process it passes one fresh 1 MiB buffer or two:
ZeroMQ's I/O thread allocates one for each message it reads, and a ``bytes``
made from it is another. glibc serves such sizes from ``mmap`` (128 KiB and
up until a first large free raises the limit to that size) and trims a heap
whose free top passes twice that limit, so a stream of 1 MiB messages keeps
returning pages to the kernel and faulting them in again, zeroed: about
70 CPU-us per fresh 1 MiB buffer here, more than the copy into it costs.

:func:`keep_large_buffers` sets, once per process, the two limits glibc's
own adjustment reaches at most (32 MiB served from the heap, 64 MiB of free
heap top kept): memory freed by one message is reused by the next, and what
a process keeps unused stays bounded by those 64 MiB per allocator arena.
Other C libraries, a limit set in the environment (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``) or ``PALM_MALLOC_TUNING=0`` leave it untouched.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["keep_large_buffers"]

#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: the ceilings of glibc's dynamic limits on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX, twice it)
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD

_done_pid = 0


def keep_large_buffers() -> bool:
    """Set the limits (once per process); True when they are in force."""
    global _done_pid
    if _done_pid == os.getpid():
        return True
    if not _wanted():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # the mmap limit first: setting either one stops glibc's own adjustment
    if not (
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    ):
        return False
    _done_pid = os.getpid()
    return True


def _wanted() -> bool:
    if os.environ.get("PALM_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False  # someone chose already
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None  # glibc, and only glibc, names itself
    except (ValueError, OSError):
        return False
