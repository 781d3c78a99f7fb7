"""The gallery's stores, one interface (`base.GalleryStore`), opened by `open_store` from a StoreConfig."""

from __future__ import annotations

from clip_vectorize.gallery.store.base import GalleryStore, StoreConfig


def open_store(config: StoreConfig) -> GalleryStore:
    """The store `config` names; a StoreError (one line saying what to do) when it cannot be opened."""
    from clip_vectorize.gallery.store.server import ServerStore

    return ServerStore(config)
