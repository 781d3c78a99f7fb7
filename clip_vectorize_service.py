"""The service's wiring: `create_app()` builds the Flask app, and the gunicorn entry point loads the model.

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

from flask import Flask
from transformers.utils import logging as transformers_logging

from clip_encoder import ClipEncoder
from clip_vectorize.gallery.errors import GalleryError, StoreError
from clip_vectorize.inference.model_source import resolve_model_source
from clip_vectorize.inference.vectors import Encoder
from clip_vectorize.web import encode, gallery, openai_api, page, probes, search
from clip_vectorize.web.access_control import install_api_key, install_cors
from clip_vectorize.web.busy_refusal import install_busy_refusal
from clip_vectorize.web.http_errors import register_error_handlers
from clip_vectorize.web.observability import install_live_request_count, install_request_tracking
from clip_vectorize.web.state import ServiceState, service_state
from config import Settings

logger = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parent
GUNICORN_CONFIG = PROJECT_DIR / "deploy" / "gunicorn.conf.py"
OPENAPI_DOCUMENT = PROJECT_DIR / "clip_vectorize" / "web" / "openapi.json"
STORE_RETRY_S = 30
WORKER_BOOT_ERROR = 3  # gunicorn's arbiter stops (rather than respawning forever) when a worker exits with 3


def create_app(settings: Settings | None = None, encoder: Encoder | None = None) -> Flask:
    """The Flask app around one encoder. It only builds: it loads no model and starts no thread. Without an
    encoder it answers 503 (`clip_loaded: false`) until one is attached with `service_state(app).attach()`."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # Chinese text comes back readable
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    state = ServiceState(settings, resolve_model_source(settings), OPENAPI_DOCUMENT.read_bytes())
    state.install(app)
    install_request_tracking(app, state.metrics)
    install_live_request_count(app, state.live_requests, [encode.blueprint, search.blueprint, openai_api.blueprint])
    install_busy_refusal(app, exempt_blueprints=[probes.blueprint])
    # The page is open: it asks for the key and sends it with every call it makes.
    install_api_key(app, settings.api_key, open_blueprints=[probes.blueprint, page.blueprint])
    install_cors(app, settings.cors_origins)
    for blueprint in (probes.blueprint, encode.blueprint, openai_api.blueprint, search.blueprint, gallery.blueprint,
                      page.blueprint):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    if encoder is not None:
        state.attach(encoder)
    return app


def app_from_environment() -> Flask:
    """gunicorn's entry point: the app at once, the model in the background. A bad setting or a model that
    cannot load ends the worker with one clear line and exit code 3, which stops gunicorn."""
    transformers_logging.disable_progress_bar()  # no progress bars in journald
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        logger.critical("clip-vectorize cannot start: %s", exc)
        raise SystemExit(WORKER_BOOT_ERROR) from None
    app = create_app(settings)
    state = service_state(app)
    threading.Thread(target=_load_encoder, args=(state, settings), name="model-loader", daemon=True).start()
    if state.gallery.indexes_at_start:
        threading.Thread(target=_index_gallery, args=(state,), name="gallery-start", daemon=True).start()
    elif state.gallery.moves_at_start:
        threading.Thread(target=_open_gallery_store, args=(state,), name="gallery-move", daemon=True).start()
    return app


def _open_gallery_store(state: ServiceState) -> None:
    """An old local-mode store to move into Qdrant Edge: opening the store moves it, at start-up rather than on
    the first search's thread."""
    try:
        state.gallery.store()
    except GalleryError as exc:
        logger.error("cannot open the gallery's store: %s", exc)


def _index_gallery(state: ServiceState) -> None:
    """CLIP_GALLERY_DIR with the embedded store: index it now (its run waits for the model; failures reach
    /gallery/status and the log, and the service serves on). A store held by the indexer command is tried again
    every STORE_RETRY_S until that command is done."""
    while True:
        try:
            state.gallery.reindex()
            return
        except StoreError as exc:
            logger.warning("cannot index the gallery yet: %s; trying again in %d s", exc, STORE_RETRY_S)
            time.sleep(STORE_RETRY_S)
        except GalleryError as exc:
            logger.error("cannot index the gallery: %s", exc)
            return


def stop_background_work(app: Flask) -> None:
    """gunicorn's worker_exit: a worker stopping ends the gallery's background run cleanly, rather than leaving the
    interpreter's shutdown to kill it mid-image (with a traceback in the log and its last batch of points lost)."""
    service_state(app).gallery.stop_indexing()


def _load_encoder(state: ServiceState, settings: Settings) -> None:
    started = time.perf_counter()
    try:
        encoder = ClipEncoder.load(settings)
    except Exception as exc:  # a worker without its model has nothing to serve: stop gunicorn, say why in one line
        logger.critical("clip-vectorize cannot start: %s", exc)
        os._exit(WORKER_BOOT_ERROR)
    state.metrics.model_load_seconds.set(time.perf_counter() - started)
    state.attach(encoder)


def main() -> None:
    """`python3 clip_vectorize_service.py`: the same gunicorn server start_clip_service.sh and systemd run."""
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONFIG)])


if __name__ == "__main__":
    main()
