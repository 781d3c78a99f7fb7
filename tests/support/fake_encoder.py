"""A deterministic stand-in for ClipEncoder, for tests of the HTTP layer only: it implements `Encoder`."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from clip_vectorize.errors import InvalidImageError, ModelNotReadyError, UnknownEncoderError
from clip_vectorize.inference.image_io import load_rgb_image
from clip_vectorize.inference.vectors import CacheCounts, ImageInput, ImageResult, TextEncoderInfo, TextVectors

DIMENSION = 8


def vector_for(seed_bytes: bytes) -> np.ndarray:
    """A unit vector that depends only on the input: the same text always maps to the same vector."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed_bytes).digest()[:8], "little"))
    vector = rng.normal(size=DIMENSION).astype(np.float32)
    return vector / np.linalg.norm(vector)


class FakeBatcher:
    depth = 0
    on_batch = None


class FakeEncoder:
    """Texts go to "clip" unless the caller names another encoder; "multilingual" exists when asked for."""

    model_name = "fake/clip"
    device = "cpu"
    backend_name = "fake"
    precision = "fp32"
    dimension = DIMENSION
    max_text_chars = 100
    text_routing = "clip"

    def __init__(self, ready: bool = True, fail_with: Exception | None = None, multilingual: bool = False) -> None:
        self.ready = ready
        self.fail_with = fail_with
        self.calls: list[tuple[str, int]] = []
        self.encoders = ["clip", "multilingual"] if multilingual else ["clip"]
        self._batchers = {("clip", "text"): FakeBatcher(), ("clip", "image"): FakeBatcher()}

    def encode_texts(self, texts: Sequence[str], encoder: str | None = None) -> TextVectors:
        self._maybe_fail()
        if encoder is not None and encoder not in self.encoders:
            raise UnknownEncoderError(f"encoder {encoder!r} is not loaded")
        self.calls.append(("texts", len(texts)))
        vectors = np.stack([vector_for(text.encode()) for text in texts]) if texts else np.zeros((0, DIMENSION))
        truncated = [len(text) > self.max_text_chars for text in texts]
        tokens = [len(text.split()) + 2 for text in texts]
        return TextVectors(vectors, truncated, [encoder or "clip"] * len(texts), tokens)

    def text_encoders(self) -> list[TextEncoderInfo]:
        return [TextEncoderInfo(name, f"fake/{name}", "fake", 77, "clip" if name == "clip" else "sentence-transformers",
                                "en" if name == "clip" else "multilingual") for name in self.encoders]

    def encode_images(self, images: Sequence[ImageInput]) -> list[ImageResult]:
        self._maybe_fail()
        self.calls.append(("images", len(images)))
        return [self._vector_or_refusal(image) for image in images]

    def batchers(self):
        return self._batchers

    def text_cache_counts(self) -> dict[str, CacheCounts]:
        return {"clip": CacheCounts(0, 0)}

    def _vector_or_refusal(self, image: ImageInput) -> ImageResult:
        if isinstance(image, InvalidImageError):
            return image
        try:
            load_rgb_image(image, max_pixels=10_000_000)
        except InvalidImageError as exc:
            return exc
        return vector_for(image)

    def _maybe_fail(self) -> None:
        if not self.ready:
            raise ModelNotReadyError("the CLIP model is not loaded yet")
        if self.fail_with is not None:
            raise self.fail_with
