"""Turning untrusted bytes into RGB images: base64/data-URI decoding, format sniffing, size guard, EXIF rotation."""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from errors import InvalidImageError


def decode_base64_image(value: object) -> bytes:
    """Accept plain base64 or a `data:image/...;base64,` URI; anything else is an InvalidImageError."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidImageError("image must be a non-empty base64 string or data: URI")
    payload = value.strip()
    if payload.startswith("data:"):
        header, _, payload = payload.partition(",")
        if not header.endswith(";base64"):
            raise InvalidImageError("data: URI must be base64-encoded (data:image/...;base64,...)")
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImageError("image is not valid base64") from None


def load_rgb_image(data: bytes, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Decode `data` into an upright RGB image, refusing anything over `max_pixels` before decoding it.

    With `draft_size`, a JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale whose sides stay at least
    `draft_size` (the DCT does the downscaling): several times faster for camera photos.
    """
    if not data:
        raise InvalidImageError("image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_pixels(image, max_pixels)
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.seek(0)  # animated images: the first frame
            image = ImageOps.exif_transpose(image)
            return image.convert("RGB")
    except InvalidImageError:
        raise
    except UnidentifiedImageError:
        raise InvalidImageError("data is not an image in a format we can read (JPEG, PNG, WebP, GIF, BMP, TIFF...)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImageError(f"image has too many pixels; the limit is {max_pixels}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImageError(f"image data is truncated or corrupt ({exc})") from None


def _check_pixels(image: Image.Image, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidImageError(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} (CLIP_MAX_IMAGE_PIXELS)"
        )
