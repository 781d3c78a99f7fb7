"""Photo-like JPEGs, generated once: what a phone upload (12 MP) or a resized web photo (2 MP) costs to receive,
decode and resize.

A flat or random-noise image would mislead: flat images compress to almost nothing and decode unrealistically
fast, pure noise compresses far worse than a photo. Smooth gradients, some blurred shapes, a fine grain like
asphalt or foliage and mild sensor noise, saved at quality 90, land at a phone photo's size (~3-4 MB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT, QUALITY = 4000, 3000, 90
PHOTOS = {"12mp": (WIDTH, HEIGHT), "2mp": (1632, 1224)}  # name -> size; the 2 MP one is the 12 MP one, resized


def photo_path(directory: Path, name: str) -> Path:
    width, height = PHOTOS[name]
    return directory / f"photo-{width}x{height}-q{QUALITY}.jpg"


def ensure_photo(directory: Path, name: str) -> Path:
    """The JPEG `name` in `directory`, generated (deterministically) if it is not there yet."""
    path = photo_path(directory, name)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(".partial")
        make_photo(np.random.default_rng(0)).resize(PHOTOS[name], Image.LANCZOS).save(staging, "JPEG",
                                                                                     quality=QUALITY)
        staging.rename(path)
    return path


def make_photo(rng: np.random.Generator) -> Image.Image:
    """Gradient sky/ground, a few soft-edged shapes, then texture and noise of a few grey levels."""
    image = Image.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)).resize((WIDTH, HEIGHT), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(60):
        x, y = int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT))
        w, h = int(rng.integers(40, 900)), int(rng.integers(40, 600))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x, y, x + w, y + h), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    image = image.filter(ImageFilter.GaussianBlur(3))  # lens-like edges, not pixel-sharp vector art
    pixels = np.asarray(image, dtype=np.float32)
    grain = Image.fromarray(rng.integers(0, 256, (HEIGHT // 2, WIDTH // 2), dtype=np.uint8)).resize((WIDTH, HEIGHT))
    pixels += (np.asarray(grain, np.float32)[..., None] - 128) * (20 / 128)  # up to +-20 grey levels
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * 4.0
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
