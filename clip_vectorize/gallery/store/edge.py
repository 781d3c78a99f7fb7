"""The embedded store (the default, QDRANT_URL unset): Qdrant Edge, Qdrant's own engine in this process.

One Edge shard per collection, in `QDRANT_PATH/edge/<collection>`. One process at a time: this store holds a lock
on `QDRANT_PATH/edge/.lock` from opening to closing (Edge's own lock on its write-ahead log, never turned off, covers
only a shard that exists). The binding holds the GIL for the whole of each call, so a request thread makes only
short calls: searches, single reads and writes of one batch. Files that could not be indexed are remembered in
`<collection>.skipped.json` beside the shard.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import qdrant_edge as qe

from clip_vectorize.gallery.errors import StoreError
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
from clip_vectorize.gallery.store.edge_filters import exclude_ids, to_edge_filter
from clip_vectorize.gallery.store.edge_index import EXACT_UP_TO, INDEXING_THRESHOLD_KB, SearchPlan, build_copy

logger = logging.getLogger(__name__)

SCROLL_PAGE = 1000
FLUSH_EVERY_S = 1.0  # a killed process loses nothing (the WAL); this bounds what a power cut can take
KEYWORD_FIELDS = (MODEL, SOURCE)  # what the store itself filters on
EDGE_SCHEMA = {"keyword": qe.PayloadSchemaType.Keyword, "integer": qe.PayloadSchemaType.Integer,
               "float": qe.PayloadSchemaType.Float, "bool": qe.PayloadSchemaType.Bool,
               "datetime": qe.PayloadSchemaType.Datetime}
UNINDEXED_UP_TO = 20_000  # points outside the index, searched exactly, before it is built again


class EdgeStore:
    """One collection in one Edge shard (the GalleryStore interface)."""

    def __init__(self, config: StoreConfig, search_plan: SearchPlan | None = None) -> None:
        self.config = config
        self.root = Path(config.path).expanduser() / "edge"
        self.shard_dir = self.root / config.collection
        self.search_plan = search_plan or SearchPlan()
        self._lock = threading.RLock()  # the shard may be closed and reopened (recreate, a new index)
        self._holding = _lock_store(self.root, config)
        self._last_flush = 0.0
        self._search_params = self.search_plan.params(0)
        try:
            self._recover_interrupted_swap()
            self.shard = self._load() if self.exists_on_disk else None
        except BaseException:
            self._holding.close()
            raise

    @property
    def exists_on_disk(self) -> bool:
        return (self.shard_dir / "edge_config.json").is_file()

    def close(self) -> None:
        """Flush, close, and release the store to another process, whatever fails on the way."""
        with self._lock:
            shard, self.shard = self.shard, None
            try:
                if shard is not None:
                    try:
                        shard.flush()
                    finally:
                        shard.close()
            finally:
                self._holding.close()

    def exists(self) -> bool:
        return self.shard is not None

    def ensure_collection(self, dimension: int) -> None:
        with self._lock:
            if self.shard is None:
                self.shard = self._create(dimension)
                return
        existing = self.dimension()
        if existing != dimension:
            raise dimension_mismatch(self.config, existing, dimension)

    def dimension(self) -> int | None:
        """The vector size the shard was created with (the binding has no getter for it)."""
        config = json.loads((self.shard_dir / "edge_config.json").read_text())
        return config.get("vectors", {}).get("", {}).get("size")

    def recreate(self) -> None:
        with self._lock:
            if self.shard is not None:
                self.shard.close()
                self.shard = None
            shutil.rmtree(self.shard_dir, ignore_errors=True)
            self._skip_file.unlink(missing_ok=True)

    def foreign_models(self, model: str) -> list[str]:
        if self.shard is None:
            return []
        foreign = qe.Filter(must_not=[qe.FieldCondition(key=MODEL, match=qe.MatchValue(model)),
                                      qe.IsEmptyCondition(key=MODEL)])
        records, _ = self._call(lambda shard: shard.scroll(qe.ScrollRequest(limit=3, filter=foreign,
                                                                            with_payload=[MODEL], with_vector=False)))
        return sorted({str((record.payload or {}).get(MODEL)) for record in records})

    def indexed(self) -> dict[PointId, IndexedPoint]:
        return {as_point_id(r.id): IndexedPoint(as_point_id(r.id), dict(r.payload or {}))
                for records in self._pages(with_vector=False) for r in records}

    def vectors(self, ids: Sequence[PointId]) -> dict[PointId, list[float]]:
        if not ids or self.shard is None:
            return {}
        records = self._call(lambda shard: shard.retrieve([_edge_id(i) for i in ids], False, True))
        return {as_point_id(record.id): _dense(record.vector) for record in records if record.vector is not None}

    def upsert(self, points: Sequence[NewPoint]) -> None:
        if points:
            edge_points = [qe.Point(_edge_id(point.id), point.vector, point.payload) for point in points]
            self._write(qe.UpdateOperation.upsert_points(edge_points))

    def delete(self, ids: Sequence[PointId]) -> None:
        if ids and self.shard is not None:
            self._write(qe.UpdateOperation.delete_points([_edge_id(i) for i in ids]))

    def nearest(self, vector: Vector, query: SearchQuery, exclude: PointId | None = None) -> list[Hit]:
        condition = to_edge_filter(query.condition) if query.condition is not None else None
        if exclude is not None:
            condition = exclude_ids(condition, [exclude])
        request = qe.QueryRequest(query=qe.Query.Nearest(np.asarray(vector, np.float32).tolist()), limit=query.limit,
                                  offset=query.offset, score_threshold=query.score_threshold, filter=condition,
                                  with_payload=True, params=self._search_params)
        points = self._call(lambda shard: shard.query(request))
        return [Hit(as_point_id(point.id), point.score, dict(point.payload or {})) for point in points]

    def point(self, point_id: PointId) -> IndexedPoint | None:
        records = self._call(lambda shard: shard.retrieve([_edge_id(point_id)], True, False))
        return IndexedPoint(as_point_id(records[0].id), dict(records[0].payload or {})) if records else None

    def count(self) -> int:
        if self.shard is None:
            return 0
        return self._call(lambda shard: shard.count(qe.CountRequest(exact=True, filter=None)))

    def require_collection(self) -> None:
        if self.shard is None:
            raise missing_collection(self.config)

    def points_with_vectors(self) -> Iterator[list[NewPoint]]:
        """Every point with its vector, a page at a time (copying the store to a server)."""
        for records in self._pages(with_vector=True):
            yield [NewPoint(as_point_id(r.id), _dense(r.vector), dict(r.payload or {})) for r in records]

    def flush(self) -> None:
        with self._lock:
            if self.shard is not None:
                self.shard.flush()
                self._last_flush = time.monotonic()

    # ------------------------------------------------------------ files that could not be indexed

    @property
    def _skip_file(self) -> Path:
        return self.root / f"{self.config.collection}.skipped.json"

    def skipped_files(self) -> dict[PointId, SkipRecord]:
        try:
            rows = json.loads(self._skip_file.read_text())
        except FileNotFoundError:
            return {}
        records = [SkipRecord.from_json(row) for row in rows]
        return {record.id: record for record in records}

    def remember_skipped(self, records: Sequence[SkipRecord]) -> None:
        if records:
            self._write_skips({**self.skipped_files(), **{record.id: record for record in records}})

    def forget_skipped(self, ids: Sequence[PointId]) -> None:
        known = self.skipped_files()
        if any(point_id in known for point_id in ids):
            self._write_skips({key: record for key, record in known.items() if key not in set(ids)})

    def _write_skips(self, records: dict[PointId, SkipRecord]) -> None:
        _write_atomically(self._skip_file, json.dumps([record.to_json() for record in records.values()]))

    # ------------------------------------------------------------ the shard

    def _call(self, call: Any) -> Any:
        """One call into the shard; a failure of Edge's (bare exceptions with text) as a StoreError."""
        with self._lock:
            if self.shard is None:
                raise missing_collection(self.config)
            try:
                return call(self.shard)
            except (TypeError, ValueError) as exc:
                raise StoreError(f"{self.config.where} refused the request: {exc}") from None
            except Exception as exc:  # the binding raises bare Exceptions
                raise StoreError(f"{self.config.where} failed: {exc}") from None

    def _write(self, operation: qe.UpdateOperation) -> None:
        """Apply and, at most every FLUSH_EVERY_S, flush: then even a power cut keeps it."""
        self._call(lambda shard: shard.update(operation))
        if time.monotonic() - self._last_flush >= FLUSH_EVERY_S:
            self.flush()

    def _pages(self, with_vector: bool) -> Iterator[list[qe.Record]]:
        """Every point with its payload, a page per call into the shard (each holds the GIL only briefly)."""
        offset: Any = None
        while self.shard is not None:
            request = qe.ScrollRequest(offset=offset, limit=SCROLL_PAGE, with_payload=True, with_vector=with_vector)
            records, offset = self._call(lambda shard, request=request: shard.scroll(request))
            yield records
            if offset is None:
                return

    def build_search_index(self) -> bool:
        """Past EXACT_UP_TO points, with more than UNINDEXED_UP_TO of them outside the index: build it in a child
        process on a copy of the shard, then swap the copy in. Call it only when no write is under way (an index
        run calls it at its end); searches go on meanwhile. True when an index was built."""
        if self.shard is None:
            return False
        info = self._call(lambda shard: shard.info())
        if info.points_count <= EXACT_UP_TO or info.points_count - info.indexed_vectors_count <= UNINDEXED_UP_TO:
            return False
        self.flush()
        logger.info("building the search index of %d points in a child process", info.points_count)
        try:
            built = build_copy(self.shard_dir, self.dimension() or 0, INDEXING_THRESHOLD_KB)
        except (RuntimeError, OSError) as exc:  # a full disk, say: searches stay exact, the next run tries again
            logger.error("the search index was not built (searches stay exact): %s", exc)
            return False
        self._swap_in(built)
        return True

    def _swap_in(self, built: Path) -> None:
        """The shard replaced by `built`; searches wait only for this."""
        retired = self._retired
        shutil.rmtree(retired, ignore_errors=True)
        with self._lock:
            if self.shard is None:  # closed meanwhile (the service stopping): the next run builds again
                shutil.rmtree(built, ignore_errors=True)
                return
            self.shard.close()
            self.shard = None
            self.shard_dir.rename(retired)
            try:
                built.rename(self.shard_dir)
                self.shard = self._load()
            except (OSError, StoreError) as exc:
                logger.error("swapping the new search index in failed, keeping the shard as it was: %s", exc)
                shutil.rmtree(self.shard_dir if self.shard_dir.exists() else built, ignore_errors=True)
                retired.rename(self.shard_dir)
                self.shard = self._load()
                return
        shutil.rmtree(retired, ignore_errors=True)

    @property
    def _retired(self) -> Path:
        return self.shard_dir.with_name(self.shard_dir.name + ".old")

    def _recover_interrupted_swap(self) -> None:
        """A process killed between the two renames of a swap left the shard only under its retired name."""
        if not self.exists_on_disk and (self._retired / "edge_config.json").is_file():
            logger.warning("restoring %s after an interrupted index swap", self.shard_dir)
            self._retired.rename(self.shard_dir)

    def _load(self) -> qe.EdgeShard:
        try:
            shard = qe.EdgeShard.load(str(self.shard_dir))
        except Exception as exc:
            raise StoreError(f"cannot open {self.config.where}: {exc}") from None
        self._search_params = self.search_plan.params(shard.info().indexed_vectors_count)
        return shard

    def _create(self, dimension: int) -> qe.EdgeShard:
        config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine),
                               optimizers=qe.EdgeOptimizersConfig(indexing_threshold=0))  # built apart: edge_index
        try:
            shard = qe.EdgeShard.create(str(self.shard_dir), config)
        except Exception as exc:  # the binding raises bare Exceptions
            raise StoreError(f"cannot create the collection in {self.config.where}: {exc}") from None
        try:
            for field, kind in [(name, "keyword") for name in KEYWORD_FIELDS] + list(self.config.payload_indexes):
                shard.update(qe.UpdateOperation.create_field_index(field, EDGE_SCHEMA[kind]))
            shard.flush()
        except Exception as exc:
            shard.close()
            raise StoreError(f"cannot index the payload fields in {self.config.where}: {exc}") from None
        return shard


def _dense(vector: Any) -> list[float]:
    """The shard's one unnamed dense vector."""
    return list(vector or [])


def _edge_id(point_id: PointId) -> int | uuid.UUID:
    return point_id if isinstance(point_id, int) else uuid.UUID(str(point_id))


def _lock_store(root: Path, config: StoreConfig) -> IO[bytes]:
    """Hold `root/.lock` while this process uses the store; another holder is one line saying what to do."""
    root.mkdir(parents=True, exist_ok=True)
    handle = open(root / ".lock", "ab")  # noqa: SIM115 - held open until close(): the lock lives with it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreError(f"{config.where} is in use by another process (the embedded store allows one): stop it, "
                         "or if it is the service, ask it to index its own folder (POST /gallery/reindex), or use a "
                         "Qdrant server (QDRANT_URL) that several processes can share") from None
    return handle


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".part")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
