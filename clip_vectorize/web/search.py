"""The search endpoints over the gallery's collection: by text, by photo, and near an indexed image.

Each validates its query the way the encode endpoints validate theirs, encodes through the same encoder, and asks
the gallery for the nearest points: `{"status": "success", "results": [{"id", "score", "payload"}], "model"}`.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, jsonify, request

from clip_vectorize.errors import InvalidImageError
from clip_vectorize.gallery.search import Hit, SearchQuery, parse_filter, parse_point_id
from clip_vectorize.web.http_errors import ApiError
from clip_vectorize.web.request_parsing import json_object, optional_encoder, require_text, single_image_input
from clip_vectorize.web.state import service_state

blueprint = Blueprint("search", __name__)

DEFAULT_LIMIT, MAX_LIMIT = 20, 100
MAX_OFFSET = 10_000  # deep paging is a scan in the embedded store; nobody pages a photo grid this far


@blueprint.post("/search")
def search_by_text() -> Response:
    body = json_object()
    text, encoder_name, query = require_text(body.get("text"), "text"), optional_encoder(body), search_query(body)
    encoded = service_state().ready_encoder().encode_texts([text], encoder_name)
    hits = service_state().gallery.search().near_vector(encoded.vectors[0], query)
    return _results(hits, encoder=encoded.encoders[0])


@blueprint.post("/search-by-image")
def search_by_image() -> Response:
    """The image as /encode-image takes it: multipart `image` (the options as form fields), or JSON `image`/`url`."""
    query = search_query(_options())
    (vector,) = service_state().ready_encoder().encode_images([single_image_input()])
    if isinstance(vector, InvalidImageError):
        raise vector
    return _results(service_state().gallery.search().near_vector(vector, query))


@blueprint.post("/search-similar")
def search_similar() -> Response:
    """More like an indexed image: its stored vector is the query, so no model is needed."""
    body = json_object()
    point_id = parse_point_id(body.get("id"))
    if point_id is None:
        raise ApiError(400, "'id' must be the id of an indexed image: an unsigned integer or a UUID", param="id")
    return _results(service_state().gallery.search().near_point(point_id, search_query(body)))


def search_query(options: dict[str, Any]) -> SearchQuery:
    """limit, offset, score_threshold and filter, each checked; what is left out takes its default."""
    limit = _integer(options, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _integer(options, "offset", 0, 0, MAX_OFFSET)
    threshold = options.get("score_threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)
                                  or not -1 <= threshold <= 1):
        raise ApiError(400, "'score_threshold' must be a number from -1 to 1 (cosine similarity), or left out",
                       param="score_threshold")
    raw_filter = options.get("filter")
    condition = parse_filter(raw_filter) if raw_filter is not None else None
    return SearchQuery(limit, offset, float(threshold) if threshold is not None else None, condition)


def _integer(options: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = options.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"'{name}' must be a whole number from {low} to {high}", param=name)
    return value


def _options() -> dict[str, Any]:
    """Search options from a multipart form (text fields: numbers and the filter's JSON parsed) or a JSON body."""
    if request.mimetype != "multipart/form-data":
        return json_object()
    return {name: _form_value(name, value) for name, value in request.form.items() if value.strip()}


def _form_value(name: str, value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        raise ApiError(400, f"form field '{name}' must be a number or JSON", param=name) from None


def _results(hits: list[Hit], **extra: Any) -> Response:
    results = [{"id": hit.id, "score": round(hit.score, 6), "payload": hit.payload} for hit in hits]
    return jsonify({"status": "success", "results": results, **extra, "model": service_state().model_name})
