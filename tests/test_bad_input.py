"""Every kind of bad or unusual input gets a clear 4xx JSON error or a correct vector, with the real tiny model."""

import io
import resource
import struct
import zlib

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from support.app import make_app
from support.assertions import assert_error
from support.images import encode_image_bytes, photo_like

PHOTO = photo_like(320, 240, seed=21)


@pytest.fixture(scope="module")
def client(tiny_encoder):
    return make_app(tiny_encoder, max_batch_items=8, max_text_chars=1000).test_client()


def image_vector(client, blob: bytes) -> np.ndarray:
    response = client.post("/encode-image", data={"image": (io.BytesIO(blob), "upload")})
    assert response.status_code == 200, response.get_json()
    return np.asarray(response.get_json()["vector"])


# ---------------------------------------------------------------- bodies and texts


@pytest.mark.parametrize(
    "kwargs, status, fragment",
    [
        ({"data": "", "content_type": "application/json"}, 400, "JSON object"),
        ({"data": "not json", "content_type": "application/json"}, 400, "JSON object"),
        ({"json": {"texts": ["a"]}}, 400, "'text' is required"),
        ({"data": "text=car", "content_type": "application/x-www-form-urlencoded"}, 415, "application/json"),
        ({"json": {"text": "car " * 300}}, 400, "CLIP_MAX_TEXT_CHARS"),
        ({"json": {"text": "x" * 1_000_000}}, 400, "has 1000000 characters"),
        ({"data": '{"text": "car \\ud800"}', "content_type": "application/json"}, 400, "lone surrogate"),
    ],
    ids=["empty-body", "not-json", "wrong-shape", "wrong-content-type", "over-char-limit", "1-MB-text",
         "lone-surrogate"],
)
def test_bad_bodies_and_texts_get_a_clear_4xx(client, kwargs, status, fragment):
    assert_error(client.post("/encode-text", **kwargs), status, fragment)


@pytest.mark.parametrize(
    "text",
    ["tab\tnew line\nbell\x07 null\x00 escape\x1b",
     "红色的宝马SUV 🚗🔥 Ελληνικά русский العربية", "‮reversed‬ zero​width"],
    ids=["control-characters", "mixed-scripts-and-emoji", "bidi-and-zero-width"],
)
def test_unusual_texts_encode_to_unit_vectors(client, text):
    body = client.post("/encode-text", json={"text": text}).get_json()
    assert body["status"] == "success" and body["text"] == text
    assert abs(np.linalg.norm(body["vector"]) - 1) < 1e-4


@pytest.mark.parametrize(
    "texts, fragment",
    [([], "non-empty JSON list"), (["ok", None], "'texts[1]' is required"), (["ok", {"a": 1}], "must be a string"),
     (["t"] * 9, "limit is 8")],
    ids=["empty-list", "null-item", "object-item", "over-item-limit"],
)
def test_bad_batches_get_a_clear_400(client, texts, fragment):
    assert_error(client.post("/encode-texts", json={"texts": texts}), 400, fragment)


# ---------------------------------------------------------------- images that are refused


def png_header_only(width: int, height: int) -> bytes:
    """A few hundred bytes claiming width x height pixels: a decompression bomb as far as any decoder knows."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (width // 8 + 1) * 64)  # the first rows; a decoder would want all 30000
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_refused_from_its_header_and_memory_stays_flat(client):
    bomb = png_header_only(30_000, 30_000)
    assert len(bomb) < 5_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    response = client.post("/encode-image", data={"image": (io.BytesIO(bomb), "bomb.png")})
    assert_error(response, 400, "too many pixels")
    # KiB: nothing near the 112+ MB it claims
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000


@pytest.mark.parametrize(
    "blob, fragment",
    [
        (b"", "empty"),
        (np.random.default_rng(0).bytes(4096), "not an image"),
        (encode_image_bytes(PHOTO)[:2000], "truncated or corrupt"),
        (b"GIF89a" + b"\x00" * 20, "not an image"),
    ],
    ids=["zero-bytes", "random-bytes", "truncated-jpeg", "broken-gif"],
)
def test_undecodable_uploads_get_a_clear_400(client, blob, fragment):
    assert_error(client.post("/encode-image", data={"image": (io.BytesIO(blob), "x")}), 400, fragment)


# ---------------------------------------------------------------- images that encode, and encode correctly


def as_png(image: Image.Image) -> bytes:
    return encode_image_bytes(image.convert("RGB"), "PNG")


def animated_gif() -> tuple[bytes, Image.Image]:
    frames = [photo_like(96, 64, seed=s).quantize(64) for s in (1, 2, 3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue(), frames[0]


def sixteen_bit_png() -> tuple[bytes, Image.Image]:
    gray8 = np.asarray(PHOTO.convert("L"), dtype=np.uint16)
    return encode_image_bytes(Image.fromarray(gray8 * 257), "PNG"), Image.fromarray(gray8.astype(np.uint8))


def transparent_palette_png() -> tuple[bytes, Image.Image]:
    palette = PHOTO.quantize(16)
    palette.info["transparency"] = 0
    blob = encode_image_bytes(palette, "PNG", transparency=0)
    over_white = Image.alpha_composite(Image.new("RGBA", palette.size, "white"), palette.convert("RGBA"))
    return blob, over_white


def heic() -> tuple[bytes, Image.Image]:
    buffer = io.BytesIO()
    pillow_heif.from_pillow(PHOTO).save(buffer, quality=95)
    return buffer.getvalue(), PHOTO


FORMATS = {
    "animated-gif-first-frame": animated_gif,
    "cmyk-jpeg": lambda: (encode_image_bytes(PHOTO.convert("CMYK"), "JPEG", quality=95), PHOTO),
    "16-bit-png": sixteen_bit_png,
    "palette-png-with-transparency": transparent_palette_png,
    "grayscale-jpeg": lambda: (encode_image_bytes(PHOTO.convert("L"), "JPEG", quality=95), PHOTO.convert("L")),
    "webp": lambda: (encode_image_bytes(PHOTO, "WEBP", lossless=True), PHOTO),
    "heic": heic,
}


@pytest.mark.parametrize("make", FORMATS.values(), ids=FORMATS.keys())
def test_each_image_format_encodes_like_its_rgb_equivalent(client, make):
    blob, equivalent = make()
    assert float(image_vector(client, blob) @ image_vector(client, as_png(equivalent))) >= 0.99
