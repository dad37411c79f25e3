"""Keep freed frame-sized buffers in the process instead of handing them back to the kernel after every frame.

glibc serves an allocation of more than 128 KiB (the threshold then adapts up to 32 MiB) with its own mmap and
returns the pages to the kernel when it is freed; the next frame's array of the same size then takes one page fault
per 4 KiB page as it is first written. A frame's work allocates tens of MB that way (numpy temporaries, rclpy's C
copy of each message), and the page faults can cost more kernel time than the arithmetic itself. Raising the mmap
and trim thresholds once lets freed
blocks be reused from the heap, which stays at its high-water mark (a few frames' worth of arrays).

The node allocates frame-sized arrays on several threads (the subscription callback, the model stage, the outputs
stage, DDS's own): glibc gives each thread an arena of its own, up to 8 per core, and a block freed by a thread other
than the one that allocated it goes back to the owner's arena, so each arena's high-water mark grows on its own and
the process's resident size creeps up for minutes under a stream. The arenas are capped at `ARENA_MAX` so they
share their freed blocks (measured: a second-half RSS slope of about 0 instead of a creep and late jumps).

`MGEO_MALLOC_TUNING=0` in the environment leaves the allocator alone (to measure the difference, or under another
allocator such as jemalloc preloaded). Not glibc (musl, macOS): nothing is done.
"""
from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest accepted value: blocks up to 32 MiB (a 1280x720 cloud with normals) reuse
TRIM_THRESHOLD = 256 << 20  # free memory kept at the top of the heap before it is returned
ARENA_MAX = 2  # malloc arenas shared by every thread (see the module docstring)

_done: bool | None = None


def keep_freed_buffers() -> bool:
    """Set the thresholds (once per process); True when glibc accepted them."""
    global _done
    if _done is None:
        _done = False
        if os.environ.get('MGEO_MALLOC_TUNING', '1') != '0':
            try:
                mallopt = ctypes.CDLL(None).mallopt
            except (OSError, AttributeError):  # not glibc
                return False
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            _done = all(bool(mallopt(option, value)) for option, value in (
                (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_ARENA_MAX, ARENA_MAX)))
    return _done


def release_freed() -> bool:
    """Hand the heap's free pages back to the kernel (glibc `malloc_trim(0)`, after a garbage collection so that
    cycles holding large arrays are freed first). For the end of a session (a lifecycle cleanup): the thresholds
    above keep freed frame buffers for the next frame, which after a cleanup never comes, and the next configure's
    model and buffers would be laid out around them; the thread arenas' heap tops, which malloc_trim leaves, go back
    too (`_trim_arena_tops`). True when glibc trimmed anything."""
    import gc

    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return False
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    trimmed = bool(trim(0))
    if _done:
        _trim_arena_tops()
    return trimmed


def _trim_arena_tops() -> None:
    """malloc_trim shrinks only the main heap's top; a thread arena's heap gives its top back when a block of 64 KiB
    or more is freed in that arena while the top exceeds the trim threshold. Lower the threshold, free such a block
    from a few short threads (glibc hands them the existing arenas in turn), restore it."""
    import threading

    libc = ctypes.CDLL(None)
    libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    libc.malloc.argtypes, libc.malloc.restype = (ctypes.c_size_t,), ctypes.c_void_p
    libc.free.argtypes, libc.free.restype = (ctypes.c_void_p,), None

    def touch() -> None:
        block = libc.malloc(256 << 10)
        libc.free(block)

    libc.mallopt(M_TRIM_THRESHOLD, 128 << 10)
    try:
        for _ in range(2 * ARENA_MAX):
            t = threading.Thread(target=touch)
            t.start()
            t.join()
    finally:
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
