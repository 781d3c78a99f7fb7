"""What an encoder promises the rest of the service: the `Encoder` protocol and the shapes of its results.

The web area depends on these types alone, never on a concrete encoder, so a fake (tests) or a second
encoder fits without editing the views, health or metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from clip_vectorize.errors import InvalidImageError

ImageInput = bytes | InvalidImageError  # an image's bytes, or why the caller's input could not be read as bytes
ImageResult = np.ndarray | InvalidImageError  # a unit vector, or why that image was refused


@dataclass(frozen=True)
class TextVectors:
    vectors: np.ndarray  # (n, dimension) float32, unit length
    truncated: list[bool]  # True where the text was longer than the model's context and was cut
    encoders: list[str]  # which text encoder made each vector: "clip" or "multilingual"
    token_counts: list[int]  # tokens each text was read as (before truncation), for usage reports


@dataclass(frozen=True)
class TextEncoderInfo:
    """What /health and /v1/models say about one loaded text encoder."""

    name: str  # "clip" or "multilingual"
    model: str  # the Hugging Face id or directory it was loaded from
    backend: str  # "onnx" or "torch"
    max_tokens: int  # the context it reads; longer texts are truncated and reported so
    format: str  # "clip", "sentence-transformers", "m-clip" or "bert-sequence-classification"
    languages: str  # "en" (CLIP's own tower), "multilingual", or "zh"


class BatcherGauge(Protocol):
    """What metrics read of a micro-batcher: how many items wait, and a hook told the size of every pass."""

    on_batch: Callable[[int], None] | None

    @property
    def depth(self) -> int: ...


@dataclass(frozen=True)
class CacheCounts:
    hits: int
    misses: int


class Encoder(Protocol):
    """Texts and images in, unit-length float32 vectors out, plus what /health and /metrics report."""

    model_name: str  # the CLIP model: it names the vector space every encoder here writes into
    device: str
    backend_name: str
    precision: str  # "fp32", "int8" or "fp16": vectors of another precision differ slightly from stored fp32 ones
    dimension: int
    text_routing: str  # "auto", "clip" or "multilingual": who reads a text when the caller does not say

    @property
    def ready(self) -> bool: ...

    def encode_texts(self, texts: Sequence[str], encoder: str | None = None) -> TextVectors:
        """Vectors in input order. `encoder` ("clip" or "multilingual") overrides the routing for every text;
        one that is not loaded raises UnknownEncoderError."""
        ...

    def text_encoders(self) -> list[TextEncoderInfo]: ...

    def encode_images(self, images: Sequence[ImageInput]) -> list[ImageResult]:
        """One result per input, in order; a refused input stays refused and never fails the others."""
        ...

    def batchers(self) -> Mapping[tuple[str, str], BatcherGauge]:
        """Each micro-batcher by the (encoder, tower) metrics label it with: ("clip", "image"), ..."""
        ...

    def text_cache_counts(self) -> Mapping[str, CacheCounts]:
        """Text-cache hits and misses by encoder."""
        ...
