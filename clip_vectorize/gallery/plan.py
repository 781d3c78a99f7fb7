"""What an index run must do, decided before any image is read: the listing against the store's points and its
memory of bad files; and the twin rule, which both engines apply as images are read."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from clip_vectorize.gallery.errors import SourceError
from clip_vectorize.gallery.payload import CONTENT_HASH, MODEL, SOURCE, FileStat, PointPayload
from clip_vectorize.gallery.sources import Item, Listing, Skipped
from clip_vectorize.gallery.store.base import IndexedPoint, PointId, SkipRecord


@dataclass
class Plan:
    """What must be read; what is unchanged; the bad files unchanged since they were skipped (not read again);
    with prune, the points whose image is gone; and the memories of bad files that no longer hold."""

    to_read: list[Item]
    unchanged: int
    still_bad: list[Skipped]
    gone: list[PointId]
    stale_skips: list[PointId]


def plan(listing: Listing, existing: dict[PointId, IndexedPoint], skips: dict[PointId, SkipRecord], model: str,
         prune: bool) -> Plan:
    """Items whose point exists with the same model, location, manifest columns and file size and mtime are
    unchanged, and so are bad files with the size and mtime they had when skipped; everything else is read (URLs
    always: only their content says whether they changed)."""
    to_read, unchanged, still_bad, still_bad_ids = [], 0, [], set()
    for item in listing.items:
        point, skip = existing.get(item.point_id), skips.get(item.point_id)
        if point is not None and _unchanged_without_reading(item, point, model):
            unchanged += 1
        elif skip is not None and _still_bad(item, skip):
            still_bad.append(Skipped(item.location, skip.reason, skip.detail))
            still_bad_ids.add(item.point_id)
        else:
            to_read.append(item)
    current = {item.point_id for item in listing.items}
    gone = [point_id for point_id, point in existing.items()
            if prune and point.payload.get(SOURCE) == listing.source and point_id not in current]
    if gone and not listing.items:
        raise SourceError(f"{listing.source} lists no images, so --prune would delete all {len(gone)} of its points: "
                          "check it (an unmounted share?), or run without --prune")
    stale = [skip.id for skip in skips.values() if skip.source == listing.source and skip.id not in still_bad_ids]
    return Plan(to_read, unchanged, still_bad, gone, stale)


def _unchanged_without_reading(item: Item, point: IndexedPoint, model: str) -> bool:
    stored = PointPayload.from_json(point.payload)
    if stored.model != model or stored.location != item.location or item.path is None:
        return False
    if stored.extra != dict(item.extra):  # a column edited, added, emptied or removed
        return False
    return FileStat.of(item.path) == stored.file_stat


def _still_bad(item: Item, skip: SkipRecord) -> bool:
    return item.path is not None and skip.location == item.location and FileStat.of(item.path) == skip.file_stat


class TwinClaims:
    """The twin rule, one for both engines: the first image read with a given content claims it; any other image
    with that content is a twin of the claimant (its vector is copied, not encoded). Points already stored hold
    their content from the start; a point read again with new content gives up its old one. Thread-safe; the Ray
    engine runs one instance as an actor."""

    def __init__(self, holders: dict[str, PointId]) -> None:
        self._holder = dict(holders)  # content hash -> the point that holds it
        self._content = {point_id: content for content, point_id in holders.items()}
        self._lock = threading.Lock()

    @property
    def holders(self) -> dict[str, PointId]:
        """Which point holds each content now (the Ray engine starts its actor from this)."""
        with self._lock:
            return dict(self._holder)

    @classmethod
    def of_points(cls, existing: dict[PointId, IndexedPoint], model: str) -> TwinClaims:
        """The contents the store's points of `model` hold."""
        return cls({point.payload[CONTENT_HASH]: point_id for point_id, point in existing.items()
                    if point.payload.get(CONTENT_HASH) and point.payload.get(MODEL) == model})

    def claim(self, content: str, point_id: PointId) -> PointId | None:
        """The point already holding `content` (possibly `point_id` itself), or None: then `point_id` holds it now
        and must be encoded."""
        with self._lock:
            old = self._content.get(point_id)
            if old is not None and old != content and self._holder.get(old) == point_id:
                del self._holder[old]  # this point no longer holds that content
            self._content[point_id] = content
            holder = self._holder.setdefault(content, point_id)
            return holder if holder != point_id or old == content else None
