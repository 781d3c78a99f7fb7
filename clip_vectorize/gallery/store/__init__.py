"""The gallery's stores, one interface (`base.GalleryStore`): Qdrant Edge in QDRANT_PATH (the default), or a Qdrant
server at QDRANT_URL."""

from __future__ import annotations

from clip_vectorize.gallery.store.base import GalleryStore, StoreConfig


def open_store(config: StoreConfig) -> GalleryStore:
    """The store `config` names; a StoreError (one line saying what to do) when it cannot be opened. An embedded
    store that still has the old local-mode collection moves it into Edge first."""
    from clip_vectorize.gallery.store.copying import local_mode_collection, move_local_mode_into

    if config.url:
        from clip_vectorize.gallery.store.server import ServerStore

        return ServerStore(config)
    from clip_vectorize.gallery.store.edge import EdgeStore

    store = EdgeStore(config)
    try:
        if local_mode_collection(config) is not None:
            move_local_mode_into(store, config)
    except BaseException:
        store.close()
        raise
    return store
