"""The gallery's Qdrant collection through qdrant-client: embedded (local mode) by default, a server by URL.

Every point records the model that made its vector, so a collection never silently mixes vector spaces, and
what its source looked like when it was indexed (size, mtime, content hash), so a rerun knows what changed.
The point written with `wait=True` is itself the record of work done: there is no second state file to
disagree with it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from clip_vectorize.errors import CollectionMissingError, InvalidFilterError, StoreError
from config import Settings

PointId = int | str
Vector = Sequence[float] | np.ndarray
# Payload keys the indexer writes beside image_id and path or url; a manifest's extra columns cannot override them.
MODEL, SOURCE, CONTENT_HASH, FILE_SIZE, FILE_MTIME = "model", "source", "content_hash", "file_size", "file_mtime_ns"
RESERVED_PAYLOAD = frozenset({"image_id", "path", "url", MODEL, SOURCE, CONTENT_HASH, FILE_SIZE, FILE_MTIME})
SCROLL_PAGE = 1000


class _Refused(StoreError):
    """A Qdrant server's 4xx: the request was wrong (or the collection is gone), not the server."""


@dataclass(frozen=True)
class StoreConfig:
    """Where the collection lives: `url` (+ `api_key`) for a server, else the embedded store in `path`."""

    collection: str
    url: str | None = None
    api_key: str | None = None
    path: str = "./qdrant_data"

    @classmethod
    def from_settings(cls, settings: Settings) -> StoreConfig:
        return cls(settings.qdrant_collection, settings.qdrant_url, settings.qdrant_api_key, settings.qdrant_path)

    @property
    def embedded(self) -> bool:
        return not self.url

    @property
    def where(self) -> str:
        return f"Qdrant at {self.url}" if self.url else f"the embedded Qdrant store in {Path(self.path).resolve()}"


@dataclass(frozen=True)
class IndexedPoint:
    """What the store remembers of one indexed image: enough to tell whether its source changed."""

    id: PointId
    payload: dict[str, Any]

    @property
    def location(self) -> str | None:
        return self.payload.get("path") or self.payload.get("url")


class GalleryStore:
    """One collection: created on first write with the model's dimension and cosine distance."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.collection = config.collection
        self.client = _connect(config)
        # The embedded store is plain Python dicts and arrays, not made for a search thread reading while an index
        # thread writes: one call at a time. A server's client is thread-safe, and searches run side by side.
        self._lock: contextlib.AbstractContextManager = (
            threading.Lock() if config.embedded else contextlib.nullcontext())

    @contextlib.contextmanager
    def _one_at_a_time(self) -> Iterator[None]:
        """One call into the client: serialized for the embedded store, a server's failure as a StoreError."""
        with self._lock:
            try:
                yield
            except UnexpectedResponse as exc:
                refusal = _Refused if exc.status_code and 400 <= exc.status_code < 500 else StoreError
                raise refusal(f"{self.config.where} answered {exc.status_code}: {exc}") from None
            except ResponseHandlingException as exc:
                raise StoreError(f"cannot connect to {self.config.where}: {exc}") from None

    def close(self) -> None:
        self.client.close()

    def exists(self) -> bool:
        with self._one_at_a_time():
            return self.client.collection_exists(self.collection)

    def ensure_collection(self, dimension: int) -> None:
        """Create the collection (cosine, `dimension`) when missing; a different dimension is an error."""
        if not self.exists():
            with self._one_at_a_time():
                self.client.create_collection(self.collection, vectors_config=models.VectorParams(
                    size=dimension, distance=models.Distance.COSINE))
            return
        with self._one_at_a_time():
            vectors = self.client.get_collection(self.collection).config.params.vectors
        existing = vectors.size if isinstance(vectors, models.VectorParams) else None  # None: named vectors
        if existing != dimension:
            raise StoreError(f"collection '{self.collection}' in {self.config.where} holds {existing}-d vectors; "
                             f"this model makes {dimension}-d ones. Index into another collection "
                             "(QDRANT_COLLECTION=...) or start it again with --recreate")

    def recreate(self) -> None:
        if self.exists():
            with self._one_at_a_time():
                self.client.delete_collection(self.collection)

    def foreign_models(self, model: str) -> list[str]:
        """Model ids other than `model` found in points' payloads (at most a few, for the message)."""
        if not self.exists():
            return []
        foreign = models.Filter(must_not=[models.FieldCondition(key=MODEL, match=models.MatchValue(value=model)),
                                          models.IsEmptyCondition(is_empty=models.PayloadField(key=MODEL))])
        return sorted({str(point.payload.get(MODEL)) for point in self._scroll(foreign, [MODEL], limit=3)})

    def indexed(self) -> dict[PointId, IndexedPoint]:
        """Every point's id and payload (no vectors): what a rerun compares its listing with."""
        if not self.exists():
            return {}
        return {point.id: point for point in self._scroll(None, True)}

    def vectors(self, ids: Sequence[PointId]) -> dict[PointId, list[float]]:
        """Stored vectors by id: a renamed file's vector is copied instead of encoded again."""
        if not ids:
            return {}
        with self._one_at_a_time():
            records = self.client.retrieve(self.collection, list(ids), with_payload=False, with_vectors=True)
        return {as_point_id(record.id): list(np.asarray(record.vector, np.float32).tolist()) for record in records
                if record.vector is not None}

    def upsert(self, points: Sequence[models.PointStruct]) -> None:
        """Write and wait until Qdrant has applied it: only then is the work done."""
        if points:
            with self._one_at_a_time():
                self.client.upsert(self.collection, points=list(points), wait=True)

    def delete(self, ids: Sequence[PointId]) -> None:
        if ids:
            with self._one_at_a_time():
                self.client.delete(self.collection, points_selector=models.PointIdsList(points=list(ids)), wait=True)

    def nearest(self, vector: Vector, limit: int, offset: int = 0, score_threshold: float | None = None,
                condition: models.Filter | None = None) -> list[models.ScoredPoint]:
        """The points nearest to `vector` (cosine, best first), with their payloads. One call to the store: a
        missing collection or a filter the store refuses is told apart only when the query fails."""
        query = np.asarray(vector, np.float32).tolist()
        try:
            with self._one_at_a_time():
                return self.client.query_points(self.collection, query=query, limit=limit, offset=offset,
                                                score_threshold=score_threshold, query_filter=condition,
                                                with_payload=True).points
        except (_Refused, ValueError) as exc:  # a server's 4xx; the embedded store's refusals are ValueErrors
            self._explain_refusal(condition, str(exc))
            raise StoreError(f"{self.config.where} refused the query: {exc}") from None

    def _explain_refusal(self, condition: models.Filter | None, reason: str) -> None:
        """A refused query: nothing indexed yet, or a filter the store cannot apply (a 400, not a retry)."""
        self.require_collection()
        if condition is not None:
            raise InvalidFilterError(f"'filter' cannot be applied: {reason}") from None

    def point(self, point_id: PointId) -> IndexedPoint | None:
        """One point's payload, or None when there is no such point."""
        self.require_collection()
        with self._one_at_a_time():
            records = self.client.retrieve(self.collection, [point_id], with_payload=True, with_vectors=False)
        return IndexedPoint(as_point_id(records[0].id), records[0].payload or {}) if records else None

    def count(self) -> int:
        """Points in the collection; 0 before anything is indexed."""
        if not self.exists():
            return 0
        with self._one_at_a_time():
            return self.client.count(self.collection, exact=True).count

    def require_collection(self) -> None:
        if not self.exists():
            raise CollectionMissingError(
                f"the collection '{self.collection}' does not exist in {self.config.where}: nothing has been indexed "
                "yet. Index a folder (python -m clip_vectorize.gallery index FOLDER, or start the service with "
                "CLIP_GALLERY_DIR), or set QDRANT_COLLECTION to the collection that holds the gallery")

    def _scroll(self, condition: models.Filter | None, fields: list[str] | bool,
                limit: int | None = None) -> Iterator[IndexedPoint]:
        offset, seen = None, 0
        while True:
            with self._one_at_a_time():
                points, offset = self.client.scroll(self.collection, scroll_filter=condition, limit=SCROLL_PAGE,
                                                    offset=offset, with_payload=fields, with_vectors=False)
            for point in points:
                yield IndexedPoint(as_point_id(point.id), point.payload or {})
                seen += 1
                if limit is not None and seen >= limit:
                    return
            if offset is None:
                return


def as_point_id(raw: Any) -> PointId:
    """Qdrant answers uuid ids as strings or UUIDs, depending on the mode: strings here, as we wrote them."""
    return raw if isinstance(raw, int) else str(raw)


def _connect(config: StoreConfig) -> QdrantClient:
    """A client for the server at `url`, or the embedded store in `path`; a locked store is one clear line."""
    if config.url:
        client = QdrantClient(url=config.url, api_key=config.api_key)
        try:
            client.get_collections()
        except (ResponseHandlingException, UnexpectedResponse, OSError) as exc:
            raise StoreError(f"cannot reach Qdrant at {config.url}: {exc}. Check QDRANT_URL and "
                             "QDRANT_API_KEY") from None
        return client
    Path(config.path).mkdir(parents=True, exist_ok=True)
    try:
        # Opened by whichever thread asks first and used by others: calls are serialized by GalleryStore itself.
        return QdrantClient(path=config.path, force_disable_check_same_thread=True)
    except RuntimeError as exc:
        if "already accessed" not in str(exc):
            raise
        raise StoreError(f"the embedded Qdrant store in {Path(config.path).resolve()} is in use by another process "
                         "(local mode allows one): stop it, or if it is the service, ask it to index its own folder "
                         "(POST /gallery/reindex), or use a Qdrant server (QDRANT_URL) that several processes can "
                         "share") from None
