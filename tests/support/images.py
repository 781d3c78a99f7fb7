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


CAR_COLOURS = {"red": (200, 30, 40), "blue": (30, 70, 190), "white": (235, 235, 235), "black": (30, 30, 35),
               "silver": (170, 175, 180), "green": (40, 130, 70), "yellow": (235, 200, 40), "orange": (230, 120, 30)}


def car_drawing(colour: str, seed: int = 0, width: int = 400, height: int = 300) -> Image.Image:
    """A car-like drawing (body, cabin, windows, wheels) in a named colour over sky and road: a gallery a person
    can tell apart at a glance, for the search page's screenshots."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), (150 + int(rng.integers(0, 60)), 190, 225))
    draw = ImageDraw.Draw(image)
    ground = int(height * 0.72)
    draw.rectangle((0, ground, width, height), fill=(90, 95, 100))
    left, length = int(width * rng.uniform(0.08, 0.16)), int(width * rng.uniform(0.66, 0.78))
    body_top, roof = ground - int(height * 0.22), ground - int(height * rng.uniform(0.36, 0.44))
    paint = CAR_COLOURS[colour]
    draw.rounded_rectangle((left, body_top, left + length, ground - 12), radius=18, fill=paint)
    cabin = (left + int(length * 0.22), roof, left + int(length * 0.72), body_top + 4)
    draw.rounded_rectangle(cabin, radius=22, fill=paint)
    draw.rectangle((cabin[0] + 12, roof + 10, cabin[2] - 12, body_top), fill=(120, 160, 190))
    for centre in (left + int(length * 0.2), left + int(length * 0.8)):
        radius = int(height * 0.085)
        draw.ellipse((centre - radius, ground - 12 - radius, centre + radius, ground - 12 + radius), fill=(20, 20, 20))
        draw.ellipse((centre - radius // 2, ground - 12 - radius // 2, centre + radius // 2, ground - 12 + radius // 2),
                     fill=(160, 160, 165))
    return image
