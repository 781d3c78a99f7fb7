"""`--engine ray`: the same plan, reading and encoding on a Ray Data pipeline, the same writer on the driver.

Reading (files, or URLs through the same SSRF-safe fetcher), hashing, decoding and preprocessing run on a pool
of reading actors, each with the image path's preparer (the model's configs, no weights); the model runs in
a pool of encoder actors (loaded once per actor, CPU or GPU per actor) that receive pixels, never JPEGs. The
driver plans against the store and writes every point with wait=True, as the local engine does, so a rerun of
either engine continues the other's work.

`ray.init()` joins the cluster in RAY_ADDRESS, or starts a local Ray. Ray is optional (requirements_ray.txt) and
imported only here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from clip_vectorize import errors
from clip_vectorize.errors import GalleryError, InvalidImageError, StoreError
from clip_vectorize.gallery.indexer import PointWriter, Progress, ReadItem, read_item
from clip_vectorize.gallery.sources import Item, Skipped
from clip_vectorize.gallery.store import StoreConfig
from clip_vectorize.url_fetch import UrlPolicy

READ_BATCH = 16  # items per reading call
READ_TASKS = (1, 4)  # reading actors: at least one, up to four (files and URLs wait on I/O, not on a core)
ENCODE_BATCH = 32  # images per call of an encoder actor


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise GalleryError("--engine ray needs Ray: pip install -r requirements_ray.txt") from None
    return ray


def check_target(config: StoreConfig) -> None:
    """A cluster writes through the driver, which `ray job submit` runs on the head node: the points belong in a
    server every machine (and the service) can reach, not in a folder on that node only one process may open."""
    if os.environ.get("RAY_ADDRESS") and not config.url:
        raise StoreError("a Ray cluster (RAY_ADDRESS) needs a Qdrant server (QDRANT_URL): an embedded store is a "
                         "folder on the driver's machine, open to one process, invisible to the service")


class PixelEncoder(Protocol):
    """What an encoder actor needs (ClipEncoder is one): vectors for pixels prepared by the reading actors."""

    def encode_image_pixels(self, pixels: Sequence[np.ndarray]) -> list[np.ndarray]: ...


class RayEngine:
    """Reading actors (bytes, hash, pixels), then encoder actors; the driver hands each row to the writer."""

    def __init__(self, load_encoder: Callable[[], PixelEncoder], load_preparer: Callable[[], Callable[[bytes], Any]],
                 url_policy: UrlPolicy, *, actors: int = 1, gpus: float = 0) -> None:
        self.ray = import_ray()
        self.load_encoder, self.load_preparer, self.url_policy = load_encoder, load_preparer, url_policy
        self.actors, self.gpus = actors, gpus

    def __call__(self, items: list[Item], writer: PointWriter, progress: Progress) -> None:
        self.ray.init(ignore_reinit_error=True, log_to_driver=False)
        rows = [{"i": i, "path": str(item.path or ""), "url": item.url or ""} for i, item in enumerate(items)]
        dataset = (self.ray.data.from_items(rows)
                   .map_batches(ReadTask, fn_constructor_args=(self.url_policy, dict(writer.known_hashes),
                                                                self.load_preparer),
                                batch_size=READ_BATCH, batch_format="pandas", concurrency=READ_TASKS)
                   .map_batches(EncodeActor, fn_constructor_args=(self.load_encoder,),
                                batch_size=ENCODE_BATCH, concurrency=self.actors, num_gpus=self.gpus or None,
                                batch_format="pandas"))
        for batch in dataset.iter_batches(batch_size=writer.options.upsert_batch, batch_format="pandas"):
            for row in batch.to_dict("records"):
                writer.add(*_from_row(items[row["i"]], row))
            progress.advance(len(batch))


class ReadTask:
    """Reading: each item's bytes and hash, then its pixels, or why it could not be read or decoded, or the id
    of an indexed twin (which needs neither pixels nor the model)."""

    def __init__(self, policy: UrlPolicy, known_hashes: dict[str, Any],
                 load_preparer: Callable[[], Callable[[bytes], np.ndarray]]) -> None:
        self.policy, self.known_hashes, self.prepare = policy, known_hashes, load_preparer()

    def __call__(self, batch: Any) -> Any:
        columns: dict[str, list] = {"content_hash": [], "problem": [], "twin": [], "pixels": [], "shape": [],
                                    "refusal": [], "file_stat": []}
        for path, url in zip(batch["path"], batch["url"]):
            read = read_item(Item("", path=Path(path) if path else None, url=url or None), self.policy)
            twin = self.known_hashes.get(read.content_hash or "")
            pixels, refusal = np.empty(0, np.float32), ""
            if read.blob is not None and twin is None:
                try:
                    pixels = np.asarray(self.prepare(read.blob), np.float32)
                except InvalidImageError as exc:
                    refusal = json.dumps([type(exc).__name__, str(exc)])
            columns["content_hash"].append(read.content_hash or "")
            columns["problem"].append(json.dumps([read.problem.reason, read.problem.detail]) if read.problem else "")
            columns["twin"].append(json.dumps(twin) if twin is not None else "")
            columns["pixels"].append(pixels.tobytes())  # bytes: one Arrow type whether an image came or not
            columns["shape"].append(json.dumps(pixels.shape))
            columns["refusal"].append(refusal)
            columns["file_stat"].append(json.dumps(read.file_stat))  # taken before reading, on the reading node
        return batch.assign(**columns)


class EncodeActor:
    """One model per actor: the pixels of a batch in one call (its micro-batcher forms the model's batches)."""

    def __init__(self, load_encoder: Callable[[], PixelEncoder]) -> None:
        self.encoder = load_encoder()

    def __call__(self, batch: Any) -> Any:
        wanted = [i for i, pixels in enumerate(batch["pixels"]) if pixels]
        pixels = [np.frombuffer(batch["pixels"].iloc[i], np.float32).reshape(json.loads(batch["shape"].iloc[i]))
                  for i in wanted]
        vectors: list[list[float] | None] = [None] * len(batch)
        for i, vector in zip(wanted, self.encoder.encode_image_pixels(pixels) if pixels else []):
            vectors[i] = np.asarray(vector, np.float32).tolist()
        return batch.drop(columns=["pixels", "shape"]).assign(vector=vectors)


def _from_row(item: Item, row: dict[str, Any]) -> tuple[ReadItem, Any]:
    """The driver's view of a finished row: what PointWriter.add takes from the local engine too."""
    if row["problem"]:
        reason, detail = json.loads(row["problem"])
        return ReadItem(item, problem=Skipped(item.location, reason, detail)), None
    read = ReadItem(item, content_hash=row["content_hash"] or None, file_stat=json.loads(row["file_stat"]))
    if row["twin"]:
        return read, json.loads(row["twin"])
    if row["refusal"]:
        kind, message = json.loads(row["refusal"])
        return read, getattr(errors, kind, InvalidImageError)(message)
    return read, np.asarray(row["vector"], np.float32)

