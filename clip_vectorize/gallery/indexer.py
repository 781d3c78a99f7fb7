"""Index a listing into the store: plan what changed, read and encode only that, upsert, optionally prune.

The indexer is handed its encoder (lazily: `load_encoder` runs only when something needs encoding, so a rerun
with nothing to do never loads a model) and its store, so tests run it with a tiny model or a fake encoder and
an embedded Qdrant. Reading and decoding run on worker threads: each thread hands its decoded image to the
encoder's micro-batcher, which fills batches from all of them, so the model does not wait for JPEG decoding.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from qdrant_client import models

from clip_vectorize.errors import (
    EmptyImageError,
    ImageTooLargeError,
    InvalidImageError,
    OverloadedError,
    SourceError,
    StoreError,
    UrlFetchError,
    UrlRefusedError,
)
from clip_vectorize.gallery.sources import Item, Listing, Skipped
from clip_vectorize.gallery.store import (
    CONTENT_HASH,
    FILE_MTIME,
    FILE_SIZE,
    MODEL,
    RESERVED_PAYLOAD,
    SOURCE,
    GalleryStore,
    IndexedPoint,
    PointId,
)
from clip_vectorize.inference.vectors import ImageInput, ImageResult
from clip_vectorize.url_fetch import UrlPolicy, fetch_image_bytes

HASH_BYTES = 16  # 128 bits of BLAKE2b: a content identity, not a security boundary
ENCODE_ATTEMPTS = 5


class ImageEncoder(Protocol):
    """What the indexer needs of an encoder (ClipEncoder is one)."""

    def encode_images(self, images: Sequence[ImageInput]) -> list[ImageResult]: ...


@dataclass(frozen=True)
class IndexOptions:
    model: str  # the model id every point records (see `model_id`)
    upsert_batch: int = 64  # points per upsert; an interrupted run loses at most this many encoded images
    prune: bool = False  # delete this source's points whose image is gone from it


@dataclass
class Summary:
    source: str
    listed: int = 0
    indexed: int = 0  # encoded and written
    reused: int = 0  # written with the vector of an identical image already indexed (renamed, touched, duplicate)
    unchanged: int = 0
    deleted: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    elapsed_s: float = 0.0
    encode_s: float = 0.0  # from the first item read to the last point written
    model_load_s: float = 0.0  # inside encode_s: the model loads when the first image needs it

    @property
    def images_per_s(self) -> float:
        working = self.encode_s - self.model_load_s
        return self.indexed / working if working > 0 else 0.0

    def reasons(self) -> Counter[str]:
        return Counter(skip.reason for skip in self.skipped)


@dataclass
class Plan:
    """The listing against the store: what must be read, what is unchanged, and (with prune) what is gone."""

    to_read: list[Item]
    unchanged: int
    gone: list[PointId]


@dataclass(frozen=True)
class ReadItem:
    """An item's bytes (or why they could not be had) and their content hash."""

    item: Item
    blob: bytes | None = None
    content_hash: str | None = None
    problem: Skipped | None = None
    file_stat: dict[str, int | None] = field(default_factory=dict)  # taken before reading: never newer than the bytes


Outcome = ImageResult | PointId | None  # a vector or refusal, the id of an indexed twin, or nothing (not read)


class Progress(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self, count: int) -> None: ...

    def close(self) -> None: ...


def model_id(model_name: str) -> str:
    """The id points record: the model's last path component, so openai/clip-vit-base-patch32 and a local copy in
    /opt/models/clip-vit-base-patch32 agree, while another model does not."""
    return model_name.rstrip("/").rsplit("/", 1)[-1]


def plan(listing: Listing, existing: dict[PointId, IndexedPoint], model: str, prune: bool) -> Plan:
    """Items whose point exists with the same model, location, manifest columns and file size and mtime are
    unchanged; everything else is read (URLs always: only their content says whether they changed)."""
    to_read, unchanged = [], 0
    for item in listing.items:
        point = existing.get(item.point_id)
        if point is not None and _unchanged_without_reading(item, point, model):
            unchanged += 1
        else:
            to_read.append(item)
    current = {item.point_id for item in listing.items}
    gone = [point_id for point_id, point in existing.items()
            if prune and point.payload.get(SOURCE) == listing.source and point_id not in current]
    if gone and not listing.items:
        raise SourceError(f"{listing.source} lists no images, so --prune would delete all {len(gone)} of its points: "
                          "check it (an unmounted share?), or run without --prune")
    return Plan(to_read, unchanged, gone)


Engine = Callable[[list[Item], "PointWriter", Progress], None]  # reads, encodes, hands each item to the writer


def index(listing: Listing, store: GalleryStore, options: IndexOptions, engine: Engine,
          progress: Progress) -> Summary:
    """Bring the store up to date with `listing` through `engine`; bad images are reported, never fatal."""
    began = time.monotonic()
    summary = Summary(listing.source, listed=len(listing.items) + len(listing.skipped), skipped=list(listing.skipped))
    refuse_foreign_model(store, options.model)
    existing = store.indexed()
    work = plan(listing, existing, options.model, options.prune)
    summary.unchanged = work.unchanged
    if work.to_read:
        writer = PointWriter(store, listing.source, options, existing, summary)
        progress.start(len(work.to_read))
        encode_began = time.monotonic()
        try:
            engine(work.to_read, writer, progress)
            writer.flush()
        finally:
            progress.close()
        summary.encode_s = time.monotonic() - encode_began
    store.delete(work.gone)
    summary.deleted = len(work.gone)
    summary.elapsed_s = time.monotonic() - began
    return summary


class LocalEngine:
    """In this process: worker threads read, hash and decode; the encoder's micro-batcher fills the model. The
    model loads when the first image needs it: URLs whose content is unchanged, and twins, never do."""

    def __init__(self, load_encoder: Callable[[], ImageEncoder], url_policy: UrlPolicy, threads: int) -> None:
        self.url_policy, self.threads = url_policy, threads
        self.encoder = LazyEncoder(load_encoder)

    def __call__(self, items: Iterable[Item], writer: PointWriter, progress: Progress) -> None:
        try:
            with ThreadPoolExecutor(self.threads, thread_name_prefix="index") as pool:
                read_and_encode = _reader_encoder(self.encoder, self.url_policy, writer.known_hashes)
                for read, outcome in ordered_map(pool, read_and_encode, items, window=4 * self.threads):
                    writer.add(read, outcome)
                    progress.advance(1)
        finally:
            writer.summary.model_load_s = self.encoder.load_s


class LazyEncoder:
    """Loads the encoder on the first image, once, whichever thread gets there first."""

    def __init__(self, load: Callable[[], ImageEncoder]) -> None:
        self._load, self._lock = load, threading.Lock()
        self._encoder: ImageEncoder | None = None
        self._failure: Exception | None = None
        self.load_s = 0.0

    def encode_images(self, images: Sequence[ImageInput]) -> list[ImageResult]:
        with self._lock:
            if self._failure is not None:
                raise self._failure  # once is enough: the other threads must not each try again
            if self._encoder is None:
                began = time.monotonic()
                try:
                    self._encoder = self._load()
                except Exception as exc:
                    self._failure = exc
                    raise
                self.load_s = time.monotonic() - began
            encoder = self._encoder
        return encoder.encode_images(images)


class PointWriter:
    """Collects finished items into points and upserts them in batches (with wait=True: then they are done)."""

    def __init__(self, store: GalleryStore, source: str, options: IndexOptions,
                 existing: dict[PointId, IndexedPoint], summary: Summary) -> None:
        self.store, self.source, self.options, self.existing, self.summary = store, source, options, existing, summary
        self.known_hashes = {point.payload[CONTENT_HASH]: point_id for point_id, point in existing.items()
                             if point.payload.get(CONTENT_HASH) and point.payload.get(MODEL) == options.model}
        self._pending: list[models.PointStruct] = []
        self._counts: Counter[str] = Counter()
        self._collection_ready = False
        self._hashes: dict[PointId, str | None] = {}  # content of the points written (or pending) in this run
        self._pending_vectors: dict[PointId, list[float]] = {}

    def add(self, read: ReadItem, outcome: Outcome) -> None:
        """`outcome`: a vector, the id of a point with the same content to copy, or a refusal."""
        if read.problem is not None:
            self.summary.skipped.append(read.problem)
        elif isinstance(outcome, InvalidImageError):
            self.summary.skipped.append(Skipped(read.item.location, skip_reason(outcome), str(outcome)))
        elif isinstance(outcome, np.ndarray):
            if not self._collection_ready:  # created with the dimension of the first vector
                self.store.ensure_collection(len(outcome))
                self._collection_ready = True
            self._queue(read, outcome.tolist(), "indexed")
        elif outcome is not None and self._same_point(read, outcome):
            self.summary.unchanged += 1
        elif outcome is not None:
            vector = self._twin_vector(outcome, read.content_hash)
            if vector is None:  # the twin was rewritten with other content during this run: rare, and harmless
                self.summary.skipped.append(Skipped(read.item.location, "changed while indexing",
                                                    "its identical twin changed meanwhile; the next run encodes it"))
            else:
                self._queue(read, vector, "reused")
        if len(self._pending) >= self.options.upsert_batch:
            self.flush()

    def _twin_vector(self, twin: PointId, content_hash: str | None) -> list[float] | None:
        """The vector of the point that holds `content_hash`, if it still does (it may be pending, not yet written)."""
        if self._hashes.get(twin, self._stored_hash(twin)) != content_hash:
            return None
        return self._pending_vectors.get(twin) or self.store.vectors([twin]).get(twin)

    def _stored_hash(self, point_id: PointId) -> str | None:
        point = self.existing.get(point_id)
        return point.payload.get(CONTENT_HASH) if point is not None else None

    def flush(self) -> None:
        self.store.upsert(self._pending)
        self.summary.indexed += self._counts["indexed"]
        self.summary.reused += self._counts["reused"]
        self._pending, self._counts, self._pending_vectors = [], Counter(), {}

    def _queue(self, read: ReadItem, vector: list[float], kind: str) -> None:
        point_id = read.item.point_id
        self._pending.append(models.PointStruct(id=point_id, vector=vector, payload=self._payload(read)))
        self._pending_vectors[point_id] = vector
        self._counts[kind] += 1
        old_hash = self._hashes.get(point_id, self._stored_hash(point_id))
        if old_hash and old_hash != read.content_hash and self.known_hashes.get(old_hash) == point_id:
            del self.known_hashes[old_hash]  # this point no longer holds that content
        self._hashes[point_id] = read.content_hash
        if read.content_hash:
            self.known_hashes.setdefault(read.content_hash, point_id)

    def _same_point(self, read: ReadItem, twin: PointId) -> bool:
        """The identical content is this very point, with the same payload: nothing to write."""
        point = self.existing.get(twin)
        return twin == read.item.point_id and point is not None and point.payload == self._payload(read)

    def _payload(self, read: ReadItem) -> dict[str, Any]:
        item = read.item
        payload: dict[str, Any] = {**item.extra, "image_id": item.image_id, MODEL: self.options.model,
                                   SOURCE: self.source, CONTENT_HASH: read.content_hash}
        if item.path is not None:
            payload["path"] = str(item.path)
            payload.update(read.file_stat)
        else:
            payload["url"] = item.url
        return payload


def _reader_encoder(encoder: ImageEncoder, url_policy: UrlPolicy,
                    known_hashes: dict[str, PointId]) -> Callable[[Item], tuple[ReadItem, Outcome]]:
    """Per item, on a worker thread: its bytes; then the id of an indexed twin, or the encoder's vector."""

    def read_and_encode(item: Item) -> tuple[ReadItem, Outcome]:
        read = read_item(item, url_policy)
        if read.problem is not None or read.blob is None:
            return read, None
        twin = known_hashes.get(read.content_hash or "")
        if twin is not None:
            return read, twin
        return read, encode_one(encoder, read.blob)

    return read_and_encode


def encode_one(encoder: ImageEncoder, blob: bytes) -> ImageResult:
    """One image's vector or refusal. A full queue or a passed deadline means the model is busy, not that the
    image is bad: try again, a few times, before giving up on the run."""
    for _ in range(ENCODE_ATTEMPTS - 1):
        try:
            return encoder.encode_images([blob])[0]
        except OverloadedError:
            time.sleep(1.0)
    return encoder.encode_images([blob])[0]  # the last attempt's OverloadedError ends the run


def read_item(item: Item, url_policy: UrlPolicy) -> ReadItem:
    """The item's bytes and their hash, or why it could not be read (a file gone, a URL refused or unreachable).
    A file's size and mtime are taken first, so a file rewritten meanwhile looks changed to the next run."""
    stat = file_stat(item)
    try:
        blob = item.path.read_bytes() if item.path is not None else fetch_image_bytes(item.url, url_policy)
    except OSError as exc:
        return ReadItem(item, problem=Skipped(item.location, "unreadable file", exc.strerror or str(exc)))
    except InvalidImageError as exc:
        return ReadItem(item, problem=Skipped(item.location, skip_reason(exc), str(exc)))
    return ReadItem(item, blob, hashlib.blake2b(blob, digest_size=HASH_BYTES).hexdigest(), file_stat=stat)


def skip_reason(exc: InvalidImageError) -> str:
    """A few words that group refusals in the summary; the message itself goes in the skipped list."""
    if isinstance(exc, UrlRefusedError):
        return "URL refused"
    if isinstance(exc, UrlFetchError):
        return "URL unreachable"
    if isinstance(exc, EmptyImageError):
        return "empty file"
    if isinstance(exc, ImageTooLargeError):
        return "too many pixels"
    return "not a readable image"


def ordered_map(pool: ThreadPoolExecutor, function: Callable[[Item], Any], items: Iterable[Item],
                window: int) -> Iterator[Any]:
    """`function` over `items` on `pool`, results in input order, at most `window` in flight (so an interrupted
    run has not read far ahead, and memory stays bounded)."""
    pending: deque[Future] = deque()
    try:
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


def refuse_foreign_model(store: GalleryStore, model: str) -> None:
    foreign = store.foreign_models(model)
    if foreign:
        raise StoreError(f"collection '{store.collection}' holds vectors of {', '.join(foreign)}, not of {model}: "
                         "vectors of two models cannot be compared. Index into another collection "
                         "(QDRANT_COLLECTION=...) or start this one again with --recreate")


def _unchanged_without_reading(item: Item, point: IndexedPoint, model: str) -> bool:
    payload = point.payload
    if payload.get(MODEL) != model or point.location != item.location or item.path is None:
        return False
    if extra_columns(payload) != dict(item.extra):  # a column edited, added, emptied or removed
        return False
    return file_stat(item) == {FILE_SIZE: payload.get(FILE_SIZE), FILE_MTIME: payload.get(FILE_MTIME)}


def file_stat(item: Item) -> dict[str, int | None]:
    try:
        stat = item.path.stat() if item.path is not None else None
    except OSError:
        stat = None
    return {FILE_SIZE: stat.st_size if stat else None, FILE_MTIME: stat.st_mtime_ns if stat else None}


def extra_columns(payload: dict[str, Any]) -> dict[str, Any]:
    """A stored payload less what the indexer writes: the manifest's own columns."""
    return {key: value for key, value in payload.items() if key not in RESERVED_PAYLOAD}
