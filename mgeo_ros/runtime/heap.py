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
share their freed blocks (measured: a second-half RSS slope of about 0 instead of a creep and late jumps); the node
sets the cap before rclpy starts DDS's threads, since a thread that allocated before it keeps an arena of its own.

`MGEO_MALLOC_TUNING=0` in the environment leaves the allocator alone (to measure the difference, or under another
allocator such as jemalloc preloaded). Not glibc (musl, macOS): nothing is done.
"""
from __future__ import annotations

import ctypes
import functools
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest accepted value: blocks up to 32 MiB (a 1280x720 cloud with normals) reuse
TRIM_THRESHOLD = 256 << 20  # free memory kept at the top of the heap before it is returned
ARENA_MAX = 2  # malloc arenas shared by every thread (see the module docstring)
TRIM_THREADS = 32  # short threads that visit the arenas at a cleanup (glibc's default cap is 8 per core)

_done: bool | None = None


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library with the allocator calls used here typed, or None when it is not glibc (musl, macOS)."""
    try:
        libc = ctypes.CDLL(None)
        calls = {'mallopt': ((ctypes.c_int, ctypes.c_int), ctypes.c_int),
                 'malloc_trim': ((ctypes.c_size_t,), ctypes.c_int),
                 'malloc': ((ctypes.c_size_t,), ctypes.c_void_p), 'free': ((ctypes.c_void_p,), None)}
        for name, (argtypes, restype) in calls.items():
            fn = getattr(libc, name)
            fn.argtypes, fn.restype = argtypes, restype
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_buffers() -> bool:
    """Set the thresholds (once per process); True when glibc accepted them."""
    global _done
    if _done is None:
        _done = False
        libc = _glibc()
        if os.environ.get('MGEO_MALLOC_TUNING', '1') != '0' and libc is not None:
            _done = all(bool(libc.mallopt(option, value)) for option, value in (
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
    libc = _glibc()
    if libc is None:
        return False
    trimmed = bool(libc.malloc_trim(0))
    if _done:
        _trim_arena_tops(libc)
    return trimmed


def _trim_arena_tops(libc: ctypes.CDLL) -> None:
    """malloc_trim shrinks only the main heap's top; a thread arena's heap gives its top back when a block of 64 KiB
    or more is freed in that arena while the top exceeds the trim threshold. Lower the threshold, free such a block
    from short threads, restore it. The threads are alive together: glibc hands a new thread an arena no live thread
    holds (the last one freed, over and over, if they ran one after another), then the others in turn, so together
    they visit every arena (there may be more than ARENA_MAX: threads that allocated before the cap have their own)."""
    import threading

    together = threading.Barrier(TRIM_THREADS)

    def touch() -> None:
        block = libc.malloc(256 << 10)  # takes this thread's arena
        try:
            together.wait(timeout=10.0)
        except threading.BrokenBarrierError:
            pass
        libc.free(block)

    libc.mallopt(M_TRIM_THRESHOLD, 128 << 10)
    try:
        threads = [threading.Thread(target=touch, name='mgeo_heap_trim') for _ in range(TRIM_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
