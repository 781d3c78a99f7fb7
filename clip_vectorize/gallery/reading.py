"""Reading one image for indexing: its bytes, their hash and the file's stat, or why it could not be read; then the
twin rule says whether a point already holds the same content (nothing to encode)."""

from __future__ import annotations

import hashlib
from typing import Protocol

from clip_vectorize.errors import (
    EmptyImageError,
    ImageTooLargeError,
    InvalidImageError,
    UrlFetchError,
    UrlRefusedError,
)
from clip_vectorize.gallery.outcome import ImageOutcome
from clip_vectorize.gallery.payload import FileStat
from clip_vectorize.gallery.sources import Item
from clip_vectorize.url_fetch import UrlPolicy, fetch_image_bytes

HASH_BYTES = 16  # 128 bits of BLAKE2b: a content identity, not a security boundary


class Claims(Protocol):
    """The twin rule (plan.TwinClaims, or the Ray engine's actor of it)."""

    def claim(self, content: str, point_id: int | str) -> int | str | None: ...


def read_image(item: Item, url_policy: UrlPolicy) -> tuple[ImageOutcome, bytes | None]:
    """The item's bytes and an outcome holding their hash, or a skipped outcome (a file gone, a URL refused or
    unreachable). A file's size and mtime are taken first, so a file rewritten meanwhile looks changed next run."""
    outcome = ImageOutcome(item, file_stat=FileStat.of(item.path))
    try:
        blob = item.path.read_bytes() if item.path is not None else fetch_image_bytes(item.url or "", url_policy)
    except OSError as exc:
        return outcome.refused("unreadable file", exc.strerror or str(exc)), None
    except InvalidImageError as exc:
        return refusal(outcome, exc), None
    return ImageOutcome(item, content_hash_of(blob), outcome.file_stat), blob


def read_unless_twin(item: Item, url_policy: UrlPolicy, claims: Claims) -> tuple[ImageOutcome, bytes | None]:
    """`read_image`, and the bytes only when they need encoding: not for a skipped image, nor for a twin."""
    outcome, blob = read_image(item, url_policy)
    if outcome.skipped is not None or outcome.content_hash is None:
        return outcome, None
    twin = claims.claim(outcome.content_hash, item.point_id)
    if twin is not None:
        return ImageOutcome(item, outcome.content_hash, outcome.file_stat, twin=twin), None
    return outcome, blob


def content_hash_of(blob: bytes) -> str:
    return hashlib.blake2b(blob, digest_size=HASH_BYTES).hexdigest()


def refusal(outcome: ImageOutcome, exc: InvalidImageError) -> ImageOutcome:
    return outcome.refused(skip_reason(exc), str(exc))


def skip_reason(exc: InvalidImageError) -> str:
    """A few words that group refusals in the summary; the message itself goes in the skipped list."""
    if isinstance(exc, UrlRefusedError):
        return "URL refused"
    if isinstance(exc, UrlFetchError):
        return "URL unreachable"
    if isinstance(exc, EmptyImageError):
        return "empty file"
    if isinstance(exc, ImageTooLargeError):
        return "too many pixels"
    return "not a readable image"
