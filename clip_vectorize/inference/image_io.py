"""Turning untrusted bytes into RGB images: format sniffing, size guard, JPEG draft decoding, EXIF rotation."""

from __future__ import annotations

import functools
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clip_vectorize.errors import EmptyImageError, ImageTooLargeError, InvalidImageError


def load_rgb_image(data: bytes, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Decode `data` into an upright RGB image, refusing anything over `max_pixels` before decoding it.

    With `draft_size`, a JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale whose sides stay at least
    `draft_size` (the DCT does the downscaling): several times faster for camera photos.
    """
    if not data:
        raise EmptyImageError("image is empty (0 bytes)")
    register_optional_formats()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_pixels(image, max_pixels)
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.seek(0)  # animated images: the first frame
            return _to_rgb(ImageOps.exif_transpose(image))
    except InvalidImageError:
        raise
    except UnidentifiedImageError:
        raise InvalidImageError(
            "data is not an image in a format we can read (JPEG, PNG, WebP, GIF, HEIC, BMP, TIFF...)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeError(
            f"image has too many pixels to decode safely; the limit is {max_pixels} (CLIP_MAX_IMAGE_PIXELS)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImageError(f"image data is truncated or corrupt ({exc})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode to RGB as transformers' convert_to_rgb does it: transparency over white, 16-bit scaled, CMYK
    converted."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # Pillow would clip 16-bit values at 255 (a white image); keep the top 8 bits instead.
        image = Image.fromarray((np.asarray(image, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


@functools.cache
def register_optional_formats() -> bool:
    """HEIC/HEIF (iPhone photos) through pillow-heif, when it is installed. Returns whether it is."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def _check_pixels(image: Image.Image, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height}: too many pixels; the limit is {max_pixels} (CLIP_MAX_IMAGE_PIXELS)"
        )
