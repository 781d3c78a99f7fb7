"""The HTTP face of the CLIP encoder: `create_app()`, the routes, and the process entry points.

Run it with `python3 clip_vectorize_service.py`, `./start_clip_service.sh` or the systemd unit: all three
run gunicorn with `deploy/gunicorn.conf.py`, which builds the app with `app_from_environment()`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from transformers.utils import logging as transformers_logging

from clip_vectorize.web.access_control import install_api_key, install_cors
from clip_encoder import ClipEncoder
from config import Settings
from clip_vectorize.errors import InvalidImageError, ModelNotReadyError
from clip_vectorize.web.http_errors import RETRY_AFTER_SECONDS, register_error_handlers
from clip_vectorize.inference.model_loading import resolve_model_source
from clip_vectorize.web.observability import Metrics, install_request_tracking
from clip_vectorize.web.request_parsing import image_list_inputs, json_object, require_list, require_text, single_image_input
from clip_vectorize.url_fetch import UrlPolicy

logger = logging.getLogger(__name__)

SERVICE_NAME = "clip-vectorize"
PROJECT_DIR = Path(__file__).resolve().parent
GUNICORN_CONFIG = PROJECT_DIR / "deploy" / "gunicorn.conf.py"
OPENAPI_DOCUMENT = PROJECT_DIR / "clip_vectorize" / "web" / "openapi.json"
WORKER_BOOT_ERROR = 3  # gunicorn's arbiter stops (rather than respawning forever) when a worker exits with 3

api = Blueprint("api", __name__)


def create_app(settings: Settings | None = None, encoder: ClipEncoder | None = None) -> Flask:
    """The Flask app around one encoder. Without one, the model loads in the background and the app answers
    503 (`clip_loaded: false`) until it is ready; a model that cannot load ends the process (exit code 3)."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.json.sort_keys = False
    app.json.ensure_ascii = False  # Chinese text comes back readable
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    metrics = Metrics()
    app.extensions.update(
        clip_settings=settings,
        clip_metrics=metrics,
        clip_encoder=encoder,
        clip_model_name=encoder.model_name if encoder else resolve_model_source(settings),
        clip_openapi=OPENAPI_DOCUMENT.read_bytes(),
        clip_url_policy=UrlPolicy(frozenset(host.lower() for host in settings.url_allowed_hosts), settings.url_max_bytes,
                                  connect_timeout_s=settings.url_timeout_s, read_timeout_s=settings.url_timeout_s),
    )
    install_request_tracking(app, metrics)
    install_api_key(app, settings.api_key)
    install_cors(app, settings.cors_origins)
    app.register_blueprint(api)
    register_error_handlers(app)
    if encoder is None:
        threading.Thread(target=_load_encoder, args=(app, settings), name="model-loader", daemon=True).start()
    else:
        metrics.watch(encoder)
    return app


def _load_encoder(app: Flask, settings: Settings) -> None:
    started = time.perf_counter()
    metrics: Metrics = app.extensions["clip_metrics"]
    try:
        encoder = ClipEncoder.load(settings)
    except Exception as exc:  # a worker without its model has nothing to serve: stop gunicorn, say why in one line
        logger.critical("clip-vectorize cannot start: %s", exc)
        os._exit(WORKER_BOOT_ERROR)
    metrics.model_load_seconds.set(time.perf_counter() - started)
    metrics.watch(encoder)
    app.extensions["clip_encoder"] = encoder


def app_from_environment() -> Flask:
    """gunicorn's entry point: a bad setting ends start-up with one clear line, not a stack trace."""
    transformers_logging.disable_progress_bar()  # no progress bars in journald
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        logger.critical("clip-vectorize cannot start: %s", exc)
        raise SystemExit(WORKER_BOOT_ERROR) from None
    return create_app(settings)


# ---------------------------------------------------------------- views


@api.get("/health")
def health():
    encoder = current_app.extensions["clip_encoder"]
    ready = bool(encoder is not None and encoder.ready)
    body = {
        "status": "ok" if ready else "loading",
        "service": SERVICE_NAME,
        "clip_loaded": ready,
        "model": current_app.extensions["clip_model_name"],
        "device": encoder.device if encoder else None,
        "backend": encoder.backend.name if encoder else None,
        "dimension": encoder.dimension if encoder else None,
    }
    return jsonify(body), 200 if ready else 503, {} if ready else {"Retry-After": RETRY_AFTER_SECONDS}


@api.get("/metrics")
def metrics():
    return current_app.extensions["clip_metrics"].exposition()


@api.get("/openapi.json")
def openapi():
    return current_app.response_class(current_app.extensions["clip_openapi"], mimetype="application/json")


@api.post("/encode-text")
def encode_text():
    text = require_text(json_object().get("text"), "text")
    result = _encoder().encode_texts([text])
    return _success(text=text, vector=result.vectors[0].tolist(), truncated=result.truncated[0])


@api.post("/encode-texts")
def encode_texts():
    items = require_list(json_object().get("texts"), "texts")
    texts = [require_text(item, f"texts[{index}]") for index, item in enumerate(items)]
    result = _encoder().encode_texts(texts)
    return _success(texts=texts, vectors=result.vectors.tolist(), count=len(texts), truncated=result.truncated)


@api.post("/encode-image")
def encode_image():
    vectors, errors = _encode_image_inputs([single_image_input()])
    if errors:
        raise InvalidImageError(errors[0]["error"])
    return _success(vector=vectors[0])


@api.post("/encode-images")
def encode_images():
    vectors, errors = _encode_image_inputs(image_list_inputs())
    return _success(vectors=vectors, count=len(vectors), errors=errors)


def _encoder() -> ClipEncoder:
    encoder = current_app.extensions["clip_encoder"]
    if encoder is None or not encoder.ready:
        raise ModelNotReadyError("the CLIP model is still loading; retry in a few seconds")
    return encoder


def _success(**fields: Any):
    encoder = _encoder()
    return jsonify({"status": "success", **fields, "dimension": encoder.dimension, "model": encoder.model_name})


def _encode_image_inputs(inputs: list[bytes | InvalidImageError]) -> tuple[list[list[float] | None], list[dict]]:
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


def main() -> None:
    """`python3 clip_vectorize_service.py`: the same gunicorn server start_clip_service.sh and systemd run."""
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONFIG)])


if __name__ == "__main__":
    main()
