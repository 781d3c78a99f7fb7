"""Texts and image bytes in, unit-length float32 CLIP vectors out.

Tokenizing and image decoding run in the caller's thread; the forward passes go through one
micro-batcher per tower, so concurrent requests share a pass. No HTTP here: problems are raised as
the typed errors of `errors.py`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from clip_vectorize.inference.backends import Backend
from clip_vectorize.inference.batching import MicroBatcher
from config import Settings
from clip_vectorize.errors import InvalidImageError, ModelNotReadyError
from clip_vectorize.inference.image_io import load_rgb_image
from clip_vectorize.inference.image_preprocess import ClipImageTransform
from clip_vectorize.inference.model_loading import ModelParts, build_backend, load_model_parts, pick_device, resolve_model_source
from clip_vectorize.inference.text_cache import LruCache

logger = logging.getLogger(__name__)

# A forward pass costs about as much as 8 more tokens of padding per batch (ViT-B/32 text tower, ONNX Runtime,
# 2 cores: ~3.4 ms fixed per pass, ~0.43 ms per token row), so texts share a pass while padding costs less.
PASS_COST_TOKENS = 8
TextEntry = tuple[np.ndarray, bool]  # a text's vector, and whether the text was truncated


@dataclass(frozen=True)
class TextVectors:
    vectors: np.ndarray  # (n, dimension) float32, unit length
    truncated: list[bool]  # True where the text was longer than the model's context and was cut


@dataclass(frozen=True)
class ImageVectors:
    vectors: list[np.ndarray | None]  # input order; None where the image could not be decoded
    errors: dict[int, str]  # input index -> why that image was refused


class ClipEncoder:
    """One loaded CLIP model behind two micro-batchers (text and image) and a text-vector cache."""

    def __init__(self, parts: ModelParts, backend: Backend, device: str, settings: Settings) -> None:
        self.model_name = parts.name
        self.backend = backend
        self.device = device
        self.tokenizer = parts.tokenizer
        self.image_processor = parts.image_processor
        self.dimension: int = parts.config.projection_dim
        self.context_length: int = parts.config.text_config.max_position_embeddings
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.max_image_pixels = settings.max_image_pixels
        self.image_preprocess = settings.image_preprocess
        self._transform, self._draft_size = _image_preparation(settings.image_preprocess, parts.image_processor)
        self.text_cache: LruCache[TextEntry] = LruCache(settings.text_cache_size)
        self.request_timeout_s = settings.request_timeout_s
        limits = {"max_batch": settings.batch_size, "max_wait": settings.batch_wait_ms / 1000, "max_queue": settings.queue_size}
        self.text_batcher = MicroBatcher(self._encode_token_batch, name="text", **limits)
        self.image_batcher = MicroBatcher(self._encode_pixel_batch, name="image", **limits)
        self.ready = False

    @classmethod
    def load(cls, settings: Settings) -> ClipEncoder:
        """Load, place on the device, warm up, and log one line saying what happened."""
        started = time.perf_counter()
        device = pick_device(settings.device)
        parts = load_model_parts(resolve_model_source(settings))
        encoder = cls(parts, build_backend(settings, parts, device), device, settings)
        encoder.warm_up()
        logger.info(
            "CLIP model %s loaded on %s (backend %s, dimension %d, image preprocessing %s) in %.1f s",
            encoder.model_name, device, encoder.backend.name, encoder.dimension, encoder.image_preprocess,
            time.perf_counter() - started,
        )
        return encoder

    def warm_up(self) -> None:
        """One text and one image pass, so no user pays for the first inference; then report ready."""
        self.text_batcher.run(self.tokenize(["a photo of a car"])[0])
        self.image_batcher.run([self._transform(Image.new("RGB", (256, 256), "gray"))])
        self.ready = True

    def close(self) -> None:
        """Stop taking work, finish what is queued."""
        self.ready = False
        self.text_batcher.close()
        self.image_batcher.close()

    def encode_texts(self, texts: Sequence[str]) -> TextVectors:
        self._require_ready()
        entries: list[TextEntry | None] = [self.text_cache.get(text) for text in texts]
        missing = list(dict.fromkeys(text for text, entry in zip(texts, entries) if entry is None))
        if missing:
            token_lists, truncated = self.tokenize(missing)
            fresh = dict(zip(missing, zip(self.text_batcher.run(token_lists, self.request_timeout_s), truncated)))
            for text, entry in fresh.items():
                self.text_cache.put(text, entry)
            entries = [entry or fresh[text] for text, entry in zip(texts, entries)]
        if not entries:
            return TextVectors(np.zeros((0, self.dimension), np.float32), [])
        return TextVectors(np.stack([vector for vector, _ in entries]), [cut for _, cut in entries])

    def encode_images(self, blobs: Sequence[bytes]) -> ImageVectors:
        """Encode each image; one that can't be decoded gets None and an error, the others still get vectors."""
        self._require_ready()
        pixels: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        for index, blob in enumerate(blobs):
            try:
                pixels[index] = self.prepare_image(blob)
            except InvalidImageError as exc:
                errors[index] = str(exc)
        vectors: list[np.ndarray | None] = [None] * len(blobs)
        for index, vector in zip(pixels, self.image_batcher.run(list(pixels.values()), self.request_timeout_s)):
            vectors[index] = vector
        return ImageVectors(vectors, errors)

    def prepare_image(self, blob: bytes) -> np.ndarray:
        """Decode and preprocess one image into the model's (3, H, W) float32 input."""
        return self._transform(load_rgb_image(blob, self.max_image_pixels, self._draft_size))

    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids per text; past the context length, cut but keep the end token CLIP pools on."""
        token_lists = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        truncated = [len(tokens) > self.context_length for tokens in token_lists]
        cut = [tokens[: self.context_length - 1] + tokens[-1:] if long else tokens for tokens, long in zip(token_lists, truncated)]
        return cut, truncated

    def _require_ready(self) -> None:
        if not self.ready:
            raise ModelNotReadyError("the CLIP model is not loaded yet")

    def _encode_token_batch(self, token_lists: list[list[int]]) -> np.ndarray:
        """One pass per group of similar-length texts: padding a 10-token query to 36 costs more than a pass."""
        vectors = np.empty((len(token_lists), self.dimension), np.float32)
        for indices in group_by_length([len(tokens) for tokens in token_lists]):
            vectors[indices] = self.backend.encode_text(*self._padded([token_lists[index] for index in indices]))
        return vectors

    def _padded(self, token_lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Ids padded to the longest list, and the attention mask that keeps padding out of every vector."""
        width = max(len(tokens) for tokens in token_lists)
        input_ids = np.full((len(token_lists), width), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(token_lists), width), dtype=np.int64)
        for row, tokens in enumerate(token_lists):
            input_ids[row, : len(tokens)] = tokens
            attention_mask[row, : len(tokens)] = 1
        return input_ids, attention_mask

    def _encode_pixel_batch(self, pixels: list[np.ndarray]) -> np.ndarray:
        return self.backend.encode_image(np.stack(pixels))


def group_by_length(lengths: Sequence[int], pass_cost: int = PASS_COST_TOKENS) -> list[list[int]]:
    """Indices grouped so that each group's padding costs less than the extra forward pass it saves."""
    groups: list[list[int]] = []
    width = 0
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        if groups and (lengths[index] - width) * len(groups[-1]) <= pass_cost:
            groups[-1].append(index)
        else:
            groups.append([index])
        width = lengths[index]
    return groups


def _image_preparation(mode: str, processor) -> tuple[Callable[[Image.Image], np.ndarray], int | None]:
    """fast: JPEG draft decode + our resize/crop/normalize; exact: full decode + transformers' own processor."""
    if mode == "fast":
        transform = ClipImageTransform.from_processor(processor)
        return transform, transform.draft_size
    return lambda image: processor(images=[image], return_tensors="np")["pixel_values"][0].astype(np.float32), None
