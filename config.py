"""Service settings: one typed, immutable object built from environment variables.

Nothing here touches the filesystem or the network; `Settings.from_env()` only
parses and validates, so a bad value stops start-up with a message naming the
variable. Process settings (bind address, workers, threads) belong to
gunicorn and live in `deploy/gunicorn.conf.py`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
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
    queue_size: int = 64  # items waiting for each tower; beyond this a request is refused (503) at once
    text_cache_size: int = 10_000  # text vectors kept (LRU); 0 turns the cache off
    inference_threads: int = 0  # threads per forward pass; 0: one per CPU core
    max_request_bytes: int = 32 * 1024 * 1024  # whole HTTP body; larger is a 413
    max_batch_items: int = 256  # texts or images in one /encode-texts or /encode-images call
    max_image_pixels: int = 64_000_000  # width x height; larger is refused before decoding
    max_text_chars: int = 10_000  # longer texts are refused (CLIP reads 77 tokens, a few hundred characters)
    request_timeout_s: int = 30  # how long a request may wait for the model before a 503
    api_key: str | None = field(default=None, repr=False)  # when set, encode endpoints need `Authorization: Bearer <key>`
    cors_origins: tuple[str, ...] = ()  # origins allowed to call from a browser; empty: no CORS headers
    allow_image_urls: bool = False  # accept {"url": ...} on the image endpoints
    url_allowed_hosts: tuple[str, ...] = ()  # trusted hosts exempt from the public-address check
    url_max_bytes: int = 20 * 1024 * 1024  # most bytes fetched from one image URL
    url_timeout_s: int = 10  # connect and read timeout for image URLs

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
        for setting in fields(cls):
            raw = env.get(ENV_VARS[setting.name], "").strip()
            if raw:
                values[setting.name] = _PARSERS.get(setting.type, _parse_str)(raw, ENV_VARS[setting.name])
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
    "max_text_chars": "CLIP_MAX_TEXT_CHARS",
    "request_timeout_s": "CLIP_REQUEST_TIMEOUT_S",
    "api_key": "CLIP_SERVICE_API_KEY",
    "cors_origins": "CLIP_CORS_ORIGINS",
    "allow_image_urls": "CLIP_ALLOW_IMAGE_URLS",
    "url_allowed_hosts": "CLIP_URL_ALLOWED_HOSTS",
    "url_max_bytes": "CLIP_URL_MAX_BYTES",
    "url_timeout_s": "CLIP_URL_TIMEOUT_S",
}

_CHOICES = {"device": DEVICES, "backend": BACKENDS, "precision": PRECISIONS, "image_preprocess": IMAGE_PREPROCESSING}
_POSITIVE = ("batch_size", "queue_size", "max_request_bytes", "max_batch_items", "max_image_pixels", "max_text_chars",
             "request_timeout_s", "url_max_bytes", "url_timeout_s")
_NON_NEGATIVE = ("batch_wait_ms", "text_cache_size", "inference_threads")


def _parse_int(raw: str, var: str) -> int:
    try:
        return int(raw.replace("_", ""))
    except ValueError:
        raise ValueError(f"{var} must be an integer; got {raw!r}") from None


def _parse_bool(raw: str, var: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{var} must be true or false (1/0, yes/no, on/off); got {raw!r}")


def _parse_list(raw: str, var: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _parse_str(raw: str, var: str) -> str:
    return raw


_PARSERS = {"int": _parse_int, "bool": _parse_bool, "tuple[str, ...]": _parse_list}
