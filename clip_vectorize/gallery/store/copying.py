"""Moving a collection between stores, every point and payload as it is, nothing re-encoded: an old local-mode store
into Qdrant Edge (once, when the embedded store opens), and the embedded store onto a Qdrant server."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from clip_vectorize.gallery.errors import StoreError
from clip_vectorize.gallery.store.base import GalleryStore, StoreConfig

logger = logging.getLogger(__name__)

MOVED_MARK = "{collection}.moved-to-edge.json"  # in QDRANT_PATH: the move is done, never again


def copy_points(source: GalleryStore, target: GalleryStore) -> int:
    """Every point of `source` upserted into `target` (same ids, vectors and payloads), and its skipped files."""
    copied = 0
    for page in source.points_with_vectors():
        if page and not target.exists():
            target.ensure_collection(len(page[0].vector))
        target.upsert(page)
        copied += len(page)
    target.remember_skipped(list(source.skipped_files().values()))
    target.flush()
    if target.count() < source.count():
        raise StoreError(f"{target.config.where} holds {target.count()} points after the copy, "
                         f"{source.count()} were read")
    return copied


def local_mode_collection(config: StoreConfig) -> Path | None:
    """The collection of qdrant-client's local mode at QDRANT_PATH (what every install had before Edge) that has
    not been moved yet, or None."""
    root = Path(config.path).expanduser()
    storage = root / "collection" / config.collection / "storage.sqlite"
    moved = root / MOVED_MARK.format(collection=config.collection)
    return storage if storage.is_file() and not moved.exists() else None


def move_local_mode_into(edge: GalleryStore, config: StoreConfig) -> None:
    """The local-mode collection copied into the (fresh or half-moved) Edge store, checked, marked done. A failure
    leaves the old store as it was and the Edge copy removed, and says so."""
    from clip_vectorize.gallery.store.server import ServerStore  # qdrant-client's local mode reads the old store

    began = time.monotonic()
    edge.recreate()  # a move cut short (killed) starts again from the old store
    try:
        old = ServerStore(config)
        try:
            copied = copy_points(old, edge)
        finally:
            old.close()
    except Exception as exc:
        edge.recreate()
        raise StoreError(f"moving the local-mode store in {config.path} into Qdrant Edge failed: {exc}. The old store "
                         "is intact; nothing was lost. Fix the cause and start again (the move is tried at each "
                         "start)") from None
    mark = Path(config.path).expanduser() / MOVED_MARK.format(collection=config.collection)
    mark.write_text(json.dumps({"points": copied, "moved_at": time.time()}))
    logger.warning("moved %d points of the collection '%s' from the old local-mode store in %s into Qdrant Edge "
                   "(%s) in %.1f s, nothing re-encoded; the old files are kept and can be deleted: %s/collection/%s",
                   copied, config.collection, config.path, Path(config.path) / "edge", time.monotonic() - began,
                   config.path, config.collection)
