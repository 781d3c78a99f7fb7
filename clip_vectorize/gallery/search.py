"""Searching the gallery's collection: the images nearest a vector or an indexed image, narrowed by a Qdrant filter.

No threshold by default: CLIP's text-to-image cosine scores of good matches are often 0.2-0.3, so a fixed cut-off
hides results; callers that want one pass `score_threshold`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from clip_vectorize.gallery.errors import PointNotFoundError
from clip_vectorize.gallery.sources import MAX_POINT_ID
from clip_vectorize.gallery.store.base import GalleryStore, Hit, IndexedPoint, PointId, SearchQuery, Vector


def parse_point_id(raw: object) -> PointId | None:
    """A point id as Qdrant takes it: an unsigned 64-bit integer or a UUID (in any of its spellings); else None."""
    if isinstance(raw, str) and raw.isascii() and raw.isdigit():
        raw = int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw if 0 <= raw <= MAX_POINT_ID else None
    if isinstance(raw, str):
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            return None
    return None


class GallerySearch:
    """Queries against one store; `on_query` hears how long each of Qdrant's own queries took (for metrics)."""

    def __init__(self, store: GalleryStore, on_query: Callable[[float], None] = lambda seconds: None) -> None:
        self.store = store
        self.on_query = on_query

    def near_vector(self, vector: Vector, query: SearchQuery) -> list[Hit]:
        return self._nearest(vector, query)

    def near_point(self, point_id: PointId, query: SearchQuery) -> list[Hit]:
        """More like an indexed image; the image itself is left out of its own results."""
        self.store.require_collection()
        vector = self.store.vectors([point_id]).get(point_id)
        if vector is None:
            raise self._not_found(point_id)
        return self._nearest(vector, query, exclude=point_id)

    def require_point(self, point_id: PointId) -> IndexedPoint:
        point = self.store.point(point_id)
        if point is None:
            raise self._not_found(point_id)
        return point

    def _not_found(self, point_id: PointId) -> PointNotFoundError:
        return PointNotFoundError(f"no point {point_id} in the collection '{self.store.config.collection}'")

    def _nearest(self, vector: Vector, query: SearchQuery, exclude: PointId | None = None) -> list[Hit]:
        began = time.perf_counter()
        hits = self.store.nearest(vector, query, exclude)
        self.on_query(time.perf_counter() - began)
        return hits
