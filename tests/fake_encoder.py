"""A deterministic stand-in for ClipEncoder, for tests of the HTTP layer only."""

import hashlib
from types import SimpleNamespace

import numpy as np

from clip_encoder import ImageVectors, TextVectors
from clip_vectorize.errors import InvalidImageError, ModelNotReadyError
from clip_vectorize.inference.image_io import load_rgb_image

DIMENSION = 8


def vector_for(seed_bytes: bytes) -> np.ndarray:
    """A unit vector that depends only on the input: the same text always maps to the same vector."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed_bytes).digest()[:8], "little"))
    vector = rng.normal(size=DIMENSION).astype(np.float32)
    return vector / np.linalg.norm(vector)


class FakeEncoder:
    model_name = "fake/clip"
    device = "cpu"
    dimension = DIMENSION
    max_text_chars = 100

    class backend:
        name = "fake"

    def __init__(self, ready: bool = True, fail_with: Exception | None = None) -> None:
        self.ready = ready
        self.fail_with = fail_with
        self.calls: list[tuple[str, int]] = []
        self.text_batcher = SimpleNamespace(depth=0, on_batch=None)  # what /metrics reads of a real encoder
        self.image_batcher = SimpleNamespace(depth=0, on_batch=None)

    def encode_texts(self, texts):
        self._maybe_fail()
        self.calls.append(("texts", len(texts)))
        vectors = np.stack([vector_for(text.encode()) for text in texts]) if texts else np.zeros((0, DIMENSION))
        return TextVectors(vectors, [len(text) > self.max_text_chars for text in texts])

    def encode_images(self, blobs):
        self._maybe_fail()
        self.calls.append(("images", len(blobs)))
        vectors, errors = [], {}
        for index, blob in enumerate(blobs):
            try:
                load_rgb_image(blob, max_pixels=10_000_000)
                vectors.append(vector_for(blob))
            except InvalidImageError as exc:
                vectors.append(None)
                errors[index] = str(exc)
        return ImageVectors(vectors, errors)

    def _maybe_fail(self):
        if not self.ready:
            raise ModelNotReadyError("the CLIP model is not loaded yet")
        if self.fail_with is not None:
            raise self.fail_with
