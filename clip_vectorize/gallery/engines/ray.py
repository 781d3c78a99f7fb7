"""`--engine ray`: the same reading, twin rule and outcomes on a Ray Data pipeline; the same writer on the driver.

Reading (files, or URLs through the same SSRF-safe fetcher), hashing, decoding and preprocessing run on a pool of
reading actors, each with the image path's preparer (the model's configs, no weights); the twin rule is one actor
all readers ask, so copies of one image are encoded once per run; the model runs in a pool of encoder actors
(loaded once per actor, CPU or GPU) that receive pixels, never JPEGs. Each row carries its ImageOutcome, pickled:
the driver gets back the very object the local engine would have made.

`ray.init()` joins the cluster in RAY_ADDRESS, or starts a local Ray. Ray is optional (requirements_ray.txt) and
imported only here.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from clip_vectorize.errors import InvalidImageError
from clip_vectorize.gallery.errors import GalleryError, StoreError
from clip_vectorize.gallery.outcome import ImageOutcome
from clip_vectorize.gallery.plan import TwinClaims
from clip_vectorize.gallery.reading import read_unless_twin, refusal
from clip_vectorize.gallery.sources import Item
from clip_vectorize.gallery.store.base import StoreConfig
from clip_vectorize.url_fetch import UrlPolicy

READ_BATCH = 16  # items per reading call
READ_TASKS = (1, 4)  # reading actors: at least one, up to four (files and URLs wait on I/O, not on a core)
ENCODE_BATCH = 32  # images per call of an encoder actor
NO_PIXELS = b""


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
    """Reading actors (bytes, hash, twin rule, pixels), then encoder actors; outcomes come back to the driver."""

    model_load_s = 0.0  # the model loads in the actors, overlapped with reading
    stopped = False  # Ctrl-C ends the command instead

    def __init__(self, load_encoder: Callable[[], PixelEncoder], load_preparer: Callable[[], Callable[[bytes], Any]],
                 url_policy: UrlPolicy, *, actors: int = 1, gpus: float = 0) -> None:
        self.ray = import_ray()
        self.load_encoder, self.load_preparer, self.url_policy = load_encoder, load_preparer, url_policy
        self.actors, self.gpus = actors, gpus

    def __call__(self, items: list[Item], claims: TwinClaims) -> Iterator[ImageOutcome]:
        self.ray.init(ignore_reinit_error=True, log_to_driver=False)
        shared_claims = self.ray.remote(TwinClaims).remote(claims.holders)
        rows = [{"item": pickle.dumps(item)} for item in items]
        dataset = (self.ray.data.from_items(rows)
                   .map_batches(ReadTask, fn_constructor_args=(self.url_policy, shared_claims, self.load_preparer),
                                batch_size=READ_BATCH, batch_format="pandas", concurrency=READ_TASKS)
                   .map_batches(EncodeActor, fn_constructor_args=(self.load_encoder,),
                                batch_size=ENCODE_BATCH, concurrency=self.actors, num_gpus=self.gpus or None,
                                batch_format="pandas"))
        for batch in dataset.iter_batches(batch_size=ENCODE_BATCH, batch_format="pandas"):
            for raw in batch["outcome"]:
                yield pickle.loads(raw)


class RemoteClaims:
    """The twin rule's actor, asked like the local TwinClaims."""

    def __init__(self, actor: Any, ray: Any) -> None:
        self.actor, self.ray = actor, ray

    def claim(self, content: str, point_id: Any) -> Any:
        return self.ray.get(self.actor.claim.remote(content, point_id))


class ReadTask:
    """Reading: each item's outcome so far (skipped, a twin, or read) and, when it needs the model, its pixels."""

    def __init__(self, policy: UrlPolicy, claims_actor: Any,
                 load_preparer: Callable[[], Callable[[bytes], np.ndarray]]) -> None:
        import ray

        self.policy, self.claims, self.prepare = policy, RemoteClaims(claims_actor, ray), load_preparer()

    def __call__(self, batch: Any) -> Any:
        outcomes, pixels, shapes = [], [], []
        for raw in batch["item"]:
            outcome, image = self._read(pickle.loads(raw))
            outcomes.append(pickle.dumps(outcome))
            pixels.append(image.tobytes() if image is not None else NO_PIXELS)  # bytes: one Arrow type for all rows
            shapes.append(list(image.shape) if image is not None else [])
        return batch.assign(outcome=outcomes, pixels=pixels, shape=shapes)

    def _read(self, item: Item) -> tuple[ImageOutcome, np.ndarray | None]:
        outcome, blob = read_unless_twin(item, self.policy, self.claims)
        if blob is None:
            return outcome, None
        try:
            return outcome, np.asarray(self.prepare(blob), np.float32)
        except InvalidImageError as exc:
            return refusal(outcome, exc), None


class EncodeActor:
    """One model per actor: the pixels of a batch in one call (its micro-batcher forms the model's batches)."""

    def __init__(self, load_encoder: Callable[[], PixelEncoder]) -> None:
        self.encoder = load_encoder()

    def __call__(self, batch: Any) -> Any:
        wanted = [i for i, pixels in enumerate(batch["pixels"]) if pixels]
        pixels = [np.frombuffer(batch["pixels"].iloc[i], np.float32).reshape(batch["shape"].iloc[i]) for i in wanted]
        outcomes = list(batch["outcome"])
        for i, vector in zip(wanted, self.encoder.encode_image_pixels(pixels) if pixels else []):
            outcomes[i] = pickle.dumps(pickle.loads(outcomes[i]).encoded(vector))
        return batch.drop(columns=["pixels", "shape", "item"]).assign(outcome=outcomes)
