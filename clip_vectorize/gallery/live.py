"""The gallery as the running service holds it: its store (opened on first use, then kept), searches over it, the
background index of CLIP_GALLERY_DIR, and its thumbnails.

The embedded store admits one process: while the service holds it, the command-line indexer is refused (and the
other way round: the service answers 503 until the indexer is done, then opens it). A Qdrant server has no such
limit; several replicas and the indexer share it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clip_vectorize.gallery.background import READING_THREADS, BackgroundIndex, PoliteEncoder
from clip_vectorize.gallery.engines.local import ImageEncoder, LocalEngine
from clip_vectorize.gallery.errors import GalleryError, NoGalleryFolderError
from clip_vectorize.gallery.payload import model_id
from clip_vectorize.gallery.search import GallerySearch
from clip_vectorize.gallery.store import open_store
from clip_vectorize.gallery.store.base import GalleryStore, StoreConfig
from clip_vectorize.gallery.store.copying import local_mode_collection
from clip_vectorize.gallery.thumbnails import Thumbnails
from clip_vectorize.url_fetch import UrlPolicy
from config import Settings


@dataclass(frozen=True)
class ServiceLinks:
    """All the gallery needs of the running service, handed over in one place."""

    model_name: Callable[[], str]  # the service's model, named before it is loaded too
    wait_for_encoder: Callable[[threading.Event], ImageEncoder]  # blocks until the model is up, or the event is set
    busy: Callable[[], bool]  # whether a live request is being served (the background index waits for it)
    on_query: Callable[[float], None]  # hears how long each store query took


class LiveGallery:
    """The one place the service's gallery is wired: store, searches, background index and thumbnails."""

    def __init__(self, settings: Settings, url_policy: UrlPolicy, links: ServiceLinks) -> None:
        self.config = StoreConfig.from_settings(settings)
        self.folder = Path(settings.gallery_dir).expanduser().resolve() if settings.gallery_dir else None
        self.thumbnails = (Thumbnails(self.folder, Path(settings.thumbnail_dir), settings.max_image_pixels)
                           if self.folder else None)
        self._links = links
        self._url_policy = url_policy  # the service's own, for URL items of a manifest
        self._store: GalleryStore | None = None
        self._background: BackgroundIndex | None = None
        self._lock = threading.Lock()
        self._other_models: list[str] | None = None  # cached: finding them scans the collection
        self._stopping = threading.Event()  # set once, when the service stops: no run starts after it

    @property
    def model(self) -> str:
        """The id points of this service's model record (the indexer command's `model_id`)."""
        return model_id(self._links.model_name())

    @property
    def indexes_at_start(self) -> bool:
        """The one-machine path: a folder and the embedded store. With a server, the indexer command fills it."""
        return self.folder is not None and self.config.embedded

    @property
    def moves_at_start(self) -> bool:
        """An embedded store that still has an old local-mode collection to move into Qdrant Edge."""
        return self.config.embedded and local_mode_collection(self.config) is not None

    def store(self) -> GalleryStore:
        """The store, opened now if it is not yet; a StoreError (503) while it cannot be, tried again next time."""
        with self._lock:
            if self._store is None:
                self._store = open_store(self.config)
            return self._store

    def search(self) -> GallerySearch:
        return GallerySearch(self.store(), self._links.on_query)

    def reindex(self) -> BackgroundIndex:
        """Start indexing the folder in the background (an IndexRunningError while a run is under way)."""
        index = self._background_index()
        index.start()
        return index

    def _background_index(self) -> BackgroundIndex:
        if self.folder is None:
            raise NoGalleryFolderError("no gallery folder: start the service with CLIP_GALLERY_DIR=/path/to/photos, "
                                       "or index with python -m clip_vectorize.gallery index FOLDER")
        store = self.store()
        with self._lock:
            if self._background is None:
                self._background = BackgroundIndex(self.folder, store, lambda: self.model, self._engine,
                                                   self._stopping, on_finish=self._forget_models)
            return self._background

    def _engine(self) -> LocalEngine:
        """One reading thread and the live encoder, asked politely; no image is started once the service stops."""
        links = self._links
        return LocalEngine(lambda: PoliteEncoder(links.wait_for_encoder(self._stopping), links.busy),
                           self._url_policy, READING_THREADS, stop=self._stopping)

    @property
    def indexing(self) -> BackgroundIndex | None:
        return self._background

    def stop_indexing(self) -> None:
        """The service is stopping: a background run ends once the images it has read are written, and no other
        starts (the start-up thread may still be waiting for the store)."""
        with self._lock:
            self._stopping.set()
            background = self._background
        if background is not None:
            background.stop()

    def points_if_open(self) -> int | None:
        """Points in the collection, or None when the store is not open: a metrics scrape must not be what takes
        the embedded store from the command-line indexer."""
        store = self._store
        if store is None:
            return None
        try:
            return store.count()
        except GalleryError:
            return None

    def status(self) -> dict[str, Any]:
        store = self.store()
        if self._other_models is None:
            self._other_models = store.foreign_models(self.model)
        indexing = self._background.describe() if self._background else None
        return {"collection": self.config.collection, "store": self.config.where, "exists": store.exists(),
                "points": store.count(), "model": self.model, "other_models": self._other_models,
                "gallery_dir": str(self.folder) if self.folder else None, "indexing": indexing}

    def _forget_models(self) -> None:
        self._other_models = None
