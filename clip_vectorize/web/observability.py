"""What ops watch (the ops guide: response time, success rate, memory): Prometheus metrics and request logs.

Every request gets an id (the caller's `X-Request-ID`, or a new one), echoed back, and one log line with
method, path, status and latency; never the text or image content.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from clip_vectorize.inference.vectors import Encoder

if TYPE_CHECKING:  # state imports this module for Metrics
    from clip_vectorize.web.state import LiveRequests

access_log = logging.getLogger("clip_vectorize.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # what we accept from callers; anything else is replaced


class Metrics:
    """One registry per app, so tests (and several apps in one process) do not share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("clip_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=self.registry)
        self.latency = Histogram(
            "clip_request_duration_seconds", "HTTP request latency by endpoint", ["endpoint"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.batch_size = Histogram("clip_batch_size", "Items per forward pass", ["encoder", "tower"],
                                    registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.qdrant_query_seconds = Histogram(
            "clip_qdrant_query_seconds", "Qdrant's own search time (the query alone, not encoding the text or image)",
            registry=self.registry, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.model_load_seconds = Gauge("clip_model_load_seconds", "Seconds the model took to load and warm up",
                                        registry=self.registry)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU seconds, open fds
        self.encoder: Encoder | None = None
        self.registry.register(_EncoderCollector(self))
        self.gallery_points: Callable[[], int | None] = lambda: None
        self.registry.register(_GalleryCollector(self))

    def watch(self, encoder: Encoder) -> None:
        """Follow this encoder: its forward passes feed the batch-size histogram; scrapes read its queues and cache."""
        self.encoder = encoder
        for (name, tower), batcher in encoder.batchers().items():
            batcher.on_batch = self.batch_size.labels(name, tower).observe

    def exposition(self) -> Response:
        return Response(generate_latest(self.registry), mimetype="text/plain; version=0.0.4")


class _EncoderCollector:
    """Figures read from the encoder at scrape time: readiness, queue depth, text cache hits and misses."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        encoder = self._metrics.encoder
        ready = GaugeMetricFamily("clip_model_ready", "1 when the model is loaded and warmed up")
        ready.add_metric([], 1.0 if encoder is not None and encoder.ready else 0.0)
        yield ready
        if encoder is None:
            return
        depth = GaugeMetricFamily("clip_queue_depth", "Items waiting for a forward pass", labels=["encoder", "tower"])
        for (name, tower), batcher in encoder.batchers().items():
            depth.add_metric([name, tower], batcher.depth)
        yield depth
        cache = CounterMetricFamily("clip_text_cache_lookups", "Text-vector cache lookups by encoder and result",
                                    labels=["encoder", "result"])
        for name, counts in encoder.text_cache_counts().items():
            cache.add_metric([name, "hit"], counts.hits)
            cache.add_metric([name, "miss"], counts.misses)
        yield cache


class _GalleryCollector:
    """The collection's point count, read at scrape time (absent until the service has opened the store)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        points = self._metrics.gallery_points()
        if points is not None:
            yield GaugeMetricFamily("clip_gallery_points", "Points in the gallery's Qdrant collection", value=points)


def install_live_request_count(app: Flask, live: LiveRequests, blueprints: Iterable[Blueprint]) -> None:
    """Count the requests of `blueprints` while they are served (the gallery's background index yields to them)."""
    names = {blueprint.name for blueprint in blueprints}

    @app.before_request
    def _enter() -> None:
        if request.blueprint in names:
            live.enter()
            g.live_request = True

    @app.teardown_request
    def _leave(exc: BaseException | None) -> None:
        if g.pop("live_request", False):
            live.leave()


def install_request_tracking(app: Flask, metrics: Metrics) -> None:
    """Request id in, request id out; one log line and the metrics for every request, errors included."""

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"  # bounded label values
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(elapsed)
        request_id = g.get("request_id") or uuid.uuid4().hex
        response.headers["X-Request-ID"] = request_id
        access_log.info(
            "%s %s %s %d %.1fms", request_id, request.method, request.path, response.status_code, elapsed * 1000,
            extra={"request_id": request_id, "method": request.method, "path": request.path,
                   "status": response.status_code, "duration_ms": round(elapsed * 1000, 1)},
        )
        return response
