"""One image model's path from bytes to vectors: decode -> preprocess (caller's thread) -> batched passes.

Decoding and preprocessing run in the caller's thread, so many requests decode in parallel while one
micro-batcher feeds the model. A refused input stays a refusal, in its place, and never fails the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from clip_vectorize.errors import InvalidImageError
from clip_vectorize.inference.batching import BatchLimits, MicroBatcher
from clip_vectorize.inference.image_io import load_rgb_image
from clip_vectorize.inference.image_preprocess import ClipImageTransform
from clip_vectorize.inference.vectors import ImageInput, ImageResult

ImageEncodeFunction = Callable[[np.ndarray], np.ndarray]  # (batch, 3, H, W) pixel values -> unit vectors
PixelTransform = Callable[[Image.Image], np.ndarray]  # an RGB image -> (3, H, W) float32


class ImagePreparer:
    """Untrusted bytes -> the model's (3, H, W) float32 input: decode behind the size guard, then preprocess.
    Needs the model's preprocessor config, not its weights, so it also runs apart from the model."""

    def __init__(self, processor, preprocess: str, max_pixels: int) -> None:
        self.transform, self.draft_size = image_preparation(preprocess, processor)
        self.max_pixels = max_pixels

    def __call__(self, blob: bytes) -> np.ndarray:
        return self.transform(load_rgb_image(blob, self.max_pixels, self.draft_size))


class ImagePath:
    def __init__(self, prepare: ImagePreparer, encode: ImageEncodeFunction, limits: BatchLimits, *,
                 timeout_s: float, name: str = "image") -> None:
        self.prepare = prepare
        self.max_pixels = prepare.max_pixels
        self.timeout_s = timeout_s
        self._encode = encode
        self.batcher: MicroBatcher[np.ndarray, np.ndarray] = MicroBatcher(self._encode_pixel_batch, limits, name=name)

    def encode(self, images: Sequence[ImageInput]) -> list[ImageResult]:
        """A vector per input in input order, or the InvalidImageError that refused it."""
        outcomes = [self._prepared_or_refusal(item) for item in images]  # model inputs, or refusals
        readable = [pixels for pixels in outcomes if isinstance(pixels, np.ndarray)]
        vectors = iter(self.encode_prepared(readable))
        return [next(vectors) if isinstance(outcome, np.ndarray) else outcome for outcome in outcomes]

    def encode_prepared(self, pixels: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Vectors for inputs already decoded and preprocessed elsewhere (by an ImagePreparer)."""
        return self.batcher.run(list(pixels), self.timeout_s)

    def warm_up(self) -> None:
        self.batcher.run([self.prepare.transform(Image.new("RGB", (256, 256), "gray"))])

    def close(self) -> None:
        self.batcher.close()

    def _prepared_or_refusal(self, item: ImageInput) -> ImageResult:
        if isinstance(item, InvalidImageError):
            return item
        try:
            return self.prepare(item)
        except InvalidImageError as exc:
            return exc

    def _encode_pixel_batch(self, pixels: list[np.ndarray]) -> np.ndarray:
        return self._encode(np.stack(pixels))


def image_preparation(mode: str, processor) -> tuple[PixelTransform, int | None]:
    """fast: JPEG draft decode + our resize/crop/normalize; exact: full decode + transformers' own processor."""
    if mode == "fast":
        transform = ClipImageTransform.from_processor(processor)
        return transform, transform.draft_size
    return lambda image: processor(images=[image], return_tensors="np")["pixel_values"][0].astype(np.float32), None
