"""The in-process engine: worker threads read, hash and decode; each hands its image to the encoder's micro-batcher,
which fills batches from all of them, so the model does not wait for JPEG decoding."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from clip_vectorize.errors import InvalidImageError, OverloadedError
from clip_vectorize.gallery.outcome import ImageOutcome
from clip_vectorize.gallery.plan import TwinClaims
from clip_vectorize.gallery.reading import read_unless_twin, refusal
from clip_vectorize.gallery.sources import Item
from clip_vectorize.inference.vectors import ImageInput, ImageResult
from clip_vectorize.url_fetch import UrlPolicy

ENCODE_ATTEMPTS = 5


class ImageEncoder(Protocol):
    """What the local engine needs of an encoder (ClipEncoder is one)."""

    def encode_images(self, images: Sequence[ImageInput]) -> list[ImageResult]: ...


class LocalEngine:
    """`threads` readers feeding one encoder, loaded by `load_encoder` when the first image needs it (URLs whose
    content is unchanged, and twins, never do). Once `stop` is set no further image is started: what has been read
    is still handed on, so it is written."""

    def __init__(self, load_encoder: Callable[[], ImageEncoder], url_policy: UrlPolicy, threads: int,
                 stop: threading.Event | None = None) -> None:
        self.url_policy, self.threads, self.stop = url_policy, threads, stop or threading.Event()
        self.encoder = LazyEncoder(load_encoder)

    @property
    def model_load_s(self) -> float:
        return self.encoder.load_s

    @property
    def stopped(self) -> bool:
        return self.stop.is_set()

    def __call__(self, items: list[Item], claims: TwinClaims) -> Iterator[ImageOutcome]:
        wanted = (item for item in items if not self.stop.is_set())
        with ThreadPoolExecutor(self.threads, thread_name_prefix="index") as pool:
            yield from ordered_map(pool, lambda item: self._outcome(item, claims), wanted, window=4 * self.threads)

    def _outcome(self, item: Item, claims: TwinClaims) -> ImageOutcome:
        outcome, blob = read_unless_twin(item, self.url_policy, claims)
        if blob is None:
            return outcome
        result = encode_one(self.encoder, blob)
        return refusal(outcome, result) if isinstance(result, InvalidImageError) else outcome.encoded(result)


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


def encode_one(encoder: ImageEncoder, blob: bytes) -> ImageResult:
    """One image's vector or refusal. A full queue or a passed deadline means the model is busy, not that the
    image is bad: try again, a few times, before giving up on the run."""
    for _ in range(ENCODE_ATTEMPTS - 1):
        try:
            return encoder.encode_images([blob])[0]
        except OverloadedError:
            time.sleep(1.0)
    return encoder.encode_images([blob])[0]  # the last attempt's OverloadedError ends the run


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
