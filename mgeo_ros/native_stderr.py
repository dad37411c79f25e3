"""Collect what a C library writes straight to file descriptor 2 during one call, and lose nothing else.

libpng and libjpeg (inside OpenCV's decoder) report a damaged file with `fprintf(stderr, ...)`: one unthrottled line
per frame that no logger sees. Around a decode, fd 2 points at an in-memory file; afterwards the lines the caller
claims (the decoder's) are returned, and every other line (another thread's log written meanwhile) is written back to
the real stderr, only delayed by the decode. Calls are serialized: fd 2 is process-wide. About 20 us per call.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator

_lock = threading.Lock()


def _memory_file() -> int:
    if hasattr(os, 'memfd_create'):
        return os.memfd_create('mgeo_native_stderr', os.MFD_CLOEXEC)
    handle, path = tempfile.mkstemp(prefix='mgeo_stderr_')
    os.unlink(path)
    return handle


@contextlib.contextmanager
def claim_stderr(claims: Callable[[str], bool]) -> Iterator[list[str]]:
    """Within the block, lines written to fd 2 for which `claims(line)` is true are collected into the yielded list
    (stripped); the others are passed on to the real stderr when the block ends."""
    claimed: list[str] = []
    with _lock:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 at all (a daemon with it closed): nothing to protect, nothing to claim
            yield claimed
            return
        try:
            sink = _memory_file()
        except OSError:  # no descriptor left for the sink: run the block unclaimed rather than fail it or leak `saved`
            os.close(saved)
            yield claimed
            return
        os.dup2(sink, 2)
        try:
            yield claimed
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.lseek(sink, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(sink, 65536):
                chunks.append(chunk)
            os.close(sink)
            passed = []
            for line in b''.join(chunks).decode(errors='replace').splitlines(keepends=True):
                if claims(line):
                    claimed.append(line.strip())
                else:
                    passed.append(line)
            if passed:
                with contextlib.suppress(OSError):
                    os.write(2, ''.join(passed).encode())
