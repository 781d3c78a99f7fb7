"""Settings: typed, immutable objects built from environment variables, each setting declared once.

A setting is one `setting(...)` line: its environment variable, default, documentation and limits; its
parser follows from the field's type, so an int can only arrive as an int. Nothing here touches the
filesystem or the network, and importing reads no environment: `from_env()` only parses and validates,
so a bad value stops start-up with a message naming the variable.

`Settings` is what the app needs; `ServerSettings` is what gunicorn needs (`deploy/gunicorn.conf.py`).
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, TypeVar

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
SettingsType = TypeVar("SettingsType", bound="EnvSettings")


def setting(env: str, default: Any, doc: str, *, choices: tuple[str, ...] = (), minimum: int | None = None,
            secret: bool = False) -> Any:
    """Declare a setting: environment variable, default, one line of documentation, and what values are allowed."""
    return field(default=default, repr=not secret,
                 metadata={"env": env, "doc": doc, "choices": choices, "minimum": minimum})


class EnvSettings:
    """Building and validating a settings dataclass from its declared fields."""

    @classmethod
    def from_env(cls: type[SettingsType], env: Mapping[str, str] | None = None) -> SettingsType:
        """Build from `env` (default: the process environment); unset or empty means the default."""
        env = os.environ if env is None else env
        types_by_name = typing.get_type_hints(cls)
        values = {}
        for declared in fields(cls):  # type: ignore[arg-type]
            raw = env.get(declared.metadata["env"], "").strip()
            if raw:
                values[declared.name] = parse_value(declared, raw, types_by_name[declared.name])
        return cls(**values)

    def __post_init__(self) -> None:
        for declared in fields(self):  # type: ignore[arg-type]
            _validate(self, declared)


@dataclass(frozen=True)
class Settings(EnvSettings):
    """What the app needs to know. Process settings (bind address, workers, threads) are in `ServerSettings`."""

    # The ops guide's names (DEVICE, BATCH_SIZE, CLIP_REFERENCE_PROJECT) are kept so deployments move over unchanged.
    model: str | None = setting(
        "CLIP_MODEL", None, "Hugging Face id or local directory in Hugging Face format; unset: the legacy "
        f"reference project's model, else {DEFAULT_MODEL}")
    reference_project: str | None = setting(
        "CLIP_REFERENCE_PROJECT", None, "Legacy: with CLIP_MODEL unset, $CLIP_REFERENCE_PROJECT/clip-vit-base-patch32/")
    multilingual_model: str | None = setting(
        "CLIP_MULTILINGUAL_MODEL", None, "A text tower trained into CLIP's image space for Chinese and other "
        "languages: Hugging Face id or local directory (sentence-transformers, M-CLIP or Taiyi-CLIP format)")
    text_routing: str | None = setting(
        "CLIP_TEXT_ROUTING", None, "auto (Han and other non-Latin text to the multilingual model), clip or "
        "multilingual; unset: auto with a multilingual model, else clip", choices=("auto", "clip", "multilingual"))
    device: str = setting("DEVICE", "auto", "auto (CUDA when torch sees a GPU), cpu or cuda",
                          choices=("auto", "cpu", "cuda"))
    backend: str = setting("CLIP_BACKEND", "auto", "auto (ONNX Runtime on CPU, torch on CUDA), onnx or torch",
                           choices=("auto", "onnx", "torch"))
    precision: str = setting("CLIP_PRECISION", "fp32", "fp32; int8 (ONNX Runtime on CPU, dynamic quantization); "
                             "bf16 (torch on a CPU with native bf16); fp16 (torch on CUDA)",
                             choices=("fp32", "int8", "bf16", "fp16"))
    cache_dir: str = setting("CLIP_CACHE_DIR", "~/.cache/clip-vectorize",
                             "Where ONNX exports are cached, keyed by model and library versions")
    image_preprocess: str = setting(
        "CLIP_IMAGE_PREPROCESS", "fast",
        "fast: JPEG draft decode + resize in numpy; exact: transformers' CLIPImageProcessor", choices=("fast", "exact"))
    batch_size: int = setting("BATCH_SIZE", 32, "The most items one forward pass takes", minimum=1)
    batch_wait_ms: int = setting("CLIP_BATCH_WAIT_MS", 2, "How long items queued during a pass wait for others "
                                 "(after an idle moment: not at all)", minimum=0)
    queue_size: int = setting("CLIP_QUEUE_SIZE", 64, "Items that may wait for each tower; beyond: 503 at once",
                              minimum=1)
    text_cache_size: int = setting("CLIP_TEXT_CACHE_SIZE", 10_000, "Text vectors kept (LRU); 0 turns the cache off",
                                   minimum=0)
    inference_threads: int = setting("CLIP_INFERENCE_THREADS", 0, "Threads per forward pass; 0: one per CPU core",
                                     minimum=0)
    max_request_bytes: int = setting("CLIP_MAX_REQUEST_BYTES", 32 * 1024 * 1024, "Largest HTTP body (413 beyond)",
                                     minimum=1)
    max_batch_items: int = setting("CLIP_MAX_BATCH_ITEMS", 256, "Texts or images in one batch call (400 beyond)",
                                   minimum=1)
    max_image_pixels: int = setting("CLIP_MAX_IMAGE_PIXELS", 64_000_000, "Width x height; larger is refused unread",
                                    minimum=1)
    max_text_chars: int = setting("CLIP_MAX_TEXT_CHARS", 10_000, "Longest text in characters (400 beyond)", minimum=1)
    request_timeout_s: int = setting("CLIP_REQUEST_TIMEOUT_S", 30, "How long a request may wait for the model (503)",
                                     minimum=1)
    api_key: str | None = setting("CLIP_SERVICE_API_KEY", None,
                                  "When set, encode endpoints need `Authorization: Bearer <key>`", secret=True)
    cors_origins: tuple[str, ...] = setting("CLIP_CORS_ORIGINS", (), "Browser origins allowed to call; empty: no CORS")
    allow_image_urls: bool = setting("CLIP_ALLOW_IMAGE_URLS", False, "Accept {\"url\": ...} on the image endpoints")
    url_allowed_hosts: tuple[str, ...] = setting("CLIP_URL_ALLOWED_HOSTS", (),
                                                 "Trusted hosts exempt from the public-address check")
    url_max_bytes: int = setting("CLIP_URL_MAX_BYTES", 20 * 1024 * 1024, "Most bytes fetched from one image URL",
                                 minimum=1)
    url_timeout_s: int = setting("CLIP_URL_TIMEOUT_S", 10, "Connect and read timeout for image URLs", minimum=1)
    qdrant_url: str | None = setting("QDRANT_URL", None, "A Qdrant server or cluster (http://host:6333); unset: "
                                     "the embedded store in QDRANT_PATH")
    qdrant_api_key: str | None = setting("QDRANT_API_KEY", None, "API key of the Qdrant server", secret=True)
    qdrant_path: str = setting("QDRANT_PATH", "./qdrant_data", "Folder of the embedded Qdrant store (Qdrant Edge, "
                               "one process at a time), when QDRANT_URL is unset")
    qdrant_collection: str = setting("QDRANT_COLLECTION", "car_images", "The gallery's Qdrant collection")
    qdrant_payload_indexes: tuple[str, ...] = setting(
        "QDRANT_PAYLOAD_INDEXES", ("brand:keyword", "body:keyword", "year:integer"), "Payload fields searches filter "
        "on, indexed when the collection is created: field:type, type one of keyword, integer, float, bool, datetime")
    gallery_dir: str | None = setting(
        "CLIP_GALLERY_DIR", None, "A folder of images the service indexes in the background at start-up (embedded "
        "store) and on POST /gallery/reindex, and serves thumbnails from")
    thumbnail_dir: str = setting("CLIP_THUMBNAIL_DIR", "./thumbnails", "Where thumbnails of CLIP_GALLERY_DIR images "
                                 "are cached (made on first request)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.text_routing is None:
            object.__setattr__(self, "text_routing", "auto" if self.multilingual_model else "clip")
        if self.text_routing != "clip" and not self.multilingual_model:
            raise ValueError(f"CLIP_TEXT_ROUTING={self.text_routing} needs a multilingual model: set "
                             "CLIP_MULTILINGUAL_MODEL, or CLIP_TEXT_ROUTING=clip")
        if self.precision == "int8" and (self.device == "cuda" or self.backend == "torch"):
            raise ValueError("CLIP_PRECISION=int8 runs with ONNX Runtime on CPU; "
                             "set DEVICE=cpu and CLIP_BACKEND=auto or onnx")
        if self.precision == "bf16" and self.backend == "onnx":
            raise ValueError("CLIP_PRECISION=bf16 runs with torch; set CLIP_BACKEND=auto or torch")
        if self.precision == "fp16" and (self.device == "cpu" or self.backend == "onnx"):
            raise ValueError("CLIP_PRECISION=fp16 needs the torch backend on CUDA; CPU and ONNX run fp32")


@dataclass(frozen=True)
class ServerSettings(EnvSettings):
    """What gunicorn needs (`deploy/gunicorn.conf.py`); the app never reads these."""

    host: str = setting("CLIP_SERVICE_HOST", "0.0.0.0", "Address gunicorn binds (IPv6 too)")
    port: int = setting("CLIP_SERVICE_PORT", 5001, "Port gunicorn binds", minimum=1)
    workers: int = setting("CLIP_WORKERS", 1, "gunicorn worker processes, each with its own model", minimum=1)
    threads: int = setting("CLIP_THREADS", 0, "Threads per worker; 0: CLIP_QUEUE_SIZE + BATCH_SIZE + 32", minimum=0)
    timeout: int = setting("CLIP_TIMEOUT", 180, "Seconds a worker may stay silent before gunicorn restarts it; "
                           "0: never", minimum=0)
    log_level: str = setting("CLIP_LOG_LEVEL", "INFO", "Log level",
                             choices=("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "NOTSET"))
    log_format: str = setting("CLIP_LOG_FORMAT", "text", "text, or json: one JSON object per line",
                              choices=("text", "json"))

    @property
    def bind(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def environment_variables(*classes: type[EnvSettings]) -> dict[str, Field]:
    """Environment variable -> its declared field, for documentation and its tests."""
    return {declared.metadata["env"]: declared for cls in classes for declared in fields(cls)}  # type: ignore[arg-type]


# ---------------------------------------------------------------- parsing and validation


def parse_value(declared: Field, raw: str, kind: Any) -> Any:
    """The value of `raw` for a field of type `kind`; a type with no parser is a programming error."""
    parser = _PARSERS.get(_without_none(kind))
    if parser is None:
        raise TypeError(f"setting {declared.name} has type {kind}, which has no parser")
    return parser(raw, declared.metadata["env"])


def _validate(settings: EnvSettings, declared: Field) -> None:
    env, value = declared.metadata["env"], getattr(settings, declared.name)
    choices, minimum = declared.metadata["choices"], declared.metadata["minimum"]
    if choices and value is not None:  # None: unset, the default decided elsewhere
        value = _canonical_choice(value, choices)
        object.__setattr__(settings, declared.name, value)
        if value not in choices:
            raise ValueError(f"{env} must be one of {', '.join(choices)}; got {value!r}")
    if minimum is not None and value < minimum:
        rule = "a positive integer" if minimum == 1 else f"{minimum} or more"
        raise ValueError(f"{env} must be {rule}; got {value}")


def _canonical_choice(value: str, choices: tuple[str, ...]) -> str:
    """Choices match without regard to case and come back spelled as declared."""
    return next((choice for choice in choices if choice.lower() == value.lower()), value)


def _without_none(kind: Any) -> Any:
    """`str | None` parses as `str`: None is only ever the default, never something to write in the environment."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        options = [option for option in typing.get_args(kind) if option is not type(None)]
        return options[0] if len(options) == 1 else kind
    return kind


def _parse_int(raw: str, var: str) -> int:
    try:
        return int(raw.replace("_", ""))
    except ValueError:
        raise ValueError(f"{var} must be an integer; got {raw!r}") from None


def _parse_float(raw: str, var: str) -> float:
    try:
        return float(raw.replace("_", ""))
    except ValueError:
        raise ValueError(f"{var} must be a number; got {raw!r}") from None


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


_PARSERS: dict[Any, Callable[[str, str], Any]] = {
    int: _parse_int, float: _parse_float, bool: _parse_bool, str: _parse_str, tuple[str, ...]: _parse_list,
}
