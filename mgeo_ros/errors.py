"""Project exception types, so callers can tell bad input from bugs."""


class MgeoError(Exception):
    """Base class of every error mgeo_ros raises on purpose."""


class BadInputError(MgeoError, ValueError):
    """Input data (an image, a message, a file) is malformed; the message names the offending field."""


class CheckpointError(MgeoError):
    """A checkpoint cannot be loaded: wrong format, unsafe pickle, or keys that do not match the model."""


class BackendUnavailableError(MgeoError, RuntimeError):
    """An inference backend cannot run here (package missing, no GPU, engine built for another GPU/TensorRT)."""


class ImageTooLargeError(BadInputError):
    """An image has more pixels than the configured limit; refused before decoding it."""

    reason = 'image_too_large'


class ImageDecodeError(BadInputError):
    """A compressed image's bytes are damaged or not decodable (what libpng/libjpeg/OpenCV complained about)."""

    reason = 'image_decode'


class DepthCodecError(BadInputError):
    """compressedDepth data that cannot be read as what its format string says (short header, a PNG that is not
    one 16-bit channel, an RVL stream that does not fill its frame...). `reason` is a short fixed word for counters
    ('short_header', 'rvl_underfill', ...); the message says what was found and what was expected."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


DEBUG_ENV = 'MGEO_DEBUG'


def debug_requested(argv_debug: bool = False) -> bool:
    """Tracebacks for the project's own errors: `--debug` or MGEO_DEBUG=1 (a bug always shows its traceback)."""
    import os

    return argv_debug or os.environ.get(DEBUG_ENV, '').strip().lower() not in ('', '0', 'false', 'no')


def run_reporting(prog: str, run, *args, debug: bool = False) -> int:
    """Run a command; the project's errors and a missing/unreadable user file become one line on stderr
    ('<prog>: error: <what is wrong, what was expected, what to do>') and exit 1; Ctrl-C exits 130. Anything else
    is a bug and keeps its traceback."""
    import sys

    try:
        return int(run(*args) or 0)
    except KeyboardInterrupt:
        print(f'{prog}: interrupted', file=sys.stderr)
        return 130
    except (MgeoError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        if debug_requested(debug):
            raise
        print(f'{prog}: error: {_one_line(exc)}', file=sys.stderr)
        print(f'{prog}: ({DEBUG_ENV}=1 or `mgeo --debug ...` shows the traceback)', file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, MgeoError) and exc.filename is not None:
        return f'{exc.filename}: {exc.strerror or exc}; check the path'
    return str(exc) or type(exc).__name__
