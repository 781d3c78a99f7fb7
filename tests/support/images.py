"""Test images that behave like photos, and their encoded bytes."""

import io

import numpy as np
from PIL import Image


def photo_like(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """A smooth gradient with blobs and a little noise: closer to a photo than white noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [np.sin(x * rng.uniform(2, 9) + rng.uniform(0, 6)) * np.cos(y * rng.uniform(2, 9)) for _ in range(3)]
    pixels = (np.stack(channels, -1) * 0.5 + 0.5) * 230 + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def encode_image_bytes(image: Image.Image, fmt: str = "JPEG", **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()
