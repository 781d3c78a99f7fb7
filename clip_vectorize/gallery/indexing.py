"""An index run: plan against the store, hand what must be read to an engine, write its outcomes, prune.

The run is handed its store and its engine (which is handed a loader, so the model loads only when an image needs
encoding: a rerun with nothing to do never loads one), so tests run it with a tiny model or a fake encoder.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from clip_vectorize.gallery.errors import StoreError
from clip_vectorize.gallery.outcome import ImageOutcome
from clip_vectorize.gallery.plan import Plan, TwinClaims, plan
from clip_vectorize.gallery.sources import Item, Listing
from clip_vectorize.gallery.store.base import GalleryStore
from clip_vectorize.gallery.summary import Summary
from clip_vectorize.gallery.writing import PointWriter


@dataclass(frozen=True)
class IndexOptions:
    model: str  # the model id every point records (`payload.model_id`)
    upsert_batch: int = 64  # points per write; an interrupted run loses at most this many encoded images
    prune: bool = False  # delete this source's points whose image is gone from it


class Progress(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self, count: int) -> None: ...

    def close(self) -> None: ...


class Engine(Protocol):
    """Reads and encodes `items`, yielding one outcome per item (in any order); `claims` is the twin rule."""

    def __call__(self, items: list[Item], claims: TwinClaims) -> Iterable[ImageOutcome]: ...

    @property
    def model_load_s(self) -> float: ...

    @property
    def stopped(self) -> bool:
        """Told to stop before it had read every item."""


def index(listing: Listing, store: GalleryStore, options: IndexOptions, engine: Engine,
          progress: Progress) -> Summary:
    """Bring the store up to date with `listing` through `engine`; bad images are reported, never fatal."""
    began = time.monotonic()
    summary = Summary(listing.source, listed=len(listing.items) + len(listing.skipped), skipped=list(listing.skipped))
    refuse_foreign_model(store, options.model)
    existing = store.indexed()
    work = plan(listing, existing, store.skipped_files(), options.model, options.prune)
    summary.unchanged = work.unchanged
    summary.skipped += work.still_bad
    summary.skipped_before = len(work.still_bad)
    writer = PointWriter(store, listing.source, options.model, options.upsert_batch, existing, summary)
    if work.to_read:
        encode_began = time.monotonic()
        _write_outcomes(work, engine, TwinClaims.of_points(existing, options.model), writer, progress)
        summary.encode_s, summary.model_load_s = time.monotonic() - encode_began, engine.model_load_s
    _settle(store, work, writer)
    if not engine.stopped:  # a service stopping does not start a long build
        store.build_search_index()
    summary.deleted = len(work.gone)
    summary.elapsed_s = time.monotonic() - began
    return summary


def _write_outcomes(work: Plan, engine: Engine, claims: TwinClaims, writer: PointWriter, progress: Progress) -> None:
    progress.start(len(work.to_read))
    try:
        for outcome in engine(work.to_read, claims):
            writer.add(outcome)
            progress.advance(1)
        writer.finish()
    finally:
        progress.close()


def _settle(store: GalleryStore, work: Plan, writer: PointWriter) -> None:
    """After the points: prune, the memory of bad files brought up to date, all of it flushed."""
    store.delete(work.gone)
    remembered = {record.id for record in writer.bad_files}
    store.forget_skipped([point_id for point_id in work.stale_skips if point_id not in remembered])
    store.remember_skipped(writer.bad_files)
    store.flush()


def refuse_foreign_model(store: GalleryStore, model: str) -> None:
    foreign = store.foreign_models(model)
    if foreign:
        raise StoreError(f"collection '{store.config.collection}' holds vectors of {', '.join(foreign)}, not of "
                         f"{model}: vectors of two models cannot be compared. Index into another collection "
                         "(QDRANT_COLLECTION=...) or start this one again with --recreate")
