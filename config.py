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


@dataclass(frozen=True)
class Settings:
    """What the app needs to know; each field maps to one environment variable (see `ENV_VARS`)."""

    model: str | None = None  # HF id or local directory; None: reference project, then DEFAULT_MODEL
    reference_project: str | None = None  # legacy: $CLIP_REFERENCE_PROJECT/clip-vit-base-patch32/
    device: str = "auto"
    batch_size: int = 32  # the most items one forward pass takes
    max_request_bytes: int = 32 * 1024 * 1024  # whole HTTP body; larger is a 413
    max_batch_items: int = 256  # texts or images in one /encode-texts or /encode-images call
    max_image_pixels: int = 64_000_000  # width x height; larger is refused before decoding

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", self.device.lower())
        if self.device not in DEVICES:
            raise ValueError(f"DEVICE must be one of {', '.join(DEVICES)}; got {self.device!r}")
        for name in ("batch_size", "max_request_bytes", "max_batch_items", "max_image_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{ENV_VARS[name]} must be a positive integer; got {getattr(self, name)}")

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
    "batch_size": "BATCH_SIZE",
    "max_request_bytes": "CLIP_MAX_REQUEST_BYTES",
    "max_batch_items": "CLIP_MAX_BATCH_ITEMS",
    "max_image_pixels": "CLIP_MAX_IMAGE_PIXELS",
}


def _parse_int(raw: str, var: str) -> int:
    try:
        return int(raw.replace("_", ""))
    except ValueError:
        raise ValueError(f"{var} must be an integer; got {raw!r}") from None
