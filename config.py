"""Service settings: one typed, immutable object built from environment variables.

Nothing here touches the filesystem or the network; `Settings.from_env()` only
parses and validates, so a bad value stops start-up with a message naming the
variable. Process settings (bind address, workers, threads) belong to
gunicorn and live in `deploy/gunicorn.conf.py`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "onnx", "torch")
PRECISIONS = ("fp32", "fp16")
IMAGE_PREPROCESSING = ("fast", "exact")


@dataclass(frozen=True)
class Settings:
    """What the app needs to know; each field maps to one environment variable (see `ENV_VARS`)."""

    model: str | None = None  # HF id or local directory; None: reference project, then DEFAULT_MODEL
    reference_project: str | None = None  # legacy: $CLIP_REFERENCE_PROJECT/clip-vit-base-patch32/
    device: str = "auto"
    backend: str = "auto"  # auto: ONNX Runtime on CPU, torch on CUDA
    precision: str = "fp32"  # fp16 only with torch on CUDA
    cache_dir: str = "~/.cache/clip-vectorize"  # exported ONNX models live here, keyed by model and versions
    image_preprocess: str = "fast"  # fast: JPEG draft decode + resize; exact: transformers' CLIPImageProcessor
    batch_size: int = 32  # the most items one forward pass takes
    batch_wait_ms: int = 2  # how long the first item of a batch waits for others to join it
    queue_size: int = 1024  # items waiting for the model; beyond this a request is refused (503) at once
    text_cache_size: int = 10_000  # text vectors kept (LRU); 0 turns the cache off
    inference_threads: int = 0  # threads per forward pass; 0: one per CPU core
    max_request_bytes: int = 32 * 1024 * 1024  # whole HTTP body; larger is a 413
    max_batch_items: int = 256  # texts or images in one /encode-texts or /encode-images call
    max_image_pixels: int = 64_000_000  # width x height; larger is refused before decoding

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            value = getattr(self, name).lower()
            object.__setattr__(self, name, value)
            if value not in allowed:
                raise ValueError(f"{ENV_VARS[name]} must be one of {', '.join(allowed)}; got {value!r}")
        for name in _POSITIVE:
            if getattr(self, name) < 1:
                raise ValueError(f"{ENV_VARS[name]} must be a positive integer; got {getattr(self, name)}")
        for name in _NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise ValueError(f"{ENV_VARS[name]} must be 0 or more; got {getattr(self, name)}")
        if self.precision == "fp16" and (self.device == "cpu" or self.backend == "onnx"):
            raise ValueError("CLIP_PRECISION=fp16 needs the torch backend on CUDA; CPU and ONNX run fp32")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default: the process environment); unset or empty means default."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = env.get(ENV_VARS[field.name], "").strip()
            if raw:
                values[field.name] = _parse_int(raw, ENV_VARS[field.name]) if field.type == "int" else raw
        return cls(**values)


# Field name -> environment variable. The ops guide's names (DEVICE, BATCH_SIZE,
# CLIP_REFERENCE_PROJECT) are kept so existing deployments move over unchanged.
ENV_VARS = {
    "model": "CLIP_MODEL",
    "reference_project": "CLIP_REFERENCE_PROJECT",
    "device": "DEVICE",
    "backend": "CLIP_BACKEND",
    "precision": "CLIP_PRECISION",
    "cache_dir": "CLIP_CACHE_DIR",
    "image_preprocess": "CLIP_IMAGE_PREPROCESS",
    "batch_size": "BATCH_SIZE",
    "batch_wait_ms": "CLIP_BATCH_WAIT_MS",
    "queue_size": "CLIP_QUEUE_SIZE",
    "text_cache_size": "CLIP_TEXT_CACHE_SIZE",
    "inference_threads": "CLIP_INFERENCE_THREADS",
    "max_request_bytes": "CLIP_MAX_REQUEST_BYTES",
    "max_batch_items": "CLIP_MAX_BATCH_ITEMS",
    "max_image_pixels": "CLIP_MAX_IMAGE_PIXELS",
}

_CHOICES = {"device": DEVICES, "backend": BACKENDS, "precision": PRECISIONS, "image_preprocess": IMAGE_PREPROCESSING}
_POSITIVE = ("batch_size", "queue_size", "max_request_bytes", "max_batch_items", "max_image_pixels")
_NON_NEGATIVE = ("batch_wait_ms", "text_cache_size", "inference_threads")


def _parse_int(raw: str, var: str) -> int:
    try:
        return int(raw.replace("_", ""))
    except ValueError:
        raise ValueError(f"{var} must be an integer; got {raw!r}") from None
