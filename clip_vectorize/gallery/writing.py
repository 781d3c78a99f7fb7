"""Outcomes into the store: points written in batches (each batch durable when written: the record of work done),
twins given their holder's vector, and bad files remembered."""

from __future__ import annotations

from collections import Counter, defaultdict

from clip_vectorize.gallery.outcome import ImageOutcome
from clip_vectorize.gallery.payload import CONTENT_HASH, PointPayload
from clip_vectorize.gallery.sources import Skipped
from clip_vectorize.gallery.store.base import GalleryStore, IndexedPoint, NewPoint, PointId, SkipRecord
from clip_vectorize.gallery.summary import Summary

TWIN_LOST = ("changed while indexing", "its identical twin changed or could not be indexed meanwhile; the next run "
                                       "encodes it")


class PointWriter:
    """Collects outcomes into points and writes them `batch` at a time. A twin whose holder is not written yet
    (the Ray engine finishes images out of order) waits for it."""

    def __init__(self, store: GalleryStore, source: str, model: str, batch: int,
                 existing: dict[PointId, IndexedPoint], summary: Summary) -> None:
        self.store, self.source, self.model, self.batch = store, source, model, batch
        self.existing, self.summary = existing, summary
        self._pending: list[NewPoint] = []
        self._counts: Counter[str] = Counter()
        self._written: dict[PointId, str | None] = {}  # content of the points written (or pending) in this run
        self._pending_vectors: dict[PointId, list[float]] = {}
        self._waiting: defaultdict[PointId, list[ImageOutcome]] = defaultdict(list)  # twins by their holder
        self._collection_ready = False
        self.bad_files: list[SkipRecord] = []

    def add(self, outcome: ImageOutcome) -> None:
        if outcome.skipped is not None:
            self._skip(outcome, outcome.skipped)
        elif outcome.vector is not None:
            self._ensure_collection(len(outcome.vector))
            self._queue(outcome, outcome.vector.tolist(), "indexed")
        elif outcome.twin is not None:
            self._add_twin(outcome, outcome.twin)
        if len(self._pending) >= self.batch:
            self.flush()

    def finish(self) -> None:
        """Write what is pending; twins whose holder never came are skipped (the next run encodes them)."""
        self.flush()
        for twins in self._waiting.values():
            for twin in twins:
                self._skip(twin, Skipped(twin.item.location, *TWIN_LOST))
        self._waiting.clear()

    def flush(self) -> None:
        self.store.upsert(self._pending)
        self.summary.indexed += self._counts["indexed"]
        self.summary.reused += self._counts["reused"]
        self._pending, self._counts, self._pending_vectors = [], Counter(), {}

    def _add_twin(self, outcome: ImageOutcome, holder: PointId) -> None:
        if holder == outcome.item.point_id and self._unchanged(outcome):
            self.summary.unchanged += 1
            return
        vector = self._holder_vector(holder, outcome.content_hash)
        if vector is None:
            self._waiting[holder].append(outcome)
        else:
            self._queue(outcome, vector, "reused")

    def _holder_vector(self, holder: PointId, content_hash: str | None) -> list[float] | None:
        """The vector of `holder`, if it holds `content_hash` now (pending, written in this run, or stored)."""
        if self._written.get(holder, self._stored_hash(holder)) != content_hash:
            return None
        return self._pending_vectors.get(holder) or self.store.vectors([holder]).get(holder)

    def _stored_hash(self, point_id: PointId) -> str | None:
        point = self.existing.get(point_id)
        return point.payload.get(CONTENT_HASH) if point is not None else None

    def _queue(self, outcome: ImageOutcome, vector: list[float], kind: str) -> None:
        point_id = outcome.item.point_id
        self._pending.append(NewPoint(point_id, vector, self._payload(outcome).to_json()))
        self._pending_vectors[point_id] = vector
        self._written[point_id] = outcome.content_hash
        self._counts[kind] += 1
        for twin in self._waiting.pop(point_id, []):
            self._add_twin(twin, point_id)

    def _skip(self, outcome: ImageOutcome, skipped: Skipped) -> None:
        self.summary.skipped.append(skipped)
        if outcome.remembered_as_bad:
            self.bad_files.append(SkipRecord(outcome.item.point_id, self.source, outcome.item.location,
                                             skipped.reason, skipped.detail, outcome.file_stat))

    def _ensure_collection(self, dimension: int) -> None:
        if not self._collection_ready:  # created with the dimension of the first vector
            self.store.ensure_collection(dimension)
            self._collection_ready = True

    def _unchanged(self, outcome: ImageOutcome) -> bool:
        """The identical content is this very point, with the same payload: nothing to write."""
        point = self.existing.get(outcome.item.point_id)
        return point is not None and point.payload == self._payload(outcome).to_json()

    def _payload(self, outcome: ImageOutcome) -> PointPayload:
        item = outcome.item
        return PointPayload(item.image_id, self.model, self.source, outcome.content_hash,
                            path=str(item.path) if item.path is not None else None, url=item.url,
                            file_stat=outcome.file_stat, extra=item.extra)
