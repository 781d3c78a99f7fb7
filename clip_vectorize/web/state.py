"""What one app instance holds: its settings, metrics, URL policy and gallery, and its encoder once one is attached."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from flask import Flask, current_app

from clip_vectorize.errors import ModelNotReadyError
from clip_vectorize.gallery.live import LiveGallery, ServiceLinks
from clip_vectorize.inference.vectors import Encoder
from clip_vectorize.url_fetch import UrlPolicy
from clip_vectorize.web.observability import Metrics
from config import Settings

_EXTENSION = "clip_vectorize"
ENCODER_POLL_S = 0.5


class LiveRequests:
    """How many encode and search requests are being served right now: background work waits while any are."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self._count += 1

    def leave(self) -> None:
        with self._lock:
            self._count -= 1

    def busy(self) -> bool:
        return self._count > 0


@dataclass
class ServiceState:
    settings: Settings
    model_name: str  # reported before the model is loaded, then the encoder's own
    openapi_document: bytes
    metrics: Metrics = field(default_factory=Metrics)
    encoder: Encoder | None = None
    url_policy: UrlPolicy = field(init=False)
    live_requests: LiveRequests = field(default_factory=LiveRequests)
    gallery: LiveGallery = field(init=False)

    def __post_init__(self) -> None:
        self.url_policy = UrlPolicy.from_settings(self.settings)
        links = ServiceLinks(lambda: self.model_name, self.wait_for_encoder, self.live_requests.busy,
                             self.metrics.qdrant_query_seconds.observe)
        self.gallery = LiveGallery(self.settings, self.url_policy, links)
        self.metrics.gallery_points = self.gallery.points_if_open

    def attach(self, encoder: Encoder) -> None:
        """Serve with this encoder from now on; its batchers start feeding the metrics."""
        self.metrics.watch(encoder)
        self.model_name = encoder.model_name
        self.encoder = encoder

    def ready_encoder(self) -> Encoder:
        """The encoder, or a 503 while the model is still loading."""
        if self.encoder is None or not self.encoder.ready:
            raise ModelNotReadyError("the CLIP model is still loading; retry in a few seconds")
        return self.encoder

    def wait_for_encoder(self, stopping: threading.Event) -> Encoder:
        """The encoder once it is ready, however long the model takes to load (background work only); a
        ModelNotReadyError once `stopping` is set first."""
        while self.encoder is None or not self.encoder.ready:
            if stopping.wait(ENCODER_POLL_S):
                raise ModelNotReadyError("the service stopped before its model was loaded")
        return self.encoder

    def install(self, app: Flask) -> None:
        app.extensions[_EXTENSION] = self


def service_state(app: Flask | None = None) -> ServiceState:
    """The state of `app`, or of the app handling the current request."""
    return (app or current_app).extensions[_EXTENSION]
