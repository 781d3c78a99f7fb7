"""The gallery's collection on a Qdrant server (or cluster) through qdrant-client: QDRANT_URL (+ QDRANT_API_KEY).

Tests run this very class on qdrant-client's local mode (no server binary installs here): the calls are the same.
Files that could not be indexed are remembered in a companion collection, `<collection>__skipped`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from clip_vectorize.gallery.errors import InvalidFilterError, StoreError
from clip_vectorize.gallery.payload import MODEL, SOURCE
from clip_vectorize.gallery.store.base import (
    Hit,
    IndexedPoint,
    NewPoint,
    PointId,
    SearchQuery,
    SkipRecord,
    StoreConfig,
    Vector,
    as_point_id,
    dimension_mismatch,
    missing_collection,
)
from clip_vectorize.gallery.store.filters import without_point

SCROLL_PAGE = 1000
SKIPPED_SUFFIX = "__skipped"


class _Refused(StoreError):
    """A Qdrant server's 4xx: the request was wrong (or the collection is gone), not the server."""


class ServerStore:
    """One collection (the GalleryStore interface), created on first write with the model's dimension and cosine
    distance."""

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
                for field, kind in [(MODEL, "keyword"), (SOURCE, "keyword"), *self.config.payload_indexes]:
                    self.client.create_payload_index(self.collection, field, models.PayloadSchemaType(kind))
            return
        with self._one_at_a_time():
            vectors = self.client.get_collection(self.collection).config.params.vectors
        existing = vectors.size if isinstance(vectors, models.VectorParams) else None  # None: named vectors
        if existing != dimension:
            raise dimension_mismatch(self.config, existing, dimension)

    def recreate(self) -> None:
        for name in (self.collection, self._skipped):
            with self._one_at_a_time():
                if self.client.collection_exists(name):
                    self.client.delete_collection(name)

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

    def upsert(self, points: Sequence[NewPoint]) -> None:
        """Write and wait until Qdrant has applied it: only then is the work done."""
        if points:
            structs = [models.PointStruct(id=point.id, vector=point.vector, payload=point.payload) for point in points]
            with self._one_at_a_time():
                self.client.upsert(self.collection, points=structs, wait=True)

    def delete(self, ids: Sequence[PointId]) -> None:
        if ids:
            with self._one_at_a_time():
                self.client.delete(self.collection, points_selector=models.PointIdsList(points=list(ids)), wait=True)

    def nearest(self, vector: Vector, query: SearchQuery, exclude: PointId | None = None) -> list[Hit]:
        """One call to the store: a missing collection or a filter the store refuses is told apart only when the
        query fails."""
        condition = without_point(query.condition, exclude) if exclude is not None else query.condition
        try:
            with self._one_at_a_time():
                points = self.client.query_points(
                    self.collection, query=np.asarray(vector, np.float32).tolist(), limit=query.limit,
                    offset=query.offset, score_threshold=query.score_threshold, query_filter=condition,
                    with_payload=True).points
        except (_Refused, ValueError) as exc:  # a server's 4xx; the embedded store's refusals are ValueErrors
            self._explain_refusal(condition, str(exc))
            raise StoreError(f"{self.config.where} refused the query: {exc}") from None
        return [Hit(as_point_id(point.id), point.score, point.payload or {}) for point in points]

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
            raise missing_collection(self.config)

    def skipped_files(self) -> dict[PointId, SkipRecord]:
        with self._one_at_a_time():
            if not self.client.collection_exists(self._skipped):
                return {}
        return {point.id: SkipRecord.from_json({**point.payload, "id": point.id})
                for point in self._scroll(None, True, collection=self._skipped)}

    def remember_skipped(self, records: Sequence[SkipRecord]) -> None:
        if not records:
            return
        with self._one_at_a_time():
            if not self.client.collection_exists(self._skipped):  # a 1-d placeholder vector: Qdrant wants one
                self.client.create_collection(self._skipped, vectors_config=models.VectorParams(
                    size=1, distance=models.Distance.DOT))
            self.client.upsert(self._skipped, wait=True, points=[
                models.PointStruct(id=record.id, vector=[1.0], payload=record.to_json()) for record in records])

    def forget_skipped(self, ids: Sequence[PointId]) -> None:
        if ids:
            with self._one_at_a_time():
                if self.client.collection_exists(self._skipped):
                    self.client.delete(self._skipped, points_selector=models.PointIdsList(points=list(ids)),
                                       wait=True)

    def points_with_vectors(self) -> Iterator[list[NewPoint]]:
        offset = None
        while self.exists():
            with self._one_at_a_time():
                records, offset = self.client.scroll(self.collection, limit=SCROLL_PAGE, offset=offset,
                                                     with_payload=True, with_vectors=True)
            yield [NewPoint(as_point_id(r.id), list(np.asarray(r.vector, np.float32).tolist()), r.payload or {})
                   for r in records]
            if offset is None:
                return

    def build_search_index(self) -> bool:
        return False  # a server builds its index by itself, off the service's process

    def flush(self) -> None:
        pass  # each write waited for the server (wait=True)

    @property
    def _skipped(self) -> str:
        return self.collection + SKIPPED_SUFFIX

    def _scroll(self, condition: models.Filter | None, fields: list[str] | bool, limit: int | None = None,
                collection: str | None = None) -> Iterator[IndexedPoint]:
        offset, seen = None, 0
        while True:
            with self._one_at_a_time():
                points, offset = self.client.scroll(collection or self.collection, scroll_filter=condition,
                                                    limit=SCROLL_PAGE, offset=offset, with_payload=fields,
                                                    with_vectors=False)
            for point in points:
                yield IndexedPoint(as_point_id(point.id), point.payload or {})
                seen += 1
                if limit is not None and seen >= limit:
                    return
            if offset is None:
                return


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
