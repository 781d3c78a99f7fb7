"""Indexing the service's own gallery folder (CLIP_GALLERY_DIR) on a background thread, behind live requests.

The run is the command-line indexer's (same plan, same point writer, `--prune`: the folder is the gallery), fed
through the service's loaded encoder. It stays out of the way of searches and encodes in two ways: one reading
thread, so at most one gallery image is in any forward pass, and an encoder wrapper that holds each image back
while a live request is being served.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clip_vectorize.errors import EncoderError
from clip_vectorize.gallery.engines.local import ImageEncoder
from clip_vectorize.gallery.errors import GalleryError, IndexRunningError
from clip_vectorize.gallery.indexing import Engine, IndexOptions, index
from clip_vectorize.gallery.sources import list_source
from clip_vectorize.gallery.store.base import GalleryStore
from clip_vectorize.gallery.summary import Summary
from clip_vectorize.inference.vectors import ImageInput, ImageResult

logger = logging.getLogger(__name__)

READING_THREADS = 1  # one gallery photo per forward pass: a live request never shares the CPU with a batch of them
MAX_YIELD_S = 2.0  # under a steady stream of requests the run still moves: one image per this long at worst
YIELD_POLL_S = 0.01
STOP_WAIT_S = 10.0  # a worker stopping waits this long for the run to end between two images


@dataclass
class RunStatus:
    """What GET /gallery/status shows of the latest run."""

    state: str = "idle"  # idle, running, done, stopped (the service stopped mid-run) or failed
    total: int = 0  # images to read in this run (the unchanged ones are not read)
    done: int = 0
    started_at: float | None = None  # Unix time
    finished_at: float | None = None
    indexed: int = 0
    reused: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped: int = 0
    error: str | None = None

    def finish(self, summary: Summary, state: str = "done") -> None:
        self.state, self.finished_at = state, time.time()
        self.indexed, self.reused, self.unchanged = summary.indexed, summary.reused, summary.unchanged
        self.deleted, self.skipped = summary.deleted, len(summary.skipped)


class RunProgress:
    """The indexer's progress, kept where the status endpoint can read it."""

    def __init__(self, status: RunStatus) -> None:
        self.status = status

    def start(self, total: int) -> None:
        self.status.total = total

    def advance(self, count: int) -> None:
        self.status.done += count

    def close(self) -> None:
        pass


class PoliteEncoder:
    """The live encoder, asked only when no live request is being served (or after MAX_YIELD_S of waiting)."""

    def __init__(self, encoder: ImageEncoder, busy: Callable[[], bool]) -> None:
        self.encoder, self.busy = encoder, busy

    def encode_images(self, images: Sequence[ImageInput]) -> list[ImageResult]:
        deadline = time.monotonic() + MAX_YIELD_S
        while self.busy() and time.monotonic() < deadline:
            time.sleep(YIELD_POLL_S)
        return self.encoder.encode_images(images)


class BackgroundIndex:
    """One folder into one store, one run at a time. `model` names the model points record; `engine` makes the
    engine of a run; `stopping` is set when the service stops (see `stop`), and the engine starts no image after."""

    def __init__(self, folder: Path, store: GalleryStore, model: Callable[[], str], engine: Callable[[], Engine],
                 stopping: threading.Event, on_finish: Callable[[], None] = lambda: None) -> None:
        self.folder, self.store, self.model, self.engine = folder, store, model, engine
        self.on_finish = on_finish
        self.status = RunStatus()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = stopping

    def start(self) -> RunStatus:
        """Begin a run on a background thread; an IndexRunningError while one is under way. Once the service is
        stopping, nothing starts."""
        with self._lock:
            if self._stopping.is_set():
                return self.status
            if self.running:
                raise IndexRunningError(f"{self.folder} is being indexed ({self.status.done} of {self.status.total} "
                                        "images read); see GET /gallery/status")
            self.status = RunStatus(state="running", started_at=time.time())
            self._thread = threading.Thread(target=self._run, args=(self.status,), name="gallery-index", daemon=True)
            self._thread.start()
        return self.status

    @property
    def running(self) -> bool:
        return self.status.state == "running"  # not the thread: it lives a moment after the status says done

    def wait(self, timeout: float | None = None) -> RunStatus:
        """The status once the current run has ended (tests, and a clean shutdown)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status

    def stop(self, timeout: float = STOP_WAIT_S) -> RunStatus:
        """End the run once the few images already read are written (the next run goes on from there), and start
        no other. The status once it has ended, or still running after `timeout`."""
        self._stopping.set()
        return self.wait(timeout)

    def describe(self) -> dict[str, Any]:
        return asdict(self.status)

    def _run(self, status: RunStatus) -> None:
        try:
            listing = list_source(str(self.folder))
            options = IndexOptions(model=self.model(), prune=True)
            summary = index(listing, self.store, options, self.engine(), RunProgress(status))
        except Exception as exc:  # a background thread's failure must reach the status, not vanish
            self._fail(status, exc)
        else:
            self._finish(status, summary)
        finally:
            self.on_finish()

    def _finish(self, status: RunStatus, summary: Summary) -> None:
        if status.done < status.total:  # cut short by a stop
            status.finish(summary, "stopped")
            logger.info("indexing the gallery %s stopped with the service after %d of %d images; the next run goes "
                        "on from there", self.folder, status.done, status.total)
            return
        status.finish(summary)
        logger.info("gallery %s indexed: %d new, %d reused, %d unchanged, %d deleted, %d skipped", self.folder,
                    status.indexed, status.reused, status.unchanged, status.deleted, status.skipped)

    def _fail(self, status: RunStatus, exc: Exception) -> None:
        status.finished_at = time.time()
        if self._stopping.is_set():  # the service stopped first: a model that never loaded, say
            status.state = "stopped"
            logger.info("indexing the gallery %s stopped with the service: %s", self.folder, exc)
            return
        status.state = "failed"
        if isinstance(exc, (GalleryError, EncoderError, OSError)):
            status.error = str(exc)
            logger.error("indexing the gallery %s failed: %s", self.folder, exc)
        else:
            status.error = f"unexpected error: {exc}"
            logger.exception("indexing the gallery %s failed", self.folder)
