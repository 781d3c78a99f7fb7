"""`--engine ray`: the same plan, reading and encoding on a Ray Data pipeline, the same writer on the driver.

Reading (files, or URLs through the same SSRF-safe fetcher) and hashing run as Ray tasks; decoding and the model
run in an actor pool (the model loaded once per actor, CPU or GPU per actor, decoding on the actor's threads
while its model runs). The driver plans against the store and writes every point with wait=True, as the local
engine does, so a rerun of either engine continues the other's work.

`ray.init()` joins the cluster in RAY_ADDRESS, or starts a local Ray. Ray is optional (requirements_ray.txt) and
imported only here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from clip_vectorize import errors
from clip_vectorize.errors import GalleryError, InvalidImageError, StoreError
from clip_vectorize.gallery.indexer import ImageEncoder, PointWriter, Progress, ReadItem, read_item
from clip_vectorize.gallery.sources import Item, Skipped
from clip_vectorize.gallery.store import StoreConfig
from clip_vectorize.url_fetch import UrlPolicy

READ_BATCH = 16  # items per reading call
READ_TASKS = (1, 4)  # reading actors: at least one, up to four (files and URLs wait on I/O, not on a core)
ENCODE_BATCH = 32  # items per call of an encoder actor; its micro-batcher forms the model's batches


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


class RayEngine:
    """Reading tasks, then an actor pool of encoders; the driver hands each finished row to the writer."""

    def __init__(self, load_encoder: Callable[[], ImageEncoder], url_policy: UrlPolicy, threads: int, *,
                 actors: int = 1, gpus: float = 0) -> None:
        self.ray = import_ray()
        self.load_encoder, self.url_policy, self.threads = load_encoder, url_policy, threads
        self.actors, self.gpus = actors, gpus

    def __call__(self, items: list[Item], writer: PointWriter, progress: Progress) -> None:
        self.ray.init(ignore_reinit_error=True, log_to_driver=False)
        rows = [{"i": i, "path": str(item.path or ""), "url": item.url or ""} for i, item in enumerate(items)]
        dataset = (self.ray.data.from_items(rows)
                   .map_batches(ReadTask, fn_constructor_args=(self.url_policy, dict(writer.known_hashes)),
                                batch_size=READ_BATCH, batch_format="pandas", concurrency=READ_TASKS)
                   .map_batches(EncodeActor, fn_constructor_args=(self.load_encoder, self.threads),
                                batch_size=ENCODE_BATCH, concurrency=self.actors, num_gpus=self.gpus or None,
                                batch_format="pandas"))
        for batch in dataset.iter_batches(batch_size=writer.options.upsert_batch, batch_format="pandas"):
            for row in batch.to_dict("records"):
                writer.add(*_from_row(items[row["i"]], row))
            progress.advance(len(batch))


class ReadTask:
    """Reading: each item's bytes and hash, or why it could not be read, or the id of an indexed twin."""

    def __init__(self, policy: UrlPolicy, known_hashes: dict[str, Any]) -> None:
        self.policy, self.known_hashes = policy, known_hashes

    def __call__(self, batch: Any) -> Any:
        blobs, hashes, problems, twins = [], [], [], []
        for path, url in zip(batch["path"], batch["url"]):
            read = read_item(Item("", path=Path(path) if path else None, url=url or None), self.policy)
            twin = self.known_hashes.get(read.content_hash or "")
            blobs.append(read.blob if read.problem is None and twin is None else b"")
            hashes.append(read.content_hash or "")
            problems.append(json.dumps([read.problem.reason, read.problem.detail]) if read.problem else "")
            twins.append(json.dumps(twin) if twin is not None else "")
        return batch.assign(blob=blobs, content_hash=hashes, problem=problems, twin=twins)


class EncodeActor:
    """One model per actor; its threads decode while the model runs (the encoder's micro-batcher joins them)."""

    def __init__(self, load_encoder: Callable[[], ImageEncoder], threads: int) -> None:
        self.encoder = load_encoder()
        self.pool = ThreadPoolExecutor(threads)

    def __call__(self, batch: Any) -> Any:
        wanted = [i for i, (blob, problem) in enumerate(zip(batch["blob"], batch["problem"])) if blob and not problem]
        results = list(self.pool.map(lambda i: self.encoder.encode_images([batch["blob"].iloc[i]])[0], wanted))
        vectors: list[list[float] | None] = [None] * len(batch)
        refusals = [""] * len(batch)
        for i, result in zip(wanted, results):
            if isinstance(result, InvalidImageError):
                refusals[i] = json.dumps([type(result).__name__, str(result)])
            else:
                vectors[i] = np.asarray(result, np.float32).tolist()
        return batch.drop(columns=["blob"]).assign(vector=vectors, refusal=refusals)


def _from_row(item: Item, row: dict[str, Any]) -> tuple[ReadItem, Any]:
    """The driver's view of a finished row: what PointWriter.add takes from the local engine too."""
    if row["problem"]:
        reason, detail = json.loads(row["problem"])
        return ReadItem(item, problem=Skipped(item.location, reason, detail)), None
    read = ReadItem(item, content_hash=row["content_hash"] or None)
    if row["twin"]:
        return read, json.loads(row["twin"])
    if row["refusal"]:
        kind, message = json.loads(row["refusal"])
        return read, getattr(errors, kind, InvalidImageError)(message)
    return read, np.asarray(row["vector"], np.float32)

