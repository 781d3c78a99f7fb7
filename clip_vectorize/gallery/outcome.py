"""One typed result per image, made by either engine and consumed by the point writer."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from clip_vectorize.gallery.payload import FileStat
from clip_vectorize.gallery.sources import Item, Skipped
from clip_vectorize.gallery.store.base import PointId


@dataclass(frozen=True)
class ImageOutcome:
    """What became of one image: exactly one of a vector (encoded now), a twin (a point holding the identical
    content, whose vector is copied) or a Skipped (why it could not be indexed). `content_hash` and `file_stat`
    describe the bytes read, the stat taken before reading."""

    item: Item
    content_hash: str | None = None
    file_stat: FileStat = FileStat()
    vector: np.ndarray | None = None
    twin: PointId | None = None
    skipped: Skipped | None = None

    def encoded(self, vector: np.ndarray) -> ImageOutcome:
        return replace(self, vector=np.asarray(vector, np.float32))

    def refused(self, reason: str, detail: str) -> ImageOutcome:
        return replace(self, skipped=Skipped(self.item.location, reason, detail))

    @property
    def remembered_as_bad(self) -> bool:
        """A file the decoder refused (not a missing file, nor a URL): it is not read again until it changes."""
        return self.skipped is not None and self.item.path is not None and self.file_stat.size is not None \
            and self.skipped.reason in BAD_FILE_REASONS


BAD_FILE_REASONS = frozenset({"empty file", "not a readable image", "too many pixels"})
