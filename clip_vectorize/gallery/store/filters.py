"""Qdrant's filter JSON, validated once into qdrant-client's model: every store takes that model (Edge converts it)."""

from __future__ import annotations

import pydantic
from qdrant_client import models

from clip_vectorize.gallery.errors import InvalidFilterError

FILTER_EXAMPLE = '{"must": [{"key": "brand", "match": {"value": "BMW"}}, {"key": "year", "range": {"gte": 2020}}]}'


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


def without_point(condition: models.Filter | None, point_id: int | str) -> models.Filter:
    """`condition` that also leaves one point out ("more like this" never returns the image itself)."""
    condition = condition or models.Filter()
    itself = models.HasIdCondition(has_id=[point_id])
    return condition.model_copy(update={"must_not": [*_as_list(condition.must_not), itself]})


def _as_list(conditions: object) -> list:
    """A filter clause may hold one condition or a list of them."""
    if conditions is None:
        return []
    return list(conditions) if isinstance(conditions, list) else [conditions]
