"""Quick refusals when every request thread is busy: no request waits in gunicorn's thread-pool queue.

gunicorn's gthread worker hands each readable connection to a thread pool whose queue has no bound. Under
overload every thread holds a request waiting for the model, so a new request waits there, unseen by the
service's own overload control (CLIP_QUEUE_SIZE, CLIP_REQUEST_TIMEOUT_S), for seconds before it is refused.
`QuickRefusalWorker` counts busy threads and sends a connection that arrives when none is free to a small pool
of its own instead. There the app runs as usual but answers 503 `overloaded` (with `Retry-After`) before reading
the body, so the refusal costs a millisecond, is logged and counted like any other, and takes the same shape.
Probes are exempt: ops still get `/health` and `/metrics` from an overloaded worker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent import futures
from typing import Any

from flask import Blueprint, Flask, request
from gunicorn.workers.gthread import _DEFER, ThreadWorker

from clip_vectorize.errors import OverloadedError

BUSY_ENVIRON_KEY = "clip_vectorize.every_thread_busy"
REFUSAL_THREADS = 4  # a refusal reads headers and writes ~150 bytes; a few threads keep up with any client


def install_busy_refusal(app: Flask, exempt_blueprints: Iterable[Blueprint]) -> None:
    """Refuse a request the worker marked as arriving with every thread busy, unless it is to an exempt blueprint."""
    exempt = {blueprint.name for blueprint in exempt_blueprints}

    @app.before_request
    def _refuse_when_busy() -> None:
        if request.environ.get(BUSY_ENVIRON_KEY) and request.blueprint not in exempt:
            raise OverloadedError("every request thread is busy; retry shortly")


class QuickRefusalWorker(ThreadWorker):
    """gthread, except that a connection arriving when all `threads` are busy goes to a small refusal pool."""

    def init_process(self) -> None:
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._on_refusal_thread = threading.local()
        self._refusal_pool = futures.ThreadPoolExecutor(REFUSAL_THREADS, thread_name_prefix="busy-refusal")
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi: Callable[..., Any] = _marking_busy(self.wsgi, self._on_refusal_thread)

    def enqueue_req(self, conn: Any) -> None:
        with self._busy_lock:
            free = self._busy < self.cfg.threads
            if free:
                self._busy += 1
        if free:
            done = self.tpool.submit(self._handle_on_request_thread, conn)
        else:
            done = self._refusal_pool.submit(self._handle_on_refusal_thread, conn)
        done.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    def _handle_on_request_thread(self, conn: Any) -> Any:
        try:
            return self.handle(conn)
        finally:
            with self._busy_lock:
                self._busy -= 1

    def _handle_on_refusal_thread(self, conn: Any) -> Any:
        if not conn.initialized and not conn.data_ready and not conn.wait_for_data(0):
            return _DEFER  # nothing sent yet: back to the poller, never a refusal thread held waiting for it
        self._on_refusal_thread.active = True
        return self.handle(conn)

    def run(self) -> None:
        try:
            super().run()
        finally:
            self._refusal_pool.shutdown(wait=False)


def _marking_busy(app: Callable[..., Any], on_refusal_thread: threading.local) -> Callable[..., Any]:
    """The WSGI app, with requests served on a refusal thread marked in the environ for the app to refuse."""

    def marked(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if getattr(on_refusal_thread, "active", False):
            environ[BUSY_ENVIRON_KEY] = True
        return app(environ, start_response)

    return marked
