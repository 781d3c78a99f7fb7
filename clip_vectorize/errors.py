"""Typed errors of the encoding domain. They know nothing of HTTP: the service maps them to status codes."""


class EncoderError(Exception):
    """Base class for everything the encoder raises on purpose."""


class ModelLoadError(EncoderError):
    """The model could not be found or loaded; start-up must stop with this message."""


class InvalidImageError(EncoderError):
    """The bytes given are not an image we can decode (or are too large to decode safely)."""


class EmptyImageError(InvalidImageError):
    """Zero bytes where an image was expected."""


class ImageTooLargeError(InvalidImageError):
    """More pixels than CLIP_MAX_IMAGE_PIXELS: refused from the header, or by Pillow's decompression-bomb guard."""


class UnknownEncoderError(EncoderError):
    """A request asked for a text encoder that is not loaded (e.g. "multilingual" without a multilingual model)."""


class ModelNotReadyError(EncoderError):
    """The model is not loaded and warmed up yet, or no longer."""


class OverloadedError(EncoderError):
    """More work is queued than the configured bound: the caller should retry later."""


class DeadlineExceededError(OverloadedError):
    """The model did not get to this request within CLIP_REQUEST_TIMEOUT_S."""


class UrlRefusedError(InvalidImageError):
    """An image URL that policy forbids: wrong scheme, or a host resolving to a private/loopback/metadata address."""


class UrlFetchError(InvalidImageError):
    """An allowed image URL that could not be fetched: timeout, HTTP error, too large, too many redirects."""
