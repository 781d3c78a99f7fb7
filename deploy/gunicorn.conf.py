"""gunicorn settings: `gunicorn --config deploy/gunicorn.conf.py` is how clip-vectorize runs, everywhere.

`python3 clip_vectorize_service.py`, `./start_clip_service.sh` and the systemd unit all run this one command.
The process settings below come from environment variables (listed in the README); the app's own settings are
read by config.Settings.from_env() inside each worker.
"""

import os
from pathlib import Path

chdir = str(Path(__file__).resolve().parent.parent)  # the project root, whatever directory we were started from
wsgi_app = "clip_vectorize_service:app_from_environment()"

_host = os.environ.get("CLIP_SERVICE_HOST") or "0.0.0.0"
_port = os.environ.get("CLIP_SERVICE_PORT") or "5001"
bind = [f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"]

# Each worker process loads its own copy of the model: about 600 MB of fp32 ViT-B/32 weights plus the runtime,
# roughly 1 GB of RSS per worker. Inference already spreads over every core (torch's intra-op threads), so on
# a small CPU a second worker adds memory, not throughput. Raise CLIP_WORKERS only on a large machine, and
# only with ~1 GB of RAM free per extra worker.
workers = int(os.environ.get("CLIP_WORKERS") or 1)

# Threads let one worker hold many requests at once, so concurrent requests can share one batched forward
# pass (a request thread mostly waits for the batcher), and /health answers while an image is being encoded;
# JSON parsing and image decoding overlap with the forward pass (the runtimes release the GIL).
# Overload control (CLIP_QUEUE_SIZE, CLIP_REQUEST_TIMEOUT_S) sees only requests that hold a thread: one
# parked in gunicorn's own connection queue waits without bound. So there are more threads than the model's
# queue plus a batch in flight (64 + 32 + 32 = 128 by default; defaults as in config.Settings).
worker_class = "gthread"
_QUEUE_SIZE = int(os.environ.get("CLIP_QUEUE_SIZE") or 64)
_BATCH_SIZE = int(os.environ.get("BATCH_SIZE") or 32)
threads = int(os.environ.get("CLIP_THREADS") or _QUEUE_SIZE + _BATCH_SIZE + 32)

# A worker loads and warms up the model before answering; on a slow CPU that takes 1-2 minutes, and gunicorn
# kills a worker that stays silent longer than `timeout`. With gthread a long request does not count as silence.
timeout = int(os.environ.get("CLIP_TIMEOUT") or 180)
graceful_timeout = 30  # on SIGTERM, in-flight requests get this long to finish
keepalive = 5  # the Node.js backend reuses connections
control_socket_disable = True  # gunicornc is not used, and the unit gives the service no home to put the socket in

# The app writes one line per request itself (request id, status, latency; never content), so no gunicorn
# access log. Everything goes to stderr, which journald collects; CLIP_LOG_FORMAT=json for log shippers.
accesslog = None
_json_logs = (os.environ.get("CLIP_LOG_FORMAT") or "text").lower() == "json"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "service": {"()": "clip_vectorize.log_format.JsonFormatter"} if _json_logs
        else {"format": "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"},
    },
    "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "service"}},
    "root": {"level": os.environ.get("CLIP_LOG_LEVEL") or "INFO", "handlers": ["stderr"]},
    "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False}},
}
