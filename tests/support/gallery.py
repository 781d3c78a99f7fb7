"""Gallery helpers: folders of generated photos, an embedded store in a test folder, and reading points back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from clip_vectorize.gallery.engines.local import LocalEngine
from clip_vectorize.gallery.indexing import IndexOptions, index
from clip_vectorize.gallery.payload import model_id
from clip_vectorize.gallery.sources import list_source
from clip_vectorize.gallery.store import open_store
from clip_vectorize.gallery.store.base import GalleryStore, StoreConfig
from clip_vectorize.gallery.store.server import ServerStore
from clip_vectorize.gallery.summary import Summary
from clip_vectorize.url_fetch import UrlPolicy
from support.images import encode_image_bytes, photo_like

COLLECTION = "car_images"


class SilentProgress:
    def start(self, total: int) -> None: ...

    def advance(self, count: int) -> None: ...

    def close(self) -> None: ...


def write_photos(folder: Path, count: int, first_seed: int = 0, size: tuple[int, int] = (96, 72)) -> list[Path]:
    """`count` distinct small JPEGs, spread over two subfolders."""
    paths = []
    for seed in range(first_seed, first_seed + count):
        path = folder / ("front" if seed % 2 else "side") / f"car-{seed:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_image_bytes(photo_like(*size, seed=seed)))
        paths.append(path)
    return paths


def open_test_store(tmp_path: Path, collection: str = COLLECTION, kind: str = "edge") -> GalleryStore:
    """The embedded store (Qdrant Edge), or kind="server": the server's store through qdrant-client, run here on
    its local mode (the same calls; no Qdrant server installs here)."""
    config = StoreConfig(collection, path=str(tmp_path / "qdrant_data"))
    return open_store(config) if kind == "edge" else ServerStore(config)


class CountingLoader:
    """Hands out the encoder and counts how often it was asked for: a run with nothing to do must not ask."""

    def __init__(self, encoder: Any) -> None:
        self.encoder, self.calls = encoder, 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.encoder


def run_index(source: Path, store: GalleryStore, loader: CountingLoader, *, prune: bool = False,
              upsert_batch: int = 8, policy: UrlPolicy | None = None) -> Summary:
    options = IndexOptions(model=model_id(loader.encoder.model_name), upsert_batch=upsert_batch, prune=prune)
    engine = LocalEngine(loader, policy or UrlPolicy(), threads=4)
    return index(list_source(source), store, options, engine, SilentProgress())


def points(store: GalleryStore) -> dict[Any, tuple[dict, np.ndarray]]:
    """Every point: id -> (payload, vector)."""
    indexed = store.indexed()
    vectors = store.vectors(list(indexed))
    return {point_id: (point.payload, np.asarray(vectors[point_id], np.float64)) for point_id, point in indexed.items()}
