"""Validating request bodies at the boundary: JSON shape, texts, image inputs (upload, base64 or URL), search options.

Every refusal is an ApiError (400/415) with a message that says what to send instead; an image input that
cannot be turned into bytes becomes an InvalidImageError *value*, so one bad item of a batch fails alone.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from flask import request

from clip_vectorize.errors import InvalidImageError
from clip_vectorize.gallery.store.base import SearchQuery
from clip_vectorize.gallery.store.filters import parse_filter
from clip_vectorize.inference.routing import ENCODERS
from clip_vectorize.inference.vectors import ImageInput
from clip_vectorize.url_fetch import fetch_image_bytes
from clip_vectorize.web.http_errors import ApiError
from clip_vectorize.web.state import service_state
from config import Settings

DEFAULT_LIMIT, MAX_LIMIT = 20, 100
MAX_OFFSET = 10_000  # deep paging is a scan in the embedded store; nobody pages a photo grid this far


def settings() -> Settings:
    return service_state().settings


def json_object() -> dict:
    if not request.is_json:
        raise ApiError(415, "Content-Type must be application/json", "unsupported_media_type")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # `silent` covers malformed JSON, not JSON nested thousands of levels deep
        raise ApiError(400, "request body is JSON nested too deeply", "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, 'request body must be a JSON object, e.g. {"text": "red BMW SUV"}', "invalid_json")
    return body


def require_text(value: object, name: str) -> str:
    if value is None:
        raise ApiError(400, f"'{name}' is required", param=name)
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string, got {type(value).__name__}", param=name)
    if not value.strip():
        raise ApiError(400, f"'{name}' must not be empty", param=name)
    if not _is_valid_unicode(value):
        raise ApiError(400, f"'{name}' is not valid Unicode: it contains a lone surrogate (such as \\ud800)",
                       param=name)
    if len(value) > settings().max_text_chars:
        raise ApiError(400, f"'{name}' has {len(value)} characters; the limit is {settings().max_text_chars} "
                            "(CLIP_MAX_TEXT_CHARS). CLIP reads only the first 77 tokens anyway", param=name)
    return value


def _is_valid_unicode(text: str) -> bool:
    """JSON may carry lone UTF-16 surrogates ("\\ud800"); no tokenizer can encode them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def optional_encoder(body: dict) -> str | None:
    """The text encoder a caller asks for by name, or None to let the service route each text."""
    return optional_choice(body, "encoder", ENCODERS, None, " (or left out to route by script)")


def optional_choice(body: dict, name: str, choices: tuple[str, ...], default: str | None, hint: str = "") -> str | None:
    """`body[name]` if it is one of `choices`; `default` when it is missing or null; a 400 otherwise."""
    value = body.get(name)
    if value is None:
        return default
    if value not in choices:
        raise ApiError(400, f"'{name}' must be one of {', '.join(choices)}{hint}", param=name)
    return value


def require_string(value: object, name: str) -> str:
    """A non-empty string, with none of the text checks (base64 images, model names)."""
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"'{name}' is required and must be a non-empty string", param=name)
    return value


def require_list(value: object, name: str) -> list:
    if not isinstance(value, list) or not value:
        raise ApiError(400, f"'{name}' must be a non-empty JSON list", param=name)
    limit = settings().max_batch_items
    if len(value) > limit:
        raise ApiError(400, f"'{name}' has {len(value)} items; the limit is {limit} (CLIP_MAX_BATCH_ITEMS)", param=name)
    return value


def single_image_input() -> ImageInput:
    """One image: multipart field `image`, or JSON {"image": base64} or {"url": ...}."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("image")
        if upload is None:
            raise ApiError(400, "multipart field 'image' is required")
        return upload.read()
    body = json_object()
    if "url" in body:
        return _fetched(body["url"])
    return decoded_image(body.get("image"), "image")


def image_list_inputs() -> list[ImageInput]:
    """Several images: multipart files `images`, or JSON {"images": [base64, ...]} or {"urls": [...]}."""
    if request.mimetype == "multipart/form-data":
        return [upload.read() for upload in require_list(request.files.getlist("images"), "images")]
    body = json_object()
    if "urls" in body:
        return [_fetched(url) for url in require_list(body["urls"], "urls")]
    items = require_list(body.get("images"), "images")
    return [decoded_image(item, f"images[{index}]") for index, item in enumerate(items)]


def decoded_image(value: object, name: str) -> ImageInput:
    if value is None:
        raise ApiError(400, f"'{name}' is required (base64 string or data: URI), or upload multipart/form-data")
    try:
        return decode_base64_image(value)
    except InvalidImageError as exc:
        return exc


def _fetched(url: object) -> ImageInput:
    if not settings().allow_image_urls:
        raise ApiError(400, "image URLs are turned off on this service (CLIP_ALLOW_IMAGE_URLS); send the image itself")
    try:
        return fetch_image_bytes(url, service_state().url_policy)
    except InvalidImageError as exc:
        return exc


def decode_base64_image(value: object) -> bytes:
    """Accept plain base64 or a `data:image/...;base64,` URI; anything else is an InvalidImageError."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidImageError("image must be a non-empty base64 string or data: URI")
    payload = value.strip()
    if payload.startswith("data:"):
        header, _, payload = payload.partition(",")
        if not header.endswith(";base64"):
            raise InvalidImageError("data: URI must be base64-encoded (data:image/...;base64,...)")
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImageError("image is not valid base64") from None


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


def search_options() -> dict[str, Any]:
    """Search options from a multipart form (text fields: numbers and the filter's JSON parsed) or a JSON body."""
    if request.mimetype != "multipart/form-data":
        return json_object()
    return {name: _form_value(name, value) for name, value in request.form.items() if value.strip()}


def _form_value(name: str, value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        raise ApiError(400, f"form field '{name}' must be a number or JSON", param=name) from None
