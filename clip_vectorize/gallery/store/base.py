"""The one interface every gallery store implements, and the plain types that cross it (no Qdrant library's types).

A point written by `upsert` is itself the record of work done: when the call returns it survives the process, so
there is no second state file to disagree with the store. Beside the points, a store remembers the files that could
not be indexed (`SkipRecord`), so a rerun tries a bad file again only once it has changed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from clip_vectorize.gallery.errors import CollectionMissingError, StoreError
from clip_vectorize.gallery.payload import FILE_MTIME, FILE_SIZE, PATH, SOURCE, URL, FileStat
from config import Settings

PointId = int | str
Vector = Sequence[float] | np.ndarray
SearchFilter = Any  # a validated filter from `filters.parse_filter`; only the stores look inside it


@dataclass(frozen=True)
class StoreConfig:
    """Where the collection lives: `url` (+ `api_key`) for a server, else the embedded store in `path`."""

    collection: str
    url: str | None = None
    api_key: str | None = None
    path: str = "./qdrant_data"
    payload_indexes: tuple[tuple[str, str], ...] = ()  # (field, type): indexed when the collection is created

    @classmethod
    def from_settings(cls, settings: Settings) -> StoreConfig:
        return cls(settings.qdrant_collection, settings.qdrant_url, settings.qdrant_api_key, settings.qdrant_path,
                   parse_payload_indexes(settings.qdrant_payload_indexes))

    @property
    def embedded(self) -> bool:
        return not self.url

    @property
    def where(self) -> str:
        return f"Qdrant at {self.url}" if self.url else f"the embedded Qdrant store in {Path(self.path).resolve()}"


@dataclass(frozen=True)
class IndexedPoint:
    """A stored point's id and payload, as stored (the JSON the search endpoints return)."""

    id: PointId
    payload: dict[str, Any]

    @property
    def location(self) -> str | None:
        return self.payload.get(PATH) or self.payload.get(URL)


@dataclass(frozen=True)
class NewPoint:
    id: PointId
    vector: list[float]
    payload: dict[str, Any]


@dataclass(frozen=True)
class SkipRecord:
    """A file that could not be indexed, as it was then: tried again once its size or mtime differ."""

    id: PointId  # the point id the file would have
    source: str
    location: str
    reason: str
    detail: str
    file_stat: FileStat

    def to_json(self) -> dict[str, Any]:
        """The stored form, for both stores (the server's payload, the embedded store's file)."""
        return {"id": self.id, SOURCE: self.source, "location": self.location, "reason": self.reason,
                "detail": self.detail, FILE_SIZE: self.file_stat.size, FILE_MTIME: self.file_stat.mtime_ns}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SkipRecord:
        return cls(raw["id"], str(raw[SOURCE]), str(raw["location"]), str(raw["reason"]), str(raw.get("detail", "")),
                   FileStat(raw.get(FILE_SIZE), raw.get(FILE_MTIME)))


@dataclass(frozen=True)
class SearchQuery:
    limit: int = 20
    offset: int = 0
    score_threshold: float | None = None
    condition: SearchFilter | None = None


@dataclass(frozen=True)
class Hit:
    id: PointId
    score: float
    payload: dict[str, Any]


class GalleryStore(Protocol):
    """One collection of 512-d (the model's dimension) cosine vectors, created on first write."""

    config: StoreConfig

    def close(self) -> None: ...

    def exists(self) -> bool: ...

    def ensure_collection(self, dimension: int) -> None:
        """Create the collection when missing; a StoreError when it holds vectors of another dimension."""

    def recreate(self) -> None:
        """Drop the collection and what it remembers of skipped files."""

    def foreign_models(self, model: str) -> list[str]:
        """Model ids other than `model` found in points' payloads (at most a few, for the message)."""

    def indexed(self) -> dict[PointId, IndexedPoint]:
        """Every point's id and payload (no vectors): what a rerun compares its listing with."""

    def vectors(self, ids: Sequence[PointId]) -> dict[PointId, list[float]]: ...

    def upsert(self, points: Sequence[NewPoint]) -> None:
        """Write `points`; when this returns they survive the process."""

    def delete(self, ids: Sequence[PointId]) -> None: ...

    def nearest(self, vector: Vector, query: SearchQuery, exclude: PointId | None = None) -> list[Hit]:
        """The points nearest to `vector` (cosine, best first) with their payloads, `exclude` left out."""

    def point(self, point_id: PointId) -> IndexedPoint | None: ...

    def require_collection(self) -> None:
        """A CollectionMissingError while nothing has been indexed."""

    def points_with_vectors(self) -> Iterator[list[NewPoint]]:
        """Every point with its vector, a page at a time (moving a store)."""

    def flush(self) -> None:
        """What was written survives even a power cut once this returns."""

    def build_search_index(self) -> bool:
        """After an index run: build what searches need, if anything (a server does it by itself)."""

    def count(self) -> int:
        """Points in the collection; 0 before anything is indexed."""

    def skipped_files(self) -> dict[PointId, SkipRecord]: ...

    def remember_skipped(self, records: Sequence[SkipRecord]) -> None: ...

    def forget_skipped(self, ids: Sequence[PointId]) -> None: ...


PAYLOAD_INDEX_TYPES = ("keyword", "integer", "float", "bool", "datetime")


def parse_payload_indexes(declared: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """QDRANT_PAYLOAD_INDEXES's `field:type` items; a ValueError naming the variable for anything else."""
    indexes = []
    for item in declared:
        field, _, kind = item.partition(":")
        if not field or kind not in PAYLOAD_INDEX_TYPES:
            raise ValueError(f"QDRANT_PAYLOAD_INDEXES: {item!r} is not field:type with type one of "
                             f"{', '.join(PAYLOAD_INDEX_TYPES)}")
        indexes.append((field, kind))
    return tuple(indexes)


def missing_collection(config: StoreConfig) -> CollectionMissingError:
    return CollectionMissingError(
        f"the collection '{config.collection}' does not exist in {config.where}: nothing has been indexed "
        "yet. Index a folder (python -m clip_vectorize.gallery index FOLDER, or start the service with "
        "CLIP_GALLERY_DIR), or set QDRANT_COLLECTION to the collection that holds the gallery")


def dimension_mismatch(config: StoreConfig, existing: int | None, dimension: int) -> StoreError:
    return StoreError(f"collection '{config.collection}' in {config.where} holds {existing}-d vectors; "
                      f"this model makes {dimension}-d ones. Index into another collection "
                      "(QDRANT_COLLECTION=...) or start it again with --recreate")


def as_point_id(raw: Any) -> PointId:
    """Stores answer uuid ids as strings or UUIDs: strings here, as they were written."""
    return raw if isinstance(raw, int) else str(raw)
