"""Qdrant filter JSON converted for Qdrant Edge selects exactly the points it selects in qdrant-client's local mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import qdrant_edge as qe
from qdrant_client import QdrantClient, models

from clip_vectorize.gallery.errors import InvalidFilterError
from clip_vectorize.gallery.store.edge_filters import exclude_ids, to_edge_filter

UUID_A = "0eefd8f5-1111-4222-8333-444455556666"
UUID_B = "9b2f6c1e-5a4d-4e3b-8c2a-1f0e9d8c7b6a"
BERLIN, PARIS, MADRID = {"lon": 13.40, "lat": 52.52}, {"lon": 2.35, "lat": 48.86}, {"lon": -3.70, "lat": 40.42}

# Missing, null and wrongly typed values on purpose: that is where two engines are most likely to disagree.
POINTS: dict[int | str, dict[str, Any]] = {
    1: {"brand": "acme", "year": 2020, "price": 9.5, "tags": ["red", "sale"], "flag": True,
        "ts": "2024-01-15T10:00:00Z", "desc": "Red running shoes", "loc": BERLIN, "spec": {"color": "red"},
        "parts": [{"name": "wheel", "qty": 4}, {"name": "bell", "qty": 1}]},
    2: {"brand": "bolt", "year": 2021, "price": 2.0, "tags": [], "flag": 1, "ts": "2024-03-01",
        "desc": "shoes for running, red laces", "loc": PARIS, "parts": [{"name": "bell", "qty": 2}]},
    3: {"brand": None, "year": 2022, "price": 30.25, "tags": ["blue"], "flag": False,
        "ts": "2024-06-01T12:00:00+02:00", "desc": "Blue leather bag", "loc": MADRID, "spec": {"color": "blue"}},
    4: {"year": 2023, "price": 2, "tags": None, "ts": "2023-12-31 23:59:59", "desc": None},
    5: {"brand": "acme", "year": "2021", "price": 15.0, "tags": ["red", "blue", "green"], "flag": 0,
        "parts": [{"name": "wheel", "qty": 2}]},
    6: {"brand": "cora", "year": 2019, "tags": [None, "sale"], "ts": "2025-02-10T08:30:00.250+00:00",
        "desc": "running late", "loc": {"lon": 13.0, "lat": 52.0}},
    7: {},
    8: {"brand": ["acme", "bolt"], "year": 2024, "price": 120.0, "tags": "red", "flag": True,
        "spec": {"color": ["red", "black"]}},
    UUID_A: {"brand": "bolt", "year": 2020, "price": 5.5, "tags": ["sale"], "ts": "2024-01-15T09:00:00",
             "desc": "red shoes, running", "loc": PARIS},
    UUID_B: {"brand": "Acme", "year": None, "price": None, "flag": False, "ts": "not a date"},
}
VECTORS = [[1.0, 0.2, 0.0, 0.1], [0.1, 1.0, 0.3, 0.0], [0.0, 0.4, 1.0, 0.2], [0.3, 0.0, 0.2, 1.0]]
# A text index needs phrase_matching, or Edge silently matches no phrase (see the last test).
INDEXES = {"brand": qe.PayloadSchemaType.Keyword, "year": qe.PayloadSchemaType.Integer,
           "price": qe.PayloadSchemaType.Float, "flag": qe.PayloadSchemaType.Bool,
           "ts": qe.PayloadSchemaType.Datetime, "desc": qe.TextIndexParams(phrase_matching=True),
           "loc": qe.PayloadSchemaType.Geo}
# Where an index decides, Edge answers from it, as a Qdrant server does; local mode has no indexes to copy that.
INDEXED_DIFFERENCES = {"except on integers": {"5"}}  # year "2021" is a string, absent from the integer index
QUERY = [0.5, 0.5, 0.5, 0.5]
EVERY_ID = {str(point_id) for point_id in POINTS}

POLYGON_AROUND_BERLIN_AND_PARIS = {"exterior": {"points": [
    {"lon": 0.0, "lat": 45.0}, {"lon": 20.0, "lat": 45.0}, {"lon": 20.0, "lat": 56.0},
    {"lon": 0.0, "lat": 56.0}, {"lon": 0.0, "lat": 45.0}]}}
HOLE_AROUND_PARIS = {"points": [{"lon": 1.0, "lat": 48.0}, {"lon": 4.0, "lat": 48.0}, {"lon": 4.0, "lat": 50.0},
                                {"lon": 1.0, "lat": 50.0}, {"lon": 1.0, "lat": 48.0}]}

FILTERS: dict[str, dict[str, Any]] = {
    "an empty filter keeps every point": {},
    "a keyword matches its value, also inside a list": {"must": [{"key": "brand", "match": {"value": "acme"}}]},
    "an integer matches integers, not the same digits as a string": {"must": [{"key": "year",
                                                                                "match": {"value": 2021}}]},
    "true matches booleans only, never the integer 1": {"must": [{"key": "flag", "match": {"value": True}}]},
    "false matches booleans only, never the integer 0": {"must": [{"key": "flag", "match": {"value": False}}]},
    "an integer never matches a float payload": {"must": [{"key": "price", "match": {"value": 2}}]},
    "any matches one of several keywords": {"must": [{"key": "brand", "match": {"any": ["bolt", "cora"]}}]},
    "any matches one element of a list": {"must": [{"key": "tags", "match": {"any": ["blue", "green"]}}]},
    "except keeps other values, not missing or null ones": {"must": [{"key": "brand",
                                                                      "match": {"except": ["acme"]}}]},
    "except on integers": {"must": [{"key": "year", "match": {"except": [2020, 2021]}}]},
    "text needs every word, in any order": {"must": [{"key": "desc", "match": {"text": "shoes red"}}]},
    "text_any needs one of the words": {"must": [{"key": "desc", "match": {"text_any": "leather late"}}]},
    "a phrase needs its words in order": {"must": [{"key": "desc", "match": {"phrase": "running shoes"}}]},
    "a prefix is case-sensitive": {"must": [{"key": "brand", "match": {"prefix": "ac"}}]},
    "a substring is found anywhere": {"must": [{"key": "brand", "match": {"substring": "ol"}}]},
    "a float range with open and closed ends": {"must": [{"key": "price", "range": {"gte": 2.0, "lt": 30.25}}]},
    "a range over integers skips strings and nulls": {"must": [{"key": "year", "range": {"gt": 2020}}]},
    "a datetime range compares instants across offsets": {"must": [{"key": "ts", "range": {
        "gte": "2024-01-15T09:30:00Z", "lt": "2024-06-01T11:00:00+02:00"}}]},
    "a datetime range of dates and naive times reads them as UTC": {"must": [{"key": "ts", "range": {
        "gt": "2024-01-15", "lte": "2024-06-01T10:00:00"}}]},
    "values_count counts list elements": {"must": [{"key": "tags", "values_count": {"gte": 2}}]},
    "values_count below one keeps empty and missing lists": {"must": [{"key": "tags", "values_count": {"lt": 1}}]},
    "a bounding box": {"must": [{"key": "loc", "geo_bounding_box": {
        "top_left": {"lon": 0.0, "lat": 55.0}, "bottom_right": {"lon": 15.0, "lat": 45.0}}}]},
    "a radius in meters": {"must": [{"key": "loc", "geo_radius": {"center": BERLIN, "radius": 100_000.0}}]},
    "a polygon with a hole": {"must": [{"key": "loc", "geo_polygon": {
        **POLYGON_AROUND_BERLIN_AND_PARIS, "interiors": [HOLE_AROUND_PARIS]}}]},
    "is_empty: missing, null or an empty list": {"must": [{"is_empty": {"key": "tags"}}]},
    "is_null: null, not missing": {"must": [{"is_null": {"key": "brand"}}]},
    "is_empty written inside a field condition": {"must": [{"key": "tags", "is_empty": False}]},
    "is_null written inside a field condition": {"must": [{"key": "tags", "is_null": True}]},
    "has_id with integer and uuid ids": {"must": [{"has_id": [1, UUID_A, 5, UUID_B.upper()]}]},
    "has_vector on the unnamed vector, not on an unknown one": {"must": [{"has_vector": ""}, {"key": "year",
        "range": {"gte": 2022}}], "must_not": [{"has_vector": "other"}]},
    "a dotted key reaches into an object": {"must": [{"key": "spec.color", "match": {"value": "red"}}]},
    "nested needs one array element to match it all": {"must": [{"nested": {"key": "parts", "filter": {
        "must": [{"key": "name", "match": {"value": "bell"}}, {"key": "qty", "range": {"gte": 2}}]}}}]},
    "should, with must_not": {"should": [{"key": "brand", "match": {"value": "bolt"}},
                                         {"key": "year", "range": {"lte": 2019}}],
                              "must_not": [{"has_id": [UUID_A]}]},
    "one condition instead of a list, in every clause": {
        "must": {"key": "price", "range": {"gte": 2}}, "should": {"key": "tags", "match": {"value": "red"}},
        "must_not": {"key": "brand", "match": {"value": "bolt"}}},
    "min_should needs that many of its conditions": {"min_should": {"min_count": 2, "conditions": [
        {"key": "tags", "match": {"value": "red"}}, {"key": "price", "range": {"lt": 10}},
        {"key": "brand", "match": {"value": "acme"}}]}},
    "filters inside filters": {"must": [{"should": [{"key": "brand", "match": {"value": "cora"}},
                                                    {"must_not": [{"is_empty": {"key": "spec"}}]}]}],
                               "must_not": [{"must": [{"key": "year", "match": {"value": 2024}}]}]},
}


def edge_ids(shard: qe.EdgeShard, condition: qe.Filter | None) -> set[str]:
    hits = shard.query(qe.QueryRequest(query=qe.Query.Nearest(QUERY), limit=100, offset=0, score_threshold=None,
                                       filter=condition, with_payload=False, params=qe.SearchParams(exact=True)))
    return {str(hit.id) for hit in hits}


def local_ids(client: QdrantClient, condition: models.Filter | None) -> set[str]:
    return {str(hit.id) for hit in client.query_points("points", query=QUERY, query_filter=condition, limit=100).points}


def create_shard(directory: Path, indexes: dict[str, object]) -> qe.EdgeShard:
    shard = qe.EdgeShard.create(str(directory),
                                qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=4, distance=qe.Distance.Cosine)))
    for field, schema in indexes.items():
        shard.update(qe.UpdateOperation.create_field_index(field, schema))  # type: ignore[arg-type]
    shard.update(qe.UpdateOperation.upsert_points(
        [qe.Point(point_id, VECTORS[n % 4], payload) for n, (point_id, payload) in enumerate(POINTS.items())]))
    return shard


@pytest.fixture(scope="module", params=[False, True], ids=["without payload indexes", "with payload indexes"])
def indexed(request) -> bool:
    return request.param


@pytest.fixture(scope="module")
def shard(indexed, tmp_path_factory):
    shard = create_shard(tmp_path_factory.mktemp("edge"), INDEXES if indexed else {})
    yield shard
    shard.close()


@pytest.fixture(scope="module")
def local():
    client = QdrantClient(":memory:")
    client.create_collection("points", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    client.upsert("points", [models.PointStruct(id=point_id, vector=VECTORS[n % 4], payload=payload)
                             for n, (point_id, payload) in enumerate(POINTS.items())])
    yield client
    client.close()


def parse(raw: dict[str, Any]) -> models.Filter:
    return models.Filter.model_validate(raw)


@pytest.mark.parametrize("name", FILTERS)
def test_edge_selects_the_same_points_as_local_mode(shard, indexed, local, name):
    expected = local_ids(local, parse(FILTERS[name])) - (INDEXED_DIFFERENCES.get(name, set()) if indexed else set())
    assert edge_ids(shard, to_edge_filter(parse(FILTERS[name]))) == expected


def test_the_differential_filters_are_selective(local):
    """A filter that keeps every point or none would agree between the engines while proving nothing."""
    trivial = [name for name, raw in FILTERS.items() if raw and local_ids(local, parse(raw)) in (set(), EVERY_ID)]
    assert trivial == []


@pytest.mark.parametrize(("raw", "path"), [
    ({"must": [{"slice": {"total": 2, "index": 0}}]}, "must.0.slice"),
    ({"should": [{"key": "year", "range": {"gte": 2020}}, {"slice": {"total": 2, "index": 1}}]}, "should.1.slice"),
    ({"min_should": {"min_count": 1, "conditions": [{"slice": {"total": 3, "index": 0}}]}},
     "min_should.conditions.0.slice"),
    ({"must": [{"nested": {"key": "parts", "filter": {"must_not": {"slice": {"total": 2, "index": 0}}}}}]},
     "must.0.nested.filter.must_not.slice"),
], ids=["in must", "in should", "in min_should", "in a nested filter"])
def test_a_slice_condition_is_refused_naming_its_path(raw, path):
    with pytest.raises(InvalidFilterError, match=rf"'filter' at {path}: not supported by the embedded store"):
        to_edge_filter(parse(raw))


def test_a_field_condition_without_a_condition_is_refused_rather_than_matching_nothing():
    with pytest.raises(InvalidFilterError, match=r"at must_not\.0: the condition on 'brand' sets none of match, "):
        to_edge_filter(parse({"must_not": [{"key": "brand"}]}))


def test_a_field_condition_with_two_conditions_is_refused_as_ambiguous():
    raw = {"must": [{"should": {"key": "year", "match": {"value": 2020}, "range": {"gte": 2022}}}]}
    with pytest.raises(InvalidFilterError, match=r"at must\.0\.should: .* sets match and range; give each its own"):
        to_edge_filter(parse(raw))


@pytest.mark.parametrize(("raw", "message"), [
    ({"must": [{"has_id": [1, "not-a-uuid"]}]}, r"at must\.0\.has_id\.1: 'not-a-uuid' is not a point id"),
    ({"must": [{"has_id": [-3]}]}, r"at must\.0\.has_id\.0: -3 is not a point id"),
    ({"min_should": {"min_count": 0, "conditions": [{"has_id": [1]}]}}, r"at min_should\.min_count: must be 1"),
    ({"must": [{"key": "loc", "geo_radius": {"center": {"lon": 0, "lat": 100}, "radius": 1.0}}]},
     r"at must\.0: not accepted by the embedded store: .*lat"),
    ({"must": [{"key": "loc", "geo_polygon": {"exterior": {"points": [{"lon": 0, "lat": 0}]}}}]},
     r"at must\.0: not accepted by the embedded store: .*polygon"),
    ({"should": [{"key": "brand..x[", "match": {"value": "acme"}}]}, r"at should\.0: not accepted .*JSON path"),
], ids=["a string that is no uuid", "a negative id", "min_count zero", "latitude 100", "a polygon of one point",
        "a malformed key"])
def test_values_edge_cannot_take_are_refused_naming_their_path(raw, message):
    with pytest.raises(InvalidFilterError, match=message):
        to_edge_filter(parse(raw))


def test_exclude_ids_on_no_filter_leaves_out_only_those_points(shard):
    assert edge_ids(shard, exclude_ids(None, [1, UUID_A])) == EVERY_ID - {"1", UUID_A}


def test_exclude_ids_keeps_every_clause_of_the_filter(shard, local):
    raw = {"must": [{"key": "price", "range": {"gte": 2}}], "must_not": [{"key": "tags", "match": {"value": "blue"}}],
           "should": [{"key": "brand", "match": {"any": ["acme", "bolt"]}}, {"key": "flag", "match": {"value": True}}],
           "min_should": {"min_count": 1, "conditions": [{"key": "desc", "match": {"text": "red"}},
                                                         {"is_empty": {"key": "desc"}}]}}
    kept = local_ids(local, parse(raw))
    assert {"1", UUID_A} < kept  # so that leaving them out is seen
    assert edge_ids(shard, exclude_ids(to_edge_filter(parse(raw)), [UUID_A, 1])) == kept - {"1", UUID_A}


def test_exclude_ids_with_no_ids_changes_nothing(shard):
    condition = to_edge_filter(parse(FILTERS["should, with must_not"]))
    assert edge_ids(shard, exclude_ids(condition, [])) == edge_ids(shard, condition)


def test_a_phrase_on_a_text_index_without_phrase_matching_silently_matches_nothing(tmp_path):
    """Edge's behaviour, pinned because the converter cannot see it: a store's text index needs phrase_matching."""
    shard = create_shard(tmp_path, {"desc": qe.PayloadSchemaType.Text})
    try:
        assert edge_ids(shard, to_edge_filter(parse(FILTERS["a phrase needs its words in order"]))) == set()
    finally:
        shard.close()
