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
