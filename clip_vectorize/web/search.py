"""The search endpoints over the gallery's collection: by text, by photo, and near an indexed image.

Each validates its query the way the encode endpoints validate theirs, encodes through the same encoder, and asks
the gallery for the nearest points: `{"status": "success", "results": [{"id", "score", "payload"}], "model"}`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from clip_vectorize.errors import InvalidImageError
from clip_vectorize.gallery.search import parse_point_id
from clip_vectorize.gallery.store.base import Hit
from clip_vectorize.web.http_errors import ApiError
from clip_vectorize.web.request_parsing import (
    json_object,
    optional_encoder,
    require_text,
    search_options,
    search_query,
    single_image_input,
)
from clip_vectorize.web.state import service_state

blueprint = Blueprint("search", __name__)


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
    query = search_query(search_options())
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


def _results(hits: list[Hit], **extra: Any) -> Response:
    results = [{"id": hit.id, "score": round(hit.score, 6), "payload": hit.payload} for hit in hits]
    return jsonify({"status": "success", "results": results, **extra, "model": service_state().model_name})
