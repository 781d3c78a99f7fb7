"""The HTTP face of the CLIP encoder: `create_app()`, the routes, and the one place errors become status codes.

Run it with `python3 clip_vectorize_service.py`, `./start_clip_service.sh` or the systemd unit: all three
run gunicorn with `deploy/gunicorn.conf.py`.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from transformers.utils import logging as transformers_logging
from werkzeug.exceptions import HTTPException

from clip_encoder import ClipEncoder
from config import Settings
from errors import EncoderError, InvalidImageError, ModelLoadError, ModelNotReadyError, OverloadedError
from image_io import decode_base64_image

logger = logging.getLogger(__name__)

SERVICE_NAME = "clip-vectorize"
GUNICORN_CONFIG = Path(__file__).resolve().parent / "deploy" / "gunicorn.conf.py"
WORKER_BOOT_ERROR = 3  # gunicorn's arbiter stops (rather than respawning forever) when a worker exits with 3
RETRY_AFTER_SECONDS = 5

api = Blueprint("api", __name__)


class ApiError(Exception):
    """A request the views refuse: carries the status code and a message a person can act on."""

    def __init__(self, status: int, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def create_app(settings: Settings | None = None, encoder: Any = None) -> Flask:
    """The Flask app around one encoder: loaded here from `settings` unless one is passed in (tests do)."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.json.sort_keys = False
    app.json.ensure_ascii = False  # Chinese text comes back readable
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.extensions["clip_settings"] = settings
    app.extensions["clip_encoder"] = encoder if encoder is not None else ClipEncoder.load(settings)
    app.register_blueprint(api)
    register_error_handlers(app)
    return app


def app_from_environment() -> Flask:
    """gunicorn's entry point: a bad setting or a model that won't load ends start-up with one clear line."""
    transformers_logging.disable_progress_bar()  # no progress bars in journald
    try:
        settings = Settings.from_env()
        encoder = ClipEncoder.load(settings)
    except (ValueError, ModelLoadError) as exc:
        logger.critical("clip-vectorize cannot start: %s", exc)
        raise SystemExit(WORKER_BOOT_ERROR) from None
    return create_app(settings, encoder)


# ---------------------------------------------------------------- views


@api.get("/health")
def health():
    encoder = _encoder()
    body = {
        "status": "ok" if encoder.ready else "loading",
        "service": SERVICE_NAME,
        "clip_loaded": bool(encoder.ready),
        "model": encoder.model_name,
        "device": encoder.device,
        "backend": encoder.backend.name,
        "dimension": encoder.dimension,
    }
    return jsonify(body), 200 if encoder.ready else 503


@api.post("/encode-text")
def encode_text():
    text = _require_text(_json_object().get("text"), "text")
    result = _encoder().encode_texts([text])
    return _success(text=text, vector=result.vectors[0].tolist(), truncated=result.truncated[0])


@api.post("/encode-texts")
def encode_texts():
    items = _require_list(_json_object().get("texts"), "texts")
    texts = [_require_text(item, f"texts[{index}]") for index, item in enumerate(items)]
    result = _encoder().encode_texts(texts)
    return _success(texts=texts, vectors=result.vectors.tolist(), count=len(texts), truncated=result.truncated)


@api.post("/encode-image")
def encode_image():
    vectors, errors = _encode_image_inputs([_single_image_input()])
    if errors:
        raise InvalidImageError(errors[0]["error"])
    return _success(vector=vectors[0])


@api.post("/encode-images")
def encode_images():
    vectors, errors = _encode_image_inputs(_image_list_inputs())
    return _success(vectors=vectors, count=len(vectors), errors=errors)


# ---------------------------------------------------------------- request parsing


def _encoder():
    return current_app.extensions["clip_encoder"]


def _settings() -> Settings:
    return current_app.extensions["clip_settings"]


def _success(**fields: Any):
    encoder = _encoder()
    return jsonify({"status": "success", **fields, "dimension": encoder.dimension, "model": encoder.model_name})


def _json_object() -> dict:
    if not request.is_json:
        raise ApiError(415, "Content-Type must be application/json", "unsupported_media_type")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object, e.g. {\"text\": \"red BMW SUV\"}", "invalid_json")
    return body


def _require_text(value: object, name: str) -> str:
    if value is None:
        raise ApiError(400, f"'{name}' is required")
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ApiError(400, f"'{name}' must not be empty")
    return value


def _require_list(value: object, name: str) -> list:
    if not isinstance(value, list) or not value:
        raise ApiError(400, f"'{name}' must be a non-empty JSON list")
    limit = _settings().max_batch_items
    if len(value) > limit:
        raise ApiError(400, f"'{name}' has {len(value)} items; the limit is {limit} (CLIP_MAX_BATCH_ITEMS)")
    return value


ImageInput = bytes | InvalidImageError  # raw bytes, or why the input could not even be read as bytes


def _is_multipart() -> bool:
    return request.mimetype == "multipart/form-data"


def _single_image_input() -> ImageInput:
    if _is_multipart():
        upload = request.files.get("image")
        if upload is None:
            raise ApiError(400, "multipart field 'image' is required")
        return upload.read()
    return _decoded(_json_object().get("image"), "image")


def _image_list_inputs() -> list[ImageInput]:
    if _is_multipart():
        uploads = _require_list(request.files.getlist("images"), "images")
        return [upload.read() for upload in uploads]
    items = _require_list(_json_object().get("images"), "images")
    return [_decoded(item, f"images[{index}]") for index, item in enumerate(items)]


def _decoded(value: object, name: str) -> ImageInput:
    if value is None:
        raise ApiError(400, f"'{name}' is required (base64 string or data: URI), or upload multipart/form-data")
    try:
        return decode_base64_image(value)
    except InvalidImageError as exc:
        return exc


def _encode_image_inputs(inputs: list[ImageInput]) -> tuple[list[list[float] | None], list[dict]]:
    """Vectors in input order (None for a refused image) and the refusals as [{"index", "error"}]."""
    readable = [index for index, item in enumerate(inputs) if isinstance(item, bytes)]
    result = _encoder().encode_images([inputs[index] for index in readable])
    vectors: list[list[float] | None] = [None] * len(inputs)
    problems = {index: str(item) for index, item in enumerate(inputs) if isinstance(item, InvalidImageError)}
    for position, index in enumerate(readable):
        vector = result.vectors[position]
        vectors[index] = None if vector is None else vector.tolist()
        if position in result.errors:
            problems[index] = result.errors[position]
    return vectors, [{"index": index, "error": problems[index]} for index in sorted(problems)]


# ---------------------------------------------------------------- errors


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None):
    response = jsonify({"status": "error", "error": message, "code": code})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register_error_handlers(app: Flask) -> None:
    """Every failure leaves as the same JSON shape; nothing leaks a stack trace."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, str(exc))

    @app.errorhandler(InvalidImageError)
    def _invalid_image(exc: InvalidImageError):
        return error_response(400, "invalid_image", str(exc))

    @app.errorhandler(ModelNotReadyError)
    def _not_ready(exc: ModelNotReadyError):
        return error_response(503, "model_not_ready", str(exc), {"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.errorhandler(OverloadedError)
    def _overloaded(exc: OverloadedError):
        return error_response(503, "overloaded", f"the service is busy, retry shortly: {exc}", {"Retry-After": "1"})

    @app.errorhandler(EncoderError)
    def _encoder_error(exc: EncoderError):
        logger.exception("encoder failed on %s %s", request.method, request.path)
        return error_response(500, "encoder_error", "the encoder failed; see the service log")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, code, _http_message(exc))
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal server error")


def _http_message(exc: HTTPException) -> str:
    if exc.code == 404:
        return f"no such endpoint: {request.method} {request.path}"
    if exc.code == 405:
        allowed = [method for method in exc.valid_methods or [] if method not in ("HEAD", "OPTIONS")]
        return f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}"
    if exc.code == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        return f"request body is larger than {limit} bytes (CLIP_MAX_REQUEST_BYTES)"
    return exc.description or exc.name


def main() -> None:
    """`python3 clip_vectorize_service.py`: the same gunicorn server start_clip_service.sh and systemd run."""
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONFIG)])


if __name__ == "__main__":
    main()
