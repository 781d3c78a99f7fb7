"""Who may call: an optional shared-secret API key for the encode endpoints, and CORS only for listed origins."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from flask import Blueprint, Flask, Response, request

from clip_vectorize.web.http_errors import ApiError


def install_api_key(app: Flask, api_key: str | None, open_blueprints: Iterable[Blueprint]) -> None:
    """With CLIP_SERVICE_API_KEY set, every endpoint outside `open_blueprints` needs `Authorization: Bearer <key>`
    (401 otherwise). Open is the exception a blueprint is registered with, so a new endpoint is closed by default."""
    if not api_key:
        return
    expected = api_key.encode()
    open_names = {blueprint.name for blueprint in open_blueprints}

    @app.before_request
    def _require_key() -> None:
        if request.method == "OPTIONS" or request.endpoint is None or request.blueprint in open_names:
            return
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):  # constant time
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>' (CLIP_SERVICE_API_KEY)",
                           "unauthorized", {"WWW-Authenticate": 'Bearer realm="clip-vectorize"'})


def install_cors(app: Flask, origins: tuple[str, ...]) -> None:
    """Browsers on the listed origins (or any, with "*") may call; without CLIP_CORS_ORIGINS no CORS header is sent."""
    if not origins:
        return

    @app.after_request
    def _cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and ("*" in origins or origin in origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "X-Request-ID, Retry-After"
            response.vary.add("Origin")
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
                response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization, X-Request-ID"
                response.headers["Access-Control-Max-Age"] = "600"
        return response
