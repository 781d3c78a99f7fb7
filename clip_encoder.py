"""ClipEncoder: the one object that turns texts and image bytes into unit-length float32 CLIP vectors.

It loads one CLIP checkpoint and composes the inference area's parts: a text path and an image path over
one backend. Tokenizing and image decoding run in the caller's thread; the forward passes go through one
micro-batcher per tower, so concurrent requests share a pass. No HTTP here: problems are raised as the
typed errors of `clip_vectorize.errors`. Only entry points construct it; library code is handed one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from clip_vectorize.errors import ModelNotReadyError
from clip_vectorize.inference.backends import Backend
from clip_vectorize.inference.batching import BatchLimits
from clip_vectorize.inference.image_path import ImagePath
from clip_vectorize.inference.model_loading import (
    ModelParts,
    build_backend,
    load_model_parts,
    pick_device,
    resolve_model_source,
)
from clip_vectorize.inference.text_cache import LruCache
from clip_vectorize.inference.text_path import TextModel, TextPath
from clip_vectorize.inference.vectors import BatcherGauge, CacheCounts, ImageInput, ImageResult, TextVectors
from config import Settings

logger = logging.getLogger(__name__)

WARM_UP_TEXT = "a photo of a car"


class ClipEncoder:
    """One loaded CLIP model: a text path and an image path over one backend (implements `Encoder`)."""

    def __init__(self, parts: ModelParts, backend: Backend, device: str, settings: Settings) -> None:
        self.model_name = parts.name
        self.device = device
        self.backend = backend
        self.backend_name = backend.name
        self.dimension: int = parts.config.projection_dim
        self.image_preprocess = settings.image_preprocess
        limits = BatchLimits(settings.batch_size, settings.batch_wait_ms / 1000, settings.queue_size)
        self.text = TextPath(_clip_text_model(parts, backend), LruCache(settings.text_cache_size), limits,
                             name="text", timeout_s=settings.request_timeout_s)
        self.image = ImagePath(parts.image_processor, backend.encode_image, limits,
                               preprocess=settings.image_preprocess, max_pixels=settings.max_image_pixels,
                               timeout_s=settings.request_timeout_s)
        self._ready = False

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
            encoder.model_name, device, encoder.backend_name, encoder.dimension, encoder.image_preprocess,
            time.perf_counter() - started,
        )
        return encoder

    @property
    def ready(self) -> bool:
        return self._ready

    def warm_up(self) -> None:
        """One text and one image pass, so no user pays for the first inference; then report ready."""
        self.text.warm_up(WARM_UP_TEXT)
        self.image.warm_up()
        self._ready = True

    def close(self) -> None:
        """Stop taking work, finish what is queued."""
        self._ready = False
        self.text.close()
        self.image.close()

    def encode_texts(self, texts: Sequence[str]) -> TextVectors:
        self._require_ready()
        return self.text.encode(texts)

    def encode_images(self, images: Sequence[ImageInput]) -> list[ImageResult]:
        """A vector per image in input order; one that can't be decoded gets its InvalidImageError instead."""
        self._require_ready()
        return self.image.encode(images)

    def batchers(self) -> Mapping[str, BatcherGauge]:
        return {"text": self.text.batcher, "image": self.image.batcher}

    def text_cache_counts(self) -> CacheCounts:
        return CacheCounts(self.text.cache.hits, self.text.cache.misses)

    def _require_ready(self) -> None:
        if not self._ready:
            raise ModelNotReadyError("the CLIP model is not loaded yet")


def _clip_text_model(parts: ModelParts, backend: Backend) -> TextModel:
    """CLIP's text tower as the text path sees it: pads with its pad token (else its end token), 77 positions."""
    tokenizer = parts.tokenizer
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return TextModel(tokenizer=tokenizer, encode=backend.encode_text, dimension=parts.config.projection_dim,
                     context_length=parts.config.text_config.max_position_embeddings, pad_token_id=pad_token_id)
