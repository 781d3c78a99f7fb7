"""What ops and scrapers call, never behind the API key: /health, /metrics and the OpenAPI document."""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, Response, current_app, jsonify

from clip_vectorize.web.http_errors import RETRY_AFTER_SECONDS
from clip_vectorize.web.state import service_state

SERVICE_NAME = "clip-vectorize"

blueprint = Blueprint("probes", __name__)


@blueprint.get("/health")
def health() -> tuple[Response, int, dict[str, str]]:
    state = service_state()
    encoder = state.encoder
    ready = bool(encoder is not None and encoder.ready)
    body = {
        "status": "ok" if ready else "loading",
        "service": SERVICE_NAME,
        "clip_loaded": ready,
        "model": state.model_name,
        "device": encoder.device if encoder else None,
        "backend": encoder.backend_name if encoder else None,
        "precision": encoder.precision if encoder else None,
        "dimension": encoder.dimension if encoder else None,
        "text_routing": encoder.text_routing if encoder else state.settings.text_routing,
        "encoders": [asdict(info) for info in encoder.text_encoders()] if encoder else None,
    }
    return jsonify(body), 200 if ready else 503, {} if ready else {"Retry-After": RETRY_AFTER_SECONDS}


@blueprint.get("/metrics")
def metrics() -> Response:
    return service_state().metrics.exposition()


@blueprint.get("/openapi.json")
def openapi() -> Response:
    return current_app.response_class(service_state().openapi_document, mimetype="application/json")
