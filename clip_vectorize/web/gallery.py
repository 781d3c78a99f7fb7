"""The service's own gallery: its status, a new index run of CLIP_GALLERY_DIR, and thumbnails of its images."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, send_file

from clip_vectorize.gallery.errors import NoGalleryFolderError, PointNotFoundError
from clip_vectorize.gallery.search import parse_point_id
from clip_vectorize.web.state import service_state

blueprint = Blueprint("gallery", __name__, url_prefix="/gallery")

# The page asks for /gallery/thumbnails/<id>?v=<content hash>: a changed image has a new URL after its next index
# run, so browsers may keep one for a day. Private: it was served behind the API key, not for shared caches.
THUMBNAIL_MAX_AGE_S = 24 * 3600


@blueprint.get("/status")
def status() -> Response:
    return jsonify({"status": "success", **service_state().gallery.status()})


@blueprint.post("/reindex")
def reindex() -> tuple[Response, int]:
    """Index the folder again in the background (new, changed and deleted images); 409 while a run is under way."""
    run = service_state().gallery.reindex()
    return jsonify({"status": "success", "indexing": run.describe()}), 202


@blueprint.get("/thumbnails/<point_id>")
def thumbnail(point_id: str) -> Response:
    gallery = service_state().gallery
    if gallery.thumbnails is None:
        raise NoGalleryFolderError("thumbnails are served from CLIP_GALLERY_DIR, which is not set; URL items are "
                                   "shown from their own URL")
    parsed = parse_point_id(point_id)
    if parsed is None:
        raise PointNotFoundError(f"{point_id!r} is not a point id: ids are unsigned integers or UUIDs")
    path = gallery.thumbnails.for_point(gallery.search().require_point(parsed))
    response = send_file(path, mimetype="image/jpeg", max_age=THUMBNAIL_MAX_AGE_S, conditional=True)
    response.cache_control.private = True
    response.cache_control.public = False
    return response
