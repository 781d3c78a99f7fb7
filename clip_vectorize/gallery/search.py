"""Searching the gallery's collection: the images nearest a vector or an indexed image, narrowed by a Qdrant filter.

No threshold by default: CLIP's text-to-image cosine scores of good matches are often 0.2-0.3, so a fixed cut-off
hides results; callers that want one pass `score_threshold`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic
from qdrant_client import models

from clip_vectorize.errors import InvalidFilterError, PointNotFoundError
from clip_vectorize.gallery.sources import MAX_POINT_ID
from clip_vectorize.gallery.store import GalleryStore, IndexedPoint, PointId, Vector, as_point_id

FILTER_EXAMPLE = '{"must": [{"key": "brand", "match": {"value": "BMW"}}, {"key": "year", "range": {"gte": 2020}}]}'


@dataclass(frozen=True)
class SearchQuery:
    limit: int = 20
    offset: int = 0
    score_threshold: float | None = None
    condition: models.Filter | None = None


@dataclass(frozen=True)
class Hit:
    id: PointId
    score: float
    payload: dict[str, Any]


def parse_filter(raw: object) -> models.Filter:
    """Qdrant's own filter JSON (must / should / must_not of match, range, ... conditions) as qdrant-client's
    model; anything else is an InvalidFilterError naming the first problem."""
    if not isinstance(raw, dict):
        raise InvalidFilterError(f"'filter' must be a JSON object in Qdrant's filter format, e.g. {FILTER_EXAMPLE}")
    try:
        return models.Filter.model_validate(raw)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]  # the rest are mostly the same mistake seen by each alternative of a union
        raise InvalidFilterError(f"'filter' is not a Qdrant filter: {_json_path(first['loc'])}: {first['msg']}. "
                                 f"Example: {FILTER_EXAMPLE}") from None


def _json_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as the caller's JSON path: its union labels (`FieldCondition`, `MatchValue`,
    `list[...]`) are model names, never keys of Qdrant's filter JSON, which are all lower case."""
    return ".".join(str(part) for part in loc if not (isinstance(part, str) and (part[:1].isupper() or "[" in part)))


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
        itself = models.HasIdCondition(has_id=[point_id])
        condition = query.condition or models.Filter()
        narrowed = condition.model_copy(update={"must_not": [*(_as_list(condition.must_not)), itself]})
        return self._nearest(vector, SearchQuery(query.limit, query.offset, query.score_threshold, narrowed))

    def require_point(self, point_id: PointId) -> IndexedPoint:
        point = self.store.point(point_id)
        if point is None:
            raise self._not_found(point_id)
        return point

    def _not_found(self, point_id: PointId) -> PointNotFoundError:
        return PointNotFoundError(f"no point {point_id} in the collection '{self.store.collection}'")

    def _nearest(self, vector: Vector, query: SearchQuery) -> list[Hit]:
        began = time.perf_counter()
        points = self.store.nearest(vector, query.limit, query.offset, query.score_threshold, query.condition)
        self.on_query(time.perf_counter() - began)
        return [Hit(as_point_id(point.id), point.score, point.payload or {}) for point in points]


def _as_list(conditions: Any) -> list:
    """A filter clause may hold one condition or a list of them."""
    if conditions is None:
        return []
    return list(conditions) if isinstance(conditions, list) else [conditions]
