"""gunicorn settings: `gunicorn --config deploy/gunicorn.conf.py` is how clip-vectorize runs, everywhere.

`python3 clip_vectorize_service.py`, `./start_clip_service.sh` and the systemd unit all run this one command.
The process settings below are config.ServerSettings, read from environment variables (listed in the README);
the app's own settings (config.Settings) are read inside each worker, and here only for the default thread count.
"""

import sys
from pathlib import Path

chdir = str(Path(__file__).resolve().parent.parent)  # the project root, whatever directory we were started from
sys.path.insert(0, chdir)  # gunicorn adds `chdir` to the path only after reading this file; config.py lives there
from config import ServerSettings, Settings  # noqa: E402

_BOOT_ERROR = 3  # the exit code a worker uses when it cannot start, which stops gunicorn rather than respawning


def _server_settings() -> ServerSettings:
    try:
        return ServerSettings.from_env()
    except ValueError as exc:  # one clear line, not a traceback, and the exit code a worker uses for the same
        print(f"clip-vectorize cannot start: {exc}", file=sys.stderr)
        raise SystemExit(_BOOT_ERROR) from None


def _refuse_an_embedded_gallery_in_several_workers(workers: int) -> None:
    """The embedded Qdrant store admits one process: a gallery folder indexed into it needs the one worker."""
    try:
        app = Settings.from_env()
    except ValueError:  # the worker stops start-up with that error in one line
        return
    if workers > 1 and app.gallery_dir and not app.qdrant_url:
        print("clip-vectorize cannot start: CLIP_GALLERY_DIR with the embedded Qdrant store needs CLIP_WORKERS=1 "
              "(the store admits one process); for several workers use a Qdrant server (QDRANT_URL)", file=sys.stderr)
        raise SystemExit(_BOOT_ERROR)
    if workers > 1 and not app.qdrant_url:  # encoding is fine; searching is not, so say it once, at start-up
        print(f"clip-vectorize: with CLIP_WORKERS={workers} and the embedded Qdrant store only the first worker to "
              "open the store can search (the others answer 503 store_unavailable); set QDRANT_URL to search from "
              "every worker", file=sys.stderr)


def _default_threads() -> int:
    """The model's queue plus a batch in flight plus headroom, from the app's own settings."""
    try:
        app = Settings.from_env()
    except ValueError:  # the worker stops start-up with that error in one line; the defaults do until then
        app = Settings()
    return app.queue_size + app.batch_size + 32


_server = _server_settings()
_refuse_an_embedded_gallery_in_several_workers(_server.workers)
wsgi_app = "clip_vectorize_service:app_from_environment()"
bind = [_server.bind]

# Each worker process loads its own copy of the model: about 600 MB of fp32 ViT-B/32 weights plus the runtime,
# roughly 1 GB of RSS per worker. Inference already spreads over every core (torch's intra-op threads), so on
# a small CPU a second worker adds memory, not throughput. Raise CLIP_WORKERS only on a large machine, and
# only with ~1 GB of RAM free per extra worker.
workers = _server.workers

# Threads let one worker hold many requests at once, so concurrent requests can share one batched forward
# pass (a request thread mostly waits for the batcher), and /health answers while an image is being encoded;
# JSON parsing and image decoding overlap with the forward pass (the runtimes release the GIL).
# Overload control (CLIP_QUEUE_SIZE, CLIP_REQUEST_TIMEOUT_S) sees only requests that hold a thread. With
# stock gthread a request arriving when every thread is busy waits in the pool's unbounded queue (seconds, under
# overload); QuickRefusalWorker is gthread that answers it at once with a 503 instead (probes still answered).
# There are more threads than the model's queue plus a batch in flight (64 + 32 + 32 = 128 by default).
worker_class = "clip_vectorize.web.busy_refusal.QuickRefusalWorker"
threads = _server.threads or _default_threads()

# A worker loads and warms up the model before answering; on a slow CPU that takes 1-2 minutes, and gunicorn
# kills a worker that stays silent longer than `timeout`. With gthread a long request does not count as silence.
timeout = _server.timeout
graceful_timeout = 30  # on SIGTERM, in-flight requests and then the gallery's index run get this long to finish
keepalive = 5  # the Node.js backend reuses connections
control_socket_disable = True  # gunicornc is not used, and the unit gives the service no home to put the socket in


def worker_exit(server, worker) -> None:
    """In a worker that served (the master calls this too, with no app loaded): stop its background work."""
    app = getattr(worker.app, "callable", None)
    if app is not None:
        from clip_vectorize_service import stop_background_work

        stop_background_work(app)


# The app writes one line per request itself (request id, status, latency; never content), so no gunicorn
# access log. Everything goes to stderr, which journald collects; CLIP_LOG_FORMAT=json for log shippers.
accesslog = None
_json_logs = _server.log_format == "json"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "service": {"()": "clip_vectorize.log_format.JsonFormatter"} if _json_logs
        else {"format": "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"},
    },
    "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "service"}},
    "root": {"level": _server.log_level, "handlers": ["stderr"]},
    "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False}},
}
