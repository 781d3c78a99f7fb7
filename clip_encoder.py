"""ClipEncoder: the one object that turns texts and image bytes into unit-length float32 CLIP vectors.

It loads one CLIP checkpoint and, optionally, a multilingual text tower trained into the same image space,
and composes the inference area's parts: one text path per text model and an image path, each over its
backend. Tokenizing and image decoding run in the caller's thread; the forward passes go through one
micro-batcher per tower, so concurrent requests share a pass. No HTTP here: problems are raised as the
typed errors of `clip_vectorize.errors`. Only entry points construct it; library code is handed one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clip_vectorize.errors import ModelLoadError, ModelNotReadyError, UnknownEncoderError
from clip_vectorize.inference.backends import Backend, TextBackend
from clip_vectorize.inference.batching import BatchLimits
from clip_vectorize.inference.image_path import ImagePath, ImagePreparer
from clip_vectorize.inference.model_loading import (
    ModelParts,
    build_backend,
    clip_source,
    load_model_parts,
    pick_device,
)
from clip_vectorize.inference.multilingual import MultilingualParts, load_multilingual_parts, multilingual_source
from clip_vectorize.inference.routing import CLIP, MULTILINGUAL, route
from clip_vectorize.inference.text_cache import LruCache
from clip_vectorize.inference.text_path import TextModel, TextPath
from clip_vectorize.inference.vectors import (
    BatcherGauge,
    CacheCounts,
    ImageInput,
    ImageResult,
    TextEncoderInfo,
    TextVectors,
)
from config import Settings

logger = logging.getLogger(__name__)

WARM_UP_TEXTS = {CLIP: "a photo of a car", MULTILINGUAL: "一辆红色的汽车"}


@dataclass(frozen=True)
class LoadedMultilingual:
    """A multilingual text model and the runtime that runs it, before the encoder wraps it in a text path."""

    parts: MultilingualParts
    backend: TextBackend


class ClipEncoder:
    """CLIP's text and image towers, plus an optional multilingual text tower (implements `Encoder`)."""

    def __init__(self, parts: ModelParts, backend: Backend, device: str, settings: Settings,
                 multilingual: LoadedMultilingual | None = None) -> None:
        self.model_name = parts.name
        self.device = device
        self.backend = backend
        self.backend_name = backend.name
        self.dimension: int = parts.config.projection_dim
        self.image_preprocess = settings.image_preprocess
        self.precision = settings.precision
        self.text_routing = settings.text_routing or CLIP
        limits = BatchLimits(settings.batch_size, settings.batch_wait_ms / 1000, settings.queue_size)
        self.texts: dict[str, TextPath] = {}
        self._infos: list[TextEncoderInfo] = []
        context_length = parts.config.text_config.max_position_embeddings  # 77 positions for ViT-B/32
        self._add_text(_text_model(parts.tokenizer, backend, self.dimension, context_length), settings, limits,
                       TextEncoderInfo(CLIP, parts.name, backend.name, context_length, "clip", "en"))
        if multilingual is not None:
            ml = multilingual.parts
            self._add_text(_text_model(ml.tokenizer, multilingual.backend, ml.dimension, ml.context_length),
                           settings, limits, TextEncoderInfo(MULTILINGUAL, ml.name, multilingual.backend.name,
                                                             ml.context_length, ml.format, ml.languages))
        self.image = ImagePath(image_preparer_for(parts, settings), backend.encode_image, limits,
                               timeout_s=settings.request_timeout_s)
        self._ready = False

    @classmethod
    def load(cls, settings: Settings) -> ClipEncoder:
        """Load, place on the device, warm up, and log one line per model saying what happened."""
        started = time.perf_counter()
        device = pick_device(settings.device)
        parts = load_model_parts(clip_source(settings))
        backend = build_backend(settings, parts, device)
        multilingual = _load_multilingual(settings, device, parts.config.projection_dim)
        encoder = cls(parts, backend, device, settings, multilingual)
        encoder.warm_up()
        logger.info(
            "CLIP model %s loaded on %s (backend %s, %s, dimension %d, image preprocessing %s) in %.1f s",
            encoder.model_name, device, encoder.backend_name, encoder.precision, encoder.dimension,
            encoder.image_preprocess, time.perf_counter() - started,
        )
        if multilingual is not None:
            logger.info("multilingual text model %s (%s, %s) loaded: backend %s, %d tokens; text routing %s",
                        multilingual.parts.name, multilingual.parts.format, multilingual.parts.languages,
                        multilingual.backend.name, multilingual.parts.context_length, encoder.text_routing)
        return encoder

    @property
    def text(self) -> TextPath:
        """CLIP's own text path."""
        return self.texts[CLIP]

    @property
    def ready(self) -> bool:
        return self._ready

    def warm_up(self) -> None:
        """One pass per tower, so no user pays for the first inference; then report ready."""
        for name, path in self.texts.items():
            path.warm_up(WARM_UP_TEXTS[name])
        self.image.warm_up()
        self._ready = True

    def close(self) -> None:
        """Stop taking work, finish what is queued."""
        self._ready = False
        for path in self.texts.values():
            path.close()
        self.image.close()

    def encode_texts(self, texts: Sequence[str], encoder: str | None = None) -> TextVectors:
        """Vectors in input order; each text goes to the encoder the caller named, else to the routing's choice."""
        self._require_ready()
        chosen = [self._encoder_for(text, encoder) for text in texts]
        groups = {name: [index for index, pick in enumerate(chosen) if pick == name] for name in dict.fromkeys(chosen)}
        deadline = time.monotonic() + self.text.timeout_s  # one for the whole request, however many encoders
        results = {name: self.texts[name].encode([texts[index] for index in indices], deadline)
                   for name, indices in groups.items()}
        return _in_input_order(len(texts), self.dimension, groups, results)

    def encode_images(self, images: Sequence[ImageInput]) -> list[ImageResult]:
        """A vector per image in input order; one that can't be decoded gets its InvalidImageError instead."""
        self._require_ready()
        return self.image.encode(images)

    def encode_image_pixels(self, pixels: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Vectors for images decoded and preprocessed elsewhere by `image_preparer` (Ray's reading tasks)."""
        self._require_ready()
        return self.image.encode_prepared(pixels)

    def text_encoders(self) -> list[TextEncoderInfo]:
        return list(self._infos)

    def batchers(self) -> Mapping[tuple[str, str], BatcherGauge]:
        text_batchers = {(name, "text"): path.batcher for name, path in self.texts.items()}
        return {**text_batchers, (CLIP, "image"): self.image.batcher}

    def text_cache_counts(self) -> Mapping[str, CacheCounts]:
        return {name: CacheCounts(path.cache.hits, path.cache.misses) for name, path in self.texts.items()}

    def _add_text(self, model: TextModel, settings: Settings, limits: BatchLimits, info: TextEncoderInfo) -> None:
        """One more text encoder: the same text path, its own cache and batcher, described by `info`."""
        self.texts[info.name] = TextPath(model, LruCache(settings.text_cache_size), limits, name=info.name,
                                         timeout_s=settings.request_timeout_s)
        self._infos.append(info)

    def _encoder_for(self, text: str, requested: str | None) -> str:
        if requested is not None:
            if requested not in self.texts:
                raise UnknownEncoderError(
                    f"encoder {requested!r} is not loaded; loaded: {', '.join(self.texts)}"
                    + ("" if MULTILINGUAL in self.texts else " (set CLIP_MULTILINGUAL_MODEL to load 'multilingual')"))
            return requested
        if MULTILINGUAL not in self.texts:
            return CLIP
        chinese_only = any(info.name == MULTILINGUAL and info.languages == "zh" for info in self._infos)
        return route(text, self.text_routing, chinese_only)

    def _require_ready(self) -> None:
        if not self._ready:
            raise ModelNotReadyError("the CLIP model is not loaded yet")


def image_preparer(settings: Settings) -> ImagePreparer:
    """The image path's decoding and preprocessing alone, from the model's configs (no weights loaded): what
    the encoder does to an image before its model sees it, for work spread over other processes."""
    return image_preparer_for(load_model_parts(clip_source(settings)), settings)


def image_preparer_for(parts: ModelParts, settings: Settings) -> ImagePreparer:
    return ImagePreparer(parts.image_processor, settings.image_preprocess, settings.max_image_pixels)


def _load_multilingual(settings: Settings, device: str, dimension: int) -> LoadedMultilingual | None:
    """The multilingual text model when CLIP_MULTILINGUAL_MODEL is set; its vectors must be CLIP's size."""
    if not settings.multilingual_model:
        return None
    parts = load_multilingual_parts(multilingual_source(settings.multilingual_model))
    if parts.dimension != dimension:
        raise ModelLoadError(
            f"CLIP_MULTILINGUAL_MODEL={parts.name!r} makes {parts.dimension}-d vectors but the CLIP model's are "
            f"{dimension}-d: they are not in the same space. Fix: use a multilingual model trained against this CLIP "
            "model (for openai/clip-vit-base-patch32: 512-d), or unset CLIP_MULTILINGUAL_MODEL.")
    return LoadedMultilingual(parts, build_backend(settings, parts, device))


def _text_model(tokenizer: Any, backend: TextBackend, dimension: int, context_length: int) -> TextModel:
    """A text tower as the text path sees it. Padding is masked out, so any id will do: the pad token, else the
    end token (CLIP's tokenizer may have no pad token); a tokenizer with neither cannot batch at all."""
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_token_id is None:
        raise ModelLoadError(f"the tokenizer of {type(tokenizer).__name__} has neither a pad nor an end token")
    return TextModel(tokenizer=tokenizer, encode=backend.encode_text, dimension=dimension,
                     context_length=context_length, pad_token_id=pad_token_id)


def _in_input_order(count: int, dimension: int, groups: Mapping[str, list[int]],
                    results: Mapping[str, TextVectors]) -> TextVectors:
    """One TextVectors from each encoder's share: `groups[name]` are the input positions `results[name]` holds."""
    vectors = np.zeros((count, dimension), np.float32)
    truncated, encoders, tokens = [False] * count, [CLIP] * count, [0] * count
    for name, indices in groups.items():
        share = results[name]
        vectors[indices] = share.vectors
        for position, index in enumerate(indices):
            truncated[index], encoders[index], tokens[index] = (share.truncated[position], share.encoders[position],
                                                                share.token_counts[position])
    return TextVectors(vectors, truncated, encoders, tokens)
