"""Qdrant's filter model (qdrant-client's `models.Filter`) as Qdrant Edge's filter, refusing what Edge cannot do."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import qdrant_edge as qe
from qdrant_client import models

from clip_vectorize.gallery.errors import InvalidFilterError

if TYPE_CHECKING:  # aliases of the type stub only, absent from the module at runtime
    from qdrant_edge import ConditionType as EdgeCondition
    from qdrant_edge import MatchType as EdgeMatch

FIELD_KINDS = ("match", "range", "geo_bounding_box", "geo_radius", "geo_polygon", "values_count", "is_empty", "is_null")
MAX_POINT_ID = 2**64 - 1


def to_edge_filter(condition: models.Filter) -> qe.Filter:
    """`condition` as an Edge filter; an InvalidFilterError naming the JSON path of the first part Edge cannot take."""
    return _filter(condition, "")


def exclude_ids(condition: qe.Filter | None, ids: Sequence[int | str]) -> qe.Filter:
    """`condition` that also leaves the points `ids` out ("more like this" never returns the chosen image)."""
    left_out = qe.HasIdCondition(point_ids={_point_id(point_id, "exclude_ids") for point_id in ids})
    if condition is None:
        return qe.Filter(must_not=[left_out])
    return qe.Filter(must=condition.must, should=condition.should,
                     must_not=[*(condition.must_not or []), left_out], min_should=condition.min_should)


def _at(path: str, part: str | int) -> str:
    return f"{path}.{part}" if path else str(part)


def _refuse(path: str, why: str) -> InvalidFilterError:
    return InvalidFilterError(f"'filter' at {path}: {why}")


def _unsupported(path: str) -> InvalidFilterError:
    return _refuse(path, "not supported by the embedded store (Qdrant Edge); a Qdrant server (QDRANT_URL) has it")


def _filter(condition: models.Filter, path: str) -> qe.Filter:
    return qe.Filter(must=_clause(condition.must, _at(path, "must")),
                     should=_clause(condition.should, _at(path, "should")),
                     must_not=_clause(condition.must_not, _at(path, "must_not")),
                     min_should=_min_should(condition.min_should, _at(path, "min_should")))


def _clause(clause: list[models.Condition] | models.Condition | None, path: str) -> list[EdgeCondition] | None:
    """qdrant-client allows one condition or a list; a lone one has no index in its JSON path."""
    if clause is None:
        return None
    if isinstance(clause, list):
        return [_condition(condition, _at(path, index)) for index, condition in enumerate(clause)]
    return [_condition(clause, path)]


def _min_should(min_should: models.MinShould | None, path: str) -> qe.MinShould | None:
    if min_should is None:
        return None
    if min_should.min_count < 1:  # Edge would match everything; local mode and the server refuse it
        raise _refuse(_at(path, "min_count"), f"must be 1 or more, not {min_should.min_count}")
    conditions = _clause(min_should.conditions, _at(path, "conditions")) or []
    return qe.MinShould(conditions, min_should.min_count)


def _condition(condition: models.Condition, path: str) -> EdgeCondition:
    """One condition; Edge's own refusals of a value (a bad key, latitude 100) become InvalidFilterErrors here."""
    try:
        return _convert_condition(condition, path)
    except (ValueError, TypeError, OverflowError) as exc:
        raise _refuse(path, f"not accepted by the embedded store: {exc}") from None


def _convert_condition(condition: models.Condition, path: str) -> EdgeCondition:
    convert = CONDITIONS.get(type(condition))
    if convert is None:  # e.g. SliceCondition: Edge has no equivalent; name the part by its one JSON key
        raise _unsupported(_at(path, next(iter(type(condition).model_fields))))
    return convert(condition, path)


def _has_id(condition: models.HasIdCondition, path: str) -> qe.HasIdCondition:
    ids = enumerate(condition.has_id)
    return qe.HasIdCondition({_point_id(point_id, _at(path, f"has_id.{index}")) for index, point_id in ids})


def _nested(condition: models.NestedCondition, path: str) -> qe.NestedCondition:
    nested = _at(path, "nested")
    return qe.NestedCondition(condition.nested.key, _filter(condition.nested.filter, _at(nested, "filter")))


CONDITIONS: dict[type, Callable[[Any, str], EdgeCondition]] = {  # qdrant-client's condition kind -> Edge's
    models.Filter: lambda condition, path: _filter(condition, path),
    models.FieldCondition: lambda condition, path: _field_condition(condition, path),
    models.IsEmptyCondition: lambda condition, path: qe.IsEmptyCondition(condition.is_empty.key),
    models.IsNullCondition: lambda condition, path: qe.IsNullCondition(condition.is_null.key),
    models.HasIdCondition: _has_id,
    models.HasVectorCondition: lambda condition, path: qe.HasVectorCondition(condition.has_vector),
    models.NestedCondition: _nested,
}


def _point_id(point_id: int | str | uuid.UUID, path: str) -> int | uuid.UUID:
    """Edge takes unsigned 64-bit integers and UUIDs; a UUID object spares Edge's own parse of the string."""
    if isinstance(point_id, uuid.UUID):
        return point_id
    if isinstance(point_id, int) and not isinstance(point_id, bool):
        if 0 <= point_id <= MAX_POINT_ID:
            return point_id
    elif isinstance(point_id, str):
        try:
            return uuid.UUID(point_id)
        except ValueError:
            pass
    raise _refuse(path, f"{point_id!r} is not a point id (an unsigned integer or a UUID)")


def _field_condition(condition: models.FieldCondition, path: str) -> qe.FieldCondition:
    """Exactly one kind per condition: Edge matches nothing when none is set, and ORs several where local mode
    takes the first, so both are refused rather than silently answered differently."""
    kinds = [kind for kind in FIELD_KINDS if getattr(condition, kind) is not None]
    if not kinds:
        raise _refuse(path, f"the condition on {condition.key!r} sets none of {', '.join(FIELD_KINDS)}")
    if len(kinds) > 1:
        raise _refuse(path, f"the condition on {condition.key!r} sets {' and '.join(kinds)}; "
                            "give each its own condition (in must, or should for either)")
    kind = kinds[0]
    value = FIELD_CONVERTERS[kind](getattr(condition, kind), _at(path, kind))
    return qe.FieldCondition(key=condition.key, **{kind: value})


def _match(match: models.Match, path: str) -> EdgeMatch:
    convert = MATCHES.get(type(match))
    if convert is None:
        raise _unsupported(_at(path, next(iter(type(match).model_fields))))
    return convert(match)


def _match_value(value: bool | int | str) -> bool | int | str:
    """The 0.9.0 binding tries int before bool, so a Python bool would match 1 / 0; numpy's bool is no int to it
    but still converts to a bool."""
    return np.bool_(value) if isinstance(value, bool) else value  # type: ignore[return-value]


MATCHES: dict[type, Callable[[Any], EdgeMatch]] = {  # qdrant-client's match kind -> Edge's
    models.MatchValue: lambda match: qe.MatchValue(_match_value(match.value)),
    models.MatchAny: lambda match: qe.MatchAny(match.any),
    models.MatchExcept: lambda match: qe.MatchExcept(match.except_),
    models.MatchText: lambda match: qe.MatchText(match.text),
    models.MatchTextAny: lambda match: qe.MatchTextAny(match.text_any),
    models.MatchPhrase: lambda match: qe.MatchPhrase(match.phrase),
    models.MatchPrefix: lambda match: qe.MatchPrefix(match.prefix),
    models.MatchSubstring: lambda match: qe.MatchSubstring(match.substring),
}


def _range(range_: models.Range | models.DatetimeRange, path: str) -> qe.RangeFloat | qe.RangeDateTime:
    if isinstance(range_, models.DatetimeRange):
        return qe.RangeDateTime(gte=_timestamp(range_.gte), gt=_timestamp(range_.gt),
                                lte=_timestamp(range_.lte), lt=_timestamp(range_.lt))
    return qe.RangeFloat(gte=range_.gte, gt=range_.gt, lte=range_.lte, lt=range_.lt)


def _timestamp(moment: datetime | date | None) -> str | None:
    """ISO 8601 with an explicit offset: Qdrant reads a bare date as midnight and a naive time as UTC."""
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        moment = datetime.combine(moment, time.min)
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).isoformat()


def _geo_point(point: models.GeoPoint) -> qe.GeoPoint:
    return qe.GeoPoint(lon=point.lon, lat=point.lat)


def _geo_polygon(polygon: models.GeoPolygon, path: str) -> qe.GeoPolygon:
    interiors = [[_geo_point(point) for point in ring.points] for ring in polygon.interiors or []]
    return qe.GeoPolygon([_geo_point(point) for point in polygon.exterior.points], interiors or None)


def _values_count(count: models.ValuesCount, path: str) -> qe.ValuesCount:
    return qe.ValuesCount(lt=count.lt, gt=count.gt, lte=count.lte, gte=count.gte)


FIELD_CONVERTERS: dict[str, Callable[[Any, str], Any]] = {
    "match": _match,
    "range": _range,
    "geo_bounding_box": lambda box, path: qe.GeoBoundingBox(_geo_point(box.top_left), _geo_point(box.bottom_right)),
    "geo_radius": lambda circle, path: qe.GeoRadius(_geo_point(circle.center), circle.radius),
    "geo_polygon": _geo_polygon,
    "values_count": _values_count,
    "is_empty": lambda flag, path: flag,
    "is_null": lambda flag, path: flag,
}
