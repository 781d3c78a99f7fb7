"""The one place errors become HTTP responses: every failure leaves as the same JSON shape, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from clip_vectorize.errors import (
    DeadlineExceededError,
    EncoderError,
    InvalidImageError,
    ModelNotReadyError,
    OverloadedError,
    UnknownEncoderError,
)
from clip_vectorize.gallery.errors import (
    CollectionMissingError,
    GalleryError,
    IndexRunningError,
    InvalidFilterError,
    NoGalleryFolderError,
    PointNotFoundError,
    StoreError,
    ThumbnailUnavailableError,
)

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "5"


OPENAI_PREFIX = "/v1/"  # the OpenAI-compatible API answers errors in OpenAI's shape, which its clients parse
_OPENAI_CODES = {"unauthorized": "invalid_api_key"}


class ApiError(Exception):
    """A request the views refuse: the status code, a message a person can act on, a machine-readable code, and
    (for OpenAI-style errors) the request parameter at fault."""

    def __init__(self, status: int, message: str, code: str = "bad_request",
                 headers: dict[str, str] | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}
        self.param = param


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   param: str | None = None) -> Response:
    """`{"status": "error", "error", "code"}`; under /v1/, OpenAI's `{"error": {"message", "type", "param",
    "code"}}`."""
    body: dict[str, Any]
    if request.path.startswith(OPENAI_PREFIX):
        kind = "server_error" if status >= 500 else "invalid_request_error"
        body = {"error": {"message": message, "type": kind, "param": param, "code": _OPENAI_CODES.get(code, code)}}
    else:
        body = {"status": "error", "error": message, "code": code}
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


# Domain error -> (status, code, extra headers). Order matters: subclasses before their bases.
_DOMAIN_ERRORS: list[tuple[type[Exception], int, str, dict[str, str]]] = [
    (InvalidImageError, 400, "invalid_image", {}),
    (UnknownEncoderError, 400, "unknown_encoder", {}),
    (ModelNotReadyError, 503, "model_not_ready", {"Retry-After": RETRY_AFTER_SECONDS}),
    (DeadlineExceededError, 503, "deadline_exceeded", {"Retry-After": "1"}),
    (OverloadedError, 503, "overloaded", {"Retry-After": "1"}),
    (InvalidFilterError, 400, "invalid_filter", {}),
    (CollectionMissingError, 404, "no_collection", {}),
    (PointNotFoundError, 404, "point_not_found", {}),
    (NoGalleryFolderError, 404, "no_gallery_folder", {}),
    (ThumbnailUnavailableError, 404, "no_thumbnail", {}),
    (IndexRunningError, 409, "index_running", {}),
    (StoreError, 503, "store_unavailable", {"Retry-After": RETRY_AFTER_SECONDS}),
]


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, str(exc), exc.headers, exc.param)

    @app.errorhandler(EncoderError)
    @app.errorhandler(GalleryError)
    def _domain_error(exc: EncoderError | GalleryError):
        for kind, status, code, headers in _DOMAIN_ERRORS:
            if isinstance(exc, kind):
                return error_response(status, code, str(exc), headers)
        logger.exception("%s failed on %s %s", type(exc).__name__, request.method, request.path)
        what = "encoder" if isinstance(exc, EncoderError) else "gallery"
        return error_response(500, f"{what}_error", f"the {what} failed; see the service log")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, code, _http_message(exc))
        if exc.code == 405 and _allowed_methods(exc):
            response.headers["Allow"] = ", ".join(_allowed_methods(exc))
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal server error")


def _http_message(exc: HTTPException) -> str:
    if exc.code == 404:
        return f"no such endpoint: {request.method} {request.path}"
    if exc.code == 405:
        allowed = [method for method in _allowed_methods(exc) if method not in ("HEAD", "OPTIONS")]
        return f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}"
    if exc.code == 413:
        return f"request body is larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes (CLIP_MAX_REQUEST_BYTES)"
    return exc.description or exc.name


def _allowed_methods(exc: HTTPException) -> list[str]:
    """What a 405 (werkzeug's MethodNotAllowed) says the path accepts."""
    return list(getattr(exc, "valid_methods", None) or [])
